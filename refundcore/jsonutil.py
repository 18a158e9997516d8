"""JSON for money: numbers never pass through ``float``, and what a signature covers is
read exactly one way.

:func:`load_json` reads a gateway's reply or callback: decimals become
:class:`~decimal.Decimal` (or, with ``exact_numbers``, :class:`JsonNumber`, the literal
text), ``NaN`` and ``Infinity`` are refused, and so is an object with a repeated key
(the gateway and the verifier could each read another value under one signature).
:func:`dump_json` writes compact JSON in which a ``Decimal`` is a JSON number with its own
digits and a ``float`` is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["JsonNumber", "dump_json", "load_json"]


class JsonNumber(str):
    """A JSON number kept as the literal text it arrived as: ``0.10`` stays ``"0.10"``
    and a 20-digit id stays exact. It is a ``str``, so it signs as it was written."""

    __slots__ = ()

    def to_decimal(self) -> Decimal:
        """The exact value."""
        return Decimal(self)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key[:40]!r} is repeated in a JSON object")
            seen.add(key)
    return result


# Made once: ``json.loads`` with options builds a new decoder on every call.
_DECIMALS = json.JSONDecoder(
    parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
)
_LITERALS = json.JSONDecoder(
    parse_float=JsonNumber,
    parse_int=JsonNumber,
    parse_constant=_refuse_constant,
    object_pairs_hook=_unique_keys,
)


def load_json(data: bytes | str, *, exact_numbers: bool = False) -> Any:
    """Parse JSON ``data`` (bytes in UTF-8, -16 or -32, as :func:`json.loads` tells them
    apart, or text).

    Integers become ``int`` and other numbers ``Decimal``; with ``exact_numbers`` every
    number is a :class:`JsonNumber`. ``ValueError`` for anything that is not one JSON
    text: bad syntax, bad encoding, ``NaN``/``Infinity``, a repeated key, nesting too
    deep to parse.
    """
    try:
        text = data if isinstance(data, str) else data.decode(json.detect_encoding(data))
        return (_LITERALS if exact_numbers else _DECIMALS).decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _write(value: Any, parts: list[str], ensure_ascii: bool) -> None:
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, JsonNumber):
        parts.append(str.__str__(value))
    elif isinstance(value, str):
        parts.append(json.dumps(value, ensure_ascii=ensure_ascii))
    elif isinstance(value, int):
        parts.append(int.__repr__(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written as a JSON number")
        parts.append(f"{value:f}")
    elif isinstance(value, Mapping):
        parts.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, got {type(key).__name__}")
            if index:
                parts.append(",")
            parts.append(json.dumps(key, ensure_ascii=ensure_ascii))
            parts.append(":")
            _write(item, parts, ensure_ascii)
        parts.append("}")
    elif isinstance(value, (list, tuple)):
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write(item, parts, ensure_ascii)
        parts.append("]")
    else:
        # float included: money never goes through one.
        raise TypeError(f"cannot write {type(value).__name__} as JSON here")


def dump_json(value: Any, *, ensure_ascii: bool = True) -> bytes:
    """Compact JSON bytes (UTF-8) of ``value``: no spaces, keys in the mapping's order.

    A ``Decimal`` is written as a JSON number with its own digits (``Decimal("76.10")``
    → ``76.10``), a :class:`JsonNumber` as its text, an ``int`` as its digits; a
    ``float``, a non-finite ``Decimal`` or a non-string key is refused (``TypeError`` /
    ``ValueError``). Serialise once and sign these exact bytes.
    """
    parts: list[str] = []
    _write(value, parts, ensure_ascii)
    return "".join(parts).encode("utf-8")
