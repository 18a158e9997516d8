"""Changing one part of a genuine callback: a header, a top-level body field (JSON
object or form), a query parameter of its path, or a leaf of a JSON body, leaving every
other byte as it was where the format allows.

Also the hypothesis strategy that edits a part's value the ways real verifiers trip
over: an extra ``v0=`` element, a dropped element, a truncated or doubled value,
digits where a number is parsed, non-ASCII text, an empty value.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus, unquote_plus

import attrs
from hypothesis import strategies as st

from ..jsonutil import JsonNumber, dump_json, load_json
from ..models import Callback

__all__ = [
    "body_kind",
    "edited_value",
    "field_names",
    "flip",
    "form_names",
    "get_field",
    "json_leaves",
    "same_bytes_base64",
    "set_field",
    "set_header",
    "set_json_leaf",
    "set_query",
]

_FORM_PAIR = re.compile(r"[^&=]+=[^&]*\Z")


def flip(text: str, at: int) -> str:
    """``text`` with the character at ``at`` replaced by another of its kind (a digit by
    a digit, a letter by a letter of the same case), so hex stays hex and base64 stays
    base64, but the value differs."""
    if not text:
        return "x"
    at = at % len(text)
    char = text[at]
    if char.isdigit():
        new = "1" if char != "1" else "2"
    elif char.islower():
        new = "a" if char != "a" else "b"
    elif char.isupper():
        new = "A" if char != "A" else "B"
    else:
        new = "x"
    return text[:at] + new + text[at + 1 :]


def same_bytes_base64(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` are both base64 of the same bytes (a change in the
    unused bits before the padding)."""
    try:
        return base64.b64decode(a, validate=True) == base64.b64decode(b, validate=True)
    except (binascii.Error, ValueError):
        return False


def body_kind(callback: Callback) -> str | None:
    """``"json"`` (a JSON object), ``"form"`` or ``None`` (anything else)."""
    try:
        if isinstance(load_json(callback.body, exact_numbers=True), dict):
            return "json"
    except (ValueError, UnicodeError):
        pass
    try:
        text = callback.body.decode("ascii")
    except UnicodeError:
        return None
    if text and all(_FORM_PAIR.match(part) for part in text.split("&")):
        return "form"
    return None


def _json_body(callback: Callback) -> dict[str, Any]:
    data = load_json(callback.body, exact_numbers=True)
    assert isinstance(data, dict)
    return data


def _dump_like(callback: Callback, data: Any) -> bytes:
    # Non-ASCII kept as it is when the gateway sent it so; escaped otherwise.
    ascii_only = callback.body.isascii()
    return dump_json(data, ensure_ascii=ascii_only)


def get_field(callback: Callback, name: str) -> str | None:
    """A top-level body field's value as text (a JSON string's value, a JSON number's
    literal), or ``None`` when absent or not text."""
    kind = body_kind(callback)
    if kind == "json":
        value = _json_body(callback).get(name)
        return value if isinstance(value, str) else None
    if kind == "form":
        for part in callback.body.decode("ascii").split("&"):
            key, _, value = part.partition("=")
            if unquote_plus(key) == name:
                return unquote_plus(value)
    return None


def set_field(callback: Callback, name: str, value: str | None) -> Callback:
    """``callback`` with top-level body field ``name`` set to ``value`` (added when
    absent), or removed when ``value`` is ``None``. Other form fields keep their bytes."""
    kind = body_kind(callback)
    if kind == "json":
        data = _json_body(callback)
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
        return attrs.evolve(callback, body=_dump_like(callback, data))
    if kind == "form":
        parts = callback.body.decode("ascii").split("&")
        kept = [part for part in parts if unquote_plus(part.partition("=")[0]) != name]
        if value is not None:
            pair = f"{quote_plus(name)}={quote_plus(value)}"
            replaced = len(kept) != len(parts)
            if replaced:
                at = next(
                    i for i, p in enumerate(parts) if unquote_plus(p.partition("=")[0]) == name
                )
                kept.insert(at, pair)
            else:
                kept.append(pair)
        return attrs.evolve(callback, body="&".join(kept).encode("ascii"))
    return callback


def field_names(callback: Callback) -> list[str]:
    """The top-level field names of a JSON object or form body, in order (none for
    another body)."""
    if body_kind(callback) == "json":
        return list(_json_body(callback))
    return form_names(callback)


def form_names(callback: Callback) -> list[str]:
    """The field names of a form body, in order (none for another body)."""
    if body_kind(callback) != "form":
        return []
    return [
        unquote_plus(part.partition("=")[0]) for part in callback.body.decode("ascii").split("&")
    ]


