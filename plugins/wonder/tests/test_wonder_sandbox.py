"""Wonder end to end against the emulator: webhooks, the gateway's rules, finding our
refund among several, and input refused before anything is sent."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import attrs
import pytest
import refundcore_wonder as wonder
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from refundcore_wonder.sandbox import WonderEmulator, json_bytes

from refundcore import (
    Callback,
    HttpRequest,
    Money,
    NotARefund,
    PaymentRef,
    RefundClient,
    RefundNotification,
    RefundStatus,
    SignatureError,
    ValidationError,
)
from refundcore.crypto import generate_rsa_keypair
from refundcore.sandbox import SandboxRun


@pytest.fixture
def run() -> Iterator[SandboxRun]:
    with SandboxRun("wonder") as sandbox:
        yield sandbox


def hkd(amount: str) -> Money:
    return Money(amount, "HKD")


def verify(run: SandboxRun, callback: Callback) -> RefundNotification:
    return run.client.verify_callback(
        "wonder",
        method=callback.method,
        path=callback.path,
        headers=callback.headers,
        body=callback.body,
    )


def refunded(run: SandboxRun, **kwargs: Any) -> tuple[PaymentRef, str]:
    payment = run.emulator.seed_payment(hkd("100.00"), **kwargs)
    result = run.client.refund(
        "wonder", payment=payment, amount=hkd("40.00"), refund_id="r-1", reason="damaged"
    )
    assert result.status in (RefundStatus.SUCCEEDED, RefundStatus.PENDING), result.message
    return payment, result.refund_id


def webhook_emulator(run: SandboxRun) -> WonderEmulator:
    emulator = run.emulator
    assert isinstance(emulator, WonderEmulator)
    return emulator


def signed_webhook(
    run: SandboxRun, body: bytes, *, path: str = "/hooks/wonder", action: str = "order.refunded"
) -> Callback:
    """A webhook with any body, signed with the emulator's (Wonder's) webhook key."""
    emulator = webhook_emulator(run)
    time_text = wonder.request_time(dt.datetime.now(dt.timezone.utc))
    nonce = wonder.new_nonce()
    return Callback(
        method="POST",
        path=path,
        headers={
            "Credential": wonder.credential(emulator.app_id, time_text),
            "Nonce": nonce,
            "Signature": wonder.wonder_signature(
                "POST", path, body, nonce, time_text, emulator.webhook_key
            ),
            "X-Action": action,
        },
        body=body,
    )


# -- webhooks -------------------------------------------------------------------------------


def test_genuine_webhook_names_refund_payment_and_amount(run: SandboxRun) -> None:
    payment, refund_id = refunded(run)
    record = run.emulator.ledger.find_refund(refund_id)
    assert record is not None
    note = verify(run, run.emulator.signed_callback(refund_id, path="/hooks/wonder?shop=1"))
    assert note.status is RefundStatus.SUCCEEDED
    assert note.event == "order.refunded"
    # Wonder's webhook carries no merchant refund id: the uuid identifies the refund.
    assert note.refund_id is None
    assert note.provider_refund_id == record.provider_refund_id
    assert note.payment == payment
    assert note.amount == hkd("40.00")
    assert note.raw["data"]["order"]["number"] == payment.payment_id


def test_callback_ack_is_plain_ok(run: SandboxRun) -> None:
    ack = run.info.callback_ack
    assert (ack.status, ack.body) == (200, b"OK")


@pytest.mark.parametrize("minutes", [-31, 31, 120])
def test_webhook_outside_30_minutes_is_a_replay(run: SandboxRun, minutes: int) -> None:
    _, refund_id = refunded(run)
    old = run.emulator.signed_callback(refund_id, age=dt.timedelta(minutes=minutes))
    with pytest.raises(SignatureError, match="30 minutes"):
        verify(run, old)


@pytest.mark.parametrize("minutes", [-29, 0, 29])
def test_webhook_inside_30_minutes_verifies(run: SandboxRun, minutes: int) -> None:
    _, refund_id = refunded(run)
    recent = run.emulator.signed_callback(refund_id, age=dt.timedelta(minutes=minutes))
    assert verify(run, recent).status is RefundStatus.SUCCEEDED


def test_webhook_signs_the_path_as_received(run: SandboxRun) -> None:
    _, refund_id = refunded(run)
    genuine = run.emulator.signed_callback(refund_id, path="/hooks/wonder?shop=1")
    for path in ("/hooks/wonder", "/hooks/wonder?shop=2", "/hooks/other?shop=1"):
        with pytest.raises(SignatureError):
            verify(run, attrs.evolve(genuine, path=path))


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.replace("Wonder-RSA-SHA256", "Wonder-RSA-SHA1"),
        lambda c: c + "/extra",
        lambda c: c.split("/")[1],
        lambda c: c.replace(c.split("/")[1], c.split("/")[1][:-1] + "9"),
        lambda c: c.replace(c.split("/")[1], "20241301000000"),
    ],
    ids=["algorithm", "four-parts", "time-only", "other-second", "month-13"],
)
def test_tampered_credential_is_refused(run: SandboxRun, change: Any) -> None:
    _, refund_id = refunded(run)
    genuine = run.emulator.signed_callback(refund_id)
    credential = genuine.headers["Credential"]
    if change(credential) == credential:
        pytest.skip("the change happened to keep the value")
    with pytest.raises(SignatureError):
        verify(
            run,
            attrs.evolve(genuine, headers=genuine.headers.set("Credential", change(credential))),
        )


@pytest.mark.parametrize("header", ["Credential", "Nonce", "Signature"])
def test_missing_auth_header_is_refused(run: SandboxRun, header: str) -> None:
    _, refund_id = refunded(run)
    genuine = run.emulator.signed_callback(refund_id)
    headers = {k: v for k, v in genuine.headers.items() if k != header}
    with pytest.raises(SignatureError, match="missing"):
        verify(run, attrs.evolve(genuine, headers=headers))


def test_other_nonce_breaks_the_signature(run: SandboxRun) -> None:
    _, refund_id = refunded(run)
    genuine = run.emulator.signed_callback(refund_id)
    with pytest.raises(SignatureError, match="does not match"):
        verify(run, attrs.evolve(genuine, headers=genuine.headers.set("Nonce", "A" * 16)))


def with_action(callback: Callback, action: str | None) -> Callback:
    """``callback`` with its unsigned ``X-Action`` header replaced (or removed)."""
    headers = {k: v for k, v in callback.headers.items() if k.lower() != "x-action"}
    if action is not None:
        headers["X-Action"] = action
    return attrs.evolve(callback, headers=headers)


@pytest.mark.parametrize("action", ["order.refunded", "ORDER.REFUNDED", " order.refunded "])
def test_order_refunded_reads_the_refund_from_the_signed_body(run: SandboxRun, action: str) -> None:
    _, refund_id = refunded(run)
    note = verify(run, with_action(run.emulator.signed_callback(refund_id), action))
    assert (note.event, note.status) == ("order.refunded", RefundStatus.SUCCEEDED)


@pytest.mark.parametrize(
    "action",
    ["order.voided", "transaction.voided", "order.paid", "order.payment_failure", "x.other"],
)
def test_another_x_action_never_turns_a_refund_body_into_an_outcome(
    run: SandboxRun, action: str
) -> None:
    """X-Action is unsigned: it chooses how the body is read, never the outcome. Read
    as anything but a refund, a refund's body settles nothing."""
    _, refund_id = refunded(run, refund_outcome=RefundStatus.PENDING)
    genuine = run.emulator.signed_callback(refund_id)
    assert verify(run, genuine).status is RefundStatus.PENDING
    with pytest.raises(NotARefund) as error:
        verify(run, with_action(genuine, action))
    assert (error.value.event, error.value.provider) == (action, "wonder")


