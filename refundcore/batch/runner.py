"""Running a batch: the rows checked, put in the journal's work queue, claimed a chunk
at a time and refunded on a thread pool, each outcome journalled and reported."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress

from ..errors import ConfigError, JournalError, RefundError, ValidationError
from ..journal import BatchDone, BatchEntry, BatchItem, BatchItemState, Journal, ResultRecord
from ..status import RefundStatus
from .checks import client_errors, set_errors
from .limits import RateLimits
from .progress import PROGRESS_SECONDS, BatchProgress
from .protocol import BatchClient
from .reading import BatchFile
from .report import BatchInterrupted, BatchInvalid, BatchReport
from .results import REFUND_OUTCOMES, BatchStatus, RowResult, invalid_results, skipped
from .rows import BatchRow, derive_refund_ids, numbered, row_content

__all__ = ["DEFAULT_LEASE_SECONDS", "DEFAULT_WORKERS", "run_batch"]

log = logging.getLogger("refundcore.batch")

DEFAULT_WORKERS = 8
DEFAULT_LEASE_SECONDS = 120.0
# Bounds one claim transaction (and its IN list) whatever the caller asks for.
_MAX_CHUNK = 500

# How often a worker writes finished rows to the journal between chunk claims, and how
# often it counts what other workers finished (both for progress, not correctness).
_FLUSH_SECONDS = 1.0
_COUNT_SECONDS = 2.0
# How long a worker with nothing to do waits before looking again at rows other
# workers still hold.
_IDLE_SECONDS = 0.5
# How long the calling thread waits for a row to finish before it looks at stop
# requests and progress again.
_POLL_SECONDS = 0.25


class _Runner:
    """One process's share of a batch: claims chunks of rows, refunds them on a thread
    pool, records them done, and assembles the report. Journal calls all happen on the
    calling thread (plus a lease-renewing one); refunds on the pool."""

    def __init__(
        self,
        client: BatchClient,
        journal: Journal,
        batch_id: str,
        rows: Sequence[BatchRow],
        invalid: Sequence[RowResult],
        *,
        workers: int,
        limits: RateLimits,
        on_progress: Callable[[BatchProgress], None] | None,
        chunk_size: int,
        lease_seconds: float,
        stop: threading.Event | None,
    ) -> None:
        self._client = client
        self._journal = journal
        self._batch_id = batch_id
        self._rows = {row.line or 0: row for row in rows}
        self._invalid = list(invalid)
        self._workers = workers
        self._limits = limits
        self._on_progress = on_progress
        self._chunk = chunk_size
        self._lease = lease_seconds
        self._stop = stop
        self._owner = f"{socket.gethostname()}:{os.getpid()}:batch-{uuid.uuid4().hex[:8]}"
        self._halt = threading.Event()
        self._renewal_over = threading.Event()
        self._in_flight: dict[Future[RowResult], int] = {}
        # Futures put themselves here when done: waiting on this costs the same however
        # many rows are in flight, where concurrent.futures.wait hooks into every one.
        self._finished: queue.SimpleQueue[Future[RowResult]] = queue.SimpleQueue()
        # Outcomes of sent refunds, journalled together when the rows are marked done
        # rather than one commit each: a row's outcome is in here before its future
        # is done, so it is journalled no later than the row.
        self._sent: queue.SimpleQueue[ResultRecord] = queue.SimpleQueue()
        self._outcomes: dict[int, RowResult] = {}
        self._unrecorded: list[BatchDone] = []
        self._counts: Counter[BatchStatus] = Counter()
        self._finished_here = 0
        self._done_before = 0
        self._recorded = 0
        self._elsewhere = 0
        self._waiting = 0
        self._started = time.monotonic()
        self._last_progress = float("-inf")

    def run(self) -> BatchReport:
        journal = self._journal
        journal.open_batch(
            self._batch_id,
            [
                BatchItem(line, row.provider, row.refund_id or "")
                for line, row in self._rows.items()
            ],
        )
        # Rows earlier runs finished are read only when there are any: a fresh batch of
        # thousands of rows need not decode them all.
        earlier = (
            journal.batch_entries(self._batch_id)
            if journal.count_batch(self._batch_id).done
            else []
        )
        for entry in earlier:
            if entry.state is BatchItemState.DONE:
                self._done_before += 1
                row = self._rows.get(entry.line)
                if row is not None:
                    self._counts[self._from_entry(entry, row).status] += 1
        renewer = threading.Thread(target=self._renew, name="refundcore-batch-lease", daemon=True)
        renewer.start()
        interrupted = False
        executor = ThreadPoolExecutor(self._workers, thread_name_prefix="refundcore-batch")
        try:
            self._loop(executor)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self._halt.set()
            try:
                self._wind_down(executor)
            finally:
                self._renewal_over.set()
        report = self._report(interrupted)
        self._progress(finished=True)
        if interrupted:
            raise BatchInterrupted(report)
        return report

    def _halted(self) -> bool:
        """Whether to start no more rows (the caller's stop, Ctrl-C); any thread."""
        if self._stop is not None and self._stop.is_set():
            self._halt.set()
        return self._halt.is_set()

    def _loop(self, executor: ThreadPoolExecutor) -> None:
        queue: deque[int] = deque()
        exhausted = False
        recorded_at = counted_at = time.monotonic()
        while not self._halted():
            # Twice as many rows as threads: a thread that finishes one finds the next
            # already queued instead of waiting for this thread to hand it over. A
            # queued row not started when the batch stops is skipped, never sent.
            while len(self._in_flight) < 2 * self._workers and not self._halted():
                if not queue:
                    if exhausted:
                        break
                    self._record()
                    queue.extend(self._claim())
                    self._waiting = 0
                    recorded_at = time.monotonic()
                    if not queue:
                        exhausted = True
                        break
                line = queue.popleft()
                future = executor.submit(self._refund, self._rows[line])
                self._in_flight[future] = line
                future.add_done_callback(self._finished.put)
            now = time.monotonic()
            if self._in_flight:
                self._collect(timeout=_POLL_SECONDS)
                if now - recorded_at >= _FLUSH_SECONDS:
                    self._record()
                    recorded_at = now
                if self._on_progress is not None and now - counted_at >= _COUNT_SECONDS:
                    self._count_elsewhere()
                    counted_at = now
            else:
                # Nothing left to claim here: finished, unless rows are still held by
                # other workers (which may die and leave them to be taken over).
                self._record()
                self._waiting = self._count_elsewhere()
                if self._waiting == 0:
                    return
                self._progress()
                if self._halt.wait(_IDLE_SECONDS):
                    return
                exhausted = False
            self._progress()

    def _claim(self) -> list[int]:
        while True:
            lines = self._journal.claim_batch(
                self._batch_id, owner=self._owner, limit=self._chunk, lease_seconds=self._lease
            )
            if not lines:
                return []
            mine = [line for line in lines if line in self._rows]
            # Rows another worker offered that this one found invalid (its configuration
            # differs): say so; the next run of the batch, where they are valid, sends them.
            self._unrecorded += [
                BatchDone(
                    line,
                    BatchStatus.INVALID.value,
                    "invalid_elsewhere",
                    f"not sent: invalid for the worker {self._owner}; run the batch again",
                )
                for line in lines
                if line not in self._rows
            ]
            if mine:
                return mine

    def _count_elsewhere(self) -> int:
        """Refresh what other workers finished; returns the rows not done yet."""
        counts = self._journal.count_batch(self._batch_id)
        self._elsewhere = max(0, counts.done - self._done_before - self._recorded)
        return counts.open + counts.claimed

    def _refund(self, row: BatchRow) -> RowResult:
        """One row, on a pool thread. Never raises for a refund's own reasons."""
        if not self._limits.wait(row.provider, self._halt) or self._halted():
            return skipped(row)
        try:
            result = self._client.execute(
                row.provider,
                row.operation(),
                original_amount=row.original_amount,
                defer_record=self._sent.put,
            )
        except (ValidationError, ConfigError) as exc:
            return self._not_sent(row, BatchStatus.INVALID, exc)
        except RefundError as exc:
            return self._not_sent(row, BatchStatus.ERROR, exc)
        return RowResult(
            line=row.line or 0,
            status=BatchStatus.of(result.status),
            provider=row.provider,
            refund_id=result.refund_id,
            amount=row.amount,
            provider_refund_id=result.provider_refund_id,
            error_code=result.error_code,
            message=self._redact(row.provider, result.message),
            ran_here=True,
            result=result,
        )

    def _not_sent(self, row: BatchRow, status: BatchStatus, exc: RefundError) -> RowResult:
        return RowResult(
            line=row.line or 0,
            status=status,
            provider=row.provider,
            refund_id=row.refund_id,
            amount=row.amount,
            error_code=type(exc).__name__,
            message=self._redact(row.provider, str(exc)),
            ran_here=True,
        )

    def _redact(self, provider: str, text: str | None) -> str | None:
        # Messages come from gateways and plugins: mask any credential one echoes.
        return self._client.redactor.text(provider, text)

    def _collect(self, timeout: float) -> None:
        """Take in the outcomes of rows finished by now, waiting up to ``timeout`` for
        the first."""
        finished: list[Future[RowResult]] = []
        try:
            finished.append(self._finished.get(timeout=timeout))
            while True:
                finished.append(self._finished.get_nowait())
        except queue.Empty:
            if not finished:
                # One taken off the queue by a call that Ctrl-C cut short is found here.
                finished = [future for future in self._in_flight if future.done()]
        for future in finished:
            line = self._in_flight.get(future)
            if line is None:
                continue
            outcome = future.result()
            # Kept before the future is let go: a Ctrl-C between the two must not lose
            # the outcome of a refund that was sent (the wind-down collects it again).
            self._outcomes[line] = outcome
            del self._in_flight[future]
            if outcome.status is BatchStatus.SKIPPED:
                continue
            self._counts[outcome.status] += 1
            self._finished_here += 1
            self._unrecorded.append(
                BatchDone(line, outcome.status.value, outcome.error_code, outcome.message)
            )

    def _record(self) -> None:
        """Journal the outcomes of refunds sent, then mark finished rows done: one
        transaction for each."""
        sent = []
        with suppress(queue.Empty):
            while True:
                sent.append(self._sent.get_nowait())
        if sent:
            try:
                self._journal.record_many(sent)
            except JournalError as exc:
                # The refunds are out: their rows stay SUBMITTING, and a reconcile (or
                # the next run of the batch) settles them once the journal is back.
                log.error(
                    "batch %s: outcomes of %d refunds not journalled: %s",
                    self._batch_id,
                    len(sent),
                    exc,
                )
        if self._unrecorded:
            self._recorded += self._journal.finish_batch(
                self._batch_id, owner=self._owner, done=self._unrecorded
            )
            self._unrecorded = []

    def _wind_down(self, executor: ThreadPoolExecutor) -> None:
        """Let rows in flight finish, record them, and give back unstarted rows."""
        try:
            while self._in_flight:
                self._collect(timeout=_POLL_SECONDS)
                self._progress()
        finally:
            executor.shutdown(wait=True)
            self._record()
            self._journal.release_batch(self._batch_id, owner=self._owner)

    def _renew(self) -> None:
        while not self._renewal_over.wait(self._lease / 3):
            try:
                self._journal.renew_batch(
                    self._batch_id, owner=self._owner, lease_seconds=self._lease
                )
            except RefundError as exc:
                log.warning(
                    "batch %s: cannot renew the lease on claimed rows: %s", self._batch_id, exc
                )

    def _from_entry(self, entry: BatchEntry, row: BatchRow) -> RowResult:
        """A row another worker (or an earlier run) finished, as the journal has it now."""
        refund = entry.refund
        recorded = BatchStatus.__members__.get(entry.outcome or "", BatchStatus.ERROR)
        if refund is not None and recorded in REFUND_OUTCOMES:
            # The journal's word, which callbacks and reconciles may have moved on since.
            return RowResult(
                line=entry.line,
                status=BatchStatus.of(refund.state.status or RefundStatus.UNKNOWN),
                provider=row.provider,
                refund_id=row.refund_id,
                amount=row.amount,
                provider_refund_id=refund.provider_refund_id,
                error_code=refund.error_code,
                message=self._redact(row.provider, refund.message),
            )
        return RowResult(
            line=entry.line,
            status=recorded,
            provider=row.provider,
            refund_id=row.refund_id,
            amount=row.amount,
            error_code=entry.error_code,
            message=self._redact(row.provider, entry.message),
        )

    def _report(self, interrupted: bool) -> BatchReport:
        ran_here = all(
            line in self._outcomes and self._outcomes[line].status is not BatchStatus.SKIPPED
            for line in self._rows
        )
        entries = (
            {}
            if ran_here
            else {entry.line: entry for entry in self._journal.batch_entries(self._batch_id)}
        )
        outcomes = list(self._invalid)
        for line, row in self._rows.items():
            mine = self._outcomes.get(line)
            entry = entries.get(line)
            if mine is not None and mine.status is not BatchStatus.SKIPPED:
                outcomes.append(mine)
            elif entry is not None and entry.state is BatchItemState.DONE:
                outcomes.append(self._from_entry(entry, row))
            else:
                outcomes.append(skipped(row, "not attempted: the batch was stopped"))
        stopped = any(outcome.status is BatchStatus.SKIPPED for outcome in outcomes)
        return BatchReport(
            batch_id=self._batch_id,
            outcomes=tuple(sorted(outcomes, key=lambda outcome: outcome.line)),
            interrupted=interrupted or stopped,
            elapsed=time.monotonic() - self._started,
        )

    def _progress(self, *, finished: bool = False) -> None:
        if self._on_progress is None:
            return
        now = time.monotonic()
        if not finished and now - self._last_progress < PROGRESS_SECONDS:
            return
        self._last_progress = now
        elapsed = now - self._started
        rate = self._finished_here / elapsed if self._finished_here and elapsed > 0 else None
        known = sum(self._counts.values())
        left = max(0, len(self._rows) - known - self._elsewhere)
        self._on_progress(
            BatchProgress(
                total=len(self._rows),
                counts={status.value: self._counts[status] for status in BatchStatus},
                elsewhere=self._elsewhere,
                in_flight=len(self._in_flight),
                elapsed=elapsed,
                rate=rate,
                eta=left / rate if rate else None,
                finished=finished,
                waiting=self._waiting,
            )
        )


def run_batch(
    client: BatchClient,
    rows: Iterable[BatchRow] | BatchFile,
    *,
    workers: int = DEFAULT_WORKERS,
    rate: float | Mapping[str, float] | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    skip_invalid: bool = False,
    chunk_size: int | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    stop: threading.Event | None = None,
) -> BatchReport:
    """What :meth:`RefundClient.refund_many` does; see there."""
    journal = _journal_of(client)
    chunk = _check_arguments(workers, chunk_size, lease_seconds)
    limits = RateLimits(rate)
    batch_id, runnable, invalid = _checked(client, rows, skip_invalid)
    if workers > client.pool_size:
        log.warning(
            "%d workers share %d pooled connections per gateway: create the client with "
            "pool_size=%d or more",
            workers,
            client.pool_size,
            workers,
        )
    return _Runner(
        client,
        journal,
        batch_id,
        runnable,
        invalid,
        workers=workers,
        limits=limits,
        on_progress=on_progress,
        chunk_size=chunk,
        lease_seconds=lease_seconds,
        stop=stop,
    ).run()


def _journal_of(client: BatchClient) -> Journal:
    journal = client.journal
    if journal is None:
        raise ConfigError(
            "a batch needs a journal: it is what lets a batch be run again without "
            "refunding a row twice (RefundClient(journal=...))",
            field="journal",
        )
    return journal


def _check_arguments(workers: int, chunk_size: int | None, lease_seconds: float) -> int:
    """Refuse unusable arguments; returns the chunk size to claim rows by."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValidationError(
            f"must be a whole number of 1 or more, got {workers!r}", field="workers"
        )
    chunk = max(2 * workers, 8) if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= _MAX_CHUNK:
        raise ValidationError(f"must be 1 to {_MAX_CHUNK}, got {chunk!r}", field="chunk_size")
    if not lease_seconds > 0:
        raise ValidationError(f"must be positive, got {lease_seconds!r}", field="lease_seconds")
    return chunk


def _checked(
    client: BatchClient, rows: Iterable[BatchRow] | BatchFile, skip_invalid: bool
) -> tuple[str, list[BatchRow], list[RowResult]]:
    """The batch id, the rows to send and the INVALID results of the others;
    :class:`BatchInvalid` if some row is invalid and they are not to be skipped."""
    if isinstance(rows, BatchFile):
        batch_id = rows.batch_id
        # As read_batch_file made them, unless the caller built the BatchFile itself.
        prepared = derive_refund_ids(numbered(rows.rows))
        errors = list(rows.errors) + client_errors(client, prepared)
    else:
        prepared = derive_refund_ids(numbered(rows))
        batch_id = _rows_digest(prepared)
        errors = set_errors(prepared) + client_errors(client, prepared)
    errors.sort(key=lambda error: error.line)
    invalid = invalid_results(prepared, errors)
    bad = {error.line for error in errors}
    runnable = [row for row in prepared if row.line not in bad]
    if errors and not skip_invalid:
        refused = invalid + [
            skipped(row, "not sent: the batch has invalid rows") for row in runnable
        ]
        report = BatchReport(batch_id, tuple(sorted(refused, key=lambda o: o.line)))
        raise BatchInvalid(errors, report)
    return batch_id, runnable, invalid


def _rows_digest(rows: Sequence[BatchRow]) -> str:
    """A batch id for rows built in code: the same rows, the same batch."""
    canonical = [[row.line, row.refund_id, *row_content(row)] for row in rows]
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:32]
