"""Submitting a batch to Celery: the rows checked as a local batch checks them, the
batch's manifest written into the journal, its rows put in the journal's work queue,
and one task per unfinished row enqueued."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from ..batch.limits import RateLimits
from ..batch.protocol import BatchClient
from ..batch.reading import BatchFile
from ..batch.rows import BatchRow
from ..batch.run import checked_rows
from ..errors import ValidationError
from ..journal import BatchItem
from ..journal.manifest import BatchManifests, postgres_journal
from .manifest_rows import manifest_rows
from .names import REFUND_ROW

__all__ = ["Submitted", "submit_batch"]

DEFAULT_LEASE_SECONDS = 120.0


@attrs.frozen
class Submitted:
    """A batch handed to Celery: its id (what ``refundcore batch status`` takes), its
    rows to refund, its invalid lines (skipped), and the tasks enqueued now (the rows
    not done yet; none when an earlier submission finished them all)."""

    batch_id: str
    rows: int
    invalid: int
    enqueued: int


def submit_batch(
    app: Any,
    client: BatchClient,
    rows: Iterable[BatchRow] | BatchFile,
    *,
    rate: float | Mapping[str, float] | None = None,
    skip_invalid: bool = False,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    source: str | None = None,
) -> Submitted:
    """Check every row of a batch as :meth:`RefundClient.refund_many` does, then hand it
    to the workers of the Celery ``app`` (a worker's app runs
    :func:`~refundcore.celery.install`; this side needs only its broker).

    ``client``'s journal must be PostgreSQL (``ConfigError`` otherwise): the manifest
    and the work queue go there, and the workers read them. Invalid rows refuse the
    batch (:class:`~refundcore.batch.BatchInvalid`, nothing enqueued) unless
    ``skip_invalid``. ``rate`` (requests a second per provider, as ``refund_many``
    takes it) holds across all workers together. ``lease_seconds``: how long a row
    stays with a worker that died before another takes it over.

    Submitting a batch again is harmless: its manifest is kept, and only the rows
    without a settled outcome are enqueued again (a row is never sent twice: a worker
    claims it in the journal, and the refund goes through the journal as usual).
    """
    journal = postgres_journal(client.journal, "a batch on Celery")
    RateLimits(rate)  # refuses an unusable rate before anything is written
    if not lease_seconds > 0:
        raise ValidationError(f"must be positive, got {lease_seconds!r}", field="lease_seconds")
    manifests = BatchManifests(journal)
    store, batch_id, invalid = checked_rows(client, rows, skip_invalid=skip_invalid)
    try:
        header = {
            "source": source,
            "rates": _rates(rate),
            "lease_seconds": lease_seconds,
            "rows": store.row_count(valid=False),
        }
        manifests.write(batch_id, header, manifest_rows(store))
        journal.open_batch(batch_id, (BatchItem(*item) for item in store.queue_items()))
        valid = store.row_count()
    except BaseException:
        store.close()
        raise
    store.close()
    enqueued = 0
    with app.producer_or_acquire() as producer:
        for lines in manifests.unfinished_lines(batch_id):
            for line in lines:
                app.send_task(REFUND_ROW, args=(batch_id, line), producer=producer)
            enqueued += len(lines)
    return Submitted(batch_id, valid, invalid, enqueued)


def _rates(rate: float | Mapping[str, float] | None) -> dict[str, float]:
    """``rate`` as the manifest keeps it: per provider, ``"*"`` for the others."""
    if rate is None:
        return {}
    if isinstance(rate, Mapping):
        return {provider: float(value) for provider, value in rate.items()}
    return {"*": float(rate)}