def test_order_refunded_on_a_body_without_a_refund_is_refused(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    paid = run.emulator.signed_payment_callback(payment, path="/hooks/wonder")
    assert paid is not None and paid.headers["X-Action"] == "order.paid"
    with pytest.raises(NotARefund):
        verify(run, paid)
    with pytest.raises(SignatureError, match="X-Action"):
        verify(run, with_action(paid, "order.refunded"))


def test_without_x_action_the_signed_body_decides(run: SandboxRun) -> None:
    _, refund_id = refunded(run)
    note = verify(run, with_action(run.emulator.signed_callback(refund_id), None))
    assert (note.event, note.status) == ("order.refunded", RefundStatus.SUCCEEDED)
    other = run.emulator.seed_payment(hkd("100.00"))
    paid = run.emulator.signed_payment_callback(other, path="/hooks/wonder")
    assert paid is not None
    with pytest.raises(NotARefund) as error:
        verify(run, with_action(paid, None))
    assert error.value.event == "order.updated"


def test_forged_x_action_is_refused_and_the_genuine_webhook_still_settles() -> None:
    """The replay attack: a genuine, fresh webhook about a PENDING refund, replayed with
    a forged ``X-Action: order.voided``, once settled the journal as SUCCEEDED, and the
    genuine FAILED webhook that followed could not change it. Through the WSGI app and
    a journalled client: the forged copy is acknowledged (it is genuine bytes) but not
    handed over and settles nothing; a header claiming a refund the body does not show
    is refused; the genuine webhooks settle the refund."""
    with SandboxRun("wonder", client=RefundClient()) as run:
        journal = run.client.journal
        assert journal is not None
        payment = run.emulator.seed_payment(hkd("100.00"), refund_outcome=RefundStatus.PENDING)
        result = run.client.refund("wonder", payment=payment, amount=hkd("25.00"))
        assert result.status is RefundStatus.PENDING

        def post(callback: Callback) -> requests.Response:
            return requests.post(
                run.receiver_server.base_url + callback.path,
                data=callback.body,
                headers=dict(callback.headers),
                timeout=5,
            )

        def state() -> str:
            entry = journal.get("wonder", result.refund_id)
            assert entry is not None
            return entry.state.value

        pending = run.emulator.signed_callback(result.refund_id, path="/wonder")
        assert post(pending).status_code == 200
        [note] = run.wait_for_notifications(1)
        assert note.status is RefundStatus.PENDING and state() == "PENDING"

        forged = post(with_action(pending, "order.voided"))
        assert (forged.status_code, forged.text) == (200, "OK")
        assert len(run.notifications) == 1 and state() == "PENDING"

        paid = run.emulator.signed_payment_callback(payment, path="/wonder")
        assert paid is not None
        payment_only = run.emulator.seed_payment(hkd("50.00"))
        lying = run.emulator.signed_payment_callback(payment_only, path="/wonder")
        assert lying is not None
        assert post(with_action(lying, "order.refunded")).status_code == 400

        run.emulator.settle(result.refund_id, RefundStatus.FAILED)
        failed = run.emulator.signed_callback(result.refund_id, path="/wonder")
        assert post(failed).status_code == 200
        notes = run.wait_for_notifications(2)
        assert notes[-1].status is RefundStatus.FAILED and state() == "FAILED"


def test_duplicate_delivery_verifies_again(run: SandboxRun) -> None:
    """Wonder retries deliveries; the plugin keeps no nonce state, a duplicate is fine."""
    _, refund_id = refunded(run)
    genuine = run.emulator.signed_callback(refund_id)
    assert verify(run, genuine).status is verify(run, genuine).status


def _order(**refund: Any) -> dict[str, Any]:
    txn = {
        "type": "Refund",
        "uuid": "ref-1",
        "amount": "-12.50",
        "currency": "HKD",
        "success": False,
        "is_pending": True,
        "note": "[r-7] x",
        "original_transaction_uuid": "0f8fad5b-d9cb-469f-a165-70867728950e",
    }
    txn.update(refund)
    return {
        "number": "W9",
        "reference_number": "shop-9",
        "currency": "HKD",
        "transactions": [{"type": "Sales", "uuid": "0f8fad5b-d9cb-469f-a165-70867728950e"}, txn],
    }


@pytest.mark.parametrize(
    "shape",
    [
        lambda order: {"error_code": "0", "data": {"order": order}},
        lambda order: {"code": 200, "data": {"order": order}},
        lambda order: {"order": order},
        lambda order: order,
    ],
    ids=["query-shape", "code-shape", "order-key", "bare-order"],
)
def test_webhook_body_shapes(run: SandboxRun, shape: Any) -> None:
    body = json.dumps(shape(_order())).encode()
    note = verify(run, signed_webhook(run, body))
    assert note.status is RefundStatus.PENDING
    assert (note.refund_id, note.provider_refund_id) == (None, "ref-1")
    assert note.amount == hkd("12.50")
    assert note.payment == PaymentRef(
        payment_id="W9",
        merchant_reference="shop-9",
        transaction_id="0f8fad5b-d9cb-469f-a165-70867728950e",
    )


@pytest.mark.parametrize(
    "body", [b"[]", b"null", b"{}", b'{"data": {"order": 3}}', b"not json", b'{"a": NaN}']
)
def test_signed_but_unusable_body_is_refused(run: SandboxRun, body: bytes) -> None:
    with pytest.raises(SignatureError, match="signed webhook body"):
        verify(run, signed_webhook(run, body))


def test_webhook_with_odd_identifiers_still_verifies(run: SandboxRun) -> None:
    order = _order(amount="abc", currency="XXX", uuid=7)
    order["number"] = "x" * 500
    note = verify(run, signed_webhook(run, json.dumps(order).encode()))
    assert note.amount is None and note.provider_refund_id is None
    assert note.payment is not None and note.payment.payment_id is None


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_changed_byte_is_refused(run: SandboxRun, data: st.DataObject) -> None:
    body = json.dumps(_order()).encode()
    genuine = signed_webhook(run, body)
    index = data.draw(st.integers(0, len(body) - 1))
    value = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
    changed = body[:index] + bytes([value]) + body[index + 1 :]
    with pytest.raises(SignatureError):
        verify(run, attrs.evolve(genuine, body=changed))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(time_text=st.text(alphabet="0123456789", min_size=0, max_size=16))
def test_any_other_credential_time_is_refused(run: SandboxRun, time_text: str) -> None:
    genuine = signed_webhook(run, json.dumps(_order()).encode())
    app_id, signed_time, algorithm = genuine.headers["Credential"].split("/")
    if time_text == signed_time:
        return
    headers = genuine.headers.set("Credential", f"{app_id}/{time_text}/{algorithm}")
    with pytest.raises(SignatureError):
        verify(run, attrs.evolve(genuine, headers=headers))


# -- pending refunds -----------------------------------------------------------------------------


@pytest.mark.parametrize("final", [RefundStatus.SUCCEEDED, RefundStatus.FAILED])
def test_pending_refund_settles_by_webhook_and_query(run: SandboxRun, final: RefundStatus) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"), refund_outcome=RefundStatus.PENDING)
    result = run.client.refund(
        "wonder", payment=payment, amount=hkd("25.00"), notify_url=run.notify_url
    )
    assert result.status is RefundStatus.PENDING
    ids = {"payment": payment, "provider_refund_id": result.provider_refund_id}
    queried = run.client.query("wonder", refund_id=result.refund_id, **ids)
    assert queried.status is RefundStatus.PENDING
    assert run.notifications == []
    run.emulator.settle(result.refund_id, final)
    [note] = run.wait_for_notifications(1)
    assert note.status is final
    assert note.provider_refund_id == result.provider_refund_id
    queried = run.client.query("wonder", refund_id=result.refund_id, **ids)
    assert queried.status is final


# -- the gateway's rules --------------------------------------------------------------------------


def test_replayed_request_is_refused_and_moves_no_money(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    first = run.client.refund("wonder", payment=payment, amount=hkd("10.00"))
    assert first.status is RefundStatus.SUCCEEDED
    [sent] = run.server.requests
    replay = requests.post(
        run.server.base_url + sent.target, data=sent.body, headers=dict(sent.headers), timeout=5
    )
    assert replay.status_code == 403
    assert replay.json()["error_code"] == "NONCE_REUSED"
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None and len(found.refunds) == 1


@pytest.mark.parametrize("minutes", [-31, 31])
def test_request_time_outside_30_minutes_is_refused(
    run: SandboxRun, monkeypatch: pytest.MonkeyPatch, minutes: int
) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    skewed = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)
    monkeypatch.setattr(wonder, "_utcnow", lambda: skewed)
    result = run.client.refund("wonder", payment=payment, amount=hkd("10.00"))
    assert (result.status, result.error_code) == (RefundStatus.FAILED, "credential_refused")
    assert result.http_status == 403
    assert run.emulator.ledger.payments()[0].refunds == []


@pytest.mark.parametrize("setting", ["app_id", "private_key"])
def test_wrong_credentials_are_refused(run: SandboxRun, setting: str) -> None:
    settings = run.emulator.client_config(run.server.base_url)
    wrong = "another-app" if setting == "app_id" else generate_rsa_keypair().to_pem()
    run.client.configure("wonder", {**settings, setting: wrong})
    payment = run.emulator.seed_payment(hkd("100.00"))
    result = run.client.refund("wonder", payment=payment, amount=hkd("10.00"))
    assert (result.status, result.error_code) == (RefundStatus.FAILED, "credential_refused")
    assert result.http_status == (401 if setting == "app_id" else 403)


def test_same_refund_id_for_another_refund_is_refused(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    first = run.client.refund("wonder", payment=payment, amount=hkd("10.00"), refund_id="dup")
    second = run.client.refund("wonder", payment=payment, amount=hkd("11.00"), refund_id="dup")
    assert first.status is RefundStatus.SUCCEEDED
    assert (second.status, second.error_code) == (RefundStatus.FAILED, "DUPLICATE_REQUEST_ID")
    assert len(run.emulator.ledger.payments()[0].refunds) == 1


def test_refund_of_another_orders_transaction_fails(run: SandboxRun) -> None:
    one = run.emulator.seed_payment(hkd("100.00"))
    two = run.emulator.seed_payment(hkd("100.00"))
    mixed = attrs.evolve(one, transaction_id=two.transaction_id)
    result = run.client.refund("wonder", payment=mixed, amount=hkd("10.00"))
    assert (result.status, result.error_code) == (RefundStatus.FAILED, "TRANSACTION_NOT_FOUND")


def test_partial_refunds_add_up_to_the_sale(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    amounts = ["30.00", "30.00", "40.00", "0.01"]
    results = [run.client.refund("wonder", payment=payment, amount=hkd(a)) for a in amounts]
    assert [r.status for r in results] == [RefundStatus.SUCCEEDED] * 3 + [RefundStatus.FAILED]
    assert results[-1].error_code == "REFUND_AMOUNT_EXCEEDED"


def test_order_found_by_reference_number_alone(run: SandboxRun) -> None:
    payment = attrs.evolve(run.emulator.seed_payment(hkd("100.00")), payment_id=None)
    result = run.client.refund("wonder", payment=payment, amount=hkd("10.00"))
    assert result.status is RefundStatus.SUCCEEDED
    assert b'"order":{"reference_number":' in run.server.requests[0].body


def test_newer_code_envelope_end_to_end() -> None:
    with SandboxRun("wonder", emulator_options={"envelope": "code"}) as run:
        payment = run.emulator.seed_payment(hkd("100.00"))
        ok = run.client.refund("wonder", payment=payment, amount=hkd("60.00"))
        over = run.client.refund("wonder", payment=payment, amount=hkd("60.00"))
        queried = run.client.query(
            "wonder",
            refund_id=ok.refund_id,
            payment=payment,
            provider_refund_id=ok.provider_refund_id,
        )
        assert json.loads(run.server.requests[0].body)["refund"]["amount"] == "60.00"
    assert ok.status is RefundStatus.SUCCEEDED and ok.raw["code"] == 200
    assert (over.status, over.error_code) == (RefundStatus.FAILED, "42201")
    assert queried.status is RefundStatus.SUCCEEDED
    assert queried.provider_refund_id == ok.provider_refund_id


def test_emulator_writes_totals_as_exact_json_numbers() -> None:
    assert json_bytes({"t": Decimal("100.10"), "s": "x", "n": None}) == (
        b'{"t":100.10,"s":"x","n":null}'
    )


# -- our refund among several ------------------------------------------------------------------


def test_identical_refunds_are_told_apart_by_their_uuid(run: SandboxRun) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    first = run.client.refund("wonder", payment=payment, amount=hkd("10.00"), reason="x")
    second = run.client.refund("wonder", payment=payment, amount=hkd("10.00"), reason="x")
    assert None is not first.provider_refund_id != second.provider_refund_id
    for result in (first, second):
        queried = run.client.query(
            "wonder",
            refund_id=result.refund_id,
            payment=payment,
            provider_refund_id=result.provider_refund_id,
        )
        assert queried.status is RefundStatus.SUCCEEDED
        assert queried.provider_refund_id == result.provider_refund_id
    blind = run.client.query("wonder", refund_id=second.refund_id, payment=payment)
    assert (blind.status, blind.error_code) == (RefundStatus.UNKNOWN, "refund_not_identified")


def test_a_refund_wonder_does_not_list_is_never_called_failed(run: SandboxRun) -> None:
    """ "Not found" proves nothing: the result stays UNKNOWN, never a FAILED that would
    invite a second refund."""
    payment = run.emulator.seed_payment(hkd("100.00"))
    run.client.refund("wonder", payment=payment, amount=hkd("10.00"), refund_id="sent")
    result = run.client.query("wonder", refund_id="lost", payment=payment)
    assert result.status is RefundStatus.UNKNOWN
    unknown_uuid = "5a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    result = run.client.query(
        "wonder", refund_id="lost", payment=payment, provider_refund_id=unknown_uuid
    )
    assert (result.status, result.error_code) == (RefundStatus.UNKNOWN, "refund_not_found")


# -- the request shapes of Wonder's sources ------------------------------------------------


def post_refund_object(run: SandboxRun, payment: PaymentRef, refund: dict[str, Any]) -> Any:
    """POST a refund whose ``refund`` object is ``refund``, signed as the plugin signs."""
    body = json.dumps(
        {
            "order": {"number": payment.payment_id},
            "transaction": {"uuid": payment.transaction_id},
            "refund": refund,
        }
    ).encode()
    request = HttpRequest(
        "POST",
        run.server.base_url + wonder.REFUND_PATH,
        headers={"Content-Type": "application/json", "X-Request-ID": str(uuid.uuid4())},
        body=body,
    )
    signed = wonder.refundcore_sign_request(config=run.client.config_for("wonder"), request=request)
    reply = requests.post(signed.url, data=body, headers=dict(signed.headers), timeout=5)
    return reply.status_code, reply.json()


@pytest.mark.parametrize(
    "refund",
    [
        {"amount": "10.00", "note": "page shape"},
        {"amount": "10.00", "currency": "HKD", "reason": "plugin shape"},
        {"amount": "10.00", "currency": "HKD", "reason": "both", "note": "both"},
    ],
    ids=["api-page", "production-plugin", "refundcore"],
)
def test_emulator_takes_every_documented_refund_shape(
    run: SandboxRun, refund: dict[str, Any]
) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    status, body = post_refund_object(run, payment, refund)
    assert (status, body["error_code"]) == (200, "0")
    [txn] = [t for t in body["data"]["order"]["transactions"] if t["type"] == "Refund"]
    assert txn["note"] == refund.get("note", refund.get("reason"))


@pytest.mark.parametrize(
    "refund",
    [{"amount": "10.00", "currency": "USD"}, {"amount": "10.00", "note": 3}, {"note": "x"}],
)
def test_emulator_refuses_a_refund_object_wonder_would_not_take(
    run: SandboxRun, refund: dict[str, Any]
) -> None:
    payment = run.emulator.seed_payment(hkd("100.00"))
    status, body = post_refund_object(run, payment, refund)
    assert (status, body["error_code"]) == (400, "INVALID_PARAMS")
    assert run.emulator.ledger.payments()[0].refunds == []


# -- refused before sending ----------------------------------------------------------------

SALE = "0f8fad5b-d9cb-469f-a165-70867728950e"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"payment": PaymentRef(payment_id="W1", merchant_reference="s-1")},
            "payment.transaction_id",
        ),
        (
            {"payment": PaymentRef(payment_id="W1", transaction_id="not-a-uuid")},
            "payment.transaction_id",
        ),
        (
            {"payment": PaymentRef(payment_id="W1", transaction_id=SALE + "0")},
            "payment.transaction_id",
        ),
        ({"payment": PaymentRef(transaction_id=SALE)}, "payment"),
        ({"amount": Money("1.255", "BHD")}, "amount"),
        ({"reason": "line\nbreak"}, "reason"),
        ({"notify_url": "ftp://shop.example/hook"}, "notify_url"),
    ],
)
def test_refund_input_refused_before_sending(
    run: SandboxRun, kwargs: dict[str, Any], field: str
) -> None:
    arguments: dict[str, Any] = {
        "payment": PaymentRef(payment_id="W1", transaction_id=SALE),
        "amount": hkd("10.00"),
        **kwargs,
    }
    with pytest.raises(ValidationError) as error:
        run.client.refund("wonder", **arguments)
    assert error.value.field == field
    assert run.server.requests == []


