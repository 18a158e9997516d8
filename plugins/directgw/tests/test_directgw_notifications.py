"""BBMSL PayAPI (Online Direct): notification verification and delivery.

The signed text is every top-level field but ``signature`` as ``k=v``, sorted, joined
with ``&``; how a value becomes text is the plugin's ASSUMPTION
(:func:`refundcore_directgw.notification_value_text`): strings unescaped, numbers as
their literal text, JSON literals as such, nested values as compact JSON.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from refundcore_directgw import (
    notification_event,
    notification_sign_text,
    parse_notification,
)
from refundcore_directgw.sandbox import DirectgwEmulator

from refundcore import RefundClient
from refundcore.crypto import PrivateKey, generate_rsa_keypair
from refundcore.errors import SignatureError
from refundcore.models import CallbackAck, PaymentRef, RefundNotification, RefundStatus
from refundcore.money import Money
from refundcore.sandbox import SandboxRun, SandboxServer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

# Every kind of value, as literal JSON text, and the text each must be signed as.
LITERAL_BODY = (
    '{"orderId":1076,"amount":100.60,"exp":1E+2,"neg":-0.50,'
    '"big":123456789012345678901234567890,'
    '"merchantReference":"a\\u0026b=\\"c\\" \\u00e9","flag":true,"off":false,"none":null,'
    '"nested":{"x":[1,2.50,"y\\u00e9"]},"status":"REFUNDED","signature":"SIG"}'
)
LITERAL_SIGN_TEXT = (
    "amount=100.60&big=123456789012345678901234567890&exp=1E+2&flag=true"
    '&merchantReference=a&b="c" \u00e9&neg=-0.50&nested={"x":[1,2.50,"y\u00e9"]}'
    "&none=null&off=false&orderId=1076&status=REFUNDED"
)

_SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def gateway_key() -> PrivateKey:
    return generate_rsa_keypair()


@pytest.fixture(scope="module")
def client(gateway_key: PrivateKey) -> Iterator[RefundClient]:
    settings = {
        "merchant_id": "3000001",
        "private_key": generate_rsa_keypair().to_pem(),
        "gateway_public_key": gateway_key.public_key().to_pem(),
    }
    with RefundClient(config={"directgw": settings}) as client:
        yield client


def signed(key: PrivateKey, sign_text: str) -> str:
    return base64.b64encode(key.sign_sha256(sign_text.encode("utf-8"))).decode()


def verify(
    client: RefundClient, body: bytes, content_type: str | None = "application/json"
) -> RefundNotification:
    headers = {"Content-Type": content_type} if content_type else {}
    return client.verify_callback(
        "directgw", method="POST", path="/hooks/directgw", headers=headers, body=body
    )


def body_of(members: Iterable[tuple[str, str]], signature: str) -> bytes:
    """A body from (name, JSON literal) pairs, written here independently of the plugin."""
    items = [f"{json.dumps(name)}:{literal}" for name, literal in members]
    items.append(f'"signature":{json.dumps(signature)}')
    return ("{" + ",".join(items) + "}").encode()


# -- the signed text ----------------------------------------------------------------------


def test_sign_text_of_every_kind_of_value() -> None:
    assert notification_sign_text(parse_notification(LITERAL_BODY.encode())) == LITERAL_SIGN_TEXT


def test_literal_body_verifies_and_parses(client: RefundClient, gateway_key: PrivateKey) -> None:
    body = LITERAL_BODY.replace("SIG", signed(gateway_key, LITERAL_SIGN_TEXT)).encode()
    note = verify(client, body)
    assert (note.event, note.status) == ("refund", RefundStatus.SUCCEEDED)
    assert note.provider_refund_id == "1076"
    assert note.payment == PaymentRef(payment_id="1076", merchant_reference='a&b="c" \u00e9')
    assert note.amount is None  # a notification names no currency
    assert note.raw["amount"] == Decimal("100.60")
    assert str(note.raw["amount"]) == "100.60"
    assert "signature" not in note.raw


def test_normalised_number_text_does_not_verify(
    client: RefundClient, gateway_key: PrivateKey
) -> None:
    """Signed over 100.6, sent as 100.60: the same value, other text, so refused (the
    signature covers the literal text, which is why numbers are never re-formatted)."""
    body = body_of(
        [("amount", "100.60"), ("orderId", '"1"')], signed(gateway_key, "amount=100.6&orderId=1")
    )
    with pytest.raises(SignatureError):
        verify(client, body)


_NAMES = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,11}", fullmatch=True).filter(
    lambda name: name != "signature"
)
_NUMBER = st.from_regex(
    r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,8})?([eE][-+]?[0-9]{1,3})?", fullmatch=True
)
_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
# (JSON literal on the wire, text it is signed as)
_VALUES = st.one_of(
    _NUMBER.map(lambda text: (text, text)),
    st.tuples(_TEXT, st.booleans()).map(
        lambda pair: (json.dumps(pair[0], ensure_ascii=pair[1]), pair[0])
    ),
    st.sampled_from([("true", "true"), ("false", "false"), ("null", "null")]),
)


def _altered(literal: str) -> str:
    """Another JSON literal whose signed text differs (for a number: often the same value
    written differently, which must break the signature all the same)."""
    if literal.startswith('"'):
        return json.dumps(json.loads(literal) + "x")
    swaps = {"true": "false", "false": "true", "null": '"nul"', "0": "1", "-0": "1"}
    return swaps.get(literal, literal + "0")


@_SETTINGS
@given(
    fields=st.dictionaries(_NAMES, _VALUES, min_size=1, max_size=8),
    target=st.integers(min_value=0),
)
def test_random_flat_notifications(
    client: RefundClient,
    gateway_key: PrivateKey,
    fields: dict[str, tuple[str, str]],
    target: int,
) -> None:
    """Integers, decimals (trailing zeros, exponents), strings (escaped or not) and JSON
    literals all verify when signed as specified; changing any one value's text breaks it."""
    sign_text = "&".join(sorted(f"{name}={text}" for name, (_, text) in fields.items()))
    signature = signed(gateway_key, sign_text)
    members = [(name, literal) for name, (literal, _) in fields.items()]
    verify(client, body_of(members, signature))

    index = target % len(members)
    name, literal = members[index]
    members[index] = (name, _altered(literal))
    with pytest.raises(SignatureError):
        verify(client, body_of(members, signature))


