"""Batch refunds: many rows, from a file or from code, refunded concurrently through one
client and its journal.

    parsed = read_batch_file("refunds.csv")   # every row checked, errors by line
    report = client.refund_many(parsed, workers=8, rate=20)
    report.write("refunds-report.csv")

A batch runs in three steps:

1. **Validation**, before anything is sent: each row is parsed (columns
   :data:`COLUMNS`) and checked against the rows before it (a refund id used twice, a
   payment's rows adding up past its original amount), then by the client the way a
   refund would be, up to the provider plugin's build stage (:meth:`RefundClient.check`),
   and with the refunds the journal already holds for each payment (the provider's
   refunds per payment, the original amount, a refund id used for another refund),
   without signing, sending or journalling. Every bad row is reported as ``line N:
   field: problem``; nothing is sent unless the caller skips invalid rows.
2. **Claiming**: the rows are put in the journal as a work queue keyed by the batch id
   (a hash of the file, or of the rows). Each worker process claims chunks of rows in
   one transaction and leases them while it works, so processes sharing a journal —
   on several machines, with PostgreSQL — split a batch without doing a row twice.
3. **Refunding**: a thread pool sends the claimed rows through the client, at most
   ``rate`` requests a second per provider. Each refund goes through the journal as
   usual, which is what makes a batch safe to run again: a row already refunded
   returns its recorded outcome without network, an interrupted one is reconciled.

A batch of any size takes the same memory: the file is read as a stream, and the rows,
their problems and their results are kept in a scratch SQLite database on disk
(:mod:`.store`), read back a page at a time.

Running a batch again retries the rows without a settled outcome (UNKNOWN ones are
reconciled, rows that could not be sent are sent) and reports the rest from the
journal. A row without ``refund_id`` gets one derived from its own content (see
:func:`derive_refund_ids`), so the same row keeps its id across runs and edits of
other rows.

The package, one idea per module: :mod:`.rows` (a row, its columns, derived refund
ids), :mod:`.parsing` (one record's columns to a row), :mod:`.reading` (files),
:mod:`.intake` and :mod:`.checks` (what is refused before sending), :mod:`.store`
(the rows, problems and results on disk), :mod:`.run` and :mod:`.runner` (the journal's
work queue and the thread pool), :mod:`.limits` (rates), :mod:`.progress`,
:mod:`.results` and :mod:`.report` (what became of each row), :mod:`.problems` (the
problems as lines for people), :mod:`.earlier` (what an earlier run's report says was
sent), :mod:`.protocol` (what a batch needs of a client).
"""

from __future__ import annotations

from .checks import check_rows
from .problems import group_errors
from .progress import BatchProgress, ProgressPrinter, format_progress
from .protocol import BatchClient
from .reading import BatchFile, read_batch_file
from .report import BatchInterrupted, BatchInvalid, BatchReport, report_format
from .results import REPORT_COLUMNS, SEVERITY, BatchStatus, RowResult
from .rows import COLUMNS, BatchRow, RowError, derive_refund_ids
from .run import run_batch

__all__ = [
    "COLUMNS",
    "REPORT_COLUMNS",
    "SEVERITY",
    "BatchClient",
    "BatchFile",
    "BatchInterrupted",
    "BatchInvalid",
    "BatchProgress",
    "BatchReport",
    "BatchRow",
    "BatchStatus",
    "ProgressPrinter",
    "RowError",
    "RowResult",
    "check_rows",
    "derive_refund_ids",
    "format_progress",
    "group_errors",
    "read_batch_file",
    "report_format",
    "run_batch",
]
