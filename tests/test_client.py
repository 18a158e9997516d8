"""The pipeline end to end over loopback sockets, with the testpay provider."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refundcore import (
    Money,
    PaymentRef,
    PluginError,
    RefundStatus,
    SignatureError,
    TransportError,
    ValidationError,
    hookimpl,
)
from refundcore.logs import record_fields
from refundcore.models import HttpRequest, Refund, RefundResult
from refundcore.sandbox import Fault, SandboxRun

MakeClient = Callable[..., Any]

HKD = "HKD"


@pytest.fixture
def run(installed: Path, make_client: MakeClient) -> Iterator[SandboxRun]:
    with SandboxRun("testpay", client=make_client(journal=None)) as run:
        yield run


def seed(run: SandboxRun, amount: str = "100.00") -> PaymentRef:
    return run.emulator.seed_payment(Money(amount, HKD))


class StageRecorder:
    """An app plugin that wraps every stage, records the order, and changes things."""

    def __init__(self) -> None:
        self.stages: list[str] = []

    @hookimpl(wrapper=True)
    def refundcore_build_request(self, provider: Any) -> Any:
        self.stages.append(f"build:{provider.id}")
        request = yield
        return request.with_header("X-Trace", "trace-123")

    @hookimpl(wrapper=True)
    def refundcore_sign_request(self) -> Any:
        self.stages.append("sign")
        return (yield)

    @hookimpl(wrapper=True)
    def refundcore_send_request(self, request: HttpRequest) -> Any:
        self.stages.append(f"send:{request.headers.get('X-Trace')}")
        return (yield)

    @hookimpl(wrapper=True)
    def refundcore_parse_response(self) -> Any:
        self.stages.append("parse")
        result = yield
        import attrs

        return attrs.evolve(result, message="seen by the app")


class StageRecorderButSend(StageRecorder):
    """The stages an app plugin can wrap on the async client: all but the send."""

    refundcore_send_request = None


def test_stages_run_in_order_and_wrappers_change_request_and_result(
    run: SandboxRun, client_kind: str
) -> None:
    recorder = StageRecorder() if client_kind == "sync" else StageRecorderButSend()
    run.client.register_plugin(recorder)
    result = run.client.refund(
        "testpay", payment=seed(run), amount=Money("10", HKD), refund_id="r-1"
    )
    sent_stage = ["send:trace-123"] if client_kind == "sync" else []
    assert recorder.stages == ["build:testpay", "sign", *sent_stage, "parse"]
    assert result.status is RefundStatus.SUCCEEDED
    assert result.message == "seen by the app"
    assert result.refund_id == "r-1" and result.operation == "refund" and result.http_status == 200
    (sent,) = run.server.requests
    assert sent.header("X-Trace") == "trace-123"
    assert sent.header("X-Signature")


def test_request_copies_change_only_what_they_name() -> None:
    request = HttpRequest("POST", "https://gw.example/r?x=1", headers={"A": "1"}, body=b"old")
    changed = request.with_body(b"new").with_headers({"a": "2", "B": "3"})
    assert (changed.method, changed.url, changed.body) == ("POST", request.url, b"new")
    assert list(changed.headers.items()) == [("a", "2"), ("B", "3")]
    assert request.body == b"old" and dict(request.headers) == {"A": "1"}

    @attrs.frozen
    class Traced(HttpRequest):
        trace: str = "t-1"

    copy = Traced("GET", "https://gw.example/").with_body(b"x")
    assert type(copy) is Traced and (copy.trace, copy.body) == ("t-1", b"x")


def test_exact_wire_bytes(run: SandboxRun) -> None:
    payment = seed(run)
    run.client.refund(
        "testpay", payment=payment, amount=Money("10.5", HKD), refund_id="r-wire", reason="damaged"
    )
    (sent,) = run.server.requests
    assert sent.method == "POST" and sent.target == "/v1/refunds"
    assert sent.body == (
        b'{"refund_id":"r-wire","payment_id":"'
        + payment.payment_id.encode()  # type: ignore[union-attr]
        + b'","merchant_reference":"'
        + payment.merchant_reference.encode()  # type: ignore[union-attr]
        + b'","amount":"10.50","currency":"HKD","reason":"damaged"}'
    )
    assert sent.header("Content-Length") == str(len(sent.body))
    assert sent.header("User-Agent") == "refundcore"


def test_generated_refund_ids_are_unique_and_ordered(run: SandboxRun) -> None:
    payment = seed(run, "1000.00")
    ids = [
        run.client.refund("testpay", payment=payment, amount=Money("1", HKD)).refund_id
        for _ in range(5)
    ]
    assert len(set(ids)) == 5 and all(len(i) == 26 for i in ids)
    assert ids == sorted(ids)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"refund_id": "has space"}, "refund_id"),
        ({"refund_id": ""}, "refund_id"),
        ({"refund_id": "x" * 65}, "refund_id"),
        ({"refund_id": "naïve"}, "refund_id"),
        ({"amount": 10.0}, "amount"),
        ({"amount": Decimal("10")}, "amount"),
        ({"amount": "10.00"}, "amount"),
        ({"payment": None}, "payment"),
        ({"payment": {"payment_id": "1"}}, "payment"),
        ({"reason": "line\nbreak"}, "reason"),
        ({"reason": "x" * 300}, "reason"),
        ({"notify_url": "ftp://x.example/cb"}, "notify_url"),
        ({"notify_url": "/relative"}, "notify_url"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(
    run: SandboxRun, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"payment": seed(run), "amount": Money("1", HKD), **kwargs}
    with pytest.raises(ValidationError) as error:
        run.client.refund("testpay", **args)
    assert error.value.field == field
    assert run.server.requests == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "payment"),
        ({"payment_id": ""}, "payment.payment_id"),
        ({"payment_id": " 1"}, "payment.payment_id"),
        ({"merchant_reference": "a\tb"}, "payment.merchant_reference"),
        ({"transaction_id": "x" * 129}, "payment.transaction_id"),
        ({"payment_id": 12}, "payment.payment_id"),
    ],
)
def test_payment_ref_is_checked(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        PaymentRef(**kwargs)
    assert error.value.field == field


def test_unsupported_currency_and_operation(
    testpay_variant: Callable[..., object], make_client: MakeClient
) -> None:
    limited = testpay_variant("limited", currencies={"HKD"}, query=False, callbacks=False)
    client = make_client(
        {"limited": {"api_key": "k", "secret": "s", "base_url": "http://127.0.0.1:9"}},
        entry_points=False,
    )
    client.register_plugin(limited)
    payment = PaymentRef(payment_id="1")
    with pytest.raises(ValidationError, match="does not take USD"):
        client.refund("limited", payment=payment, amount=Money("1", "USD"))
    with pytest.raises(ValidationError, match="cannot query"):
        client.query("limited", refund_id="r-1")
    with pytest.raises(ValidationError, match="offers no void"):
        client.void("limited", payment=payment)
    with pytest.raises(ValidationError, match="sends no callbacks"):
        client.refund(
            "limited", payment=payment, amount=Money("1", HKD), notify_url="https://x.example/cb"
        )


def test_notify_url_a_provider_cannot_carry_is_refused_naming_its_setting(
    testpay_variant: Callable[..., object], make_client: MakeClient
) -> None:
    setting = "the merchant console (Settings > Notifications)"
    client = make_client(
        {"fixedurl": {"api_key": "k", "secret": "s", "base_url": "http://127.0.0.1:9"}},
        entry_points=False,
        journal=None,
    )
    client.register_plugin(
        testpay_variant("fixedurl", notify_url=False, notify_url_setting=setting, void=True)
    )
    payment = PaymentRef(payment_id="1")
    refund = Refund(
        refund_id="r-1", payment=payment, amount=Money("1", HKD), notify_url="https://x.example/cb"
    )
    for attempt in (
        lambda: client.check("fixedurl", refund),
        lambda: client.execute("fixedurl", refund),
        lambda: client.void("fixedurl", payment=payment, notify_url="https://x.example/cb"),
    ):
        with pytest.raises(ValidationError) as error:
            attempt()
        assert error.value.field == "notify_url"
        assert setting in str(error.value)
    client.check("fixedurl", attrs.evolve(refund, notify_url=None))
    assert client.provider("fixedurl").as_dict()["capabilities"]["notify_url"] is False


@pytest.mark.parametrize(
    "fault",
    [
        Fault(delay=30),
        Fault(drop=True),
        Fault(truncate=True),
        Fault(garbage=True),
        Fault(status=500, reach_app=True),
        Fault(status=504, reach_app=False),
    ],
    ids=["timeout", "drop", "truncate", "garbage", "500", "504"],
)
def test_uncertain_outcomes_are_unknown_never_failed(run: SandboxRun, fault: Fault) -> None:
    if fault.delay:
        # The gateway holds the reply far longer than the client waits (until the run
        # stops), so the client gives up first however loaded the machine is.
        short_wait = {**run.emulator.client_config(run.server.base_url), "read_timeout": 0.5}
        run.client.configure("testpay", short_wait)
    run.server.inject("/v1/refunds", fault)
    result = run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    assert result.status is RefundStatus.UNKNOWN
    assert "query the refund" in (result.message or "")
    assert len(run.server.requests) == 1, "the transport must never resend on its own"


def test_an_oversized_reply_is_not_read_and_the_outcome_is_unknown(
    run: SandboxRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    import refundcore.async_transport
    import refundcore.transport

    monkeypatch.setattr(refundcore.transport, "MAX_RESPONSE_BYTES", 1000)
    monkeypatch.setattr(refundcore.async_transport, "MAX_RESPONSE_BYTES", 1000)
    run.server.inject("/v1/refunds", Fault(status=200, body=b"x" * 1001, times=1))
    result = run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    assert result.status is RefundStatus.UNKNOWN
    assert "cut short" in (result.message or "")
    assert "reply larger than 1000 bytes" in (result.message or "")

    # At the limit, the reply is read (and here found unreadable, so still UNKNOWN).
    run.server.inject("/v1/refunds", Fault(status=200, body=b"x" * 1000, times=1))
    result = run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    assert result.status is RefundStatus.UNKNOWN
    assert "cut short" not in (result.message or "") and result.http_status == 200


def test_redirects_are_not_followed(run: SandboxRun) -> None:
    run.server.inject("/v1/refunds", Fault(status=307, body=b"", reach_app=False))
    result = run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    assert result.status is RefundStatus.UNKNOWN
    assert len(run.server.requests) == 1


def test_refused_connection_is_a_transport_error_saying_nothing_was_sent(
    installed: Path, make_client: MakeClient
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(
        {"testpay": {"api_key": "k", "secret": "s", "base_url": f"http://127.0.0.1:{port}"}},
        journal=None,
    )
    with pytest.raises(TransportError, match="nothing was sent"):
        client.refund("testpay", payment=PaymentRef(payment_id="1"), amount=Money("1", HKD))


def test_a_crashing_stage_before_sending_is_a_plugin_error(run: SandboxRun) -> None:
    class Crash:
        @hookimpl(wrapper=True)
        def refundcore_sign_request(self) -> Any:
            yield
            raise RuntimeError("boom")

    run.client.register_plugin(Crash())
    with pytest.raises(PluginError, match="refundcore_sign_request: RuntimeError"):
        run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    assert run.server.requests == []


def test_a_crashing_parser_gives_unknown_not_an_exception(run: SandboxRun) -> None:
    class Crash:
        @hookimpl(tryfirst=True)
        def refundcore_parse_response(self) -> RefundResult:
            raise KeyError("data")

    run.client.register_plugin(Crash())
    result = run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    assert result.status is RefundStatus.UNKNOWN and result.error_code == "unparseable"


def test_threads_share_one_client(run: SandboxRun) -> None:
    payment = seed(run, "1000.00")
    results: list[RefundResult] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        result = run.client.refund(
            "testpay", payment=payment, amount=Money("1", HKD), refund_id=f"t-{n}"
        )
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.refund_id for r in results) == sorted(f"t-{n}" for n in range(16))
    assert all(r.status is RefundStatus.SUCCEEDED for r in results)


def test_clients_with_different_configs_coexist(installed: Path, make_client: MakeClient) -> None:
    with (
        SandboxRun("testpay", client=make_client(journal=None)) as one,
        SandboxRun("testpay", client=make_client(journal=None)) as two,
    ):
        assert one.emulator.credentials != two.emulator.credentials
        r1 = one.client.refund("testpay", payment=seed(one), amount=Money("1", HKD))
        r2 = two.client.refund("testpay", payment=seed(two), amount=Money("1", HKD))
        assert r1.succeeded and r2.succeeded
        wrong = two.client.refund("testpay", payment=seed(one), amount=Money("1", HKD))
        assert wrong.status is RefundStatus.FAILED


def test_query_reports_the_refund(run: SandboxRun) -> None:
    refund = run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    queried = run.client.query("testpay", refund_id=refund.refund_id)
    assert queried.status is RefundStatus.SUCCEEDED and queried.operation == "query"
    # The gateway's "no such refund" proves nothing on its own: UNKNOWN, its code kept.
    missing = run.client.query("testpay", refund_id="never-sent")
    assert missing.status is RefundStatus.UNKNOWN
    assert missing.error_code in run.info.capabilities.lookup.not_found_codes
    assert "proves nothing by itself" in (missing.message or "")


def test_no_secret_in_logs_reprs_or_errors(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    secret = run.emulator.credentials["secret"]
    caplog.set_level(logging.DEBUG)
    result = run.client.refund(
        "testpay", payment=seed(run), amount=Money("1", HKD), notify_url=run.notify_url
    )
    run.wait_for_notifications(1)
    texts = [repr(result), repr(run.client), repr(run.client.config_for("testpay"))]
    texts += [record.getMessage() for record in caplog.records]
    texts += [str(record.args) for record in caplog.records]
    with pytest.raises(Exception) as error:
        run.client.configure("testpay", {"api_key": 1, "secret": secret})
    texts.append(str(error.value))
    assert any("testpay" in text for text in texts)
    assert not [text for text in texts if secret in text]


def test_raw_is_scrubbed_of_configured_secrets(run: SandboxRun) -> None:
    secret = run.emulator.credentials["secret"]

    class EchoSecret:
        @hookimpl(wrapper=True)
        def refundcore_parse_response(self) -> Any:
            import attrs

            result = yield
            return attrs.evolve(result, raw={"echo": f"key={secret}", "nested": [{"k": secret}]})

    run.client.register_plugin(EchoSecret())
    result = run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    assert secret not in repr(result.raw)
    assert result.raw["echo"] == "key=********"


def test_scrubbing_masks_secrets_anywhere_and_leaves_clean_values_as_they_are() -> None:
    from decimal import Decimal
    from types import MappingProxyType

    from refundcore.redaction import scrub

    class Text(str):
        pass

    clean = {"a": [1, Decimal("1.50"), None, True, {"b": "text"}], "c": "plain"}
    assert scrub(clean, ("s3cret",)) is clean
    frozen = MappingProxyType(clean)  # what every model's raw is
    assert scrub(frozen, ("s3cret",)) is frozen
    assert scrub(MappingProxyType({"k": "s3cret"}), ("s3cret",)) == {"k": "********"}
    dirty = {"a": [1, ("x", "has s3cret"), {"b": Text("s3cret!")}], "c": "plain"}
    assert scrub(dirty, ("s3cret",)) == {
        "a": [1, ["x", "has ********"], {"b": "********!"}],
        "c": "plain",
    }
    assert dirty["a"][1] == ("x", "has s3cret")  # the caller's value is not changed


def test_a_secret_too_short_to_mask_masks_nothing_else() -> None:
    # "1" or "abc" would be found in most replies by chance: such a secret is not
    # masked (nor is a form of it), rather than masking every digit or word it is in.
    from refundcore.redaction import MASK, scrub

    reply = {"amount": "10.00", "id": "R-1", "note": "abc", "n": 1}
    for short in ("1", "ab", "abc"):
        assert scrub(reply, (short,)) is reply
    # From four characters on, it is masked in any case; its short forms are not sought.
    assert scrub({"note": "key TeSt"}, ("test",)) == {"note": f"key {MASK}"}
    assert scrub({"note": "dGVzdA=="}, ("test",)) == {"note": "dGVzdA=="}


_SECRET = "s3cret"
_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(value=_json_like, dirty=st.booleans())
def test_scrubbing_never_leaks_and_never_changes_clean_data(value: object, dirty: bool) -> None:
    from refundcore.redaction import scrub

    if dirty:
        value = {"planted": [f"x{_SECRET}y"], "rest": value}
    before = repr(value)
    scrubbed = scrub(value, (_SECRET,))
    assert repr(value) == before  # the caller's value is never changed
    if _SECRET not in before.lower():  # masked in any letter case
        assert scrubbed is value
    else:
        assert _SECRET not in repr(scrubbed)


_flat_text = st.text(alphabet="ab\x00", max_size=4)


@given(
    value=st.dictionaries(_flat_text, _flat_text | st.integers() | st.none(), max_size=5),
    secret=st.text(alphabet="ab\x00", min_size=4, max_size=5),
)
def test_scrubbing_a_flat_mapping_finds_a_secret_in_any_key_or_value(
    value: dict[str, object], secret: str
) -> None:
    # A flat mapping is searched as one joined text: a secret in any key or value must
    # be found, and one that only spans a joint (it may hold the joint's character)
    # must change nothing.
    from refundcore.redaction import MASK, scrub

    scrubbed = scrub(value, (secret,))
    texts = [*value, *(item for item in value.values() if isinstance(item, str))]
    if any(secret in text for text in texts):
        assert scrubbed is not value
        assert not any(secret in text for text in scrubbed)
        assert not any(isinstance(v, str) and secret in v for v in scrubbed.values())
        assert MASK in repr(scrubbed)
    else:
        assert scrubbed is value


def test_verify_callback_input_checks(run: SandboxRun) -> None:
    with pytest.raises(ValidationError, match="body: must be bytes"):
        run.client.verify_callback("testpay", method="POST", path="/", headers={}, body="text")  # type: ignore[arg-type]
    with pytest.raises(SignatureError, match="too large"):
        run.client.verify_callback(
            "testpay", method="POST", path="/", headers={}, body=b"x" * (2 << 20)
        )
    with pytest.raises(SignatureError, match="malformed callback"):
        run.client.verify_callback("testpay", method="POST", path="/", headers={"X": 1}, body=b"")  # type: ignore[dict-item]


def test_import_is_lazy() -> None:
    """Importing refundcore (and touching the client class) pulls in no heavy library
    and no plugin: those load when a provider is used."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, refundcore; refundcore.RefundClient; print(' '.join(sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = set(probe.stdout.split())
    assert "refundcore.client" in imported
    for heavy in (
        "requests",
        "cryptography",
        "cattrs",
        "urllib3",
        "importlib.metadata",
        "opentelemetry",
        "httpx",
    ):
        assert heavy not in imported, f"import refundcore imported {heavy}"
    assert not [name for name in imported if name.startswith("refundcore_")]


def test_query_strings_stay_out_of_logs_and_errors(
    installed: Path, caplog: pytest.LogCaptureFixture, make_client: MakeClient
) -> None:
    """Some gateways put a hash of their secret in the query string: neither the
    transport's request log nor a transport error may carry it."""

    class QueryInUrl:
        @hookimpl(wrapper=True)
        def refundcore_build_request(self) -> Any:
            request = yield
            import attrs

            return attrs.evolve(request, url=request.url + "?hash=SECRETHASH")

    caplog.set_level(logging.DEBUG)
    with SandboxRun("testpay", client=make_client(journal=None)) as run:
        run.client.register_plugin(QueryInUrl())
        run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
        run.server.inject("*", Fault(drop=True))
        dropped = run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
    assert dropped.status is RefundStatus.UNKNOWN
    assert "SECRETHASH" not in (dropped.message or "")
    client_side = [r for r in caplog.records if not r.name.startswith("refundcore.sandbox")]
    assert any(
        r.name == "refundcore.transport" and getattr(r, "url", "").endswith("/v1/refunds?…")
        for r in client_side
    )
    texts = [r.getMessage() + repr(record_fields(r)) for r in client_side]
    assert not [text for text in texts if "SECRETHASH" in text]
