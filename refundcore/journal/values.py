"""The journal's value types: what a caller hands the journal and what it gets back.

Amounts are :class:`~refundcore.money.Money`, as the rest of the core has them; only
the SQL layer turns them into its columns and back.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import attrs

from ..errors import ValidationError
from ..models import Refund, Void
from ..money import Money
from ..status import CallbackVerdict, JournalState, RefundStatus
from ..words import WordEnum

__all__ = [
    "SETTLED_OUTCOMES",
    "Applied",
    "Backlog",
    "BatchCounts",
    "BatchDone",
    "BatchEntry",
    "BatchItem",
    "BatchItemState",
    "BatchSummary",
    "Claim",
    "ClaimVerdict",
    "EventKind",
    "JournalEntry",
    "JournalEvent",
    "JournalStats",
    "NewRefund",
    "OldestRefund",
    "ResultRecord",
    "StateCount",
    "decided_state",
]


_OPERATIONS = frozenset({Refund.kind, Void.kind})


def _check_money(_: object, attribute: attrs.Attribute[Money | None], value: object) -> None:
    if value is not None and not isinstance(value, Money):
        raise ValidationError(
            f"must be refundcore.Money, got {type(value).__name__}", field=attribute.name
        )


def _check_original(
    new: NewRefund, attribute: attrs.Attribute[Money | None], value: object
) -> None:
    _check_money(new, attribute, value)
    amount = new.amount
    # The row keeps one currency for both amounts.
    if isinstance(value, Money) and amount is not None and amount.currency != value.currency:
        raise ValidationError(
            f"is in {value.currency}, the amount in {amount.currency}", field=attribute.name
        )


def _check_operation(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _OPERATIONS:
        raise ValidationError(f"must be 'refund' or 'void', got {value!r}", field=attribute.name)


@attrs.frozen
class NewRefund:
    """What the client records before sending a refund or void.

    ``fingerprint`` identifies the request's parameters: a second claim of the same
    ``(provider, refund_id)`` with another fingerprint is a conflict. ``payment_key``
    identifies the payment for the per-payment limit. A void without ``amount`` counts
    as the whole ``original_amount`` toward that limit.
    """

    provider: str
    refund_id: str
    operation: str = attrs.field(validator=_check_operation)
    payment_id: str | None
    merchant_reference: str | None
    transaction_id: str | None
    amount: Money | None = attrs.field(validator=_check_money)
    reason: str | None
    notify_url: str | None
    original_amount: Money | None = attrs.field(validator=_check_original)
    fingerprint: str
    payment_key: str


@attrs.frozen
class JournalEntry:
    """One journalled refund, as stored. Timestamps are timezone-aware UTC, read from
    the journal's clock.

    ``owner`` and ``lease_until`` say who is submitting or reconciling it right now;
    both are ``None`` once its outcome has been recorded. ``attempt`` is the fencing
    token of the current claim: 1 for the first, one more for every takeover or new
    claim after ``NOT_SENT``; an outcome reported for an older attempt never overwrites
    the current one's. ``decided_by`` names the operator whose decision
    (:meth:`Journal.resolve`) set ``state``; ``None`` when the gateway's word did.
    """

    provider: str
    refund_id: str
    operation: str
    payment_id: str | None
    merchant_reference: str | None
    transaction_id: str | None
    amount: Money | None
    reason: str | None
    notify_url: str | None
    original_amount: Money | None
    fingerprint: str
    payment_key: str
    state: JournalState
    provider_refund_id: str | None
    message: str | None
    error_code: str | None
    http_status: int | None
    raw: dict[str, Any]
    attempt: int
    decided_by: str | None
    owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class Backlog:
    """The unsettled refunds of one provider in one state (:meth:`Journal.backlog`):
    how many, and when the oldest of them was recorded (timezone-aware UTC)."""

    provider: str
    state: JournalState
    count: int
    oldest: datetime


class ClaimVerdict(WordEnum):
    """What :meth:`Journal.claim` found, and so what the caller must do next."""

    #: Row inserted in SUBMITTING, owned by the caller: send the request. Also a row
    #: that was ``NOT_SENT`` (never reached the gateway), claimed again with the same
    #: parameters: SUBMITTING again, under the next attempt.
    NEW = "NEW"
    #: The row was SUBMITTING with an expired lease, or UNKNOWN and not leased: the
    #: caller now owns it (lease renewed, attempt + 1) and must reconcile, not resend.
    TAKEOVER = "TAKEOVER"
    #: Another owner holds a live lease on the row: wait, then read or claim again.
    BUSY = "BUSY"
    #: The row is PENDING, SUCCEEDED or FAILED (by the gateway's word or an operator's
    #: decision): return its stored result.
    DONE = "DONE"
    #: Same ``(provider, refund_id)`` with another fingerprint: raise IdempotencyConflict.
    CONFLICT = "CONFLICT"
    #: This amount would take the payment's committed refunds past ``original_amount``.
    OVER_LIMIT = "OVER_LIMIT"


@attrs.frozen
class Claim:
    """The result of :meth:`Journal.claim`.

    ``entry`` is the row as it is after the claim (``None`` only for OVER_LIMIT);
    ``refunded`` is, for OVER_LIMIT, the amount already committed for the payment, as
    a plain decimal in its currency (it may be zero, which no :class:`Money` holds).
    """

    outcome: ClaimVerdict
    entry: JournalEntry | None
    refunded: str | None = None


class BatchItemState(WordEnum):
    """Where one row of a batch stands in the batch's work queue.

    ``OPEN``: nobody is working on it. ``CLAIMED``: a worker holds it until its lease
    ends (renewed while the worker lives). ``DONE``: a worker recorded its outcome.
    """

    OPEN = "OPEN"
    CLAIMED = "CLAIMED"
    DONE = "DONE"


#: Batch outcomes after which a row is never run again. Any other outcome (UNKNOWN,
#: or the row could not be sent at all) is retried by the next run of the batch.
SETTLED_OUTCOMES = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.PENDING})


@attrs.frozen
class BatchItem:
    """One row of a batch as the journal knows it: its line and the refund it makes."""

    line: int
    provider: str
    refund_id: str


@attrs.frozen
class BatchDone:
    """The outcome of one claimed batch row, for :meth:`Journal.finish_batch`.

    ``outcome`` is a refund status (``SUCCEEDED``, ``FAILED``, ``PENDING``,
    ``UNKNOWN``) or a word for a row that was not sent (``ERROR``, ``INVALID``).
    """

    line: int
    outcome: str
    error_code: str | None = None
    message: str | None = None


@attrs.frozen
class ResultRecord:
    """A refund's result as the journal records it: what :meth:`Journal.record` takes,
    as a value, for :meth:`Journal.record_many`.

    ``attempt`` is the fencing token the owner's claim returned; ``sent`` says the
    result is the answer (or the lack of one) to a request this attempt sent, rather
    than a conclusion reached without sending.
    """

    provider: str
    refund_id: str
    owner: str
    attempt: int
    state: JournalState = attrs.field(converter=JournalState)
    provider_refund_id: str | None = None
    message: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    raw: Mapping[str, Any] | None = None
    sent: bool = True


class EventKind(WordEnum):
    """What happened to a refund, as its history (:meth:`Journal.history`) tells it."""

    #: A claim recorded the refund before its request could leave (attempt 1, or the
    #: first attempt after ``NOT_SENT``).
    CLAIM = "claim"
    #: A new attempt took over a refund whose sender's lease had run out (or that was
    #: left UNKNOWN), to reconcile it.
    TAKEOVER = "takeover"
    #: The attempt's request had left the process by then.
    SEND = "send"
    #: The owner of the current attempt recorded a result.
    ANSWER = "answer"
    #: A query's answer: its time and what the gateway said, and whether it settled
    #: anything.
    QUERY = "query"
    #: A verified callback: applied, or a duplicate of one already received.
    CALLBACK = "callback"
    #: An operator's decision, with who and why.
    DECISION = "decision"
    #: A result reported for an attempt that is no longer the current one.
    LATE_ANSWER = "late_answer"
    #: A gateway answer that disagrees with what the journal holds (an operator's
    #: decision, a final state, or "never sent"): kept and reported, never silently
    #: applied over a decision.
    CONTRADICTION = "contradiction"


@attrs.frozen
class JournalEvent:
    """One entry of a refund's history, as the journal stored it (never changed).

    ``at`` is the journal's clock (UTC). ``attempt`` is the attempt the event belongs
    to; ``state`` the state it reports or sets (``None`` when it has none: a send);
    ``actor`` who caused it (an owner, an operator), when known; ``data`` the evidence
    as JSON values (an answer's fields, a lease, a decision's reason), as redacted as
    the caller gave it: the client never hands the journal a secret. :attr:`detail`
    says it in one line, for people.

    ``times`` is how many deliveries of the same word the event stands for: a callback
    repeated after its first delivery is kept once more as a duplicate, and every
    later delivery that changes nothing only counts on that duplicate (``times``, and
    ``last_at``, when the latest came), so a callback replayed without end costs the
    history no more than two events.
    """

    at: datetime
    kind: EventKind = attrs.field(converter=EventKind)
    attempt: int
    state: JournalState | None
    actor: str | None
    data: dict[str, Any] = attrs.field(factory=dict)
    times: int = 1
    last_at: datetime | None = None

    @property
    def detail(self) -> str:
        """The event in one line."""
        said = _DESCRIBE[self.kind](self, self.data)
        if self.times > 1 and self.last_at is not None:
            last = self.last_at.isoformat(timespec="milliseconds")
            said += f"; {self.times} times, the last at {last}"
        return said

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``at`` and ``last_at`` in ISO 8601)."""
        return {
            "at": self.at.isoformat(),
            "kind": self.kind.value,
            "attempt": self.attempt,
            "state": None if self.state is None else self.state.value,
            "actor": self.actor,
            "detail": self.detail,
            "data": self.data,
            "times": self.times,
            "last_at": None if self.last_at is None else self.last_at.isoformat(),
        }


