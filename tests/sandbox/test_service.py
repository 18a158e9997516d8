"""The sandbox a developer runs (``refundcore sandbox``): emulator state that survives a
restart, ports, scenarios, settling and callbacks to the app, through the public API and
loopback sockets, with every bundled provider and the scaffold's (testpay)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import stat
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from refundcore import Money, PaymentRef, RefundClient, RefundNotification, RefundStatus
from refundcore.errors import TransportError, ValidationError
from refundcore.sandbox import (
    CallbackReceiver,
    Ledger,
    LedgerPayment,
    SandboxRun,
    SandboxServer,
)
from refundcore.sandbox.control import control_url, send
from refundcore.sandbox.service import SandboxService
from refundcore.wsgi import callback_app

BUNDLED = ["directgw", "paywiser", "paywizard", "wonder"]
EVERY = [*BUNDLED, "testpay"]


def _info(provider: str) -> Any:
    with RefundClient(journal=None) as client:
        return client.provider(provider)


# -- the ledger -------------------------------------------------------------------------


def test_a_ledger_dump_loads_into_an_equal_ledger() -> None:
    ledger = Ledger("9")
    ref = PaymentRef(payment_id=ledger.next_id(), merchant_reference="order-1")
    payment = ledger.add_payment(
        LedgerPayment(key=str(ref.payment_id), ref=ref, amount=Money("25.50", "HKD"))
    )
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone.utc)
    payment.extra.update(
        unsettled=Decimal("25.50"),
        created=at,
        notify_url="http://127.0.0.1:1/x",
        fee=Money("0.10", "HKD"),
        tags=["a", {"b": Decimal("1.5")}],
    )
    _, record = ledger.refund(
        payment, refund_id="r-1", amount=Money("10.00", "HKD"), fingerprint="f", now=at
    )
    assert record is not None
    record.extra["note"] = "dented"
    dump = json.loads(json.dumps(ledger.dump()))

    again = Ledger("9")
    again.load(dump)
    assert again.dump() == dump
    restored = again.find_payment(payment_id=ref.payment_id)
    assert restored is not None and restored.extra["unsettled"] == Decimal("25.50")
    assert restored.extra["created"] == at and restored.extra["fee"] == Money("0.10", "HKD")
    assert restored.refundable == Decimal("15.50")
    assert again.find_refund("r-1") is restored.refunds[0]
    assert again.payment_of(restored.refunds[0]) is restored
    assert again.next_id() == "9000003", "ids go on where they stopped"


@pytest.mark.parametrize(
    "dump",
    [None, [], {"format": 99}, {"format": 1}, {"format": 1, "payments": [{}], "refunds": []}],
)
def test_a_ledger_refuses_what_is_not_its_dump(dump: Any) -> None:
    with pytest.raises(ValueError, match="ledger dump"):
        Ledger().load(dump)


def test_a_ledger_keeps_only_what_json_can_hold() -> None:
    ledger = Ledger()
    ref = PaymentRef(payment_id="1")
    payment = ledger.add_payment(LedgerPayment(key="1", ref=ref, amount=Money(1, "HKD")))
    payment.extra["lock"] = threading.Lock()
    with pytest.raises(TypeError, match="cannot keep lock"):
        ledger.dump()


def test_scheduled_outcomes_go_to_the_next_accepted_refunds() -> None:
    ledger = Ledger()
    payment = ledger.add_payment(
        LedgerPayment(key="1", ref=PaymentRef(payment_id="1"), amount=Money(100, "HKD"))
    )

    def refund(refund_id: str, amount: int = 1) -> RefundStatus | None:
        _, record = ledger.refund(
            payment, refund_id=refund_id, amount=Money(amount, "HKD"), fingerprint=refund_id
        )
        return None if record is None else record.status

    ledger.schedule(RefundStatus.PENDING, 2)
    assert refund("over", 101) is None, "a refused refund uses no scheduled outcome"
    assert ledger.scheduled == (RefundStatus.PENDING, 2)
    assert [refund("a"), refund("b"), refund("c")] == [
        RefundStatus.PENDING,
        RefundStatus.PENDING,
        RefundStatus.SUCCEEDED,
    ]
    ledger.schedule(RefundStatus.FAILED, None)
    assert [refund("d"), refund("e")] == [RefundStatus.FAILED] * 2
    ledger.clear_schedule()
    assert refund("f") is RefundStatus.SUCCEEDED and ledger.scheduled is None


# -- every emulator carries on after a restart -------------------------------------------


@pytest.mark.parametrize("provider", EVERY)
def test_every_emulator_carries_on_after_a_restart(installed: Path, provider: str) -> None:
    with SandboxRun(provider) as run:
        caps, currency = run.info.capabilities, run.emulator.currency
        payment = run.emulator.seed_payment(Money(100, currency))
        result = run.client.refund(provider, payment=payment, amount=Money(40, currency))
        assert result.status is RefundStatus.SUCCEEDED
        if caps.void:
            voided = run.emulator.seed_payment(Money(100, currency))
            amount = Money(100, currency) if provider != "directgw" else None
            assert run.client.void(provider, payment=voided, amount=amount).status is (
                RefundStatus.SUCCEEDED
            )
        state = json.loads(json.dumps(run.emulator.export_state()))
        credentials = run.emulator.public_credentials()
        known = {p.key for p in run.emulator.ledger.payments()}

    with SandboxRun(provider, credentials=credentials) as again:
        again.emulator.restore_state(state)
        assert again.emulator.export_state() == state
        if caps.query:
            answer = again.client.query(
                provider,
                refund_id=result.refund_id,
                payment=payment,
                provider_refund_id=result.provider_refund_id,
            )
            assert answer.status is RefundStatus.SUCCEEDED, answer
        again.emulator.seed_payment(Money(100, currency))
        keys = [p.key for p in again.emulator.ledger.payments()]
        assert len(set(keys)) == len(keys) == len(known) + 1, "ids go on where they stopped"


# -- the service ----------------------------------------------------------------------------


class App:
    """The merchant's app: callback_app for a client configured from the sandbox."""

    def __init__(self) -> None:
        self.client: RefundClient | None = None
        self.notes: list[RefundNotification] = []
        self.arrived = threading.Condition()
        self.receiver = CallbackReceiver(self._app)
        self.server = SandboxServer(self.receiver).start()

    def _app(self, environ: Any, start_response: Any) -> Any:
        assert self.client is not None
        return callback_app(self.client, self._note)(environ, start_response)

    def _note(self, note: RefundNotification) -> None:
        with self.arrived:
            self.notes.append(note)
            self.arrived.notify_all()

    def wait(self, count: int) -> list[RefundNotification]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.notes) >= count, 10), (
                f"{len(self.notes)} verified callbacks of {count}; "
                f"requests: {[r.target for r in self.receiver.received]}"
            )
            return list(self.notes)


