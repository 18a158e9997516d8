"""The journal's rules over SQL, shared by the SQLite and PostgreSQL backends.

The rules live once, in :class:`SqlJournal`; a backend only supplies connections,
transactions, its clock, column encodings and its schema (:class:`~.backend.SqlBackend`),
so SQLite and PostgreSQL cannot drift apart on what a claim or a callback does. The
batch work queue's rules come from :class:`~.batch_queue.SqlBatchQueue`.

Every change to a refund row appends to its history (the events table) in the same
transaction, so the history can never disagree with the row.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

import attrs

from ..errors import JournalError, ValidationError
from ..status import JournalState
from .batch_queue import SqlBatchQueue
from .pool import Transaction
from .schema import COLUMNS, EVENT_COLUMNS, EVENTS_TABLE, SELECT, TABLE, UNSETTLED_STATES, sql_list
from .values import (
    Applied,
    Claim,
    ClaimVerdict,
    EventKind,
    JournalEntry,
    JournalEvent,
    NewRefund,
    ResultRecord,
)

__all__ = ["COMMITTED_STATES", "DECISIONS", "SqlJournal"]

log = logging.getLogger("refundcore.journal")

# How much a state knows; a row only ever moves to a state of higher rank, so a late or
# repeated report can never undo a better-informed one. NOT_SENT knows no more than
# UNKNOWN about the gateway: any answer from it outranks both.
_RANK = {
    JournalState.SUBMITTING: 0,
    JournalState.UNKNOWN: 1,
    JournalState.NOT_SENT: 1,
    JournalState.PENDING: 2,
    JournalState.SUCCEEDED: 3,
    JournalState.FAILED: 3,
}

#: States whose amount is committed: the money has left or may have left.
COMMITTED_STATES = frozenset(
    {JournalState.SUBMITTING, JournalState.PENDING, JournalState.SUCCEEDED, JournalState.UNKNOWN}
)
#: What an operator may decide a refund is (:meth:`SqlJournal.resolve`).
DECISIONS = frozenset({JournalState.SUCCEEDED, JournalState.FAILED, JournalState.NOT_SENT})
# States the gateway has answered with: a claim finds such a row DONE, and a callback
# moves a row only to one of them.
_ANSWERED = frozenset({JournalState.PENDING, JournalState.SUCCEEDED, JournalState.FAILED})
_RECORDED = frozenset(JournalState) - {JournalState.SUBMITTING}

_NEW_COLUMNS = tuple(attrs.fields_dict(NewRefund))
_KEY = "WHERE provider = ? AND refund_id = ?"
_new_values = operator.attrgetter(*_NEW_COLUMNS)
_AMOUNT = _NEW_COLUMNS.index("amount")
_ORIGINAL = _NEW_COLUMNS.index("original_amount")
_INSERTED = (
    *_NEW_COLUMNS,
    "state",
    "raw",
    "attempt",
    "owner",
    "lease_until",
    "created_at",
    "updated_at",
)
# RETURNING: a row back means this claim inserted it.
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(_INSERTED)}) "  # noqa: S608 - constant names
    f"VALUES ({', '.join('?' * len(_INSERTED))}) "
    "ON CONFLICT (provider, refund_id) DO NOTHING RETURNING refund_id"
)
# The outcome of the claimant's own send: its row is SUBMITTING, owned by it under the
# same attempt, and every outcome ranks above SUBMITTING, so nothing needs reading first.
_RECORD_OWN = (
    f"UPDATE {TABLE} SET state = ?, "  # noqa: S608 - constant names
    "provider_refund_id = COALESCE(?, provider_refund_id), message = ?, error_code = ?, "
    "http_status = ?, raw = COALESCE(?, raw), owner = NULL, lease_until = NULL, "
    f"updated_at = ? {_KEY} AND owner = ? AND attempt = ? AND state = 'SUBMITTING'"
)
_RECORD_OWN_ROW = f"{_RECORD_OWN} RETURNING {', '.join(COLUMNS)}"
_COMMITTED = (
    f"SELECT amount, original_amount, currency FROM {TABLE} "  # noqa: S608 - constant names
    "WHERE provider = ? AND payment_key = ? "
    f"AND state IN ({sql_list(JournalState, COMMITTED_STATES)})"
)
_INSERT_EVENT = f"INSERT INTO {EVENTS_TABLE} ({', '.join(EVENT_COLUMNS)}) VALUES "  # noqa: S608
_EVENT_VALUES = f"({', '.join('?' * len(EVENT_COLUMNS))})"
# Events per INSERT: few statements, far below SQLite's limit of bound parameters.
_EVENTS_PER_INSERT = 200
# In a stored answer's data: the attempt's request had left (read back as a send event).
_SENT = "sent"
_HISTORY = (
    f"SELECT {', '.join(EVENT_COLUMNS)} FROM {EVENTS_TABLE} "  # noqa: S608 - constant names
    f"{_KEY} ORDER BY id"
)


def _inserted_entry(
    new: NewRefund, owner: str, lease_until: datetime, now: datetime
) -> JournalEntry:
    """The row a NEW claim has just inserted, as :meth:`Journal.get` would read it."""
    return JournalEntry(
        provider=new.provider,
        refund_id=new.refund_id,
        operation=new.operation,
        payment_id=new.payment_id,
        merchant_reference=new.merchant_reference,
        transaction_id=new.transaction_id,
        amount=new.amount,
        currency=new.currency,
        reason=new.reason,
        notify_url=new.notify_url,
        original_amount=new.original_amount,
        fingerprint=new.fingerprint,
        payment_key=new.payment_key,
        state=JournalState.SUBMITTING,
        provider_refund_id=None,
        message=None,
        error_code=None,
        http_status=None,
        raw={},
        attempt=1,
        decided_by=None,
        owner=owner,
        lease_until=lease_until,
        created_at=now,
        updated_at=now,
    )


def _answer_data(
    provider_refund_id: str | None,
    message: str | None,
    error_code: str | None,
    http_status: int | None,
    raw: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """An answer's evidence for its event, without the fields it does not have."""
    data: dict[str, Any] = {}
    if provider_refund_id is not None:
        data["provider_refund_id"] = provider_refund_id
    if message is not None:
        data["message"] = message
    if error_code is not None:
        data["error_code"] = error_code
    if http_status is not None:
        data["http_status"] = http_status
    if raw:
        data["raw"] = raw
    return data


