"""A property: an error reporter that records the local variables of every frame of
a traceback (Sentry's Python SDK does by default; ``traceback.TracebackException``
with ``capture_locals=True`` shows the same), given any exception a bundled plugin's
client raises to its caller, finds no configured secret in any form: not in a frame
of the exception's traceback, nor in one of the exceptions it was raised from or
during (followed whether a traceback would show them or not).

Every stage reachable from outside is provoked: refunds whose transport fails (no
server, a gateway that never answers), hostile replies, hostile and forged callbacks
(hypothesis-generated, and genuine ones with a part changed) and config errors."""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refundcore import Money, RefundClient, RefundError, Secret, hookimpl
from refundcore.models import Callback, HttpResponse, RefundStatus
from refundcore.redaction import Masks
from refundcore.sandbox import SandboxRun
from refundcore.testing import traceback_texts
from refundcore.testing.mutations import flip, get_field, set_field, set_header
from refundcore.testing.transcript import secret_texts

PROVIDERS = ("directgw", "paywiser", "paywizard", "wonder")

_FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _local_texts(exc: BaseException) -> Iterator[tuple[str, str]]:
    """(where, text) of what a locals-capturing reporter records of ``exc``: its
    formatted report, and everything the kit's walker finds in its chain's frames."""
    report = traceback.TracebackException(type(exc), exc, exc.__traceback__, capture_locals=True)
    yield "TracebackException(capture_locals=True)", "".join(report.format())
    yield from traceback_texts(exc)


def _assert_clean(exc: BaseException, masks: Masks) -> None:
    for where, text in _local_texts(exc):
        span = masks.locate(text)
        if span is not None:
            start, end = span
            pytest.fail(
                f"{type(exc).__name__}: a secret is in {where}: "
                f"…{text[max(start - 60, 0) : start]}[SECRET]{text[end : end + 20]}…"
            )


def _raised(call: Callable[[], object]) -> RefundError | None:
    # The frame that catches is the traceback's first: it must hold no secret itself,
    # as a merchant's handler (which never sees the plain credentials) holds none.
    try:
        call()
    except RefundError as exc:
        return exc
    return None


def _check(call: Callable[[], object], masks: Masks) -> RefundError | None:
    exc = _raised(call)
    if exc is not None:
        _assert_clean(exc, masks)
    return exc


@pytest.fixture(scope="module", params=PROVIDERS)
def run(request: pytest.FixtureRequest) -> Iterator[SandboxRun]:
    with SandboxRun(request.param, read_timeout=0.5) as sandbox:
        yield sandbox


def _masks(run: SandboxRun) -> Masks:
    return Masks(secret_texts(run.client.config_for(run.provider)))


def _genuine_callback(run: SandboxRun) -> Callback:
    payment = run.emulator.seed_payment(Money("100.00", "HKD"))
    result = run.client.refund(run.provider, payment=payment, amount=Money("10.00", "HKD"))
    assert result.status in (RefundStatus.SUCCEEDED, RefundStatus.PENDING), result
    record = run.emulator.ledger.find_refund(result.refund_id)
    assert record is not None
    return run.emulator.build_callback(record, path="/callback", at=run.emulator.clock())


def _verify(run: SandboxRun, callback: Callback) -> Callable[[], object]:
    return lambda: run.client.verify_callback(
        run.provider,
        method=callback.method,
        path=callback.path,
        headers=dict(callback.headers),
        body=callback.body,
    )


