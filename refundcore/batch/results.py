"""What became of a batch's rows: a status per row, and each row's result as the
report lists it."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from ..models import RefundResult
from ..money import Money
from ..status import RefundStatus
from .rows import BatchRow, RowError

__all__ = [
    "REFUND_OUTCOMES",
    "REPORT_COLUMNS",
    "SEVERITY",
    "BatchStatus",
    "RowResult",
    "invalid_results",
    "skipped",
]


class BatchStatus(str, enum.Enum):
    """A batch row's outcome: a refund status, or why the row was not sent.

    ``ERROR``: nothing could be sent (unreachable gateway, unusable journal, broken
    plugin); a re-run sends it. ``INVALID``: refused before sending (validation, a
    refund id reused for another refund, a payment's original amount exceeded).
    ``SKIPPED``: not attempted because the batch was interrupted.
    """

    SUCCEEDED = RefundStatus.SUCCEEDED.value
    FAILED = RefundStatus.FAILED.value
    PENDING = RefundStatus.PENDING.value
    UNKNOWN = RefundStatus.UNKNOWN.value
    ERROR = "ERROR"
    INVALID = "INVALID"
    SKIPPED = "SKIPPED"

    @classmethod
    def of(cls, status: RefundStatus) -> BatchStatus:
        """The outcome of a row whose refund stands at ``status``."""
        return cls[status.name]

    def __str__(self) -> str:
        return self.value


#: Most serious first: what a report's :attr:`BatchReport.worst` picks.
SEVERITY = (
    BatchStatus.UNKNOWN,
    BatchStatus.ERROR,
    BatchStatus.FAILED,
    BatchStatus.INVALID,
    BatchStatus.SKIPPED,
    BatchStatus.PENDING,
    BatchStatus.SUCCEEDED,
)
#: Outcomes recorded for a row whose refund is in the journal (the others were not sent).
REFUND_OUTCOMES = frozenset(map(BatchStatus.of, RefundStatus))


@attrs.frozen
class RowResult:
    """What became of one row.

    ``ran_here`` is true when this process claimed the row and ran its refund (for a
    refund the journal already has, that returns the recorded outcome without
    network); false when another process or an earlier run had finished the row and
    its outcome was read from the journal, or when it was never attempted (INVALID,
    SKIPPED). ``result`` is the refund's full result when this process has one.
    """

    line: int
    status: BatchStatus
    provider: str | None = None
    refund_id: str | None = None
    amount: Money | None = None
    provider_refund_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    ran_here: bool = False
    result: RefundResult | None = attrs.field(default=None, eq=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The row as a report entry (JSON-ready; nothing secret, no raw reply)."""
        return {
            "line": self.line,
            "provider": self.provider,
            "refund_id": self.refund_id,
            "status": self.status.value,
            "provider_refund_id": self.provider_refund_id,
            "amount": None if self.amount is None else self.amount.to_wire(),
            "currency": None if self.amount is None else self.amount.currency,
            "error_code": self.error_code,
            "message": self.message,
            "ran_here": self.ran_here,
        }


#: The report's columns, in order (CSV header and JSON keys).
REPORT_COLUMNS = (
    "line",
    "provider",
    "refund_id",
    "status",
    "provider_refund_id",
    "amount",
    "currency",
    "error_code",
    "message",
    "ran_here",
)


def invalid_results(rows: Iterable[BatchRow], errors: Sequence[RowError]) -> list[RowResult]:
    """One INVALID result per line of ``errors``, naming every problem of the line."""
    known = {row.line: row for row in rows}
    by_line: dict[int, list[RowError]] = {}
    for error in errors:
        by_line.setdefault(error.line, []).append(error)
    outcomes = []
    for line, problems in by_line.items():
        row = known.get(line)
        outcomes.append(
            RowResult(
                line=line,
                status=BatchStatus.INVALID,
                provider=None if row is None else row.provider,
                refund_id=None if row is None else row.refund_id,
                amount=None if row is None else row.amount,
                error_code="invalid",
                message="; ".join(
                    f"{p.field}: {p.problem}" if p.field else p.problem for p in problems
                ),
            )
        )
    return outcomes


def skipped(row: BatchRow, message: str | None = None) -> RowResult:
    """``row`` as not attempted."""
    return RowResult(
        line=row.line or 0,
        status=BatchStatus.SKIPPED,
        provider=row.provider,
        refund_id=row.refund_id,
        amount=row.amount,
        message=message,
    )
