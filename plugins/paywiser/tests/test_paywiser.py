"""PayWiser: the refundcore conformance suite, and this protocol's exact bytes, config,
input checks and reply mapping."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs
import pytest
import refundcore_paywiser as paywiser
import requests
from hypothesis import given
from hypothesis import strategies as st

from refundcore import (
    Callback,
    ConfigError,
    HttpRequest,
    HttpResponse,
    Money,
    PaymentRef,
    RefundClient,
    RefundStatus,
    ValidationError,
    hookimpl,
)
from refundcore.models import Refund, RefundQuery
from refundcore.sandbox import Fault, RecordedRequest, SandboxRun
from refundcore.testing import ProviderConformance, ProviderStages

FIXED = dt.datetime(2026, 3, 4, 12, 34, 56, tzinfo=dt.timezone.utc)
SHOP = "https://shop.example/hooks/paywiser"


def _flip_last(text: str) -> str:
    return text[:-1] + ("0" if text[-1:] != "0" else "1")


def _replace_form_field(body: bytes, names: tuple[str, ...]) -> bytes:
    pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True)
    return urlencode([(k, _flip_last(v) if k in names else v) for k, v in pairs]).encode()


class TestPaywiserConformance(ProviderConformance):
    provider = "paywiser"
    currency = "USD"
    payment_amount = "100.00"

    def tamper_request_signature(self, before: HttpRequest, signed: HttpRequest) -> HttpRequest:
        """PayWiser's request hash is a form field."""
        assert b"hash=" in signed.body
        return attrs.evolve(signed, body=_replace_form_field(signed.body, ("hash",)))

    def tamper_callback_signature(self, callback: Callback) -> Callback:
        """The postback's check value is a form field (vry or vrfy)."""
        assert b"vry=" in callback.body or b"vrfy=" in callback.body
        return attrs.evolve(
            callback, body=_replace_form_field(callback.body, paywiser.CHECK_FIELDS)
        )


def test_default_callback_body_tamper_hits_the_form_amount() -> None:
    # The conformance suite's default tamper swaps the first digit after "amount": in a
    # PayWiser form that is the amount field's value, which the check value covers.
    genuine = Callback(
        method="POST",
        path="/cb",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=b"sid=1&status=OK&txid=2&tx_action=REFUND&amount=40.00&currency=USD&vry=ab",
    )
    tampered = TestPaywiserConformance().tamper_callback_body(genuine)
    assert b"amount=70.00" in tampered.body


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def run() -> Iterator[SandboxRun]:
    with SandboxRun("paywiser", read_timeout=2.0) as sandbox:
        yield sandbox


@pytest.fixture
def fixed_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxRun]:
    """The page's example site (sid 22, rcode 222b6c) with both clocks at FIXED."""
    monkeypatch.setattr(paywiser, "current_time", lambda: FIXED)
    with SandboxRun(
        "paywiser",
        credentials={"sid": "22", "rcode": "222b6c"},
        emulator_options={"clock": lambda: FIXED},
        read_timeout=2.0,
    ) as sandbox:
        yield sandbox


def api_requests(run: SandboxRun) -> list[RecordedRequest]:
    """What reached the gateway's API (postbacks to the emulator's own sink left out)."""
    return [r for r in run.server.requests if r.target.startswith("/api/")]


# -- signatures: fixed inputs, fixed outputs ------------------------------------------------


def test_refund_hash_matches_the_documented_example() -> None:
    # The refund page's one worked example (it prints no example reply):
    # md5('22'.'1234568995265421'.'17.00'.'CNY'.'222b6c')
    assert paywiser.refund_hash("22", "1234568995265421", "17.00", "CNY", "222b6c") == (
        "139d14fde947174e9c87fcc9297b22f2"
    )


def test_status_hash_exact() -> None:
    assert paywiser.status_hash("22", "222b6c") == "ae6ca1a2e63fb97c685d07d0e418ec06"


