"""A WSGI app that receives gateway callbacks for an embedding application.

Mount ``callback_app(client, on_notification)`` under any prefix (say ``/hooks``) and
give each gateway ``https://shop.example/hooks/<provider>`` as its notify URL. Each
callback is verified by the provider's plugin; a genuine one is passed to
``on_notification`` and answered the way that gateway expects. A genuine callback that
is not about a refund (:class:`~refundcore.errors.NotARefund`: a payment completed) gets
the same success answer, so the gateway stops delivering it, and is not passed on. A
callback that fails verification gets 400 (never a 500 for bad input); if
``on_notification`` itself raises, the answer is 500 so the gateway delivers it again
later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from .errors import JournalError, NotARefund, ProviderNotInstalled, RefundError
from .models import CallbackAck, Headers, RefundNotification

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .client import RefundClient

__all__ = ["callback_app"]

log = logging.getLogger("refundcore.wsgi")

MAX_BODY = 1024 * 1024


def _raw_target(environ: WSGIEnvironment) -> str:
    """Path plus query exactly as the client sent it, where the server tells us."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = quote(
        (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        .encode("latin-1")
        .decode("utf-8", "replace"),
        safe="/;=@:,+$!*'()~",
    )
    query = environ.get("QUERY_STRING", "")
    return f"{path}?{query}" if query else path


def _headers(environ: WSGIEnvironment) -> Headers:
    pairs = [
        (key[5:].replace("_", "-").title(), str(value))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        if environ.get(key):
            pairs.append((name, str(environ[key])))
    return Headers(pairs)


def callback_app(
    client: RefundClient, on_notification: Callable[[RefundNotification], object]
) -> WSGIApplication:
    """Build the WSGI app: callbacks arrive at ``/<provider>`` below wherever it is mounted."""

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        def answer(
            status: str, body: bytes, content_type: str = "text/plain; charset=utf-8"
        ) -> list[bytes]:
            start_response(
                status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
            )
            return [body]

        def acknowledge(ack: CallbackAck) -> list[bytes]:
            return answer(f"{ack.status} OK", ack.body, ack.content_type)

        provider = environ.get("PATH_INFO", "").strip("/")
        if environ.get("REQUEST_METHOD") != "POST":
            return answer("405 Method Not Allowed", b"callbacks are POSTed\n")
        try:
            info = client.provider(provider) if provider and "/" not in provider else None
        except ProviderNotInstalled:
            info = None
        except RefundError as exc:
            log.error("callback for %r: %s", provider, exc)
            return answer("503 Service Unavailable", b"provider unavailable\n")
        if info is None:
            return answer("404 Not Found", b"no such provider\n")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return answer("400 Bad Request", b"bad Content-Length\n")
        if length < 0 or length > MAX_BODY:
            return answer("413 Content Too Large", b"callback too large\n")
        body = environ["wsgi.input"].read(length) if length else b""
        try:
            note = client.verify_callback(
                provider,
                method="POST",
                path=_raw_target(environ),
                headers=_headers(environ),
                body=body,
            )
        except JournalError as exc:
            # Genuine or not, it could not be recorded: let the gateway deliver it again.
            log.error("%s callback not journalled: %s", provider, exc)
            return answer("503 Service Unavailable", b"try again later\n")
        except NotARefund as exc:
            # Refusing it would make the gateway deliver it again and again (and some
            # disable an endpoint that keeps refusing); it is genuine, so it is taken.
            log.info("acknowledged a %s %r callback: not about a refund", provider, exc.event)
            return acknowledge(info.callback_ack)
        except RefundError as exc:
            log.warning("rejected %s callback: %s", provider, exc)
            return answer("400 Bad Request", b"callback rejected\n")
        try:
            on_notification(note)
        except Exception:
            log.exception("the application failed to handle a %s callback", provider)
            return answer("500 Internal Server Error", b"try again later\n")
        return acknowledge(info.callback_ack)

    return app
