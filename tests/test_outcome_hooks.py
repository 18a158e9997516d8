"""Every outcome is observable through the plugin contract: the result and notification
hooks see each one, whatever produced it, and the operation and journal wrapper points
frame the work; nothing an app plugin does there changes an outcome.

Over real sockets against the testpay emulator, with a SQLite journal where one matters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from refundcore import (
    Money,
    PaymentRef,
    PluginError,
    RefundNotification,
    RefundResult,
    RefundStatus,
    ResultSource,
    SignatureError,
    ValidationError,
    hookimpl,
)
from refundcore.sandbox import Fault, SandboxRun

#: ``make_client(**kwargs)``: the client of this test's kind (see conftest).
MakeClient = Callable[..., Any]

HKD = "HKD"


class Seen:
    """An app plugin that records every result, notification, operation and journal step."""

    def __init__(self) -> None:
        self.results: list[tuple[str, str, ResultSource, RefundStatus]] = []
        self.notifications: list[RefundNotification] = []
        self.events: list[str] = []

    @hookimpl
    def refundcore_result(self, provider: Any, result: RefundResult) -> None:
        assert provider.id == result.provider
        self.results.append((result.operation, result.refund_id, result.source, result.status))

    @hookimpl
    def refundcore_notification(self, notification: RefundNotification) -> None:
        self.notifications.append(notification)

    @hookimpl(wrapper=True)
    def refundcore_operation(self, kind: str, refund_id: str | None) -> Any:
        self.events.append(f"{kind} {refund_id}")
        try:
            outcome = yield
        except Exception as exc:
            self.events.append(f"raised {type(exc).__name__}")
            raise
        self.events.append(f"gave {type(outcome).__name__}")
        return outcome

    @hookimpl(wrapper=True)
    def refundcore_journal(self, action: str) -> Any:
        self.events.append(f"journal {action}")
        return (yield)

    @hookimpl(wrapper=True)
    def refundcore_build_request(self) -> Any:
        self.events.append("build")
        return (yield)


@pytest.fixture
def run(installed: Path, tmp_path: Path, make_client: MakeClient) -> Iterator[SandboxRun]:
    """Every test here runs against both clients (``client_kind``)."""
    client = make_client(journal=f"sqlite:///{tmp_path / 'journal.db'}", lease_seconds=7.0)
    with SandboxRun("testpay", client=client) as run:
        yield run


@pytest.fixture
def seen(run: SandboxRun) -> Seen:
    plugin = Seen()
    run.client.register_plugin(plugin)
    return plugin


def seed(run: SandboxRun, **kw: Any) -> PaymentRef:
    return run.emulator.seed_payment(Money("100.00", HKD), **kw)


def refund(run: SandboxRun, payment: PaymentRef, refund_id: str) -> RefundResult:
    return run.client.refund(
        "testpay", payment=payment, amount=Money("10", HKD), refund_id=refund_id
    )


def test_a_fresh_refund_and_its_replay_are_told_apart(run: SandboxRun, seen: Seen) -> None:
    payment = seed(run)
    fresh = refund(run, payment, "r-1")
    again = refund(run, payment, "r-1")
    assert (fresh.source, again.source) == (ResultSource.SENT, ResultSource.REPLAYED)
    assert fresh.status is again.status is RefundStatus.SUCCEEDED
    assert seen.results == [
        ("refund", "r-1", ResultSource.SENT, RefundStatus.SUCCEEDED),
        ("refund", "r-1", ResultSource.REPLAYED, RefundStatus.SUCCEEDED),
    ]
    assert seen.events == [
        "refund r-1",
        "journal claim",
        "build",
        "journal record",
        "gave RefundResult",
        "refund r-1",
        "journal claim",
        "gave RefundResult",
    ]


def test_a_reconciled_refund_says_so_and_its_query_is_seen_too(run: SandboxRun, seen: Seen) -> None:
    payment = seed(run)
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    lost = refund(run, payment, "r-u")
    settled = refund(run, payment, "r-u")
    assert (lost.source, lost.status) == (ResultSource.SENT, RefundStatus.UNKNOWN)
    assert (settled.source, settled.status) == (ResultSource.RECONCILED, RefundStatus.SUCCEEDED)
    assert seen.results == [
        ("refund", "r-u", ResultSource.SENT, RefundStatus.UNKNOWN),
        ("query", "r-u", ResultSource.SENT, RefundStatus.SUCCEEDED),
        ("refund", "r-u", ResultSource.RECONCILED, RefundStatus.SUCCEEDED),
    ]


def test_the_reconcile_sweep_reports_each_refund_as_reconciled(run: SandboxRun, seen: Seen) -> None:
    pending_payment = seed(run, refund_outcome=RefundStatus.PENDING)
    refund(run, pending_payment, "r-p")
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    refund(run, seed(run), "r-u")
    run.emulator.ledger.settle("r-p", RefundStatus.SUCCEEDED)
    seen.results.clear()
    seen.events.clear()
    outcomes = run.client.reconcile()
    assert {(r.refund_id, r.source, r.status) for r in outcomes} == {
        ("r-p", ResultSource.RECONCILED, RefundStatus.SUCCEEDED),
        ("r-u", ResultSource.RECONCILED, RefundStatus.SUCCEEDED),
    }
    reconciled = [r for r in seen.results if r[0] == "refund"]
    assert sorted(reconciled) == [
        ("refund", "r-p", ResultSource.RECONCILED, RefundStatus.SUCCEEDED),
        ("refund", "r-u", ResultSource.RECONCILED, RefundStatus.SUCCEEDED),
    ]
    assert seen.events.count("refund r-p") == seen.events.count("refund r-u") == 1


def test_a_repeated_callback_is_a_duplicate(run: SandboxRun, seen: Seen) -> None:
    payment = seed(run, refund_outcome=RefundStatus.PENDING)
    refund(run, payment, "r-cb")
    early = run.emulator.signed_callback("r-cb", path="/testpay")  # says pending
    run.emulator.ledger.settle("r-cb", RefundStatus.SUCCEEDED)
    final = run.emulator.signed_callback("r-cb", path="/testpay")
    notes = [
        run.client.verify_callback(
            "testpay", method="POST", path="/testpay", headers=cb.headers, body=cb.body
        )
        for cb in (final, final, early)
    ]
    assert [(n.status, n.refund_id, n.duplicate, n.contradicts) for n in notes] == [
        (RefundStatus.SUCCEEDED, "r-cb", False, None),
        (RefundStatus.SUCCEEDED, "r-cb", True, None),
        # Older news than the journal has: not applied, so it names no refund.
        (RefundStatus.PENDING, None, False, RefundStatus.SUCCEEDED),
    ]
    assert seen.notifications == notes
    assert seen.events[-3:] == ["callback None", "journal apply", "gave RefundNotification"]


def test_without_a_journal_every_result_is_sent_and_no_callback_a_duplicate(
    installed: Path,
) -> None:
    with SandboxRun("testpay") as run:
        seen = Seen()
        run.client.register_plugin(seen)
        payment = seed(run, refund_outcome=RefundStatus.PENDING)
        refund(run, payment, "r-1")
        callback = run.emulator.signed_callback("r-1", path="/testpay")
        for _ in range(2):
            note = run.client.verify_callback(
                "testpay",
                method="POST",
                path="/testpay",
                headers=callback.headers,
                body=callback.body,
            )
            assert note.duplicate is False
        assert seen.results == [("refund", "r-1", ResultSource.SENT, RefundStatus.PENDING)]
        assert [n.duplicate for n in seen.notifications] == [False, False]
        assert "journal claim" not in seen.events


def test_the_operation_wrapper_sees_refusals_and_forgeries(run: SandboxRun, seen: Seen) -> None:
    payment = seed(run)
    refund(run, payment, "r-1")
    with pytest.raises(ValidationError):
        run.client.refund(
            "testpay",
            payment=payment,
            amount=Money("10", HKD),
            refund_id="r-2",
            original_amount=Money("5", HKD),
        )
    assert seen.events[-2:] == ["refund r-2", "raised ValidationError"]
    callback = run.emulator.signed_callback("r-1", path="/testpay")
    with pytest.raises(SignatureError):
        run.client.verify_callback(
            "testpay", method="POST", path="/testpay", headers={}, body=callback.body
        )
    assert seen.events[-2:] == ["callback None", "raised SignatureError"]
    assert seen.notifications == []


class Broken:
    """Fails wherever it is allowed to, after the work ran."""

    @hookimpl
    def refundcore_result(self) -> None:
        raise RuntimeError("result observer bug")

    @hookimpl
    def refundcore_notification(self) -> None:
        raise RuntimeError("notification observer bug")

    @hookimpl(wrapper=True)
    def refundcore_operation(self) -> Any:
        yield
        raise RuntimeError("operation wrapper bug")

    @hookimpl(wrapper=True)
    def refundcore_journal(self) -> Any:
        yield
        raise KeyError("journal wrapper bug")


def test_a_failing_app_plugin_never_changes_an_outcome(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    run.client.register_plugin(Broken())
    payment = seed(run, refund_outcome=RefundStatus.PENDING)
    with caplog.at_level(logging.ERROR, logger="refundcore"):
        result = refund(run, payment, "r-1")
        callback = run.emulator.signed_callback("r-1", path="/testpay")
        note = run.client.verify_callback(
            "testpay", method="POST", path="/testpay", headers=callback.headers, body=callback.body
        )
    assert result.status is RefundStatus.PENDING and result.refund_id == "r-1"
    assert note.refund_id == "r-1"
    entry = run.client.journal.get("testpay", "r-1")  # type: ignore[union-attr]
    assert entry is not None and entry.state.value == "PENDING"
    failures = {(r.hook, r.error_code) for r in caplog.records if r.msg == "app plugin failed"}  # type: ignore[attr-defined]
    assert failures == {
        ("refundcore_result", "RuntimeError"),
        ("refundcore_notification", "RuntimeError"),
        ("refundcore_operation", "RuntimeError"),
        ("refundcore_journal", "KeyError"),
    }


def test_a_wrapper_may_refuse_an_operation_before_it_runs(run: SandboxRun) -> None:
    class Policy:
        @hookimpl(wrapper=True)
        def refundcore_operation(self, kind: str) -> Any:
            if kind == "refund":
                raise ValidationError("needs a second approval", field="amount")
            return (yield)

    class Bug:
        @hookimpl(wrapper=True)
        def refundcore_operation(self, kind: str) -> Any:
            if kind == "void":
                raise ZeroDivisionError
            return (yield)

    run.client.register_plugin(Policy())
    run.client.register_plugin(Bug())
    payment = seed(run)
    with pytest.raises(ValidationError, match="second approval"):
        refund(run, payment, "r-1")
    with pytest.raises(PluginError):
        run.client.void("testpay", payment=payment, refund_id="v-1")
    assert run.server.requests == []
    assert run.client.journal.get("testpay", "r-1") is None  # type: ignore[union-attr]


def test_old_style_hookwrappers_see_each_outcome_in_order(run: SandboxRun) -> None:
    """pluggy's older ``hookwrapper=True`` wrappers are run as pluggy runs them, around
    the operation and around the send, outermost first, on both clients."""
    calls: list[str] = []

    class Outer:
        @hookimpl(hookwrapper=True)
        def refundcore_operation(self, kind: str) -> Any:
            calls.append(f"outer {kind}")
            outcome = yield
            calls.append(f"outer done {outcome.get_result().status.value}")

    class Inner:
        @hookimpl(wrapper=True)
        def refundcore_operation(self, kind: str) -> Any:
            calls.append(f"inner {kind}")
            result = yield
            calls.append(f"inner done {result.status.value}")
            return result

        @hookimpl(hookwrapper=True)
        def refundcore_send_request(self) -> Any:
            calls.append("send")
            outcome = yield
            calls.append(f"sent {outcome.get_result().status}")

    run.client.register_plugin(Outer())
    run.client.register_plugin(Inner())
    assert refund(run, seed(run), "r-1").status is RefundStatus.SUCCEEDED
    assert calls == [
        "inner refund",
        "outer refund",
        "send",
        "sent 200",
        "outer done SUCCEEDED",
        "inner done SUCCEEDED",
    ]
