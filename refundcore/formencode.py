"""``application/x-www-form-urlencoded`` bodies, written and read exactly.

Gateways that sign form fields sign the values, so a body must be written the way the
gateway reads it back (:func:`form_encode` is :func:`urllib.parse.urlencode` for text
pairs) and read strictly: a field given twice, a bad escape or a stray byte could let
the verifier and the gateway see different values under one signature.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote_plus, unquote_plus

__all__ = ["FORM_CONTENT_TYPE", "form_decode", "form_encode", "form_fields"]

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

# quote_plus leaves these as they are: a text made of them alone needs no quoting.
_SAFE = re.compile(r"[A-Za-z0-9_.~-]*\Z")


def _escaped(text: str) -> str:
    return text if _SAFE.match(text) else quote_plus(text)


def form_encode(pairs: Iterable[tuple[str, str]]) -> str:
    """``name=value`` pairs joined with ``&``, in the order given, escaped exactly as
    ``urllib.parse.urlencode(pairs)`` escapes text (space → ``+``, UTF-8 percent
    escapes). Only text is taken: a number must be written by the caller first."""
    encoded = []
    for name, value in pairs:
        if not isinstance(name, str) or not isinstance(value, str):
            raise TypeError(f"form field {name!r} must be str = str")
        encoded.append(f"{_escaped(name)}={_escaped(value)}")
    return "&".join(encoded)


def _unescaped(text: str) -> str:
    # Most fields carry no escape: leave those as they are.
    if "%" not in text and "+" not in text:
        return text
    return unquote_plus(text, errors="strict")


def form_decode(body: bytes | str, *, max_fields: int = 256) -> list[tuple[str, str]]:
    """Every field of a form body, in order, strictly: ASCII only, each part is
    ``name=value``, escapes must decode as UTF-8. ``ValueError`` otherwise (also beyond
    ``max_fields`` fields). An empty body has no fields."""
    text = body.decode("ascii") if isinstance(body, bytes) else body
    if not text:
        return []
    if not text.isascii():
        raise ValueError("a form body is ASCII")
    parts = text.split("&")
    if len(parts) > max_fields:
        raise ValueError(f"more than {max_fields} form fields")
    pairs = []
    for part in parts:
        name, equals, value = part.partition("=")
        if not equals or not name:
            raise ValueError(f"form field {part[:40]!r} is not name=value")
        pairs.append((_unescaped(name), _unescaped(value)))
    return pairs


def form_fields(body: bytes | str, *, max_fields: int = 256) -> dict[str, str]:
    """The fields of a form body by name, as :func:`form_decode` reads them; a name given
    twice is a ``ValueError`` (one value could be signed and another used)."""
    pairs = form_decode(body, max_fields=max_fields)
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise ValueError("a form field is given twice")
    return fields