def _said(event: JournalEvent, data: Mapping[str, Any]) -> str:
    """An answer in a few words."""
    words = "no state" if event.state is None else event.state.value
    if data.get("error_code"):
        words += f" ({data['error_code']})"
    if data.get("provider_refund_id"):
        words += f", gateway id {data['provider_refund_id']}"
    if data.get("message"):
        words += f": {data['message']}"
    return words


def _claimed(event: JournalEvent, data: Mapping[str, Any]) -> str:
    again = " (again: it was never sent before)" if data.get("again") else ""
    return f"claimed by {event.actor}, lease {data.get('lease_seconds', 0):g} s{again}"


def _taken_over(event: JournalEvent, data: Mapping[str, Any]) -> str:
    was = data.get("previous_state", "?")
    if data.get("previous_owner"):
        was += f", the lease of {data['previous_owner']} ran out"
    return f"taken over by {event.actor}, lease {data.get('lease_seconds', 0):g} s (was {was})"


def _heard(event: JournalEvent, data: Mapping[str, Any]) -> str:
    if data.get("duplicate"):
        outcome = "a duplicate"
    elif data.get("applied"):
        outcome = "applied"
    elif data.get("settles", True):
        outcome = "changed nothing"
    else:
        outcome = "kept as evidence only"
    if data.get("reopened"):
        outcome += ", the refund back to UNKNOWN"
    note = f" ({data['note']})" if data.get("note") else ""
    return f"{event.kind.value} said {_said(event, data)}; {outcome}{note}{_other(data)}"


