"""A batch's rows as its manifest in the journal keeps them: each line a JSON object
with the row's columns (amounts as wire strings) and, for an invalid line, its
problems; and back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..batch.rows import COLUMNS, BatchRow, RowError
from ..batch.store import RowStore
from ..journal.manifest import ManifestRow
from ..money import Money

__all__ = ["manifest_rows", "problems_of", "row_of"]


def manifest_rows(store: RowStore) -> Iterator[ManifestRow]:
    """Every line of a checked batch's store: the valid rows, then the invalid lines
    with their problems (a line that could not be read has no row)."""
    for row in store.rows():
        yield ManifestRow(row.line or 0, {"row": _columns(row)})
    for line, found, problems in store.invalid():
        yield ManifestRow(
            line,
            {
                "row": None if found is None else _columns(found),
                "problems": [{"field": p.field, "problem": p.problem} for p in problems],
            },
        )


def row_of(line: ManifestRow) -> BatchRow | None:
    """The line's row, if it has one."""
    columns = line.data.get("row")
    if columns is None:
        return None
    original = columns.get("original_amount")
    return BatchRow(
        provider=columns["provider"],
        payment_id=columns.get("payment_id"),
        merchant_reference=columns.get("merchant_reference"),
        transaction_id=columns.get("transaction_id"),
        amount=Money(columns["amount"], columns["currency"]),
        refund_id=columns.get("refund_id"),
        reason=columns.get("reason"),
        original_amount=None
        if original is None
        else Money(original, columns.get("original_currency") or columns["currency"]),
        line=line.line,
    )


def problems_of(line: ManifestRow) -> list[RowError]:
    """The line's problems (none for a valid row)."""
    return [
        RowError(line.line, problem.get("field"), str(problem.get("problem")))
        for problem in line.data.get("problems") or []
    ]


def _columns(row: BatchRow) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(row, name) for name in COLUMNS if name != "currency"}
    values["amount"] = row.amount.to_wire()
    values["currency"] = row.amount.currency
    original = row.original_amount
    values["original_amount"] = None if original is None else original.to_wire()
    values["original_currency"] = None if original is None else original.currency
    return values