@pytest.fixture
def app() -> Iterator[App]:
    served = App()
    yield served
    served.server.stop()


def serve(**options: Any) -> SandboxService:
    options.setdefault("seed", 2)
    return SandboxService([_info(p) for p in BUNDLED], installed=BUNDLED, **options).start()


def client_for(
    service: SandboxService, *, journal: str | None = None, **overrides: Any
) -> RefundClient:
    return RefundClient(
        {p: {**service.config(p), **overrides} for p in service.providers()}, journal=journal
    )


def refund(client: RefundClient, service: SandboxService, provider: str, **extra: Any) -> Any:
    payment = service.payments(provider)[0]
    return client.refund(
        provider, payment=payment.ref, amount=Money(10, payment.amount.currency), **extra
    )


def test_callbacks_go_to_the_app_without_the_refund_naming_a_url(app: App, tmp_path: Path) -> None:
    service = serve(notify_url=app.server.base_url + "/", state_dir=tmp_path / "state")
    try:
        app.client = client = client_for(service)
        assert service.config("paywiser")["postback_url"] == f"{app.server.base_url}/paywiser"
        results = {p: refund(client, service, p) for p in ("directgw", "paywiser", "wonder")}
        assert {r.status for r in results.values()} == {RefundStatus.SUCCEEDED}
        notes = app.wait(3)
        assert sorted(n.provider for n in notes) == ["directgw", "paywiser", "wonder"]
        assert all(n.status is RefundStatus.SUCCEEDED for n in notes)
        paywizard = refund(
            client, service, "paywizard", notify_url=f"{app.server.base_url}/paywizard"
        )
        assert paywizard.status is RefundStatus.SUCCEEDED
        assert app.wait(4)[-1].provider == "paywizard"
    finally:
        service.stop()
    again = SandboxService([_info("paywiser")], installed=BUNDLED, state_dir=tmp_path / "state")
    try:
        again.start()
        assert again.notify_url == app.server.base_url, "the state folder keeps the app's URL"
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("pending", {"paywiser": "PENDING", "paywizard": "PENDING", "wonder": "PENDING"}),
        ("decline", dict.fromkeys(BUNDLED, "FAILED")),
    ],
)
def test_pending_and_decline_scenarios(scenario: str, expected: dict[str, str]) -> None:
    service = serve()
    try:
        client = client_for(service)
        answer = service.set_scenario(scenario, count=1)
        if scenario == "pending":
            assert answer["directgw"].startswith("unchanged: BBMSL")
            with pytest.raises(ValidationError, match=r"scenario: BBMSL .* no PENDING"):
                service.set_scenario("pending", provider="directgw")
        got = {p: refund(client, service, p).status.value for p in expected}
        assert got == expected
        again = {p: refund(client, service, p).status.value for p in expected}
        assert set(again.values()) == {"SUCCEEDED"}, "count=1: the scenario is used up"
    finally:
        service.stop()