@pytest.mark.parametrize(
    ("status", "event", "refund_status"),
    [
        ("REFUNDED", "refund", RefundStatus.SUCCEEDED),
        ("VOIDED", "void", RefundStatus.SUCCEEDED),
        ("SUCCESS", "payment", RefundStatus.UNKNOWN),
        ("SETTLED", "order.settled", RefundStatus.UNKNOWN),
        ("DECLINED", "order.declined", RefundStatus.UNKNOWN),
        ("weird status!", "order.unknown", RefundStatus.UNKNOWN),
        (None, "order.unknown", RefundStatus.UNKNOWN),
    ],
)
def test_notification_events(status: str | None, event: str, refund_status: RefundStatus) -> None:
    assert notification_event(status) == (event, refund_status)


def test_payment_notification_is_not_a_refund(
    client: RefundClient, gateway_key: PrivateKey
) -> None:
    # The shape of BBMSL's documented payment-success notification.
    fields = {
        "amount": "699.00",
        "maskedPan": "400000XXXXXX1000",
        "orderId": "489825",
        "cardType": "VISA",
        "updateTime": "2022-08-01T10:00:00",
        "status": "SUCCESS",
        "merchantReference": "REF-2021120210310101",
    }
    sign_text = "&".join(sorted(f"{k}={v}" for k, v in fields.items()))
    body = body_of(((k, json.dumps(v)) for k, v in fields.items()), signed(gateway_key, sign_text))
    note = verify(client, body)
    assert (note.event, note.status, note.provider_refund_id) == (
        "payment",
        RefundStatus.UNKNOWN,
        None,
    )
    assert note.payment == PaymentRef(
        payment_id="489825", merchant_reference="REF-2021120210310101"
    )


def test_amount_with_a_currency_field(client: RefundClient, gateway_key: PrivateKey) -> None:
    text = "amount=12.30&currency=HKD&orderId=5&status=REFUNDED"
    members = [
        ("amount", "12.30"),
        ("currency", '"HKD"'),
        ("orderId", "5"),
        ("status", '"REFUNDED"'),
    ]
    note = verify(client, body_of(members, signed(gateway_key, text)))
    assert note.amount == Money("12.30", "HKD")


