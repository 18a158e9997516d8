"""The straight data path of a refund through the journal, over real sockets against
the testpay emulator: claim first, then build and sign; one place finishes a result
(identity, redaction) before it is recorded or returned."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from refundcore import (
    Money,
    PaymentRef,
    PluginError,
    RefundClient,
    RefundResult,
    RefundStatus,
    ValidationError,
    hookimpl,
)
from refundcore.batch import BatchRow
from refundcore.journal import JournalState
from refundcore.sandbox import Fault, SandboxRun

HKD = "HKD"


@pytest.fixture
def run(installed: Path, tmp_path: Path) -> Iterator[SandboxRun]:
    client = RefundClient(journal=f"sqlite:///{tmp_path / 'journal.db'}")
    with SandboxRun("testpay", client=client) as run:
        yield run


def seed(run: SandboxRun) -> PaymentRef:
    return run.emulator.seed_payment(Money("100.00", HKD))


class StageCounter:
    """Counts the build and sign stages of every request."""

    def __init__(self) -> None:
        self.built = 0
        self.signed = 0

    @hookimpl(wrapper=True)
    def refundcore_build_request(self) -> Any:
        self.built += 1
        return (yield)

    @hookimpl(wrapper=True)
    def refundcore_sign_request(self) -> Any:
        self.signed += 1
        return (yield)


def test_a_refund_answered_from_the_journal_is_never_built_or_signed(run: SandboxRun) -> None:
    counter = StageCounter()
    run.client.register_plugin(counter)
    payment = seed(run)
    first = run.client.refund("testpay", payment=payment, amount=Money("5", HKD), refund_id="r-1")
    again = run.client.refund("testpay", payment=payment, amount=Money("5", HKD), refund_id="r-1")
    assert first.succeeded and again.succeeded
    assert (again.provider, again.refund_id, again.operation) == ("testpay", "r-1", "refund")
    assert (counter.built, counter.signed) == (1, 1)


def test_a_build_stage_refusing_a_claimed_refund_frees_its_id(
    run: SandboxRun, testpay_variant: Callable[..., object]
) -> None:
    import refundcore_testpay

    refusals = [ValidationError("not today", field="reason")]

    @hookimpl
    def refuse_once(config: Any, operation: Any) -> Any:
        if refusals:
            raise refusals.pop()
        return refundcore_testpay.refundcore_build_request(config=config, operation=operation)

    run.client.register_plugin(testpay_variant("picky", build=refuse_once))
    run.client.configure("picky", run.emulator.client_config(run.server.base_url))
    payment = seed(run)
    with pytest.raises(ValidationError, match="not today"):
        run.client.refund("picky", payment=payment, amount=Money("5", HKD), refund_id="r-2")
    assert run.client.journal.get("picky", "r-2") is None  # type: ignore[union-attr]
    assert run.server.requests == []
    retried = run.client.refund("picky", payment=payment, amount=Money("5", HKD), refund_id="r-2")
    assert retried.succeeded


def test_a_sign_stage_failing_on_a_takeover_gives_the_refund_back(
    installed: Path, tmp_path: Path, testpay_variant: Callable[..., object]
) -> None:
    """Long lease, short wait: had the failed attempt kept its lease, the next one
    would find the refund busy and answer UNKNOWN instead of resending."""
    client = RefundClient(
        entry_points=False,
        journal=f"sqlite:///{tmp_path / 'journal.db'}",
        lease_seconds=60,
        journal_wait=0.3,
    )
    client.register_plugin(testpay_variant("dedup", query=False, idempotent_refund_id=True))
    failures = [RuntimeError("no key today")]

    class FailingSigner:
        @hookimpl(wrapper=True)
        def refundcore_sign_request(self) -> Any:
            signed = yield
            if failures:
                raise failures.pop()
            return signed

    with SandboxRun("testpay") as run:
        client.configure(
            "dedup", run.emulator.client_config(run.server.base_url) | {"read_timeout": 0.5}
        )
        payment = seed(run)
        run.server.inject("/v1/refunds", Fault(drop=True, times=1))
        lost = client.refund("dedup", payment=payment, amount=Money("5", HKD), refund_id="r-3")
        assert lost.status is RefundStatus.UNKNOWN
        client.register_plugin(FailingSigner())
        with pytest.raises(PluginError, match="refundcore_sign_request: RuntimeError"):
            client.refund("dedup", payment=payment, amount=Money("5", HKD), refund_id="r-3")
        entry = client.journal.get("dedup", "r-3")  # type: ignore[union-attr]
        assert entry is not None and entry.state is JournalState.UNKNOWN
        assert entry.owner is None and entry.lease_until is None
        resent = client.refund("dedup", payment=payment, amount=Money("5", HKD), refund_id="r-3")
        assert resent.status is RefundStatus.SUCCEEDED
    client.close()


def test_the_core_stamps_a_results_identity(run: SandboxRun) -> None:
    class BareParser:
        @hookimpl(tryfirst=True)
        def refundcore_parse_response(self) -> RefundResult:
            return RefundResult(status=RefundStatus.PENDING, message="on its way")

    run.client.register_plugin(BareParser())
    result = run.client.refund(
        "testpay", payment=seed(run), amount=Money("5", HKD), refund_id="r-4"
    )
    assert (result.provider, result.refund_id, result.operation) == ("testpay", "r-4", "refund")
    assert result.status is RefundStatus.PENDING
    entry = run.client.journal.get("testpay", "r-4")  # type: ignore[union-attr]
    assert entry is not None and entry.state is JournalState.PENDING


def test_secrets_a_gateway_echoes_are_masked_in_results_the_journal_and_reports(
    run: SandboxRun,
) -> None:
    secret = run.emulator.credentials["secret"]

    class Echo:
        @hookimpl(wrapper=True)
        def refundcore_parse_response(self) -> Any:
            result = yield
            return attrs.evolve(result, message=f"key={secret}", raw={"echo": secret})

    run.client.register_plugin(Echo())
    result = run.client.refund("testpay", payment=seed(run), amount=Money("5", HKD))
    assert result.message == "key=********" and result.raw == {"echo": "********"}
    report = run.client.refund_many(
        [BatchRow(provider="testpay", payment_id=seed(run).payment_id, amount=Money("5", HKD))]
    )
    assert [outcome.message for outcome in report.outcomes] == ["key=********"]
    for entry in run.client.journal.entries():  # type: ignore[union-attr]
        assert secret not in json.dumps(attrs.asdict(entry), default=str)
