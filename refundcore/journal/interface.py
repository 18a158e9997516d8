"""The journal's interface: what every backend does, whatever it stores rows in.

The journal is what makes "money never goes out twice, no refund is forgotten" hold
across threads, processes and machines: a refund is recorded (state ``SUBMITTING``)
before its request leaves the process, and every later outcome or callback moves that
row forward, never back.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

from ..status import JournalState
from .values import (
    BatchCounts,
    BatchDone,
    BatchEntry,
    BatchItem,
    Claim,
    JournalEntry,
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
    def claim(
        self,
        new: NewRefund,
        *,
        owner: str,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
    ) -> Claim:
        """Record ``new`` as SUBMITTING before sending it, atomically.

        Exactly one concurrent caller gets NEW (or TAKEOVER) for a refund id; see
        :class:`ClaimVerdict` for the rest. ``owner`` must be unique to the attempt:
        a live lease makes any claim BUSY, the holder's own included.
        """

    @abc.abstractmethod
    def record(
        self,
        provider: str,
        refund_id: str,
        *,
        owner: str,
        state: JournalState,
        provider_refund_id: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        raw: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> JournalEntry:
        """Store the outcome of ``owner``'s send or reconcile and release its lease.

        ``state`` is PENDING, SUCCEEDED, FAILED or UNKNOWN. A final row is returned
        unchanged, and a row never moves to a less-informed state (UNKNOWN after
        PENDING keeps PENDING). ``JournalError`` if another owner holds a live lease
        or there is no such row.
        """

    @abc.abstractmethod
    def record_many(self, outcomes: Sequence[ResultRecord], *, now: datetime | None = None) -> None:
        """:meth:`record` each outcome, in as few transactions as the journal can.

        For a caller that finishes many refunds at once (a batch): the outcomes of
        the owners' own sends share one commit. Each is stored exactly as
        :meth:`record` would store it; ``JournalError`` if the journal cannot be
        used, with none or only some of them stored.
        """

    @abc.abstractmethod
    def abandon(self, provider: str, refund_id: str, *, owner: str) -> bool:
        """Forget a SUBMITTING row whose request certainly never left the process (the
        transport said nothing was sent), so the refund id can be used again.

        Only ``owner``'s own, still SUBMITTING, first attempt is removed; anything else
        is left as it is. True when the row was removed.
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
        now: datetime | None = None,
    ) -> JournalEntry | None:
        """Apply a verified callback to the row it names (by refund id, else by the
        provider's refund id); ``None`` if there is no such row.

        Monotonic and idempotent: SUBMITTING, UNKNOWN and PENDING move to PENDING or a
        final state, PENDING only to a final state, a final row never changes. A
        missing ``provider_refund_id`` is filled in.
        """

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
        self, *, unsettled: bool = False, provider: str | None = None, limit: int | None = None
    ) -> list[JournalEntry]:
        """Rows ordered by creation time; ``unsettled`` keeps SUBMITTING, PENDING and
        UNKNOWN ones (what a reconciler has to look at)."""

    # -- batches: a work queue of rows shared by every worker of the journal ----------

    @abc.abstractmethod
    def open_batch(
        self, batch_id: str, items: Iterable[BatchItem], *, now: datetime | None = None
    ) -> None:
        """Make ``items`` the rows of batch ``batch_id``, ready to be claimed (read
        as they come, so a batch of any size takes the same memory).

        Rows already there are kept as they are, except that a row an earlier run left
        DONE without a settled outcome (anything but :data:`SETTLED_OUTCOMES`) before
        ``now`` is opened again, so a re-run retries it. Safe to call from every worker.
        """

    @abc.abstractmethod
    def claim_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        limit: int,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
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
        now: datetime | None = None,
    ) -> int:
        """Extend the lease of every row ``owner`` holds; returns how many it holds."""

    @abc.abstractmethod
    def finish_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        done: Sequence[BatchDone],
        now: datetime | None = None,
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
