"""Following a batch that Celery workers run: where it stands, read from the journal
(its manifest and its work queue), and its report, the same as a local batch's."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

from ..batch.progress import BatchProgress
from ..batch.protocol import BatchClient
from ..batch.report import BatchReport, complete
from ..batch.results import BatchStatus, from_journal
from ..batch.store import PAGE, RowStore
from ..errors import JournalError, ValidationError
from ..journal import BatchItemState
from ..journal.manifest import BatchManifests, postgres_journal
from ..journal.records import payment_key
from ..logs import EventLogger
from .manifest_rows import problems_of, row_of

__all__ = ["batch_progress", "batch_report", "wait_for_batch"]

log = EventLogger("refundcore.celery")

#: What a report says of a row no worker has finished yet.
UNFINISHED = "not finished yet: the batch is still running"


def _manifests(client: BatchClient, batch_id: str) -> BatchManifests:
    manifests = BatchManifests(postgres_journal(client.journal, "a batch on Celery"))
    if manifests.header(batch_id) is None:
        raise ValidationError(
            f"the journal {manifests.journal.url} has no batch {batch_id!r} "
            "(submitted with --executor celery)",
            field="batch_id",
        )
    return manifests


def batch_progress(client: BatchClient, batch_id: str, *, elapsed: float = 0.0) -> BatchProgress:
    """Where the batch stands now: its rows' outcomes as the workers recorded them
    (``ValidationError`` for a batch the journal does not have)."""
    return _progress(_manifests(client, batch_id), batch_id, elapsed)


def _progress(manifests: BatchManifests, batch_id: str, elapsed: float) -> BatchProgress:
    header = manifests.header(batch_id) or {}
    found = manifests.outcomes(batch_id)
    in_flight = found.pop(BatchItemState.CLAIMED.value, 0)
    waiting = found.pop(BatchItemState.OPEN.value, 0)
    total = int(header.get("rows", 0))
    counts = {status.value: found.get(status.value, 0) for status in BatchStatus}
    # Lines the manifest has but the work queue does not: refused before sending.
    queued = in_flight + waiting + sum(found.values())
    counts[BatchStatus.INVALID.value] += max(0, total - queued)
    done = sum(counts.values())
    rate = done / elapsed if elapsed > 0 and done else None
    return BatchProgress(
        total=total,
        counts=counts,
        elsewhere=0,
        in_flight=in_flight,
        elapsed=elapsed,
        rate=rate,
        eta=(total - done) / rate if rate else None,
        finished=in_flight + waiting == 0,
        waiting=waiting,
    )


def batch_report(client: BatchClient, batch_id: str) -> BatchReport:
    """Every row's result as the journal has it now: a finished row's refund as it
    stands (callbacks and reconciles included), INVALID for the lines refused before
    sending, SKIPPED for the rows not finished yet (the report is then
    ``interrupted``). Close it (or use ``with``) to free its scratch space."""
    manifests = _manifests(client, batch_id)
    journal = manifests.journal
    store = RowStore()
    try:
        for page in manifests.rows(batch_id, page=PAGE):
            errors = []
            for stored in page:
                row = row_of(stored)
                if row is not None:
                    store.add_row(row, payment_key=payment_key(row.payment), explicit_id=False)
                errors += problems_of(stored)
            store.add_errors(errors)
        after = 0
        while entries := journal.batch_entries(batch_id, after_line=after, limit=PAGE):
            after = entries[-1].line
            done = {e.line: e for e in entries if e.state is BatchItemState.DONE}
            rows = store.rows_at(list(done))
            store.put_results(
                from_journal(done[line], row, functools.partial(client.redactor.text, row.provider))
                for line, row in rows.items()
            )
        complete(store, UNFINISHED)
        report = BatchReport(batch_id, store)
    except BaseException:
        store.close()
        raise
    report.interrupted = bool(report.counts[BatchStatus.SKIPPED.value])
    return report


def wait_for_batch(
    client: BatchClient,
    batch_id: str,
    *,
    on_progress: Callable[[BatchProgress], None] | None = None,
    poll: float = 1.0,
    timeout: float | None = None,
) -> BatchReport:
    """Wait until every row of the batch has an outcome (``timeout`` seconds at most),
    calling ``on_progress`` as it goes, and return its report. ``TimeoutError`` when
    the batch is still running after ``timeout``."""
    manifests: BatchManifests | None = None
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        try:
            manifests = manifests or _manifests(client, batch_id)
            progress = _progress(manifests, batch_id, elapsed)
            if progress.finished:
                if on_progress is not None:
                    on_progress(progress)
                return batch_report(client, batch_id)
        except JournalError as exc:
            # The workers wait for the journal to come back; so does whoever follows them.
            log.warning("journal unavailable while following a batch", error=str(exc))
            if timeout is not None and elapsed >= timeout:
                raise
        else:
            if on_progress is not None:
                on_progress(progress)
            if timeout is not None and elapsed >= timeout:
                left = progress.total - progress.done
                raise TimeoutError(f"batch {batch_id} still has {left} rows without an outcome")
        time.sleep(poll)