class _Event(NamedTuple):
    """An event to append, as :meth:`SqlJournal._log` takes it."""

    provider: str
    refund_id: str
    at: datetime
    kind: EventKind
    attempt: int
    state: JournalState | None
    actor: str | None
    data: Mapping[str, Any]


def _contradicts(held: JournalState, word: JournalState) -> bool:
    """Whether the gateway's ``word`` disagrees with what the journal ``held`` as
    settled (a final state, an operator's decision, or "never sent")."""
    if word not in _ANSWERED:
        return False
    if held is JournalState.NOT_SENT:
        return True  # the gateway has it: it was sent after all
    if held.is_final:
        # A PENDING after SUCCEEDED is a stale report, not a disagreement.
        return word is not held and not (
            held is JournalState.SUCCEEDED and word is JournalState.PENDING
        )
    return False


def _nonempty(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("must be a non-empty string", field=field)
    return value.strip()


class SqlJournal(SqlBatchQueue):
    """The journal's rules for refunds over SQL; a backend subclasses it and supplies
    what :class:`~.backend.SqlBackend` asks for."""

    # -- helpers --------------------------------------------------------------------

    def _committed(self, tx: Transaction, new: NewRefund, limit: Decimal) -> Decimal:
        """What is already refunded or on its way for ``new``'s payment."""
        rows = tx.all(_COMMITTED, (new.provider, new.payment_key))
        total = limit * 0  # keeps the currency's decimals: "0.00", not "0"
        for row in rows:
            if row["currency"] is not None and new.currency not in (None, row["currency"]):
                continue
            # A void without amount reversed the whole payment.
            amount = self._decode_amount(row["amount"]) or self._decode_amount(
                row["original_amount"]
            )
            total += limit if amount is None else Decimal(amount)
        return total

    def _over_limit(self, tx: Transaction, new: NewRefund) -> str | None:
        """What is already committed for ``new``'s payment, if ``new`` would take it
        past its original amount; ``None`` when it fits (or there is no limit)."""
        if new.original_amount is None:
            return None
        limit = Decimal(new.original_amount)
        committed = self._committed(tx, new, limit)
        wanted = limit if new.amount is None else Decimal(new.amount)
        return f"{committed:f}" if committed + wanted > limit else None

    def _new_row(
        self, new: NewRefund, owner: str, lease_until: datetime, now: datetime
    ) -> list[Any]:
        """The values of :data:`_INSERT` for a claim of ``new``."""
        values = list(_new_values(new))
        values[_AMOUNT] = self._encode_amount(new.amount)
        values[_ORIGINAL] = self._encode_amount(new.original_amount)
        stamp = self._encode_time(now)
        values += (
            JournalState.SUBMITTING.value,
            self._encode_raw({}),
            1,
            owner,
            self._encode_time(lease_until),
            stamp,
            stamp,
        )
        return values

    def _log(self, tx: Transaction, events: Sequence[_Event]) -> None:
        """Append events to their refunds' histories."""
        for start in range(0, len(events), _EVENTS_PER_INSERT):
            part = events[start : start + _EVENTS_PER_INSERT]
            params: list[Any] = []
            # The events of one change share its time: encode it once.
            stamps: dict[datetime, Any] = {}
            for provider, refund_id, at, kind, attempt, state, actor, data in part:
                stamp = stamps.get(at)
                if stamp is None:
                    stamp = stamps[at] = self._encode_time(at)
                params += (
                    provider,
                    refund_id,
                    stamp,
                    kind.value,
                    attempt,
                    None if state is None else state.value,
                    actor,
                    self._encode_raw(data),
                )
            tx.run(_INSERT_EVENT + ", ".join([_EVENT_VALUES] * len(part)), params)

    def _history(self, tx: Transaction, provider: str, refund_id: str) -> list[JournalEvent]:
        events: list[JournalEvent] = []
        for row in tx.all(_HISTORY, (provider, refund_id)):
            event = self._event(row)
            if event.data.get(_SENT):
                # One stored row holds an attempt's send and its answer, which happen at
                # the same moment as far as the journal knows: half the writes.
                data = dict(event.data)
                del data[_SENT]
                sent = JournalEvent(event.at, EventKind.SEND, event.attempt, None, event.actor)
                events += (sent, attrs.evolve(event, data=data))
            else:
                events.append(event)
        return events

    def _contradiction(
        self,
        tx: Transaction,
        entry: JournalEntry,
        now: datetime,
        *,
        held: JournalState,
        word: JournalState,
        source: EventKind,
        attempt: int,
        actor: str | None,
        data: Mapping[str, Any],
    ) -> None:
        """Record (and log) a gateway answer that disagrees with what the journal held."""
        facts = {"held": held.value, "source": source.value, **data}
        if entry.decided_by is not None:
            facts["decided_by"] = entry.decided_by
        event = _Event(
            entry.provider,
            entry.refund_id,
            now,
            EventKind.CONTRADICTION,
            attempt,
            word,
            actor,
            facts,
        )
        self._log(tx, [event])
        log.warning(
            "journal %s: refund %r of %s: %s",
            self.url,
            entry.refund_id,
            entry.provider,
            JournalEvent(now, event.kind, attempt, word, actor, facts).detail,
        )

    def _settle(
        self,
        tx: Transaction,
        entry: JournalEntry,
        now: datetime,
        *,
        state: JournalState,
        provider_refund_id: str | None,
        raw: Mapping[str, Any] | None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        answer: bool = False,
    ) -> JournalEntry | None:
        """Apply a gateway's word by the monotonic rules: the row moves only to an
        answered state that knows more, and a missing provider refund id is filled in;
        a row an operator decided never moves. Returns the row afterwards, or ``None``
        if nothing changed. ``answer``: the word is a recorded answer, whose message and
        codes replace the row's."""
        advances = (
            entry.decided_by is None and state in _ANSWERED and _RANK[state] > _RANK[entry.state]
        )
        fills_id = entry.provider_refund_id is None and provider_refund_id is not None
        if not advances and not fills_id:
            return None
        new_state = state if advances else entry.state
        # A final row has nothing left to submit: its lease means nothing any more.
        final = new_state.is_final
        kept_raw = dict(raw) if advances and raw is not None else entry.raw
        changes: dict[str, Any] = {
            "state": new_state,
            "provider_refund_id": entry.provider_refund_id or provider_refund_id,
            "raw": json.loads(json.dumps(kept_raw, default=str)),
            "owner": None if final else entry.owner,
            "lease_until": None if final else entry.lease_until,
            "updated_at": now,
        }
        if advances and answer:
            changes.update(message=message, error_code=error_code, http_status=http_status)
        lease_until = changes["lease_until"]
        tx.run(
            f"UPDATE {TABLE} SET state = ?, provider_refund_id = ?, raw = ?, owner = ?, "  # noqa: S608
            "lease_until = ?, message = ?, error_code = ?, http_status = ?, "
            f"updated_at = ? {_KEY}",
            (
                new_state.value,
                changes["provider_refund_id"],
                self._encode_raw(kept_raw),
                changes["owner"],
                None if lease_until is None else self._encode_time(lease_until),
                changes.get("message", entry.message),
                changes.get("error_code", entry.error_code),
                changes.get("http_status", entry.http_status),
                self._encode_time(now),
                entry.provider,
                entry.refund_id,
            ),
        )
        return attrs.evolve(entry, **changes)

    # -- the interface --------------------------------------------------------------

    def claim(self, new: NewRefund, *, owner: str, lease_seconds: float = 60.0) -> Claim:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        lease = timedelta(seconds=lease_seconds)
        # Keyed by payment: claims that could together pass the payment's limit queue up.
        lock = f"{new.provider}\0{new.payment_key}"
        with self._transaction(write=True, lock=lock) as tx:
            now = self._clock(tx)
            lease_until = now + lease
            claimed = _Event(
                new.provider,
                new.refund_id,
                now,
                EventKind.CLAIM,
                1,
                JournalState.SUBMITTING,
                owner,
                {"lease_seconds": lease_seconds},
            )
            entry = None
            if new.original_amount is not None:
                entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
                if entry is None:
                    over = self._over_limit(tx, new)
                    if over is not None:
                        return Claim(ClaimVerdict.OVER_LIMIT, None, refunded=over)
            if entry is None:
                # ON CONFLICT: a claim of the same refund id for another payment holds
                # another lock; whoever inserts second finds the row below instead.
                if tx.all(_INSERT, self._new_row(new, owner, lease_until, now)):
                    self._log(tx, [claimed])
                    # The row is exactly what was written: no need to read it back on
                    # the path every refund takes.
                    return Claim(ClaimVerdict.NEW, _inserted_entry(new, owner, lease_until, now))
                entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
                if entry is None:  # pragma: no cover - the insert found it there
                    raise JournalError(f"journal {self.url} lost refund {new.refund_id!r}")
            if entry.fingerprint != new.fingerprint:
                return Claim(ClaimVerdict.CONFLICT, entry)
            if entry.state is JournalState.NOT_SENT:
                # Never reached the gateway: this claim sends it, under its next attempt,
                # and only if the payment's limit still allows it.
                over = self._over_limit(tx, new)
                if over is not None:
                    return Claim(ClaimVerdict.OVER_LIMIT, entry, refunded=over)
                return Claim(
                    ClaimVerdict.NEW, self._reclaim(tx, entry, owner, lease_until, now, claimed)
                )
            if entry.state in _ANSWERED:
                return Claim(ClaimVerdict.DONE, entry)
            if entry.lease_until is not None and entry.lease_until > now:
                return Claim(ClaimVerdict.BUSY, entry)
            attempt = entry.attempt + 1
            tx.run(
                f"UPDATE {TABLE} SET owner = ?, lease_until = ?, attempt = ?, "  # noqa: S608
                f"updated_at = ? {_KEY}",
                (
                    owner,
                    self._encode_time(lease_until),
                    attempt,
                    self._encode_time(now),
                    new.provider,
                    new.refund_id,
                ),
            )
            self._log(
                tx,
                [
                    _Event(
                        new.provider,
                        new.refund_id,
                        now,
                        EventKind.TAKEOVER,
                        attempt,
                        entry.state,
                        owner,
                        {
                            "lease_seconds": lease_seconds,
                            "previous_owner": entry.owner,
                            "previous_state": entry.state.value,
                        },
                    )
                ],
            )
            return Claim(
                ClaimVerdict.TAKEOVER,
                attrs.evolve(
                    entry, owner=owner, lease_until=lease_until, attempt=attempt, updated_at=now
                ),
            )

    def _reclaim(
        self,
        tx: Transaction,
        entry: JournalEntry,
        owner: str,
        lease_until: datetime,
        now: datetime,
        claimed: _Event,
    ) -> JournalEntry:
        """A NOT_SENT row claimed again: SUBMITTING under the next attempt, as if new."""
        attempt = entry.attempt + 1
        tx.run(
            f"UPDATE {TABLE} SET state = ?, attempt = ?, decided_by = NULL, owner = ?, "  # noqa: S608
            "lease_until = ?, message = NULL, error_code = NULL, http_status = NULL, "
            f"updated_at = ? {_KEY}",
            (
                JournalState.SUBMITTING.value,
                attempt,
                owner,
                self._encode_time(lease_until),
                self._encode_time(now),
                entry.provider,
                entry.refund_id,
            ),
        )
        self._log(tx, [claimed._replace(attempt=attempt, data={**claimed.data, "again": True})])
        return attrs.evolve(
            entry,
            state=JournalState.SUBMITTING,
            attempt=attempt,
            decided_by=None,
            owner=owner,
            lease_until=lease_until,
            message=None,
            error_code=None,
            http_status=None,
            updated_at=now,
        )

    def record(
        self,
        provider: str,
        refund_id: str,
        *,
        owner: str,
        attempt: int,
        state: JournalState,
        provider_refund_id: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        raw: Mapping[str, Any] | None = None,
        sent: bool = True,
    ) -> JournalEntry:
        outcome = ResultRecord(
            provider,
            refund_id,
            owner,
            attempt,
            state,
            provider_refund_id,
            message,
            error_code,
            http_status,
            raw,
            sent,
        )
        _check_outcome(outcome)
        # Lost to a power cut, an outcome leaves the row SUBMITTING, and a reconcile asks
        # the gateway: the claim, not the outcome, keeps money from going out twice.
        with self._transaction(write=True, sync=False) as tx:
            now = self._clock(tx)
            recorded = tx.all(_RECORD_OWN_ROW, self._own_outcome(outcome, now))
            if recorded:
                self._log(tx, [_answered(outcome, now)])
                return self._entry(recorded[0])
            return self._record_by_rules(tx, outcome, now)

    def _record_by_rules(
        self, tx: Transaction, outcome: ResultRecord, now: datetime
    ) -> JournalEntry:
        """:meth:`record` for a row that is not, or no longer, its owner's SUBMITTING row
        under the same attempt: an older attempt's result is a late answer, a final or
        decided row stays, a less-informed state only gives the lease back."""
        provider, refund_id, state = outcome.provider, outcome.refund_id, outcome.state
        entry = self._fetch(tx, provider, refund_id, lock=True)
        if entry is None:
            raise JournalError(
                f"journal {self.url} has no refund {refund_id!r} of {provider!r} to record"
            )
        if outcome.attempt > entry.attempt:
            raise JournalError(
                f"journal {self.url}: refund {refund_id!r} has had {entry.attempt} "
                f"attempt(s); {outcome.owner!r} reports attempt {outcome.attempt}"
            )
        data = _answer_data(
            outcome.provider_refund_id,
            outcome.message,
            outcome.error_code,
            outcome.http_status,
            outcome.raw,
        )
        if outcome.attempt < entry.attempt:
            return self._late_answer(tx, entry, outcome, now, data)
        if entry.owner not in (None, outcome.owner):
            raise JournalError(
                f"journal {self.url}: attempt {entry.attempt} of refund {refund_id!r} "
                f"belongs to {entry.owner!r}; {outcome.owner!r} may not record it"
            )
        self._log(tx, [_answered(outcome, now)])
        held = entry.state
        if entry.decided_by is not None or held.is_final:
            if _contradicts(held, state):
                self._contradiction(
                    tx,
                    entry,
                    now,
                    held=held,
                    word=state,
                    source=EventKind.ANSWER,
                    attempt=outcome.attempt,
                    actor=outcome.owner,
                    data=data,
                )
            return self._release(tx, entry, now)
        if _RANK[state] < _RANK[held]:
            # E.g. a query answering UNKNOWN for a refund already PENDING: keep what
            # is known, only give the lease back.
            return self._release(tx, entry, now)
        kept_raw = entry.raw if outcome.raw is None else dict(outcome.raw)
        tx.run(
            f"UPDATE {TABLE} SET state = ?, "  # noqa: S608
            "provider_refund_id = COALESCE(?, provider_refund_id), message = ?, "
            "error_code = ?, http_status = ?, raw = ?, owner = NULL, "
            f"lease_until = NULL, updated_at = ? {_KEY}",
            (
                state.value,
                outcome.provider_refund_id,
                outcome.message,
                outcome.error_code,
                outcome.http_status,
                self._encode_raw(kept_raw),
                self._encode_time(now),
                provider,
                refund_id,
            ),
        )
        # What was just written, without reading the row back.
        return attrs.evolve(
            entry,
            state=state,
            provider_refund_id=outcome.provider_refund_id or entry.provider_refund_id,
            message=outcome.message,
            error_code=outcome.error_code,
            http_status=outcome.http_status,
            raw=json.loads(json.dumps(kept_raw, default=str)),
            owner=None,
            lease_until=None,
            updated_at=now,
        )

    def _release(self, tx: Transaction, entry: JournalEntry, now: datetime) -> JournalEntry:
        """Give the row's lease back, changing nothing else."""
        if entry.owner is None and entry.lease_until is None:
            return entry
        tx.run(
            f"UPDATE {TABLE} SET owner = NULL, lease_until = NULL, updated_at = ? {_KEY}",  # noqa: S608
            (self._encode_time(now), entry.provider, entry.refund_id),
        )
        return attrs.evolve(entry, owner=None, lease_until=None, updated_at=now)

    def _late_answer(
        self,
        tx: Transaction,
        entry: JournalEntry,
        outcome: ResultRecord,
        now: datetime,
        data: dict[str, Any],
    ) -> JournalEntry:
        """A result of an attempt that is no longer the current one: kept as evidence,
        and applied only as a callback would be (never over the current attempt's
        lease or answer, never over a decision)."""
        state = outcome.state
        # It contradicts a "never sent" concluded at or after its own attempt: its
        # request did reach the gateway.
        denied = any(
            event.state is JournalState.NOT_SENT
            and event.attempt >= outcome.attempt
            and event.kind in (EventKind.ANSWER, EventKind.DECISION)
            for event in self._history(tx, entry.provider, entry.refund_id)
        )
        settled = self._settle(
            tx,
            entry,
            now,
            state=state,
            provider_refund_id=outcome.provider_refund_id,
            raw=outcome.raw,
            message=outcome.message,
            error_code=outcome.error_code,
            http_status=outcome.http_status,
            answer=True,
        )
        facts = {**data, "applied": settled is not None}
        if outcome.sent:
            facts[_SENT] = True
        self._log(
            tx,
            [
                _Event(
                    outcome.provider,
                    outcome.refund_id,
                    now,
                    EventKind.LATE_ANSWER,
                    outcome.attempt,
                    state,
                    outcome.owner,
                    facts,
                )
            ],
        )
        held = JournalState.NOT_SENT if denied and state in _ANSWERED else entry.state
        if _contradicts(held, state):
            self._contradiction(
                tx,
                entry,
                now,
                held=held,
                word=state,
                source=EventKind.LATE_ANSWER,
                attempt=outcome.attempt,
                actor=outcome.owner,
                data=data,
            )
        return entry if settled is None else settled

    def _own_outcome(self, outcome: ResultRecord, now: datetime) -> tuple[Any, ...]:
        """The values of :data:`_RECORD_OWN` for ``outcome``."""
        raw = outcome.raw
        return (
            outcome.state.value,
            outcome.provider_refund_id,
            outcome.message,
            outcome.error_code,
            outcome.http_status,
            None if raw is None else self._encode_raw(raw),
            self._encode_time(now),
            outcome.provider,
            outcome.refund_id,
            outcome.owner,
            outcome.attempt,
        )

    def record_many(self, outcomes: Sequence[ResultRecord]) -> None:
        for outcome in outcomes:
            _check_outcome(outcome)
        if not outcomes:
            return
        with self._transaction(write=True, sync=False) as tx:
            now = self._clock(tx)
            others = []
            events: list[_Event] = []
            for outcome in outcomes:
                if tx.run(_RECORD_OWN, self._own_outcome(outcome, now)):
                    events.append(_answered(outcome, now))
                else:
                    others.append(outcome)
            self._log(tx, events)
            # Not a SUBMITTING row of its owner's attempt any more (a callback or a
            # takeover came first): record's own rules decide, as rarely as that happens.
            for outcome in others:
                self._record_by_rules(tx, outcome, now)

    def abandon(self, provider: str, refund_id: str, *, owner: str) -> bool:
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None or entry.owner != owner or entry.state is not JournalState.SUBMITTING:
                return False
            # An attempt that took over a refund may follow one that sent it: only an
            # attempt that began as a claim (nothing sent before it) proves nothing was.
            opened = [
                event
                for event in self._history(tx, provider, refund_id)
                if event.attempt == entry.attempt
                and event.kind in (EventKind.CLAIM, EventKind.TAKEOVER)
            ]
            if not opened or opened[0].kind is not EventKind.CLAIM:
                return False
            message = "nothing was sent: the request never left the process"
            tx.run(
                f"UPDATE {TABLE} SET state = ?, message = ?, owner = NULL, "  # noqa: S608
                f"lease_until = NULL, updated_at = ? {_KEY}",
                (JournalState.NOT_SENT.value, message, self._encode_time(now), provider, refund_id),
            )
            self._log(
                tx,
                [
                    _Event(
                        provider,
                        refund_id,
                        now,
                        EventKind.ANSWER,
                        entry.attempt,
                        JournalState.NOT_SENT,
                        owner,
                        {"message": message},
                    )
                ],
            )
        return True

    def _word(
        self,
        tx: Transaction,
        entry: JournalEntry,
        now: datetime,
        *,
        source: EventKind,
        state: JournalState,
        settles: bool,
        provider_refund_id: str | None,
        raw: Mapping[str, Any] | None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        actor: str | None = None,
        note: str | None = None,
    ) -> Applied:
        """A gateway's word from outside the current attempt (a callback, a query):
        stored as an event, applied by the monotonic rules when it ``settles``."""
        duplicate = source is EventKind.CALLBACK and any(
            event.kind is EventKind.CALLBACK
            and event.state is state
            and event.data.get("provider_refund_id") == provider_refund_id
            for event in self._history(tx, entry.provider, entry.refund_id)
        )
        settled = (
            self._settle(
                tx, entry, now, state=state, provider_refund_id=provider_refund_id, raw=raw
            )
            if settles
            else None
        )
        data = _answer_data(provider_refund_id, message, error_code, http_status, raw)
        facts: dict[str, Any] = {**data, "applied": settled is not None}
        if duplicate:
            facts["duplicate"] = True
        if not settles:
            facts["settles"] = False
        if note:
            facts["note"] = note
        self._log(
            tx,
            [
                _Event(
                    entry.provider, entry.refund_id, now, source, entry.attempt, state, actor, facts
                )
            ],
        )
        contradiction = _contradicts(entry.state, state) and (
            entry.decided_by is not None or entry.state.is_final or settles
        )
        if contradiction and not duplicate:
            self._contradiction(
                tx,
                entry,
                now,
                held=entry.state,
                word=state,
                source=source,
                attempt=entry.attempt,
                actor=actor,
                data=data,
            )
        return Applied(
            entry=entry if settled is None else settled,
            changed=settled is not None,
            duplicate=duplicate,
            contradiction=contradiction,
        )

    def apply_notification(
        self,
        provider: str,
        *,
        state: JournalState,
        refund_id: str | None = None,
        provider_refund_id: str | None = None,
        raw: Mapping[str, Any] | None = None,
    ) -> Applied | None:
        state = JournalState(state)
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            entry = None
            if refund_id is not None:
                entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None and provider_refund_id is not None:
                row = tx.one(
                    f"{SELECT} WHERE provider = ? AND provider_refund_id = ? "
                    f"ORDER BY created_at, refund_id LIMIT 1{self._for_update}",
                    (provider, provider_refund_id),
                )
                entry = None if row is None else self._entry(row)
            if entry is None:
                return None
            return self._word(
                tx,
                entry,
                now,
                source=EventKind.CALLBACK,
                state=state,
                settles=True,
                provider_refund_id=provider_refund_id,
                raw=raw,
            )

    def record_query(
        self,
        provider: str,
        refund_id: str,
        *,
        state: JournalState,
        settles: bool,
        provider_refund_id: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        raw: Mapping[str, Any] | None = None,
        actor: str | None = None,
        note: str | None = None,
    ) -> Applied:
        state = JournalState(state)
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None:
                raise JournalError(
                    f"journal {self.url} has no refund {refund_id!r} of {provider!r}"
                )
            return self._word(
                tx,
                entry,
                now,
                source=EventKind.QUERY,
                state=state,
                settles=settles,
                provider_refund_id=provider_refund_id,
                raw=raw,
                message=message,
                error_code=error_code,
                http_status=http_status,
                actor=actor,
                note=note,
            )

    def resolve(
        self, provider: str, refund_id: str, *, state: JournalState, reason: str, by: str
    ) -> JournalEntry:
        try:
            decided = JournalState(state)
        except ValueError:
            decided = None
        if decided not in DECISIONS:
            raise ValidationError(
                f"must be SUCCEEDED, FAILED or NOT_SENT, got {state!r}", field="state"
            )
        reason = _nonempty(reason, "reason")
        by = _nonempty(by, "by")
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None:
                raise JournalError(
                    f"journal {self.url} has no refund {refund_id!r} of {provider!r}"
                )
            if entry.lease_until is not None and entry.lease_until > now:
                raise JournalError(
                    f"journal {self.url}: refund {refund_id!r} is being sent or reconciled "
                    f"by {entry.owner} until {entry.lease_until.isoformat()}; decide after"
                )
            if entry.decided_by is None and entry.state.is_final:
                raise ValidationError(
                    f"refund {refund_id!r} is {entry.state.value} by the gateway's own "
                    "answer; a decision cannot override it",
                    field="refund_id",
                )
            if decided is JournalState.NOT_SENT and entry.state is JournalState.PENDING:
                raise ValidationError(
                    f"refund {refund_id!r} is PENDING at the gateway, so it was sent",
                    field="state",
                )
            message = f"decided {decided.value} by {by}: {reason}"
            tx.run(
                f"UPDATE {TABLE} SET state = ?, decided_by = ?, message = ?, owner = NULL, "  # noqa: S608
                f"lease_until = NULL, updated_at = ? {_KEY}",
                (decided.value, by, message, self._encode_time(now), provider, refund_id),
            )
            self._log(
                tx,
                [
                    _Event(
                        provider,
                        refund_id,
                        now,
                        EventKind.DECISION,
                        entry.attempt,
                        decided,
                        by,
                        {"reason": reason, "by": by, "previous_state": entry.state.value},
                    )
                ],
            )
            return attrs.evolve(
                entry,
                state=decided,
                decided_by=by,
                message=message,
                owner=None,
                lease_until=None,
                updated_at=now,
            )

    def history(self, provider: str, refund_id: str) -> list[JournalEvent]:
        with self._transaction(write=False) as tx:
            return self._history(tx, provider, refund_id)

    def get(self, provider: str, refund_id: str) -> JournalEntry | None:
        with self._transaction(write=False) as tx:
            return self._fetch(tx, provider, refund_id, lock=False)

    def find_by_provider_refund_id(
        self, provider: str, provider_refund_id: str
    ) -> JournalEntry | None:
        with self._transaction(write=False) as tx:
            row = tx.one(
                f"{SELECT} WHERE provider = ? AND provider_refund_id = ? "
                "ORDER BY created_at, refund_id LIMIT 1",
                (provider, provider_refund_id),
            )
            return None if row is None else self._entry(row)

    def entries(
        self, *, unsettled: bool = False, provider: str | None = None, limit: int | None = None
    ) -> list[JournalEntry]:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        where: list[str] = []
        params: list[Any] = []
        if unsettled:
            where.append(f"state IN ({sql_list(JournalState, UNSETTLED_STATES)})")
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        sql = SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at, provider, refund_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._transaction(write=False) as tx:
            return [self._entry(row) for row in tx.all(sql, params)]


def _check_outcome(outcome: ResultRecord) -> None:
    if outcome.state not in _RECORDED:
        raise ValueError("record takes PENDING, SUCCEEDED, FAILED, UNKNOWN or NOT_SENT")


def _answered(outcome: ResultRecord, now: datetime) -> _Event:
    """The event of the current attempt's own result (with its send, if it sent)."""
    data = _answer_data(
        outcome.provider_refund_id,
        outcome.message,
        outcome.error_code,
        outcome.http_status,
        outcome.raw,
    )
    if outcome.sent:
        data[_SENT] = True
    return _Event(
        outcome.provider,
        outcome.refund_id,
        now,
        EventKind.ANSWER,
        outcome.attempt,
        outcome.state,
        outcome.owner,
        data,
    )
