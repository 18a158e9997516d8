"""PayWizard: the emulated gateway's rules (voids, pending refunds, reused ids, refused
input), and the result push's signature, including how non-string values are signed."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import attrs
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from refundcore_paywizard import (
    PUSH_READ_FIELDS,
    JsonNumber,
    load_push_fields,
    push_field_text,
    push_signature,
    push_signing_string,
)

from refundcore import (
    Callback,
    Money,
    NotARefund,
    PaymentRef,
    RefundClient,
    RefundStatus,
    SignatureError,
    ValidationError,
)
from refundcore.sandbox import SandboxRun

CLIENT_ID = "825429536610058240"
CLIENT_SECRET = "9fb645400aabaa33ee0e423405d8c676"
TOKEN = "BIKE195JVXTN7WA5DXZISQ11GPEUYI7A"
CREDENTIALS = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token": TOKEN}
HKD = "HKD"


@pytest.fixture
def run() -> Iterator[SandboxRun]:
    with SandboxRun("paywizard", credentials=dict(CREDENTIALS)) as sandbox:
        yield sandbox


def hkd(amount: str) -> Money:
    return Money(amount, HKD)


def refund(run: SandboxRun, payment: PaymentRef, amount: str, **kw: Any) -> Any:
    return run.client.refund("paywizard", payment=payment, amount=hkd(amount), **kw)


# -- refunds against the emulated gateway ----------------------------------------------


def test_refund_by_merchant_reference_only(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    result = refund(run, PaymentRef(merchant_reference=payment.merchant_reference), "5.00")
    assert result.status is RefundStatus.SUCCEEDED
    assert result.raw["data"]["oriCheckoutId"] == payment.payment_id


def test_ori_checkout_id_wins_over_ori_trans_index_code(run: SandboxRun) -> None:
    first = run.emulator.seed_payment(hkd("50.00"))
    second = run.emulator.seed_payment(hkd("50.00"))
    mixed = PaymentRef(payment_id=first.payment_id, merchant_reference=second.merchant_reference)
    result = refund(run, mixed, "5.00")
    assert result.status is RefundStatus.SUCCEEDED
    assert result.raw["data"]["oriCheckoutId"] == first.payment_id


def test_unknown_payment_is_a_refusal_with_null_data(run: SandboxRun) -> None:
    result = refund(run, PaymentRef(payment_id="917121926164999999"), "1.00")
    assert result.status is RefundStatus.FAILED
    assert result.error_code == "404"
    assert result.raw["data"] is None


def test_declined_refund_reports_result_1(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"), refund_outcome=RefundStatus.FAILED)
    result = refund(run, payment, "5.00")
    assert result.status is RefundStatus.FAILED
    assert result.error_code == "declined"
    assert result.raw["data"]["result"] == 1
    # A declined refund moved nothing: the refundable balance is untouched.
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None and found.refundable == Decimal("50.00")


def test_reused_trans_index_code(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    first = refund(run, payment, "5.00", refund_id="r-reuse-1")
    again = refund(run, payment, "5.00", refund_id="r-reuse-1")
    assert first.status is again.status is RefundStatus.SUCCEEDED
    assert again.provider_refund_id == first.provider_refund_id  # the same answer again
    different = refund(run, payment, "6.00", refund_id="r-reuse-1")
    assert different.status is RefundStatus.FAILED
    assert different.message == "transIndexCode already exists"
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None and len(found.refunds) == 1


def test_the_payments_own_trans_index_code_cannot_name_a_refund(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    assert payment.merchant_reference is not None
    result = refund(run, payment, "5.00", refund_id=payment.merchant_reference)
    assert result.status is RefundStatus.FAILED


def test_wrong_token_gets_the_gateways_error_shape(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    run.client.configure(
        "paywizard", {**run.emulator.client_config(run.server.base_url), "token": "WRONG"}
    )
    result = refund(run, payment, "5.00")
    assert result.status is RefundStatus.FAILED
    assert result.error_code == "401"
    assert set(result.raw) == {"code", "msg", "timestamp", "data"} and result.raw["data"] is None
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None and not found.refunds


def test_wrong_client_secret_is_refused(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    settings_ = {**run.emulator.client_config(run.server.base_url), "client_secret": "0" * 32}
    run.client.configure("paywizard", settings_)
    result = refund(run, payment, "5.00")
    assert (result.status, result.error_code) == (RefundStatus.FAILED, "403")


# -- pending refunds and the result push -----------------------------------------------


def test_pending_refund_settles_through_a_push(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"), refund_outcome=RefundStatus.PENDING)
    result = refund(run, payment, "20.00", notify_url=run.notify_url)
    assert result.status is RefundStatus.PENDING
    assert result.raw["data"]["result"] == 2
    queried = run.client.query("paywizard", refund_id=result.refund_id)
    assert queried.status is RefundStatus.PENDING
    # Pending refunds hold their amount: 40 more would exceed the payment.
    assert refund(run, payment, "40.00").status is RefundStatus.FAILED
    assert run.notifications == []
    run.emulator.settle(result.refund_id)
    (note,) = run.wait_for_notifications(1)
    assert note.status is RefundStatus.SUCCEEDED
    assert note.refund_id == result.refund_id
    assert note.provider_refund_id == result.provider_refund_id
    assert note.amount == hkd("20.00")
    assert note.event == "refund"
    queried = run.client.query(
        "paywizard", refund_id=result.refund_id, provider_refund_id=result.provider_refund_id
    )
    assert queried.status is RefundStatus.SUCCEEDED


def test_pending_refund_that_fails_is_pushed_as_failed(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"), refund_outcome=RefundStatus.PENDING)
    result = refund(run, payment, "20.00", notify_url=run.notify_url)
    run.emulator.settle(result.refund_id, RefundStatus.FAILED)
    (note,) = run.wait_for_notifications(1)
    assert note.status is RefundStatus.FAILED
    queried = run.client.query("paywizard", refund_id=result.refund_id)
    assert (queried.status, queried.error_code) == (RefundStatus.FAILED, "state_5")


def test_push_is_acknowledged_with_the_platforms_success_shape(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    refund(run, payment, "1.00", notify_url=run.notify_url)
    run.wait_for_notifications(1)
    assert run.emulator.sender.wait(5)
    (delivery,) = run.emulator.sender.deliveries
    assert delivery.status == 200
    assert json.loads(delivery.body) == {"code": 200, "msg": "success"}


def test_query_of_a_refund_the_gateway_never_saw(run: SandboxRun) -> None:
    """The gateway's "no such refund" keeps its code, but reaches the caller UNKNOWN:
    on its own it proves nothing (a refund received may show later)."""
    result = run.client.query("paywizard", refund_id="never-sent-1")
    assert (result.status, result.error_code) == (RefundStatus.UNKNOWN, "not_found")
    assert "proves nothing by itself" in (result.message or "")


# -- void ------------------------------------------------------------------------------


def test_void_then_refunds_fail(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    voided = run.client.void("paywizard", payment=payment, amount=hkd("50.00"))
    assert voided.status is RefundStatus.SUCCEEDED
    assert voided.provider_refund_id
    assert voided.amount == hkd("50.00")
    assert refund(run, payment, "1.00").status is RefundStatus.FAILED
    again = run.client.void("paywizard", payment=payment)
    assert again.status is RefundStatus.FAILED
    queried = run.client.query("paywizard", refund_id=voided.refund_id)
    assert queried.status is RefundStatus.SUCCEEDED


def test_void_after_a_refund_fails(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    assert refund(run, payment, "1.00").status is RefundStatus.SUCCEEDED
    result = run.client.void("paywizard", payment=payment)
    assert result.status is RefundStatus.FAILED


def test_void_of_part_of_the_amount_fails(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    result = run.client.void("paywizard", payment=payment, amount=hkd("10.00"))
    assert result.status is RefundStatus.FAILED
    assert run.client.void("paywizard", payment=payment).status is RefundStatus.SUCCEEDED


def test_void_is_pushed(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    voided = run.client.void("paywizard", payment=payment, notify_url=run.notify_url)
    (note,) = run.wait_for_notifications(1)
    assert note.status is RefundStatus.SUCCEEDED
    assert note.refund_id == voided.refund_id
    assert note.raw["transType"] == "VOID" and note.event == "void"


def test_capabilities_are_declared() -> None:
    caps = RefundClient().provider("paywizard").capabilities
    assert caps.void and caps.query and caps.callbacks and caps.partial_refunds
    assert not caps.idempotent_refund_id and not caps.callback_timestamps


# -- refused input: nothing is sent ----------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (
            lambda c, p: c.refund(
                "paywizard", payment=PaymentRef(transaction_id="t-1"), amount=hkd("1.00")
            ),
            "payment.payment_id",
        ),
        (
            lambda c, p: c.refund(
                "paywizard", payment=PaymentRef(payment_id="ABC123"), amount=hkd("1.00")
            ),
            "payment.payment_id",
        ),
        (
            lambda c, p: c.refund(
                "paywizard", payment=PaymentRef(payment_id="1" * 33), amount=hkd("1.00")
            ),
            "payment.payment_id",
        ),
        (
            lambda c, p: c.refund(
                "paywizard", payment=PaymentRef(merchant_reference="a/b"), amount=hkd("1.00")
            ),
            "payment.merchant_reference",
        ),
        (
            lambda c, p: c.refund("paywizard", payment=p, amount=hkd("1.00"), refund_id="r.1"),
            "refund_id",
        ),
        (
            lambda c, p: c.refund("paywizard", payment=p, amount=hkd("1.00"), refund_id="r#1"),
            "refund_id",
        ),
        (
            lambda c, p: c.refund("paywizard", payment=p, amount=hkd("1.00"), refund_id="x" * 65),
            "refund_id",
        ),
        (
            lambda c, p: c.refund("paywizard", payment=p, amount=hkd("1.00"), notify_url="ftp://x"),
            "notify_url",
        ),
        (
            lambda c, p: c.void("paywizard", payment=PaymentRef(transaction_id="t-1")),
            "payment.payment_id",
        ),
        (
            lambda c, p: c.query("paywizard", refund_id="r-1", provider_refund_id="x1"),
            "provider_refund_id",
        ),
        (lambda c, p: c.query("paywizard", refund_id="r/1"), "refund_id"),
    ],
)
def test_bad_input_is_refused_before_sending(run: SandboxRun, call: Any, field: str) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    run.server.clear_requests()
    with pytest.raises(ValidationError) as error:
        call(run.client, payment)
    assert error.value.field == field
    assert run.server.requests == []


def test_transaction_id_alone_is_named_in_the_error(run: SandboxRun) -> None:
    with pytest.raises(ValidationError, match="transaction_id alone") as error:
        refund(run, PaymentRef(transaction_id="t-1"), "1.00")
    assert "payment_id" in str(error.value) and "merchant_reference" in str(error.value)
    assert run.server.requests == []


def test_transaction_id_beside_a_usable_id_is_not_sent(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    with_txn = attrs.evolve(payment, transaction_id="t-1")
    assert refund(run, with_txn, "1.00").status is RefundStatus.SUCCEEDED
    assert b"t-1" not in run.server.requests[-1].body


# -- result push signature -------------------------------------------------------------

PUSH = (
    b'{"checkoutId":"917122074735149056","transIndexCode":"202506091432000000015",'
    b'"paywizardId":"10280000002","mid":"007889-3-006","transType":"REFUND",'
    b'"amount":"0.01","state":2,"currencyCode":"344","tranTime":"2025-06-09 15:32:00",'
    b'"transResult":0,"cardNo":"","rrn":null}'
)
PUSH_SIGN = "253fbcb0dd908f86c9b263620be5a89070681fdc998a84d3cd4036dda3d3a572"


_CLIENT = RefundClient(config={"paywizard": dict(CREDENTIALS)})


def verify(body: bytes, headers: dict[str, str] | None = None) -> Any:
    return _CLIENT.verify_callback(
        "paywizard",
        method="POST",
        path="/hooks/paywizard",
        headers={"sign": PUSH_SIGN} if headers is None else headers,
        body=body,
    )


def test_push_signing_string_exact() -> None:
    fields = load_push_fields(PUSH)
    assert push_signing_string(fields, CLIENT_ID, "SECRET") == (
        "amount=0.01&checkoutId=917122074735149056&currencyCode=344&mid=007889-3-006"
        "&paywizardId=10280000002&state=2&tranTime=2025-06-09 15:32:00"
        "&transIndexCode=202506091432000000015&transResult=0&transType=REFUND"
        "&clientId=825429536610058240&clientSecret=SECRET"
    )
    assert push_signature(fields, CLIENT_ID, CLIENT_SECRET) == PUSH_SIGN


def test_fixed_push_verifies_and_parses() -> None:
    note = verify(PUSH)
    assert note.status is RefundStatus.SUCCEEDED
    assert note.refund_id == "202506091432000000015"
    assert note.provider_refund_id == "917122074735149056"
    assert note.amount == Money("0.01", "HKD")  # currencyCode 344 is HKD
    assert note.raw["state"] == 2 and "sign" not in note.raw


def test_signature_in_the_body_when_no_header() -> None:
    fields = json.loads(PUSH)
    fields["sign"] = PUSH_SIGN
    assert verify(json.dumps(fields).encode(), headers={}).status is RefundStatus.SUCCEEDED


def test_signature_hex_case_does_not_matter() -> None:
    assert verify(PUSH, headers={"Sign": PUSH_SIGN.upper()}).refund_id


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("plain", "plain"),
        ("", None),
        (None, None),
        (True, "true"),
        (False, "false"),
        (JsonNumber("1.50"), "1.50"),
        (JsonNumber("-0"), "-0"),
        (JsonNumber("1E+2"), "1E+2"),
        ({"b": JsonNumber("1.0"), "a": ["x", None, False]}, '{"b":1.0,"a":["x",null,false]}'),
        ({}, "{}"),
        ([], "[]"),
        ({"k": 'é"\\'}, '{"k":"é\\"\\\\"}'),
    ],
)
def test_push_field_text(value: Any, text: str | None) -> None:
    assert push_field_text(value) == text


def test_numbers_are_signed_as_their_literal_text() -> None:
    body = b'{"transIndexCode":"r1","amount":1.50,"state":2,"transResult":0,"currencyCode":344}'
    fields = load_push_fields(body)
    assert "amount=1.50&" in push_signing_string(fields, CLIENT_ID, CLIENT_SECRET)
    good = push_signature(fields, CLIENT_ID, CLIENT_SECRET)
    note = verify(body, {"sign": good})
    assert note.amount == Money("1.50", "HKD")
    assert note.raw["amount"] == Decimal("1.50") and note.raw["state"] == 2
    # Signed over "1.5" (a float's text) the same push does not verify.
    as_float = {**fields, "amount": JsonNumber("1.5")}
    with pytest.raises(SignatureError):
        verify(body, {"sign": push_signature(as_float, CLIENT_ID, CLIENT_SECRET)})


def test_nested_and_boolean_values_are_signed_compactly() -> None:
    body = b'{"transIndexCode":"r1", "extra": {"x": [1, 2.0], "y": true}, "flag": false}'
    fields = load_push_fields(body)
    assert push_signing_string(fields, "c", "s") == (
        'extra={"x":[1,2.0],"y":true}&flag=false&transIndexCode=r1&clientId=c&clientSecret=s'
    )
    assert verify(body, {"sign": push_signature(fields, CLIENT_ID, CLIENT_SECRET)}).refund_id


def test_empty_and_null_fields_are_not_signed() -> None:
    # A property of the documented scheme: a field added empty does not change the sign.
    fields = json.loads(PUSH)
    fields.update({"invoiceNum": "", "rrn": None})
    assert verify(json.dumps(fields).encode()).status is RefundStatus.SUCCEEDED


@pytest.mark.parametrize(
    "body",
    [
        PUSH.replace(b'"state":2', b'"state":2,"state":5'),  # repeated key
        b"[" + PUSH + b"]",
        b'"just a string"',
        PUSH.replace(b'"state":2', b'"state":NaN'),
        b"\xff\xfe" + PUSH,
        b"{" * 5000,
        b"",
    ],
)
def test_malformed_push_is_refused(body: bytes) -> None:
    with pytest.raises(SignatureError):
        verify(body)


def test_push_naming_no_transaction_is_refused() -> None:
    fields = {"state": JsonNumber("2"), "transResult": JsonNumber("0")}
    body = b'{"state":2,"transResult":0}'
    with pytest.raises(SignatureError, match="names no transaction"):
        verify(body, {"sign": push_signature(fields, CLIENT_ID, CLIENT_SECRET)})


@pytest.mark.parametrize(
    ("extra", "status"),
    [
        ({"transResult": 2, "state": 1}, RefundStatus.PENDING),
        ({"transResult": 1, "state": 5}, RefundStatus.FAILED),
        ({"state": 2}, RefundStatus.SUCCEEDED),
        ({"state": 5}, RefundStatus.FAILED),
        ({"state": 3}, RefundStatus.UNKNOWN),
        ({}, RefundStatus.UNKNOWN),
    ],
)
def test_push_status(extra: dict[str, Any], status: RefundStatus) -> None:
    fields = {"transIndexCode": "r1", "checkoutId": "1", **extra}
    body = json.dumps(fields).encode()
    sign = push_signature(load_push_fields(body), CLIENT_ID, CLIENT_SECRET)
    assert verify(body, {"sign": sign}).status is status


@pytest.mark.parametrize(
    ("code", "amount"),
    [("840", Money("0.01", "USD")), ("HKD", Money("0.01", "HKD")), ("999", None), ("", None)],
)
def test_push_currency_codes(code: str, amount: Money | None) -> None:
    fields = {"transIndexCode": "r1", "amount": "0.01", "currencyCode": code, "transResult": 0}
    body = json.dumps(fields).encode()
    sign = push_signature(load_push_fields(body), CLIENT_ID, CLIENT_SECRET)
    assert verify(body, {"sign": sign}).amount == amount


@pytest.mark.parametrize(
    ("trans_type", "event"),
    [("REFUND", "refund"), ("refund", "refund"), ("VOID", "void"), ("Reversal", "void")],
)
def test_push_about_a_refund_or_void(trans_type: str, event: str) -> None:
    fields = {"transIndexCode": "r1", "checkoutId": "1", "transType": trans_type, "state": 2}
    body = json.dumps(fields).encode()
    sign = push_signature(load_push_fields(body), CLIENT_ID, CLIENT_SECRET)
    assert verify(body, {"sign": sign}).event == event


@pytest.mark.parametrize(
    ("trans_type", "event"),
    [
        ("SALE", "push.sale"),
        ("PAY", "push.pay"),
        ("PRE_AUTH", "push.pre_auth"),
        ("§", "push.unknown"),
    ],
)
def test_push_about_a_sale_is_verified_then_not_a_refund(trans_type: str, event: str) -> None:
    fields = {"transIndexCode": "o1", "checkoutId": "9", "transType": trans_type, "state": 2}
    body = json.dumps(fields).encode()
    sign = push_signature(load_push_fields(body), CLIENT_ID, CLIENT_SECRET)
    with pytest.raises(NotARefund) as error:
        verify(body, {"sign": sign})
    assert (error.value.event, error.value.provider) == (event, "paywizard")
    # Only after the signature: the same push with a wrong sign is a forgery.
    with pytest.raises(SignatureError):
        verify(body, {"sign": "0" * 64})


def test_sale_push_through_the_wsgi_app_is_acknowledged_not_delivered(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    sale = run.emulator.signed_payment_callback(payment, path="/paywizard")
    assert sale is not None and b'"transType":"SALE"' in sale.body
    reply = requests.post(
        run.receiver_server.base_url + "/paywizard",
        data=sale.body,
        headers=dict(sale.headers),
        timeout=5,
    )
    assert reply.status_code == 200
    assert reply.json() == {"code": 200, "msg": "success"}
    assert run.notifications == []


def test_push_with_wrong_secret_is_refused() -> None:
    fields = load_push_fields(PUSH)
    with pytest.raises(SignatureError):
        verify(PUSH, {"sign": push_signature(fields, CLIENT_ID, "0" * 32)})


# -- property tests of the push signature ----------------------------------------------

_keys = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=10)
_scalars = st.one_of(
    st.text(max_size=15),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-1000, max_value=1000),
    st.booleans(),
    st.none(),
)


def _to_json_text(value: Any, rng: random.Random) -> str:
    # Decimals written with their exact text, as a gateway writing BigDecimal would.
    if isinstance(value, Decimal):
        return f"{value:f}"
    return json.dumps(value, ensure_ascii=rng.random() < 0.5)


@settings(max_examples=200, deadline=None)
@given(
    # A drawn transType would make the push about a sale (NotARefund), and a name with
    # '&' or '=' or a field the plugin reads could re-cut the signed string (refused:
    # test_paywizard_forgery.py): layout only here.
    fields=st.dictionaries(
        _keys.filter(
            lambda k: k != "sign" and k not in PUSH_READ_FIELDS and not {"&", "="} & set(k)
        ),
        _scalars,
        max_size=8,
    ),
    spacing=st.sampled_from([(",", ":"), (", ", ": "), (" ,\n ", " :\t")]),
    seed=st.integers(0, 2**16),
)
def test_push_verifies_whatever_the_layout(
    fields: dict[str, Any], spacing: tuple[str, str], seed: int
) -> None:
    """The push signature covers values, not layout: any key order or spacing of the same
    fields verifies, and changing any signed value breaks it."""
    fields = {"transIndexCode": "r-1", **fields}
    items = list(fields.items())
    rng = random.Random(seed)
    rng.shuffle(items)
    comma, colon = spacing
    body = (
        "{" + comma.join(f"{json.dumps(k)}{colon}{_to_json_text(v, rng)}" for k, v in items) + "}"
    )
    parsed = load_push_fields(body.encode())
    sign = push_signature(parsed, CLIENT_ID, CLIENT_SECRET)
    note = verify(body.encode(), {"sign": sign})
    assert note.refund_id == "r-1"
    for name, value in parsed.items():
        if push_field_text(value) is None:
            continue
        changed = {**parsed, name: (value + "x") if isinstance(value, str) else "changed"}
        assert push_signature(changed, CLIENT_ID, CLIENT_SECRET) != sign


@settings(max_examples=100, deadline=None)
@given(amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999"), places=2))
def test_push_amount_literal_round_trips(amount: Decimal) -> None:
    text = f"{amount:f}"
    body = f'{{"transIndexCode":"r1","amount":{text},"currencyCode":"344","transResult":0}}'
    fields = load_push_fields(body.encode())
    assert push_field_text(fields["amount"]) == text
    note = verify(body.encode(), {"sign": push_signature(fields, CLIENT_ID, CLIENT_SECRET)})
    assert note.amount == Money(text, "HKD")


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=200), sign=st.text(max_size=70))
def test_random_pushes_are_refused(body: bytes, sign: str) -> None:
    headers = {"sign": sign} if sign.isascii() and sign.isprintable() else {}
    with pytest.raises(SignatureError):
        verify(body, headers)


def test_genuine_emulator_push_fails_after_any_field_change(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("50.00"))
    result = refund(run, payment, "5.00")
    genuine = run.emulator.signed_callback(result.refund_id)
    fields = json.loads(genuine.body)
    for name in fields:
        changed = dict(fields)
        changed[name] = "1" if fields[name] != "1" else "2"
        tampered = Callback(
            method="POST",
            path=genuine.path,
            headers=genuine.headers,
            body=json.dumps(changed).encode(),
        )
        with pytest.raises(SignatureError):
            run.client.verify_callback(
                "paywizard",
                method="POST",
                path=tampered.path,
                headers=tampered.headers,
                body=tampered.body,
            )
