"""A journal's connection string as it may be shown: with every password masked.

A journal is named in errors and logs. What the user gave may be a URL
(``postgresql://user:pw@host/db``, the password also as ``?password=``) or, by mistake,
a libpq key=value string (``host=h password='pw'``); no form's password may be shown.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["mask_dsn"]

_MASK = "***"
# libpq reads both; sslpassword unlocks the client key.
_SECRET_KEYS = frozenset({"password", "sslpassword"})
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# A libpq key=value pair: the value is quoted ('…' with backslash escapes; an unclosed
# quote runs to the end) or runs to the next white space.
_PAIR = re.compile(r"([A-Za-z_]+)(\s*=\s*)('(?:[^'\\]|\\.)*(?:'|\Z)|\S*)", re.DOTALL)


def _mask_pair(match: re.Match[str]) -> str:
    key, equals, value = match.groups()
    if key.lower() not in _SECRET_KEYS or not value:
        return match.group(0)
    return f"{key}{equals}{_MASK}"


def _mask_query(query: str) -> str:
    items = []
    for item in query.split("&"):
        key, sep, _ = item.partition("=")
        secret = sep and unquote(key).strip().lower() in _SECRET_KEYS
        items.append(f"{key}={_MASK}" if secret else item)
    return "&".join(items)


def mask_dsn(dsn: str) -> str:
    """``dsn`` with its passwords replaced by ``***``: the user part of a URL and its
    ``password``/``sslpassword`` query parameters, or those keys of a key=value string.

    The user part ends, as libpq reads it, at the last ``@`` before the first ``/`` (so
    a password holding ``#``, ``?`` or ``@`` is masked whole), else at the last ``@`` of
    all: a password holding ``/`` (base64 ones do) is masked too, at the price of
    masking more than the password when a parameter holds an ``@``.
    """
    scheme = _SCHEME.match(dsn)
    if scheme is None:
        return _PAIR.sub(_mask_pair, dsn)
    rest = dsn[scheme.end() :]
    slash = rest.find("/")
    at = rest.rfind("@", 0, len(rest) if slash < 0 else slash)
    if at < 0:
        at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        rest = f"{rest[:at].partition(':')[0]}:{_MASK}{rest[at:]}"
    base, sep, query = rest.partition("?")
    return f"{dsn[: scheme.end()]}{base}{sep}{_mask_query(query) if sep else ''}"
