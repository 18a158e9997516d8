"""The default transport over real loopback sockets: TLS verification, the proxy tunnel,
keep-alive reuse and recovery, and how replies are read.

The gateway emulators (plain HTTP) cover the rest through the client: faults, timeouts,
redirects, refused connections.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from refundcore.errors import OutcomeUnknown, TransportError
from refundcore.models import HttpRequest, HttpResponse
from refundcore.transport import HttpTransport

PROVIDER = SimpleNamespace(id="testgw")


def _config(ca_bundle: str | None = None, read_timeout: float = 5.0) -> Any:
    return SimpleNamespace(connect_timeout=5.0, read_timeout=read_timeout, ca_bundle=ca_bundle)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        server.peers.append(self.client_address)
        path = self.path
        if path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(int(path.rpartition("=")[2])):
                self.wfile.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        # Read before replying: once the reply is out, the test may already have changed it.
        hang_up = server.close_after_reply
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Twice", "a")
        self.send_header("X-Twice", "b")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if hang_up:
            # Keep-alive was offered, yet the server hangs up once the reply is out: as
            # a gateway does with an idle connection.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.context = context
        self.peers: list[tuple[str, int]] = []
        # Counted at accept: a new connection may get the port of one just closed.
        self.connections = 0
        self.close_after_reply = False

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        self.connections += 1
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True)
        return sock, address

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (TEST-ONLY key)."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _serve(context: ssl.SSLContext | None) -> Iterator[_Server]:
    server = _Server(context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[_Server]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, certificate))
    yield from _serve(context)


@pytest.fixture
def plain_server() -> Iterator[_Server]:
    yield from _serve(None)


class _ConnectProxy:
    """A CONNECT-only proxy: records each CONNECT line and its Proxy-Authorization, then
    relays bytes both ways (or refuses with ``status``)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.seen: list[tuple[str, str | None]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client: socket.socket) -> None:
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
                _relay(client, upstream)

    def close(self) -> None:
        self._listener.close()


def _relay(one: socket.socket, other: socket.socket) -> None:
    ends = {one: other, other: one}
    while True:
        ready, _, _ = select.select(list(ends), [], [], 5)
        if not ready:
            return
        for sock in ready:
            data = sock.recv(65536)
            if not data:
                return
            ends[sock].sendall(data)


def _get(transport: HttpTransport, url: str, config: Any) -> HttpResponse:
    reply: HttpResponse = transport.refundcore_send_request(
        provider=PROVIDER, config=config, request=HttpRequest("GET", url)
    )
    return reply


def test_tls_is_verified_against_the_providers_ca_bundle(
    tls_server: _Server, certificate: tuple[Path, Path]
) -> None:
    transport = HttpTransport()
    url = f"https://localhost:{tls_server.port}/refunds/1"

    reply = _get(transport, url, _config(ca_bundle=str(certificate[0])))
    again = _get(transport, url, _config(ca_bundle=str(certificate[0])))

    assert (reply.status, reply.body, again.status) == (200, b'{"ok": true}', 200)
    assert reply.headers["x-twice"] == "a, b"
    assert tls_server.connections == 1, "the second request reuses the connection"
    transport.close()


def test_an_untrusted_certificate_is_a_transport_error_before_anything_is_sent(
    tls_server: _Server,
) -> None:
    with pytest.raises(TransportError, match="TLS handshake with testgw failed; nothing was sent"):
        _get(HttpTransport(), f"https://localhost:{tls_server.port}/x", _config())
    assert tls_server.peers == []


def test_https_goes_through_the_environment_proxy_by_connect(
    tls_server: _Server, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _ConnectProxy()
    monkeypatch.setenv("HTTPS_PROXY", f"http://shop%40x:p%3Ass@127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        reply = _get(
            HttpTransport(),
            f"https://localhost:{tls_server.port}/x",
            _config(ca_bundle=str(certificate[0])),
        )
    finally:
        proxy.close()
    assert reply.status == 200
    # "shop@x:p:ss", base64: the credentials as the URL gave them, decoded.
    assert proxy.seen == [
        (f"CONNECT localhost:{tls_server.port} HTTP/1.0", "Basic c2hvcEB4OnA6c3M=")
    ]


def test_a_proxy_refusing_the_tunnel_is_a_transport_error(
    tls_server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = _ConnectProxy(status=407)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    try:
        with pytest.raises(TransportError, match=r"could not connect to testgw; nothing was sent"):
            _get(HttpTransport(), f"https://localhost:{tls_server.port}/x", _config())
    finally:
        proxy.close()
    assert tls_server.peers == []


def test_an_https_proxy_url_is_refused_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "https://proxy.internal:3129")
    with pytest.raises(TransportError, match="HTTPS_PROXY must be an http:// proxy"):
        _get(HttpTransport(), "https://gateway.invalid/x", _config())


def test_an_idle_connection_the_gateway_closed_is_replaced_not_used(
    plain_server: _Server,
) -> None:
    transport = HttpTransport()
    url = f"http://127.0.0.1:{plain_server.port}/x"
    plain_server.close_after_reply = True
    assert _get(transport, url, _config()).status == 200
    plain_server.close_after_reply = False
    pool = transport._pool(f"http://127.0.0.1:{plain_server.port}", None)
    idle = pool._idle[0]
    assert idle.sock is not None
    assert select.select([idle.sock], [], [], 2)[0], "the server hung up"

    assert _get(transport, url, _config()).status == 200
    assert plain_server.connections == 2, "a new connection, not an error"
    transport.close()


def test_a_reply_of_unknown_length_is_read_whole_up_to_the_limit(
    plain_server: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    import refundcore.transport

    transport = HttpTransport()
    base = f"http://127.0.0.1:{plain_server.port}"
    assert _get(transport, f"{base}/chunked?n=3", _config()).body == b"x" * 3072
    monkeypatch.setattr(refundcore.transport, "MAX_RESPONSE_BYTES", 2048)
    with pytest.raises(OutcomeUnknown, match=r"cut short.*larger than 2048 bytes"):
        _get(transport, f"{base}/chunked?n=3", _config())
    transport.close()


def test_an_unusable_url_is_a_transport_error(plain_server: _Server) -> None:
    with pytest.raises(TransportError, match=r"unusable URL 'ftp://127\.0\.0\.1': not http"):
        _get(HttpTransport(), "ftp://127.0.0.1/x", _config())
    with pytest.raises(TransportError, match=r"ca_bundle '/nonexistent.pem' cannot be used"):
        _get(HttpTransport(), "https://127.0.0.1/x", _config(ca_bundle="/nonexistent.pem"))
    with pytest.raises(TransportError, match="cannot be written; nothing was sent"):
        _get(HttpTransport(), f"http://127.0.0.1:{plain_server.port}/a b", _config())
    assert plain_server.peers == []
