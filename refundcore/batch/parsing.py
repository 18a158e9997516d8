"""One record of a batch file (a CSV row or a JSON Lines object, as column → value) to
a :class:`~refundcore.batch.rows.BatchRow`, or the problems of each of its columns.

JSON values come as :func:`json_value` decodes them: numbers with a fraction and
integers too long to be amounts are kept as written, so that a float never becomes
money and thousands of digits never cost a conversion."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import RefundError, ValidationError
from ..models import REASON_MAX, PaymentRef, check_refund_id, check_text
from ..money import Money
from .rows import ID_COLUMNS, PAYMENT_COLUMNS, BatchRow, RowError

__all__ = [
    "DuplicateKey",
    "column",
    "json_type",
    "json_value",
    "parse_row",
    "problem",
    "shown",
    "undecodable",
]


class _JsonFloat:
    """A JSON number with a fraction or an exponent, kept as written: json would make it
    a float, which cannot hold money exactly."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _JsonLongInt:
    """A JSON integer too long to be an amount or an id, kept as written: converting
    thousands of digits costs time, and past 4,300 Python refuses (ValueError)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


# No amount or id has more digits than this (Money allows 18 before the point).
_MAX_INT_DIGITS = 40


def _json_int(text: str) -> int | _JsonLongInt:
    return int(text) if len(text) <= _MAX_INT_DIGITS else _JsonLongInt(text)


class DuplicateKey(ValueError):
    """A JSON object names ``key`` twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(key)
        found[key] = value
    return found


def json_value(text: str) -> Any:
    """``text`` decoded as JSON for a batch row: floats and overlong integers kept as
    written, a repeated key refused (:class:`DuplicateKey`). ``json.JSONDecodeError``
    and ``RecursionError`` as :func:`json.loads` raises them."""
    return json.loads(
        text,
        parse_float=_JsonFloat,
        parse_int=_json_int,
        parse_constant=_JsonFloat,
        object_pairs_hook=_object,
    )


def shown(text: str, limit: int = 40) -> str:
    """``text`` cut short for an error message: a hostile file may hold megabytes."""
    return text if len(text) <= limit else f"{text[:limit]}…"


def undecodable(text: str) -> str | None:
    """Why ``text`` (decoded with surrogateescape) is not UTF-8, if it is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00
        return f"not UTF-8 text (byte {byte:#04x}); save the file as UTF-8"
    return None


def json_type(value: object) -> str:
    """What ``value`` (as :func:`json_value` decodes it) is, for an error message."""
    if isinstance(value, _JsonFloat):
        return f"the number {shown(value.text)}"
    if isinstance(value, _JsonLongInt):
        return f"a number of {len(value.text)} digits"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return "a number" if isinstance(value, int) else "a string"
    return "an array" if isinstance(value, list) else "an object"


def column(field: str | None) -> str | None:
    """The file column a ValidationError's field stands for."""
    if field is None:
        return None
    if field == "payment":
        return "payment_id"
    return field.removeprefix("payment.")


def problem(exc: RefundError) -> str:
    """The message without the "field: " prefix the exception adds."""
    text = str(exc)
    field = getattr(exc, "field", None)
    if isinstance(exc, ValidationError) and field and text.startswith(f"{field}: "):
        return text[len(field) + 2 :]
    return text


def parse_row(line: int, raw: Mapping[str, object]) -> tuple[BatchRow | None, list[RowError]]:
    """The row on ``line`` (its refund id still ``None`` if not given), or ``None``;
    and every problem of every column."""
    return _RowParser(line, raw).parse()


class _RowParser:
    """One record's columns, each checked, every problem collected."""

    def __init__(self, line: int, raw: Mapping[str, object]) -> None:
        self.line = line
        self.raw = raw
        self.errors: list[RowError] = []

    def refuse(self, field: str | None, why: str) -> None:
        self.errors.append(RowError(self.line, field, why))

    def parse(self) -> tuple[BatchRow | None, list[RowError]]:
        provider = self.required_text("provider")
        currency = self.currency()
        if "amount" not in self.raw:
            self.refuse("amount", "missing")
        amount = self.money("amount", currency)
        original_amount = self.money("original_amount", currency)
        ids = {name: self.text(name) for name in ID_COLUMNS}
        reason = self.text("reason")
        self.check_all(ids, reason)
        if self.errors or provider is None or amount is None:
            return None, self.errors
        row = BatchRow(
            provider=provider,
            payment_id=ids["payment_id"],
            merchant_reference=ids["merchant_reference"],
            transaction_id=ids["transaction_id"],
            amount=amount,
            refund_id=ids["refund_id"],
            reason=reason,
            original_amount=original_amount,
            line=self.line,
        )
        return row, self.errors

    def text(self, name: str) -> str | None:
        value = self.raw.get(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and name in ID_COLUMNS:
            return str(value)
        self.refuse(name, f"must be a string, got {json_type(value)}")
        return None

    def required_text(self, name: str) -> str | None:
        value = self.text(name)
        if value is None and name not in self.raw:
            self.refuse(name, "missing")
        return value

    def currency(self) -> str | None:
        currency = self.required_text("currency")
        if currency is not None:
            try:
                Money(1, currency)
            except ValidationError as exc:
                self.refuse("currency", problem(exc))
                return None
        return currency

    def money(self, name: str, currency: str | None) -> Money | None:
        value = self.raw.get(name)
        if value is None:
            return None
        if isinstance(value, _JsonFloat):
            self.refuse(
                name,
                f"{shown(value.text)} is a JSON number with a fraction or exponent, which "
                f'cannot hold money exactly; write it as a string: "{shown(value.text)}"',
            )
            return None
        if isinstance(value, _JsonLongInt):
            self.refuse(name, f"a number of {len(value.text)} digits is no amount")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            self.refuse(
                name, f'must be a string like "10.00" or an integer, got {json_type(value)}'
            )
            return None
        if currency is None:
            return None
        try:
            return Money(value, currency)
        except ValidationError as exc:
            self.refuse(name if exc.field == "amount" else column(exc.field), problem(exc))
            return None

    def check_all(self, ids: Mapping[str, str | None], reason: str | None) -> None:
        checks: list[Callable[[], object]] = [
            lambda: ids["refund_id"] is None or check_refund_id(ids["refund_id"]),
            lambda: check_text(reason, "reason", REASON_MAX),
        ]
        # An identifier of the wrong type is reported already; "give at least one" would
        # only repeat it.
        if not any(error.field in PAYMENT_COLUMNS for error in self.errors):
            checks.insert(
                0,
                lambda: PaymentRef(
                    ids["payment_id"], ids["merchant_reference"], ids["transaction_id"]
                ),
            )
        for check in checks:
            try:
                check()
            except ValidationError as exc:
                self.refuse(column(exc.field), problem(exc))
