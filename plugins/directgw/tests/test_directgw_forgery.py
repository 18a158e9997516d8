"""BBMSL notifications attacked: a genuine notification re-cut so its signed text stays
the same must be refused or read exactly as it was signed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from refundcore_directgw import notification_sign_texts, parse_notification

from refundcore import RefundClient, RefundError, RefundNotification, SignatureError
from refundcore.crypto import PrivateKey, generate_rsa_keypair

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


def _sign_text(fields: dict[str, Any]) -> str:
    return next(notification_sign_texts(parse_notification(json.dumps(fields).encode())))


def _signed(key: PrivateKey, fields: dict[str, Any]) -> str:
    return base64.b64encode(key.sign_sha256(_sign_text(fields).encode())).decode()


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


def _fold(fields: dict[str, Any], index: int) -> dict[str, Any]:
    """The signed pair after the ``index``-th (in signed order) folded into its value."""
    pairs = sorted(f"{key}={value}" for key, value in fields.items())
    name, _, value = pairs[index].partition("=")
    folded_name = pairs[index + 1].partition("=")[0]
    changed = {key: text for key, text in fields.items() if key != folded_name}
    changed[name] = f"{value}&{pairs[index + 1]}"
    return changed


REFUNDED = {
    "amount": "30.00",
    "cardType": "VISA",
    "maskedPan": "400000XXXXXX1000",
    "merchantReference": "REF-2021120210310101",
    "orderId": "489825",
    "status": "REFUNDED",
    "updateTime": "2022-08-01T10:00:00",
}


def test_an_order_id_folded_into_the_reference_is_refused(client: RefundClient) -> None:
    signature = _signed(GATEWAY_KEY, REFUNDED)
    genuine = _reading(client, REFUNDED, signature)
    assert genuine[2] == "489825"
    forged = _fold(REFUNDED, sorted(REFUNDED).index("merchantReference"))
    assert forged["merchantReference"] == "REF-2021120210310101&orderId=489825"
    assert _sign_text(forged) == _sign_text(REFUNDED)
    with pytest.raises(SignatureError):
        client.verify_callback(
            "directgw",
            method="POST",
            path="/hooks/directgw",
            headers={"Content-Type": "application/json"},
            body=json.dumps({**forged, "signature": signature}).encode(),
        )


_notification = st.fixed_dictionaries(
    {
        "amount": st.sampled_from(["30.00", "0.10", "699.00"]),
        "orderId": st.from_regex(r"[1-9][0-9]{0,17}", fullmatch=True),
        "status": st.sampled_from(["REFUNDED", "VOIDED", "SUCCESS"]),
    },
    optional={
        "merchantReference": st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True),
        "currency": st.sampled_from(["HKD", "USD"]),
        "cardType": st.sampled_from(["VISA", "MASTER"]),
        "maskedPan": st.just("400000XXXXXX1000"),
        "note": st.text(max_size=10),
        "updateTime": st.just("2022-08-01T10:00:00"),
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=_notification, data=st.data())
def test_no_re_cut_of_a_genuine_notification_reads_differently(
    client: RefundClient, fields: dict[str, Any], data: Any
) -> None:
    """Fold signed pairs into the one signed before them; where the signed text stays
    the same (the signature still holds), the notification is refused or read exactly
    as the genuine one."""
    signature = _signed(GATEWAY_KEY, fields)
    genuine = _reading(client, fields, signature)
    forged = fields
    for _ in range(data.draw(st.integers(1, 3))):
        if len(forged) < 2:
            break
        forged = _fold(forged, data.draw(st.integers(0, len(forged) - 2)))
    assume(_sign_text(forged) == _sign_text(fields))
    assert _reading(client, forged, signature) in (genuine, ("SignatureError", None))


def test_a_reference_holding_a_signed_pair_is_refused(client: RefundClient) -> None:
    """``merchantReference`` ``a&mz="c"`` signs exactly as ``a`` next to a field ``mz``:
    either could be the genuine one, so neither is read."""
    fields = {"merchantReference": 'a&mz="c"', "orderId": "1", "status": "REFUNDED"}
    split = {"merchantReference": "a", "mz": '"c"', "orderId": "1", "status": "REFUNDED"}
    assert _sign_text(fields) == _sign_text(split)
    signature = _signed(GATEWAY_KEY, fields)
    assert _reading(client, fields, signature) == ("SignatureError", None)
    plain = {**fields, "merchantReference": '=a&mz "c"'}
    assert (
        _reading(client, plain, _signed(GATEWAY_KEY, plain))[3].merchant_reference
        == plain["merchantReference"]
    )


def _number_body(amount: str, signature: str) -> bytes:
    return (
        f'{{"amount":{amount},"currency":"HKD","orderId":"77","status":"REFUNDED",'
        f'"signature":{json.dumps(signature)}}}'
    ).encode()


def test_an_amount_php_rounds_is_not_read(client: RefundClient) -> None:
    """Beyond 14 significant digits PHP prints a number rounded: 1234567890123.45 and
    .44 sign alike under the PHP text, so neither amount is read."""
    genuine = parse_notification(_number_body("1234567890123.45", "x"))
    php_text = next(notification_sign_texts(genuine))
    forged = _number_body(
        "1234567890123.44", base64.b64encode(GATEWAY_KEY.sign_sha256(php_text.encode())).decode()
    )
    note = _verify(client, forged)
    assert note.amount is None
    assert str(note.raw["amount"]) == "1234567890123.44"


def _variants(amount: Decimal) -> list[str]:
    """Other JSON numbers near ``amount``: other digits, other forms of the same value."""
    cent, tiny = Decimal("0.01"), Decimal("1e-15")
    return [
        f"{amount + cent:f}",
        f"{max(amount - cent, Decimal(0)):f}",
        f"{amount:f}000",
        f"{amount + tiny:f}",
        f"{amount:E}",
        f"{amount.quantize(Decimal('0.1'), rounding=ROUND_DOWN):f}",
        f"{amount:.1E}",
    ]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    amount=st.decimals(min_value=0, max_value=10**15, places=2),
    pick=st.integers(0, 6),
)
def test_an_amount_signing_alike_under_the_php_text_reads_the_same(
    client: RefundClient, amount: Decimal, pick: int
) -> None:
    """Any JSON number the PHP text writes as the genuine amount's text verifies with
    the genuine signature: it is read as the genuine amount, or not at all."""
    other = _variants(amount)[pick]
    php_text = next(notification_sign_texts(parse_notification(_number_body(f"{amount:f}", "x"))))
    assume(next(notification_sign_texts(parse_notification(_number_body(other, "x")))) == php_text)
    signature = base64.b64encode(GATEWAY_KEY.sign_sha256(php_text.encode())).decode()
    note = client.verify_callback(
        "directgw",
        method="POST",
        path="/hooks/directgw",
        headers={"Content-Type": "application/json"},
        body=_number_body(other, signature),
    )
    assert note.amount is None or note.amount.amount == amount
