"""The default transport over real loopback sockets: TLS verification, proxies,
keep-alive reuse and recovery, how replies are read, and a caller's own
``requests.Session`` (used as given, refused when it could skip verification or resend).

The gateway emulators (plain HTTP) cover the rest through the client: faults, timeouts,
redirects, refused connections.
"""

from __future__ import annotations

import io
import logging
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from urllib3.util.retry import Retry

from refundcore import Money, RefundClient, RefundStatus
from refundcore.errors import ConfigError, OutcomeUnknown, TransportError
from refundcore.models import HttpRequest, HttpResponse
from refundcore.sandbox import SandboxRun
from refundcore.transport import HttpTransport
from tests.loopback_gateway import ConnectProxy, Gateway, Listener, gateway_settings, tls_context

PROVIDER = SimpleNamespace(id="testgw")


@pytest.fixture(autouse=True)
def _no_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    proxy = ConnectProxy()
    yield proxy
    proxy.close()


def _send(
    transport: HttpTransport,
    url: str,
    config: Any,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> HttpResponse:
    reply: HttpResponse = transport.refundcore_send_request(
        provider=PROVIDER, config=config, request=HttpRequest(method, url, headers or {}, body)
    )
    return reply


# -- TLS ---------------------------------------------------------------------------------


def test_tls_is_verified_against_the_providers_ca_bundle(
    tls_server: Gateway, tls_files: tuple[Path, Path]
) -> None:
    transport = HttpTransport()
    url = f"https://localhost:{tls_server.port}/refunds/1"

    reply = _send(transport, url, gateway_settings(ca_bundle=str(tls_files[0])))
    again = _send(transport, url, gateway_settings(ca_bundle=str(tls_files[0])))

    assert (reply.status, reply.body, again.status) == (200, b'{"ok": true}', 200)
    assert reply.headers["x-twice"] == "a, b"
    assert tls_server.connections == 1, "the second request reuses the connection"
    transport.close()


def test_an_untrusted_certificate_is_a_transport_error_before_anything_is_sent(
    tls_server: Gateway,
) -> None:
    with pytest.raises(
        TransportError,
        match=r"TLS handshake with testgw failed; nothing was sent \(SSLCertVerificationError",
    ):
        _send(HttpTransport(), f"https://localhost:{tls_server.port}/x", gateway_settings())
    assert tls_server.seen == []


def test_the_environments_ca_bundle_is_honoured_as_requests_does(
    tls_server: Gateway, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_files[0]))
    reply = _send(HttpTransport(), f"https://localhost:{tls_server.port}/x", gateway_settings())
    assert reply.status == 200


def test_tls_to_a_plain_http_port_fails_in_the_handshake(plain_server: Gateway) -> None:
    with pytest.raises(TransportError, match="TLS handshake with testgw failed; nothing was sent"):
        _send(HttpTransport(), f"https://127.0.0.1:{plain_server.port}/x", gateway_settings())
    assert plain_server.seen == []


# -- proxies -----------------------------------------------------------------------------