def test_settle_sends_the_callback_of_a_pending_refund(app: App, tmp_path: Path) -> None:
    service = serve(notify_url=app.server.base_url)
    try:
        # Journalled: only a journalled txid lets a PayWiser postback name its refund.
        journal = f"sqlite:///{tmp_path / 'journal.db'}"
        app.client = client = client_for(service, journal=journal)
        service.set_scenario("pending", provider="paywiser", count=None)
        first, second = (refund(client, service, "paywiser") for _ in range(2))
        assert first.status is second.status is RefundStatus.PENDING
        assert app.notes == []
        settled = service.settle(provider="paywiser", refund_id=first.refund_id)
        assert settled == [
            {"provider": "paywiser", "refund_id": first.refund_id, "status": "SUCCEEDED"}
        ]
        note = app.wait(1)[0]
        assert (note.refund_id, note.status) == (first.refund_id, RefundStatus.SUCCEEDED)
        assert service.settle(status=RefundStatus.FAILED) == [
            {"provider": "paywiser", "refund_id": second.refund_id, "status": "FAILED"}
        ]
        assert app.wait(2)[1].status is RefundStatus.FAILED
        with pytest.raises(ValidationError, match="no PENDING refund 'r-none'"):
            service.settle(refund_id="r-none")
    finally:
        service.stop()


def test_timeout_and_5xx_scenarios_fault_only_refunds() -> None:
    service = serve()
    try:
        client = client_for(service)
        # The reply is held far longer than this client waits (until the service stops),
        # so it gives up first however loaded the machine is.
        impatient = client_for(service, read_timeout=0.5)
        service.set_scenario("timeout", provider="wonder", delay=30)
        payment = service.payments("wonder")[0]
        lost = refund(impatient, service, "wonder")
        assert lost.status is RefundStatus.UNKNOWN
        applied = next(
            p for p in service._served["wonder"].emulator.ledger.payments() if p.key == payment.key
        )
        assert len(applied.refunds) == 1, "the gateway did process it"
        # Wonder finds a refund only by the transaction uuid the lost reply carried, so a
        # query by the refund id alone proves nothing either way.
        found = client.query("wonder", refund_id=lost.refund_id, payment=payment.ref)
        assert found.status is RefundStatus.UNKNOWN

        service.set_scenario("5xx", provider="paywizard", count=2)
        target = service.payments("paywizard")[0]
        statuses = [refund(client, service, "paywizard").status for _ in range(3)]
        assert statuses[:2] == [RefundStatus.UNKNOWN] * 2
        assert statuses[2] is RefundStatus.SUCCEEDED
        emulator_payment = next(
            p
            for p in service._served["paywizard"].emulator.ledger.payments()
            if p.key == target.key
        )
        assert len(emulator_payment.refunds) == 1, "503 answers processed nothing"

        service.set_scenario("5xx", count=None)
        assert refund(client, service, "wonder").status is not RefundStatus.SUCCEEDED
        service.set_scenario("succeed")
        assert refund(client, service, "wonder").status is RefundStatus.SUCCEEDED
    finally:
        service.stop()


def test_scenario_arguments_are_checked() -> None:
    service = serve(seed=0)
    try:
        with pytest.raises(ValidationError, match="scenario: 'slow' is not one of pending"):
            service.set_scenario("slow")
        with pytest.raises(ValidationError, match="provider: 'acme' is not served"):
            service.set_scenario("decline", provider="acme")
        with pytest.raises(ValidationError, match="count: must be 1 or more"):
            service.set_scenario("decline", count=0)
        with pytest.raises(ValidationError, match="delay"):
            service.set_scenario("timeout", delay=0)
    finally:
        service.stop()


