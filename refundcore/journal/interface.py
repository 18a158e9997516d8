"""The journal's interface: what every backend does, whatever it stores rows in.

The journal is what makes "money never goes out twice, no refund is forgotten" hold
across threads, processes and machines: a refund is recorded (state ``SUBMITTING``)
before its request leaves the process, and every later outcome or callback moves that
row forward, never back. Everything that happens to a refund is also appended to its
history (:meth:`Journal.history`): claims, sends, answers, queries, callbacks,
operators' decisions, and answers that came too late or contradict what was known.

Time comes from one clock, the journal's (the database's): leases are set and
compared there, never on the caller's machine, so workers whose clocks disagree still
agree on whose turn it is.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from ..status import JournalState
from .values import (
    Applied,
    Backlog,
    BatchCounts,
    BatchDone,
    BatchEntry,
    BatchItem,
    BatchSummary,
    Claim,
    JournalEntry,
    JournalEvent,
    JournalStats,
    NewRefund,
    ResultRecord,
)

__all__ = ["Journal"]


class Journal(abc.ABC):
    """Durable record of every refund sent, shared by all threads of a client.

    Open one with :func:`refundcore.journal.open_journal`; use it as a context manager
    or call :meth:`close`. Every method raises :class:`~refundcore.errors.JournalError`
    when the journal cannot be used, naming the journal and the cause.
    """

    #: Where the journal lives, for messages: never contains a password.
    url: str

    @abc.abstractmethod
    def now(self) -> datetime:
        """The journal's clock (UTC): the time every lease and timestamp is measured by."""

    @abc.abstractmethod
    def claim(self, new: NewRefund, *, owner: str, lease_seconds: float = 60.0) -> Claim:
        """Record ``new`` as SUBMITTING before sending it, atomically.

        Exactly one concurrent caller gets NEW (or TAKEOVER) for a refund id; see
        :class:`ClaimVerdict` for the rest. ``owner`` must be unique to the attempt:
        a live lease makes any claim BUSY, the holder's own included. The lease runs
        ``lease_seconds`` from the journal's clock; the entry's ``attempt`` is the
        fencing token to give :meth:`record`.
        """

    @abc.abstractmethod
    def claim_many(
        self, claims: Sequence[tuple[NewRefund, str]], *, lease_seconds: float = 60.0
    ) -> list[Claim]:
        """:meth:`claim` each ``(new, owner)`` pair, in as few transactions as the
        journal can: the verdicts, in order.

        For callers claiming many refunds at once (threads of one process, a batch):
        the claims share one commit. Each is what :meth:`claim` of it alone would be
        (its own lease on the journal's clock, its own attempt and history); a refund
        claimed twice is NEW for the first and BUSY for the second. ``JournalError``
        if the journal cannot be used, with none of them claimed.
        """

    @abc.abstractmethod
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
        """Store the outcome of ``owner``'s attempt ``attempt`` and release its lease.

        ``state`` is PENDING, SUCCEEDED, FAILED, UNKNOWN or NOT_SENT; ``sent`` says the
        attempt sent a request (a ``send`` event precedes the ``answer``). A final or
        decided row keeps its state (but see :meth:`resolve`),
        and a row never moves to a less-informed state (UNKNOWN after PENDING keeps
        PENDING). An outcome of an older attempt than the
        row's current one (its sender was taken over) never overwrites: it is stored as
        a ``late_answer`` event and applied only as a callback would be; where it
        disagrees with a decision, a final state or "never sent", a ``contradiction``
        event records it and a WARNING is logged. ``JournalError`` if the row does not
        exist, the attempt was never claimed, or it belongs to another owner.
        """

    @abc.abstractmethod
    def record_many(self, outcomes: Sequence[ResultRecord]) -> None:
        """:meth:`record` each outcome, in as few transactions as the journal can.

        For a caller that finishes many refunds at once (a batch): the outcomes of
        the owners' own sends share one commit. Each is stored exactly as
        :meth:`record` would store it; ``JournalError`` if the journal cannot be
        used, with none of them stored.
        """

    @abc.abstractmethod
    def abandon(self, provider: str, refund_id: str, *, owner: str) -> bool:
        """Give back ``owner``'s claim of a refund whose request certainly never left
        the process (a stage refused it, or the transport said nothing was sent).

        Only ``owner``'s own attempt, begun as a claim (not a takeover, which may
        follow an attempt that sent it), is given back; anything else is left as it
        is. A refund that is nothing but this claim is forgotten (its refund id free
        for any refund); one with a history is marked NOT_SENT (the same refund may
        be sent again). True when the claim was given back.
        """

    @abc.abstractmethod
    def apply_notification(
        self,
        provider: str,
        *,
        state: JournalState,
        refund_id: str | None = None,
        provider_refund_id: str | None = None,
        raw: Mapping[str, Any] | None = None,
        unsigned_tie: bool = False,
    ) -> Applied | None:
        """Apply a verified callback to the row it names (by refund id, else by the
        provider's refund id); ``None`` if there is no such row.

        Monotonic and idempotent: SUBMITTING, UNKNOWN, NOT_SENT and PENDING move to
        PENDING or a final state, PENDING only to a final state, a final row never
        changes, a decided row never moves (but see :meth:`resolve`). A missing
        ``provider_refund_id`` is filled in. A callback found by its refund id whose
        ``provider_refund_id`` is not the row's (or is another row's) is about another
        gateway refund: kept as evidence, recorded as a contradiction, never applied.
        With ``unsigned_tie`` (the refund id was read from data the gateway does not
        sign: :attr:`~refundcore.models.RefundNotification.unsigned_tie`), a callback
        found by its refund id is applied only where the row already holds this
        ``provider_refund_id``; otherwise it is kept and recorded the same way
        (``Applied.unconfirmed``), and the row stays as it was, but for a row it would
        overrule (see :meth:`resolve`; "never sent" too), which goes back to UNKNOWN.
        Every callback is kept as a ``callback`` event; the :class:`Applied` says
        whether it changed the row, repeats a callback received before, or contradicts
        the row (then also a ``contradiction`` event and a WARNING). A repeat is kept
        once more as a duplicate, and every later one that changes nothing only counts
        on it (:attr:`JournalEvent.times`): a callback replayed without end costs the
        same work each time and the history no more than two events (and its
        contradiction, recorded once).
        """

    @abc.abstractmethod
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
        """Keep a query's answer as evidence (a ``query`` event: when, and what the
        gateway said) and, if it ``settles`` (the caller trusts it to), apply it as
        :meth:`apply_notification` applies a callback. ``note`` says in words what the
        answer proves, for the history. ``JournalError`` if there is no such row.
        """

    @abc.abstractmethod
    def resolve(
        self, provider: str, refund_id: str, *, state: JournalState, reason: str, by: str
    ) -> JournalEntry:
        """Record an operator's decision: the refund is SUCCEEDED, FAILED or NOT_SENT.

        ``reason`` and ``by`` are required (``ValidationError`` naming the field). The
        row takes the decided state (NOT_SENT: the same refund may be sent again), the
        decision is a ``decision`` event beside the evidence, and a later gateway
        answer that disagrees is recorded as a ``contradiction``; it moves the row only
        where the money left and the decision would let it be refunded twice: any
        answer over NOT_SENT (the same refund id would be sent again), SUCCEEDED over
        FAILED (the payment's limit would not count it). The row is then no longer
        decided.
        ``ValidationError`` for a row the gateway's own answer made final (or NOT_SENT
        for one the gateway reported PENDING); ``JournalError`` for a missing row or
        one whose sender still holds its lease.
        """

    @abc.abstractmethod
    def history(self, provider: str, refund_id: str) -> list[JournalEvent]:
        """Everything that happened to the refund, oldest first (empty for a refund
        the journal does not know, or that was recorded before histories were kept)."""

    @abc.abstractmethod
    def get(self, provider: str, refund_id: str) -> JournalEntry | None:
        """The row of ``(provider, refund_id)``, or ``None``."""

    @abc.abstractmethod
    def find_by_provider_refund_id(
        self, provider: str, provider_refund_id: str
    ) -> JournalEntry | None:
        """The row the gateway knows as ``provider_refund_id`` (the oldest, if several)."""

    @abc.abstractmethod
    def committed_refunds(self, provider: str, payment_key: str) -> list[JournalEntry]:
        """The refunds and voids of one payment (its ``payment_key``, as
        :func:`~refundcore.journal.records.payment_key` makes it) whose money has left
        or may have left: every state but FAILED. What a claim adds up against the
        payment's original amount, oldest first."""

    @abc.abstractmethod
    def entries(
        self,
        *,
        unsettled: bool = False,
        provider: str | None = None,
        limit: int | None = None,
        states: Collection[JournalState] | None = None,
        created_before: datetime | None = None,
        created_since: datetime | None = None,
        search: str | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[JournalEntry]:
        """Rows ordered by creation time, oldest first (``newest_first`` reverses it).

        Every filter given must hold: ``unsettled`` keeps SUBMITTING, PENDING and
        UNKNOWN rows (what a reconciler has to look at), ``states`` the rows in one of
        those states, ``created_before`` / ``created_since`` the rows recorded before /
        at or after that instant (timezone-aware), and ``search`` the rows whose refund
        id, payment id, merchant reference, transaction id or provider refund id is
        exactly that text. ``offset`` skips that many rows first, for paging.
        ``ValueError`` for a negative ``limit`` or ``offset`` or a naive datetime.
        """

    @abc.abstractmethod
    def stats(self) -> JournalStats:
        """How many refunds each provider has in each state, and for the states still
        to be settled the oldest refund in it: what an operator looks at first."""

    @abc.abstractmethod
    def backlog(self) -> list[Backlog]:
        """What is left to settle: for each provider and unsettled state (SUBMITTING,
        PENDING, UNKNOWN) that has refunds, how many and the oldest's creation time;
        ordered by provider and state. One aggregate query, for monitoring."""

    # -- batches: a work queue of rows shared by every worker of the journal ----------

    @abc.abstractmethod
    def open_batch(self, batch_id: str, items: Iterable[BatchItem]) -> None:
        """Make ``items`` the rows of batch ``batch_id``, ready to be claimed (read
        as they come, so a batch of any size takes the same memory).

        Rows already there are kept as they are, except that a row an earlier run left
        DONE without a settled outcome (anything but :data:`SETTLED_OUTCOMES`) before
        this call is opened again, so a re-run retries it. Safe to call from every
        worker.
        """

    @abc.abstractmethod
    def claim_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        limit: int,
        lease_seconds: float = 60.0,
    ) -> list[int]:
        """Take up to ``limit`` rows for ``owner`` in one transaction, lowest lines
        first: rows whose lease ran out, then OPEN rows. Returns their lines (ascending
        within each kind). Concurrent callers, on any machine, never get the same row
        while its lease lasts."""

    @abc.abstractmethod
    def renew_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        lease_seconds: float = 60.0,
    ) -> int:
        """Extend the lease of every row ``owner`` holds; returns how many it holds."""

    @abc.abstractmethod
    def finish_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        done: Sequence[BatchDone],
    ) -> int:
        """Record outcomes of rows ``owner`` holds, in one transaction; returns how many
        were recorded. A row ``owner`` no longer holds (its lease ran out and another
        worker took it) is left to that worker."""

    @abc.abstractmethod
    def release_batch(self, batch_id: str, *, owner: str) -> int:
        """Give every row ``owner`` still holds back (OPEN); returns how many."""

    @abc.abstractmethod
    def count_batch(self, batch_id: str) -> BatchCounts:
        """How many rows of the batch are OPEN, CLAIMED and DONE."""

    @abc.abstractmethod
    def batch_entries(
        self, batch_id: str, *, after_line: int = 0, limit: int | None = None
    ) -> list[BatchEntry]:
        """The rows of the batch after line ``after_line`` in line order (at most
        ``limit`` of them, to page through a large batch), each with its journalled
        refund."""

    @abc.abstractmethod
    def batches(self, *, limit: int | None = None) -> list[BatchSummary]:
        """The batches in the journal, the most recently active first (their rows
        counted by state and by outcome); at most ``limit`` of them."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the journal's connections. Further use raises ``JournalError``."""

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
