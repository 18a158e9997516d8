"""PayWizard: the refundcore conformance suite, the signatures' exact bytes, the exact
request bytes on the wire, and every reply and status the documentation gives."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from refundcore_paywizard import (
    REFUND_STATES,
    refund_status_from_state,
    transaction_status,
    v3_signature,
)

from refundcore import (
    HttpResponse,
    Money,
    PaymentRef,
    Refund,
    RefundClient,
    RefundQuery,
    RefundResult,
    RefundStatus,
    Void,
)
from refundcore.sandbox import Fault, SandboxRun
from refundcore.testing import ProviderConformance, ProviderStages

CLIENT_ID = "825429536610058240"
CLIENT_SECRET = "9fb645400aabaa33ee0e423405d8c676"
TOKEN = "BIKE195JVXTN7WA5DXZISQ11GPEUYI7A"
CREDENTIALS = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token": TOKEN}
CLOCK = dt.datetime(2025, 6, 9, 14, 32, tzinfo=dt.timezone.utc)


class TestPaywizardConformance(ProviderConformance):
    provider = "paywizard"


# -- signatures ------------------------------------------------------------------------


def test_v3_signature_self_check_vector() -> None:
    # The self-check in PROTOCOL.md, computed from the Signature Guide V3 example.
    body = (
        b'{"clientId":"client12345","merchantId":"10800000003","posId":"D31231234567890",'
        b'"terminalId":"12345678","terminalSn":"WP123987987897"}'
    )
    assert v3_signature(body, "client12345", "9fb645400aabaa33ee0e423405d8c676") == (
        "78b9b617d2e60c54bba722cb5dcaf6be6999f3a7552bfce274280be0009049c5"
    )


def test_v3_signature_of_the_refund_page_example() -> None:
    body = (
        b'{"clientId":"825429536610058240","transIndexCode":"202506091432000000013",'
        b'"oriCheckoutId":"917121926164512768","amount":"0.01"}'
    )
    expected = "4e49224dc27a9a26fa5b149e02c58f81dab671b0ff6f1327d82c684bf2f33d44"
    assert v3_signature(body, CLIENT_ID, CLIENT_SECRET) == expected
    # The same, spelled out with the standard library: key = secret, message = body +
    # "&clientId=..&clientSecret=..".
    message = body + f"&clientId={CLIENT_ID}&clientSecret={CLIENT_SECRET}".encode()
    assert hmac.new(CLIENT_SECRET.encode(), message, hashlib.sha256).hexdigest() == expected


def test_v3_signature_covers_every_byte() -> None:
    body = b'{"clientId":"825429536610058240","amount":"0.01"}'
    spaced = b'{"clientId": "825429536610058240", "amount": "0.01"}'
    assert v3_signature(body, CLIENT_ID, CLIENT_SECRET) != v3_signature(
        spaced, CLIENT_ID, CLIENT_SECRET
    )
    assert v3_signature(body, CLIENT_ID, CLIENT_SECRET) != v3_signature(
        body, "825429536610058241", CLIENT_SECRET
    )


# -- the exact request on the wire -----------------------------------------------------


@pytest.fixture
def run() -> Iterator[SandboxRun]:
    with SandboxRun(
        "paywizard", credentials=dict(CREDENTIALS), emulator_options={"clock": lambda: CLOCK}
    ) as sandbox:
        yield sandbox


def _only_request(run: SandboxRun) -> Any:
    requests = run.server.requests
    assert len(requests) == 1
    return requests[0]


def test_refund_request_exact_bytes(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("100.00", "HKD"))
    assert payment == PaymentRef(
        payment_id="917121926164000001", merchant_reference="202506091432000000001"
    )
    result = run.client.refund(
        "paywizard",
        payment=payment,
        amount=Money("12.30", "HKD"),
        refund_id="202506091432000000013",
        reason="not sent: the refund body has no reason field",
        notify_url="https://shop.example/hooks/paywizard",
    )
    assert result.status is RefundStatus.SUCCEEDED
    sent = _only_request(run)
    assert sent.method == "POST"
    assert sent.target == "/ovstrade/openPay/refundOrder"
    assert sent.body == (
        b'{"clientId":"825429536610058240","transIndexCode":"202506091432000000013",'
        b'"oriCheckoutId":"917121926164000001","oriTransIndexCode":"202506091432000000001",'
        b'"amount":"12.30","notifyUrl":"https://shop.example/hooks/paywizard"}'
    )
    assert sent.header("Content-Type") == "application/json"
    assert sent.header("jwt-token") == TOKEN
    assert sent.header("sign") == (
        "1416c7f77ca63d6ce31ab1c31dae0a1cfe0c3a6b1c1253a2d500f147568d29ab"
    )


def test_refund_page_request_example_is_built_byte_for_byte() -> None:
    # The page's request example, compacted: payment_id → oriCheckoutId only.
    client = RefundClient(config={"paywizard": {**CREDENTIALS, "environment": "sandbox"}})
    stages = ProviderStages(client, "paywizard")
    operation = Refund(
        refund_id="202506091432000000013",
        payment=PaymentRef(payment_id="917121926164512768"),
        amount=Money("0.01", "HKD"),
    )
    signed = stages.sign(stages.build(operation))
    assert signed.url == "https://uat.paywizard.biz/ovstrade/openPay/refundOrder"
    assert signed.body == (
        b'{"clientId":"825429536610058240","transIndexCode":"202506091432000000013",'
        b'"oriCheckoutId":"917121926164512768","amount":"0.01"}'
    )
    assert signed.headers["sign"] == (
        "4e49224dc27a9a26fa5b149e02c58f81dab671b0ff6f1327d82c684bf2f33d44"
    )
    assert list(signed.headers) == ["Content-Type", "jwt-token", "sign"]


def test_production_environment_uses_the_portal_host() -> None:
    client = RefundClient(config={"paywizard": {**CREDENTIALS, "environment": "production"}})
    assert client.config_for("paywizard").base_url == "https://portal.paywizard.biz"


def test_query_request_exact_bytes(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("100.00", "HKD"))
    refund = run.client.refund(
        "paywizard", payment=payment, amount=Money("1.00", "HKD"), refund_id="202506091432000000013"
    )
    assert refund.provider_refund_id == "917121926164000002"
    run.server.clear_requests()
    queried = run.client.query(
        "paywizard",
        refund_id="202506091432000000013",
        provider_refund_id=refund.provider_refund_id,
    )
    assert queried.status is RefundStatus.SUCCEEDED
    sent = _only_request(run)
    assert sent.target == "/ovstrade/openPay/queryOrder"
    assert sent.body == (
        b'{"clientId":"825429536610058240","checkoutId":"917121926164000002",'
        b'"transIndexCode":"202506091432000000013"}'
    )
    assert sent.header("sign") == (
        "c424aff240da891aa188a154332707ea39b24a8ffc662d13a7f413109901f7dc"
    )


def test_void_request_exact_bytes(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(Money("100.00", "HKD"))
    result = run.client.void(
        "paywizard",
        payment=PaymentRef(merchant_reference=payment.merchant_reference),
        refund_id="202506091432000000014",
    )
    assert result.status is RefundStatus.SUCCEEDED
    assert result.operation == "void"
    sent = _only_request(run)
    assert sent.target == "/ovstrade/openPay/reversalOrder"
    assert sent.body == (
        b'{"clientId":"825429536610058240","transIndexCode":"202506091432000000014",'
        b'"oriTransIndexCode":"202506091432000000001"}'
    )
    assert sent.header("sign") == (
        "e18178c75b074c7b45dd3bdcf33cdf0b244a9dbd3c252db4f8700aa4721a36af"
    )


# -- replies: the provider page's example and the status table -------------------------

_CLIENT = RefundClient(config={"paywizard": dict(CREDENTIALS)})
_REFUND = Refund(
    refund_id="202506091432000000015",
    payment=PaymentRef(payment_id="917121926164512768"),
    amount=Money("0.01", "HKD"),
)
_QUERY = RefundQuery(refund_id="202506091432000000015")


def parse(operation: Any, body: Any, status: int = 200) -> RefundResult:
    """Feed a reply to the plugin's parse stage as the client would."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ProviderStages(_CLIENT, "paywizard").parse(
        operation, HttpResponse(status=status, body=raw)
    )


