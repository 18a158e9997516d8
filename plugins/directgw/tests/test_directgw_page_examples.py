"""The examples printed on BBMSL's Online Direct refund page, kept as printed in
``fixtures/``, through the public API: the example reply reads as a succeeded refund, and
the refund refundcore sends carries the example request's fields in a well-formed
envelope (the page's own envelope is not one: see PROTOCOL.md)."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from pathlib import Path

from refundcore_directgw import PATHS

from refundcore import Money, PaymentRef, RefundClient, RefundResult, RefundStatus
from refundcore.crypto import generate_rsa_keypair
from refundcore.sandbox import Fault, SandboxRun

FIXTURES = Path(__file__).with_name("fixtures")

#: Every fixture, and which example of the refund page it is.
EXAMPLES = {
    # The request "Example": its request string ends in a trailing comma and its
    # signature is a placeholder encoded in base64 twice.
    "refund-request-example.json": "request",
    # The response "Example": order 1076 refunded; order.id is a string and there is no
    # transaction object.
    "refund-response-example.json": "reply",
}


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _refund_answered_with(reply: bytes, payment: PaymentRef) -> tuple[RefundResult, bytes]:
    credentials = {
        "merchant_id": "3000001",
        "private_key": generate_rsa_keypair(),
        "gateway_key": generate_rsa_keypair(),
    }
    with SandboxRun("directgw", credentials=credentials) as run:
        run.server.inject(PATHS["direct"]["refund"], Fault(status=200, body=reply, reach_app=False))
        result = run.client.refund(
            "directgw", payment=payment, amount=Money("76.19", "HKD"), refund_id="r-1"
        )
        (sent,) = run.server.requests
    return result, sent.body


def test_every_fixture_is_a_documented_example() -> None:
    assert sorted(path.name for path in FIXTURES.iterdir()) == sorted(EXAMPLES)


def test_the_example_reply_is_a_succeeded_refund() -> None:
    payment = PaymentRef(payment_id="1076", merchant_reference="s22tring")
    result, _ = _refund_answered_with(_fixture("refund-response-example.json"), payment)
    assert result.status is RefundStatus.SUCCEEDED
    assert result.provider_refund_id == "1076"
    assert result.amount is None  # order.amount is the order's total, not the refund's
    assert result.message == "SUCCESS"
    assert result.raw["order"]["amount"] == Decimal("76.19")


def test_the_refund_sent_carries_the_example_requests_fields() -> None:
    example = json.loads(_fixture("refund-request-example.json"))
    page_request = example["request"]
    assert page_request.endswith(",}")  # not JSON as printed
    page_fields = json.loads(page_request[: -len(",}")] + "}")
    assert len(base64.b64decode(base64.b64decode(example["signature"]))) == 256

    payment = PaymentRef(merchant_reference=page_fields["merchantReference"])
    reply = _fixture("refund-response-example.json")
    _, sent = _refund_answered_with(reply, payment)
    envelope = json.loads(sent)
    request = json.loads(envelope["request"], parse_float=Decimal)
    assert list(request)[: len(page_fields)] == list(page_fields)
    assert {key: request[key] for key in page_fields} == page_fields
    assert request["amount"] == Decimal("76.19")
    assert len(base64.b64decode(envelope["signature"], validate=True)) == 256


def test_the_documented_hosts_are_the_registered_environments() -> None:
    environments = RefundClient(journal=None).provider("directgw").environments
    assert environments == {
        "sandbox": "https://payapi.sit.bbmsl.com",
        "production": "https://payapi.prod.bbmsl.com",
    }
