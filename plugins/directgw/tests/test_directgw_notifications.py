"""BBMSL PayAPI: notification verification and delivery.

The signed text is every top-level field but ``signature`` as ``k=v``, sorted, joined
with ``&``. How a value becomes text is where BBMSL's sources disagree
(:func:`refundcore_directgw.notification_sign_texts`): the raw JSON text (strings
unescaped, numbers as their literal text, JSON literals as such, nested values as
compact JSON), or the value as BBMSL's production plugin (PHP) prints it after
``json_decode`` (``699.00`` → ``699``, ``true`` → ``1``, ``null`` → empty). A signature
over either verifies.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import TYPE_CHECKING

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from refundcore_directgw import (
    JsonNumber,
    notification_event,
    notification_sign_texts,
    parse_notification,
    php_value_text,
)
from refundcore_directgw.sandbox import NOTIFICATION_VALUES, DirectgwEmulator

from refundcore import NotARefund, RefundClient, ValidationError
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
    '"merchantReference":"=a\\u0026b \\"c\\" \\u00e9","flag":true,"off":false,"none":null,'
    '"nested":{"x":[1,2.50,"y\\u00e9"]},"status":"REFUNDED","signature":"SIG"}'
)
LITERAL_SIGN_TEXT = (
    "amount=100.60&big=123456789012345678901234567890&exp=1E+2&flag=true"
    '&merchantReference==a&b "c" \u00e9&neg=-0.50&nested={"x":[1,2.50,"y\u00e9"]}'
    "&none=null&off=false&orderId=1076&status=REFUNDED"
)
# The same body as BBMSL's PHP plugin writes it: floats with 14 significant digits and
# no trailing zeros, an int beyond 64 bits as a float, true → 1, false/null → "".
PHP_SIGN_TEXT = (
    "amount=100.6&big=1.2345678901235E+29&exp=100&flag=1"
    '&merchantReference==a&b "c" \u00e9&neg=-0.5&nested=Array'
    "&none=&off=&orderId=1076&status=REFUNDED"
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


def test_sign_texts_of_every_kind_of_value() -> None:
    texts = tuple(notification_sign_texts(parse_notification(LITERAL_BODY.encode())))
    assert texts == (PHP_SIGN_TEXT, LITERAL_SIGN_TEXT)


def test_all_strings_give_one_sign_text() -> None:
    fields = parse_notification(b'{"amount":"699.00","status":"REFUNDED","signature":"x"}')
    assert tuple(notification_sign_texts(fields)) == ("amount=699.00&status=REFUNDED",)


# What PHP 8's (string) cast prints for json_decode's value of each JSON literal, with
# the default precision of 14 (checked against PHP's own output).
PHP_VECTORS = [
    ("699.00", "699"),
    ("0.10", "0.1"),
    ("1e2", "100"),
    ("1E+2", "100"),
    ("-0.50", "-0.5"),
    ("100.60", "100.6"),
    ("0.5", "0.5"),
    ("1.5e20", "1.5E+20"),
    ("1e15", "1.0E+15"),
    ("1e14", "1.0E+14"),
    ("99999999999999", "99999999999999"),
    ("99999999999999.0", "99999999999999"),
    ("0.0001", "0.0001"),
    ("0.00001", "1.0E-5"),
    ("3.141592653589793", "3.1415926535898"),
    ("123456789012345678", "123456789012345678"),
    ("9223372036854775807", "9223372036854775807"),
    ("9223372036854775808", "9.2233720368548E+18"),
    ("-9223372036854775808", "-9223372036854775808"),
    ("12345678901234567890", "1.2345678901235E+19"),
    ("0", "0"),
    ("-0", "0"),
    ("0.0", "0"),
    ("-0.0", "-0"),
    ("5e-324", "4.9406564584125E-324"),
    ("1.7976931348623157e308", "1.7976931348623E+308"),
    ("1e999", "INF"),
    ("-1e999", "-INF"),
]


@pytest.mark.parametrize(("literal", "text"), PHP_VECTORS)
def test_php_prints_numbers_so(literal: str, text: str) -> None:
    assert php_value_text(JsonNumber(literal)) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "1"), (False, ""), (None, ""), ("0.10", "0.10"), ({}, "Array"), ([1], "Array")],
)
def test_php_prints_other_values_so(value: object, text: str) -> None:
    assert php_value_text(value) == text


@pytest.mark.parametrize("sign_text", [LITERAL_SIGN_TEXT, PHP_SIGN_TEXT], ids=["raw", "php"])
def test_literal_body_verifies_and_parses(
    client: RefundClient, gateway_key: PrivateKey, sign_text: str
) -> None:
    body = LITERAL_BODY.replace("SIG", signed(gateway_key, sign_text)).encode()
    note = verify(client, body)
    assert (note.event, note.status) == ("refund", RefundStatus.SUCCEEDED)
    assert note.provider_refund_id == "1076"
    assert note.payment == PaymentRef(payment_id="1076", merchant_reference='=a&b "c" \u00e9')
    assert note.amount is None  # a notification names no currency
    assert note.raw["amount"] == Decimal("100.60")
    assert str(note.raw["amount"]) == "100.60"
    assert "signature" not in note.raw


def test_number_text_verifies_as_either_reading_writes_it(
    client: RefundClient, gateway_key: PrivateKey
) -> None:
    """Signed over 100.6 and sent as 100.60 is what PHP's reading accepts (it prints
    100.60 as 100.6); signed over 100.60 and sent as 100.6 matches neither reading."""
    members = [("amount", "100.60"), ("orderId", '"1"'), ("status", '"REFUNDED"')]
    php = signed(gateway_key, "amount=100.6&orderId=1&status=REFUNDED")
    assert verify(client, body_of(members, php)).status is RefundStatus.SUCCEEDED
    members[0] = ("amount", "100.6")
    raw = signed(gateway_key, "amount=100.60&orderId=1&status=REFUNDED")
    with pytest.raises(SignatureError):
        verify(client, body_of(members, raw))


_NAMES = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,11}", fullmatch=True).filter(
    lambda name: name != "signature"
)
# Decimals PHP prints in fixed point (at most 14 significant digits, 1e-4 <= |x| < 1e14),
# whose PHP text is then, independently of the plugin, the normalised decimal.
_PLAIN_DECIMAL = st.from_regex(r"-?(0|[1-9][0-9]{0,8})\.[0-9]{1,4}", fullmatch=True).filter(
    lambda text: Decimal(text) == 0 or abs(Decimal(text)) >= Decimal("0.0001")
)
_INTEGER = st.from_regex(r"-?(0|[1-9][0-9]{0,17})", fullmatch=True)
_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
# (JSON literal on the wire, its raw text, the text PHP prints for it)
_VALUES = st.one_of(
    _PLAIN_DECIMAL.map(lambda text: (text, text, format(Decimal(text).normalize(), "f"))),
    _INTEGER.map(lambda text: (text, text, str(int(text)))),
    st.tuples(_TEXT, st.booleans()).map(
        lambda pair: (json.dumps(pair[0], ensure_ascii=pair[1]), pair[0], pair[0])
    ),
    st.sampled_from([("true", "true", "1"), ("false", "false", ""), ("null", "null", "")]),
)


def _altered(literal: str) -> str:
    """Another JSON literal with another value, so that neither of its texts is one of
    the original's."""
    if literal.startswith('"'):
        return json.dumps(json.loads(literal) + "x")
    swaps = {"true": "false", "false": "true", "null": '"nul"'}
    if literal in swaps:
        return swaps[literal]
    sign = "-" if literal.startswith("-") else ""
    return f"{sign}1{literal.removeprefix('-')}"


