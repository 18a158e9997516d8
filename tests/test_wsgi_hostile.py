"""Hypothesis drives the callback app with hostile requests: random methods, paths,
headers and bodies, and mutations of genuine callbacks that each provider's emulator
delivered. Every answer is a 4xx, or a 2xx for a callback that was verified and handed
to the application; never a 5xx, and each within a bounded time."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_to_bytes

import attrs
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from refundcore import Money, RefundNotification, RefundStatus
from refundcore.sandbox import SandboxRun
from refundcore.wsgi import MAX_BODY, callback_app

PROVIDERS = ("paywizard", "wonder", "directgw", "paywiser")
CURRENCY = {"paywiser": "USD"}
# Far below any server's timeout; the app does no network I/O of its own.
PER_REQUEST = 2.0
SETTINGS = settings(
    max_examples=200,
    deadline=None,  # timed per request below, with a bound that tolerates a loaded machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)


@attrs.frozen
class Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    #: Content-Length as declared; None: the length of ``body``.
    declared: str | None = None


@attrs.define
class Endpoint:
    """The callback app of one client configured for every provider's emulator."""

    app: Any
    delivered: list[RefundNotification]
    genuine: dict[str, Request]

    def call(self, request: Request) -> tuple[int, int]:
        """The status the app answered, and how many notifications it handed over."""
        path, _, query = request.target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "REQUEST_URI": request.target,
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(request.body))
            if request.declared is None
            else request.declared,
        }
        for name, value in request.headers:
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ[key] = value
            elif key != "CONTENT_LENGTH":  # a server derives it from the framing
                environ[f"HTTP_{key}"] = value
        statuses: list[str] = []

        def start_response(status: str, headers: list[tuple[str, str]], *_: object) -> None:
            statuses.append(status)

        before = len(self.delivered)
        started = time.monotonic()
        body = b"".join(self.app(environ, start_response))
        took = time.monotonic() - started
        assert took < PER_REQUEST, f"{took:.2f} s for {request!r}"
        assert isinstance(body, bytes) and len(statuses) == 1
        return int(statuses[0].split()[0]), len(self.delivered) - before


def _genuine_callback(run: SandboxRun, provider: str) -> Request:
    currency = CURRENCY.get(provider, "HKD")
    payment = run.emulator.seed_payment(Money("50.00", currency))
    # A gateway that cannot carry a notify URL calls the one its payment names.
    carries = run.client.provider(provider).capabilities.notify_url
    result = run.client.refund(
        provider,
        payment=payment,
        amount=Money("5.00", currency),
        notify_url=run.notify_url if carries else None,
    )
    if result.status is RefundStatus.PENDING:  # the gateway calls back once it settles
        ledger = run.emulator.ledger
        record = ledger.find_refund(result.refund_id) or ledger.find_refund(
            provider_refund_id=result.provider_refund_id
        )
        assert record is not None
        run.emulator.settle(record.refund_id)
    (first, *_) = run.receiver.wait_for(1, timeout=10)
    assert first.status is not None and 200 <= first.status < 300, first
    return Request(first.method, first.target, first.headers, first.body)


@pytest.fixture(scope="module")
def endpoint() -> Iterator[Endpoint]:
    runs = [SandboxRun(provider) for provider in PROVIDERS]
    try:
        for run in runs:
            run.start()
        genuine = {
            provider: _genuine_callback(run, provider)
            for provider, run in zip(PROVIDERS, runs, strict=True)
        }
        # One client that knows every provider's emulator, as an application would have.
        client = runs[0].client
        for run in runs[1:]:
            client.configure(run.provider, run.client.config_for(run.provider))
        delivered: list[RefundNotification] = []
        yield Endpoint(callback_app(client, delivered.append), delivered, genuine)
    finally:
        for run in runs:
            run.stop()


def _assert_4xx_or_verified(status: int, handed_over: int) -> None:
    event(f"HTTP {status}")
    assert status < 500, status
    if 200 <= status < 300:
        assert handed_over == 1, "a 2xx for a callback that was not verified and handed over"
    else:
        assert 400 <= status < 500 and handed_over == 0, (status, handed_over)


def test_genuine_callbacks_are_verified(endpoint: Endpoint) -> None:
    for provider, request in endpoint.genuine.items():
        assert endpoint.call(request) == (200, 1), provider


