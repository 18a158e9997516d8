"""What refundcore checks in the values a plugin's stage hooks give back.

A plugin (a provider's, or an app plugin wrapping its stages) is code refundcore did
not write. The hook specifications say what each stage returns; these checks make sure
of it where a wrong value would otherwise break a guarantee the core gives: a request
that goes to another host or in clear text, or whose body is not the bytes the sign
stage signed; a result or a notification whose fields the journal and the caller
cannot read (a status that is not a :class:`~refundcore.models.RefundStatus`, an amount
that is not :class:`~refundcore.money.Money`).

Each check returns ``None`` for a usable value, or the problem in words, naming the
field; the caller decides what it means at its stage (before sending: nothing is sent;
after: the outcome is ``UNKNOWN``). The words hold type names and URL origins only,
never a value a plugin wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from .models import HttpRequest, PaymentRef, RefundNotification, RefundResult, RefundStatus
from .money import Money

__all__ = [
    "MAX_REQUEST_BYTES",
    "METHODS",
    "notification_problem",
    "request_problem",
    "result_problem",
]

#: Cap on a request body: a refund request is a few hundred bytes; a larger one is a
#: plugin gone wrong, not something to put on the wire.
MAX_REQUEST_BYTES = 1024 * 1024
#: The HTTP methods a request may use (those the transport's retry check knows).
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """Scheme, host and port of ``url`` (the scheme's port when none is given), or
    ``None`` when it has no readable one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname or "", port or _DEFAULT_PORTS.get(scheme)


def _shown(origin: tuple[str, str, int | None] | None) -> str:
    if origin is None:
        return "an unreadable URL"
    scheme, host, port = origin
    return f"{scheme}://{host}:{port}"


def _type(value: object) -> str:
    return type(value).__name__


def _not_text(values: Mapping[str, object]) -> str | None:
    """The first of ``values`` (field name → value) that is neither a str nor ``None``,
    in words."""
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            return f"{name}: must be a str or None, got {_type(value)}"
    return None


def request_problem(request: HttpRequest, base_url: str | None) -> str | None:
    """What makes ``request`` unfit to send for a provider configured with
    ``base_url``: a method that is not an HTTP method, a body that is not bytes or is
    over :data:`MAX_REQUEST_BYTES`, a URL on another origin (scheme, host, port) than
    ``base_url``'s, which the config checked (https, or http on loopback only)."""
    method, url, body = request.method, request.url, request.body
    if type(method) is not str or method not in METHODS:
        shown = method[:16] if type(method) is str and method.isalpha() else _type(method)
        return f"method: must be one of {', '.join(sorted(METHODS))}, got {shown}"
    if type(body) is not bytes:
        return f"body: must be the bytes to send, got {_type(body)}"
    if len(body) > MAX_REQUEST_BYTES:
        return f"body: {len(body)} bytes, more than {MAX_REQUEST_BYTES}"
    if type(url) is not str:
        return f"url: must be a str, got {_type(url)}"
    if base_url is None:
        return None
    # A plugin builds its URLs on base_url: checking the prefix settles nearly all.
    if url.startswith(base_url) and url[len(base_url) : len(base_url) + 1] in ("", "/", "?"):
        return None
    wanted, got = _origin(base_url), _origin(url)
    if got is None or got != wanted:
        return (
            f"url: goes to {_shown(got)}, not to the configured base_url's "
            f"{_shown(wanted)} (a request goes only where the config says)"
        )
    return None


def result_problem(result: RefundResult) -> str | None:
    """What makes ``result`` unreadable to the journal and the caller: a field of
    another type than :class:`~refundcore.models.RefundResult` declares."""
    if type(result.status) is not RefundStatus:
        return f"status: must be a RefundStatus, got {_type(result.status)}"
    amount = result.amount
    if amount is not None and not isinstance(amount, Money):
        return f"amount: must be a refundcore.Money or None, got {_type(amount)}"
    # Every result is checked: the usual one passes in one test, without a loop.
    gateway_id, message, code = result.provider_refund_id, result.message, result.error_code
    if not (
        (gateway_id is None or type(gateway_id) is str)
        and (message is None or type(message) is str)
        and (code is None or type(code) is str)
    ):
        texts = {"provider_refund_id": gateway_id, "message": message, "error_code": code}
        problem = _not_text(texts)
        if problem is not None:
            return problem
    status = result.http_status
    if status is not None and (type(status) is not int or not 100 <= status <= 999):
        return f"http_status: must be an int from 100 to 999 or None, got {_type(status)}"
    return None


def notification_problem(note: RefundNotification) -> str | None:
    """What makes ``note`` unreadable to the journal and the application: a field of
    another type than :class:`~refundcore.models.RefundNotification` declares."""
    if type(note.status) is not RefundStatus:
        return f"status: must be a RefundStatus, got {_type(note.status)}"
    event, refund_id, gateway_id = note.event, note.refund_id, note.provider_refund_id
    # Every callback is checked: the usual one passes in one test, without a loop.
    if not (
        type(event) is str
        and (refund_id is None or type(refund_id) is str)
        and (gateway_id is None or type(gateway_id) is str)
    ):
        if not isinstance(event, str):
            return f"event: must be a str, got {_type(event)}"
        problem = _not_text({"refund_id": refund_id, "provider_refund_id": gateway_id})
        if problem is not None:
            return problem
    if note.payment is not None and not isinstance(note.payment, PaymentRef):
        return f"payment: must be a refundcore.PaymentRef or None, got {_type(note.payment)}"
    if note.amount is not None and not isinstance(note.amount, Money):
        return f"amount: must be a refundcore.Money or None, got {_type(note.amount)}"
    return None