def test_https_goes_through_the_environment_proxy_by_connect(
    tls_server: Gateway,
    tls_files: tuple[Path, Path],
    proxy: ConnectProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://shop%40x:p%3Ass@127.0.0.1:{proxy.port}")
    reply = _send(
        HttpTransport(),
        f"https://localhost:{tls_server.port}/x",
        gateway_settings(ca_bundle=str(tls_files[0])),
    )
    assert reply.status == 200
    # "shop@x:p:ss", base64: the credentials as the URL gave them, decoded.
    [(connect, auth)] = proxy.seen
    assert connect.startswith(f"CONNECT localhost:{tls_server.port} HTTP/1.")
    assert auth == "Basic c2hvcEB4OnA6c3M="


def test_no_proxy_sends_directly(
    tls_server: Gateway,
    tls_files: tuple[Path, Path],
    proxy: ConnectProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.setenv("NO_PROXY", "direct.example,localhost")
    reply = _send(
        HttpTransport(),
        f"https://localhost:{tls_server.port}/x",
        gateway_settings(ca_bundle=str(tls_files[0])),
    )
    assert reply.status == 200
    assert proxy.seen == []


def test_an_https_proxy_is_reached_over_verified_tls(
    tls_server: Gateway, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``HTTPS_PROXY=https://…``, as requests supports it: TLS to the proxy, verified, and
    TLS to the gateway inside the tunnel, verified too."""
    tls_proxy = ConnectProxy(context=tls_context(tls_files))
    monkeypatch.setenv("HTTPS_PROXY", f"https://localhost:{tls_proxy.port}")
    url = f"https://localhost:{tls_server.port}/x"
    try:
        reply = _send(HttpTransport(), url, gateway_settings(ca_bundle=str(tls_files[0])))
        assert reply.status == 200
        [(connect, _)] = tls_proxy.seen
        assert connect.startswith(f"CONNECT localhost:{tls_server.port} HTTP/1.")
        # The proxy's own tls_files is checked: untrusted, nothing goes through it.
        with pytest.raises(TransportError, match="through the proxy; nothing was sent"):
            _send(HttpTransport(), url, gateway_settings())
    finally:
        tls_proxy.close()
    assert len(tls_proxy.seen) == 1 and len(tls_server.seen) == 1


def test_a_proxy_refusing_the_tunnel_is_a_transport_error(
    tls_server: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    refusing = ConnectProxy(status=407)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{refusing.port}")
    try:
        with pytest.raises(
            TransportError,
            match=r"could not reach testgw through the proxy; nothing was sent \(OSError: Tunnel "
            r"connection failed: 407",
        ):
            _send(HttpTransport(), f"https://localhost:{tls_server.port}/x", gateway_settings())
    finally:
        refusing.close()
    assert tls_server.seen == []


def test_an_unreachable_proxy_is_a_transport_error(
    tls_server: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{_free_port()}")
    with pytest.raises(TransportError, match="through the proxy; nothing was sent"):
        _send(HttpTransport(), f"https://localhost:{tls_server.port}/x", gateway_settings())
    assert tls_server.seen == []


# -- connections and replies -------------------------------------------------------------


def test_an_idle_connection_the_gateway_closed_is_replaced_not_used(
    plain_server: Gateway,
) -> None:
    transport = HttpTransport()
    url = f"http://127.0.0.1:{plain_server.port}/x"
    plain_server.close_after_reply = True
    assert _send(transport, url, gateway_settings()).status == 200
    plain_server.close_after_reply = False
    assert plain_server.hung_up.wait(5), "the server hung up"
    time.sleep(0.05)  # the hang-up reaches the client's socket

    assert _send(transport, url, gateway_settings()).status == 200
    assert plain_server.connections == 2, "a new connection, not an error"
    transport.close()


def test_a_reply_of_unknown_length_is_read_whole_up_to_the_limit(
    plain_server: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    import refundcore.transport

    transport = HttpTransport()
    base = f"http://127.0.0.1:{plain_server.port}"
    assert _send(transport, f"{base}/chunked?n=3", gateway_settings()).body == b"x" * 3072
    monkeypatch.setattr(refundcore.transport, "MAX_RESPONSE_BYTES", 2048)
    with pytest.raises(OutcomeUnknown, match=r"cut short.*larger than 2048 bytes"):
        _send(transport, f"{base}/chunked?n=3", gateway_settings())
    # A declared length over the limit is refused before reading.
    with pytest.raises(OutcomeUnknown, match=r"cut short.*larger than 2048 bytes"):
        _send(transport, f"{base}/sized?n=2049", gateway_settings())
    assert _send(transport, f"{base}/sized?n=2048", gateway_settings()).body == b"y" * 2048
    transport.close()


def test_redirects_are_replies_not_followed(
    plain_server: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    import refundcore.transport

    transport = HttpTransport()
    base = f"http://127.0.0.1:{plain_server.port}"
    reply = _send(transport, f"{base}/redirect", gateway_settings(), method="POST", body=b"refund")
    assert (reply.status, reply.headers["location"], reply.body) == (302, "/elsewhere", b"moved")
    # A Location requests' redirect bookkeeping chokes on: the reply still arrives.
    assert _send(transport, f"{base}/redirect-odd", gateway_settings(), method="POST").status == 302
    assert [(method, path) for method, path, *_ in plain_server.seen] == [
        ("POST", "/redirect"),
        ("POST", "/redirect-odd"),
    ]
    # The size limit holds for a 3xx too (requests would read its body whole).
    monkeypatch.setattr(refundcore.transport, "MAX_RESPONSE_BYTES", 4)
    with pytest.raises(OutcomeUnknown, match="larger than 4 bytes"):
        _send(transport, f"{base}/redirect", gateway_settings(), method="POST")
    transport.close()


def test_the_gateway_sees_the_plugins_headers_and_no_cookies(plain_server: Gateway) -> None:
    transport = HttpTransport()
    url = f"http://127.0.0.1:{plain_server.port}/x"
    _send(transport, url, gateway_settings(), method="POST", headers={"X-Sig": "s1"}, body=b"{}")
    _send(transport, url, gateway_settings(), method="POST", headers={"X-Sig": "s2"}, body=b"{}")
    first, second = (dict(seen.headers) for seen in plain_server.seen)
    assert first["X-Sig"] == "s1" and first["User-Agent"] == "refundcore"
    assert "Cookie" not in second, "the gateway's Set-Cookie is not sent back"
    assert first.get("Accept-Encoding", "identity") == "identity"
    transport.close()


def test_a_netrc_entry_does_not_replace_the_signed_authorization(
    plain_server: Gateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login user password pass\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    _send(
        HttpTransport(),
        f"http://127.0.0.1:{plain_server.port}/x",
        gateway_settings(),
        headers={"Authorization": "HMAC signed"},
    )
    assert dict(plain_server.seen[0].headers)["Authorization"] == "HMAC signed"


class _RawGateway(Listener):
    """A listener that treats every connection one way: ``hang_up`` or ``reset`` once
    the request head has arrived, ``reset_at_once`` or ``close_at_once`` before reading
    anything (so before a TLS handshake), ``silent`` (reads, never answers)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.requests = 0
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            if not self.behaviour.endswith("_at_once"):
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                self.requests += 1
                if self.behaviour == "silent":
                    while conn.recv(4096):  # until the client gives up
                        pass
                    return
            if self.behaviour.startswith("reset"):
                # Closing with a zero linger sends a reset instead of a clean end.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.fixture
def raw_gateway() -> Iterator[Any]:
    made: list[_RawGateway] = []

    def make(behaviour: str) -> _RawGateway:
        made.append(_RawGateway(behaviour))
        return made[-1]

    yield make
    for gateway in made:
        gateway.close()


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        # Which of the two the client sees is the kernel's race between the request's
        # last bytes and the gateway's FIN or RST; either way the request was written.
        ("hang_up", r"dropped after sending \((RemoteDisconnected|ConnectionResetError)"),
        ("reset", r"dropped after sending \((RemoteDisconnected|ConnectionResetError)"),
        ("silent", r"no reply from testgw within 0\.3s after sending"),
    ],
)
def test_a_failure_after_the_request_was_written_is_an_unknown_outcome(
    raw_gateway: Any, behaviour: str, message: str
) -> None:
    gateway = raw_gateway(behaviour)
    with pytest.raises(OutcomeUnknown, match=message):
        _send(
            HttpTransport(),
            f"http://127.0.0.1:{gateway.port}/x",
            gateway_settings(read_timeout=0.3),
            method="POST",
            body=b"refund",
        )
    assert gateway.requests == 1, "sent once, never again"


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        # The reset may reach the client as ECONNRESET or, mid-setup, ENOTCONN.
        (
            "reset_at_once",
            r"could not connect to testgw; nothing was sent \((ConnectionReset|OS)Error",
        ),
        ("close_at_once", r"TLS handshake with testgw failed; nothing was sent \(SSLEOFError"),
    ],
)
def test_a_connection_lost_in_the_tls_handshake_sent_nothing(
    raw_gateway: Any, behaviour: str, message: str
) -> None:
    """The same resets and ends of file as above, but before the request could be
    written: the transport tells them apart by where they happened."""
    gateway = raw_gateway(behaviour)
    with pytest.raises(TransportError, match=message):
        _send(
            HttpTransport(),
            f"https://127.0.0.1:{gateway.port}/x",
            gateway_settings(),
            method="POST",
        )
    assert gateway.requests == 0


