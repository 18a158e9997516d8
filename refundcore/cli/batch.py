"""``refundcore batch``: a file of refunds sent through the journal, and what became of
each row, as a summary, a report and the exit status."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import TYPE_CHECKING

from ..errors import ValidationError
from ..table import cut, format_table
from .context import client_for, config_file, searched
from .exits import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PENDING,
    EXIT_UNKNOWN,
    EXIT_USAGE,
)
from .output import emit

if TYPE_CHECKING:
    from ..batch import BatchFile, BatchInvalid, BatchReport, RowResult
    from ..client import RefundClient

__all__ = ["cmd_batch"]


def cmd_batch(args: argparse.Namespace) -> int:
    from ..batch import (
        BatchInterrupted,
        BatchInvalid,
        ProgressPrinter,
        read_batch_file,
        report_format,
    )

    if args.no_journal:
        print(
            "refundcore: batch needs a journal: it is what makes running a batch again "
            "safe (drop --no-journal; --journal URL chooses one)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    rates = _rates(args.rate)
    if args.report is not None:
        report_format(args.report)  # refuse a bad name before anything is sent
    parsed = read_batch_file(args.file)
    client = client_for(args, pool_size=max(10, args.workers), lease_seconds=args.lease)
    if args.report is not None and _journal_forgot_the_batch(args, parsed, client):
        return EXIT_USAGE
    try:
        report = client.refund_many(
            parsed,
            workers=args.workers,
            rate=rates,
            on_progress=ProgressPrinter(sys.stderr, interval=args.progress_interval),
            skip_invalid=args.skip_invalid,
            chunk_size=args.chunk,
        )
        status = _batch_exit(report)
    except BatchInvalid as refused:
        return _batch_refused(refused, args)
    except BatchInterrupted as stopped:
        report, status = stopped.report, EXIT_INTERRUPTED
    _print_skipped(report)
    if args.report is not None:
        report.write(args.report)
    emit(
        args,
        {
            **report.summary(),
            "file": str(args.file),
            "sent": True,
            "report": None if args.report is None else str(args.report),
            "exit_status": status,
        },
        _batch_text(report, args),
    )
    return status


def _journal_forgot_the_batch(
    args: argparse.Namespace, parsed: BatchFile, client: RefundClient
) -> bool:
    """True (and why, on stderr) when the report of an earlier run says rows of this
    file were sent but the journal has no record of those refunds: it is not the
    journal that ran them (or it was lost), and running them again could refund them
    twice."""
    from ..batch.earlier import forgotten_rows

    journal = client.journal
    if journal is None:
        return False
    forgotten = forgotten_rows(args.report, parsed, journal)
    if not forgotten.count:
        return False
    shown = ", ".join(
        f"line {line} ({refund_id}: {status})" for line, refund_id, status in forgotten.first
    )
    more = f" and {forgotten.count - len(forgotten.first)} more" if forgotten.count > 3 else ""
    print(
        f"refundcore: the report {args.report} says {forgotten.count} row(s) of {args.file} "
        f"were sent ({shown}{more}), but the journal {journal.url} has no record of them: it "
        "is not the journal that ran the batch, or that journal was lost. Nothing was sent: "
        "running the batch against it could refund those rows again. Give --journal the "
        "journal that ran the batch (or restore it from a backup); only if you know none "
        "of those refunds happened, move the report aside and run again.",
        file=sys.stderr,
    )
    return True


def _print_skipped(report: BatchReport) -> None:
    """With --skip-invalid, the rows skipped, grouped by problem."""
    from ..batch import BatchStatus, RowError, group_errors

    skipped = (
        RowError(outcome.line, None, outcome.message or "invalid")
        for outcome in report.outcomes
        if outcome.status is BatchStatus.INVALID and outcome.error_code == "invalid"
    )
    for line in group_errors(skipped):
        print(f"skipped {line}", file=sys.stderr)


_PER = {"s": 1.0, "m": 60.0, "min": 60.0}


def _rates(specs: list[str]) -> dict[str, float] | None:
    """``--rate`` values as refund_many takes them: ``"*"`` for every provider."""
    rates: dict[str, float] = {}
    for spec in specs:
        provider, sep, value = spec.rpartition("=")
        number, _, unit = value.partition("/")
        try:
            per_second = float(number) / _PER[unit or "s"]
        except (ValueError, KeyError):
            per_second = 0.0
        if not sep:
            provider = "*"
        if not provider or not 0 < per_second < float("inf"):
            raise ValidationError(
                f"{spec!r}: give N/s or N/m (e.g. 20/s), optionally PROVIDER=N/s", field="rate"
            )
        rates[provider] = per_second
    return rates or None


def _batch_exit(report: BatchReport) -> int:
    from ..batch import BatchStatus

    worst = report.worst
    return {
        None: EXIT_OK,
        BatchStatus.SUCCEEDED: EXIT_OK,
        BatchStatus.PENDING: EXIT_PENDING,
        BatchStatus.INVALID: EXIT_USAGE,
        BatchStatus.FAILED: EXIT_FAILED,
        BatchStatus.ERROR: EXIT_ERROR,
        BatchStatus.UNKNOWN: EXIT_UNKNOWN,
        BatchStatus.SKIPPED: EXIT_INTERRUPTED,
    }[worst]


# Rows that did not succeed, listed under the summary; the report has them all.
_LISTED = 20


def _batch_text(report: BatchReport, args: argparse.Namespace) -> str:
    from ..batch import BatchStatus

    rows = [[status, str(count)] for status, count in report.counts.items() if count]
    lines = [
        f"batch {report.batch_id[:12]}: {report.total} rows in {report.elapsed:.1f} s",
        format_table(rows, ["status", "rows"]) if rows else "no rows",
    ]
    unsucceeded = report.total - report.counts[BatchStatus.SUCCEEDED.value]
    # The first few from the report's store: a batch of a million rows is not read whole.
    troubled = (o for o in report.outcomes if o.status is not BatchStatus.SUCCEEDED)
    trouble = list(itertools.islice(troubled, _LISTED))
    if trouble:
        lines += ["", _trouble_table(trouble)]
        if unsucceeded > _LISTED:
            lines.append(
                f"… and {unsucceeded - _LISTED} more"
                + ("" if args.report else " (--report FILE lists every row)")
            )
    counts = report.counts
    if report.interrupted:
        lines.append("interrupted: run the same command again to finish (nothing is sent twice)")
    if counts["UNKNOWN"]:
        lines.append(
            "UNKNOWN rows may have been refunded: run `refundcore journal reconcile`, "
            "then this batch again"
        )
    if counts["ERROR"]:
        lines.append("ERROR rows were not sent: run this batch again to send them")
    if args.report:
        lines.append(f"report: {args.report}")
    return "\n".join(lines)


def _trouble_table(trouble: list[RowResult]) -> str:
    """The first rows that did not succeed, each message cut to a line's width."""
    return format_table(
        [
            [
                str(o.line),
                o.status.value,
                o.refund_id or "",
                o.error_code or "",
                cut(o.message or "", 100),
            ]
            for o in trouble
        ],
        ["line", "status", "refund id", "code", "message"],
    )


def _batch_refused(refused: BatchInvalid, args: argparse.Namespace) -> int:
    """Say which rows are invalid (nothing was sent) and write the report."""
    from ..batch import group_errors

    for line in group_errors(refused.errors):
        print(line, file=sys.stderr)
    if config_file(args) is None:
        print(f"refundcore: {searched()}", file=sys.stderr)
    if args.report is not None:
        refused.report.write(args.report)
    lines = refused.report.counts["INVALID"]
    print(
        f"refundcore: {lines} invalid row{'s' if lines != 1 else ''} in {args.file}: "
        "nothing was sent; fix them, or pass --skip-invalid to send the valid rows",
        file=sys.stderr,
    )
    if args.json:
        summary = {
            **refused.report.summary(),
            "file": str(args.file),
            "sent": False,
            "errors": [error.as_dict() for error in refused.errors],
            "report": None if args.report is None else str(args.report),
            "exit_status": EXIT_USAGE,
        }
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    return EXIT_USAGE