def set_header(callback: Callback, name: str, value: str | None) -> Callback:
    """``callback`` with header ``name`` set (or removed when ``value`` is ``None``)."""
    if value is not None:
        return attrs.evolve(callback, headers=callback.headers.set(name, value))
    kept = [(k, v) for k, v in callback.headers.items() if k.lower() != name.lower()]
    return attrs.evolve(callback, headers=kept)


def set_query(callback: Callback, name: str, value: str | None) -> Callback:
    """``callback`` with query parameter ``name`` of its path set or removed; the other
    parameters keep their bytes."""
    path, _, query = callback.path.partition("?")
    parts = [p for p in query.split("&") if p and unquote_plus(p.partition("=")[0]) != name]
    if value is not None:
        parts.append(f"{quote_plus(name)}={quote_plus(value)}")
    return attrs.evolve(callback, path=path + ("?" + "&".join(parts) if parts else ""))


def json_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path (keys and indexes) of every value inside parsed JSON ``value``, each
    container before what it holds."""
    if path:
        yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, (*path, index))


def json_parent(data: Any, path: tuple[Any, ...]) -> Any:
    """The container in parsed JSON ``data`` that holds the value at ``path``."""
    parent = data
    for step in path[:-1]:
        parent = parent[step]
    return parent


def json_leaves(callback: Callback) -> Iterator[tuple[Any, ...]]:
    """The path (keys and indexes) of every leaf of a JSON body."""

    def walk(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        if isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, (*path, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                yield from walk(item, (*path, index))
        else:
            yield path

    if body_kind(callback) == "json":
        yield from walk(_json_body(callback), ())


def _other(value: Any) -> Any:
    if isinstance(value, JsonNumber):
        return JsonNumber("7" if value != "7" else "8")
    if isinstance(value, bool):
        return not value
    if value is None:
        return "x"
    if isinstance(value, str):
        return value + "x" if value else "x"
    return "x"


def set_json_leaf(callback: Callback, path: tuple[Any, ...]) -> Callback:
    """``callback`` with the JSON leaf at ``path`` changed to another value of its kind."""
    data = _json_body(callback)
    parent = json_parent(data, path)
    parent[path[-1]] = _other(parent[path[-1]])
    return attrs.evolve(callback, body=_dump_like(callback, data))


_DELIMITERS = re.compile(r"([,;&= ]+)")
_PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)


@st.composite
def edited_value(draw: st.DrawFn, genuine: str | None) -> str | None:
    """An edit of ``genuine`` (a part's value; ``None`` when absent): removed, replaced
    by random text, or changed element by element."""
    base = genuine or ""
    tokens = [token for token in _DELIMITERS.split(base) if token]
    kind = draw(
        st.sampled_from(
            [
                "remove",
                "text",
                "empty",
                "insert",
                "drop",
                "repeat",
                "truncate",
                "extend",
                "digits",
                "swapcase",
                "padded",
                "unicode",
            ]
        )
    )
    if kind == "remove":
        return None
    if kind == "text":
        return draw(st.text(_PRINTABLE, max_size=80))
    if kind == "empty":
        return ""
    if kind == "insert":
        element = draw(
            st.sampled_from(["v0=", "v1=", "t=", "sig=", "keyId=", "", "=", ","])
        ) + draw(st.text("0123456789abcdef", max_size=16))
        at = draw(st.integers(0, len(tokens)))
        joiner = draw(st.sampled_from([",", ";", "&", " "]))
        return joiner.join([*tokens[:at], element, *tokens[at:]]) if tokens else element
    if kind == "drop" and tokens:
        at = draw(st.integers(0, len(tokens) - 1))
        return "".join(tokens[:at] + tokens[at + 1 :])
    if kind == "repeat" and tokens:
        at = draw(st.integers(0, len(tokens) - 1))
        return "".join([*tokens[: at + 1], tokens[at], *tokens[at + 1 :]])
    if kind == "truncate" and base:
        return base[: draw(st.integers(0, len(base) - 1))]
    if kind == "extend":
        return base + draw(st.text(_PRINTABLE, min_size=1, max_size=20))
    if kind == "digits":
        return draw(st.text("0123456789", min_size=1, max_size=30))
    if kind == "swapcase":
        return base.swapcase()
    if kind == "padded":
        return f" {base} "
    if kind == "unicode":
        return base + draw(st.sampled_from(["é", "\u202e", "€", "\U0001f4b8", "\x00"]))
    return draw(st.text(_PRINTABLE, max_size=40))
