""":func:`run_batch`, what :meth:`RefundClient.refund_many` does: the arguments checked,
the rows stored and checked, and either the batch refused (nothing sent) or run."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping

from ..errors import ConfigError, ValidationError
from ..journal import Journal
from ..logs import EventLogger
from .checks import check_batch
from .intake import Intake
from .limits import RateLimits
from .progress import BatchProgress
from .protocol import BatchClient
from .reading import BatchFile
from .report import BatchInterrupted, BatchInvalid, BatchReport, complete
from .rows import BatchRow
from .runner import Runner
from .store import RowStore

__all__ = ["DEFAULT_LEASE_SECONDS", "DEFAULT_WORKERS", "checked_rows", "run_batch"]

log = EventLogger("refundcore.batch")

DEFAULT_WORKERS = 8
DEFAULT_LEASE_SECONDS = 120.0
# Bounds one claim transaction (and its IN list) whatever the caller asks for.
_MAX_CHUNK = 500


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
    store, batch_id, _ = checked_rows(client, rows, skip_invalid=skip_invalid)
    try:
        if workers > client.pool_size:
            log.warning(
                "more workers than pooled connections per gateway: give the client a "
                "pool_size of at least workers",
                workers=workers,
                pool_size=client.pool_size,
            )
        runner = Runner(
            client,
            journal,
            store,
            batch_id,
            workers=workers,
            limits=limits,
            on_progress=on_progress,
            chunk_size=chunk,
            lease_seconds=lease_seconds,
            stop=stop,
        )
        return runner.run()
    except BatchInterrupted:
        raise  # its report keeps the store
    except BaseException:
        store.close()
        raise


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


def checked_rows(
    client: BatchClient, rows: Iterable[BatchRow] | BatchFile, *, skip_invalid: bool
) -> tuple[RowStore, str, int]:
    """The rows of a run (local or on Celery) in a store of their own, each checked
    as ``client`` would send it: the store, the batch id and how many lines are
    invalid. :class:`BatchInvalid` (nothing to send) if any is, unless
    ``skip_invalid``. The caller closes the store."""
    store, batch_id = _stored_rows(rows)
    try:
        check_batch(client, store)
        invalid = store.invalid_line_count()
        if invalid and not skip_invalid:
            complete(store, "not sent: the batch has invalid rows")
            raise BatchInvalid(store.errors(), BatchReport(batch_id, store), invalid)
    except BatchInvalid:
        raise  # its report keeps the store
    except BaseException:
        store.close()
        raise
    return store, batch_id, invalid


def _stored_rows(rows: Iterable[BatchRow] | BatchFile) -> tuple[RowStore, str]:
    """A store of its own for a run, with the rows and the problems found in them
    without a client; and the batch id (a file's hash, or a hash
    of the rows). The caller closes the store."""
    store = RowStore()
    try:
        if isinstance(rows, BatchFile):
            store.copy_from(rows.store)
            return store, rows.batch_id
        intake = Intake(store, digest=True)
        for row in rows:
            intake.add(row)
        return store, intake.batch_id
    except BaseException:
        store.close()
        raise