def test_postback_check_exact() -> None:
    assert paywiser.postback_check("22", "222b6c", "7000002", "OK", "17.00", "USD", "REFUND") == (
        "c6501460f34aace3ddee115b8dc766c42fb532bc660343c314ca4bf7ca00370e"
    )


def test_postback_tag_exact() -> None:
    assert paywiser.postback_tag("222b6c", "22", "7000001", "r-wire-1", "17.00", "USD") == (
        "c14516a1d8e86f6900121417ba9a44c10e3b7dbce035e35c2ab6ae292699013a"
    )


def test_timestamp_is_utc_in_the_configured_format() -> None:
    config = attrs.evolve(_config(), timestamp_format="%Y%m%d%H%M%S")
    plus_two = FIXED.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert paywiser.timestamp_text(config, plus_two) == "20260304123456"
    assert paywiser.timestamp_text(_config(), FIXED) == "123456"


# -- exact wire bytes -----------------------------------------------------------------------


def test_refund_exact_wire_bytes(fixed_run: SandboxRun) -> None:
    payment = fixed_run.emulator.seed_payment(Money("100.00", "USD"))
    assert payment.payment_id == "7000001"
    result = fixed_run.client.refund(
        "paywiser",
        payment=payment,
        amount=Money("17.00", "USD"),
        refund_id="r-wire-1",
        notify_url=SHOP,
    )
    assert result.status is RefundStatus.SUCCEEDED, result.message
    (sent,) = api_requests(fixed_run)
    assert sent.method == "POST"
    assert sent.target == "/api/v1/index.php/7000001/refund"
    assert sent.body == (
        b"sid=22"
        b"&hash=4303ebd33bd3050f0e3a89a4a189a09d"
        b"&postback_url=https%3A%2F%2Fshop.example%2Fhooks%2Fpaywiser"
        b"%3Frefundcore_refund_id%3Dr-wire-1"
        b"%26refundcore_tag%3Dc14516a1d8e86f6900121417ba9a44c10e3b7dbce035e35c2ab6ae292699013a"
        b"&timestamp=123456"
        b"&currency=USD"
        b"&amount=17.00"
        b"&tx_action=REFUND"
    )
    assert sent.header("Content-Type") == "application/x-www-form-urlencoded"
    assert sent.header("Content-Length") == str(len(sent.body))
    assert sent.header("User-Agent") == "refundcore"
    wire = sent.target.encode() + b"".join(f"{k}: {v}".encode() for k, v in sent.headers)
    assert b"222b6c" not in wire + sent.body, "the rcode left the process"
    assert [name for name, _ in parse_qsl(sent.body.decode())] == list(paywiser.REFUND_FIELD_ORDER)


def test_status_query_exact_wire_bytes(fixed_run: SandboxRun) -> None:
    payment = fixed_run.emulator.seed_payment(Money("100.00", "USD"))
    fixed_run.client.query("paywiser", refund_id="r-q", payment=payment)
    (sent,) = api_requests(fixed_run)
    assert sent.method == "GET" and sent.body == b""
    assert sent.target == (
        "/api/v1/index.php/7000001/getstatus?hash=ae6ca1a2e63fb97c685d07d0e418ec06"
    )
    assert "222b6c" not in sent.target


@pytest.mark.parametrize(
    ("amount", "wire"),
    [
        (Money("17", "JPY"), "17.00"),
        (Money("1.250", "KWD"), "1.25"),
        (Money("17.1", "USD"), "17.10"),
        (Money("0.5", "BHD"), "0.50"),
    ],
    ids=["JPY", "KWD", "USD", "BHD"],
)
def test_amount_is_sent_with_two_decimals_and_hashed_so(
    fixed_run: SandboxRun, amount: Money, wire: str
) -> None:
    """PayWiser's page: "Refund amount with 2 decimals", whatever the currency; the
    hash signs exactly that text, and the emulator checks both."""
    payment = fixed_run.emulator.seed_payment(Money(amount.amount * 3, amount.currency))
    result = fixed_run.client.refund("paywiser", payment=payment, amount=amount, notify_url=SHOP)
    assert result.status is RefundStatus.SUCCEEDED, result.message
    (sent,) = api_requests(fixed_run)
    form = dict(parse_qsl(sent.body.decode()))
    assert (form["amount"], form["currency"]) == (wire, amount.currency)
    assert f"&currency={amount.currency}&amount={wire}&".encode() in sent.body
    assert form["hash"] == paywiser.refund_hash("22", "123456", wire, amount.currency, "222b6c")
    assert paywiser.wire_amount(amount) == wire