def _other(data: Mapping[str, Any]) -> str:
    """Why a callback was about another gateway refund than the row's, or could not be
    shown to be about the row, if so."""
    if data.get("held_provider_refund_id"):
        return f" (the refund is gateway id {data['held_provider_refund_id']})"
    if data.get("belongs_to"):
        return f" (that gateway id is refund {data['belongs_to']}'s)"
    if data.get("unsigned_tie"):
        return (
            " (only unsigned data ties it to this refund, and no gateway id the refund "
            "holds confirms it)"
        )
    return ""


def _late(event: JournalEvent, data: Mapping[str, Any]) -> str:
    applied = "applied" if data.get("applied") else "not applied"
    return f"late answer of attempt {event.attempt}: {_said(event, data)}; {applied}"


def _contradicted(event: JournalEvent, data: Mapping[str, Any]) -> str:
    held = data.get("held", "?")
    if data.get("decided_by"):
        held = f"{data['decided_by']}'s decision {held}"
    state = "?" if event.state is None else event.state.value
    return f"{data.get('source', '?')} says {state}, against {held}{_other(data)}"


_DESCRIBE = {
    EventKind.CLAIM: _claimed,
    EventKind.TAKEOVER: _taken_over,
    EventKind.SEND: lambda event, _: f"request of attempt {event.attempt} had left",
    EventKind.ANSWER: lambda event, data: f"answer: {_said(event, data)}",
    EventKind.QUERY: _heard,
    EventKind.CALLBACK: _heard,
    EventKind.DECISION: lambda event, data: (
        f"decided {'?' if event.state is None else event.state.value} by {event.actor}: "
        f"{data.get('reason', '')}"
    ),
    EventKind.LATE_ANSWER: _late,
    EventKind.CONTRADICTION: _contradicted,
}