# The provider's refund page's "Success Response Example", as printed.
PAGE_SUCCESS_EXAMPLE = (
    Path(__file__).with_name("fixtures") / "refund-success-response-example.json"
).read_bytes()


def test_page_success_example_parses_to_succeeded() -> None:
    result = parse(_REFUND, PAGE_SUCCESS_EXAMPLE)
    assert result.status is RefundStatus.SUCCEEDED
    assert result.provider_refund_id == "917122074735149056"
    assert result.amount == Money("0.01", "HKD")
    assert result.error_code is None
    assert result.message == "success"
    assert result.raw["data"]["oriTransIndexCode"] == "202506091432000000012"


def _reply(code: Any = 200, result: Any = 0, **data: Any) -> dict[str, Any]:
    body = {
        "mid": "007889-3-006",
        "paywizardId": "10280000002",
        "checkoutId": "917122074735149056",
        "transIndexCode": "202506091432000000015",
        "amount": "0.01",
        "result": result,
        **data,
    }
    return {"code": code, "msg": "m", "timestamp": "2025-06-09 15:32:00", "data": body}


@pytest.mark.parametrize(
    ("reply", "http", "status", "error_code"),
    [
        (_reply(result=0), 200, RefundStatus.SUCCEEDED, None),
        (_reply(result=2), 200, RefundStatus.PENDING, None),
        (_reply(result=1), 200, RefundStatus.FAILED, "declined"),
        (
            {"code": 400, "msg": "refund amount exceeds", "data": None},
            200,
            RefundStatus.FAILED,
            "400",
        ),
        ({"code": 401, "msg": "token invalid", "data": None}, 200, RefundStatus.FAILED, "401"),
        ({"code": 403, "msg": "sign error", "data": None}, 403, RefundStatus.FAILED, "403"),
        ({"code": 404, "msg": "not found", "data": None}, 404, RefundStatus.FAILED, "404"),
        ({"code": 1001, "msg": "business error"}, 200, RefundStatus.FAILED, "1001"),
        ({"code": 500, "msg": "system error", "data": None}, 200, RefundStatus.UNKNOWN, "500"),
        ({"code": 200, "msg": "success", "data": None}, 200, RefundStatus.UNKNOWN, "no_data"),
        (_reply(result=7), 200, RefundStatus.UNKNOWN, "unknown_result"),
        (_reply(result=None), 200, RefundStatus.UNKNOWN, "unknown_result"),
        (_reply(code="200", result="2"), 200, RefundStatus.PENDING, None),
        (_reply(result=0), 400, RefundStatus.UNKNOWN, "contradictory"),
        (
            _reply(result=0, transIndexCode="someone-else"),
            200,
            RefundStatus.UNKNOWN,
            "mismatched_reply",
        ),
        (_reply(code=True), 200, RefundStatus.UNKNOWN, "unparseable"),
        ({"msg": "no code"}, 200, RefundStatus.UNKNOWN, "unparseable"),
        ({"code": 200, "msg": "ok", "data": {}}, 502, RefundStatus.UNKNOWN, "http_502"),
        (b"<html>Bad Gateway</html>", 502, RefundStatus.UNKNOWN, "http_502"),
        (b"<html>oops</html>", 200, RefundStatus.UNKNOWN, "unparseable"),
        (b'{"code": 200, "data": {"result": 0', 200, RefundStatus.UNKNOWN, "unparseable"),
        (b"", 200, RefundStatus.UNKNOWN, "unparseable"),
        (b"[" * 100_000, 200, RefundStatus.UNKNOWN, "unparseable"),
        (b'{"code": NaN}', 200, RefundStatus.UNKNOWN, "unparseable"),
    ],
)
def test_status_table(reply: Any, http: int, status: RefundStatus, error_code: str | None) -> None:
    result = parse(_REFUND, reply, http)
    assert result.status is status
    assert result.error_code == error_code