@pytest.mark.parametrize(
    "amount", [Money("1.255", "KWD"), Money("0.001", "BHD"), Money("1.0001", "CLF")]
)
def test_amount_without_two_decimals_is_refused_before_sending(
    fixed_run: SandboxRun, amount: Money
) -> None:
    payment = fixed_run.emulator.seed_payment(Money("100", amount.currency))
    with pytest.raises(ValidationError) as error:
        fixed_run.client.refund("paywiser", payment=payment, amount=amount, notify_url=SHOP)
    assert error.value.field == "amount"
    assert "two decimals" in str(error.value)
    assert api_requests(fixed_run) == []


@pytest.mark.parametrize("text", ["17", "17.0", "17.000", "17.50"])
def test_emulator_takes_only_two_decimal_amounts(fixed_run: SandboxRun, text: str) -> None:
    """An amount not written with two decimals (or, for JPY, not whole) is refused."""
    fixed_run.emulator.seed_payment(Money("100", "JPY"))
    body = (
        f"sid=22&hash={paywiser.refund_hash('22', '123456', text, 'JPY', '222b6c')}"
        f"&postback_url=https%3A%2F%2Fshop.example%2Fp&timestamp=123456&currency=JPY"
        f"&amount={text}&tx_action=REFUND"
    )
    reply = requests.post(
        fixed_run.server.base_url + "/api/v1/index.php/7000001/refund",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert reply.json()["error_code"] == "INVALID_AMOUNT"


def test_signing_twice_replaces_hash_and_timestamp(fixed_run: SandboxRun) -> None:
    stages = ProviderStages(fixed_run.client, "paywiser")
    operation = Refund(
        refund_id="r-twice", payment=PaymentRef(payment_id="7000001"), amount=Money("1", "USD")
    )
    once = stages.sign(stages.build(operation))
    twice = stages.sign(once)
    assert once.body == twice.body


# -- configuration --------------------------------------------------------------------------


def _config(**overrides: Any) -> paywiser.PaywiserConfig:
    client = RefundClient(
        {"paywiser": {"environment": "production", "sid": "22", "rcode": "222b6c", **overrides}}
    )
    config: paywiser.PaywiserConfig = client.config_for("paywiser")
    return config


def test_production_is_the_only_host() -> None:
    assert _config().base_url == "https://office.paywiser.com"
    assert _config().timestamp_format == "%H%M%S"
    assert "222b6c" not in repr(_config())


def test_the_documented_host_is_the_only_environment() -> None:
    environments = RefundClient(journal=None).provider("paywiser").environments
    assert environments == {"production": "https://office.paywiser.com"}


def test_sandbox_without_base_url_is_a_config_error_that_says_why() -> None:
    client = RefundClient({"paywiser": {"sid": "22", "rcode": "222b6c"}})
    with pytest.raises(ConfigError, match="publishes no sandbox host; set base_url") as error:
        client.config_for("paywiser")
    assert error.value.field == "base_url" and error.value.provider == "paywiser"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timestamp_format", "%Q"),
        ("timestamp_format", "hhmmss"),
        ("timestamp_format", ""),
        ("timestamp_format", "%H\x00"),
        ("postback_url", "not a url"),
        ("postback_url", "ftp://shop.example/pb"),
        ("postback_url", "https://shop.example/pb?refundcore_refund_id=1"),
        ("sid", "has space"),
        ("sid", ""),
        ("rcode", ""),
    ],
)
def test_bad_settings_are_config_errors_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"paywiser(\.|: ){field}"):
        _config(**{field: value})


