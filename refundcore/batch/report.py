"""A batch's report: every row's result, the counts, the file it is written to; and the
two ways a batch ends early (invalid rows, Ctrl-C), each carrying its report."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from ..errors import ValidationError
from .results import REPORT_COLUMNS, SEVERITY, BatchStatus, RowResult
from .rows import RowError

__all__ = ["BatchInterrupted", "BatchInvalid", "BatchReport", "report_format"]


@attrs.frozen
class BatchReport:
    """Every row's outcome, in line order.

    ``interrupted`` says the run was stopped before every row was done (the rows it
    did not attempt are SKIPPED). ``elapsed`` is in seconds.
    """

    batch_id: str
    outcomes: tuple[RowResult, ...]
    interrupted: bool = False
    elapsed: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, every status listed (in :class:`BatchStatus` order)."""
        found = Counter(outcome.status for outcome in self.outcomes)
        return {status.value: found[status] for status in BatchStatus}

    @property
    def worst(self) -> BatchStatus | None:
        """The most serious status of any row (see :data:`SEVERITY`); ``None`` if empty."""
        present = {outcome.status for outcome in self.outcomes}
        return next((status for status in SEVERITY if status in present), None)

    @property
    def succeeded(self) -> bool:
        """True when every row SUCCEEDED."""
        return not self.interrupted and all(
            outcome.status is BatchStatus.SUCCEEDED for outcome in self.outcomes
        )

    def summary(self) -> dict[str, Any]:
        """Counts and totals, JSON-ready."""
        return {
            "batch_id": self.batch_id,
            "total": len(self.outcomes),
            "counts": self.counts,
            "interrupted": self.interrupted,
            "elapsed": round(self.elapsed, 3),
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the report to ``path``: CSV for ``.csv`` (columns
        :data:`REPORT_COLUMNS`), JSON for ``.json`` (:meth:`summary` plus one entry per
        row under ``"rows"``). The file is replaced whole."""
        target = Path(path)
        kind = report_format(target)
        if kind == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for outcome in self.outcomes:
                writer.writerow(outcome.as_dict())
            text = buffer.getvalue()
        else:
            data = {**self.summary(), "rows": [o.as_dict() for o in self.outcomes]}
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        # Written beside the target and renamed over it: a crash never leaves half a report.
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            partial.write_text(text, encoding="utf-8")
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ValidationError(
                f"cannot write {str(target)!r}: {exc.strerror or exc}", field="report"
            ) from None


def report_format(path: Path) -> str:
    """``"csv"`` or ``"json"`` from a report path's extension; ``ValidationError``
    for anything else."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "json"):
        raise ValidationError(f"{str(path)!r}: give a .csv or .json file name", field="report")
    return kind


class BatchInvalid(ValidationError):
    """Some rows are invalid and invalid rows were not to be skipped: nothing was sent.

    ``errors`` lists every problem by line; ``report`` has each row (INVALID, or
    SKIPPED for the valid ones), ready to write.
    """

    def __init__(self, errors: Sequence[RowError], report: BatchReport) -> None:
        self.errors = tuple(errors)
        self.report = report
        lines = len({error.line for error in errors})
        super().__init__(
            f"{lines} invalid row{'s' if lines != 1 else ''}, nothing was sent: "
            + "; ".join(str(error) for error in errors[:3])
            + ("; …" if len(errors) > 3 else "")
        )


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a batch: rows in flight were finished and recorded, no new row
    was started. ``report`` has every row (the ones not attempted are SKIPPED); run
    the batch again to finish it."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__("batch interrupted")
        self.report = report