def _forgeries(run: SandboxRun, genuine: Callback) -> Iterator[tuple[str, Callback]]:
    """The genuine callback with one part changed: each signature part flipped, the
    body changed under its signature, and malformed variants."""
    parts = run.emulator.signature_parts()
    for name in (*parts.signature_headers, *parts.headers):
        value = genuine.headers.get(name)
        if value is not None:
            yield f"header {name} flipped", set_header(genuine, name, flip(value, len(value) // 2))
            yield f"header {name} removed", set_header(genuine, name, None)
    for name in (*parts.signature_fields, *parts.fields):
        value = get_field(genuine, name)
        if value is not None:
            yield f"field {name} flipped", set_field(genuine, name, flip(value, len(value) // 2))
    malformed = {
        "body with a byte changed": genuine.body[:-2] + bytes([genuine.body[-2] ^ 1]) + b"}",
        "body with a space added": genuine.body + b" ",
        "body cut in half": genuine.body[: len(genuine.body) // 2],
        "body doubled": genuine.body + genuine.body,
        "body emptied": b"",
        "nested too deep": b'{"a":' * 5000 + b"1" + b"}" * 5000,
        "a list nested too deep": b"[" * 5000 + b"]" * 5000,
        "not UTF-8": b"\xff\xfe" + genuine.body,
        "a repeated key": b'{"a":"1","a":"2"}',
        "a form nested": b"a[b][c]=1&" * 50,
        "a huge number": b'{"amount":1' + b"0" * 5000 + b"}",
    }
    for how, body in malformed.items():
        yield how, attrs.evolve(genuine, body=body)
    yield "every header removed", attrs.evolve(genuine, headers={})


def test_forged_callbacks_leave_no_secret_in_frames(run: SandboxRun) -> None:
    masks = _masks(run)
    genuine = _genuine_callback(run)
    raised = 0
    for _how, forged in _forgeries(run, genuine):
        raised += _check(_verify(run, forged), masks) is not None
    assert raised, "no forgery was refused: the test proves nothing"


@_FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=6).map(
            lambda d: json.dumps(d).encode()
        ),
    ),
    headers=st.dictionaries(
        st.sampled_from(["Signature", "X-Signature", "X-Timestamp", "sign", "Authorization"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    ),
    path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
)
def test_hostile_callbacks_leave_no_secret_in_frames(
    run: SandboxRun, body: bytes, headers: dict[str, str], path: str
) -> None:
    callback = Callback(method="POST", path="/" + path, headers=headers, body=body)
    _check(_verify(run, callback), _masks(run))


@_FUZZ
@given(data=st.data())
def test_genuine_callbacks_fuzzed_leave_no_secret_in_frames(
    run: SandboxRun, data: st.DataObject
) -> None:
    genuine = _genuine_callback(run)
    # A key present in a genuine callback: its signed fields, replaced by any text.
    fields = json.loads(genuine.body) if genuine.body[:1] == b"{" else None
    if isinstance(fields, dict) and fields:
        name = data.draw(st.sampled_from(sorted(fields)))
        value = data.draw(st.one_of(st.text(max_size=30), st.integers(), st.lists(st.integers())))
        fields[name] = value
        genuine = attrs.evolve(genuine, body=json.dumps(fields).encode())
    header = data.draw(st.sampled_from(sorted(genuine.headers) or ["X-None"]))
    text = data.draw(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)))
    _check(_verify(run, set_header(genuine, header, text)), _masks(run))


class _Replies:
    """Answers every request in place of the transport."""

    def __init__(self) -> None:
        self.status, self.body = 200, b""

    @hookimpl(tryfirst=True)
    def refundcore_send_request(self, provider: Any, config: Any, request: Any) -> HttpResponse:
        return HttpResponse(status=self.status, body=self.body)


@pytest.fixture(scope="module")
def replies(run: SandboxRun) -> Iterator[tuple[RefundClient, _Replies]]:
    client = RefundClient(journal=None)
    answer = _Replies()
    client.register_plugin(answer)
    bridge = run.emulator.client_plugin()
    if bridge is not None:
        client.register_plugin(bridge)
    client.configure(run.provider, run.emulator.client_config(run.server.base_url))
    yield client, answer
    client.close()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)


@_FUZZ
@given(
    status=st.sampled_from([200, 201, 202, 400, 401, 404, 409, 500, 503]),
    body=st.one_of(st.binary(max_size=200), _JSON.map(lambda v: json.dumps(v).encode())),
    operation=st.sampled_from(["refund", "query", "void"]),
)
def test_hostile_replies_leave_no_secret_in_frames(
    run: SandboxRun,
    replies: tuple[RefundClient, _Replies],
    status: int,
    body: bytes,
    operation: str,
) -> None:
    client, answer = replies
    answer.status, answer.body = status, body
    payment = run.emulator.new_payment_ref("P1")
    calls: dict[str, Callable[[], object]] = {
        "refund": lambda: client.refund(run.provider, payment=payment, amount=Money("1.00", "HKD")),
        "query": lambda: client.query(run.provider, refund_id="R1", payment=payment),
        "void": lambda: client.void(run.provider, payment=payment),
    }
    _check(calls[operation], _masks(run))


@contextlib.contextmanager
def _silent_gateway() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        server.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_transport_failures_leave_no_secret_in_frames(run: SandboxRun, kind: str) -> None:
    from refundcore.testing.clients import sandbox_client

    with _silent_gateway() as silent:
        for url in (f"http://127.0.0.1:{_closed_port()}", f"http://127.0.0.1:{silent}"):
            client = sandbox_client(kind)
            bridge = run.emulator.client_plugin()
            if bridge is not None:
                client.register_plugin(bridge)
            settings = dict(run.emulator.client_config(url))
            settings.update(read_timeout=0.3, connect_timeout=0.3)
            client.configure(run.provider, settings)
            masks = Masks(secret_texts(client.config_for(run.provider)))
            payment = run.emulator.new_payment_ref("P1")
            try:
                for call in (
                    functools.partial(
                        client.refund, run.provider, payment=payment, amount=Money("1.00", "HKD")
                    ),
                    functools.partial(client.query, run.provider, refund_id="R1", payment=payment),
                ):
                    _check(call, masks)
            finally:
                client.close()


_BAD_VALUES: tuple[object, ...] = ("", "has a space", "\x00", 12, ["x"], {"a": 1}, True)


@pytest.mark.parametrize("held_as", ["environment", "Secret"])
def test_config_errors_leave_no_secret_in_frames(
    run: SandboxRun, held_as: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    masks = _masks(run)
    # The caller holds no credential in plain text: a config table names environment
    # variables (as a TOML file does), or holds Secret objects (from a vault, say).
    good = {}
    for name, value in run.emulator.client_config(run.server.base_url).items():
        if not (isinstance(value, str) and masks.found(value.lower())):
            good[name] = value
        elif held_as == "Secret":
            good[name] = Secret(value)
        else:
            monkeypatch.setenv(f"REFUNDCORE_TEST_{name.upper()}", value)
            good[name] = {"env": f"REFUNDCORE_TEST_{name.upper()}"}
    refused = 0
    for name in good:
        for bad in _BAD_VALUES:
            settings = {**good, name: bad}
            client = RefundClient(journal=None)
            exc = _check(functools.partial(client.configure, run.provider, settings), masks)
            refused += exc is not None
            client.close()
    exc = _check(
        lambda: RefundClient(journal=None).configure(run.provider, {**good, "x": 1}), masks
    )
    assert refused and exc is not None
