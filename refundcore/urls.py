"""The http(s) URLs refundcore is given — a gateway's base URL, a notify URL — parsed
whole when they are given, so a bad one is refused before anything is sent rather than
failing (or worse, being passed on to a gateway) later.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Union
from urllib.parse import SplitResult, urlsplit

from .errors import ConfigError, ValidationError

__all__ = ["MAX_URL_LENGTH", "is_loopback", "parse_http_url"]

#: The longest URL accepted (what browsers and most gateways accept).
MAX_URL_LENGTH = 2048

_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_BRACKETED = re.compile(r"\[[^\[\]]+\](?::[0-9]*)?")

ErrorType = Union[type[ValidationError], type[ConfigError]]  # noqa: UP007 - runtime on 3.10


def _host_problem(parts: SplitResult) -> str | None:
    host = parts.hostname
    if not host:
        return "names no host"
    if "[" in parts.netloc:
        if not _BRACKETED.fullmatch(parts.netloc.rpartition("@")[2]):
            return "has something other than a port after its [IPv6 address]"
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"[{host}] is not an IPv6 address"
        return None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return "has a host name that is not a valid internationalised domain name"
    if len(host) > 253 or not _HOST_NAME.fullmatch(host):
        return f"{host[:64]!r} is not a valid host name"
    return None


def _shown(url: str) -> str:
    """``url`` fit to quote in an error: any credentials (``user:password@``), query
    and fragment masked, cut at 80 characters."""
    scheme, sep, rest = url.partition("://")
    # A password may hold "/" too (the URL is then misparsed, and refused): everything
    # up to the last "@" before the query goes.
    before_query = rest.partition("?")[0].partition("#")[0]
    if sep and "@" in before_query:
        url = f"{scheme}{sep}…@{rest[before_query.rindex('@') + 1 :]}"
    url, fragment, _ = url.partition("#")
    base, query, _ = url.partition("?")
    url = base + ("?…" if query else "") + ("#…" if fragment else "")
    return repr(url[:80]) + ("…" if len(url) > 80 else "")


def parse_http_url(value: object, field: str, error: ErrorType = ValidationError) -> SplitResult:
    """``value`` split into its parts, once it is known to be a usable absolute http(s)
    URL: at most :data:`MAX_URL_LENGTH` printable characters without white space, a
    scheme of ``http`` or ``https``, a valid host name or IP address (IPv6 in brackets),
    a port from 1 to 65535 if one is given.

    Anything else raises ``error`` (:class:`ValidationError` for call arguments,
    :class:`ConfigError` for configuration) naming ``field`` and the problem.
    """
    if not isinstance(value, str):
        raise error(f"must be a URL string, got {type(value).__name__}", field=field)
    shown = _shown(value)
    if len(value) > MAX_URL_LENGTH:
        raise error(f"is {len(value)} characters long, at most {MAX_URL_LENGTH}", field=field)
    if not value.isprintable() or any(char.isspace() for char in value):
        raise error(f"{shown} holds white space or control characters", field=field)
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        if "[" in value.partition("://")[2].partition("/")[0]:
            reason = "has a malformed IPv6 address (write it in brackets: http://[::1]:8080/)"
        else:
            reason = f"cannot be parsed ({exc})"
        raise error(f"{shown} {reason}", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise error(f"{shown} is not an absolute http(s) URL", field=field)
    problem = _host_problem(parts)
    if problem is None:
        try:
            port = parts.port
        except ValueError:
            port = 0
        if port == 0:
            problem = "has a port that is not a number from 1 to 65535"
    if problem is not None:
        raise error(f"{shown} {problem}", field=field)
    return parts


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