def test_good_optional_settings() -> None:
    config = _config(postback_url="http://127.0.0.1:8080/pb", timestamp_format="%Y%m%d%H%M%S")
    assert config.postback_url == "http://127.0.0.1:8080/pb"


# -- bad input is refused before anything is sent -------------------------------------------


@pytest.mark.parametrize(
    "ptxid",
    ["../7000001", "a/b", "7000%2F1", "7000?x=1", "70 01", "x" * 65, "7000001#", "é"],
)
def test_unsafe_ptxid_is_refused(run: SandboxRun, ptxid: str) -> None:
    run.server.clear_requests()
    with pytest.raises(ValidationError) as error:
        run.client.refund(
            "paywiser", payment=PaymentRef(payment_id=ptxid), amount=Money("1", "USD")
        )
    assert error.value.field == "payment.payment_id"
    with pytest.raises(ValidationError):
        run.client.query("paywiser", refund_id="q-1", payment=PaymentRef(payment_id=ptxid))
    assert run.server.requests == []


def test_payment_id_is_required(run: SandboxRun) -> None:
    run.server.clear_requests()
    only_reference = PaymentRef(merchant_reference="order-1")
    with pytest.raises(ValidationError) as error:
        run.client.refund("paywiser", payment=only_reference, amount=Money("1", "USD"))
    assert error.value.field == "payment.payment_id"
    with pytest.raises(ValidationError) as error:
        run.client.query("paywiser", refund_id="never-sent", payment=only_reference)
    assert error.value.field == "payment.payment_id"
    with pytest.raises(ValidationError):
        run.client.query("paywiser", refund_id="never-sent")
    assert run.server.requests == []


def test_postback_url_is_required(run: SandboxRun) -> None:
    settings = run.emulator.client_config(run.server.base_url)
    del settings["postback_url"]
    run.client.configure("paywiser", settings)
    payment = run.emulator.seed_payment(Money("10.00", "USD"))
    run.server.clear_requests()
    with pytest.raises(ValidationError) as error:
        run.client.refund("paywiser", payment=payment, amount=Money("1", "USD"))
    assert error.value.field == "notify_url"
    assert run.server.requests == []
    result = run.client.refund(
        "paywiser", payment=payment, amount=Money("1", "USD"), notify_url=run.notify_url
    )
    assert result.status is RefundStatus.SUCCEEDED


def test_notify_url_with_refundcores_own_parameters_is_refused(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("10.00", "USD"))
    run.server.clear_requests()
    with pytest.raises(ValidationError) as error:
        run.client.refund(
            "paywiser",
            payment=payment,
            amount=Money("1", "USD"),
            notify_url=f"{SHOP}?refundcore_tag=x",
        )
    assert error.value.field == "notify_url"
    assert run.server.requests == []


def test_void_is_not_offered(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("10.00", "USD"))
    with pytest.raises(ValidationError, match="no void"):
        run.client.void("paywiser", payment=payment)


def test_postback_url_keeps_the_merchants_query_and_fragment() -> None:
    url = paywiser.postback_url_for(
        "https://shop.example/pb?shop=1#frag",
        _config(),
        ptxid="7000001",
        refund_id="r-1",
        amount="1.00",
        currency="USD",
    )
    assert url.startswith("https://shop.example/pb?shop=1&refundcore_refund_id=r-1&refundcore_tag=")
    assert url.endswith("#frag")


# -- the reply and the status table -------------------------------------------------------------


