"""refundcore.asgi.callback_app under uvicorn over real sockets: the WSGI app's answers,
with either client and either kind of ``on_notification``; slow, lying and oversized
bodies; and hostile requests straight to the app."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refundcore import AsyncRefundClient, Money, RefundClient, RefundNotification, hookimpl
from refundcore.asgi import callback_app
from refundcore.errors import ConfigError, NotARefund
from refundcore.models import ProviderInfo
from refundcore.sandbox import SandboxRun
from refundcore.wsgi import MAX_BODY
from tests.raw_http import send_raw

pytestmark = pytest.mark.timeout(120)

ServeAsgi = Callable[[Any], contextlib.AbstractContextManager[str]]
BODY_TIMEOUT = 1.0
SLACK = 2.5


@pytest.fixture
def run(installed: Path) -> Iterator[SandboxRun]:
    with SandboxRun("testpay", client=RefundClient(journal=None)) as run:
        yield run


def _twin(run: SandboxRun, kind: str) -> Any:
    """A client of ``kind`` that verifies the emulator's callbacks."""
    client: Any = RefundClient(journal=None) if kind == "sync" else AsyncRefundClient(journal=None)
    client.configure("testpay", run.emulator.client_config(run.server.base_url))
    return client


def _refund(run: SandboxRun) -> str:
    payment = run.emulator.seed_payment(Money("50", "HKD"))
    return run.client.refund("testpay", payment=payment, amount=Money("5", "HKD")).refund_id


def _post(url: str, callback: Any, body: bytes | None = None) -> requests.Response:
    return requests.post(
        url, data=callback.body if body is None else body, headers=dict(callback.headers), timeout=5
    )


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("handler", ["function", "coroutine"])
def test_a_genuine_callback_is_handed_over_and_acknowledged(
    run: SandboxRun, serve_asgi: ServeAsgi, kind: str, handler: str
) -> None:
    arrived: list[tuple[RefundNotification, bool]] = []

    def on_note(note: RefundNotification) -> None:
        arrived.append((note, threading.current_thread() is threading.main_thread()))

    async def on_note_async(note: RefundNotification) -> None:
        asyncio.get_running_loop()  # awaited on the event loop
        arrived.append((note, False))

    app = callback_app(_twin(run, kind), on_note if handler == "function" else on_note_async)
    with serve_asgi(app) as base:
        refund_id = _refund(run)
        callback = run.emulator.signed_callback(refund_id, path="/testpay?tenant=7")
        reply = _post(f"{base}/testpay?tenant=7", callback)
        forged = _post(f"{base}/testpay?tenant=7", callback, body=b'{"forged":1}')
        moved = _post(f"{base}/testpay?tenant=8", callback)
    assert (reply.status_code, reply.text) == (200, "OK")
    assert (forged.status_code, moved.status_code) == (400, 400)
    ((note, _),) = arrived
    assert note.refund_id == refund_id and note.provider == "testpay"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/testpay", b"{not json", 400),
        ("POST", "/testpay", b"\x00\xff" * 100, 400),
        ("POST", "/acme", b"{}", 404),
        ("POST", "/", b"{}", 404),
        ("POST", "/testpay/extra", b"{}", 404),
        ("GET", "/testpay", b"", 405),
    ],
)
def test_bad_input_is_never_a_500(
    run: SandboxRun, serve_asgi: ServeAsgi, method: str, path: str, body: bytes, status: int
) -> None:
    arrived: list[RefundNotification] = []
    with serve_asgi(callback_app(_twin(run, "async"), arrived.append)) as base:
        reply = requests.request(method, base + path, data=body, timeout=5)
    assert reply.status_code == status
    assert arrived == []


class _SaleEvents:
    @hookimpl(wrapper=True)
    def refundcore_verify_callback(self, provider: ProviderInfo) -> object:
        yield
        raise NotARefund("payment.succeeded", provider=provider.id)


def test_failures_and_events_answer_as_the_wsgi_app_does(
    run: SandboxRun, serve_asgi: ServeAsgi
) -> None:
    async def broken(note: RefundNotification) -> None:
        raise RuntimeError("database down")

    client = _twin(run, "async")
    callback = run.emulator.signed_callback(_refund(run), path="/testpay")
    with serve_asgi(callback_app(client, broken)) as base:
        assert _post(f"{base}/testpay", callback).status_code == 500
        client.register_plugin(_SaleEvents())
        reply = _post(f"{base}/testpay", callback)
        assert (reply.status_code, reply.text) == (200, "OK")


class _BrokenVerifier:
    @hookimpl(tryfirst=True)
    def refundcore_verify_callback(self) -> object:
        raise KeyError("signature")


def test_a_plugin_failing_on_a_callback_is_a_500_to_deliver_again(
    run: SandboxRun, serve_asgi: ServeAsgi
) -> None:
    arrived: list[RefundNotification] = []
    client = _twin(run, "async")
    callback = run.emulator.signed_callback(_refund(run), path="/testpay")
    client.register_plugin(_BrokenVerifier())
    with serve_asgi(callback_app(client, arrived.append)) as base:
        assert _post(f"{base}/testpay", callback).status_code == 500
    assert arrived == []


