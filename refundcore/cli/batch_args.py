"""The ``batch`` command's help, and its options for batches run on Celery."""

from __future__ import annotations

import argparse

__all__ = ["BATCH_HELP", "add_executor_options"]

BATCH_HELP = """\
Refund every row of a CSV (with a header) or JSON Lines file, concurrently.

Columns: provider, payment_id, merchant_reference, transaction_id, amount,
currency, refund_id, reason, original_amount (provider, amount, currency and one
payment identifier are required). The whole file is checked first: every bad row
is listed by line and nothing is sent, unless --skip-invalid. A row without
refund_id gets one derived from its own content.

Running the same file again never refunds a row twice: rows already done are
reported from the journal, the rest are sent or reconciled. Processes running the
same file against one journal (PostgreSQL, for several machines) split its rows.

With --executor celery the rows go to Celery workers through the journal
(PostgreSQL); `refundcore batch status BATCH_ID [--wait]` follows such a batch.
"""


def add_executor_options(batch: argparse.ArgumentParser) -> None:
    """``--executor``, ``--celery-app``, ``--wait`` and the BATCH_ID of ``status``."""
    batch.add_argument("batch_id", nargs="?", help=argparse.SUPPRESS)
    batch.add_argument(
        "--executor",
        choices=("local", "celery"),
        default="local",
        help="local: this process sends the rows (default); celery: check the file, write "
        "it into the journal (PostgreSQL) and enqueue its rows for Celery workers",
    )
    batch.add_argument(
        "--celery-app",
        metavar="MODULE:ATTR",
        help="the Celery app to enqueue on (default $REFUNDCORE_CELERY_APP)",
    )
    batch.add_argument(
        "--wait", action="store_true", help="with status: wait until every row is done"
    )
