"""A stand-in gateway on loopback, plain HTTP or TLS, for the sync and async transport
tests: it keeps every request as it arrived and answers by path, so a test can ask for
the reply it is about (slow, hung up, chunked, redirected, sized) and check what was
sent, and how often."""

from __future__ import annotations

import http.server
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NamedTuple


def gateway_settings(ca_bundle: str | None = None, read_timeout: float = 5.0) -> Any:
    """The settings a transport reads from a provider's config."""
    return SimpleNamespace(connect_timeout=5.0, read_timeout=read_timeout, ca_bundle=ca_bundle)


class Seen(NamedTuple):
    """One request as the gateway read it."""

    method: str
    path: str
    requestline: str
    #: In the order sent, repeats kept.
    headers: list[tuple[str, str]]
    body: bytes


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        server: Gateway = self.server  # type: ignore[assignment]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        server.seen.append(
            Seen(self.command, self.path, self.requestline, list(self.headers.items()), body)
        )
        path = self.path
        if path.startswith("/slow"):
            time.sleep(1.0)
        if path.startswith("/hang-up"):
            self.close_connection = True
            return
        if path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(int(path.rpartition("=")[2])):
                self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        if path.startswith("/redirect"):
            # A Location requests cannot decode (not UTF-8) for /redirect-odd.
            location = b"/\xff" if path == "/redirect-odd" else b"/elsewhere"
            head = b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 5"
            self.wfile.write(head + b"\r\n\r\nmoved")
            return
        if path.startswith("/sized"):
            sized = b"y" * int(path.rpartition("=")[2])
            self.send_response(200)
            self.send_header("Content-Length", str(len(sized)))
            self.end_headers()
            self.wfile.write(sized)
            return
        # Read before replying: once the reply is out, the test may already have changed it.
        hang_up = server.close_after_reply
        reply = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Twice", "a")
        self.send_header("X-Twice", "b")
        self.send_header("Set-Cookie", "session=abc; Path=/")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        if hang_up:
            # Keep-alive was offered, yet the server hangs up once the reply is out: as
            # a gateway does with an idle connection.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Gateway(http.server.ThreadingHTTPServer):
    """The server; ``context`` makes it answer over TLS."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.seen: list[Seen] = []
        # Counted at accept: a new connection may get the port of one just closed.
        self.connections = 0
        self.close_after_reply = False
        self.hung_up = threading.Event()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        self.connections += 1
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.hung_up.set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused handshake is what some tests are about

    @property
    def port(self) -> int:
        return int(self.server_address[1])


def tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A server-side TLS context presenting ``certificate`` (its file and key file)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    return context


def serve(context: ssl.SSLContext | None) -> Iterator[Gateway]:
    """A running gateway for as long as the generator is (a fixture's body)."""
    server = Gateway(context)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Listener:
    """A loopback listener handing each connection to :meth:`handle` on a thread of its
    own, for servers that speak below HTTP (a proxy, a gateway that misbehaves)."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self.handle, args=(conn,), daemon=True).start()

    def handle(self, conn: socket.socket) -> None:
        """Serve one connection (and close it)."""
        raise NotImplementedError

    def close(self) -> None:
        self._listener.close()


class ConnectProxy(Listener):
    """A CONNECT-only proxy: records each CONNECT line and its Proxy-Authorization, then
    relays bytes both ways (or refuses with ``status``). With ``context`` it is itself
    reached over TLS."""

    def __init__(self, status: int = 200, context: ssl.SSLContext | None = None) -> None:
        self.status = status
        self.context = context
        self.seen: list[tuple[str, str | None]] = []
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        if self.context is not None:
            try:
                client = self.context.wrap_socket(client, server_side=True)
            except OSError:
                client.close()
                return
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                head += client.recv(4096)
            lines = head.decode("latin-1").split("\r\n")
            auth = next(
                (
                    line.partition(":")[2].strip()
                    for line in lines
                    if line.lower().startswith("proxy-authorization:")
                ),
                None,
            )
            self.seen.append((lines[0], auth))
            if self.status != 200:
                client.sendall(
                    f"HTTP/1.1 {self.status} Refused\r\nContent-Length: 0\r\n\r\n".encode()
                )
                return
            host, _, port = lines[0].split()[1].rpartition(":")
            with socket.create_connection((host, int(port))) as upstream:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                relay(client, upstream)


def relay(one: socket.socket, other: socket.socket) -> None:
    """Copy bytes both ways until either end closes or both are quiet for 5 s."""
    ends = {one: other, other: one}
    while True:
        # A TLS socket may hold decrypted bytes select cannot see.
        ready = [s for s in ends if getattr(s, "pending", lambda: 0)()]
        if not ready:
            ready, _, _ = select.select(list(ends), [], [], 5)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            ends[sock].sendall(data)