def test_a_refused_connection_sent_nothing() -> None:
    with pytest.raises(
        TransportError,
        match=r"could not connect to testgw; nothing was sent \(ConnectionRefusedError",
    ):
        _send(HttpTransport(), f"http://127.0.0.1:{_free_port()}/x", gateway_settings())


def test_unusable_urls_bundles_and_proxies_are_transport_errors(
    plain_server: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(TransportError, match=r"unusable URL or proxy; nothing was sent.*ftp"):
        _send(HttpTransport(), "ftp://127.0.0.1/x", gateway_settings())
    with pytest.raises(TransportError, match=r"unusable URL or proxy; nothing was sent"):
        _send(HttpTransport(), "http:///x", gateway_settings())
    with pytest.raises(TransportError, match=r"ca_bundle '/nonexistent.pem' cannot be used"):
        _send(
            HttpTransport(), "https://127.0.0.1/x", gateway_settings(ca_bundle="/nonexistent.pem")
        )
    with pytest.raises(TransportError, match=r"could not connect to testgw; nothing was sent"):
        _send(HttpTransport(), "http://gateway.invalid/x", gateway_settings())
    with pytest.raises(TransportError, match=r"cannot be written; nothing was sent"):
        _send(
            HttpTransport(), f"http://127.0.0.1:{plain_server.port}/x", gateway_settings(), "GET\n"
        )
    monkeypatch.setenv("HTTP_PROXY", "socks5://127.0.0.1:1")
    # Without PySocks requests cannot use the proxy at all; with it (selenium brings it
    # in) the proxy refuses the connection. Either way nothing reached the gateway.
    with pytest.raises(
        TransportError,
        match=r"(unusable URL or proxy|could not connect to testgw); nothing was sent",
    ):
        _send(HttpTransport(), f"http://127.0.0.1:{plain_server.port}/x", gateway_settings())
    assert plain_server.seen == []


# -- the caller's own session ------------------------------------------------------------


class _CountingAdapter(HTTPAdapter):
    def __init__(self) -> None:
        super().__init__(max_retries=0)
        self.sent: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(str(request.url))
        return super().send(request, *args, **kwargs)


def test_the_callers_session_is_used_as_given(plain_server: Gateway) -> None:
    session = requests.Session()
    session.headers["X-Merchant"] = "shop-1"
    session.headers["Content-Type"] = "text/plain"
    hooked: list[bytes] = []
    session.hooks["response"].append(lambda response, **_: hooked.append(response.content))
    adapter = _CountingAdapter()
    base = f"http://127.0.0.1:{plain_server.port}"
    session.mount(base, adapter)
    transport = HttpTransport(session=session)

    reply = _send(
        transport,
        f"{base}/x",
        gateway_settings(),
        method="POST",
        headers={"Content-Type": "application/json"},
        body=b"{}",
    )
    transport.close()

    assert reply.status == 200
    assert adapter.sent == [f"{base}/x"]
    headers, body = dict(plain_server.seen[0].headers), plain_server.seen[0].body
    assert headers["X-Merchant"] == "shop-1"
    assert headers["Content-Type"] == "application/json", "the plugin's header wins"
    assert body == b"{}"
    assert hooked == [b'{"ok": true}'], "the session's hooks run, and see the body"
    assert session.cookies.get("session") == "abc", "the session's cookie jar is its own"
    assert session.get(f"{base}/x", timeout=5).status_code == 200, "still open after close()"


def test_a_client_sends_through_the_callers_session(installed: Path) -> None:
    session = requests.Session()
    session.headers["X-Merchant"] = "shop-1"
    client = RefundClient(journal=None, session=session)
    with SandboxRun("testpay", client=client) as run:
        payment = run.emulator.seed_payment(Money("10.00", "HKD"))
        result = run.client.refund("testpay", payment=payment, amount=Money("1", "HKD"))
        [recorded] = run.server.requests
    assert result.status is RefundStatus.SUCCEEDED
    assert recorded.header("X-Merchant") == "shop-1"


class _InMemoryAdapter(BaseAdapter):
    """What test tools such as ``responses`` or ``requests-mock`` mount: replies made
    without a network, or a failure of the caller's choosing."""

    def __init__(self, failure: Exception | None = None) -> None:
        super().__init__()
        self.failure = failure
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.sent.append(request)
        if self.failure is not None:
            raise self.failure
        response = requests.Response()
        response.status_code = 201
        response.headers["Content-Type"] = "application/json"
        response.raw = io.BytesIO(b'{"id": "r-1"}')
        response.request = request
        response.url = str(request.url)
        return response

    def close(self) -> None:
        pass


def test_an_adapter_without_a_network_serves_the_transport() -> None:
    session = requests.Session()
    adapter = _InMemoryAdapter()
    session.mount("https://", adapter)
    reply = _send(
        HttpTransport(session=session),
        "https://gateway.example/refunds",
        gateway_settings(),
        method="POST",
        body=b"{}",
    )
    assert (reply.status, reply.body) == (201, b'{"id": "r-1"}')
    assert adapter.sent[0].body == b"{}"


@pytest.mark.parametrize(
    ("failure", "outcome", "message"),
    [
        (requests.ConnectTimeout("slow"), TransportError, "could not connect to testgw within"),
        (requests.ConnectionError("reset"), OutcomeUnknown, "dropped after sending"),
        (requests.ReadTimeout("slow"), OutcomeUnknown, "no reply from testgw"),
        (RuntimeError("adapter bug"), OutcomeUnknown, "send to testgw failed: RuntimeError"),
        (TransportError("nothing sent, says the adapter"), TransportError, "says the adapter"),
    ],
)
def test_a_custom_adapters_failures_are_classified(
    failure: Exception, outcome: type[Exception], message: str
) -> None:
    session = requests.Session()
    session.mount("https://", _InMemoryAdapter(failure))
    with pytest.raises(outcome, match=message):
        _send(HttpTransport(session=session), "https://gateway.example/x", gateway_settings())


def test_a_session_that_skips_tls_verification_is_refused(
    tls_server: Gateway, tls_files: tuple[Path, Path]
) -> None:
    session = requests.Session()
    session.verify = False
    with pytest.raises(ConfigError, match="session: verify is False: refundcore always verifies"):
        HttpTransport(session=session)
    with pytest.raises(ConfigError, match="session: verify is False"):
        RefundClient(journal=None, session=session)

    session.verify = True
    transport = HttpTransport(session=session)
    session.verify = False  # changed after the client was made: refused when sending
    with pytest.raises(TransportError, match=r"verify is False.*nothing was sent"):
        _send(transport, f"https://localhost:{tls_server.port}/x", gateway_settings())
    assert tls_server.seen == []
    # The session's own CA bundle path is a way to verify, and is used.
    session.verify = str(tls_files[0])
    assert (
        _send(transport, f"https://localhost:{tls_server.port}/x", gateway_settings()).status == 200
    )


@pytest.mark.parametrize(
    "retries",
    [
        3,
        Retry(total=3, allowed_methods=frozenset({"GET"})),
        Retry(total=False, status_forcelist=[503], allowed_methods=None),
        Retry(total=None, connect=1, read=0, other=0, status=0),
        Retry(total=0, status_forcelist=[500]),
    ],
    ids=["3", "gets-only", "on-503", "connect-only", "swallows-500"],
)
def test_a_session_whose_adapter_could_resend_is_refused(retries: Any) -> None:
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=retries))
    with pytest.raises(
        ConfigError,
        match=r"session: the adapter mounted for 'https://' retries a \w+ .*: refundcore sends "
        r"each request once \(mount one with max_retries=0\)$",
    ):
        HttpTransport(session=session)


