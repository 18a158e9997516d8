"""What every group of conformance checks shares: the sandbox run, the helpers that
drive the client through it (recording everything for the secret scan), and the
comparison of what the plugin says with the emulator's ledger, the gateway's truth."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from decimal import ROUND_DOWN, Decimal
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

import pytest

from ..client import RefundClient
from ..errors import PluginLoadError, RefundError
from ..models import (
    Callback,
    PaymentRef,
    RefundNotification,
    RefundResult,
    RefundStatus,
)
from ..money import Money
from ..sandbox import EmulatorUndeclared, LedgerPayment, LedgerRefund, SandboxRun
from .clients import sandbox_client
from .rules import broken, expect
from .transcript import StageWitness, Transcript, secret_texts

__all__ = ["KitBase", "Report", "report"]

T = TypeVar("T")

Report = tuple[RefundStatus, Money | None, str | None, str | None, PaymentRef | None]

_SUCCEEDED, _PENDING = RefundStatus.SUCCEEDED, RefundStatus.PENDING
_FAILED, _UNKNOWN = RefundStatus.FAILED, RefundStatus.UNKNOWN


def report(note: RefundNotification) -> Report:
    """What a notification says about money: status, amount, ids and payment."""
    return (note.status, note.amount, note.refund_id, note.provider_refund_id, note.payment)


class KitBase:
    """Configuration, fixtures and helpers of the conformance checks.

    Set ``provider`` (the id); set ``plugin`` to a plugin object to test it without
    installing it. ``currency`` and ``payment_amount`` are those of the payments the
    checks seed in the emulator.
    """

    provider: ClassVar[str] = ""
    plugin: ClassVar[object | None] = None
    #: Currency and amount of the payments seeded in the emulator.
    currency: ClassVar[str] = "HKD"
    payment_amount: ClassVar[str] = "100.00"
    #: Kept short so the timeout checks are quick.
    read_timeout: ClassVar[float] = 0.5
    #: Keyword arguments of the provider's emulator (a variant of the gateway, say).
    emulator_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    _transcript: Transcript
    _cache: dict[str, Any]

    # -- fixtures ------------------------------------------------------------------------

    @pytest.fixture(params=["sync", "async"])
    def run(
        self, request: pytest.FixtureRequest, tmp_path: Any, caplog: pytest.LogCaptureFixture
    ) -> Iterator[SandboxRun]:
        """The provider's emulator, served on loopback, with a client configured for it
        that journals to a throwaway SQLite file: a RefundClient, then an
        AsyncRefundClient (the same plugin hooks serve both). When the check ends, every
        configured secret is looked for in everything it produced (rule ``no-secret``)."""
        assert self.provider, 'set `provider = "<id>"` on your conformance class'
        caplog.set_level(logging.DEBUG)
        self._transcript = Transcript()
        self._cache = {}
        try:
            client = sandbox_client(
                request.param,
                entry_points=self.plugin is None,
                journal=f"sqlite:///{tmp_path / 'kit-journal.db'}",
            )
            client.register_plugin(StageWitness(self._transcript))
            sandbox = SandboxRun(
                self.provider,
                plugin=self.plugin,
                read_timeout=self.read_timeout,
                emulator_options=dict(self.emulator_options),
                client=client,
            )
        except PluginLoadError as exc:
            broken("plugin-loads", str(exc))
        with sandbox as run:
            yield run
            self._scan_for_secrets(run, caplog)

    def _scan_for_secrets(self, run: SandboxRun, caplog: pytest.LogCaptureFixture) -> None:
        records = [*caplog.get_records("setup"), *caplog.get_records("call")]
        # The emulator and the loopback servers stand in for the gateway: their logs are
        # not the plugin's.
        self._transcript.logs(r for r in records if not r.name.startswith("refundcore.sandbox"))
        self._transcript.journal(run.client.journal)
        for note in run.notifications:
            self._transcript.note(note)
        found = self._transcript.leak(secret_texts(run.client.config_for(self.provider)))
        if found is not None:
            where, excerpt = found
            broken("no-secret", f"a secret appeared in {where}: {excerpt!r}")

    @contextlib.contextmanager
    def journal_free_client(self, run: SandboxRun) -> Iterator[RefundClient]:
        """A second client for the same emulator, without a journal: for checks of what
        the gateway itself does with a repeated request."""
        client = RefundClient(entry_points=self.plugin is None, journal=None)
        try:
            if self.plugin is not None:
                client.register_plugin(self.plugin)
            bridge = run.emulator.client_plugin()
            if bridge is not None:
                client.register_plugin(bridge)
            settings = dict(run.emulator.client_config(run.server.base_url))
            settings.setdefault("read_timeout", self.read_timeout)
            client.configure(self.provider, settings)
            yield client
        finally:
            client.close()

    def forget_requests(self, run: SandboxRun) -> None:
        """Forget the requests the gateway has received, once the emulator's callbacks
        in flight were delivered: an emulator may post them to its own server (as a
        default postback sink), where they would count as requests sent."""
        run.emulator.sender.wait()
        run.server.clear_requests()

    # -- amounts and payments ------------------------------------------------------------

    def money(self, amount: str | Decimal, currency: str | None = None) -> Money:
        """An amount in the suite's currency (or ``currency``)."""
        return Money(Decimal(amount), currency or self.currency)

    def share(self, fraction: str) -> Money:
        """``fraction`` of the payment, rounded down to the currency's minor unit."""
        full = self.money(self.payment_amount)
        quantum = Decimal(1).scaleb(-full.exponent)
        return Money((full.amount * Decimal(fraction)).quantize(quantum, ROUND_DOWN), self.currency)

    def partial(self) -> Money:
        """About 40% of the payment, exact in the currency."""
        return self.share("0.4")

    def over(self) -> Money:
        """One minor unit more than the payment."""
        full = self.money(self.payment_amount)
        return Money(full.amount + Decimal(1).scaleb(-full.exponent), self.currency)

    def declared(self, run: SandboxRun, what: Callable[[], T]) -> T:
        """Call an emulator declaration; rule ``emulator-declares`` if it has none."""
        try:
            return what()
        except EmulatorUndeclared as exc:
            broken("emulator-declares", str(exc))

    def outcomes(self, run: SandboxRun) -> frozenset[RefundStatus]:
        """The refund outcomes the emulator declares it can produce."""
        return self.declared(run, run.emulator.refund_outcomes)

    def seed(
        self,
        run: SandboxRun,
        *,
        outcome: RefundStatus = _SUCCEEDED,
        amount: Money | None = None,
    ) -> PaymentRef:
        """A fresh completed payment (of ``payment_amount`` unless ``amount``) whose
        refunds turn out ``outcome``; the check is skipped if the gateway has no such
        outcome (as the emulator declares)."""
        if outcome is not _SUCCEEDED and outcome not in self.outcomes(run):
            pytest.skip(f"the gateway's refunds never turn out {outcome} (emulator's declaration)")
        return run.emulator.seed_payment(
            amount or self.money(self.payment_amount), refund_outcome=outcome
        )

    def ledger_payment(self, run: SandboxRun, payment: PaymentRef) -> LedgerPayment:
        """The emulator's record of a seeded payment."""
        found = run.emulator.ledger.find_payment(
            payment_id=payment.payment_id,
            merchant_reference=payment.merchant_reference,
            transaction_id=payment.transaction_id,
        )
        assert found is not None, f"the emulator lost payment {payment}"
        return found

    def ledger_refunds(self, run: SandboxRun, payment: PaymentRef) -> list[LedgerRefund]:
        """The refunds the gateway recorded against ``payment``, in order."""
        return list(self.ledger_payment(run, payment).refunds)

    def notify_kwargs(self, run: SandboxRun) -> dict[str, Any]:
        """How a refund gets its callbacks to the run's receiver: a ``notify_url`` where
        the wire carries one; else nothing, as the sandbox set the URL at the emulator
        (``notify_url``), where a merchant sets it at the gateway."""
        if run.info.capabilities.notify_url:
            return {"notify_url": run.notify_url}
        return {}

    # -- driving the client (everything recorded for the secret scan) --------------------

    def _recorded(self, call: Callable[[], T]) -> T:
        try:
            answer = call()
        except RefundError as exc:
            self._transcript.error(exc)
            raise
        if isinstance(answer, RefundResult):
            self._transcript.result(answer)
        elif isinstance(answer, RefundNotification):
            self._transcript.note(answer)
        return answer

    def refund(
        self,
        run: SandboxRun,
        payment: PaymentRef,
        amount: Money,
        *,
        client: RefundClient | None = None,
        **kwargs: Any,
    ) -> RefundResult:
        """``client.refund`` (the run's client unless another is given)."""
        use = client or run.client
        return self._recorded(
            lambda: use.refund(self.provider, payment=payment, amount=amount, **kwargs)
        )

    def query(
        self,
        run: SandboxRun,
        refund_id: str,
        payment: PaymentRef | None = None,
        provider_refund_id: str | None = None,
    ) -> RefundResult:
        """``client.query``."""
        return self._recorded(
            lambda: run.client.query(
                self.provider,
                refund_id=refund_id,
                payment=payment,
                provider_refund_id=provider_refund_id,
            )
        )

    def void(self, run: SandboxRun, payment: PaymentRef) -> RefundResult:
        """``client.void``."""
        return self._recorded(lambda: run.client.void(self.provider, payment=payment))

    def verify(
        self, run: SandboxRun, callback: Callback, *, client: RefundClient | None = None
    ) -> RefundNotification:
        """``client.verify_callback`` (the run's client unless another is given)."""
        use = client or run.client
        return self._recorded(
            lambda: use.verify_callback(
                self.provider,
                method=callback.method,
                path=callback.path,
                headers=callback.headers,
                body=callback.body,
            )
        )

    # -- callbacks -----------------------------------------------------------------------

    def callback_for(
        self, run: SandboxRun, record: LedgerRefund, *, age: dt.timedelta = dt.timedelta(0)
    ) -> Callback:
        """The gateway's genuine callback about ``record``, signed ``age`` ago, for the
        path it would be delivered to (the refund's notify URL where it has one)."""
        path = "/hooks/refunds?kit=1"
        if record.notify_url:
            parts = urlsplit(record.notify_url)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return run.emulator.build_callback(record, path=path, at=run.emulator.clock() - age)

    def refunded(self, run: SandboxRun, *, outcome: RefundStatus = _SUCCEEDED) -> LedgerRefund:
        """A partial refund of a fresh payment, accepted by the gateway (``outcome`` as
        the emulator declares it), with a notify URL: its ledger record."""
        payment = self.seed(run, outcome=outcome)
        result = self.refund(run, payment, self.partial(), **self.notify_kwargs(run))
        records = self.ledger_refunds(run, payment)
        expect(
            records,
            "refund-succeeds",
            f"the gateway recorded no refund ({result.status}: {result.error_code} "
            f"{result.message})",
        )
        return records[-1]

    def note_record(self, run: SandboxRun, note: RefundNotification) -> LedgerRefund:
        """The ledger's record of the refund a notification names (by the merchant's
        refund id or the gateway's); rule ``callback-verifies`` when it names none, and
        ``agrees-with-ledger`` when its two ids name different refunds."""
        ledger = run.emulator.ledger
        by_id = ledger.find_refund(refund_id=note.refund_id) if note.refund_id else None
        by_gateway = (
            ledger.find_refund(provider_refund_id=note.provider_refund_id)
            if note.provider_refund_id
            else None
        )
        expect(
            by_id is None or by_gateway is None or by_id is by_gateway,
            "agrees-with-ledger",
            f"refund_id {note.refund_id!r} and provider_refund_id "
            f"{note.provider_refund_id!r} name two different refunds",
        )
        record = by_id or by_gateway
        expect(
            record is not None,
            "callback-verifies",
            f"the notification names no refund the gateway knows (refund_id "
            f"{note.refund_id!r}, provider_refund_id {note.provider_refund_id!r})",
        )
        assert record is not None
        return record

    def delivered_note(
        self, run: SandboxRun, record: LedgerRefund, timeout: float = 5.0
    ) -> RefundNotification:
        """The first notification the run's receiver verified about ``record`` (waiting
        for it up to ``timeout`` seconds); rule ``callback-verifies`` if none came."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            notes = run.notifications[seen:]
            for note in notes:
                if self.note_record(run, note) is record:
                    return note
            seen += len(notes)
            left = deadline - time.monotonic()
            try:
                run.wait_for_notifications(seen + 1, timeout=max(0.0, left))
            except TimeoutError as exc:
                broken("callback-verifies", f"no verified callback about the refund arrived: {exc}")

    # -- comparing with the ledger -------------------------------------------------------

    def agrees(
        self,
        what: str,
        status: RefundStatus,
        truth: RefundStatus | None,
        *,
        exact: bool = False,
    ) -> None:
        """Check a reported status against the ledger's ``truth`` (``None``: the gateway
        holds no such refund). UNKNOWN always agrees unless ``exact``; with ``exact``, a
        final truth must be reported as it is."""
        if truth is None:
            expect(
                status not in (_SUCCEEDED, _PENDING),
                "right-refund",
                f"{what}: {status}, but the gateway holds no such refund",
            )
            return
        if truth is _PENDING:
            expect(
                status is not _SUCCEEDED,
                "pending-never-succeeded",
                f"{what}: SUCCEEDED while the gateway still processes it",
            )
        if truth in (_PENDING, _SUCCEEDED):
            expect(
                status is not _FAILED,
                "maybe-never-failed",
                f"{what}: FAILED, but the gateway's ledger says {truth}",
            )
        if truth is _FAILED:
            expect(
                status is not _SUCCEEDED,
                "agrees-with-ledger",
                f"{what}: SUCCEEDED, but the gateway's ledger says FAILED",
            )
        if exact and truth.is_final:
            expect(
                status is truth,
                "agrees-with-ledger",
                f"{what}: {status}, but the gateway's ledger says {truth}",
            )

    def amount_agrees(self, what: str, amount: Money | None, record: LedgerRefund) -> None:
        """A reported amount, when there is one, is the ledger's."""
        expect(
            amount is None or amount == record.amount,
            "agrees-with-ledger",
            f"{what}: amount {amount}, but the gateway's ledger says {record.amount}",
        )
