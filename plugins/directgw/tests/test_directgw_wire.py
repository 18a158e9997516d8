"""BBMSL PayAPI (Online Direct): exact bytes on the wire, replies, queries, voids, the
gateway's rules and input refused before sending.

Signatures are RSASSA-PKCS1-v1_5, which is deterministic, so the exact-bytes tests sign
with the TEST-ONLY key stored beside this file (see the README). The expected signature
was cross-checked with ``openssl dgst -sha256 -sign``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from refundcore_directgw import json_text, query_outcome, sign_request_string
from refundcore_directgw.sandbox import DirectgwEmulator

from refundcore import RefundClient
from refundcore.crypto import PrivateKey, generate_rsa_keypair
from refundcore.errors import ConfigError, ValidationError
from refundcore.models import (
    HttpRequest,
    HttpResponse,
    Operation,
    PaymentRef,
    Refund,
    RefundQuery,
    RefundResult,
    RefundStatus,
    Void,
)
from refundcore.money import Money
from refundcore.sandbox import Fault, SandboxRun
from refundcore.testing import ProviderStages

KEY_FILE = Path(__file__).with_name("directgw-TEST-ONLY-private-key.pem")
MERCHANT = "3000001"
FIXED_REQUEST = (
    '{"merchantId":"3000001","orderId":1076,"merchantReference":"s22tring","amount":76.19}'
)
FIXED_SIGNATURE = (
    "gSBGfZBuYhI1rpB8sysDbM6h6Rp//QCwAfOKPWymLdeBrc+cBVAu3cCaS53Wo0ePn+T/cFeh0U4jdn1XAKZIsvrD"
    "l0tiCP01xXJsaxJuYOM/SCJ9EOm9PynGu0+uz3JthD+WiyHb2oLyDlMm3n0+CvZHUtRkAFgVQHXvZw7pOiGpnr74"
    "Pd6beFg1OMXlUFoLYuD95wfTRll2cXuIrhq46PoD+Ox7pU6UlLL90wK8KTPSQI2bgY1xpgOL6DIT1GxF40Iv/EQI"
    "75UB2UjsRhLfI9LHyfb32i0awb+S8whwSo/D9VGTUiXynP11cOXkv8JpQvriVCelT8hi7nyc2gg1/A=="
)
FIXTURES = Path(__file__).with_name("fixtures")
# The page's own example reply, as printed: order.id is a string, there is no
# transaction object, and the amount is a JSON number.
DOCS_REPLY = (FIXTURES / "refund-response-example.json").read_bytes()
# The page's example request, as printed.
DOCS_REQUEST = (FIXTURES / "refund-request-example.json").read_bytes()

_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def test_key() -> PrivateKey:
    return PrivateKey.from_pem(KEY_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def client(test_key: PrivateKey) -> Iterator[RefundClient]:
    settings = {
        "merchant_id": MERCHANT,
        "private_key": test_key.to_pem(),
        "gateway_public_key": test_key.public_key().to_pem(),
    }
    with RefundClient(config={"directgw": settings}) as client:
        yield client


def build_and_sign(client: RefundClient, operation: Operation) -> HttpRequest:
    """The request the pipeline would send, from the registered hooks (offline)."""
    stages = ProviderStages(client, "directgw")
    signed = stages.sign(stages.build(operation))
    assert isinstance(signed, HttpRequest)
    return signed


def parse(client: RefundClient, operation: Operation, status: int, body: bytes) -> RefundResult:
    result = ProviderStages(client, "directgw").parse(
        operation, HttpResponse(status=status, body=body)
    )
    assert isinstance(result, RefundResult)
    return result


def refund_of(amount: str = "76.19", currency: str = "HKD", **payment: str) -> Refund:
    ref = PaymentRef(**(payment or {"payment_id": "1076", "merchant_reference": "s22tring"}))
    return Refund(refund_id="r-1", payment=ref, amount=Money(amount, currency))


QUERY = RefundQuery(refund_id="r-1", payment=PaymentRef(payment_id="1076"))


@pytest.fixture
def run() -> Iterator[SandboxRun]:
    with SandboxRun("directgw") as run:
        assert isinstance(run.emulator, DirectgwEmulator)
        yield run


def emulator(run: SandboxRun) -> DirectgwEmulator:
    assert isinstance(run.emulator, DirectgwEmulator)
    return run.emulator


def hkd(amount: str) -> Money:
    return Money(amount, "HKD")


# -- signature and envelope: exact bytes ----------------------------------------------


def test_request_signature_exact_bytes(test_key: PrivateKey) -> None:
    assert sign_request_string(test_key, FIXED_REQUEST) == FIXED_SIGNATURE


def test_refund_envelope_exact_bytes(client: RefundClient) -> None:
    signed = build_and_sign(client, refund_of())
    assert signed.method == "POST"
    assert signed.url == "https://payapi.sit.bbmsl.com/direct/refund"
    assert dict(signed.headers) == {"Content-Type": "application/json"}
    escaped = FIXED_REQUEST.replace('"', '\\"')
    assert signed.body == f'{{"request":"{escaped}","signature":"{FIXED_SIGNATURE}"}}'.encode()


def test_refund_wire_bytes_over_loopback(test_key: PrivateKey) -> None:
    credentials = {
        "merchant_id": MERCHANT,
        "private_key": test_key,
        "gateway_key": generate_rsa_keypair(),
    }
    with SandboxRun("directgw", credentials=credentials) as run:
        payment = run.emulator.seed_payment(hkd("100.00"))
        result = run.client.refund(
            "directgw", payment=payment, amount=hkd("76.19"), refund_id="r-wire-1"
        )
        sent = run.server.requests
    assert result.status is RefundStatus.SUCCEEDED
    assert len(sent) == 1
    assert (sent[0].method, sent[0].target) == ("POST", "/direct/refund")
    assert sent[0].header("Content-Type") == "application/json"
    assert sent[0].body == (
        b'{"request":"{\\"merchantId\\":\\"3000001\\",\\"orderId\\":1000001,'
        b'\\"merchantReference\\":\\"SHOP-1000001\\",\\"amount\\":76.19}",'
        b'"signature":"ObVIrLljJe5OLkA/dcEgbw7VPJ4uDDiAx2iKzWgFh2bI0pXtv4Mfmm8BckzIoLieExLghdIAs4nf3ZCvMtps'
        b"ZGCEj7aeF9Zjxea+UoqvU9BQlmt+d7F46VQjOjn4geadrGvik0G1dmvxYuAo6bqG7tiCn9iEzq3edR7LX/6D"
        b"7xlBqgwcW5X8hIYTTn8Z3BlJFOm5oXjp/9d6oAlZKDv7BZ4GBTtYGnzzwhlQjjI5bJxtdGv4pHg0yU+yh/+h"
        b"MLaprioKpWEYMQhtG1ubCaGaiyR0hXokwZ2U9q3Pfw3mOTXqsvKttyIrodXdP2BRcsVh8wPkrmSFdN1JFvqc"
        b'udSBCQ=="}'
    )


@_SETTINGS
@given(
    reference=st.text(min_size=1, max_size=64).filter(lambda s: s.isprintable() and s == s.strip())
)
def test_envelope_decodes_to_the_signed_bytes(client: RefundClient, reference: str) -> None:
    """The gateway verifies over the *decoded* request string: it must be exactly the
    bytes signed, whatever JSON escaping the envelope needed (quotes, backslashes,
    non-ASCII, U+2028)."""
    signed = build_and_sign(client, refund_of(merchant_reference=reference))
    outer = json.loads(signed.body)
    assert set(outer) == {"request", "signature"}
    signed_bytes = outer["request"].encode("utf-8")
    key = client.config_for("directgw").private_key
    assert key.public_key().verify_sha256(base64.b64decode(outer["signature"]), signed_bytes)
    assert outer["signature"] == sign_request_string(key, outer["request"])
    assert json.loads(outer["request"])["merchantReference"] == reference


# -- amounts: exact JSON numbers, no float ---------------------------------------------

_AMOUNTS = st.decimals(
    min_value=Decimal("0.01"), max_value=Decimal("999999999999.99"), places=2
).filter(lambda d: d > 0)


@_SETTINGS
@given(amount=_AMOUNTS, currency=st.sampled_from(["HKD", "USD"]))
def test_amount_is_written_exactly(client: RefundClient, amount: Decimal, currency: str) -> None:
    money = Money(amount, currency)
    request = ProviderStages(client, "directgw").build(refund_of(money.to_wire(), currency))
    text = request.body.decode()
    assert text.endswith(f',"amount":{money.to_wire()}}}')
    assert json.loads(text, parse_float=Decimal)["amount"] == amount
    assert "e" not in money.to_wire().lower()


@_SETTINGS
@given(
    value=st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**18), max_value=10**18)
)
def test_json_text_round_trips_any_decimal(value: Decimal) -> None:
    text = json_text(value)
    assert "e" not in text.lower()
    assert json.loads(text, parse_float=Decimal, parse_int=Decimal) == value


def test_json_text_refuses_float_and_non_finite() -> None:
    with pytest.raises(TypeError):
        json_text(76.19)
    with pytest.raises(ValueError):
        json_text(Decimal("NaN"))
    assert json_text(Decimal("76.19")) == "76.19"
    assert json_text(Decimal("100.00")) == "100.00"
    assert json_text(Decimal("1E+2")) == "100"


# -- the provider page's examples --------------------------------------------------------


def test_docs_example_reply_is_succeeded(client: RefundClient) -> None:
    result = parse(client, refund_of(), 200, DOCS_REPLY)
    assert result.status is RefundStatus.SUCCEEDED
    assert result.provider_refund_id == "1076"  # no transaction: order.id, given as a string
    assert result.amount is None  # order.amount is the order's total, not the refund
    assert result.message == "SUCCESS"
    assert result.raw["order"]["amount"] == Decimal("76.19")
    assert isinstance(result.raw["order"]["amount"], Decimal)


def test_docs_example_request_artefacts() -> None:
    """The page's example envelope: its request string has a trailing comma (not JSON)
    and its signature is base64 twice (a placeholder): artefacts, not the protocol."""
    outer = json.loads(DOCS_REQUEST)
    with pytest.raises(json.JSONDecodeError):
        json.loads(outer["request"])
    once = base64.b64decode(outer["signature"], validate=True)
    assert len(once) == 344
    assert len(base64.b64decode(once, validate=True)) == 256


# -- replies: the status table in PROTOCOL.md ------------------------------------------


def _reply(code: str | int | None = "0000", **extra: Any) -> bytes:
    body: dict[str, Any] = {"message": "msg", **extra}
    if code is not None:
        body["responseCode"] = code
    return json_text(body).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected", "error_code"),
    [
        (200, _reply("0000"), RefundStatus.SUCCEEDED, None),
        (200, _reply("1001"), RefundStatus.FAILED, "1001"),
        (200, _reply("9999"), RefundStatus.FAILED, "9999"),
        (400, _reply("2003"), RefundStatus.FAILED, "2003"),
        (500, _reply("0000"), RefundStatus.UNKNOWN, "http_500"),
        (502, b"<html>Bad Gateway</html>", RefundStatus.UNKNOWN, "http_502"),
        (503, b"", RefundStatus.UNKNOWN, "http_503"),
        (200, b"<html>", RefundStatus.UNKNOWN, "unparseable"),
        (200, b"", RefundStatus.UNKNOWN, "unparseable"),
        (200, b"[]", RefundStatus.UNKNOWN, "unparseable"),
        (200, _reply(None), RefundStatus.UNKNOWN, "unparseable"),
        (200, _reply(0), RefundStatus.UNKNOWN, "unparseable"),
        (200, b'{"responseCode":"0000","amount":NaN}', RefundStatus.UNKNOWN, "unparseable"),
        (401, _reply("0000"), RefundStatus.UNKNOWN, "http_401"),
    ],
)
def test_status_table(
    client: RefundClient,
    status: int,
    body: bytes,
    expected: RefundStatus,
    error_code: str | None,
) -> None:
    result = parse(client, refund_of(), status, body)
    assert (result.status, result.error_code) == (expected, error_code)
    if expected is RefundStatus.FAILED:
        assert result.message == "msg"


@pytest.mark.parametrize("fault", [Fault(delay=30), Fault(drop=True), Fault(status=504)])
def test_uncertain_outcomes_over_loopback_are_unknown(run: SandboxRun, fault: Fault) -> None:
    if fault.delay:
        # The gateway holds the reply far longer than the client waits (until the run
        # stops), so the client gives up first however loaded the machine is.
        short_wait = {**run.emulator.client_config(run.server.base_url), "read_timeout": 0.5}
        run.client.configure("directgw", short_wait)
    payment = run.emulator.seed_payment(hkd("100.00"))
    run.server.inject("/direct/refund", fault)
    result = run.client.refund("directgw", payment=payment, amount=hkd("10.00"))
    assert result.status is RefundStatus.UNKNOWN


@pytest.mark.parametrize("order_id", ["1076", 1076])
def test_order_id_string_or_number(client: RefundClient, order_id: str | int) -> None:
    body = _reply(order={"id": order_id, "currency": "HKD", "status": "REFUNDED"})
    assert parse(client, refund_of(), 200, body).provider_refund_id == "1076"


def test_transaction_id_and_amount_win(client: RefundClient) -> None:
    body = (
        b'{"responseCode":"0000","message":"SUCCESS","order":{"id":1076,"currency":"HKD",'
        b'"amount":100.00,"status":"REFUNDED"},"transaction":{"id":2001,"type":"REFUND",'
        b'"currency":"HKD","amount":0.30,"status":"SUCCESS"}}'
    )
    result = parse(client, refund_of("0.30"), 200, body)
    assert result.provider_refund_id == "2001"
    assert result.amount == hkd("0.30")
    assert result.amount is not None and str(result.amount.amount) == "0.30"


# -- queries ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_status", "txn", "expected", "error_code"),
    [
        ("REFUNDED", {}, RefundStatus.SUCCEEDED, None),
        ("REFUNDED", {"type": "REFUND", "status": "SUCCESS"}, RefundStatus.SUCCEEDED, None),
        ("SUCCESS", {"type": "REFUND", "status": "REFUNDED"}, RefundStatus.SUCCEEDED, None),
        ("SETTLED", {"type": "refund", "status": "settled"}, RefundStatus.SUCCEEDED, None),
        ("SUCCESS", {"type": "SALE", "status": "REFUNDED"}, RefundStatus.SUCCEEDED, None),
        (
            "SUCCESS",
            {"type": "REFUND", "status": "DECLINED"},
            RefundStatus.FAILED,
            "refund_declined",
        ),
        ("SUCCESS", {"type": "REFUND", "status": "VOIDED"}, RefundStatus.FAILED, "refund_voided"),
        ("SUCCESS", {"type": "SALE", "status": "SUCCESS"}, RefundStatus.FAILED, "not_refunded"),
        ("SETTLED", {"type": "SALE", "status": "SETTLED"}, RefundStatus.FAILED, "not_refunded"),
        ("OPEN", {}, RefundStatus.FAILED, "not_refunded"),
        ("CLOSED", {}, RefundStatus.FAILED, "not_refunded"),
        ("SUCCESS", {"type": "SALE", "status": "DECLINED"}, RefundStatus.FAILED, "not_refunded"),
        ("VOIDED", {"type": "VOID", "status": "SUCCESS"}, RefundStatus.FAILED, "voided"),
        ("PENDING_REVIEW", {}, RefundStatus.UNKNOWN, "unrecognised_status"),
        (None, {}, RefundStatus.UNKNOWN, "unrecognised_status"),
    ],
)
def test_query_mapping(
    client: RefundClient,
    order_status: str | None,
    txn: dict[str, str],
    expected: RefundStatus,
    error_code: str | None,
) -> None:
    order = {"id": 1076, "currency": "HKD", "amount": Decimal("100.00"), "status": order_status}
    assert query_outcome(order, txn) == (expected, error_code)
    result = parse(client, QUERY, 200, _reply(order=order, transaction=txn))
    assert (result.status, result.error_code) == (expected, error_code)
    assert result.operation == "query"
    if expected is not RefundStatus.SUCCEEDED:
        assert result.provider_refund_id is None


def test_declined_query_is_unknown(client: RefundClient) -> None:
    result = parse(client, QUERY, 200, _reply("2001"))
    assert (result.status, result.error_code) == (RefundStatus.UNKNOWN, "2001")


def test_query_sends_one_identifier(client: RefundClient) -> None:
    both = RefundQuery(refund_id="q", payment=PaymentRef(payment_id="7", merchant_reference="m"))
    only_ref = RefundQuery(refund_id="q", payment=PaymentRef(merchant_reference="m"))
    build = ProviderStages(client, "directgw").build
    built = build(both)
    assert built.url.endswith("/direct/query")
    assert built.body == b'{"merchantId":"3000001","orderId":7}'
    built = build(only_ref)
    assert built.body == b'{"merchantId":"3000001","merchantReference":"m"}'


def test_query_settles_an_unknown_refund(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    run.server.inject("/direct/refund", Fault(status=503, reach_app=True, times=1))
    lost = run.client.refund("directgw", payment=payment, amount=hkd("40.00"))
    assert lost.status is RefundStatus.UNKNOWN
    queried = run.client.query("directgw", refund_id=lost.refund_id, payment=payment)
    assert queried.status is RefundStatus.SUCCEEDED
    assert queried.amount == hkd("40.00")
    again = run.client.refund("directgw", payment=payment, amount=hkd("40.00"))
    assert (again.status, again.error_code) == (RefundStatus.FAILED, "2002")


def test_query_of_an_unrefunded_order(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    queried = run.client.query("directgw", refund_id="never-sent", payment=payment)
    assert (queried.status, queried.error_code) == (RefundStatus.UNKNOWN, "not_refunded")
    emulator(run).mark_settled(payment)
    queried = run.client.query("directgw", refund_id="never-sent", payment=payment)
    assert (queried.status, queried.error_code) == (RefundStatus.UNKNOWN, "not_refunded")
    assert queried.raw["order"]["status"] == "SETTLED"
    unknown = run.emulator.new_payment_ref("999999")
    queried = run.client.query("directgw", refund_id="never-sent", payment=unknown)
    assert (queried.status, queried.error_code) == (RefundStatus.UNKNOWN, "2001")


def test_query_needs_the_payment(run: SandboxRun) -> None:
    with pytest.raises(ValidationError) as error:
        run.client.query("directgw", refund_id="r-1", provider_refund_id="2001")
    assert error.value.field == "payment"
    assert run.server.requests == []


# -- voids ----------------------------------------------------------------------------------


def test_void_then_everything_else_is_refused(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    voided = run.client.void("directgw", payment=payment)
    assert voided.status is RefundStatus.SUCCEEDED, voided.error_code
    assert voided.operation == "void"
    assert voided.amount == hkd("100.00")
    assert voided.provider_refund_id and voided.provider_refund_id != payment.payment_id
    assert json.loads(json.loads(run.server.requests[-1].body)["request"]) == {
        "merchantId": emulator(run).credentials["merchant_id"],
        "orderId": int(str(payment.payment_id)),
        "merchantReference": payment.merchant_reference,
    }
    again = run.client.void("directgw", payment=payment)
    assert (again.status, again.error_code) == (RefundStatus.FAILED, "2006")
    refund = run.client.refund("directgw", payment=payment, amount=hkd("1.00"))
    assert (refund.status, refund.error_code) == (RefundStatus.FAILED, "2006")
    queried = run.client.query("directgw", refund_id=voided.refund_id, payment=payment)
    assert (queried.status, queried.error_code) == (RefundStatus.FAILED, "voided")


def test_void_refused_after_refund_or_settlement(run: SandboxRun) -> None:
    refunded = run.emulator.seed_payment(hkd("100.00"))
    assert run.client.refund("directgw", payment=refunded, amount=hkd("1.00")).succeeded
    after_refund = run.client.void("directgw", payment=refunded)
    assert (after_refund.status, after_refund.error_code) == (RefundStatus.FAILED, "2005")
    settled = run.emulator.seed_payment(hkd("100.00"))
    emulator(run).mark_settled(settled)
    after_settle = run.client.void("directgw", payment=settled)
    assert (after_settle.status, after_settle.error_code) == (RefundStatus.FAILED, "2005")


# -- the gateway's rules, as the emulator enforces them ----------------------------------


def test_refund_once_over_refund_and_unsettled_balance(run: SandboxRun) -> None:
    refund = run.client.refund
    once = run.emulator.seed_payment(hkd("100.00"))
    assert refund("directgw", payment=once, amount=hkd("10.00")).succeeded
    second = refund("directgw", payment=once, amount=hkd("10.00"))
    assert (second.status, second.error_code) == (RefundStatus.FAILED, "2002")
    over = refund(
        "directgw", payment=run.emulator.seed_payment(hkd("100.00")), amount=hkd("100.01")
    )
    assert (over.status, over.error_code) == (RefundStatus.FAILED, "2003")
    short = run.emulator.seed_payment(hkd("100.00"))
    emulator(run).set_unsettled_balance(short, hkd("15.00"))
    low = refund("directgw", payment=short, amount=hkd("15.01"))
    assert (low.status, low.error_code, low.message) == (
        RefundStatus.FAILED,
        "2004",
        "Insufficient unsettled balance",
    )
    assert refund("directgw", payment=short, amount=hkd("15.00")).succeeded


def test_declining_seed_and_no_pending_seed(run: SandboxRun) -> None:
    declining = run.emulator.seed_payment(hkd("100.00"), refund_outcome=RefundStatus.FAILED)
    result = run.client.refund("directgw", payment=declining, amount=hkd("5.00"))
    assert (result.status, result.error_code) == (RefundStatus.FAILED, "2007")
    assert result.raw["transaction"]["status"] == "DECLINED"
    with pytest.raises(ValueError, match="no pending"):
        run.emulator.seed_payment(hkd("100.00"), refund_outcome=RefundStatus.PENDING)


def test_refund_by_merchant_reference_alone(run: SandboxRun) -> None:
    seeded = run.emulator.seed_payment(hkd("100.00"))
    payment = PaymentRef(merchant_reference=seeded.merchant_reference)
    assert run.client.refund("directgw", payment=payment, amount=hkd("1.00")).succeeded


def test_wrong_key_or_merchant_is_declined(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    good = dict(emulator(run).client_config(run.server.base_url))
    run.client.configure("directgw", {**good, "private_key": generate_rsa_keypair().to_pem()})
    bad_key = run.client.refund("directgw", payment=payment, amount=hkd("1.00"))
    assert (bad_key.status, bad_key.error_code) == (RefundStatus.FAILED, "1001")
    run.client.configure("directgw", {**good, "merchant_id": "3999999"})
    bad_merchant = run.client.refund("directgw", payment=payment, amount=hkd("1.00"))
    assert (bad_merchant.status, bad_merchant.error_code) == (RefundStatus.FAILED, "1002")
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None and not found.refunds


# -- input the gateway cannot take, refused before anything is sent ---------------------


@pytest.mark.parametrize(
    "payment_id",
    [
        "A123",
        "12 3",
        "\uff11\uff12\uff13",  # fullwidth digits: str.isdigit() says yes, BBMSL would not
        "\u0663\u0664",  # Arabic-Indic digits
        "0123",  # a leading zero is not a JSON number
        "1" * 19,
        "-1",
        "1.0",
        "1e3",
        "+1",
        "0x10",
    ],
)
def test_bad_order_id_is_refused_before_sending(run: SandboxRun, payment_id: str) -> None:
    payment = PaymentRef(payment_id=payment_id, merchant_reference="SHOP-1")
    for call in (run.client.refund, run.client.void):
        with pytest.raises(ValidationError) as error:
            call("directgw", payment=payment, amount=hkd("1.00"))
        assert error.value.field == "payment.payment_id"
    with pytest.raises(ValidationError):
        run.client.query("directgw", refund_id="q-1", payment=payment)
    assert run.server.requests == []


def test_other_bad_input_is_refused_before_sending(run: SandboxRun) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"payment": PaymentRef(merchant_reference="x" * 65)}, "payment.merchant_reference"),
        ({"payment": PaymentRef(transaction_id="9001")}, "payment"),
        ({"amount": Money("100", "JPY")}, "currency"),
        ({"amount": Money("1.00", "EUR")}, "currency"),
    ]
    for change, field in cases:
        kwargs: dict[str, Any] = {"payment": PaymentRef(payment_id="1"), "amount": hkd("1.00")}
        kwargs.update(change)
        with pytest.raises(ValidationError) as error:
            run.client.refund("directgw", **kwargs)
        assert error.value.field == field
    assert run.server.requests == []
    long_ok = PaymentRef(merchant_reference="x" * 64)
    result = run.client.refund("directgw", payment=long_ok, amount=hkd("1.00"))
    assert result.error_code == "2001"  # sent, and unknown to the gateway


# -- config --------------------------------------------------------------------------------------


def test_pkcs1_and_bare_base64_keys_sign_identically(test_key: PrivateKey) -> None:
    from cryptography.hazmat.primitives import serialization

    pkcs8 = test_key.to_pem()
    der = serialization.load_pem_private_key(pkcs8.encode(), password=None)
    pkcs1 = der.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    bare = "".join(pkcs8.splitlines()[1:-1])
    for form in (pkcs8, pkcs1, bare):
        settings = {
            "merchant_id": MERCHANT,
            "private_key": form,
            "gateway_public_key": test_key.public_key().to_pem(),
        }
        with RefundClient(config={"directgw": settings}) as client:
            signed = build_and_sign(client, refund_of())
        assert json.loads(signed.body)["signature"] == FIXED_SIGNATURE


@pytest.mark.parametrize(
    ("environment", "host"),
    [("sandbox", "https://payapi.sit.bbmsl.com"), ("production", "https://payapi.prod.bbmsl.com")],
)
def test_environments(test_key: PrivateKey, environment: str, host: str) -> None:
    settings = {
        "environment": environment,
        "merchant_id": MERCHANT,
        "private_key": test_key.to_pem(),
        "gateway_public_key": test_key.public_key().to_pem(),
    }
    with RefundClient(config={"directgw": settings}) as client:
        assert client.config_for("directgw").base_url == host
        signed = build_and_sign(client, Void(refund_id="v", payment=PaymentRef(payment_id="1")))
    assert signed.url == f"{host}/direct/void"


@pytest.mark.parametrize("merchant_id", ["", " 3000001", "30\n01"])
def test_bad_merchant_id_is_a_config_error(test_key: PrivateKey, merchant_id: str) -> None:
    settings = {
        "merchant_id": merchant_id,
        "private_key": test_key.to_pem(),
        "gateway_public_key": test_key.public_key().to_pem(),
    }
    client = RefundClient(config={"directgw": settings})
    with pytest.raises(ConfigError) as error:
        client.config_for("directgw")
    assert (error.value.provider, error.value.field) == ("directgw", "merchant_id")


# -- Hosted Checkout ---------------------------------------------------------------------


def _request_text(body: bytes) -> str:
    text: str = json.loads(body)["request"]
    return text


def test_hosted_checkout_paths_and_request_bytes(test_key: PrivateKey) -> None:
    """A Hosted Checkout payment is refunded, queried and voided at the paths BBMSL's
    own plugin calls, orderId a string of digits; Online Direct's stay as they were."""
    credentials = {
        "merchant_id": MERCHANT,
        "private_key": test_key,
        "gateway_key": generate_rsa_keypair(),
    }
    options = {"checkout": "hosted"}
    with SandboxRun("directgw", credentials=credentials, emulator_options=options) as run:
        assert run.client.config_for("directgw").checkout == "hosted"
        refunded = run.emulator.seed_payment(hkd("100.00"))
        voided = run.emulator.seed_payment(hkd("100.00"))
        refund = run.client.refund("directgw", payment=refunded, amount=hkd("76.19"))
        query = run.client.query("directgw", refund_id=refund.refund_id, payment=refunded)
        void = run.client.void("directgw", payment=voided)
        sent = run.server.requests
    assert [r.status for r in (refund, query, void)] == [RefundStatus.SUCCEEDED] * 3
    assert [(r.method, r.target) for r in sent] == [
        ("POST", "/hosted-checkout/refund/"),
        ("POST", "/hosted-checkout/query/"),
        ("POST", "/hosted-checkout/void/"),
    ]
    texts = [_request_text(r.body) for r in sent]
    assert texts == [
        '{"merchantId":"3000001","orderId":"1000001","merchantReference":"SHOP-1000001",'
        '"amount":76.19}',
        '{"merchantId":"3000001","merchantReference":"SHOP-1000001"}',
        '{"merchantId":"3000001","orderId":"1000003","merchantReference":"SHOP-1000003"}',
    ]
    for request, text in zip(sent, texts, strict=True):
        signature = json.loads(request.body)["signature"]
        test_key.public_key().verify_sha256_b64(signature, text.encode())


