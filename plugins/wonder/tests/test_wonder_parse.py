"""Wonder replies → results: the page's example, every row of the status table, how our
refund is found among several, and hostile replies."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import refundcore_wonder as wonder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refundcore import HttpResponse, Money, PaymentRef, ProviderInfo, RefundStatus, ValidationError
from refundcore.config import load_provider_config
from refundcore.crypto import generate_rsa_keypair
from refundcore.models import Refund, RefundQuery, RefundResult
from refundcore.plugins import PluginRegistry

SALE = "0f8fad5b-d9cb-469f-a165-70867728950e"
PAYMENT = PaymentRef(payment_id="W1", merchant_reference="shop-1", transaction_id=SALE)

# The 200 reply printed on Wonder's refund page (API reference 15), as printed.
PAGE_EXAMPLE = (Path(__file__).with_name("fixtures") / "refund-response-example.json").read_text(
    encoding="utf-8"
)


@pytest.fixture(scope="module")
def info() -> ProviderInfo:
    return PluginRegistry(entry_points=True).provider("wonder")


def make_config(info: ProviderInfo, **overrides: Any) -> wonder.WonderConfig:
    key = generate_rsa_keypair()
    settings = {
        "base_url": "https://gw.example",
        "app_id": "app-1",
        "private_key": key.to_pem(),
        "webhook_public_key": key.public_key().to_pem(),
        **overrides,
    }
    config: wonder.WonderConfig = load_provider_config(info, settings)
    return config


@pytest.fixture(scope="module")
def config(info: ProviderInfo) -> wonder.WonderConfig:
    return make_config(info)


REFUND = Refund(refund_id="r-1", payment=PAYMENT, amount=Money("40.00", "HKD"), reason="damaged")
QUERY = RefundQuery(refund_id="r-1", payment=PAYMENT)


def parse(
    info: ProviderInfo,
    config: wonder.WonderConfig,
    status: int,
    body: bytes | dict[str, Any] | str,
    operation: Refund | RefundQuery = REFUND,
    headers: dict[str, str] | None = None,
) -> RefundResult:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    elif isinstance(body, str):
        body = body.encode()
    return wonder.refundcore_parse_response(
        provider=info,
        operation=operation,
        response=HttpResponse(status=status, headers=headers or {}, body=body),
    )


def refund_txn(**fields: Any) -> dict[str, Any]:
    txn = {
        "type": "Refund",
        "uuid": "9b2c1d7e-1111-4222-8333-944455556666",
        "currency": "HKD",
        "amount": "40.00",
        "success": True,
        "is_pending": False,
        "note": "damaged",
        "original_transaction_uuid": SALE,
    }
    txn.update(fields)
    return txn


def sale_txn() -> dict[str, Any]:
    return {"type": "Sales", "uuid": SALE, "amount": "100.00", "success": True, "is_pending": False}


def reply(*refunds: dict[str, Any], error_code: Any = "0", **envelope: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error_code": error_code,
        "error_message": "",
        "data": {
            "order": {
                "number": "W1",
                "reference_number": "shop-1",
                "currency": "HKD",
                "transactions": [sale_txn(), *refunds],
            }
        },
    }
    body.update(envelope)
    return body


# -- the page's example ---------------------------------------------------------------------


def test_page_example_as_printed(info: ProviderInfo, config: wonder.WonderConfig) -> None:
    """The page's example carries the placeholder error_code "string": not a success
    value, so the gateway said no."""
    result = parse(info, config, 200, PAGE_EXAMPLE)
    assert result.status is RefundStatus.FAILED
    assert result.error_code == "string"
    assert result.message == "string"
    assert result.raw["data"]["order"]["transactions"][0]["type"] == "Sales"


def test_page_example_success_without_a_refund_entry(
    info: ProviderInfo, config: wonder.WonderConfig
) -> None:
    data = json.loads(PAGE_EXAMPLE)
    data["error_code"] = "0"
    result = parse(info, config, 200, data)
    # Only a sale transaction: the reply does not show the refund.
    assert result.status is RefundStatus.UNKNOWN
    assert result.error_code == "refund_not_identified"


@pytest.mark.parametrize(
    ("success", "pending", "expected"),
    [
        (True, False, RefundStatus.SUCCEEDED),
        (True, True, RefundStatus.PENDING),
        (False, True, RefundStatus.PENDING),
        (False, False, RefundStatus.FAILED),
    ],
)
def test_page_example_with_its_transaction_as_our_refund(
    info: ProviderInfo,
    config: wonder.WonderConfig,
    success: bool,
    pending: bool,
    expected: RefundStatus,
) -> None:
    data = json.loads(PAGE_EXAMPLE)
    data["error_code"] = ""
    txn = data["data"]["order"]["transactions"][0]
    txn.update(
        type="Refund",
        amount="40.00",
        currency="HKD",
        note="damaged",
        success=success,
        is_pending=pending,
        original_transaction_uuid=SALE,
    )
    result = parse(info, config, 200, data)
    assert result.status is expected
    assert result.provider_refund_id == "string"
    assert result.amount == Money("40.00", "HKD")


# -- the status table ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (200, reply(refund_txn()), RefundStatus.SUCCEEDED, None),
        (200, reply(refund_txn(success=False, is_pending=True)), RefundStatus.PENDING, None),
        (200, reply(refund_txn(success=False)), RefundStatus.FAILED, "refund_declined"),
        (200, reply(refund_txn(success=None)), RefundStatus.UNKNOWN, None),
        (200, reply(refund_txn(success="true")), RefundStatus.UNKNOWN, None),
        (
            200,
            reply(error_code="E1001", error_message="refund exceeds"),
            RefundStatus.FAILED,
            "E1001",
        ),
        (
            200,
            {"code": 200, "message": "success", "data": reply(refund_txn())["data"]},
            RefundStatus.SUCCEEDED,
            None,
        ),
        (200, {"code": "200", "data": reply(refund_txn())["data"]}, RefundStatus.SUCCEEDED, None),
        (200, {"code": 40001, "message": "bad order", "data": None}, RefundStatus.FAILED, "40001"),
        (
            200,
            {"code": 200, "error_code": "E9", "data": reply(refund_txn())["data"]},
            RefundStatus.FAILED,
            "E9",
        ),
        (200, {"data": reply(refund_txn())["data"]}, RefundStatus.SUCCEEDED, None),
        (200, reply(refund_txn(), error_code=None), RefundStatus.SUCCEEDED, None),
        (200, reply(refund_txn(), error_code=""), RefundStatus.SUCCEEDED, None),
        (200, reply(refund_txn(), error_code=0), RefundStatus.SUCCEEDED, None),
        (200, {"error_code": "0", "data": None}, RefundStatus.UNKNOWN, "no_order"),
        (200, b"<html>ok</html>", RefundStatus.UNKNOWN, "unparseable"),
        (200, b"", RefundStatus.UNKNOWN, "unparseable"),
        (200, b"[1,2]", RefundStatus.UNKNOWN, "unparseable"),
        (
            400,
            {"error_code": "INVALID_PARAMS", "error_message": "note"},
            RefundStatus.FAILED,
            "INVALID_PARAMS",
        ),
        (400, b"", RefundStatus.FAILED, "bad_request"),
        (401, {"error_code": "CREDENTIAL_INVALID"}, RefundStatus.FAILED, "credential_refused"),
        (403, b"Forbidden", RefundStatus.FAILED, "credential_refused"),
        (404, b"", RefundStatus.FAILED, "http_404"),
        (500, reply(refund_txn()), RefundStatus.UNKNOWN, "http_500"),
        (502, b"<html>Bad Gateway</html>", RefundStatus.UNKNOWN, "http_502"),
        (503, b"", RefundStatus.UNKNOWN, "http_503"),
        (504, b"", RefundStatus.UNKNOWN, "http_504"),
        (302, b"", RefundStatus.UNKNOWN, "unparseable"),
    ],
)
def test_status_table(
    info: ProviderInfo,
    config: wonder.WonderConfig,
    status: int,
    body: Any,
    expected: RefundStatus,
    code: str | None,
) -> None:
    result = parse(info, config, status, body)
    assert result.status is expected
    if code is not None:
        assert result.error_code == code


def test_credential_refusal_keeps_the_gateway_message(
    info: ProviderInfo, config: wonder.WonderConfig
) -> None:
    result = parse(info, config, 403, {"error_code": "SIG", "error_message": "bad signature"})
    assert (result.error_code, result.message) == ("credential_refused", "bad signature")


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_refused_query_is_unknown_not_failed(
    info: ProviderInfo, config: wonder.WonderConfig, status: int
) -> None:
    """A query Wonder refused says nothing about the refund itself."""
    result = parse(info, config, status, {"error_code": "X"}, QUERY)
    assert result.status is RefundStatus.UNKNOWN


def test_query_envelope_error_is_unknown(info: ProviderInfo, config: wonder.WonderConfig) -> None:
    result = parse(info, config, 200, {"error_code": "ORDER_NOT_FOUND", "data": None}, QUERY)
    assert (result.status, result.error_code) == (RefundStatus.UNKNOWN, "ORDER_NOT_FOUND")


def test_query_by_provider_refund_id(info: ProviderInfo, config: wonder.WonderConfig) -> None:
    query = RefundQuery(refund_id="r-1", payment=PAYMENT, provider_refund_id="second")
    body = reply(refund_txn(uuid="first"), refund_txn(uuid="second", is_pending=True))
    result = parse(info, config, 200, body, query)
    assert (result.status, result.provider_refund_id) == (RefundStatus.PENDING, "second")


def test_a_refund_not_listed_is_unknown_never_failed(
    info: ProviderInfo, config: wonder.WonderConfig
) -> None:
    """Absence proves nothing at Wonder: the refund may not be listed yet, and without
    its uuid one refund of an amount cannot be told from another."""
    body = reply(refund_txn(uuid="first"))
    missing = RefundQuery(refund_id="r-1", payment=PAYMENT, provider_refund_id="third")
    result = parse(info, config, 200, body, missing)
    assert (result.status, result.error_code) == (RefundStatus.UNKNOWN, "refund_not_found")
    for order in (body, reply()):
        result = parse(info, config, 200, order, QUERY)
        assert (result.status, result.error_code) == (
            RefundStatus.UNKNOWN,
            "refund_not_identified",
        )


def test_free_text_never_identifies_a_refund(
    info: ProviderInfo, config: wonder.WonderConfig
) -> None:
    """A note that happens to carry our refund id is not proof: only the uuid is."""
    body = reply(refund_txn(note="[r-1] damaged"), refund_txn(uuid="x", note="r-1"))
    result = parse(info, config, 200, body, QUERY)
    assert (result.status, result.provider_refund_id) == (RefundStatus.UNKNOWN, None)


def test_refund_reply_picks_the_newest_refund_of_its_amount_on_its_sale(
    info: ProviderInfo, config: wonder.WonderConfig
) -> None:
    body = reply(
        refund_txn(uuid="older-same"),
        refund_txn(uuid="other-amount", amount="10.00"),
        refund_txn(uuid="other-sale", original_transaction_uuid="another-sale"),
        refund_txn(uuid="newest-same", note="something else", is_pending=True),
    )
    result = parse(info, config, 200, body)
    assert (result.provider_refund_id, result.status) == ("newest-same", RefundStatus.PENDING)


@pytest.mark.parametrize(
    ("echoed", "expected"),
    [
        (None, RefundStatus.SUCCEEDED),
        ("r-1", RefundStatus.SUCCEEDED),
        (" r-1 ", RefundStatus.SUCCEEDED),
        ("r-2", RefundStatus.UNKNOWN),
        ("", RefundStatus.UNKNOWN),
    ],
)
def test_a_reply_echoing_another_request_id_is_not_about_our_refund(
    info: ProviderInfo, config: wonder.WonderConfig, echoed: str | None, expected: RefundStatus
) -> None:
    headers = {} if echoed is None else {"X-Request-ID": echoed}
    result = parse(info, config, 200, reply(refund_txn()), headers=headers)
    assert result.status is expected
    if expected is RefundStatus.UNKNOWN:
        assert result.error_code == "mismatched_reply"
        # A refusal about another request is not our refund's refusal either.
        refused = parse(info, config, 400, {"error_code": "X"}, headers=headers)
        assert refused.status is RefundStatus.UNKNOWN


# -- finding our refund ------------------------------------------------------------------------


def test_find_refund_transaction_preferences() -> None:
    txns = [
        sale_txn(),
        refund_txn(uuid="a", amount="-40.00"),
        refund_txn(uuid="b", amount="10.00"),
        refund_txn(uuid="c", original_transaction_uuid="another-sale"),
        {"type": "Sales", "uuid": "d", "amount": "40.00"},
    ]

    def found(**kwargs: Any) -> object:
        match = wonder.find_refund_transaction(txns, **kwargs)
        return None if match is None else match["uuid"]

    assert found(provider_refund_id="b") == "b"
    assert found(provider_refund_id="zz") is None
    # The sale filter drops "c"; "a" matches by magnitude (refunds may come negative).
    assert found(amount=Decimal("40.00"), sale_uuid=SALE) == "a"
    assert found(amount=Decimal("40.00")) == "c"
    assert found(amount=Decimal("1.00")) is None
    assert found() is None
    assert wonder.find_refund_transaction([], amount=Decimal(1)) is None


@pytest.mark.parametrize(
    ("amount", "reason", "fields"),
    [
        (
            Money("10", "HKD"),
            "damaged",
            {"amount": "10.00", "currency": "HKD", "reason": "damaged", "note": "damaged"},
        ),
        (
            Money("17", "JPY"),
            None,
            {"amount": "17.00", "currency": "JPY", "reason": "", "note": ""},
        ),
        (
            Money("1.250", "KWD"),
            "退款 café",
            {"amount": "1.25", "currency": "KWD", "reason": "退款 café", "note": "退款 café"},
        ),
    ],
)
def test_refund_fields_carry_both_sources_shapes(
    amount: Money, reason: str | None, fields: dict[str, str]
) -> None:
    assert wonder.refund_fields(amount, reason) == fields


def test_an_amount_wonder_cannot_take_is_refused() -> None:
    with pytest.raises(ValidationError) as error:
        wonder.refund_fields(Money("1.255", "KWD"), None)
    assert error.value.field == "amount"


# -- hostile replies ------------------------------------------------------------------------

_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text(max_size=8),
    st.sampled_from(["Refund", "refund", "Sales", "40.00", "-40.00", "0", "200", SALE]),
)
_TXN = st.dictionaries(
    st.sampled_from(
        [
            "type",
            "uuid",
            "amount",
            "currency",
            "success",
            "is_pending",
            "note",
            "original_transaction_uuid",
        ]
    ),
    _SCALARS,
)


def _json_values(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _json_values(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in _json_values(item)]
    return [value]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    transactions=st.lists(st.one_of(_TXN, _SCALARS), max_size=5),
    code=st.one_of(st.none(), _SCALARS),
    query=st.booleans(),
    number=st.sampled_from(["40.00", 40.5, 1e400, "NaN"]),
)
def test_hostile_orders_never_crash_and_never_invent_success(
    info: ProviderInfo,
    config: wonder.WonderConfig,
    transactions: list[Any],
    code: Any,
    query: bool,
    number: Any,
) -> None:
    body = {
        "error_code": code,
        "data": {"order": {"transactions": transactions, "initial_total": number}},
    }
    text = json.dumps(body)  # 1e400 → Infinity, "NaN" stays a string
    result = parse(info, config, 200, text, QUERY if query else REFUND)
    assert isinstance(result, RefundResult)
    assert not any(
        isinstance(leaf, float) for leaf in _json_values(copy.deepcopy(dict(result.raw)))
    )
    if result.status in (RefundStatus.SUCCEEDED, RefundStatus.PENDING):
        assert any(
            isinstance(txn, dict)
            and str(txn.get("type", "")).lower() == "refund"
            and (txn.get("success") is True or txn.get("is_pending") is True)
            for txn in transactions
        )


_any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=15,
)


@given(value=_any_json, encoding=st.sampled_from(["utf-8", "utf-16", "utf-32", "utf-8-sig"]))
def test_bodies_decode_as_json_loads_decodes_them(value: Any, encoding: str) -> None:
    body = json.dumps(value, ensure_ascii=False).encode(encoding, "surrogatepass")
    assert wonder._load_json(body) == json.loads(body, parse_float=Decimal)