def free_ports(count: int) -> int:
    """A first port with ``count`` free ports from it on."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                taken = socket.socket()
                sockets.append(taken)
                taken.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for taken in sockets:
                taken.close()
    raise RuntimeError("no run of free ports")


def test_ports_follow_the_installed_providers_in_order(tmp_path: Path) -> None:
    base = free_ports(len(BUNDLED) + 1)
    only = [_info("wonder"), _info("directgw")]
    service = SandboxService(only, installed=BUNDLED, port=base, seed=0).start()
    try:
        assert service.control_url == f"http://127.0.0.1:{base}"
        assert service.config("directgw")["base_url"] == f"http://127.0.0.1:{base + 1}"
        assert service.config("wonder")["base_url"] == f"http://127.0.0.1:{base + 4}"
        with pytest.raises(Exception, match=f"cannot listen on 127.0.0.1:{base + 4} for wonder"):
            SandboxService([_info("wonder")], installed=BUNDLED, port=base, seed=0).start()
    finally:
        service.stop()


def test_a_restarted_sandbox_has_the_same_ports_keys_and_refunds(tmp_path: Path) -> None:
    state = tmp_path / "state"
    service = serve(state_dir=state)
    try:
        client = client_for(service)
        done = refund(client, service, "directgw")
        configs = {p: service.config(p) for p in BUNDLED}
        control = service.control_url
        untouched = {p: service.payments(p) for p in BUNDLED}
    finally:
        service.stop()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert {stat.S_IMODE(f.stat().st_mode) for f in state.iterdir()} == {0o600}

    again = serve(state_dir=state)
    try:
        assert {p: again.config(p) for p in BUNDLED} == configs
        assert again.control_url == control
        for provider, before in untouched.items():
            now = again.payments(provider)
            assert now[: len(before)] == before and len(now) == 2, "topped up to --seed"
        client = client_for(again)
        refunded = next(
            p for p in again._served["directgw"].emulator.ledger.payments() if p.refunds
        )
        assert (
            client.query("directgw", refund_id=done.refund_id, payment=refunded.ref).status
            is RefundStatus.SUCCEEDED
        )
        second = client.refund(
            "directgw", payment=refunded.ref, amount=Money(1, "HKD"), refund_id="again"
        )
        assert second.status is RefundStatus.FAILED, "refunded once, before the restart"
    finally:
        again.stop()


def test_a_broken_state_file_is_named(tmp_path: Path) -> None:
    state = tmp_path / "state"
    serve(state_dir=state, seed=0).stop()
    (state / "wonder.ledger.json").write_text('{"format": 1}')
    with pytest.raises(
        Exception, match=r"wonder\.ledger\.json .* remove it to start wonder afresh"
    ):
        serve(state_dir=state, seed=0)
    (state / "wonder.ledger.json").write_text("{")
    with pytest.raises(Exception, match=r"cannot read sandbox state .*wonder\.ledger\.json"):
        serve(state_dir=state, seed=0)


# -- the control API --------------------------------------------------------------------


def test_the_control_api(tmp_path: Path) -> None:
    service = serve(state_dir=tmp_path / "state", seed=1)
    try:
        base = control_url(None, tmp_path / "state")
        assert base == service.control_url == control_url(service.control_url + "/_sandbox", None)
        report = send(base, "")
        assert sorted(report["providers"]) == BUNDLED
        assert report["providers"]["wonder"]["scenario"] == "succeed"
        answer = send(base, "scenario", {"scenario": "decline", "provider": "wonder", "count": 2})
        assert answer == {"wonder": "decline: the next 2 refund(s)"}
        assert send(base, "")["providers"]["wonder"]["scenario"] == answer["wonder"]
        with pytest.raises(ValidationError, match=r"scenario: BBMSL .* no PENDING refunds"):
            send(base, "scenario", {"scenario": "pending", "provider": "directgw"})
        with pytest.raises(ValidationError, match="count: has the wrong type"):
            send(base, "scenario", {"scenario": "decline", "count": "2"})
        with pytest.raises(ValidationError, match="status: 'lost' is not SUCCEEDED or FAILED"):
            send(base, "settle", {"status": "lost"})
        assert send(base, "settle", {}) == []
        with pytest.raises(ValidationError, match="no such path"):
            send(base, "nothing")
    finally:
        service.stop()
    with pytest.raises(TransportError, match=r"no sandbox answers at http://127\.0\.0\.1"):
        send(base, "")
    with pytest.raises(ValidationError, match="give --url or --state-dir"):
        control_url(None, None)
    with pytest.raises(ValidationError, match="no sandbox has used"):
        control_url(None, tmp_path / "elsewhere")
    with pytest.raises(ValidationError, match="is not http://HOST:PORT"):
        control_url("https://127.0.0.1:1", None)
