"""What became of a batch's rows: a status per row, and each row's result as the
report lists it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ..journal import BatchEntry
from ..money import Money
from ..status import RefundStatus
from ..words import WordEnum
from .rows import BatchRow

__all__ = [
    "REFUND_OUTCOMES",
    "REPORT_COLUMNS",
    "SEVERITY",
    "BatchStatus",
    "RowResult",
    "from_journal",
    "row_result",
]


class BatchStatus(WordEnum):
    """A batch row's outcome: a refund status, or why the row was not sent.

    ``ERROR``: nothing could be sent (unreachable gateway, unusable journal, broken
    plugin); a re-run sends it. ``INVALID``: refused before sending (validation, the
    provider's rules, a refund id reused for another refund, a payment's original
    amount exceeded). ``SKIPPED``: not attempted, because the batch was interrupted
    or had invalid rows.
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
    SKIPPED). The refund's full result, with the gateway's reply, is in the journal.
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


def row_result(row: BatchRow, status: BatchStatus, **details: Any) -> RowResult:
    """The result of ``row``: its line, provider, refund id and amount, ``status`` and
    ``details`` (any other field of :class:`RowResult`)."""
    return RowResult(
        line=row.line or 0,
        status=status,
        provider=row.provider,
        refund_id=row.refund_id,
        amount=row.amount,
        **details,
    )


def from_journal(
    entry: BatchEntry, row: BatchRow, redact: Callable[[str | None], str | None]
) -> RowResult:
    """The result of a row another worker (or an earlier run) finished, as the journal
    has it now; ``redact`` masks secrets in its message."""
    refund = entry.refund
    recorded = BatchStatus.__members__.get(entry.outcome or "", BatchStatus.ERROR)
    if refund is not None and recorded in REFUND_OUTCOMES:
        # The journal's word, which callbacks and reconciles may have moved on since.
        return row_result(
            row,
            BatchStatus.of(refund.state.status or RefundStatus.UNKNOWN),
            provider_refund_id=refund.provider_refund_id,
            error_code=refund.error_code,
            message=redact(refund.message),
        )
    return row_result(row, recorded, error_code=entry.error_code, message=redact(entry.message))
