"""The names refundcore's tasks are registered under on a Celery app: what a worker
runs and what a submitter enqueues, without the submitter importing the tasks."""

from __future__ import annotations

__all__ = ["RECONCILE", "REFUND_ROW"]

#: Refund one batch row: ``(batch_id, line)``.
REFUND_ROW = "refundcore.refund_row"
#: Settle unsettled refunds and enqueue again the rows of workers that died:
#: ``(provider=None, stale_open_seconds=None)``.
RECONCILE = "refundcore.reconcile"
