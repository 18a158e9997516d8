"""The examples printed on PayWizard's APM "Refund" page, kept as printed in
``fixtures/``, through the public API: the refund refundcore sends for the example's ids
is the example request, and the example reply reads as the page says it should."""

from __future__ import annotations

import json
from pathlib import Path

from refundcore_paywizard import REFUND_PATH

from refundcore import Money, PaymentRef, RefundClient, RefundResult, RefundStatus
from refundcore.sandbox import Fault, SandboxRun

FIXTURES = Path(__file__).with_name("fixtures")

#: Every fixture, and which example of the APM "Refund" page it is.
EXAMPLES = {
    # "Request Example": a refund of 0.01 of checkout 917121926164512768.
    "refund-request-example.json": "request",
    # "Success Response Example": code 200, data.result 0, for transIndexCode ...015.
    "refund-success-response-example.json": "reply",
}

CREDENTIALS = {
    "client_id": "825429536610058240",
    "client_secret": "9fb645400aabaa33ee0e423405d8c676",
    "token": "BIKE195JVXTN7WA5DXZISQ11GPEUYI7A",
}


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _refund_answered_with(reply: bytes, example: dict[str, str]) -> tuple[RefundResult, bytes]:
    """Refund the example's payment through a client whose gateway answers ``reply``;
    return the result and the body that went on the wire."""
    with SandboxRun("paywizard", credentials=CREDENTIALS) as run:
        run.server.inject(REFUND_PATH, Fault(status=200, body=reply, reach_app=False))
        result = run.client.refund(
            "paywizard",
            payment=PaymentRef(payment_id=example["oriCheckoutId"]),
            amount=Money(example["amount"], "HKD"),
            refund_id=example["transIndexCode"],
        )
        (sent,) = run.server.requests
    return result, sent.body


def test_every_fixture_is_a_documented_example() -> None:
    assert sorted(path.name for path in FIXTURES.iterdir()) == sorted(EXAMPLES)


def test_the_refund_sent_for_the_example_ids_is_the_example_request() -> None:
    example = json.loads(_fixture("refund-request-example.json"))
    reply = _fixture("refund-success-response-example.json")
    result, sent = _refund_answered_with(reply, example)
    assert json.loads(sent) == example
    # The page's reply is about another refund (transIndexCode ...015, not ...013).
    assert (result.status, result.error_code) == (RefundStatus.UNKNOWN, "mismatched_reply")


def test_the_example_reply_is_a_succeeded_refund() -> None:
    reply = _fixture("refund-success-response-example.json")
    data = json.loads(reply)["data"]
    example = {
        "oriCheckoutId": data["oriCheckoutId"],
        "amount": data["amount"],
        "transIndexCode": data["transIndexCode"],
    }
    result, _ = _refund_answered_with(reply, example)
    assert result.status is RefundStatus.SUCCEEDED
    assert result.provider_refund_id == "917122074735149056"
    assert result.amount == Money("0.01", "HKD")
    assert result.message == "success"


def test_the_pages_hosts_are_the_registered_environments() -> None:
    environments = RefundClient(journal=None).provider("paywizard").environments
    assert environments == {
        "sandbox": "https://uat.paywizard.biz",
        "production": "https://portal.paywizard.biz",
    }
