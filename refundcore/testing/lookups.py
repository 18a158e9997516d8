"""Lookups: a query finds the refund it asks about, among several on one payment, by
whatever identifiers it is given, or says it cannot; it never reports another refund,
nor one that was never made."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ..errors import RefundError, ValidationError
from ..jsonutil import dump_json, load_json
from ..lookup import LookupKey
from ..models import HttpResponse, PaymentRef, RefundQuery, RefundResult, RefundStatus
from ..sandbox import Fault, LedgerRefund, SandboxRun
from .base import KitBase
from .hostile import Replies
from .mutations import json_parent, json_paths
from .rules import expect
from .stages import ProviderStages

__all__ = ["LookupChecks"]

_SUCCEEDED, _PENDING, _FAILED = RefundStatus.SUCCEEDED, RefundStatus.PENDING, RefundStatus.FAILED


class LookupChecks(KitBase):
    """Queries, checked against the ledger."""

    def _require_query(self, run: SandboxRun) -> None:
        if not run.info.capabilities.query:
            pytest.skip("provider declares no query")

    def _answer_agrees(
        self,
        what: str,
        answer: RefundResult,
        record: LedgerRefund,
        reply: RefundResult,
        *,
        exact: bool = False,
    ) -> None:
        self.agrees(what, answer.status, record.status, exact=exact)
        expect(
            answer.amount is None or answer.amount == record.amount,
            "right-refund",
            f"{what}: amount {answer.amount}, but that refund is {record.amount}",
        )
        expect(
            answer.provider_refund_id is None
            or reply.provider_refund_id is None
            or answer.provider_refund_id == reply.provider_refund_id,
            "right-refund",
            f"{what}: provider_refund_id {answer.provider_refund_id!r}, but the refund's own "
            f"reply said {reply.provider_refund_id!r}",
        )

    def test_query_after_refund_agrees(self, run: SandboxRun) -> None:
        """Querying a refund (with the gateway's id from its reply) reports the same
        status and gateway id as the refund; without the gateway's id it agrees too, or
        says it cannot tell (UNKNOWN)."""
        self._require_query(run)
        payment = self.seed(run)
        reply = self.refund(run, payment, self.partial())
        expect(
            reply.status is _SUCCEEDED,
            "refund-succeeds",
            f"refund: {reply.status} ({reply.message})",
        )
        record = self.ledger_refunds(run, payment)[-1]
        answer = self.query(run, reply.refund_id, payment, reply.provider_refund_id)
        assert answer.operation == "query"
        self._answer_agrees("a query with the gateway's id", answer, record, reply, exact=True)
        answer = self.query(run, reply.refund_id, payment)
        self._answer_agrees("a query by refund id and payment", answer, record, reply)

    def test_query_by_refund_id_alone(self, run: SandboxRun) -> None:
        """A query given only the refund id finds that refund, says it cannot tell, or is
        refused before sending (the gateway needs the payment)."""
        self._require_query(run)
        payment = self.seed(run)
        reply = self.refund(run, payment, self.partial())
        record = self.ledger_refunds(run, payment)[-1]
        self.forget_requests(run)
        try:
            answer = self.query(run, reply.refund_id)
        except ValidationError:
            expect(not run.server.requests, "refused-before-sending", "a refused query was sent")
            return
        self._answer_agrees("a query by refund id alone", answer, record, reply)

    def test_query_finds_the_right_refund_among_several(self, run: SandboxRun) -> None:
        """With two refunds of different amounts (and, where the gateway has pending
        refunds, different final statuses) on one payment, a query of each reports
        that one, by refund id and payment, with or without the gateway's id."""
        self._require_query(run)
        caps = run.info.capabilities
        if not caps.partial_refunds or caps.refunds_per_payment == 1:
            pytest.skip("a payment has at most one refund here")
        pending = _PENDING in self.outcomes(run)
        payment = self.seed(run, outcome=_PENDING if pending else _SUCCEEDED)
        first = self.refund(run, payment, self.share("0.3"))
        second = self.refund(run, payment, self.share("0.2"))
        records = self.ledger_refunds(run, payment)
        expect(
            len(records) == 2,
            "refund-succeeds",
            f"two refunds accepted, the gateway holds {len(records)}",
        )
        if pending:
            run.emulator.settle(records[0].refund_id, _FAILED)
            run.emulator.settle(records[1].refund_id, _SUCCEEDED)
        for name, reply, record in (("first", first, records[0]), ("second", second, records[1])):
            answer = self.query(run, reply.refund_id, payment)
            self._answer_agrees(f"a query of the {name} refund", answer, record, reply)
            if reply.provider_refund_id is not None:
                answer = self.query(run, reply.refund_id, payment, reply.provider_refund_id)
                self._answer_agrees(
                    f"a query of the {name} refund with its gateway id", answer, record, reply
                )

    def test_query_of_a_refund_never_made(self, run: SandboxRun) -> None:
        """A refund id never sent, on a payment refunded in full by another refund, is
        never reported SUCCEEDED or PENDING. (A gateway with one refund per payment
        looks refunds up by payment: there the payment's refund is the refund.)"""
        self._require_query(run)
        if run.info.capabilities.refunds_per_payment == 1:
            pytest.skip("one refund per payment: a lookup by payment finds the refund")
        payment = self.seed(run)
        made = self.refund(run, payment, self.money(self.payment_amount))
        expect(made.status is _SUCCEEDED, "refund-succeeds", f"full refund: {made.status}")
        never = f"kit-never-{uuid.uuid4().hex[:12]}"
        for ref in (payment, _narrowed(payment)):
            try:
                answer = self.query(run, never, ref)
            except ValidationError:
                continue
            self.agrees(f"a query of a refund id never sent (payment {ref})", answer.status, None)

    # -- what "not found" proves (Capabilities.lookup) ------------------------------------

    def _found_again(self, run: SandboxRun, what: str, refund_id: str, payment: PaymentRef) -> None:
        """The refund ``refund_id``, which the gateway holds, looked up as the journal
        would after a lost reply (no gateway id), is never answered "not found", and
        what the answer says agrees with the ledger. The payment is fresh: its one
        refund at the gateway is this one."""
        lookup = run.info.capabilities.lookup
        records = self.ledger_refunds(run, payment)
        assert len(records) == 1, f"{what}: the gateway holds {len(records)} refunds"
        record = records[0]
        answer = self.query(run, refund_id, payment)
        expect(
            answer.error_code is None or answer.error_code not in lookup.not_found_codes,
            "absence-proven",
            f"{what}: the gateway holds it ({record.status}), the query answered "
            f"{answer.status} {answer.error_code!r}, a declared not-found code",
        )
        self.agrees(what, answer.status, record.status)

    def test_refund_the_gateway_has_is_never_absent(self, run: SandboxRun) -> None:
        """A refund the gateway holds, in each state its refunds can be (succeeded,
        pending, declined), and one whose reply was lost on the way back, is never
        answered with a declared not-found code, and what a query says of it agrees
        with the ledger."""
        self._require_query(run)
        lookup = run.info.capabilities.lookup
        if lookup.by not in (LookupKey.REFUND_ID, LookupKey.TAG, LookupKey.PAYMENT):
            pytest.skip(f"a refund is found again only {lookup.by}: nothing to look up")
        outcomes = sorted(self.outcomes(run) | {_SUCCEEDED}, key=str)
        for outcome in outcomes:
            payment = self.seed(run, outcome=outcome)
            reply = self.refund(run, payment, self.partial())
            if self.ledger_refunds(run, payment):
                self._found_again(run, f"a {outcome} refund", reply.refund_id, payment)
        payment = self.seed(run)
        run.server.inject("*", Fault(drop=True, times=1))
        lost = self.refund(run, payment, self.partial())
        run.server.clear_faults()
        self._found_again(run, "a refund whose reply was lost", lost.refund_id, payment)

    def test_refund_never_received_is_not_a_decline(self, run: SandboxRun) -> None:
        """A refund id the gateway never received, on a refunded payment, is answered
        not found (one of the declared codes) or UNKNOWN: never a decline, which the
        journal would take as the refund's final word."""
        self._require_query(run)
        payment = self.seed(run)
        made = self.refund(run, payment, self.partial())
        expect(made.status is _SUCCEEDED, "refund-succeeds", f"refund: {made.status}")
        never = f"kit-never-{uuid.uuid4().hex[:12]}"
        try:
            answer = self.query(run, never, payment)
        except ValidationError:
            return
        codes = run.info.capabilities.lookup.not_found_codes
        expect(
            answer.status is not _FAILED or answer.error_code in codes,
            "absence-proven",
            f"a refund id never sent answered FAILED {answer.error_code!r}, not one of "
            f"the declared not-found codes {sorted(codes)}: the journal would settle it "
            "as declined",
        )

    def test_reply_leaving_out_a_part_never_proves_absence(self, run: SandboxRun) -> None:
        """The gateway's query reply about a refund it holds (succeeded, pending,
        declined), with any one key of a JSON object in it left out (a proxy's short
        answer, another API version's), is never answered with a declared not-found
        code: absence is read from what the gateway says, never from what a reply
        leaves out. (A "no such refund" that is the gateway's explicit statement, a
        ``null`` say, is not a part left out.)"""
        self._require_query(run)
        codes = run.info.capabilities.lookup.not_found_codes
        if not codes:
            pytest.skip("the provider declares no not-found code")
        recorder = Replies(kinds={"query"})
        run.client.register_plugin(recorder)
        for outcome in sorted(self.outcomes(run) | {_SUCCEEDED}, key=str):
            payment = self.seed(run, outcome=outcome)
            reply = self.refund(run, payment, self.partial())
            if self.ledger_refunds(run, payment):
                self.query(run, reply.refund_id, payment)
        recorder.recording = False
        stages = ProviderStages(run.client, self.provider)
        for operation, genuine in recorder.seen:
            assert isinstance(operation, RefundQuery)
            for where, body in _keys_left_out(genuine.body):
                shortened = HttpResponse(status=genuine.status, headers=genuine.headers, body=body)
                try:
                    answer = stages.parse(operation, shortened)
                except RefundError as exc:
                    self._transcript.error(exc)
                    continue
                self._transcript.result(answer)
                expect(
                    answer.error_code not in codes,
                    "absence-proven",
                    f"the reply about a refund the gateway holds, with {where} left out, was "
                    f"answered {answer.status} {answer.error_code!r}, a declared not-found "
                    "code",
                )


def _keys_left_out(body: bytes) -> Iterator[tuple[str, bytes]]:
    """``body`` (JSON) with one key of one of its objects removed at a time. List items
    are kept: an empty list can be a gateway's own way of saying "none"."""
    try:
        data = load_json(body, exact_numbers=True)
    except ValueError:
        return

    for path in list(json_paths(data)):
        # A JSON object's keys are text, a list's indexes numbers.
        if isinstance(path[-1], str):
            copy = load_json(body, exact_numbers=True)
            del json_parent(copy, path)[path[-1]]
            yield ".".join(map(str, path)), dump_json(copy)


def _narrowed(payment: PaymentRef) -> PaymentRef:
    """The same payment named by one identifier only (the first it has)."""
    for name in ("payment_id", "merchant_reference", "transaction_id"):
        value = getattr(payment, name)
        if value is not None:
            return PaymentRef(**{name: value})
    return payment
