"""BBMSL's older notification text: ``http_build_query`` over the fields sorted by name
(the WooCommerce plugin 1.0.8), accepted after the usual texts, and never a way to
make a body read otherwise than BBMSL signed it."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from refundcore_directgw import (
    notification_sign_texts,
    parse_notification,
    php_query_text,
    php_urlencode,
)
from refundcore_directgw.sandbox import DirectgwEmulator

from refundcore import RefundClient, RefundError, RefundNotification
from refundcore.crypto import PublicKey, generate_rsa_keypair
from refundcore.models import RefundStatus
from refundcore.money import Money
from refundcore.sandbox import SandboxRun

GATEWAY_KEY = generate_rsa_keypair()


@pytest.fixture(scope="module")
def client() -> Iterator[RefundClient]:
    settings = {
        "merchant_id": "3000001",
        "private_key": generate_rsa_keypair().to_pem(),
        "gateway_public_key": GATEWAY_KEY.public_key().to_pem(),
    }
    with RefundClient(config={"directgw": settings}) as made:
        yield made


def _signed(text: str) -> str:
    return base64.b64encode(GATEWAY_KEY.sign_sha256(text.encode("utf-8"))).decode()


def _verify(client: RefundClient, body: bytes) -> RefundNotification:
    return client.verify_callback(
        "directgw",
        method="POST",
        path="/hooks/directgw",
        headers={"Content-Type": "application/json"},
        body=body,
    )


def _reading(client: RefundClient, fields: dict[str, Any], signature: str) -> tuple[Any, ...]:
    try:
        note = _verify(client, json.dumps({**fields, "signature": signature}).encode())
    except RefundError as error:
        return (type(error).__name__, getattr(error, "event", None))
    return (note.status, note.event, note.provider_refund_id, note.payment, note.amount)


# What PHP's urlencode writes (letters, digits and "-_." kept, space as "+", every other
# UTF-8 byte as upper-case %XX, "~" included).
URLENCODE_VECTORS = [
    ("AZaz09-_.", "AZaz09-_."),
    ("a b", "a+b"),
    ("~", "%7E"),
    ("&=+%", "%26%3D%2B%25"),
    ("2022-08-01T10:00:00", "2022-08-01T10%3A00%3A00"),
    ("a[b]*", "a%5Bb%5D%2A"),
    ("\u00e9", "%C3%A9"),
]


@pytest.mark.parametrize(("text", "encoded"), URLENCODE_VECTORS)
def test_php_urlencode(text: str, encoded: str) -> None:
    assert php_urlencode(text) == encoded


FLAT_BODY = (
    b'{"updateTime":"2022-08-01T10:00:00","status":"REFUNDED","orderId":1076,'
    b'"amount":100.60,"big":1e15,"flag":true,"off":false,"note":"R 1~\\u00e9&x=y",'
    b'"merchantReference":"REF-1","signature":"SIG"}'
)
# Sorted by name; numbers as PHP prints them, true as 1, false as 0; all URL-encoded.
FLAT_QUERY_TEXT = (
    "amount=100.6&big=1.0E%2B15&flag=1&merchantReference=REF-1"
    "&note=R+1%7E%C3%A9%26x%3Dy&off=0&orderId=1076&status=REFUNDED"
    "&updateTime=2022-08-01T10%3A00%3A00"
)


def test_query_text_of_a_flat_body() -> None:
    assert php_query_text(parse_notification(FLAT_BODY)) == FLAT_QUERY_TEXT


def test_query_text_is_given_last() -> None:
    texts = list(notification_sign_texts(parse_notification(FLAT_BODY)))
    assert len(texts) == 3
    assert texts[2] == FLAT_QUERY_TEXT


@pytest.mark.parametrize(
    "body",
    [
        b'{"status":"REFUNDED","none":null}',
        b'{"status":"REFUNDED","nested":{"a":"b"}}',
        b'{"status":"REFUNDED","list":[]}',
    ],
    ids=["null", "object", "array"],
)
def test_no_query_text_for_null_or_nested_values(body: bytes) -> None:
    fields = parse_notification(body)
    assert php_query_text(fields) is None
    assert len(list(notification_sign_texts(fields))) == 2


@pytest.mark.parametrize(
    "member",
    [
        '"merchantReference":"R 1"',
        '"merchantReference":"R+1"',
        '"merchantReference":2',
        '"amount":1e15',
        '"orderId":true',
    ],
)
def test_no_query_text_when_a_read_field_is_url_encoded(member: str) -> None:
    fields = parse_notification(('{"status":"REFUNDED","t":"a:b",' + member + "}").encode())
    query = php_query_text(fields)
    assert query is not None
    assert query not in notification_sign_texts(fields)


def test_a_body_signed_over_the_query_text_verifies(client: RefundClient) -> None:
    note = _verify(client, FLAT_BODY.replace(b"SIG", _signed(FLAT_QUERY_TEXT).encode()))
    assert (note.event, note.status, note.provider_refund_id) == (
        "refund",
        RefundStatus.SUCCEEDED,
        "1076",
    )
    assert note.payment is not None and note.payment.merchant_reference == "REF-1"


def test_a_url_decoded_reference_does_not_take_a_php_signature(client: RefundClient) -> None:
    """``R+1`` signed as PHP prints it is the query text of ``R 1``: refused."""
    genuine = {"merchantReference": "R+1", "orderId": "1076", "status": "REFUNDED"}
    signature = _signed(next(notification_sign_texts(genuine)))
    assert _reading(client, genuine, signature)[0] == RefundStatus.SUCCEEDED
    forged = {**genuine, "merchantReference": "R 1"}
    assert php_query_text(forged) == next(notification_sign_texts(genuine))
    assert _reading(client, forged, signature) == ("SignatureError", None)


def test_a_null_field_added_is_refused(client: RefundClient) -> None:
    genuine = {"amount": "30.00", "orderId": "1076", "status": "REFUNDED", "t": "a:b"}
    signature = _signed(str(php_query_text(genuine)))
    assert _reading(client, genuine, signature)[0] == RefundStatus.SUCCEEDED
    assert _reading(client, {**genuine, "currency": None}, signature) == ("SignatureError", None)


_notification = st.fixed_dictionaries(
    {
        "amount": st.sampled_from(["30.00", "0.10", "699.00"]),
        "orderId": st.from_regex(r"[1-9][0-9]{0,17}", fullmatch=True),
        "status": st.sampled_from(["REFUNDED", "VOIDED", "SUCCESS"]),
        "updateTime": st.just("2022-08-01T10:00:00"),
    },
    optional={
        "merchantReference": st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True),
        "currency": st.sampled_from(["HKD", "USD"]),
        "note": st.text(max_size=10),
        "flag": st.sampled_from(["1", "0"]),
    },
)


def _recut(fields: dict[str, Any], data: Any) -> dict[str, Any]:
    """One change a forger might try that can keep the query text."""
    names = sorted(fields)
    name = data.draw(st.sampled_from(names))
    value = fields[name]
    kind = data.draw(st.sampled_from(["null", "type", "encode", "fold"]))
    if kind == "null":
        added = data.draw(st.sampled_from(["currency", "merchantReference", "orderId", "x"]))
        return {**fields, added: None} if added not in fields else fields
    if kind == "type" and value in ("1", "0"):
        return {**fields, name: value == "1"}
    if kind == "type" and re.fullmatch(r"(0|[1-9][0-9]*)(\.[0-9]+)?", value):
        return {**fields, name: json.loads(value)}
    if kind == "encode":
        return {**fields, name: php_urlencode(value)}
    if kind == "fold" and names.index(name) + 1 < len(names):
        after = names[names.index(name) + 1]
        changed = {k: v for k, v in fields.items() if k != after}
        changed[name] = f"{value}&{after}={fields[after]}"
        return changed
    return fields


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(fields=_notification, data=st.data())
def test_no_change_keeping_the_query_text_reads_differently(
    client: RefundClient, fields: dict[str, Any], data: Any
) -> None:
    """A genuine body signed over the query text, changed so that some text it may be
    verified over stays the same (a null added, a value's type or encoding changed, a
    pair folded into a value): refused, or read exactly as the genuine one."""
    text = php_query_text(fields)
    assert text is not None
    signature = _signed(text)
    genuine = _reading(client, fields, signature)
    assert genuine[0] == RefundStatus.SUCCEEDED or genuine[0] == "NotARefund"
    forged = _recut(fields, data)
    assume(forged != fields)
    forged_body = parse_notification(json.dumps(forged).encode())
    assume(text in notification_sign_texts(forged_body) or php_query_text(forged_body) == text)
    assert _reading(client, forged, signature) in (genuine, ("SignatureError", None))


def test_emulator_signs_the_query_text_exactly() -> None:
    emulator = DirectgwEmulator(notification_values="query")
    body = emulator.sign_notification(
        {
            "amount": Money("40.00", "HKD").amount,
            "orderId": 1076,
            "status": "REFUNDED",
            "merchantReference": "R-1",
            "updateTime": "2022-08-01T10:00:00",
        }
    )
    fields = json.loads(body)
    public = PublicKey.from_pem(emulator.client_config("http://x")["gateway_public_key"])
    text = (
        "amount=40&merchantReference=R-1&orderId=1076&status=REFUNDED"
        "&updateTime=2022-08-01T10%3A00%3A00"
    )
    assert public.verify_sha256(base64.b64decode(fields["signature"]), text.encode())


def test_emulator_query_notification_through_real_sockets() -> None:
    """Delivered by the emulator over HTTP, verified by the WSGI app on the third text;
    a copy with the reference changed is refused with 400."""
    with SandboxRun("directgw", emulator_options={"notification_values": "query"}) as run:
        payment = run.emulator.seed_payment(Money("100.00", "HKD"))
        result = run.client.refund("directgw", payment=payment, amount=Money("40.00", "HKD"))
        (note,) = run.wait_for_notifications(1)
        assert (note.event, note.status) == ("refund", RefundStatus.SUCCEEDED)
        (received,) = run.receiver.received
        assert b'"updateTime":"' in received.body
        genuine = run.emulator.signed_callback(result.refund_id, path="/directgw")
        fields = parse_notification(genuine.body)
        public = PublicKey.from_pem(run.emulator.client_config("")["gateway_public_key"])
        signature = base64.b64decode(fields["signature"])
        php_text, *_, query_text = notification_sign_texts(fields)
        assert query_text == php_query_text(fields) != php_text
        assert public.verify_sha256(signature, query_text.encode())
        assert not public.verify_sha256(signature, php_text.encode())
        url = run.receiver_server.base_url + "/directgw"
        reference = str(payment.merchant_reference).encode()
        tampered = genuine.body.replace(reference, reference + b"X")
        for body, status in ((genuine.body, 200), (tampered, 400)):
            reply = requests.post(url, data=body, headers=dict(genuine.headers), timeout=5)
            assert reply.status_code == status
        assert len(run.notifications) == 2
