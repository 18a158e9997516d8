"""Deliver callbacks the way gateways do, and receive them the way merchants do.

:class:`CallbackSender` plays the gateway: it posts notifications once, repeatedly, late or
out of order, and can retry until the receiver acknowledges. :class:`CallbackReceiver` is a
WSGI app (serve it with :class:`~refundcore.sandbox.server.SandboxServer`) that records what
arrives so a test can wait for it.
"""

from __future__ import annotations

import http.client
import io
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import attrs

from refundcore.sandbox.server import buffer_app

from ..logs import EventLogger

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from typing_extensions import Self

__all__ = [
    "CallbackReceiver",
    "CallbackSender",
    "Delivery",
    "OutgoingCallback",
    "ReceivedCallback",
]

_logger = EventLogger("refundcore.sandbox")

# Methods whose requests carry a body even when it is empty, as http.client decides it.
_BODY_METHODS = frozenset({"PATCH", "POST", "PUT"})


@attrs.frozen
class OutgoingCallback:
    """A callback request for the sender to deliver."""

    #: Absolute ``http://`` URL, including any query string.
    url: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


@attrs.frozen
class Delivery:
    """The outcome of one attempt to deliver a callback."""

    callback: OutgoingCallback
    #: HTTP status received, or ``None`` if no response arrived.
    status: int | None
    body: bytes
    #: Why the attempt failed (connection error, timeout, broken response), else ``None``.
    error: str | None


class CallbackSender:
    """Delivers callbacks the way a gateway does: once, several times, late, or out of order.

    Each :meth:`send` or :meth:`send_in_order` call runs in its own background thread, so a
    late delivery does not hold back the ones queued after it. Every attempt, retries
    included, is recorded in :attr:`deliveries`; failures are recorded, never raised.

    An answer counts as accepted when ``retry_until(status, body)`` is true, or, without
    ``retry_until``, when the status is 2xx. An unaccepted attempt is repeated after
    ``retry_interval`` seconds until ``max_attempts`` attempts were made.
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        retry_until: Callable[[int, bytes], bool] | None = None,
        max_attempts: int = 1,
        retry_interval: float = 0.05,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        self._timeout = timeout
        self._retry_until = retry_until
        self._max_attempts = max_attempts
        self._retry_interval = retry_interval
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._jobs: list[threading.Thread] = []
        self._deliveries: list[Delivery] = []

    @property
    def deliveries(self) -> list[Delivery]:
        """A copy of every delivery attempt so far, in completion order."""
        with self._lock:
            return list(self._deliveries)

    def send(self, callback: OutgoingCallback, *, copies: int = 1, delay: float = 0.0) -> None:
        """Deliver ``copies`` copies of ``callback``, one after another, ``delay`` s from now.

        Returns at once; the delivery happens in a background thread.
        """
        if copies < 1:
            raise ValueError(f"copies must be at least 1, not {copies}")
        self._start_job([callback] * copies, delay)

    def send_in_order(self, callbacks: Sequence[OutgoingCallback], *, delay: float = 0.0) -> None:
        """Deliver ``callbacks`` one after another in the given order, ``delay`` s from now.

        Returns at once. Pass the callbacks reversed to deliver them out of order.
        """
        self._start_job(list(callbacks), delay)

    def send_now(self, callback: OutgoingCallback) -> Delivery:
        """Deliver ``callback`` in the calling thread, retrying as configured.

        Returns the last attempt's outcome.
        """
        _check_url(callback.url)
        return self._deliver(callback)

    def wait(self, timeout: float = 5.0) -> bool:
        """Block until every queued delivery finished; return whether they all did in time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self) -> None:
        """Cancel deliveries still waiting to start and wait for those in flight.

        Calling ``close()`` again does nothing.
        """
        self._closed.set()
        with self._lock:
            jobs = list(self._jobs)
        deadline = time.monotonic() + self._timeout
        for job in jobs:
            job.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start_job(self, callbacks: list[OutgoingCallback], delay: float) -> None:
        if delay < 0:
            raise ValueError(f"delay must not be negative, not {delay}")
        for callback in callbacks:
            _check_url(callback.url)
        job = threading.Thread(
            target=self._run_job,
            args=(callbacks, delay),
            name="refundcore-sandbox-callback-sender",
            daemon=True,
        )
        with self._lock:
            if self._closed.is_set():
                raise RuntimeError("callback sender is closed")
            self._jobs = [thread for thread in self._jobs if thread.is_alive()]
            self._jobs.append(job)
            self._pending += 1
            job.start()

    def _run_job(self, callbacks: list[OutgoingCallback], delay: float) -> None:
        try:
            # Waiting on the close event rather than sleeping lets close() cancel late sends.
            if self._closed.wait(delay):
                return
            for callback in callbacks:
                if self._closed.is_set():
                    return
                self._deliver(callback)
        except Exception:
            # A failing retry_until predicate ends up here; a background thread must not
            # die with a traceback on stderr.
            _logger.exception("callback delivery stopped by an error")
        finally:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _deliver(self, callback: OutgoingCallback) -> Delivery:
        attempts = 0
        while True:
            delivery = _attempt(callback, self._timeout)
            attempts += 1
            with self._lock:
                self._deliveries.append(delivery)
            if (
                self._accepted(delivery)
                or attempts >= self._max_attempts
                or self._closed.wait(self._retry_interval)
            ):
                return delivery

    def _accepted(self, delivery: Delivery) -> bool:
        if delivery.status is None or delivery.error is not None:
            return False
        if self._retry_until is None:
            return 200 <= delivery.status < 300
        return self._retry_until(delivery.status, delivery.body)


