"""What the report of an earlier run says was sent, against what the journal holds: a
report naming rows as sent that the journal has no record of was written with another
journal (or one since lost), and running the batch against this one could refund those
rows twice.

The report is read a row at a time and its rows looked up in the batch's store: a
report of a million rows takes the memory of one of ten."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from ..journal import Journal
from .reading import BatchFile
from .results import BatchStatus

__all__ = ["Forgotten", "forgotten_rows"]

# Report statuses of rows whose refund request went out (or may have).
_SENT = frozenset(
    status.value
    for status in (
        BatchStatus.SUCCEEDED,
        BatchStatus.FAILED,
        BatchStatus.PENDING,
        BatchStatus.UNKNOWN,
    )
)
# Rows of the report named in the message; the count covers the rest.
_NAMED = 3
# Where a report written by BatchReport.write lists its rows, one to a line.
_JSON_ROWS = '  "rows": ['


@attrs.frozen
class Forgotten:
    """Rows a report says were sent that the journal does not know: how many, and the
    first few as (line, refund id, status)."""

    count: int = 0
    first: tuple[tuple[int, str, str], ...] = ()


def forgotten_rows(report: Path, batch: BatchFile, journal: Journal) -> Forgotten:
    """The rows of ``batch`` the ``report`` of an earlier run says were sent (SUCCEEDED,
    FAILED, PENDING or UNKNOWN) but ``journal`` has no record of. What cannot be read
    of a report (all of it, or what follows a damaged line) says nothing was sent."""
    count = 0
    first: list[tuple[int, str, str]] = []
    for row in _report_rows(report):
        if not isinstance(row, dict) or row.get("status") not in _SENT:
            continue
        provider, refund_id = row.get("provider"), row.get("refund_id")
        if not isinstance(provider, str) or not isinstance(refund_id, str):
            continue
        if not batch.store.has_refund(provider, refund_id):
            continue
        if journal.get(provider, refund_id) is not None:
            continue
        count += 1
        if len(first) < _NAMED:
            line = str(row.get("line"))
            first.append((int(line) if line.isdigit() else 0, refund_id, str(row["status"])))
    return Forgotten(count, tuple(first))


def _report_rows(path: Path) -> Iterator[Any]:
    """The report's rows as they are read: CSV, or JSON as :meth:`BatchReport.write`
    lays it out (any other JSON layout is read whole). Nothing for an unreadable one."""
    try:
        with path.open(encoding="utf-8", newline="") as text:
            if path.suffix.lower() != ".json":
                yield from csv.DictReader(text)
                return
            if not any(line.rstrip("\n") == _JSON_ROWS for line in text):
                text.seek(0)
                rows = json.load(text).get("rows", [])
                yield from rows if isinstance(rows, list) else []
                return
            for line in text:
                entry = line.strip().removesuffix(",")
                if not entry.startswith("{"):
                    return
                yield json.loads(entry)
    except (OSError, ValueError, AttributeError, csv.Error):
        return