def test_a_mounted_app_sees_paths_below_its_mount(run: SandboxRun, serve_asgi: ServeAsgi) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    arrived: list[RefundNotification] = []
    shop = Starlette(
        routes=[Mount("/hooks", app=callback_app(_twin(run, "async"), arrived.append))]
    )
    with serve_asgi(shop) as base:
        callback = run.emulator.signed_callback(_refund(run), path="/hooks/testpay")
        assert _post(f"{base}/hooks/testpay", callback).status_code == 200
    assert len(arrived) == 1


# -- slow, lying and oversized bodies, over raw sockets --------------------------------------


def _head(length: str | int, path: str = "/testpay") -> str:
    return (
        f"POST {path} HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
        f"Content-Length: {length}\n"
    )


@pytest.fixture
def port(installed: Path, serve_asgi: ServeAsgi) -> Iterator[int]:
    client = AsyncRefundClient(journal=None)
    client.configure("testpay", {"api_key": "k", "secret": "s", "base_url": "http://127.0.0.1:9"})
    with serve_asgi(callback_app(client, lambda note: None, body_timeout=BODY_TIMEOUT)) as base:
        yield int(base.rsplit(":", 1)[1])


def test_a_lying_content_length_is_408_within_the_deadline(port: int) -> None:
    status, took = send_raw(port, _head(1000), b'{"partial":')
    assert status == "HTTP/1.1 408 Request Timeout"
    assert BODY_TIMEOUT * 0.9 <= took < BODY_TIMEOUT + SLACK


def test_a_slow_drip_is_cut_at_the_deadline(port: int) -> None:
    status, took = send_raw(port, _head(40), b"x" * 40, drip=0.1)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert took < BODY_TIMEOUT + SLACK


def test_others_are_answered_while_a_body_stalls(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
        stalled.sendall(_head(1000).replace("\n", "\r\n").encode() + b"\r\n{")
        time.sleep(0.2)
        status, took = send_raw(port, _head(2), b"{}")
    assert status == "HTTP/1.1 400 Bad Request" and took < 1.0


def test_an_oversized_body_is_413_before_it_is_read(port: int) -> None:
    status, took = send_raw(port, _head(MAX_BODY + 1))
    assert status.startswith("HTTP/1.1 413 "), status
    assert took < BODY_TIMEOUT


def test_a_chunked_body_over_the_cap_is_413_as_it_streams(port: int) -> None:
    head = "POST /testpay HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n"
    chunk = b"x" * 65536
    body = (b"10000\r\n" + chunk + b"\r\n") * 17 + b"0\r\n\r\n"
    status, _ = send_raw(port, head, body)
    assert status.startswith("HTTP/1.1 413 "), status


def test_a_body_ending_early_is_never_taken(port: int) -> None:
    status, took = send_raw(port, _head(100), b"{}", half_close=True)
    assert status in ("", "HTTP/1.1 400 Bad Request"), status
    assert took < BODY_TIMEOUT + SLACK


@pytest.mark.parametrize("length", ["12abc", "-1", "1, 2", "99999999999999999999"])
def test_a_malformed_content_length_is_a_4xx(port: int, length: str) -> None:
    status, _ = send_raw(port, _head(length), b"{}")
    assert re.fullmatch(r"HTTP/1\.[01] 4\d\d .*", status), status


@pytest.mark.parametrize(
    ("option", "value"), [("body_timeout", 0), ("body_timeout", 301), ("max_body", 0)]
)
def test_insane_limits_are_refused(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        callback_app(RefundClient(journal=None), lambda note: None, **{option: value})  # type: ignore[arg-type]


# -- hostile requests straight to the app ----------------------------------------------------


def _call(app: Any, scope: dict[str, Any], chunks: list[bytes]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or [b""])
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


_header_names = st.sampled_from(
    [b"content-length", b"content-type", b"x-signature", b"x-timestamp", b"host", b"x-y"]
)


@pytest.fixture(scope="module")
def direct_app(plugin_site: Path) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(plugin_site))
        client = AsyncRefundClient(journal=None)
        client.configure(
            "testpay", {"api_key": "k", "secret": "s", "base_url": "http://127.0.0.1:9"}
        )
        yield callback_app(client, lambda note: None, max_body=4096, body_timeout=2)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "post", ""]),
    path=st.sampled_from(["testpay", "testpay/", "acme"]) | st.text(max_size=30),
    query=st.binary(max_size=30),
    headers=st.lists(st.tuples(_header_names, st.binary(max_size=40)), max_size=6),
    chunks=st.lists(st.binary(max_size=3000), max_size=4),
)
def test_hostile_requests_get_a_4xx_never_a_crash(
    direct_app: Any,
    method: str,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    chunks: list[bytes],
) -> None:
    scope = {
        "type": "http",
        "method": method,
        "path": "/" + path,
        "raw_path": ("/" + path).encode("utf-8", "surrogatepass"),
        "query_string": query,
        "root_path": "",
        "headers": headers,
    }
    sent = _call(direct_app, scope, chunks)
    start, body = sent
    assert start["type"] == "http.response.start" and body["type"] == "http.response.body"
    assert 400 <= start["status"] < 500
