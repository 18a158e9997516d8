"""refundcore.wsgi.callback_app over real sockets: verify, hand over, answer as expected."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from refundcore import Money, NotARefund, RefundError, RefundNotification, SignatureError, hookimpl
from refundcore.models import ProviderInfo
from refundcore.sandbox import SandboxRun, SandboxServer
from refundcore.wsgi import callback_app


@pytest.fixture
def run(installed: Path) -> Iterator[SandboxRun]:
    with SandboxRun("testpay") as run:
        yield run


def _refund(run: SandboxRun) -> str:
    payment = run.emulator.seed_payment(Money("50", "HKD"))
    return run.client.refund("testpay", payment=payment, amount=Money("5", "HKD")).refund_id


def _post(url: str, callback: object, **changes: object) -> requests.Response:
    headers = dict(callback.headers)  # type: ignore[attr-defined]
    body = changes.get("body", callback.body)  # type: ignore[attr-defined]
    return requests.post(url, data=body, headers=headers, timeout=5)


def test_genuine_callback_is_verified_handed_over_and_acknowledged(run: SandboxRun) -> None:
    refund_id = _refund(run)
    callback = run.emulator.signed_callback(refund_id, path="/testpay?tenant=7")
    reply = _post(f"{run.receiver_server.base_url}/testpay?tenant=7", callback)
    assert (reply.status_code, reply.text) == (200, "OK")
    (note,) = run.wait_for_notifications(1)
    assert note.refund_id == refund_id and note.provider == "testpay"


def test_path_and_query_are_verified_as_received(run: SandboxRun) -> None:
    callback = run.emulator.signed_callback(_refund(run), path="/testpay?tenant=7")
    reply = _post(f"{run.receiver_server.base_url}/testpay?tenant=8", callback)
    assert reply.status_code == 400
    assert run.notifications == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/testpay", b"{not json", 400),
        ("POST", "/testpay", b"\x00\xff" * 100, 400),
        ("POST", "/acme", b"{}", 404),
        ("POST", "/", b"{}", 404),
        ("POST", "/testpay/extra", b"{}", 404),
        ("GET", "/testpay", b"", 405),
    ],
)
def test_bad_input_is_never_a_500(
    run: SandboxRun, method: str, path: str, body: bytes, status: int
) -> None:
    reply = requests.request(method, run.receiver_server.base_url + path, data=body, timeout=5)
    assert reply.status_code == status
    assert run.notifications == []


def test_application_failure_asks_the_gateway_to_retry(run: SandboxRun) -> None:
    def broken(note: RefundNotification) -> None:
        raise RuntimeError("database down")

    with SandboxServer(callback_app(run.client, broken)) as server:
        callback = run.emulator.signed_callback(_refund(run), path="/testpay")
        reply = _post(f"{server.base_url}/testpay", callback)
    assert reply.status_code == 500


def test_oversized_callback_is_refused(run: SandboxRun) -> None:
    reply = requests.post(
        f"{run.receiver_server.base_url}/testpay", data=b"x" * (1024 * 1024 + 1), timeout=5
    )
    assert reply.status_code == 413


class _SaleEvents:
    """An app plugin that turns every verified testpay callback into NotARefund, as a
    provider plugin does for a genuine callback about a sale."""

    @hookimpl(wrapper=True)
    def refundcore_verify_callback(self, provider: ProviderInfo) -> object:
        yield
        raise NotARefund("payment.succeeded", provider=provider.id)


def test_not_a_refund_is_a_refund_error_but_never_a_signature_error() -> None:
    error = NotARefund("order.paid", provider="wonder")
    assert isinstance(error, RefundError) and not isinstance(error, SignatureError)
    assert (error.event, error.provider) == ("order.paid", "wonder")
    assert "order.paid" in str(error) and "wonder" in str(error)


def test_genuine_callback_not_about_a_refund_is_acknowledged_and_not_handed_over(
    run: SandboxRun,
) -> None:
    refund_id = _refund(run)
    run.client.register_plugin(_SaleEvents())
    callback = run.emulator.signed_callback(refund_id, path="/testpay")
    reply = _post(f"{run.receiver_server.base_url}/testpay", callback)
    assert (reply.status_code, reply.text) == (200, "OK")
    assert run.notifications == []
    forged = _post(f"{run.receiver_server.base_url}/testpay", callback, body=b'{"forged":1}')
    assert forged.status_code == 400
    assert run.notifications == []
