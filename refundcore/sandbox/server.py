"""Serve a WSGI app on a loopback port in background threads, with injectable network faults.

The sandbox stands in for a payment gateway (or for a merchant's callback endpoint) in tests.
Every request is recorded exactly as received, and per-route faults let a test reproduce the
ways real gateways misbehave: slow answers, dropped connections, garbage, truncated bodies,
error statuses, and requests that were (or were not) processed before the failure.
"""

from __future__ import annotations

import contextlib
import fnmatch
import http.server
import io
import json
import os
import re
import selectors
import socket
import socketserver
import threading
import time
import urllib.parse
from http import HTTPStatus
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import attrs

from ..logs import EventLogger

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed import OptExcInfo
    from _typeshed.wsgi import WSGIApplication, WSGIEnvironment
    from typing_extensions import Self

__all__ = ["Fault", "RecordedRequest", "SandboxServer", "buffer_app", "serve"]

_logger = EventLogger("refundcore.sandbox")

# Mirrors the request-line limit of http.server, applied to chunk-size and trailer lines.
_MAX_LINE = 65536
_DIGITS = re.compile(r"[0-9]+")
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]+")
# The server frames every response itself, so the app must not dictate these.
_SERVER_CONTROLLED_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
_ERROR_BODY = b"Internal Server Error\n"


@attrs.frozen
class Fault:
    """What to do to requests on one route instead of (or besides) answering normally.

    When several effects are set, ``drop`` wins over ``garbage``, which wins over ``status``;
    ``truncate`` then cuts whatever reply remains. With ``reach_app=False`` and no replacement
    reply (``garbage`` or ``status``) there is nothing to answer, so the connection is closed
    as with ``drop``.
    """

    #: Seconds to sleep after the app ran (if it does) and before writing the response.
    delay: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    #: Answer with this HTTP status and ``body`` instead of the app's reply.
    status: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(
            attrs.validators.and_(attrs.validators.ge(100), attrs.validators.le(599))
        ),
    )
    #: Body sent with ``status``; labelled application/json if it parses as JSON, else text/plain.
    body: bytes = b""
    #: Close the connection without writing any response.
    drop: bool = False
    #: Answer 200 with random bytes that are not JSON, labelled ``application/json``.
    garbage: bool = False
    #: Send the status and headers with the full Content-Length, then half the body, then close.
    truncate: bool = False
    #: Whether the app still handles the request (the gateway processed it) before the fault.
    reach_app: bool = True
    #: Apply to this many matching requests, then remove the fault; ``None`` = until cleared.
    times: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )


@attrs.frozen
class RecordedRequest:
    """One request as the sandbox read it off the wire, before any fault was applied."""

    method: str
    #: The raw request target as received: path plus ``?query`` if any.
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@attrs.frozen
class _Reply:
    status: int
    reason: str | None
    headers: tuple[tuple[str, str], ...]
    body: bytes


class _MalformedRequestError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class _ClientGoneError(Exception):
    """The client closed the connection before sending the whole request."""