def test_error_reply_with_null_data_keeps_the_message() -> None:
    result = parse(
        _REFUND, {"code": 401, "msg": "jwt-token invalid", "timestamp": "x", "data": None}
    )
    assert result.status is RefundStatus.FAILED
    assert result.message == "jwt-token invalid"
    assert result.provider_refund_id is None and result.amount is None


def test_void_reply_parses_like_a_refund() -> None:
    void = Void(refund_id="202506091432000000015", payment=PaymentRef(payment_id="1"))
    result = parse(void, _reply(result=0))
    assert result.status is RefundStatus.SUCCEEDED
    assert result.operation == "void"
    assert result.amount is None  # no amount asked for, so no currency to read it in


def test_amount_as_json_number_is_read_without_float() -> None:
    result = parse(_REFUND, b'{"code":200,"data":{"result":0,"amount":0.10,"checkoutId":"1"}}')
    assert result.amount == Money("0.10", "HKD")
    assert isinstance(result.raw["data"]["amount"], Decimal)


# The delayed reply is held until the run stops, far past the client's wait: the client
# gives up first however loaded the machine is.
@pytest.mark.parametrize("fault", [Fault(delay=30), Fault(status=504, body=b"")])
def test_timeout_and_5xx_are_unknown_over_the_wire(fault: Fault) -> None:
    with SandboxRun("paywizard", read_timeout=0.5) as sandbox:
        payment = sandbox.emulator.seed_payment(Money("10.00", "HKD"))
        sandbox.server.inject("*", fault)
        result = sandbox.client.refund("paywizard", payment=payment, amount=Money("1.00", "HKD"))
        assert result.status is RefundStatus.UNKNOWN