@attrs.frozen
class Applied:
    """What :meth:`Journal.apply_notification` or :meth:`Journal.record_query` did
    with a gateway's word.

    ``entry`` is the row afterwards. ``changed``: the word moved the row (its state, or
    a missing provider refund id). ``duplicate``: the same callback (same state and
    provider refund id) had been received before. ``contradiction``: the word
    disagrees with the row (an operator's decision, a final state, "never sent", or
    the row's gateway refund id); it was recorded as a ``contradiction`` event and,
    over a decision or another gateway refund id, not applied. ``misdirected``: the
    word names this row by its refund id, but its gateway refund id is not the row's
    (or is another row's): the refund id it names is not to be trusted. ``unconfirmed``:
    the word's tie to this row is unsigned (``unsigned_tie``) and nothing signed
    confirms it (the row holds no gateway refund id yet, or the word carries none): it
    was kept as evidence, not applied, and recorded as a ``contradiction`` unless the
    row is still ``SUBMITTING`` (the reply being awaited brings the gateway's word); a
    row it contradicts where a confirmed word would overrule it ("never sent", a
    decided FAILED against SUCCEEDED) went back to UNKNOWN (``changed``).
    """

    entry: JournalEntry
    changed: bool
    duplicate: bool = False
    contradiction: bool = False
    misdirected: bool = False
    unconfirmed: bool = False

    def verdict(self, state: JournalState) -> CallbackVerdict:
        """What a callback's word ``state``, applied, comes to: ``verified`` or
        ``duplicate`` where the row agrees with it (an ``UNKNOWN`` word is never one the
        row already had: it says nothing), else ``misdirected``, ``unconfirmed`` or
        ``contradiction``."""
        if not self.agrees(state):
            if self.misdirected:
                return CallbackVerdict.MISDIRECTED
            if self.unconfirmed:
                return CallbackVerdict.UNCONFIRMED
            return CallbackVerdict.CONTRADICTION
        if state is not JournalState.UNKNOWN and not self.changed:
            return CallbackVerdict.DUPLICATE
        return CallbackVerdict.VERIFIED

    def agrees(self, state: JournalState) -> bool:
        """Whether the row, as the gateway's word ``state`` left it, agrees with that
        word: neither misdirected nor unconfirmed, and the row holds ``state`` or is
        still open (an open row moves to any final word, so only a final row can keep
        another final state)."""
        held = self.entry.state
        return (
            not self.misdirected and not self.unconfirmed and (held is state or not held.is_final)
        )


@attrs.frozen
class BatchCounts:
    """How many rows of a batch are in each state."""

    open: int
    claimed: int
    done: int


@attrs.frozen
class BatchEntry:
    """One batch row as stored, with the journalled refund of its refund id (``refund``;
    ``None`` when that refund was never recorded, e.g. nothing could be sent)."""

    batch_id: str
    line: int
    provider: str
    refund_id: str
    state: BatchItemState
    owner: str | None
    lease_until: datetime | None
    outcome: str | None
    error_code: str | None
    message: str | None
    updated_at: datetime
    refund: JournalEntry | None


#: What an operator may decide a refund is (:meth:`Journal.resolve`), by the words a
#: person types.
_DECISION_WORDS = {
    "succeeded": JournalState.SUCCEEDED,
    "failed": JournalState.FAILED,
    "not-sent": JournalState.NOT_SENT,
    "not_sent": JournalState.NOT_SENT,
}


def decided_state(value: JournalState | RefundStatus | str) -> JournalState:
    """An operator's decision as a state: ``SUCCEEDED``, ``FAILED`` or ``NOT_SENT``,
    given as one of those states or statuses or as ``"succeeded"``, ``"failed"``,
    ``"not-sent"`` (any case). ``ValidationError`` (field ``as``) otherwise."""
    word = value.value if isinstance(value, enum.Enum) else value
    state = _DECISION_WORDS.get(word.lower()) if isinstance(word, str) else None
    if state is None:
        raise ValidationError(f"must be succeeded, failed or not-sent, got {value!r}", field="as")
    return state


@attrs.frozen
class BatchSummary:
    """One batch as the work queue holds it, for a list of batches.

    ``outcomes`` counts the DONE rows by outcome (``SUCCEEDED``, ``UNKNOWN``,
    ``ERROR``, ...); ``updated_at`` is when any of its rows last changed.
    """

    batch_id: str
    counts: BatchCounts
    outcomes: Mapping[str, int]
    updated_at: datetime

    @property
    def rows(self) -> int:
        """How many rows the batch has."""
        return self.counts.open + self.counts.claimed + self.counts.done


@attrs.frozen
class OldestRefund:
    """The refund that has waited longest in its state: its id and when it was recorded."""

    refund_id: str
    created_at: datetime


@attrs.frozen
class StateCount:
    """How many refunds of one provider are in one state; for the states still to be
    settled (SUBMITTING, PENDING, UNKNOWN), also the oldest of them."""

    provider: str
    state: JournalState
    count: int
    oldest: OldestRefund | None


@attrs.frozen
class JournalStats:
    """What :meth:`Journal.stats` counts: one :class:`StateCount` per provider and
    state that has refunds, ordered by provider and then state."""

    groups: tuple[StateCount, ...]

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers that have refunds in the journal, sorted."""
        return tuple(sorted({group.provider for group in self.groups}))

    def count(
        self, *, provider: str | None = None, states: Collection[JournalState] | None = None
    ) -> int:
        """How many refunds (of ``provider``, in one of ``states``; all by default)."""
        return sum(
            group.count
            for group in self.groups
            if (provider is None or group.provider == provider)
            and (states is None or group.state in states)
        )