@pytest.mark.parametrize(("emulated", "configured"), [("hosted", "direct"), ("direct", "hosted")])
def test_a_payment_is_found_only_at_its_own_checkouts_paths(emulated: str, configured: str) -> None:
    with SandboxRun("directgw", emulator_options={"checkout": emulated}) as run:
        settings = dict(run.emulator.client_config(run.server.base_url))
        run.client.configure("directgw", {**settings, "checkout": configured})
        payment = run.emulator.seed_payment(hkd("100.00"))
        result = run.client.refund("directgw", payment=payment, amount=hkd("1.00"))
    assert (result.status, result.error_code) == (RefundStatus.FAILED, "2001")


def test_hosted_query_by_order_id_when_no_reference(test_key: PrivateKey) -> None:
    settings = {
        "merchant_id": MERCHANT,
        "private_key": test_key.to_pem(),
        "gateway_public_key": test_key.public_key().to_pem(),
        "checkout": "hosted",
    }
    query = RefundQuery(refund_id="q", payment=PaymentRef(payment_id="7"))
    with RefundClient(config={"directgw": settings}) as client:
        built = ProviderStages(client, "directgw").build(query)
    assert built.url.endswith("/hosted-checkout/query/")
    assert built.body == b'{"merchantId":"3000001","orderId":"7"}'


@pytest.mark.parametrize("checkout", ["Direct", "hosted-checkout", ""])
def test_unknown_checkout_is_a_config_error(test_key: PrivateKey, checkout: str) -> None:
    settings = {
        "merchant_id": MERCHANT,
        "private_key": test_key.to_pem(),
        "gateway_public_key": test_key.public_key().to_pem(),
        "checkout": checkout,
    }
    with pytest.raises(ConfigError, match="checkout"):
        RefundClient(config={"directgw": settings}).config_for("directgw")
