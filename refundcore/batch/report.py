"""A batch's report: every row's result, the counts, the file it is written to; and the
two ways a batch ends early (invalid rows, Ctrl-C), each carrying its report.

The results stay in the batch's store on disk: the report keeps the counts, reads the
rows back a page at a time and writes its file as it reads them."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from ..errors import ValidationError
from .problems import group_errors
from .results import REPORT_COLUMNS, SEVERITY, BatchStatus, RowResult, row_result
from .rows import RowError
from .store import PAGE, OnDisk, RowStore

__all__ = ["BatchInterrupted", "BatchInvalid", "BatchReport", "complete", "report_format"]


class BatchReport(OnDisk):
    """Every row's result, in line order (:attr:`outcomes`), and their counts.

    ``interrupted`` says the run was stopped before every row was done (the rows it
    did not attempt are SKIPPED). ``elapsed`` is in seconds. The results are kept on
    disk: :meth:`close` (or ``with``) removes them, as garbage collection does.
    """

    def __init__(
        self, batch_id: str, store: RowStore, *, interrupted: bool = False, elapsed: float = 0.0
    ) -> None:
        super().__init__(store)
        self.batch_id = batch_id
        self.interrupted = interrupted
        self.elapsed = elapsed
        found = store.result_counts()
        self._counts = {status: found.get(status, 0) for status in BatchStatus}

    @property
    def outcomes(self) -> Sequence[RowResult]:
        """Every row's result, in line order, read from disk as it is iterated."""
        return self.store.results()

    @property
    def total(self) -> int:
        """How many rows the batch has."""
        return sum(self._counts.values())

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, every status listed (in :class:`BatchStatus` order)."""
        return {status.value: count for status, count in self._counts.items()}

    @property
    def worst(self) -> BatchStatus | None:
        """The most serious status of any row (see :data:`SEVERITY`); ``None`` if empty."""
        return next((status for status in SEVERITY if self._counts[status]), None)

    @property
    def succeeded(self) -> bool:
        """True when every row SUCCEEDED."""
        return not self.interrupted and self._counts[BatchStatus.SUCCEEDED] == self.total

    def summary(self) -> dict[str, Any]:
        """Counts and totals, JSON-ready."""
        return {
            "batch_id": self.batch_id,
            "total": self.total,
            "counts": self.counts,
            "interrupted": self.interrupted,
            "elapsed": round(self.elapsed, 3),
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the report to ``path``: CSV for ``.csv`` (columns
        :data:`REPORT_COLUMNS`), JSON for ``.json`` (:meth:`summary` plus one entry per
        row under ``"rows"``). Written a row at a time beside ``path`` and renamed
        over it: a crash never leaves half a report."""
        target = Path(path)
        kind = report_format(target)
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            with partial.open("w", encoding="utf-8", newline="") as out:
                (_write_csv if kind == "csv" else _write_json)(self, out)
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ValidationError(
                f"cannot write {str(target)!r}: {exc.strerror or exc}", field="report"
            ) from None

    def __repr__(self) -> str:
        return f"BatchReport({self.batch_id!r}, {self.counts})"


def _write_csv(report: BatchReport, out: IO[str]) -> None:
    writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in report.outcomes:
        writer.writerow(result.as_dict())


def _write_json(report: BatchReport, out: IO[str]) -> None:
    # The summary as json.dumps(indent=2) writes it, then the rows one to a line.
    head = json.dumps({**report.summary(), "rows": []}, indent=2, ensure_ascii=False)
    out.write(head.removesuffix("[]\n}") + "[")
    for index, result in enumerate(report.outcomes):
        out.write("\n    " if index == 0 else ",\n    ")
        out.write(json.dumps(result.as_dict(), ensure_ascii=False))
    out.write("\n  ]\n}\n" if report.total else "]\n}\n")


def report_format(path: Path) -> str:
    """``"csv"`` or ``"json"`` from a report path's extension; ``ValidationError``
    for anything else."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "json"):
        raise ValidationError(f"{str(path)!r}: give a .csv or .json file name", field="report")
    return kind


def complete(store: RowStore, unattempted: str) -> None:
    """Give every row of ``store`` still without a result one: INVALID with its
    problems for a row that has some, SKIPPED (``unattempted`` says why) for the
    others."""
    results: list[RowResult] = []
    for line, row, problems in store.invalid():
        message = "; ".join(f"{p.field}: {p.problem}" if p.field else p.problem for p in problems)
        if row is None:
            results.append(
                RowResult(line, BatchStatus.INVALID, error_code="invalid", message=message)
            )
        else:
            results.append(
                row_result(row, BatchStatus.INVALID, error_code="invalid", message=message)
            )
        if len(results) >= PAGE:
            store.put_results(results)
            results = []
    store.put_results(results)
    for page in store.unfinished():
        store.put_results(row_result(row, BatchStatus.SKIPPED, message=unattempted) for row in page)


class BatchInvalid(ValidationError):
    """Some rows are invalid and invalid rows were not to be skipped: nothing was sent.

    ``errors`` lists every problem by line (read from disk as it is iterated);
    ``report`` has each row (INVALID, or SKIPPED for the valid ones), ready to write.
    """

    def __init__(self, errors: Sequence[RowError], report: BatchReport, lines: int) -> None:
        self.errors = errors
        self.report = report
        grouped = group_errors(errors)
        super().__init__(
            f"{lines} invalid row{'s' if lines != 1 else ''}, nothing was sent: "
            + "; ".join(grouped[:3])
            + ("; …" if len(grouped) > 3 else "")
        )


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a batch: rows in flight were finished and recorded, no new row
    was started. ``report`` has every row (the ones not attempted are SKIPPED); run
    the batch again to finish it."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__("batch interrupted")
        self.report = report