def parse(run: SandboxRun, body: Any, status: int = 200, operation: Any = None) -> Any:
    """Feed one reply to the parse hook."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    operation = operation or Refund(
        refund_id="page-1", payment=PaymentRef(payment_id="7000001"), amount=Money("17", "USD")
    )
    return ProviderStages(run.client, "paywiser").parse(
        operation, HttpResponse(status=status, body=raw)
    )


@pytest.mark.parametrize(
    ("http", "body", "expected"),
    [
        (200, {"status": "OK", "txid": "1"}, RefundStatus.SUCCEEDED),
        (200, {"status": "PEND", "txid": "1"}, RefundStatus.PENDING),
        (200, {"status": "EXC", "error_msg": "declined"}, RefundStatus.FAILED),
        (400, {"status": "EXC", "error_msg": "bad"}, RefundStatus.FAILED),
        (200, {"status": "PAYG_ERROR"}, RefundStatus.UNKNOWN),
        (200, {"status": "ok"}, RefundStatus.UNKNOWN),
        (200, {"status": "WEIRD"}, RefundStatus.UNKNOWN),
        (200, {"txid": "1"}, RefundStatus.UNKNOWN),
        (200, {"status": 1}, RefundStatus.UNKNOWN),
        (200, ["OK"], RefundStatus.UNKNOWN),
        (404, {"status": "OK"}, RefundStatus.UNKNOWN),
        (404, b"<html>Not Found</html>", RefundStatus.UNKNOWN),
        (500, {"status": "EXC"}, RefundStatus.UNKNOWN),
        (502, b"<html>Bad Gateway</html>", RefundStatus.UNKNOWN),
        (503, b"", RefundStatus.UNKNOWN),
        (200, b"not json", RefundStatus.UNKNOWN),
        (200, b'{"status": "OK"', RefundStatus.UNKNOWN),
        (200, b'{"status": "OK", "amount": NaN}', RefundStatus.UNKNOWN),
        (200, b"[" * 100_000, RefundStatus.UNKNOWN),
    ],
)
def test_status_table(run: SandboxRun, http: int, body: Any, expected: RefundStatus) -> None:
    assert parse(run, body, http).status is expected


@pytest.mark.parametrize(
    "fault",
    [Fault(delay=3.0), Fault(drop=True), Fault(status=502, reach_app=False)],
    ids=["timeout", "dropped", "502"],
)
def test_uncertain_outcome_of_a_query_is_unknown(run: SandboxRun, fault: Fault) -> None:
    payment = run.emulator.seed_payment(Money("10.00", "USD"))
    run.server.inject("*", fault)
    result = run.client.query("paywiser", refund_id="q-1", payment=payment)
    assert result.status is RefundStatus.UNKNOWN
    assert paywiser.status_hash(run.emulator.sid, run.emulator.rcode) not in (result.message or "")


def test_page_example_ok(run: SandboxRun) -> None:
    # Instant response, "Status OK - Refund Submitted".
    result = parse(run, {"status": "OK", "txid": "8812345", "comment": "Refund Submitted"})
    assert result.status is RefundStatus.SUCCEEDED
    assert result.provider_refund_id == "8812345"
    assert result.message == "Refund Submitted"


def test_page_example_pend(run: SandboxRun) -> None:
    # "PEND - Refund Request Pending Approval"
    result = parse(run, {"status": "PEND", "txid": "8812346"})
    assert result.status is RefundStatus.PENDING
    assert result.provider_refund_id == "8812346"


def test_page_example_exc_keeps_every_error_field(run: SandboxRun) -> None:
    # "EXC - Refund Request failed", with the error fields and the reason in comment.
    reply = {
        "status": "EXC",
        "txid": "",
        "error_type": "refund",
        "error_sys": "server",
        "error_msg": "Refund declined",
        "error_info": "Bank: 05 Do not honour",
        "error_code": "051",
        "comment": "Refund declined",
    }
    result = parse(run, reply)
    assert result.status is RefundStatus.FAILED
    assert result.error_code == "051"
    assert result.message == "Refund declined; Bank: 05 Do not honour [refund/server]"
    assert result.provider_refund_id is None
    assert dict(result.raw) == reply


def test_page_example_exc_with_only_a_comment(run: SandboxRun) -> None:
    result = parse(run, {"status": "EXC", "comment": "Amount exceeds\x00 balance"})
    assert result.status is RefundStatus.FAILED
    assert result.message == "Amount exceeds balance"


def test_payshield_getstatus_example_is_not_taken_for_a_refund(run: SandboxRun) -> None:
    # PayShield's documented getstatus sample, placeholders and all: numbers are numbers.
    sample = (
        b'{"tid":"text","txid":1,"parent_txid":1,"status":"text","tx_action":"text",'
        b'"amount":1,"currency":"text","reference":"text","ref1":"text","ref2":"text",'
        b'"ref3":"text","ref4":"text","vrfy":"text"}'
    )
    query = RefundQuery(refund_id="q-page", payment=PaymentRef(payment_id="1"))
    result = parse(run, sample, operation=query)
    assert result.status is RefundStatus.UNKNOWN
    assert "not a refund" in (result.message or "")
    assert "vrfy" not in result.raw


def test_getstatus_refund_record_with_json_numbers(run: SandboxRun) -> None:
    body = (
        b'{"tid":"order-1","txid":7000002,"parent_txid":7000001,"status":"OK",'
        b'"tx_action":"REFUND","amount":17.10,"currency":"USD","vrfy":"ab"}'
    )
    query = RefundQuery(
        refund_id="q-num", payment=PaymentRef(payment_id="7000001"), provider_refund_id="7000002"
    )
    result = parse(run, body, operation=query)
    assert result.status is RefundStatus.SUCCEEDED
    assert result.provider_refund_id == "7000002"
    assert result.amount == Money("17.10", "USD")
    assert result.raw["amount"] == "17.10", "numbers stay their exact text, never floats"
    other = attrs.evolve(query, provider_refund_id="7000009")
    assert parse(run, body, operation=other).status is RefundStatus.UNKNOWN


def test_getstatus_error_reply_is_unknown_not_failed(run: SandboxRun) -> None:
    query = RefundQuery(refund_id="q-err", payment=PaymentRef(payment_id="7000001"))
    result = parse(run, {"status": "EXC", "error_msg": "Hash verification failed"}, operation=query)
    assert result.status is RefundStatus.UNKNOWN
    assert "Hash verification failed" in (result.message or "")


_json_objects = st.dictionaries(
    st.text(),
    st.none() | st.booleans() | st.integers() | st.text() | st.lists(st.text(), max_size=3),
    max_size=6,
)


@given(value=_json_objects, encoding=st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-8-sig"]))
def test_replies_decode_as_json_loads_decodes_them(value: dict[str, Any], encoding: str) -> None:
    body = json.dumps(value, ensure_ascii=False).encode(encoding, "surrogatepass")
    assert paywiser._json_object(body) == json.loads(body, parse_int=str, parse_float=str)


def test_a_reply_quoting_the_standing_status_hash_passes_it_on_nowhere(run: SandboxRun) -> None:
    # Whoever holds the getstatus hash can query this merchant's refunds for good: a
    # reply quoting it (in its error text, in an echo of the request) is masked.
    standing = paywiser.status_hash(run.emulator.sid, run.emulator.rcode)

    class Echo:
        @hookimpl
        def refundcore_send_request(self, provider: Any, config: Any, request: Any) -> Any:
            reply = {"status": "EXC", "error_msg": f"bad hash {standing}", "echo": request.url}
            return HttpResponse(status=200, body=json.dumps(reply).encode())

    run.client.register_plugin(Echo())
    payment = run.emulator.seed_payment(Money("10.00", "USD"))
    result = run.client.query("paywiser", refund_id="q-1", payment=payment)
    assert result.raw["echo"].endswith("hash=********")
    assert standing not in repr(result)
    assert standing not in json.dumps(dict(result.raw))
