"""A WSGI app that receives gateway callbacks for an embedding application.

Mount ``callback_app(client, on_notification)`` under any prefix (say ``/hooks``) and
give each gateway ``https://shop.example/hooks/<provider>`` as its notify URL. Each
callback is verified by the provider's plugin; a genuine one is passed to
``on_notification`` and answered the way that gateway expects. A genuine callback that
is not about a refund (:class:`~refundcore.errors.NotARefund`: a payment completed) gets
the same success answer, so the gateway stops delivering it, and is not passed on. A
callback that fails verification gets 400 (never a 500 for bad input); if the plugin
fails to read it (:class:`~refundcore.errors.PluginError`, a plugin's bug) or
``on_notification`` itself raises, the answer is 500 so the gateway delivers it again
later.

Bodies are read with a size cap and a deadline: 413 for a body larger than
``max_body``, 400 for a malformed Content-Length or a body that ends before it,
408 for one that has not arrived within ``body_timeout`` seconds. Where the server
hands the app its connection (gunicorn's ``gunicorn.socket``, werkzeug's
``werkzeug.socket``), a read still waiting at the deadline is cut off, so a slow or
lying client holds a worker no longer than ``body_timeout``. Other servers must bound
their own reads (waitress reads the whole body before calling the app); the README
lists the settings.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING
from urllib.parse import quote

from .callback_answers import Answer, Refused, check_limits, deliver, find_provider
from .logs import EventLogger
from .models import Headers, RefundNotification

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from .client import RefundClient

__all__ = ["BODY_TIMEOUT", "MAX_BODY", "callback_app"]

log = EventLogger("refundcore.wsgi")

#: The largest callback body accepted by default (bytes): callbacks are a few KiB.
MAX_BODY = 1024 * 1024
#: Seconds a callback's body may take to arrive, by default: a gateway sends a few KiB
#: at once; only a stalled or hostile client needs longer.
BODY_TIMEOUT = 10.0
_CHUNK = 64 * 1024
_MAX_LENGTH_DIGITS = 15
# Where servers hand the app its connection.
_SOCKET_KEYS = ("gunicorn.socket", "werkzeug.socket")


class _Watch:
    __slots__ = ("fired", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket | None = sock
        self.fired = False


def _cut_reading(sock: socket.socket) -> None:
    # On a duplicate of the descriptor: the server's socket object (a TLS one in
    # particular) stays as it was, and can still write the answer.
    with suppress(OSError), socket.fromfd(sock.fileno(), sock.family, sock.type) as raw:
        raw.shutdown(socket.SHUT_RD)


class _Watchdog:
    """One thread per app that shuts the reading side of a connection whose body is
    still being read at its deadline: the blocked read then returns at once."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._queue: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, deadline: float) -> _Watch:
        watch = _Watch(sock)
        with self._wake:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="refundcore-wsgi-deadlines", daemon=True
                )
                self._thread.start()
            first = not self._queue or deadline < self._queue[0][0]
            heapq.heappush(self._queue, (deadline, next(self._order), watch))
            if first:
                self._wake.notify()
        return watch

    def release(self, watch: _Watch) -> bool:
        """Stop watching; True if the deadline had already cut the read."""
        with self._wake:
            watch.sock = None
            return watch.fired

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._queue and self._queue[0][0] <= now:
                    watch = heapq.heappop(self._queue)[2]
                    if watch.sock is not None:
                        watch.fired = True
                        _cut_reading(watch.sock)
                        watch.sock = None
                self._wake.wait(self._queue[0][0] - now if self._queue else None)


def _connection(environ: WSGIEnvironment) -> socket.socket | None:
    for key in _SOCKET_KEYS:
        sock = environ.get(key)
        if isinstance(sock, socket.socket):
            return sock
    return None


def _declared_length(environ: WSGIEnvironment, max_body: int) -> int | None:
    """The body's declared length; ``None`` when the server ends the input itself (a
    chunked body)."""
    text = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not text:
        return None if environ.get("wsgi.input_terminated") else 0
    # 1 to 15 ASCII digits (isdigit alone would take other scripts' digits too).
    if not (len(text) <= _MAX_LENGTH_DIGITS and text.isascii() and text.isdigit()):
        raise Refused(400, "Bad Request", "bad Content-Length")
    length = int(text)
    if length > max_body:
        raise Refused(413, "Content Too Large", "callback too large")
    return length


def _read_body(
    environ: WSGIEnvironment, max_body: int, deadline: float, watchdog: _Watchdog
) -> bytes:
    length = _declared_length(environ, max_body)
    if length == 0:
        return b""
    wanted = max_body + 1 if length is None else length
    stream = environ["wsgi.input"]
    sock = _connection(environ)
    watch = watchdog.watch(sock, deadline) if sock is not None else None
    chunks: list[bytes] = []
    received = 0
    failure: Exception | None = None
    try:
        while received < wanted:
            if time.monotonic() >= deadline:
                break
            chunk = stream.read(min(_CHUNK, wanted - received))
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
    except (OSError, ValueError) as exc:  # ValueError: some servers' input on a cut read
        failure = exc
    finally:
        cut = watch is not None and watchdog.release(watch)
    if cut or (received < wanted and time.monotonic() >= deadline):
        raise Refused(408, "Request Timeout", "callback body did not arrive in time")
    if length is None:
        if received > max_body:
            raise Refused(413, "Content Too Large", "callback too large")
        if failure is not None:
            raise Refused(400, "Bad Request", "callback body cut short")
    elif received < length:
        raise Refused(400, "Bad Request", "callback body shorter than its Content-Length")
    return b"".join(chunks)


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
        if key[:5] == "HTTP_"
    ]
    for key, name in (("CONTENT_TYPE", "Content-Type"), ("CONTENT_LENGTH", "Content-Length")):
        value = environ.get(key)
        if value:
            pairs.append((name, str(value)))
    # Every name and value is a str made here: no need to check them again.
    return Headers._checked(tuple(pairs))


def callback_app(
    client: RefundClient,
    on_notification: Callable[[RefundNotification], object],
    *,
    max_body: int = MAX_BODY,
    body_timeout: float = BODY_TIMEOUT,
) -> WSGIApplication:
    """Build the WSGI app: callbacks arrive at ``/<provider>`` below wherever it is mounted.

    ``max_body`` (bytes) and ``body_timeout`` (seconds, at most 300) bound what one
    request may send and how long its body may take; :class:`ConfigError` if either is
    out of range.
    """
    check_limits(max_body, body_timeout)
    watchdog = _Watchdog()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        deadline = time.monotonic() + body_timeout
        found = find_provider(
            client, environ.get("REQUEST_METHOD", ""), environ.get("PATH_INFO", "")
        )
        if isinstance(found, Answer):
            answer = found
        else:
            try:
                body = _read_body(environ, max_body, deadline, watchdog)
            except Refused as refused:
                answer = refused.logged(log, found)
            else:
                answer = deliver(
                    client,
                    found,
                    target=_raw_target(environ),
                    headers=_headers(environ),
                    body=body,
                    on_notification=on_notification,
                )
        start_response(
            answer.status_line,
            [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body)))],
        )
        return [answer.body]

    return app