def _genuine(gateway_key: PrivateKey) -> bytes:
    text = "orderId=1&status=REFUNDED"
    return body_of([("orderId", '"1"'), ("status", '"REFUNDED"')], signed(gateway_key, text))


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (
            b'{"orderId":"1","orderId":"2","status":"REFUNDED","signature":"AAAA"}',
            "application/json",
        ),
        (b'{"orderId":"1","status":"REFUNDED"}', "application/json"),
        (b'{"orderId":"1","signature":12}', "application/json"),
        (b'{"orderId":"1","signature":""}', "application/json"),
        (b'{"orderId":"1","signature":"not base64!"}', "application/json"),
        (b'[{"orderId":"1","signature":"AAAA"}]', "application/json"),
        (b'{"amount":NaN,"signature":"AAAA"}', "application/json"),
        (b'{"orderId":"\xff","signature":"AAAA"}', "application/json"),
        (b'\xef\xbb\xbf{"orderId":"1","signature":"AAAA"}', "application/json"),
        (b'{"orderId":"\\ud800","signature":"AAAA"}', "application/json"),
        (b"[" * 100000, "application/json"),
    ],
)
def test_malformed_notifications_are_refused(
    client: RefundClient, body: bytes, content_type: str
) -> None:
    with pytest.raises(SignatureError):
        verify(client, body, content_type)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_genuine_body_needs_a_json_content_type(
    client: RefundClient, gateway_key: PrivateKey, content_type: str | None
) -> None:
    with pytest.raises(SignatureError):
        verify(client, _genuine(gateway_key), content_type)
    for accepted in ("application/json", "application/json; charset=UTF-8", "text/json"):
        assert verify(client, _genuine(gateway_key), accepted).status is RefundStatus.SUCCEEDED


def test_replayed_notification_verifies_again(
    client: RefundClient, gateway_key: PrivateKey
) -> None:
    """No signed timestamp: a replay verifies, so handling must be idempotent (README)."""
    body = _genuine(gateway_key)
    assert verify(client, body).provider_refund_id == verify(client, body).provider_refund_id


# -- delivery by the emulator -------------------------------------------------------------------


@pytest.fixture
def run() -> Iterator[SandboxRun]:
    with SandboxRun("directgw", read_timeout=2.0) as run:
        assert isinstance(run.emulator, DirectgwEmulator)
        yield run


def test_ack_is_plain_text_ok(run: SandboxRun) -> None:
    assert run.info.callback_ack == CallbackAck(200, "text/plain", b"OK")


def test_refund_notification_is_delivered_and_acknowledged(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("100.00", "HKD"))
    result = run.client.refund(
        "directgw", payment=payment, amount=Money("40.00", "HKD"), notify_url=run.notify_url
    )
    assert result.succeeded
    (note,) = run.wait_for_notifications(1)
    assert (note.event, note.status) == ("refund", RefundStatus.SUCCEEDED)
    assert note.payment == payment
    assert note.provider_refund_id == payment.payment_id
    assert note.raw["amount"] == "40.00"
    (received,) = run.receiver.received
    assert received.header("Content-Type") == "application/json"
    assert set(json.loads(received.body)) == {
        "amount",
        "maskedPan",
        "orderId",
        "cardType",
        "status",
        "merchantReference",
        "updateTime",
        "signature",
    }
    assert run.emulator.sender.wait()
    assert [(d.status, d.body) for d in run.emulator.sender.deliveries] == [(200, b"OK")]


class _Flaky:
    """A merchant endpoint that answers 500, then 200 without OK, then OK."""

    def __init__(self) -> None:
        self.replies = [("500 Internal Server Error", b"oops"), ("200 OK", b"received")]
        self.lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        with self.lock:
            status, body = self.replies.pop(0) if self.replies else ("200 OK", b" OK\n")
        start_response(status, [("Content-Type", "text/plain")])
        return [body]


def test_emulator_retries_until_ok(run: SandboxRun) -> None:
    emulator = run.emulator
    assert isinstance(emulator, DirectgwEmulator)
    payment = emulator.seed_payment(Money("100.00", "HKD"))
    with SandboxServer(_Flaky()) as merchant:
        emulator.set_notify_url(payment, f"{merchant.base_url}/notify")
        assert run.client.refund("directgw", payment=payment, amount=Money("1.00", "HKD")).succeeded
        assert emulator.sender.wait()
    deliveries = emulator.sender.deliveries
    assert [(d.status, d.body) for d in deliveries] == [
        (500, b"oops"),
        (200, b"received"),
        (200, b" OK\n"),
    ]
