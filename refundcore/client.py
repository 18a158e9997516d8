"""``RefundClient``: the facade over the whole flow of a refund.

    refund()/query()/void()  the caller's input → an operation value (checked as built)
    execute()                the provider's info and config, then
        Pipeline.validate    what the provider cannot do, the original amount
        ExactlyOnce.execute  with a journal (the default): claim the refund id first;
                             a refund already recorded is answered from the journal
                             (never built or signed), an interrupted one is reconciled,
                             a new one goes through the stages below and its finished
                             result is recorded
        the stages           run by the provider's plugin:
            build → sign → send (the transport) → parse → finish
                             (finish stamps the result's identity and masks secrets)
    verify_callback()        the plugin verifies a callback; its word settles the journal
    check()                  everything execute() refuses before sending, up to build
    reconcile()              settle every unsettled journalled refund
    resolve()                an operator's decision about a refund nothing else settles
    refund_many()            a batch of refunds on a thread pool (refundcore.batch)

The pieces: :mod:`refundcore.pipeline` (the stages), :mod:`refundcore.exactly_once`
(the journal protocol, written as a flow of effects that :mod:`refundcore.effects`
drives: here in the calling thread, for :class:`~refundcore.AsyncRefundClient` on an
event loop), :mod:`refundcore.client_base` (what both clients share),
:mod:`refundcore.journal.records` (rows ↔ values), :mod:`refundcore.redaction`
(secrets). Any stage may be wrapped by an app plugin (``register_plugin``). Input
errors are raised before anything is sent; once a request may have left the process,
the client never raises: an outcome it cannot know is a result with status
``UNKNOWN``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .client_base import ClientBase
from .effects import drive
from .exactly_once import DeferRecord
from .journal import DEFAULT_JOURNAL, Journal, JournalEntry, JournalState
from .models import Operation, PaymentRef, RefundNotification, RefundResult, RefundStatus
from .money import Money
from .transport import HttpTransport

if TYPE_CHECKING:
    import requests

    from .batch import BatchFile, BatchProgress, BatchReport, BatchRow

__all__ = ["RefundClient"]


class RefundClient(ClientBase):
    """Issue refunds through any installed provider.

    ``config`` maps provider ids to their settings (a dict each, or a ready config
    object); see :mod:`refundcore.config`. Nothing is imported or validated until a
    provider is used. A client is thread-safe; clients are independent of each other.

    ``journal`` makes refunds exactly-once: each is recorded before it is sent, a
    repeated refund id returns the recorded outcome, and an interrupted one is
    reconciled instead of sent again. By default it is a SQLite file in the user's data
    directory (``$REFUNDCORE_JOURNAL`` overrides it), opened on first use; give
    ``"sqlite:///path.db"``, ``"postgresql://…"`` (several app servers) or a
    :class:`~refundcore.journal.Journal`, or ``None`` to opt out.
    ``journal_wait`` bounds how long a caller waits for another worker that is sending
    the same refund; ``lease_seconds`` is how long a sender may take before its refund
    counts as interrupted.

    ``session`` is a ``requests.Session`` of the caller's to send through (its headers,
    proxies, client certificate and mounted adapters apply; the caller closes it); one
    that skips TLS verification or whose adapters retry is refused. Without one, the
    client makes its own, keeping ``pool_size`` connections per gateway.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        entry_points: bool = True,
        allow_plugins: list[str] | None = None,
        disable_plugins: list[str] | None = None,
        strict_plugins: bool = False,
        pool_size: int = 10,
        config_dir: str | Path | None = None,
        journal: str | Journal | None = DEFAULT_JOURNAL,
        journal_wait: float = 30.0,
        lease_seconds: float = 120.0,
        session: requests.Session | None = None,
    ) -> None:
        self._pool_size = pool_size
        super().__init__(
            config,
            transport=HttpTransport(pool_size=pool_size, session=session),
            entry_points=entry_points,
            allow_plugins=allow_plugins,
            disable_plugins=disable_plugins,
            strict_plugins=strict_plugins,
            config_dir=config_dir,
            journal=journal,
            journal_wait=journal_wait,
            lease_seconds=lease_seconds,
        )

    # -- the operations ----------------------------------------------------------------

    def refund(
        self,
        provider: str,
        *,
        payment: PaymentRef,
        amount: Money,
        refund_id: str | None = None,
        reason: str | None = None,
        notify_url: str | None = None,
        original_amount: Money | None = None,
    ) -> RefundResult:
        """Refund ``amount`` of ``payment``. ``refund_id`` is the idempotency key
        (generated when omitted); the result carries it. With a journal and
        ``original_amount`` (the payment's total), refunds of the payment recorded as
        sent or succeeded never add up to more than it."""
        operation = self._refund_operation(payment, amount, refund_id, reason, notify_url)
        return self.execute(provider, operation, original_amount=original_amount)

    def query(
        self,
        provider: str,
        *,
        refund_id: str,
        payment: PaymentRef | None = None,
        provider_refund_id: str | None = None,
    ) -> RefundResult:
        """Ask the gateway where refund ``refund_id`` stands. The payment and the
        gateway's refund id, when not given, are the journal's (if it has the refund)."""
        needed = self._query_needs_journal(payment, provider_refund_id)
        known = self._journalled(provider, refund_id) if needed else None
        operation = self._query_operation(refund_id, payment, provider_refund_id, known)
        return self.execute(provider, operation)

    def void(
        self,
        provider: str,
        *,
        payment: PaymentRef | None = None,
        refund_id: str | None = None,
        amount: Money | None = None,
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> RefundResult:
        """Reverse a whole, unsettled payment, where the provider offers it. Without
        ``payment``, ``refund_id`` must name a void the journal has (asking for it
        again): its payment is the journal's."""
        known = self._journalled(provider, refund_id) if payment is None else None
        operation = self._void_operation(payment, refund_id, amount, reason, notify_url, known)
        return self.execute(provider, operation)

    def refund_many(
        self,
        rows: Iterable[BatchRow] | BatchFile,
        *,
        workers: int = 8,
        rate: float | Mapping[str, float] | None = None,
        on_progress: Callable[[BatchProgress], None] | None = None,
        skip_invalid: bool = False,
        chunk_size: int | None = None,
        lease_seconds: float | None = None,
        stop: threading.Event | None = None,
    ) -> BatchReport:
        """Refund every row of a batch concurrently, through the journal; see
        :mod:`refundcore.batch`.

        ``rows`` are :class:`~refundcore.batch.BatchRow` values or a file parsed by
        :func:`~refundcore.batch.read_batch_file`. Every row is checked first (as
        :meth:`check` does, and each payment's rows with the refunds the journal holds
        for it); if any is invalid, nothing is sent and
        :class:`~refundcore.batch.BatchInvalid` lists them by line, unless
        ``skip_invalid`` (they are then reported INVALID).

        ``workers`` threads share this client (give it ``pool_size >= workers``);
        ``rate`` caps requests per second per provider: a number for every provider, or
        ``{"wonder": 5, "*": 20}``. Rows are claimed from the journal ``chunk_size`` at a
        time (default ``2 * workers``, at least 8) under a lease of ``lease_seconds``
        (default: this client's), so processes sharing the journal split the batch.
        ``on_progress`` gets a :class:`~refundcore.batch.BatchProgress` on this thread
        as rows finish. Setting ``stop`` stops starting rows: the report then says
        ``interrupted``. Ctrl-C does the same, then raises
        :class:`~refundcore.batch.BatchInterrupted` carrying the report.

        Needs a journal (``ConfigError`` otherwise). Running the same batch again
        sends nothing twice: finished rows are reported from the journal, the rest
        are sent or reconciled.
        """
        from .batch import run_batch

        return run_batch(
            self,
            rows,
            workers=workers,
            rate=rate,
            on_progress=on_progress,
            skip_invalid=skip_invalid,
            chunk_size=chunk_size,
            lease_seconds=self._lease_seconds if lease_seconds is None else lease_seconds,
            stop=stop,
        )

    def execute(
        self,
        provider: str,
        operation: Operation,
        *,
        original_amount: Money | None = None,
        defer_record: DeferRecord | None = None,
    ) -> RefundResult:
        """Run a ready operation value through the pipeline (and the journal, if any).

        With ``defer_record``, the outcome of a request sent now is handed to it to be
        journalled later (with others, by :meth:`Journal.record_many`) instead of at
        once: how a batch journals its rows' outcomes together.
        """
        steps = self._execute_steps(provider, operation, original_amount, defer_record)
        return drive(steps, self._pipeline.send)

    def reconcile(self, provider: str | None = None) -> list[RefundResult]:
        """Query every unsettled journalled refund (of ``provider``, or of all) and
        settle what can be settled; returns each one's outcome now."""
        return drive(self._reconcile_steps(provider), self._pipeline.send)

    def verify_callback(
        self,
        provider: str,
        *,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> RefundNotification:
        """Verify a callback the gateway sent and return what it says.

        ``path`` is the path plus ``?query`` exactly as received. Raises
        :class:`SignatureError` when the callback cannot be trusted. With a journal,
        the notification settles the refund it names; ``verdict`` says what the journal
        made of it (:class:`~refundcore.status.CallbackVerdict`), ``duplicate`` whether
        it already had it. One the journal did not apply (another refund's gateway
        refund id, or a word against the final state it keeps, then in
        ``contradicts``) comes without ``refund_id``: act on no refund for it. One about
        a refund the journal does not hold (``unmatched``) keeps the callback's own
        ids, checked against nothing.
        """
        steps = self._verify_steps(provider, method=method, path=path, headers=headers, body=body)
        return drive(steps, self._pipeline.send)

    def resolve(
        self,
        provider: str,
        refund_id: str,
        *,
        as_: JournalState | RefundStatus | str,
        reason: str,
        by: str,
    ) -> JournalEntry:
        """Record an operator's decision about a journalled refund the gateway's word
        cannot settle (an UNKNOWN whose provider's lookup proves nothing): it
        ``SUCCEEDED``, ``FAILED``, or was ``NOT_SENT`` (then the same refund id may be
        sent again). ``as_`` takes those states or ``"succeeded"``, ``"failed"``,
        ``"not-sent"``; ``reason`` and ``by`` (who decides) are required.

        The decision is kept in the refund's history beside the evidence; a later
        gateway answer that disagrees with it is recorded as a contradiction and
        logged, and applied only where it shows the money left: any answer over
        ``NOT_SENT`` (the same refund id would be sent again), ``SUCCEEDED`` over
        ``FAILED`` (the payment's limit would not count it). Returns the refund as
        recorded.
        ``ValidationError`` for a missing reason or name, or a refund the gateway's own
        answer settled; ``JournalError`` for an unknown refund or one being sent right
        now.
        """
        return self._decision(provider, refund_id, as_=as_, reason=reason, by=by)()

    @property
    def pool_size(self) -> int:
        """Pooled connections per gateway: how many requests can be in flight at once
        without waiting for a connection."""
        return self._pool_size

    def close(self) -> None:
        """Release pooled connections (and the journal, if this client opened it)."""
        self._pipeline.close()
        self._close_journal()

    def __enter__(self) -> RefundClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
