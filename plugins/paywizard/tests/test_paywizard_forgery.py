"""PayWizard result pushes attacked: a genuine push re-cut, re-typed or wrapped in
unsigned extras must be refused or read exactly as it was signed."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from refundcore_paywizard import load_push_fields, push_signature

from refundcore import RefundClient, RefundError, SignatureError

CLIENT_ID = "825429536610058240"
CLIENT_SECRET = "9fb645400aabaa33ee0e423405d8c676"
TOKEN = "BIKE195JVXTN7WA5DXZISQ11GPEUYI7A"
_CLIENT = RefundClient(
    config={"paywizard": {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token": TOKEN}}
)

SALE = {
    "amount": "50.00",
    "checkoutId": "917122074735140001",
    "currencyCode": "344",
    "mid": "007889-3-006",
    "paywizardId": "10280000002",
    "state": "2",
    "tranTime": "2025-06-09 15:32:00",
    "transIndexCode": "202506091432000000015",
    "transResult": "0",
    "transType": "SALE",
}


def verify(fields: dict[str, Any], sign: str, headers: dict[str, str] | None = None) -> Any:
    return _CLIENT.verify_callback(
        "paywizard",
        method="POST",
        path="/hooks/paywizard",
        headers={"sign": sign, **(headers or {})},
        body=json.dumps(fields).encode(),
    )


def _sign(fields: dict[str, Any]) -> str:
    return push_signature(load_push_fields(json.dumps(fields).encode()), CLIENT_ID, CLIENT_SECRET)


def _reading(fields: dict[str, Any], sign: str) -> tuple[Any, ...]:
    """What the plugin makes of a push: the notification's deciding parts, or the
    typed refusal."""
    try:
        note = verify(fields, sign)
    except RefundError as error:
        return (type(error).__name__, getattr(error, "event", None))
    return (
        note.status,
        note.event,
        note.refund_id,
        note.provider_refund_id,
        note.payment,
        note.amount,
    )


def _merge(fields: dict[str, Any], name: str) -> dict[str, Any]:
    """``name`` folded into the value of the field signed just before it: the signed
    string stays the same byte for byte."""
    names = sorted(key for key, value in fields.items() if value != "")
    before = names[names.index(name) - 1]
    merged = {key: value for key, value in fields.items() if key != name}
    merged[before] = f"{fields[before]}&{name}={fields[name]}"
    return merged


def test_a_sale_push_re_cut_to_drop_its_trans_type_is_refused() -> None:
    """``transType`` folded into ``transResult`` leaves the signed string as it was;
    read naively, the sale would become a SUCCEEDED push about its transIndexCode."""
    sign = _sign(SALE)
    assert _reading(SALE, sign) == ("NotARefund", "push.sale")
    forged = _merge(SALE, "transType")
    assert _sign(forged) == sign
    with pytest.raises(SignatureError):
        verify(forged, sign)


def test_a_field_name_holding_the_next_pair_is_refused() -> None:
    sign = _sign(SALE)
    forged = {k: v for k, v in SALE.items() if k not in ("transResult", "transType")}
    forged["transResult=0&transType"] = "SALE"
    assert _sign(forged) == sign
    with pytest.raises(SignatureError):
        verify(forged, sign)


_refund_push = st.fixed_dictionaries(
    {
        "amount": st.sampled_from(["0.01", "1.50", "50.00"]),
        "checkoutId": st.from_regex(r"9[0-9]{17}", fullmatch=True),
        "currencyCode": st.sampled_from(["344", "840", "HKD"]),
        "state": st.sampled_from(["1", "2", "4", "5"]),
        "transIndexCode": st.from_regex(r"[A-Za-z0-9_-]{1,24}", fullmatch=True),
        "transResult": st.sampled_from(["0", "1", "2"]),
    },
    optional={
        "transType": st.sampled_from(["REFUND", "SALE", "VOID", "PAY"]),
        "oriCheckoutId": st.from_regex(r"9[0-9]{17}", fullmatch=True),
        "mid": st.text(max_size=12),
        "remark": st.text(max_size=12),
        "tranTime": st.just("2025-06-09 15:32:00"),
    },
)


@settings(max_examples=150, deadline=None)
@given(push=_refund_push, data=st.data())
def test_no_re_cut_of_a_genuine_push_reads_differently(push: dict[str, Any], data: Any) -> None:
    """Fold any set of signed fields into their neighbours (the signature still holds):
    the push is refused, or read exactly as the genuine one."""
    sign = _sign(push)
    genuine = _reading(push, sign)
    # Only fields in the signed string (not empty) can be folded, into the one before.
    names = sorted(key for key, value in push.items() if value != "")[1:]
    folded = data.draw(st.lists(st.sampled_from(names), unique=True, min_size=1))
    forged = push
    for name in sorted(folded, reverse=True):
        forged = _merge(forged, name)
    assert _sign(forged) == sign
    assert _reading(forged, sign) in (genuine, ("SignatureError", None))


@settings(max_examples=150, deadline=None)
@given(
    push=_refund_push,
    extra=st.dictionaries(
        st.sampled_from(["transResult", "transType", "state", "sign", "TransResult"]),
        st.sampled_from(["0", "1", "REFUND", "", "SUCCEEDED"]),
        max_size=3,
    ),
)
def test_unsigned_headers_never_change_a_reading(push: dict[str, Any], extra: Any) -> None:
    """Headers are not signed: whatever they say, the same push reads the same."""
    sign = _sign(push)
    note = _reading(push, sign)
    try:
        again = verify(push, sign, {k: v for k, v in extra.items() if k != "sign"})
    except RefundError as error:
        assert (type(error).__name__, getattr(error, "event", None)) == note
        return
    assert (
        again.status,
        again.event,
        again.refund_id,
        again.provider_refund_id,
        again.payment,
        again.amount,
    ) == note