@_SETTINGS
@given(
    fields=st.dictionaries(_NAMES, _VALUES, min_size=1, max_size=8),
    php=st.booleans(),
    target=st.integers(min_value=0),
    change=st.sampled_from(["value", "drop", "add", "signature"]),
)
def test_random_notifications_signed_either_way(
    client: RefundClient,
    gateway_key: PrivateKey,
    fields: dict[str, tuple[str, str, str]],
    php: bool,
    target: int,
    change: str,
) -> None:
    """Integers, decimals (trailing zeros), strings (escaped or not) and JSON literals
    verify when signed over the raw JSON text and when signed as PHP prints them; a
    changed value, a dropped or added field, or a changed signature is refused."""
    texts = {name: (php_text if php else raw) for name, (_, raw, php_text) in fields.items()}
    sign_text = "&".join(sorted(f"{name}={text}" for name, text in texts.items()))
    signature = signed(gateway_key, sign_text)
    members = [(name, literal) for name, (literal, _, _) in fields.items()]
    # Verified; without status REFUNDED or VOIDED it is just not about a refund.
    with contextlib.suppress(NotARefund):
        verify(client, body_of(members, signature))

    index = target % len(members)
    name, literal = members[index]
    if change == "value":
        members[index] = (name, _altered(literal))
    elif change == "drop" and len(members) > 1:
        del members[index]
    elif change == "signature":
        raw = bytearray(base64.b64decode(signature))
        raw[target % len(raw)] ^= 0x01
        signature = base64.b64encode(bytes(raw)).decode()
    else:
        members.append((name + "x" if name + "x" not in fields else name + "y", '""'))
    with pytest.raises(SignatureError):
        verify(client, body_of(members, signature))


@pytest.mark.parametrize(("status", "event"), [("REFUNDED", "refund"), ("VOIDED", "void")])
def test_refund_and_void_events(status: str, event: str) -> None:
    assert notification_event(status, "directgw") == event