@pytest.mark.parametrize("retries", [0, Retry(0, read=False), Retry(total=False), False], ids=str)
def test_a_session_whose_adapters_send_once_is_accepted(retries: Any) -> None:
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=retries))
    HttpTransport(session=session)


def test_a_retrying_adapter_mounted_later_is_refused_before_sending(
    plain_server: Gateway,
) -> None:
    session = requests.Session()
    transport = HttpTransport(session=session)
    base = f"http://127.0.0.1:{plain_server.port}"
    session.mount(base, HTTPAdapter(max_retries=2))
    with pytest.raises(
        TransportError,
        match=rf"session: the adapter mounted for '{base}' retries a POST .*nothing was sent",
    ):
        _send(transport, f"{base}/x", gateway_settings(), method="POST")
    assert plain_server.seen == []


def test_a_session_must_be_a_requests_session() -> None:
    with pytest.raises(ConfigError, match=r"session: must be a requests\.Session, got dict"):
        HttpTransport(session={})  # type: ignore[arg-type]


def test_query_strings_stay_out_of_transport_errors() -> None:
    session = requests.Session()
    session.mount("https://", _InMemoryAdapter(requests.ConnectionError("/x?sig=SECRET broke")))
    with pytest.raises(OutcomeUnknown) as error:
        _send(
            HttpTransport(session=session),
            "https://gateway.example/x?sig=SECRET",
            gateway_settings(),
        )
    assert "SECRET" not in str(error.value)
    # Not even behind the error, where an error reporter may look.
    assert error.value.__cause__ is None and error.value.__context__ is None


