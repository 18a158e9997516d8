"""``refundcore.plugin``, the one import a plugin needs, and the helpers it brings:
JSON for money, exact forms, the timestamped-HMAC check, wire decimals."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

import refundcore
from refundcore import plugin
from refundcore.plugin import (
    Capabilities,
    JsonNumber,
    Money,
    NotARefund,
    RefundError,
    SignatureError,
    ValidationError,
    check_timestamp,
    dump_json,
    form_decode,
    form_encode,
    form_fields,
    load_json,
    verify_timestamped_hmac,
)


def test_every_name_a_plugin_needs_is_importable_from_one_module() -> None:
    for name in plugin.__all__:
        assert getattr(plugin, name) is not None, name
    assert plugin.hookimpl is refundcore.hookimpl
    assert plugin.NotARefund is refundcore.NotARefund


def test_importing_it_does_not_import_cryptography() -> None:
    code = "import sys, refundcore.plugin; print('cryptography' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_not_a_refund_is_a_refund_error_but_not_a_signature_error() -> None:
    error = NotARefund("order.paid")
    assert isinstance(error, RefundError) and not isinstance(error, SignatureError)
    assert error.event == "order.paid" and "order.paid" in str(error)


# -- JSON ------------------------------------------------------------------------------


def test_json_numbers_never_become_floats() -> None:
    data = load_json(b'{"amount": 0.10, "id": 12345678901234567890, "n": 1e2}')
    assert data == {"amount": Decimal("0.10"), "id": 12345678901234567890, "n": Decimal("1E+2")}
    assert str(data["amount"]) == "0.10"


def test_exact_numbers_keep_their_literal_text() -> None:
    data = load_json('{"amount": 699.00, "n": 1e2, "k": 7}', exact_numbers=True)
    assert data == {"amount": "699.00", "n": "1e2", "k": "7"}
    assert all(isinstance(value, JsonNumber) for value in data.values())
    assert data["amount"].to_decimal() == Decimal("699")


@pytest.mark.parametrize(
    "text",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": -Infinity}',
        '{"a": 1, "a": 2}',
        '{"a": {"b": 1, "b": 1}}',
    ],
)
def test_json_refuses_what_a_signature_could_be_read_two_ways(text: str) -> None:
    with pytest.raises(ValueError):
        load_json(text)


def test_json_nested_too_deep_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="deeply"):
        load_json(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32", "utf-8-sig"])
def test_json_bytes_are_decoded_as_json_loads_decodes_them(encoding: str) -> None:
    body = '{"note": "café"}'.encode(encoding)
    assert load_json(body) == json.loads(body)


def test_dump_json_writes_decimals_with_their_own_digits_and_refuses_floats() -> None:
    assert dump_json({"a": Decimal("76.10"), "b": JsonNumber("1e2"), "c": [1, None, True]}) == (
        b'{"a":76.10,"b":1e2,"c":[1,null,true]}'
    )
    assert dump_json({"t": "é"}) == b'{"t":"\\u00e9"}'
    assert dump_json({"t": "é"}, ensure_ascii=False) == '{"t":"é"}'.encode()
    with pytest.raises(TypeError):
        dump_json({"a": 0.1})
    with pytest.raises(ValueError):
        dump_json(Decimal("NaN"))
    with pytest.raises(TypeError):
        dump_json({1: "x"})


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.decimals(allow_nan=False, allow_infinity=False, places=4)
    | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=15,
)


@given(_JSON_VALUES)
def test_dump_then_load_gives_the_same_value(value: object) -> None:
    assert load_json(dump_json(value)) == value


# -- forms -----------------------------------------------------------------------------


_FORM_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)


@given(st.lists(st.tuples(_FORM_TEXT, _FORM_TEXT), max_size=6))
def test_form_encode_is_urlencode_for_text(pairs: list[tuple[str, str]]) -> None:
    assert form_encode(pairs) == urlencode(pairs)


@given(st.lists(st.tuples(_FORM_TEXT.filter(bool), _FORM_TEXT), max_size=6))
def test_form_decode_reads_back_what_form_encode_wrote(pairs: list[tuple[str, str]]) -> None:
    assert form_decode(form_encode(pairs).encode()) == pairs


def test_form_encode_takes_text_only() -> None:
    with pytest.raises(TypeError):
        form_encode([("amount", 1.5)])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "body",
    [b"a=1&b", b"a=1&&b=2", b"=1", "a=caf\xe9".encode("latin-1"), b"a=%ff", b"a=1&" * 300],
)
def test_form_decode_is_strict(body: bytes) -> None:
    with pytest.raises(ValueError):
        form_decode(body)


def test_form_fields_refuse_a_field_given_twice() -> None:
    assert form_fields(b"a=1&b=x+y%21") == {"a": "1", "b": "x y!"}
    with pytest.raises(ValueError, match="twice"):
        form_fields(b"amount=1.00&amount=100.00")


# -- the timestamped HMAC --------------------------------------------------------------


def _signed(timestamp: str, body: bytes = b"{}") -> tuple[bytes, str]:
    message = timestamp.encode() + b"." + body
    return message, hmac.new(b"k", message, hashlib.sha256).hexdigest()


def test_timestamped_hmac_accepts_a_fresh_genuine_signature() -> None:
    message, signature = _signed("1700000000")
    checked = verify_timestamped_hmac(
        key=b"k",
        timestamp="1700000000",
        message=message,
        signatures=["0" * 64, signature.upper()],
        tolerance=300,
        clock=lambda: 1700000299.0,
    )
    assert checked == 1700000000


@pytest.mark.parametrize("now", [1700000301.0, 1699999699.0])
def test_timestamped_hmac_refuses_outside_the_tolerance_either_way(now: float) -> None:
    message, signature = _signed("1700000000")
    with pytest.raises(SignatureError, match="replay"):
        verify_timestamped_hmac(
            key=b"k",
            timestamp="1700000000",
            message=message,
            signatures=signature,
            tolerance=300,
            clock=lambda: now,
        )


@pytest.mark.parametrize(
    ("timestamp", "signature", "message"),
    [
        ("1700000000", "0" * 64, None),
        ("1700000000", "", None),
        ("17e8", None, None),
        ("9" * 13, None, None),
        ("1700000000", None, b"other message"),
    ],
)
def test_timestamped_hmac_refuses_a_bad_signature_or_timestamp(
    timestamp: str, signature: str | None, message: bytes | None
) -> None:
    genuine_message, genuine = _signed(timestamp)
    with pytest.raises(SignatureError):
        verify_timestamped_hmac(
            key=b"k",
            timestamp=timestamp,
            message=message if message is not None else genuine_message,
            signatures=signature if signature is not None else genuine,
            tolerance=300,
            clock=lambda: 1700000000.0,
        )


@given(timestamp=st.text(max_size=20), signature=st.text(max_size=80))
def test_timestamped_hmac_raises_only_signature_errors(timestamp: str, signature: str) -> None:
    try:
        verify_timestamped_hmac(
            key=b"k",
            timestamp=timestamp,
            message=timestamp.encode("utf-8", "replace") + b".{}",
            signatures=signature,
            tolerance=300,
        )
    except SignatureError:
        return
    pytest.fail("a made-up signature verified")


def test_check_timestamp_uses_the_clock_it_is_given() -> None:
    assert check_timestamp("100", tolerance=5, clock=lambda: 104.0) == 100
    with pytest.raises(SignatureError):
        check_timestamp("100", tolerance=5, clock=lambda: 106.0)


# -- wire decimals ---------------------------------------------------------------------


def test_money_writes_a_gateways_own_number_of_decimals() -> None:
    assert Money(1500, "JPY").to_wire(2) == "1500.00"
    assert Money("1.25", "KWD").to_wire(2) == "1.25"
    assert Money("10.50", "HKD").to_wire(3) == "10.500"
    assert Money("10.50", "HKD").to_wire() == "10.50"
    with pytest.raises(ValidationError, match="without rounding"):
        Money("1.255", "KWD").to_wire(2)
    with pytest.raises(ValidationError):
        Money("1", "HKD").to_wire(7)


def test_capabilities_say_how_many_decimals_the_gateway_wants() -> None:
    caps = Capabilities(wire_decimals={"ISK": 2})
    assert (caps.decimals_for("ISK"), caps.decimals_for("JPY"), caps.decimals_for("BHD")) == (
        2,
        0,
        3,
    )
    everywhere = Capabilities(wire_decimals={"*": 2})
    assert everywhere.decimals_for("JPY") == everywhere.decimals_for("BHD") == 2
    assert everywhere.as_dict()["wire_decimals"] == {"*": 2}
    json.dumps(everywhere.as_dict())
    with pytest.raises(ValidationError):
        Capabilities(wire_decimals={"XYZ": 2})
    with pytest.raises(ValidationError):
        Capabilities(wire_decimals={"JPY": 5})
