"""A batch's rows: the columns of a batch file, one row as a value, why a row cannot
be sent, and the refund id a row without one gets from its own content."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from ..errors import ValidationError
from ..models import REASON_MAX, PaymentRef, Refund, check_refund_id, check_text
from ..money import Money

__all__ = [
    "COLUMNS",
    "ID_COLUMNS",
    "PAYMENT_COLUMNS",
    "REQUIRED_COLUMNS",
    "BatchRow",
    "RowError",
    "derive_refund_ids",
    "derived_id",
    "row_content",
]

#: The columns of a batch file (a CSV header may list them in any order).
COLUMNS = (
    "provider",
    "payment_id",
    "merchant_reference",
    "transaction_id",
    "amount",
    "currency",
    "refund_id",
    "reason",
    "original_amount",
)
REQUIRED_COLUMNS = ("provider", "amount", "currency")
PAYMENT_COLUMNS = ("payment_id", "merchant_reference", "transaction_id")
# Ids may come as JSON integers (exact); free text may not.
ID_COLUMNS = (*PAYMENT_COLUMNS, "refund_id")


def _check_provider(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError("give the provider id, e.g. wonder", field=attribute.name)


def _check_line(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValidationError(f"must be a line number (1 or more), got {value!r}", field="line")


@attrs.frozen(kw_only=True)
class BatchRow:
    """One refund of a batch: the columns of a batch file, amounts as :class:`Money`.

    ``refund_id`` may be ``None``: the batch then derives one from the row's content
    (:func:`derive_refund_ids`). ``line`` is the row's line in its file; rows built in
    code may leave it ``None`` and are numbered by position.
    """

    provider: str = attrs.field(validator=_check_provider)
    payment_id: str | None = None
    merchant_reference: str | None = None
    transaction_id: str | None = None
    amount: Money
    refund_id: str | None = None
    reason: str | None = None
    original_amount: Money | None = None
    line: int | None = attrs.field(default=None, validator=_check_line)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.amount, Money):
            raise ValidationError(
                f"must be refundcore.Money, got {type(self.amount).__name__}", field="amount"
            )
        if self.original_amount is not None and not isinstance(self.original_amount, Money):
            raise ValidationError(
                f"must be refundcore.Money, got {type(self.original_amount).__name__}",
                field="original_amount",
            )
        if self.refund_id is not None:
            check_refund_id(self.refund_id)
        check_text(self.reason, "reason", REASON_MAX)
        self.payment  # noqa: B018 - refuses a row without a usable payment id now

    @property
    def payment(self) -> PaymentRef:
        """The payment the row refunds."""
        return PaymentRef(self.payment_id, self.merchant_reference, self.transaction_id)

    def operation(self) -> Refund:
        """The row as a refund operation (its refund id must be known by now)."""
        if self.refund_id is None:
            raise ValidationError("has no refund id yet (see derive_refund_ids)", field="refund_id")
        return Refund(
            refund_id=self.refund_id, payment=self.payment, amount=self.amount, reason=self.reason
        )


@attrs.frozen
class RowError:
    """Why a row (``line``) cannot be sent; ``field`` names the column, if one is to blame."""

    line: int
    field: str | None
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}: "
        return where + (f"{self.field}: {self.problem}" if self.field else self.problem)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"line": self.line, "field": self.field, "problem": self.problem}


def derive_refund_ids(rows: Iterable[BatchRow]) -> list[BatchRow]:
    """The rows, each without ``refund_id`` given one derived from its own content.

    The id is ``b-`` + 24 hex digits of a SHA-256 over the provider, the payment's
    identifiers, amount, currency, reason and original amount, + ``-N`` for the N-th
    row with that content (so two identical rows are two refunds). It depends on
    nothing else: not on the line, not on other rows, not on the file's name. Editing,
    adding or reordering other rows never changes a row's id, so a re-run after fixing
    a file never refunds the unchanged rows again. The flip side: the same row in a
    later file has the same id and is recognised as already refunded; give
    ``refund_id`` explicitly to refund a payment the same amount again.
    """
    seen: Counter[str] = Counter()

    def count(digest: str) -> int:
        seen[digest] += 1
        return seen[digest]

    return [
        row if row.refund_id is not None else attrs.evolve(row, refund_id=derived_id(row, count))
        for row in rows
    ]


def derived_id(row: BatchRow, count: Callable[[str], int]) -> str:
    """The refund id :func:`derive_refund_ids` gives ``row``; ``count`` takes the
    digest of the row's content and says how many rows have had it, this one included."""
    digest = hashlib.sha256(json.dumps(row_content(row)).encode()).hexdigest()[:24]
    return f"b-{digest}-{count(digest)}"


def row_content(row: BatchRow) -> list[str | None]:
    """What a row asks for, apart from its line and refund id."""
    return [
        row.provider,
        row.payment_id,
        row.merchant_reference,
        row.transaction_id,
        row.amount.to_wire(),
        row.amount.currency,
        row.reason,
        None if row.original_amount is None else row.original_amount.to_wire(),
    ]