def test_query_strings_stay_out_of_urllib3s_log_lines(
    plain_server: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _send(HttpTransport(), f"http://127.0.0.1:{plain_server.port}/x?sig=SECRET", gateway_settings())
    with pytest.raises(TransportError):
        _send(HttpTransport(), f"http://127.0.0.1:{_free_port()}/x?sig=SECRET", gateway_settings())
    lines = [(record.name, record.getMessage()) for record in caplog.records]
    assert any(name == "urllib3.connectionpool" and "/x?…" in line for name, line in lines)
    assert not [line for _, line in lines if "SECRET" in line]


def test_the_environment_is_read_once_per_gateway_host_by_the_own_session(
    tls_server: Gateway,
    tls_files: tuple[Path, Path],
    proxy: ConnectProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client keeps the proxies it found on its first send to a host; a client made
    after the environment changed follows it."""
    url = f"https://localhost:{tls_server.port}/x"
    config = gateway_settings(ca_bundle=str(tls_files[0]))
    transport = HttpTransport()
    try:
        assert _send(transport, url, config).status == 200
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        assert _send(transport, url, config).status == 200
        assert proxy.seen == []
    finally:
        transport.close()
    assert _send(HttpTransport(), url, config).status == 200
    assert len(proxy.seen) == 1