@pytest.mark.parametrize(
    ("payment", "field"),
    [
        (None, "payment"),
        (PaymentRef(transaction_id=SALE), "payment"),
        (PaymentRef(payment_id="W1", transaction_id="nope"), "payment.transaction_id"),
    ],
)
def test_query_input_refused_before_sending(
    run: SandboxRun, payment: PaymentRef | None, field: str
) -> None:
    with pytest.raises(ValidationError) as error:
        run.client.query("wonder", refund_id="r-1", payment=payment)
    assert error.value.field == field
    assert run.server.requests == []


def test_void_is_not_offered(run: SandboxRun) -> None:
    with pytest.raises(ValidationError):
        run.client.void("wonder", payment=PaymentRef(payment_id="W1", transaction_id=SALE))
    assert run.server.requests == []


def test_amounts_in_two_decimals() -> None:
    assert wonder.wire_amount(hkd("10")) == "10.00"
    assert wonder.wire_amount(Money("1500", "JPY")) == "1500.00"
    assert wonder.wire_amount(Money("1.250", "BHD")) == "1.25"
    with pytest.raises(ValidationError):
        wonder.wire_amount(Money("1.251", "BHD"))


def test_a_new_emulator_seeds_the_same_sales_as_the_last() -> None:
    # The docs' examples and an app's fixtures name seeded payments by their ids.
    def seeded() -> list[PaymentRef]:
        with SandboxRun("wonder") as sandbox:
            return [sandbox.emulator.seed_payment(hkd("100.00")) for _ in range(3)]

    first, second = seeded(), seeded()
    assert first == second
    assert len({ref.transaction_id for ref in first}) == 3