def _check_url(url: str) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        # Reading .port raises ValueError for a port that is not a number or out of range.
        valid = parts.scheme == "http" and bool(parts.hostname) and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise ValueError(f"callback URL must be an absolute http:// URL, not {url!r}")


def _attempt(callback: OutgoingCallback, timeout: float) -> Delivery:
    """Make one HTTP request for ``callback``; report failures in the result, never raise."""
    parts = urllib.parse.urlsplit(callback.url)
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    names = {name.lower() for name, _ in callback.headers}
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    status: int | None = None
    try:
        # Headers go out one by one, so duplicates and their order survive.
        connection.putrequest(
            callback.method, target, skip_host="host" in names, skip_accept_encoding=True
        )
        for name, value in callback.headers:
            connection.putheader(name, value)
        if "content-length" not in names and (
            callback.body or callback.method.upper() in _BODY_METHODS
        ):
            connection.putheader("Content-Length", str(len(callback.body)))
        connection.endheaders(callback.body or None)
        response = connection.getresponse()
        status = response.status
        body = response.read()
    # ValueError covers header names or values http.client refuses to send.
    except (OSError, http.client.HTTPException, ValueError) as exc:
        return Delivery(callback, status, b"", f"{type(exc).__name__}: {exc}")
    finally:
        connection.close()
    return Delivery(callback, status, body, None)


@attrs.frozen
class ReceivedCallback:
    """One request a :class:`CallbackReceiver` received."""

    method: str
    #: The raw path and query as received, when the server provides it (``REQUEST_URI``).
    target: str
    #: Header names are rebuilt from the WSGI environ, so their case is normalised.
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: The status answered, or ``None`` if the inner app failed.
    status: int | None = None

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


class CallbackReceiver:
    """A WSGI app that records every request it receives.

    It answers with a fixed reply, or delegates to an inner WSGI app (whose reply is buffered)
    and records the status that app answered with.
    """

    def __init__(
        self,
        app: WSGIApplication | None = None,
        *,
        status: int = 200,
        body: bytes = b"OK",
        content_type: str = "text/plain",
    ) -> None:
        self._app = app
        self._status = status
        self._status_line = f"{status} {http.client.responses.get(status, 'Unknown')}"
        self._body = body
        self._content_type = content_type
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._received: list[ReceivedCallback] = []

    @property
    def received(self) -> list[ReceivedCallback]:
        """A copy of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._received)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedCallback]:
        """Block until at least ``count`` requests arrived and return them all.

        Raises :class:`TimeoutError` if fewer arrived within ``timeout`` seconds.
        """
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._received) >= count, timeout):
                raise TimeoutError(
                    f"expected at least {count} callback(s) within {timeout:g} s, "
                    f"but {len(self._received)} arrived"
                )
            return list(self._received)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Record the request, then answer it."""
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        received = ReceivedCallback(
            method=environ["REQUEST_METHOD"],
            target=_target(environ),
            headers=_headers(environ),
            body=body,
        )
        if self._app is None:
            self._record(attrs.evolve(received, status=self._status))
            start_response(
                self._status_line,
                [("Content-Type", self._content_type), ("Content-Length", str(len(self._body)))],
            )
            return [self._body]
        inner_environ = dict(environ)
        inner_environ["wsgi.input"] = io.BytesIO(body)
        try:
            status, headers, reply = buffer_app(self._app, inner_environ)
        except Exception:
            self._record(received)
            raise
        self._record(attrs.evolve(received, status=int(status.split(" ", 1)[0])))
        start_response(status, headers)
        return [reply]

    def _record(self, received: ReceivedCallback) -> None:
        with self._arrived:
            self._received.append(received)
            self._arrived.notify_all()


def _target(environ: WSGIEnvironment) -> str:
    raw = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if raw:
        return str(raw)
    path = urllib.parse.quote(
        environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""), encoding="latin-1"
    )
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def _headers(environ: WSGIEnvironment) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            name = key[5:]
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            name = key
        else:
            continue
        headers.append((name.replace("_", "-").title(), str(value)))
    return tuple(headers)
