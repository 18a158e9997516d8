"""Running a batch: its rows put in the journal's work queue, claimed a chunk at a time
and refunded on a thread pool, each outcome journalled, and each result stored for the
report.

Only the rows in flight and the results of the last second are in memory: rows come
from the batch's store as they are claimed, results go back to it as they finish."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress

from ..errors import ConfigError, JournalError, RefundError, ValidationError
from ..journal import BatchDone, BatchEntry, BatchItem, BatchItemState, Journal, ResultRecord
from ..logs import EventLogger, batch_line
from .limits import RateLimits
from .progress import PROGRESS_SECONDS, BatchProgress
from .protocol import BatchClient
from .report import BatchInterrupted, BatchReport, complete
from .results import BatchStatus, RowResult, from_journal, row_result
from .rows import BatchRow
from .store import PAGE, RowStore

__all__ = ["Runner"]

log = EventLogger("refundcore.batch")

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


class Runner:
    """One process's share of a batch: claims chunks of the valid rows of ``store``,
    refunds them on a thread pool, records them done, and assembles the report. Journal
    and store calls all happen on the calling thread (plus a lease-renewing one);
    refunds on the pool."""

    def __init__(
        self,
        client: BatchClient,
        journal: Journal,
        store: RowStore,
        batch_id: str,
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
        self._store = store
        self._batch_id = batch_id
        self._total = store.row_count()
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
        # Results of rows finished since the last flush, on their way to the store.
        self._results: list[RowResult] = []
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
        """Run this process's share; the report of every row. ``BatchInterrupted``
        (carrying the report) after Ctrl-C."""
        items = self._store.queue_items()
        self._journal.open_batch(self._batch_id, (BatchItem(*item) for item in items))
        self._count_earlier()
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
                renewer.join()
        report = self._report(interrupted)
        self._progress(finished=True)
        if interrupted:
            raise BatchInterrupted(report)
        return report

    def _count_earlier(self) -> None:
        """Count the rows earlier runs finished, for progress. Read only when there are
        any: a fresh batch of thousands of rows need not decode them all."""
        if not self._journal.count_batch(self._batch_id).done:
            return
        for entries in self._journal_pages():
            done = [entry for entry in entries if entry.state is BatchItemState.DONE]
            self._done_before += len(done)
            rows = self._store.rows_at([entry.line for entry in done])
            for entry in done:
                row = rows.get(entry.line)
                if row is not None:
                    self._counts[self._from_journal(entry, row).status] += 1

    def _journal_pages(self) -> Iterator[list[BatchEntry]]:
        after = 0
        while entries := self._journal.batch_entries(self._batch_id, after_line=after, limit=PAGE):
            yield entries
            after = entries[-1].line

    def _halted(self) -> bool:
        """Whether to start no more rows (the caller's stop, Ctrl-C); any thread."""
        if self._stop is not None and self._stop.is_set():
            self._halt.set()
        return self._halt.is_set()

    def _loop(self, executor: ThreadPoolExecutor) -> None:
        claimed: deque[BatchRow] = deque()
        exhausted = False
        recorded_at = counted_at = time.monotonic()
        while not self._halted():
            # Twice as many rows as threads: a thread that finishes one finds the next
            # already queued instead of waiting for this thread to hand it over. A
            # queued row not started when the batch stops is skipped, never sent.
            while len(self._in_flight) < 2 * self._workers and not self._halted():
                if not claimed:
                    if exhausted:
                        break
                    self._record()
                    claimed.extend(self._claim())
                    self._waiting = 0
                    recorded_at = time.monotonic()
                    if not claimed:
                        exhausted = True
                        break
                row = claimed.popleft()
                future = executor.submit(self._refund, row)
                self._in_flight[future] = row.line or 0
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
            elif self._idle():
                return
            else:
                exhausted = False
            self._progress()

    def _idle(self) -> bool:
        """Nothing left to claim here: True when the batch is done (or stopped), False
        when rows held by other workers (which may die and leave them to be taken over)
        are worth looking at again."""
        self._record()
        self._waiting = self._count_elsewhere()
        if self._waiting == 0:
            return True
        self._progress()
        return self._halt.wait(_IDLE_SECONDS)

    def _claim(self) -> list[BatchRow]:
        while True:
            lines = self._journal.claim_batch(
                self._batch_id, owner=self._owner, limit=self._chunk, lease_seconds=self._lease
            )
            if not lines:
                return []
            rows = self._store.rows_at(lines)
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
                if line not in rows
            ]
            if rows:
                return [rows[line] for line in lines if line in rows]

    def _count_elsewhere(self) -> int:
        """Refresh what other workers finished; returns the rows not done yet."""
        counts = self._journal.count_batch(self._batch_id)
        self._elsewhere = max(0, counts.done - self._done_before - self._recorded)
        return counts.open + counts.claimed

    def _refund(self, row: BatchRow) -> RowResult:
        """One row, on a pool thread. Never raises for a refund's own reasons."""
        if not self._limits.wait(row.provider, self._halt) or self._halted():
            return row_result(row, BatchStatus.SKIPPED)
        try:
            with batch_line(row.line):
                result = self._client.execute(
                    row.provider,
                    row.operation(),
                    original_amount=row.original_amount,
                    defer_record=self._sent.put,
                )
        except RefundError as exc:
            refused = isinstance(exc, (ValidationError, ConfigError))
            return row_result(
                row,
                BatchStatus.INVALID if refused else BatchStatus.ERROR,
                error_code=type(exc).__name__,
                message=self._redact(row.provider, str(exc)),
                ran_here=True,
            )
        return row_result(
            row,
            BatchStatus.of(result.status),
            provider_refund_id=result.provider_refund_id,
            error_code=result.error_code,
            message=self._redact(row.provider, result.message),
            ran_here=True,
        )

    def _redact(self, provider: str, text: str | None) -> str | None:
        # Messages come from gateways and plugins: mask any credential one echoes.
        return self._client.redactor.text(provider, text)

    def _from_journal(self, entry: BatchEntry, row: BatchRow) -> RowResult:
        return from_journal(entry, row, lambda text: self._redact(row.provider, text))

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
            if outcome.status is BatchStatus.SKIPPED:
                del self._in_flight[future]
                continue
            # Kept before the future is let go: a Ctrl-C between the two must not lose
            # the outcome of a refund that was sent (the wind-down collects it again).
            self._results.append(outcome)
            del self._in_flight[future]
            self._counts[outcome.status] += 1
            self._finished_here += 1
            self._unrecorded.append(
                BatchDone(line, outcome.status.value, outcome.error_code, outcome.message)
            )

    def _record(self) -> None:
        """Journal the outcomes of refunds sent, then mark finished rows done: one
        transaction for each; and store their results."""
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
                    "outcomes of refunds not journalled",
                    batch_id=self._batch_id,
                    refunds=len(sent),
                    error_code=type(exc).__name__,
                    error=str(exc),
                )
        if self._results:
            self._store.put_results(self._results)
            self._results = []
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
                    "cannot renew the lease on claimed rows",
                    batch_id=self._batch_id,
                    error_code=type(exc).__name__,
                    error=str(exc),
                )

    def _report(self, interrupted: bool) -> BatchReport:
        """Every row's result: its own for the rows this process ran, the journal's for
        the rows done elsewhere, SKIPPED for the rest."""
        if self._store.unfinished_count():
            for entries in self._journal_pages():
                done = {e.line: e for e in entries if e.state is BatchItemState.DONE}
                rows = self._store.rows_at(list(done), unfinished=True)
                self._store.put_results(
                    self._from_journal(done[line], row) for line, row in rows.items()
                )
        complete(self._store, "not attempted: the batch was stopped")
        report = BatchReport(
            self._batch_id,
            self._store,
            interrupted=interrupted,
            elapsed=time.monotonic() - self._started,
        )
        if report.counts[BatchStatus.SKIPPED.value]:
            report.interrupted = True
        return report

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
        left = max(0, self._total - known - self._elsewhere)
        self._on_progress(
            BatchProgress(
                total=self._total,
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
