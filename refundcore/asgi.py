"""An ASGI app that receives gateway callbacks: the twin of :mod:`refundcore.wsgi` for
asyncio servers (uvicorn, hypercorn) and frameworks (FastAPI, Starlette).

Mount ``callback_app(client, on_notification)`` under any prefix (say ``/hooks``) and
give each gateway ``https://shop.example/hooks/<provider>`` as its notify URL. The
client is an :class:`~refundcore.AsyncRefundClient` (verification awaited) or a
:class:`~refundcore.RefundClient` (verification, which may write its journal, in a
worker thread). ``on_notification`` is a coroutine function, awaited on the event loop,
or a plain function, run in a worker thread since it may block. Every answer is the
WSGI app's (:mod:`refundcore.callback_answers` decides them for both): the gateway's
success answer for a genuine callback (and for a genuine one that is not about a
refund, which is not handed on), 400 for one that fails verification, 503 when the
journal could not record it, 500 when the plugin failed to read it or
``on_notification`` raised.

Bodies are read with a size cap and a deadline: 413 for a declared Content-Length over
``max_body`` before any of the body is read, and as soon as a body without one passes
it; 400 for a malformed Content-Length; 408 when the whole body has not arrived within
``body_timeout`` seconds, however slowly it trickles. Those answers close the
connection. How long the request line and headers may take is the server's setting
(uvicorn's ``--timeout-keep-alive`` and h11 limits).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .callback_answers import (
    Answer,
    OnNotification,
    Refused,
    check_limits,
    deliver_async,
    find_provider,
)
from .logs import EventLogger
from .models import Headers
from .wsgi import BODY_TIMEOUT, MAX_BODY

if TYPE_CHECKING:
    from .async_client import AsyncRefundClient
    from .client import RefundClient

__all__ = ["ASGIApp", "callback_app"]

log = EventLogger("refundcore.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CONTENT_LENGTH = re.compile(rb"[0-9]{1,15}")


class _Gone(Exception):
    """The client disconnected: there is no one to answer."""


def _declared_length(scope: Scope, max_body: int) -> int | None:
    lengths = [value for name, value in scope["headers"] if name.lower() == b"content-length"]
    if not lengths:
        return None
    if len(set(lengths)) != 1 or not _CONTENT_LENGTH.fullmatch(lengths[0]):
        raise Refused(400, "Bad Request", "bad Content-Length")
    length = int(lengths[0])
    if length > max_body:
        raise Refused(413, "Content Too Large", "callback too large")
    return length


async def _read_body(scope: Scope, receive: Receive, max_body: int, deadline: float) -> bytes:
    declared = _declared_length(scope, max_body)
    chunks: list[bytes] = []
    received = 0
    more = True
    while more:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Refused(408, "Request Timeout", "callback body did not arrive in time")
        try:
            message = await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError:
            raise Refused(408, "Request Timeout", "callback body did not arrive in time") from None
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > max_body:
            raise Refused(413, "Content Too Large", "callback too large")
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    if declared is not None and received != declared:
        raise Refused(400, "Bad Request", "callback body does not match its Content-Length")
    return b"".join(chunks)


def _below_mount(scope: Scope) -> str:
    """The path below where the app is mounted (``root_path``)."""
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", "") or "")
    return path[len(root) :] if root and path.startswith(root) else path


def _raw_target(scope: Scope) -> str:
    """Path plus query exactly as the client sent them (what gateways sign)."""
    raw = scope.get("raw_path")
    path = (
        raw.decode("latin-1") if raw else quote(str(scope.get("path", "")), safe="/;=@:,+$!*'()~")
    )
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _headers(scope: Scope) -> Headers:
    return Headers(
        [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
    )


async def _answer(send: Send, answer: Answer, *, close: bool = False) -> None:
    headers = [
        (b"content-type", answer.content_type.encode("latin-1")),
        (b"content-length", str(len(answer.body)).encode("ascii")),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # Nothing to start or stop: the client is the application's own.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def callback_app(
    client: RefundClient | AsyncRefundClient,
    on_notification: OnNotification,
    *,
    max_body: int = MAX_BODY,
    body_timeout: float = BODY_TIMEOUT,
) -> ASGIApp:
    """Build the ASGI app: callbacks arrive at ``/<provider>`` below wherever it is mounted.

    ``max_body`` (bytes) and ``body_timeout`` (seconds, at most 300) bound what one
    request may send and how long its body may take; :class:`ConfigError` if either is
    out of range.
    """
    check_limits(max_body, body_timeout)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # a WebSocket is refused by the server when the app does not accept it
        deadline = time.monotonic() + body_timeout
        found = find_provider(client, str(scope.get("method", "")), _below_mount(scope))
        if isinstance(found, Answer):
            await _answer(send, found)
            return
        try:
            body = await _read_body(scope, receive, max_body, deadline)
        except _Gone:
            return
        except Refused as refused:
            await _answer(send, refused.logged(log, found), close=True)
            return
        answer = await deliver_async(
            client,
            found,
            target=_raw_target(scope),
            headers=_headers(scope),
            body=body,
            on_notification=on_notification,
        )
        await _answer(send, answer)

    return app
