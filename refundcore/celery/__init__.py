"""Batches on Celery: refundcore's tasks on the Celery app a shop already runs, and the
API to submit a batch to its workers and follow it (``pip install 'refundcore[celery]'``).

On every worker, the app registers the tasks (no extra process type)::

    app = Celery("shop", broker="redis://localhost:6379/0")
    app.conf.worker_prefetch_multiplier = 1
    refundcore.celery.install(app, lambda: RefundClient.from_file("refundcore.toml"))

and anywhere, a batch is checked, written into the journal and enqueued::

    submitted = submit_batch(app, client, read_batch_file("refunds.csv"), rate=20)
    report = wait_for_batch(client, submitted.batch_id)

The journal, PostgreSQL, is the only authority on whether a refund was sent: Celery
delivers a task at least once, and a row's task that runs twice finds the row claimed
or done in the journal. Rate limits hold across all workers together (a shared slot
table in the journal's database). See docs/celery.md.

One idea per module: :mod:`.names` (the tasks' names), :mod:`.tasks` (the tasks),
:mod:`.submit` (checking and enqueueing a batch), :mod:`.follow` (its progress and
report), :mod:`.manifest_rows` (rows as the journal's manifest keeps them).
"""

from __future__ import annotations

from .follow import batch_progress, batch_report, wait_for_batch
from .names import RECONCILE, REFUND_ROW
from .submit import DEFAULT_LEASE_SECONDS, Submitted, submit_batch
from .tasks import RefundTasks, TaskSettings, install

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "RECONCILE",
    "REFUND_ROW",
    "RefundTasks",
    "Submitted",
    "TaskSettings",
    "batch_progress",
    "batch_report",
    "install",
    "submit_batch",
    "wait_for_batch",
]