@pytest.mark.parametrize(
    ("status", "event"),
    [
        ("SUCCESS", "payment"),
        ("SETTLED", "order.settled"),
        ("DECLINED", "order.declined"),
        ("weird status!", "order.unknown"),
        (None, "order.unknown"),
    ],
)
def test_other_statuses_are_not_about_a_refund(status: str | None, event: str) -> None:
    with pytest.raises(NotARefund) as error:
        notification_event(status, "directgw")
    assert (error.value.event, error.value.provider) == (event, "directgw")


@pytest.mark.parametrize("php", [True, False], ids=["php", "raw"])
def test_sale_notification_is_verified_then_not_a_refund(
    client: RefundClient, gateway_key: PrivateKey, php: bool
) -> None:
    # The shape of BBMSL's documented payment-success notification, amount a number.
    literals = {
        "amount": "699.00",
        "maskedPan": '"400000XXXXXX1000"',
        "orderId": "489825",
        "cardType": '"VISA"',
        "updateTime": '"2022-08-01T10:00:00"',
        "status": '"SUCCESS"',
        "merchantReference": '"REF-2021120210310101"',
    }
    fields = parse_notification(body_of(literals.items(), "x"))
    sign_text = tuple(notification_sign_texts(fields))[0 if php else 1]
    assert sign_text.startswith("amount=699&" if php else "amount=699.00&")
    body = body_of(literals.items(), signed(gateway_key, sign_text))
    with pytest.raises(NotARefund) as error:
        verify(client, body)
    assert error.value.event == "payment"
    forged = body.replace(b"699.00", b"698.00")
    with pytest.raises(SignatureError):
        verify(client, forged)


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
    # No notify_url: BBMSL notifies the URL the merchant set for the order (the sandbox
    # set the emulator's to its receiver).
    result = run.client.refund("directgw", payment=payment, amount=Money("40.00", "HKD"))
    assert result.succeeded
    (note,) = run.wait_for_notifications(1)
    assert (note.event, note.status) == ("refund", RefundStatus.SUCCEEDED)
    assert note.payment == payment
    assert note.provider_refund_id == payment.payment_id
    assert note.raw["amount"] == Decimal("40.00")
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


def test_notify_url_is_refused_naming_where_bbmsl_takes_it(run: SandboxRun) -> None:
    """BBMSL's refund request has no notify URL: one passed is refused before sending,
    never dropped silently."""
    payment = run.emulator.seed_payment(Money("100.00", "HKD"))
    run.server.clear_requests()
    for attempt in (
        lambda: run.client.refund(
            "directgw", payment=payment, amount=Money("1.00", "HKD"), notify_url=run.notify_url
        ),
        lambda: run.client.void("directgw", payment=payment, notify_url=run.notify_url),
    ):
        with pytest.raises(ValidationError) as error:
            attempt()
        assert error.value.field == "notify_url"
        assert "callbackUrl.notify" in str(error.value)
    assert run.server.requests == []
    assert run.info.capabilities.notify_url is False


@pytest.mark.parametrize("values", NOTIFICATION_VALUES)
def test_each_way_the_emulator_signs_verifies_through_the_wsgi_app(values: str) -> None:
    """The emulator signs as BBMSL's PHP plugin reads (php), over the raw JSON text
    (json), or with string values only (strings): each is accepted, delivered once, and
    a tampered copy is refused with 400."""
    with SandboxRun("directgw", emulator_options={"notification_values": values}) as run:
        payment = run.emulator.seed_payment(Money("100.00", "HKD"))
        result = run.client.refund("directgw", payment=payment, amount=Money("40.00", "HKD"))
        (note,) = run.wait_for_notifications(1)
        assert (note.event, note.status) == ("refund", RefundStatus.SUCCEEDED)
        (received,) = run.receiver.received
        literal = b'"amount":"40.00"' if values == "strings" else b'"amount":40.00'
        assert literal in received.body
        genuine = run.emulator.signed_callback(result.refund_id, path="/directgw")
        url = run.receiver_server.base_url + "/directgw"
        tampered = genuine.body.replace(b"40.00", b"41.00")
        for body, status in ((genuine.body, 200), (tampered, 400)):
            reply = requests.post(url, data=body, headers=dict(genuine.headers), timeout=5)
            assert reply.status_code == status
        assert len(run.notifications) == 2


def test_sale_notification_is_acknowledged_ok_and_not_delivered(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("100.00", "HKD"))
    sale = run.emulator.signed_payment_callback(payment, path="/directgw")
    assert sale is not None and b'"status":"SUCCESS"' in sale.body
    reply = requests.post(
        run.receiver_server.base_url + "/directgw",
        data=sale.body,
        headers=dict(sale.headers),
        timeout=5,
    )
    assert (reply.status_code, reply.text) == (200, "OK")
    assert run.notifications == []
