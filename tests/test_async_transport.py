"""The async send (httpx) over real loopback sockets: TLS verification, what a caller's
own ``httpx.AsyncClient`` may be, the nothing-sent / may-have-been-sent split, the reply
cap, redirects, proxies from the environment, and what goes on the wire.

The client tests (``tests/test_client.py``, run against both clients) cover the
gateway emulator's faults through the public API.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from refundcore import AsyncRefundClient, Money, PaymentRef
from refundcore.async_transport import AsyncHttpTransport, check_http_client
from refundcore.errors import ConfigError, OutcomeUnknown, TransportError
from refundcore.models import HttpRequest, HttpResponse
from tests.loopback_gateway import ConnectProxy, Gateway, gateway_settings

PROVIDER: Any = SimpleNamespace(id="testgw")


def _post(
    url: str,
    config: Any,
    *,
    transport: AsyncHttpTransport | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    async def go() -> HttpResponse:
        sender = transport or AsyncHttpTransport()
        try:
            sender.check(PROVIDER, config)
            request = HttpRequest("POST", url, headers or {}, b'{"refund":1}')
            return await sender.send(PROVIDER, config, request)
        finally:
            if transport is None:
                await sender.aclose()

    return asyncio.run(go())


def test_tls_is_verified_against_the_providers_ca_bundle(
    tls_server: Gateway, tls_files: tuple[Path, Path]
) -> None:
    async def twice() -> tuple[HttpResponse, HttpResponse]:
        transport = AsyncHttpTransport()
        config = gateway_settings(ca_bundle=str(tls_files[0]))
        url = f"https://localhost:{tls_server.port}/refunds"
        try:
            first = await transport.send(PROVIDER, config, HttpRequest("POST", url))
            second = await transport.send(PROVIDER, config, HttpRequest("POST", url))
        finally:
            await transport.aclose()
        return first, second

    first, second = asyncio.run(twice())
    assert (first.status, first.body, second.status) == (200, b'{"ok": true}', 200)
    assert first.headers["x-twice"] == "a, b"
    assert tls_server.connections == 1, "the second request reuses the connection"


def test_an_untrusted_certificate_is_a_transport_error_before_anything_is_sent(
    tls_server: Gateway,
) -> None:
    with pytest.raises(TransportError, match="could not connect to testgw; nothing was sent"):
        _post(f"https://localhost:{tls_server.port}/x", gateway_settings())
    assert tls_server.seen == []


def test_a_refused_connection_is_a_transport_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransportError, match="nothing was sent"):
        _post(f"http://127.0.0.1:{port}/x", gateway_settings())


def test_a_read_timeout_after_sending_is_an_unknown_outcome(plain_server: Gateway) -> None:
    with pytest.raises(OutcomeUnknown, match=r"no reply from testgw within 0\.2s after sending"):
        _post(f"http://127.0.0.1:{plain_server.port}/slow", gateway_settings(read_timeout=0.2))
    assert len(plain_server.seen) == 1


def test_a_connection_closed_after_the_request_is_an_unknown_outcome(
    plain_server: Gateway,
) -> None:
    with pytest.raises(OutcomeUnknown, match="failed after sending"):
        _post(f"http://127.0.0.1:{plain_server.port}/hang-up", gateway_settings())
    assert len(plain_server.seen) == 1, "sent once, never again"


def test_a_reply_over_the_cap_is_given_up_as_it_arrives(
    plain_server: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    import refundcore.async_transport

    url = f"http://127.0.0.1:{plain_server.port}/chunked?n=3"
    assert _post(url, gateway_settings()).body == b"x" * 3072
    monkeypatch.setattr(refundcore.async_transport, "MAX_RESPONSE_BYTES", 2048)
    with pytest.raises(OutcomeUnknown, match=r"cut short.*larger than 2048 bytes"):
        _post(url, gateway_settings())
    # A declared length over the cap is refused before the body is read.
    monkeypatch.setattr(refundcore.async_transport, "MAX_RESPONSE_BYTES", 5)
    with pytest.raises(OutcomeUnknown, match="larger than 5 bytes"):
        _post(f"http://127.0.0.1:{plain_server.port}/ok", gateway_settings())


def test_redirects_are_not_followed(plain_server: Gateway) -> None:
    reply = _post(f"http://127.0.0.1:{plain_server.port}/redirect", gateway_settings())
    assert reply.status == 302
    assert [seen.requestline for seen in plain_server.seen] == ["POST /redirect HTTP/1.1"]


def test_the_wire_carries_the_plugins_headers_and_body_only(plain_server: Gateway) -> None:
    _post(
        f"http://127.0.0.1:{plain_server.port}/v1?sig=1",
        gateway_settings(),
        headers={"X-Signature": "abc", "Content-Type": "application/json"},
    )
    ((_, _, line, headers, body),) = plain_server.seen
    assert line == "POST /v1?sig=1 HTTP/1.1"
    assert body == b'{"refund":1}'
    assert sorted(name.lower() for name, _ in headers) == [
        "content-length",
        "content-type",
        "host",
        "user-agent",
        "x-signature",
    ]
    assert dict(headers)["User-Agent"] == "refundcore"


def test_an_unusable_url_or_bundle_is_a_transport_error(plain_server: Gateway) -> None:
    with pytest.raises(TransportError, match="nothing was sent"):
        _post("ftp://127.0.0.1/x", gateway_settings())
    with pytest.raises(TransportError, match=r"ca_bundle '/nonexistent.pem' cannot be used"):
        _post("https://127.0.0.1/x", gateway_settings(ca_bundle="/nonexistent.pem"))
    assert plain_server.seen == []


def test_a_caller_client_that_does_not_verify_or_retries_is_refused() -> None:
    async def check() -> None:
        async with httpx.AsyncClient(verify=False) as unverified:  # noqa: S501 - refused
            with pytest.raises(ConfigError, match=r"http_client: TLS verification is off"):
                check_http_client(unverified)
        retrying = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(retries=2))
        async with retrying:
            with pytest.raises(ConfigError, match=r"transport retries \(2\)"):
                check_http_client(retrying)
        with pytest.raises(ConfigError, match=r"must be an httpx\.AsyncClient"):
            check_http_client(httpx.Client())
        async with httpx.AsyncClient() as fine:
            assert check_http_client(fine) is fine
            with pytest.raises(ConfigError, match="TLS verification is off"):
                AsyncRefundClient(
                    http_client=httpx.AsyncClient(verify=False),  # noqa: S501 - refused
                    journal=None,
                )

    asyncio.run(check())


def test_a_given_client_carries_the_requests_and_its_event_hooks_see_them(
    plain_server: Gateway,
) -> None:
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.path}")

    async def go() -> HttpResponse:
        async with httpx.AsyncClient(
            event_hooks={"request": [hook]}, headers={"X-Default": "not sent"}
        ) as own:
            transport = AsyncHttpTransport(own)
            reply = await transport.send(
                PROVIDER,
                gateway_settings(),
                HttpRequest("POST", f"http://127.0.0.1:{plain_server.port}/"),
            )
            await transport.aclose()
            assert not own.is_closed, "the caller's client stays the caller's"
            return reply

    assert asyncio.run(go()).status == 200
    assert seen == ["POST /"]
    assert "X-Default" not in dict(plain_server.seen[0].headers)


def test_a_ca_bundle_cannot_apply_to_a_given_client(tls_files: tuple[Path, Path]) -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as own:
            with pytest.raises(ConfigError, match="ca_bundle cannot apply to a given http_client"):
                AsyncHttpTransport(own).check(
                    PROVIDER, gateway_settings(ca_bundle=str(tls_files[0]))
                )

    asyncio.run(go())


def test_the_environments_proxy_is_used_and_a_refused_tunnel_sent_nothing(
    tls_server: Gateway, tls_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ConnectProxy(status=403)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    try:
        with pytest.raises(TransportError, match="cannot reach testgw; nothing was sent"):
            _post(f"https://localhost:{tls_server.port}/x?hash=SECRET", gateway_settings())
        assert proxy.seen == [(f"CONNECT localhost:{tls_server.port} HTTP/1.1", None)]
        assert tls_server.seen == []
        # NO_PROXY names the gateway: straight to it.
        monkeypatch.setenv("NO_PROXY", "localhost")
        reply = _post(f"https://localhost:{tls_server.port}/x", gateway_settings(str(tls_files[0])))
        assert reply.status == 200 and len(proxy.seen) == 1
    finally:
        proxy.close()


def test_query_strings_stay_out_of_errors_and_httpx_logs(
    plain_server: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _post(f"http://127.0.0.1:{plain_server.port}/ok?hash=SECRETHASH", gateway_settings())
    with pytest.raises(OutcomeUnknown) as error:
        _post(
            f"http://127.0.0.1:{plain_server.port}/slow?hash=SECRETHASH",
            gateway_settings(read_timeout=0.2),
        )
    assert "SECRETHASH" not in str(error.value)
    assert any(r.name == "httpx" and "/ok?…" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if "SECRETHASH" in r.getMessage()]


def test_the_async_client_refuses_an_insecure_http_client_before_sending(
    installed: Path,
) -> None:
    async def go() -> None:
        retrying = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(retries=1))
        with pytest.raises(ConfigError, match="never sends a request again"):
            AsyncRefundClient(http_client=retrying, journal=None)
        await retrying.aclose()
        async with httpx.AsyncClient() as own:
            client = AsyncRefundClient(
                {"testpay": {"api_key": "k", "secret": "s", "base_url": "https://127.0.0.1:9"}},
                http_client=own,
                journal=None,
            )
            client.configure(
                "testpay",
                {
                    "api_key": "k",
                    "secret": "s",
                    "base_url": "https://127.0.0.1:9",
                    "ca_bundle": __file__,
                },
            )
            with pytest.raises(ConfigError, match="ca_bundle cannot apply"):
                await client.refund(
                    "testpay", payment=PaymentRef(payment_id="1"), amount=Money("1", "HKD")
                )

    asyncio.run(go())
