"""The emulator contract's parts for the conformance kit: declarations that fail loudly
when missing, the ledger's links from the merchant's refund ids, and the bridge that
hands an emulator the refund ids a gateway's wire does not carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from refundcore import Money, PaymentRef, RefundStatus
from refundcore.sandbox import (
    Emulator,
    EmulatorUndeclared,
    Ledger,
    LedgerPayment,
    MerchantBridge,
    SandboxRun,
)


def test_a_missing_declaration_names_itself(installed: Path) -> None:
    from refundcore_testpay.sandbox import TestpayEmulator

    class Silent(TestpayEmulator):
        refund_outcomes = Emulator.refund_outcomes
        signature_parts = Emulator.signature_parts
        signed_payment_callback = Emulator.signed_payment_callback

    emulator = Silent()
    try:
        for call, name in (
            (emulator.refund_outcomes, "refund_outcomes()"),
            (emulator.signature_parts, "signature_parts()"),
            (
                lambda: emulator.signed_payment_callback(PaymentRef(payment_id="1")),
                "signed_payment_callback()",
            ),
        ):
            with pytest.raises(
                EmulatorUndeclared, match=r"Silent emulator does not declare"
            ) as raised:
                call()
            assert raised.value.what == name
    finally:
        emulator.close()


def test_a_linked_refund_id_finds_the_refund_filed_under_another_key() -> None:
    ledger = Ledger("9")
    payment = ledger.add_payment(
        LedgerPayment(
            key="9000001", ref=PaymentRef(payment_id="9000001"), amount=Money("10", "HKD")
        )
    )
    _, record = ledger.refund(
        payment, refund_id="order-9000001", amount=Money("4", "HKD"), fingerprint="f"
    )
    assert record is not None and ledger.find_refund("merchant-refund-7") is None
    ledger.link_refund_id("merchant-refund-7", record)
    assert ledger.find_refund("merchant-refund-7") is record
    assert ledger.find_refund("order-9000001") is record


def test_the_bridge_links_the_refund_id_of_an_accepted_refund_only(
    installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SandboxRun("testpay") as run:
        linked: list[tuple[str, PaymentRef]] = []
        monkeypatch.setattr(
            run.emulator, "link_refund_id", lambda refund_id, ref: linked.append((refund_id, ref))
        )
        run.client.register_plugin(MerchantBridge(run.emulator))
        payment = run.emulator.seed_payment(Money("100.00", "HKD"))
        accepted = run.client.refund("testpay", payment=payment, amount=Money("10.00", "HKD"))
        declined = run.client.refund("testpay", payment=payment, amount=Money("500.00", "HKD"))
    assert (accepted.status, declined.status) == (RefundStatus.SUCCEEDED, RefundStatus.FAILED)
    assert linked == [(accepted.refund_id, payment)]


def test_the_emulator_links_a_refund_id_to_the_payments_latest_refund(installed: Path) -> None:
    with SandboxRun("testpay") as run:
        payment = run.emulator.seed_payment(Money("100.00", "HKD"))
        run.client.refund("testpay", payment=payment, amount=Money("10.00", "HKD"))
        run.emulator.link_refund_id("shop-refund-1", payment)
        (seeded,) = [p for p in run.emulator.ledger.payments() if p.ref == payment]
        assert run.emulator.ledger.find_refund("shop-refund-1") is seeded.refunds[-1]