class _State:
    """What the connection threads share: the app, the faults and the request log."""

    def __init__(self, app: WSGIApplication) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._faults: dict[str, tuple[Fault, int | None]] = {}
        self._requests: list[RecordedRequest] = []

    def inject(self, path: str, fault: Fault) -> None:
        with self._lock:
            self._faults[path] = (fault, fault.times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _route(self, path: str) -> str | None:
        if path in self._faults:
            return path
        for pattern in self._faults:
            if pattern != "*" and _is_pattern(pattern) and fnmatch.fnmatchcase(path, pattern):
                return pattern
        return "*" if "*" in self._faults else None

    def take_fault(self, path: str) -> Fault | None:
        """Return the fault for ``path`` and count this use against its ``times``."""
        with self._lock:
            key = self._route(path)
            entry = None if key is None else self._faults.get(key)
            if key is None or entry is None:
                return None
            fault, remaining = entry
            if remaining is not None:
                if remaining <= 1:
                    del self._faults[key]
                else:
                    self._faults[key] = (fault, remaining - 1)
            return fault

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()


class _HTTPServer(socketserver.TCPServer):
    """A TCP server running one daemon thread per connection and able to cut them all off."""

    # Lets a test restart a sandbox on the port it just stopped despite TIME_WAIT sockets.
    allow_reuse_address = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of concurrent clients,
    # which then stall for a one-second retransmit.
    request_queue_size = 128

    def __init__(self, host: str, port: int, state: _State) -> None:
        if ":" in host:
            self.address_family = socket.AF_INET6
        self.state = state
        self.stopping = threading.Event()
        self.accepted = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        # Kept apart from the sockets: a thread drops its socket a moment before it ends,
        # and stop() must still wait for it.
        self._threads: list[threading.Thread] = []
        # Written to by stop_serving() so the accept loop wakes at once instead of polling.
        # Made first: a port that cannot be bound closes the server (server_close) at once.
        self._wakeup_reader, self._wakeup_writer = socket.socketpair()
        super().__init__((host, port), _Handler)
        self.host, self.port = self.socket.getsockname()[:2]

    def serve_until_stopped(self) -> None:
        """Accept connections until :meth:`stop_serving` is called."""
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wakeup_reader, selectors.EVENT_READ)
            while True:
                selector.select()
                if self.stopping.is_set():
                    return
                try:
                    request, client_address = self.get_request()
                except OSError:
                    # The client gave up between the readiness report and accept().
                    continue
                self.process_request(request, client_address)

    def stop_serving(self) -> None:
        """Make :meth:`serve_until_stopped` return and cut delay faults short."""
        self.stopping.set()
        self._wakeup_writer.send(b"\0")

    def server_close(self) -> None:
        super().server_close()
        self._wakeup_reader.close()
        self._wakeup_writer.close()

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        connection = cast(socket.socket, request)
        thread = threading.Thread(
            target=self._serve_connection,
            args=(connection, client_address),
            name=f"refundcore-sandbox-{self.port}-connection",
            daemon=True,
        )
        with self._lock:
            self.accepted += 1
            self._connections.add(connection)
            self._threads = [alive for alive in self._threads if alive.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _serve_connection(self, connection: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(connection, client_address)
        except Exception:
            # Resets and shutdowns are routine when tests inject faults or stop the server;
            # socketserver's handle_error() would print each one to stderr.
            _logger.debug(
                "connection ended with an error", client=str(client_address), exc_info=True
            )
        finally:
            with self._lock:
                self._connections.discard(connection)
            self.shutdown_request(connection)

    def sever_connections(self) -> list[threading.Thread]:
        """Shut down every open connection and return the threads serving them."""
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        return threads


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "refundcore-sandbox"
    sys_version = ""
    # Headers and body go out in separate writes; Nagle plus delayed ACKs would stall
    # every keep-alive response by tens of milliseconds.
    disable_nagle_algorithm = True

    @property
    def _server(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("request served", client=self.address_string(), request=format % args)

    def handle_one_request(self) -> None:
        # Replaces the superclass version so that any method reaches the app instead of
        # needing a do_<METHOD> attribute.
        self.raw_requestline = self.rfile.readline(_MAX_LINE + 1)
        if len(self.raw_requestline) > _MAX_LINE:
            self.requestline = self.request_version = self.command = ""
            self.send_error(HTTPStatus.REQUEST_URI_TOO_LONG)
            return
        if not self.raw_requestline:
            self.close_connection = True
            return
        if not self.parse_request():
            return
        self._handle_request()
        if self._server.stopping.is_set():
            self.close_connection = True

    def _handle_request(self) -> None:
        # parse_request() rewrites a leading "//" in self.path; the request line is untouched.
        target = self.requestline.split()[1]
        try:
            body = self._read_body()
        except _ClientGoneError:
            self.close_connection = True
            return
        except _MalformedRequestError as exc:
            self.send_error(exc.status, str(exc))
            return
        state = self._server.state
        state.record(
            RecordedRequest(
                method=self.command,
                target=target,
                headers=tuple((name, str(value)) for name, value in self.headers.items()),
                body=body,
            )
        )
        path, query = _split_target(target)
        fault = state.take_fault(path)
        reply = None
        if fault is None or fault.reach_app:
            reply = self._run_app(self._environ(target, path, query, body))
        if fault is not None:
            if fault.delay and self._server.stopping.wait(fault.delay):
                self.close_connection = True
                return
            reply = _apply_fault(fault, reply)
        if reply is None:
            self.close_connection = True
            return
        self._send(reply, truncate=fault is not None and fault.truncate)

    def _read_body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise _MalformedRequestError(
                    HTTPStatus.NOT_IMPLEMENTED, f"unsupported Transfer-Encoding {encoding!r}"
                )
            return self._read_chunked()
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        if len(set(lengths)) != 1 or not _DIGITS.fullmatch(lengths[0].strip()):
            raise _MalformedRequestError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
        return self._read_exactly(int(lengths[0]))

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip()
            if not _HEX_DIGITS.fullmatch(size_text):
                raise _MalformedRequestError(HTTPStatus.BAD_REQUEST, "invalid chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            chunks.append(self._read_exactly(size))
            if self._read_line().strip():
                raise _MalformedRequestError(HTTPStatus.BAD_REQUEST, "chunk longer than its size")
        # Trailer fields carry nothing the sandbox uses; they end at an empty line.
        while self._read_line().strip():
            pass
        return b"".join(chunks)

    def _read_line(self) -> bytes:
        line = self.rfile.readline(_MAX_LINE + 1)
        if line.endswith(b"\n"):
            return line
        if len(line) > _MAX_LINE:
            raise _MalformedRequestError(HTTPStatus.BAD_REQUEST, "line too long")
        raise _ClientGoneError

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise _ClientGoneError
        return data

    def _environ(self, target: str, path: str, query: str, body: bytes) -> WSGIEnvironment:
        environ: WSGIEnvironment = {
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            # PEP 3333: native strings whose code points are the raw (decoded) bytes.
            "PATH_INFO": urllib.parse.unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "REQUEST_URI": target,
            "RAW_URI": target,
            "SERVER_NAME": str(self._server.host),
            "SERVER_PORT": str(self._server.port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": str(self.client_address[0]),
            "REMOTE_PORT": str(self.client_address[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        has_body = False
        for name, value in self.headers.items():
            key = name.upper().replace("-", "_")
            if key in ("CONTENT_LENGTH", "TRANSFER_ENCODING"):
                # The body was de-chunked, so its real length is what the app needs.
                has_body = True
            elif key == "CONTENT_TYPE":
                environ[key] = str(value)
            elif f"HTTP_{key}" in environ:
                environ[f"HTTP_{key}"] += f",{value}"
            else:
                environ[f"HTTP_{key}"] = str(value)
        if has_body:
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ

    def _run_app(self, environ: WSGIEnvironment) -> _Reply:
        # Middleware may replace environ entries (wsgiref.validate wraps wsgi.errors).
        errors, target = environ["wsgi.errors"], environ["REQUEST_URI"]
        try:
            reply = _call_app(self._server.state.app, environ)
        except Exception:
            _logger.exception("WSGI app failed", method=self.command, target=target)
            reply = _Reply(
                status=HTTPStatus.INTERNAL_SERVER_ERROR,
                reason=None,
                headers=(("Content-Type", "text/plain; charset=utf-8"),),
                body=_ERROR_BODY,
            )
        if errors.getvalue():
            _logger.warning("WSGI app wrote to wsgi.errors", errors=errors.getvalue().rstrip())
        return reply

    def _send(self, reply: _Reply, *, truncate: bool) -> None:
        body = reply.body
        declared = len(body)
        if truncate:
            self.close_connection = True
            # An empty body cannot be cut short, so claim a byte that never comes.
            declared = max(declared, 1)
            body = body[: len(body) // 2]
        self.send_response(reply.status, reply.reason)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(declared))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _is_pattern(path: str) -> bool:
    return any(char in path for char in "*?[")


def _split_target(target: str) -> tuple[str, str]:
    """Split a request target into its raw path and query string."""
    if target.startswith("/"):
        path, _, query = target.partition("?")
        return path, query
    # Absolute form ("http://host/path?query"), as sent to proxies.
    parts = urllib.parse.urlsplit(target)
    return parts.path or "/", parts.query


def buffer_app(
    app: WSGIApplication, environ: WSGIEnvironment
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run a WSGI ``app`` to completion; return its status line, headers and whole body.

    The app's iterable is always closed. Raises whatever the app raises, and
    :class:`RuntimeError` if it breaks the ``start_response`` protocol.
    """
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: OptExcInfo | None = None
    ) -> Callable[[bytes], object]:
        # Nothing is sent before the app returns, so a later call with exc_info may
        # always replace the earlier status (PEP 3333).
        if started and exc_info is None:
            raise RuntimeError("start_response() called twice without exc_info")
        started[:] = [(status, headers)]
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("WSGI app returned without calling start_response()")
    status, headers = started[0]
    return status, headers, b"".join(chunks)


def _call_app(app: WSGIApplication, environ: WSGIEnvironment) -> _Reply:
    status, headers, body = buffer_app(app, environ)
    code, _, reason = status.partition(" ")
    return _Reply(
        status=int(code),
        reason=reason or None,
        headers=tuple(
            (name, value)
            for name, value in headers
            if name.lower() not in _SERVER_CONTROLLED_HEADERS
        ),
        body=body,
    )


def _apply_fault(fault: Fault, reply: _Reply | None) -> _Reply | None:
    """Return the reply ``fault`` turns ``reply`` into; ``None`` means send nothing."""
    if fault.drop:
        return None
    if fault.garbage:
        # "<" can never start a JSON text, so the body is invalid JSON whatever follows.
        return _Reply(
            status=HTTPStatus.OK,
            reason=None,
            headers=(("Content-Type", "application/json"),),
            body=b"<" + os.urandom(31),
        )
    if fault.status is not None:
        return _Reply(
            status=fault.status,
            reason=None,
            headers=(("Content-Type", _sniff_content_type(fault.body)),),
            body=fault.body,
        )
    return reply


def _sniff_content_type(body: bytes) -> str:
    try:
        json.loads(body)
    except ValueError:
        return "text/plain; charset=utf-8"
    return "application/json"


class SandboxServer:
    """Serves a WSGI app over HTTP/1.1 on a loopback port, one daemon thread per connection.

    Responses are buffered and always carry Content-Length; keep-alive connections are
    reused. Faults injected per path alter the replies, and every request is recorded.
    """

    def __init__(self, app: WSGIApplication, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._state = _State(app)
        self._lifecycle_lock = threading.Lock()
        self._server: _HTTPServer | None = None
        self._accept_thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The URL the server answers on, such as ``http://127.0.0.1:PORT``."""
        server = self._running()
        host = f"[{server.host}]" if ":" in server.host else server.host
        return f"http://{host}:{server.port}"

    @property
    def connections_accepted(self) -> int:
        """How many TCP connections this run of the server accepted, to check keep-alive."""
        return self._running().accepted

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the recorded requests, in arrival order."""
        return self._state.requests()

    def clear_requests(self) -> None:
        """Forget the recorded requests."""
        self._state.clear_requests()

    def inject(self, path: str, fault: Fault) -> None:
        """Apply ``fault`` to requests whose path (query excluded) is ``path``.

        A ``path`` with ``*``, ``?`` or ``[`` in it is an :mod:`fnmatch` pattern
        (``/api/*/refund``; ``*`` matches ``/`` too); a path's own fault wins over a
        pattern's, and ``"*"`` matches every path no other fault matches. A later
        injection for the same path replaces the earlier one.
        """
        self._state.inject(path, fault)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._state.clear_faults()

    def start(self) -> Self:
        """Bind the port and start serving in the background; return ``self``."""
        with self._lifecycle_lock:
            if self._server is not None:
                raise RuntimeError("sandbox server is already running")
            server = _HTTPServer(self._host, self._port, self._state)
            thread = threading.Thread(
                target=server.serve_until_stopped,
                name=f"refundcore-sandbox-{server.port}-accept",
                daemon=True,
            )
            thread.start()
            self._server, self._accept_thread = server, thread
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and close every connection, waiting up to ``timeout`` for threads.

        Idle keep-alive connections are shut down and delay faults are cut short. Calling
        ``stop()`` on a stopped server does nothing.
        """
        with self._lifecycle_lock:
            server, thread = self._server, self._accept_thread
            self._server = self._accept_thread = None
        if server is None or thread is None:
            return
        deadline = time.monotonic() + timeout
        server.stop_serving()
        thread.join(timeout)
        server.server_close()
        for connection_thread in server.sever_connections():
            connection_thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _running(self) -> _HTTPServer:
        server = self._server
        if server is None:
            raise RuntimeError("sandbox server is not running; call start() first")
        return server


def serve(app: WSGIApplication, *, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Return an unstarted :class:`SandboxServer` for ``app``, for use as ``with serve(app)``."""
    return SandboxServer(app, host=host, port=port)
