"""Every outcome the emulator can produce, driven through a refund, a query and the
callback, and each answer compared with the emulator's ledger: the gateway's truth,
not the plugin's word.

A refund that may have happened is never FAILED; PENDING is never SUCCEEDED; a decline
is FAILED; and what the plugin reports afterwards agrees with what the gateway did.
"""

from __future__ import annotations

import pytest

from ..models import PaymentRef, RefundStatus
from ..sandbox import Fault, SandboxRun
from .base import KitBase
from .rules import expect

__all__ = ["OutcomeChecks"]

_SUCCEEDED, _PENDING = RefundStatus.SUCCEEDED, RefundStatus.PENDING
_FAILED, _UNKNOWN = RefundStatus.FAILED, RefundStatus.UNKNOWN

#: Faults (on the refund's request only) after which the client cannot know whether
#: the refund happened; the second item says whether the gateway applied it first.
_UNCERTAIN = {
    "timeout-after-applying": (Fault(delay=1.5, times=1), True),
    "dropped-after-applying": (Fault(drop=True, times=1), True),
    "502-before-applying": (
        Fault(status=502, body=b"<html>Bad Gateway</html>", reach_app=False, times=1),
        False,
    ),
    "503-after-applying": (Fault(status=503, body=b"", reach_app=True, times=1), True),
    "garbled-after-applying": (Fault(garbage=True, times=1), True),
    "truncated-after-applying": (Fault(truncate=True, times=1), True),
}


class OutcomeChecks(KitBase):
    """Outcomes the gateway decides, compared with its ledger."""

    def _query_agrees(
        self,
        run: SandboxRun,
        what: str,
        refund_id: str,
        payment: PaymentRef,
        truth: RefundStatus | None,
    ) -> None:
        if not run.info.capabilities.query:
            return
        answer = self.query(run, refund_id, payment)
        self.agrees(what, answer.status, truth)

    @pytest.mark.parametrize("settles_as", [_SUCCEEDED, _FAILED], ids=["succeeded", "failed"])
    def test_pending_refund_settles(self, run: SandboxRun, settles_as: RefundStatus) -> None:
        """A refund the gateway answers "pending" is PENDING (or UNKNOWN), never
        SUCCEEDED or FAILED, by its reply, a query and a callback sent meanwhile; once
        the gateway settles it, the callback it sends and a query agree with the
        ledger, and the journal follows the callback."""
        payment = self.seed(run, outcome=_PENDING)
        result = self.refund(run, payment, self.partial(), **self.notify_kwargs(run))
        records = self.ledger_refunds(run, payment)
        expect(
            records, "refund-succeeds", f"the gateway recorded no pending refund ({result.status})"
        )
        record = records[-1]
        expect(
            record.status is _PENDING,
            "emulator-declares",
            f"a PENDING seed gave a {record.status} refund",
        )
        self.agrees("the refund's reply", result.status, _PENDING)
        self._query_agrees(run, "a query while pending", result.refund_id, payment, _PENDING)
        if run.info.capabilities.callbacks:
            note = self.verify(run, self.callback_for(run, record))
            expect(
                self.note_record(run, note) is record,
                "agrees-with-ledger",
                "the callback names another refund",
            )
            self.agrees("a callback while pending", note.status, _PENDING)
        run.emulator.settle(record.refund_id, settles_as)
        self._query_agrees(run, f"a query once {settles_as}", result.refund_id, payment, settles_as)
        if not run.info.capabilities.callbacks:
            return
        note = self.delivered_note(run, record)
        self.agrees(f"the callback once {settles_as}", note.status, settles_as, exact=True)
        self.amount_agrees("the callback", note.amount, record)
        journalled = (
            run.client.journal.get(self.provider, result.refund_id) if run.client.journal else None
        )
        expect(
            journalled is None or journalled.state.value == settles_as.value,
            "callback-verifies",
            f"the gateway's callback ({note.status}, refund_id {note.refund_id!r}, "
            f"provider_refund_id {note.provider_refund_id!r}) left the journalled refund "
            f"{journalled.state.value if journalled else None}: it does not name the refund",
        )

    def test_declined_refund_is_failed(self, run: SandboxRun) -> None:
        """A refund the gateway declines (a processor decline, where the gateway has
        them) is FAILED, and a query and a callback about it never say it succeeded."""
        payment = self.seed(run, outcome=_FAILED)
        result = self.refund(run, payment, self.partial(), **self.notify_kwargs(run))
        expect(
            result.status is _FAILED,
            "decline-is-failed",
            f"declined refund gave {result.status} ({result.error_code}: {result.message})",
        )
        records = self.ledger_refunds(run, payment)
        expect(
            all(r.status is _FAILED for r in records),
            "agrees-with-ledger",
            "the refund is FAILED, but the gateway's ledger holds a live refund",
        )
        self._query_agrees(
            run,
            "a query of a declined refund",
            result.refund_id,
            payment,
            _FAILED if records else None,
        )
        if records and run.info.capabilities.callbacks:
            note = self.verify(run, self.callback_for(run, records[-1]))
            self.agrees("a callback about a declined refund", note.status, _FAILED, exact=True)

    @pytest.mark.parametrize("fault", list(_UNCERTAIN), ids=list(_UNCERTAIN))
    def test_uncertain_outcome_is_unknown(self, run: SandboxRun, fault: str) -> None:
        """A timeout, a dropped connection, a 5xx, or an unreadable or cut-short reply is
        UNKNOWN, never FAILED: the refund may have gone through. Afterwards a query and
        the gateway's callback agree with what the gateway really did."""
        injected, applied = _UNCERTAIN[fault]
        payment = self.seed(run)
        run.server.inject("*", injected)
        result = self.refund(run, payment, self.partial(), **self.notify_kwargs(run))
        run.server.clear_faults()
        expect(
            result.status is _UNKNOWN,
            "maybe-never-failed" if result.status is _FAILED else "agrees-with-ledger",
            f"{fault} gave {result.status} ({result.error_code}: {result.message})",
        )
        records = self.ledger_refunds(run, payment)
        truth = records[-1].status if records else None
        assert bool(records) is applied, f"the emulator did not behave as {fault} says"
        self._query_agrees(run, f"a query after {fault}", result.refund_id, payment, truth)
        if records and run.info.capabilities.callbacks:
            note = self.verify(run, self.callback_for(run, records[-1]))
            self.agrees(f"the callback after {fault}", note.status, truth, exact=True)
            self.amount_agrees(f"the callback after {fault}", note.amount, records[-1])
