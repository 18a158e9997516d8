"""The examples printed on Wonder's "15. Refund transaction" page, kept as printed in
``fixtures/``, through the public API: the refund refundcore sends has the example
request's fields, and the example reply reads as a refusal (its ``error_code`` is the
placeholder ``"string"``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from refundcore_wonder import REFUND_PATH

from refundcore import Money, PaymentRef, RefundClient, RefundResult, RefundStatus
from refundcore.sandbox import Fault, SandboxRun

FIXTURES = Path(__file__).with_name("fixtures")

#: Every fixture, and which example of the refund page it is.
EXAMPLES = {
    # The request body of the page's code samples (the same in all nine languages).
    "refund-request-example.json": "request",
    # The 200 reply's "Example (from schema)": every value a type placeholder.
    "refund-response-example.json": "reply",
}

PAYMENT = PaymentRef(
    payment_id="W000000000001",
    merchant_reference="shop-order-1",
    transaction_id="0f8fad5b-d9cb-469f-a165-70867728950e",
)


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _shape(value: Any) -> Any:
    """Keys all the way down, with the JSON type of each leaf."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    return type(value).__name__


def _refund_answered_with(reply: bytes) -> tuple[RefundResult, bytes]:
    with SandboxRun("wonder") as run:
        run.server.inject(REFUND_PATH, Fault(status=200, body=reply, reach_app=False))
        result = run.client.refund(
            "wonder",
            payment=PAYMENT,
            amount=Money("10.00", "HKD"),
            refund_id="r-2026-0001",
            reason="damaged",
        )
        (sent,) = run.server.requests
    return result, sent.body


def test_every_fixture_is_a_documented_example() -> None:
    assert sorted(path.name for path in FIXTURES.iterdir()) == sorted(EXAMPLES)


def test_the_refund_sent_has_the_example_requests_fields() -> None:
    example = _shape(json.loads(_fixture("refund-request-example.json")))
    _, sent = _refund_answered_with(_fixture("refund-response-example.json"))
    shape = _shape(json.loads(sent))
    # The page's fields, plus the two Wonder's production plugin sends (PROTOCOL.md).
    extra = {"currency": "str", "reason": "str"}
    assert shape == {**example, "refund": {**example["refund"], **extra}}


def test_the_example_reply_is_a_refusal() -> None:
    result, _ = _refund_answered_with(_fixture("refund-response-example.json"))
    assert result.status is RefundStatus.FAILED
    assert (result.error_code, result.message) == ("string", "string")
    assert result.raw["data"]["order"]["transactions"][0]["type"] == "Sales"


def test_the_documented_hosts_are_the_registered_environments() -> None:
    environments = RefundClient(journal=None).provider("wonder").environments
    assert environments == {
        "sandbox": "https://gateway-stg.wonder.today",
        "production": "https://gateway.wonder.today",
    }