_HEADER_NAME = st.text(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"),
    min_size=1,
    max_size=30,
)
_LATIN1 = st.text(st.characters(max_codepoint=255), max_size=200)
_PATHS = st.one_of(
    st.sampled_from(PROVIDERS).map(lambda provider: f"/{provider}"),
    st.sampled_from(
        [f"/{provider}" for provider in PROVIDERS]
        + ["/", "", "/../paywizard", "/paywizard/../wonder", "//wonder", "/%2e%2e/wonder"]
        + ["/wonder%00", "/WONDER", "/wonder/", "/wonder?x=1", "/paywiser?" + "a=" * 500]
    ),
    st.builds(lambda head, tail: f"/{head}{tail}", st.sampled_from(PROVIDERS), _LATIN1),
    _LATIN1.map(lambda text: "/" + text),
)
# Mostly POSTs to a provider's path: anything else is refused before the body matters.
_METHODS = st.one_of(
    st.just("POST"),
    st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "post"]),
)
_BODIES = st.one_of(
    st.binary(max_size=2048),
    st.sampled_from(
        [
            b"{}",
            b"[]",
            b"null",
            b'{"a": 1, "a": 2}',
            b"[" * 10_000 + b"]" * 10_000,
            b'{"amount": ' + b"9" * 5000 + b"}",
            b"\xff\xfe{\x00}\x00",
            b"a=1&a=2&" * 1000,
            b"x" * (MAX_BODY + 1),
        ]
    ),
)
_DECLARED = st.one_of(
    st.none(),
    st.sampled_from(["", "0", "-1", "abc", "1e3", "+5", " 5", "5_0", "99999999999999999999"]),
    st.integers(min_value=0, max_value=2 * MAX_BODY).map(str),
)


@SETTINGS
@given(
    method=_METHODS,
    target=_PATHS,
    headers=st.lists(st.tuples(_HEADER_NAME, _LATIN1), max_size=8),
    body=_BODIES,
    declared=_DECLARED,
)
def test_random_requests_get_a_4xx(
    endpoint: Endpoint,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    declared: str | None,
) -> None:
    status, handed_over = endpoint.call(Request(method, target, tuple(headers), body, declared))
    _assert_4xx_or_verified(status, handed_over)


def _flip(body: bytes, index: int, bit: int) -> bytes:
    if not body:
        return b"\x00"
    index %= len(body)
    return body[:index] + bytes([body[index] ^ (1 << bit)]) + body[index + 1 :]


@st.composite
def _mutated(draw: st.DrawFn, genuine: dict[str, Request]) -> Request:
    request = genuine[draw(st.sampled_from(PROVIDERS))]
    headers = list(request.headers)
    body, target, declared = request.body, request.target, None
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        kind = draw(
            st.sampled_from(
                [
                    "flip",
                    "truncate",
                    "append",
                    "drop-header",
                    "change-header",
                    "add-header",
                    "duplicate-header",
                    "query",
                    "path",
                    "length",
                    "other-provider",
                    "replace-body",
                ]
            )
        )
        if kind == "flip":
            body = _flip(body, draw(st.integers(0, 10_000)), draw(st.integers(0, 7)))
        elif kind == "truncate":
            body = body[: draw(st.integers(0, max(len(body) - 1, 0)))]
        elif kind == "append":
            body += draw(st.binary(min_size=1, max_size=64))
        elif kind == "drop-header" and headers:
            del headers[draw(st.integers(0, len(headers) - 1))]
        elif kind == "change-header" and headers:
            index = draw(st.integers(0, len(headers) - 1))
            headers[index] = (headers[index][0], draw(_LATIN1))
        elif kind == "add-header":
            headers.append((draw(_HEADER_NAME), draw(_LATIN1)))
        elif kind == "duplicate-header" and headers:
            name, value = headers[draw(st.integers(0, len(headers) - 1))]
            headers.append((name, value + draw(_LATIN1)))
        elif kind == "query":
            target += ("&" if "?" in target else "?") + draw(_LATIN1.map(lambda t: t[:40]))
        elif kind == "path":
            target = draw(_PATHS) + (target.partition("?")[1] + target.partition("?")[2])
        elif kind == "length":
            declared = draw(_DECLARED.filter(lambda value: value is not None))
        elif kind == "other-provider":
            target = f"/{draw(st.sampled_from(PROVIDERS))}" + target[len(target.split("?")[0]) :]
        elif kind == "replace-body":
            body = draw(_BODIES)
    return Request(request.method, target, tuple(headers), body, declared)


@SETTINGS
@given(data=st.data())
def test_mutated_genuine_callbacks_are_refused_or_verified(
    endpoint: Endpoint, data: st.DataObject
) -> None:
    request = data.draw(_mutated(endpoint.genuine))
    status, handed_over = endpoint.call(request)
    _assert_4xx_or_verified(status, handed_over)