# -- query replies ---------------------------------------------------------------------


def _query_reply(state: Any, **data: Any) -> dict[str, Any]:
    body = {
        "mid": "007889-3-006",
        "paywizardId": "10280000002",
        "checkoutId": "917122074735149056",
        "transIndexCode": "202506091432000000015",
        "state": state,
        "amount": "0.01",
        "tranTime": "2025-06-09 15:32:00",
        **data,
    }
    return {"code": 200, "msg": "success", "timestamp": "2025-06-09 15:32:00", "data": body}


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (1, RefundStatus.PENDING),
        (2, RefundStatus.SUCCEEDED),
        (3, RefundStatus.UNKNOWN),
        (4, RefundStatus.SUCCEEDED),
        (5, RefundStatus.FAILED),
        (6, RefundStatus.UNKNOWN),
        (7, RefundStatus.UNKNOWN),
        (8, RefundStatus.UNKNOWN),
        (9, RefundStatus.UNKNOWN),
        (0, RefundStatus.UNKNOWN),
        (None, RefundStatus.UNKNOWN),
        ("2", RefundStatus.SUCCEEDED),
    ],
)
def test_query_state_mapping(state: Any, status: RefundStatus) -> None:
    result = parse(_QUERY, _query_reply(state))
    assert result.status is status
    assert result.operation == "query"
    assert result.provider_refund_id == "917122074735149056"
    if status is RefundStatus.FAILED:
        assert result.error_code == "state_5"


def test_every_documented_state_is_mapped_deliberately() -> None:
    assert sorted(REFUND_STATES) == list(range(1, 10))
    assert refund_status_from_state(None) is RefundStatus.UNKNOWN


def test_query_not_found_is_failed() -> None:
    result = parse(_QUERY, {"code": 200, "msg": "success", "timestamp": "t", "data": None})
    assert result.status is RefundStatus.FAILED
    assert result.error_code == "not_found"


@pytest.mark.parametrize("code", [400, 401, 403, 404, 500])
def test_refused_query_says_nothing_about_the_refund(code: int) -> None:
    result = parse(_QUERY, {"code": code, "msg": "no", "data": None})
    assert result.status is RefundStatus.UNKNOWN
    assert result.error_code == str(code)


def test_query_answer_about_another_transaction_is_unknown() -> None:
    # The original payment's record (state 4, refunded) must never read as our refund.
    other = _query_reply(4, transIndexCode="202506091432000000012")
    assert parse(_QUERY, other).status is RefundStatus.UNKNOWN
    with_id = RefundQuery(refund_id="202506091432000000015", provider_refund_id="1")
    assert parse(with_id, _query_reply(2)).error_code == "mismatched_reply"


def test_query_data_not_an_object_is_unknown() -> None:
    assert parse(_QUERY, {"code": 200, "data": [1]}).status is RefundStatus.UNKNOWN


# -- property tests of the parser ------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(
    code=st.integers(min_value=-(10**6), max_value=10**6).filter(
        lambda c: c != 200 and not 500 <= c <= 599
    ),
    data=_json_values,
    http=st.sampled_from([200, 400, 401, 403, 404]),
)
def test_any_refused_code_is_failed(code: int, data: Any, http: int) -> None:
    result = parse(_REFUND, {"code": code, "msg": "x", "data": data}, http)
    assert result.status is RefundStatus.FAILED
    assert result.error_code == str(code)


@settings(max_examples=200, deadline=None)
@given(
    outcome=st.sampled_from([0, 1, 2]),
    extra=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in ("result", "transIndexCode")),
        _json_values,
        max_size=4,
    ),
)
def test_result_codes_decide_regardless_of_other_fields(
    outcome: int, extra: dict[str, Any]
) -> None:
    data = {**extra, "result": outcome}
    result = parse(_REFUND, {"code": 200, "msg": "ok", "data": data})
    assert result.status is transaction_status(200, outcome)
    assert (
        result.status
        is {
            0: RefundStatus.SUCCEEDED,
            1: RefundStatus.FAILED,
            2: RefundStatus.PENDING,
        }[outcome]
    )
