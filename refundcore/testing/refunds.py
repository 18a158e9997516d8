"""Refunds and capabilities: what the plugin sends is what the gateway records, and
every capability the plugin declares is exercised against the emulator."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import ROUND_DOWN, Decimal
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from ..errors import RefundError, ValidationError
from ..hookspecs import hookimpl
from ..jsonutil import dump_json, load_json
from ..models import HttpRequest, HttpResponse, RefundResult, RefundStatus
from ..money import CURRENCY_EXPONENTS, Money
from ..sandbox import Fault, SandboxRun
from .base import KitBase
from .hostile import Replies
from .mutations import flip, json_parent, json_paths
from .rules import broken, expect
from .stages import ProviderStages

__all__ = ["RefundChecks"]

_SUCCEEDED, _FAILED, _UNKNOWN = RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.UNKNOWN
#: Currencies tried where a provider takes any: one of each number of decimals.
_ANY_CURRENCY_SAMPLE = ("JPY", "BHD")


class _TamperSignature:
    """App plugin that corrupts the request after the provider signed it."""

    def __init__(self, tamper: Any) -> None:
        self._tamper = tamper

    @hookimpl(wrapper=True)
    def refundcore_sign_request(self, request: HttpRequest) -> Any:
        signed = yield
        return self._tamper(request, signed)


def _status(result: RefundResult) -> str:
    return f"{result.status} ({result.error_code}: {result.message})"


def _amount_forms(amount: Money) -> list[str]:
    """How a reply may write ``amount``: its wire text, its decimal as given, and in
    minor units."""
    minor = amount.amount.scaleb(amount.exponent)
    return [amount.to_wire(), str(amount.amount), f"{minor:f}"]


def _rewritten(body: bytes, forms: Mapping[str, str]) -> bytes | None:
    """``body`` (JSON) with every text or number value that is a key of ``forms``
    written as its value instead (a number stays a number); ``None`` when the body is
    not JSON or holds no such value."""
    try:
        data = load_json(body, exact_numbers=True)
    except (ValueError, UnicodeError):
        return None
    changed = False
    for path in list(json_paths(data)):
        parent = json_parent(data, path)
        value = parent[path[-1]]
        if isinstance(value, str) and value in forms:
            # JsonNumber is a str: the same type keeps a number's literal a number.
            parent[path[-1]] = type(value)(forms[value])
            changed = True
    return dump_json(data) if changed else None


class RefundChecks(KitBase):
    """Refunds, amounts, and the declared capabilities."""

    def tamper_request_signature(self, before: HttpRequest, signed: HttpRequest) -> HttpRequest:
        """Corrupt the signature the sign stage added. The default changes the last
        character of every header the sign stage added or changed whose name contains
        ``sign``; override for gateways that sign elsewhere (a body field)."""
        changed = [
            name
            for name in signed.headers
            if "sign" in name.lower() and signed.headers[name] != before.headers.get(name)
        ]
        if not changed:
            pytest.fail(
                "no signature header found: override tamper_request_signature() to "
                "corrupt where this gateway carries its signature"
            )
        for name in changed:
            value = signed.headers[name]
            signed = signed.with_header(name, flip(value, len(value) // 2))
        return signed

    def _sent_nothing(self, run: SandboxRun, what: str, rule: str) -> None:
        sent = [f"{r.method} {r.target} {r.body[:120]!r}" for r in run.server.requests]
        expect(not sent, rule, f"{what}, yet a request reached the gateway: {sent}")

    # -- refunds -------------------------------------------------------------------------

    def test_full_refund_succeeds(self, run: SandboxRun) -> None:
        """Refunding a whole payment is SUCCEEDED with the gateway's refund id, and the
        gateway records exactly that refund. If not, check the request the build stage
        makes and its signature; the result's message shows what the emulator said."""
        payment = self.seed(run)
        full = self.money(self.payment_amount)
        result = self.refund(run, payment, full, reason="conformance")
        expect(result.status is _SUCCEEDED, "refund-succeeds", f"full refund: {_status(result)}")
        expect(
            result.provider_refund_id, "refund-succeeds", "parse_response set no provider_refund_id"
        )
        assert result.refund_id and result.provider == self.provider
        records = self.ledger_refunds(run, payment)
        expect(
            len(records) == 1 and records[0].status is _SUCCEEDED,
            "agrees-with-ledger",
            f"the gateway's ledger holds {[(r.amount, r.status) for r in records]}",
        )
        expect(
            records[0].amount == full,
            "amount-exact",
            f"asked {full}, the gateway recorded {records[0].amount}",
        )
        self.amount_agrees("the refund's result", result.amount, records[0])

    def test_partial_refund_succeeds(self, run: SandboxRun) -> None:
        """Where partial refunds are declared, one is SUCCEEDED for exactly its amount.
        Where they are not, one is refused before sending (the core's check)."""
        payment = self.seed(run)
        if not run.info.capabilities.partial_refunds:
            self.forget_requests(run)
            try:
                self.refund(run, payment, self.partial())
            except ValidationError:
                self._sent_nothing(run, "a partial refund was refused", "capability-honoured")
                return
            pytest.xfail(
                "the core does not refuse partial refunds the provider does not declare yet"
            )
        result = self.refund(run, payment, self.partial())
        expect(
            result.status is _SUCCEEDED,
            "capability-honoured",
            f"declares partial refunds; one gave {_status(result)}",
        )
        records = self.ledger_refunds(run, payment)
        expect(
            [r.amount for r in records] == [self.partial()],
            "amount-exact",
            f"asked {self.partial()}, the gateway recorded {[str(r.amount) for r in records]}",
        )
        self.amount_agrees("the refund's result", result.amount, records[0])

    def test_refunded_amount_is_read_from_the_reply(self, run: SandboxRun) -> None:
        """The gateway's reply to a partial refund, with the amount it says it refunded
        written as another (every value in it that is the amount asked: as text, as a
        number, in minor units) or in another currency, is never SUCCEEDED for the
        amount asked: what was refunded is the gateway's word (or the reply is not
        taken as this refund's), never assumed from the request. A partial refund read
        as the full one is money the merchant believes returned and was not."""
        recorder = Replies(kinds={"refund"})
        run.client.register_plugin(recorder)
        asked = self.partial()
        result = self.refund(run, self.seed(run), asked)
        expect(result.status is _SUCCEEDED, "refund-succeeds", f"refund: {_status(result)}")
        recorder.recording = False
        other = self.share("0.2")
        currency = next(c for c in ("USD", "EUR") if c != asked.currency)
        changes = {
            f"the amount written as {other}": dict(
                zip(_amount_forms(asked), _amount_forms(other), strict=True)
            ),
            f"the currency written as {currency}": {asked.currency: currency},
        }
        stages = ProviderStages(run.client, self.provider)
        for operation, genuine in recorder.seen:
            for how, forms in changes.items():
                body = _rewritten(genuine.body, forms)
                if body is None:
                    continue
                reply = HttpResponse(status=genuine.status, headers=genuine.headers, body=body)
                try:
                    answer = stages.parse(operation, reply)
                except RefundError as exc:
                    self._transcript.error(exc)
                    continue
                self._transcript.result(answer)
                expect(
                    answer.status is not _SUCCEEDED
                    or (answer.amount is not None and answer.amount != asked),
                    "amount-from-gateway",
                    f"the reply to a refund of {asked}, with {how}, gave {answer.status} "
                    f"for {answer.amount}",
                )

    def test_refund_above_refundable_fails(self, run: SandboxRun) -> None:
        """More than the payment is FAILED (a decline), not UNKNOWN and not an exception:
        map the gateway's refusal in parse_response."""
        payment = self.seed(run)
        result = self.refund(run, payment, self.over())
        expect(result.status is _FAILED, "decline-is-failed", f"over-refund gave {_status(result)}")
        expect(
            not self.ledger_refunds(run, payment),
            "agrees-with-ledger",
            "the gateway refunded more than the payment",
        )

    def test_unknown_payment_fails(self, run: SandboxRun) -> None:
        """A payment the gateway does not know is FAILED."""
        payment = run.emulator.new_payment_ref("999999")
        result = self.refund(run, payment, self.partial())
        expect(
            result.status is _FAILED, "decline-is-failed", f"unknown payment gave {_status(result)}"
        )

    def test_refunds_per_payment_honoured(self, run: SandboxRun) -> None:
        """As many refunds per payment as declared succeed and add up; the next is
        FAILED at the gateway (or refused before sending), and beyond the payment's
        amount is FAILED."""
        caps = run.info.capabilities
        payment = self.seed(run)
        limit = caps.refunds_per_payment
        count = 3 if limit is None else limit
        each = self.share("0.2") if caps.partial_refunds and count > 1 else None
        amounts = [each] * count if each is not None else [self.money(self.payment_amount)]
        for number, amount in enumerate(amounts, 1):
            result = self.refund(run, payment, amount)
            expect(
                result.status is _SUCCEEDED,
                "capability-honoured",
                f"refund {number} of {limit or 'any number'} per payment: {_status(result)}",
            )
        if limit is not None:
            self.forget_requests(run)
            try:
                extra = self.refund(run, payment, self.share("0.1"))
            except ValidationError:
                pass
            else:
                expect(
                    extra.status is _FAILED,
                    "capability-honoured",
                    f"declares {limit} refund(s) per payment; "
                    f"refund {limit + 1} gave {_status(extra)}",
                )
        else:
            over = self.refund(run, payment, self.share("0.5"))
            expect(
                over.status is _FAILED,
                "decline-is-failed",
                f"refunds beyond the payment: {_status(over)}",
            )
        recorded = [r for r in self.ledger_refunds(run, payment) if r.status is not _FAILED]
        expect(
            len(recorded) == len(amounts),
            "agrees-with-ledger",
            f"{len(amounts)} refund(s) accepted, the gateway holds {len(recorded)}",
        )

    def _exact_amount(self, currency: str) -> Decimal:
        exponent = CURRENCY_EXPONENTS[currency]
        return Decimal("123.4567").quantize(Decimal(1).scaleb(-exponent), ROUND_DOWN)

    def test_amounts_are_exact_in_every_currency(self, run: SandboxRun) -> None:
        """In each declared currency (or, where any is taken, one with 0 and one with 3
        decimals besides the suite's), an amount with every decimal the currency has is
        recorded exactly; where the provider declares fewer ``wire_decimals``, an
        amount that needs more is refused before sending, never rounded. The refund's
        result and the gateway's callback about it report that amount in that currency
        (or none). A currency not declared is refused before sending."""
        caps = run.info.capabilities
        declared = caps.currencies
        currencies = (
            sorted(declared) if declared is not None else [self.currency, *_ANY_CURRENCY_SAMPLE]
        )
        currencies += [c for c in caps.wire_decimals if c != "*" and c not in currencies]
        for currency in currencies:
            self._check_currency(run, currency)
        if declared is not None:
            other = next(c for c in ("EUR", "CHF", "SGD", "GBP") if c not in declared)
            payment = self.seed(run, amount=Money("1000", other))
            self.forget_requests(run)
            with pytest.raises(ValidationError):
                self.refund(run, payment, Money("10", other))
            self._sent_nothing(run, f"{other} is not a declared currency", "capability-honoured")

    def _check_currency(self, run: SandboxRun, currency: str) -> None:
        payment = self.seed(run, amount=Money("1000", currency))
        asked = Money(self._exact_amount(currency), currency)
        wire = run.info.capabilities.decimals_for(currency)
        if wire < asked.exponent:
            self.forget_requests(run)
            try:
                result = self.refund(run, payment, asked)
            except ValidationError:
                self._sent_nothing(run, f"{asked} was refused", "amount-exact")
            else:
                records = self.ledger_refunds(run, payment)
                broken(
                    "amount-exact",
                    f"declares {wire} decimals for {currency}, yet {asked} was sent "
                    f"({_status(result)}; the gateway recorded {[str(r.amount) for r in records]})",
                )
            asked = Money(asked.amount.quantize(Decimal(1).scaleb(-wire), ROUND_DOWN), currency)
        try:
            result = self.refund(run, payment, asked, **self.notify_kwargs(run))
        except ValidationError as exc:
            broken("capability-honoured", f"{asked} refused before sending: {exc}")
        records = self.ledger_refunds(run, payment)
        expect(
            result.status is _SUCCEEDED and len(records) == 1,
            "amount-exact",
            f"refund of {asked}: {_status(result)}",
        )
        expect(
            records[0].amount == asked,
            "amount-exact",
            f"asked {asked}, the gateway recorded {records[0].amount}",
        )
        self.amount_agrees(f"the result of a refund of {asked}", result.amount, records[0])
        if run.info.capabilities.callbacks:
            # A callback read in an assumed currency shows in any other currency.
            note = self.verify(run, self.callback_for(run, records[0]))
            self.amount_agrees(f"the callback about a refund of {asked}", note.amount, records[0])

    def test_repeated_refund_id_never_refunds_twice(self, run: SandboxRun) -> None:
        """Where ``idempotent_refund_id`` is declared, the same refund id sent twice (once
        after an UNKNOWN, once after a success) moves money once: what the core relies
        on to resend after an UNKNOWN. (Elsewhere the journal stops a resend.)"""
        if not run.info.capabilities.idempotent_refund_id:
            pytest.skip("provider does not declare idempotent refund ids")
        payment = self.seed(run)
        refund_id = f"kit-repeat-{uuid.uuid4().hex[:12]}"
        with self.journal_free_client(run) as client:
            run.server.inject("*", Fault(status=503, body=b"", reach_app=True, times=1))
            first = self.refund(run, payment, self.partial(), client=client, refund_id=refund_id)
            expect(
                first.status is _UNKNOWN,
                "maybe-never-failed",
                f"a 503 after applying gave {_status(first)}",
            )
            again = self.refund(run, payment, self.partial(), client=client, refund_id=refund_id)
            third = self.refund(run, payment, self.partial(), client=client, refund_id=refund_id)
        for answer in (again, third):
            expect(
                answer.status in (_SUCCEEDED, _FAILED),
                "idempotent-refund-id",
                f"a resent refund id gave {_status(answer)}",
            )
        refunds = [r for r in self.ledger_refunds(run, payment) if r.status is not _FAILED]
        expect(
            len(refunds) == 1,
            "idempotent-refund-id",
            f"one refund id, sent three times: the gateway refunded {len(refunds)} times",
        )

    def test_idempotency_window_is_the_gateways(self, run: SandboxRun) -> None:
        """A declared ``idempotency_window`` is no longer than the gateway's own (as the
        emulator declares it): the journal resends an UNKNOWN refund while it believes
        the gateway still deduplicates, so a longer claim is a double refund."""
        caps = run.info.capabilities
        if not caps.idempotent_refund_id:
            pytest.skip("provider does not declare idempotent refund ids")
        truth = self.declared(run, run.emulator.idempotency_window)
        declared = caps.idempotency_window
        if truth is not None and (declared is None or declared > truth):
            claim = "for ever" if declared is None else f"for {declared:g} s"
            broken(
                "idempotent-refund-id",
                f"the plugin declares refund ids remembered {claim}, the gateway "
                f"forgets them after {truth:g} s",
            )

    def test_altered_signature_is_rejected(self, run: SandboxRun) -> None:
        """A request whose signature was changed after signing is refused by the
        emulator (FAILED) and moves no money: proof the signature is really checked."""
        run.client.register_plugin(_TamperSignature(self.tamper_request_signature))
        payment = self.seed(run)
        result = self.refund(run, payment, self.partial())
        expect(
            result.status is _FAILED, "request-signed", f"tampered request gave {_status(result)}"
        )
        expect(
            not self.ledger_refunds(run, payment),
            "request-signed",
            "a tampered request moved money",
        )

    def test_bad_input_is_refused_before_sending(self, run: SandboxRun) -> None:
        """Malformed input raises ValidationError and nothing reaches the gateway."""
        payment = self.seed(run)
        self.forget_requests(run)
        bad: list[dict[str, Any]] = [
            {"amount": self.partial(), "refund_id": "bad id with spaces"},
            {"amount": self.partial(), "notify_url": "not a url"},
            {"amount": 1.5},
            {"amount": self.partial(), "reason": "line\nbreak"},
        ]
        for kwargs in bad:
            try:
                self.refund(run, payment, **kwargs)
            except ValidationError:
                continue
            broken("refused-before-sending", f"refund({kwargs}) was not refused")
        self._sent_nothing(run, "every input was refused", "refused-before-sending")

    # -- capabilities --------------------------------------------------------------------

    def test_void_as_declared(self, run: SandboxRun) -> None:
        """Where void is declared, voiding a fresh payment is SUCCEEDED, the gateway
        records it, and a refund of the voided payment is FAILED; where it is not, a
        void is refused before sending."""
        payment = self.seed(run)
        self.forget_requests(run)
        if not run.info.capabilities.void:
            with pytest.raises(ValidationError):
                self.void(run, payment)
            self._sent_nothing(run, "void is not declared", "capability-honoured")
            return
        result = self.void(run, payment)
        expect(
            result.status is _SUCCEEDED,
            "capability-honoured",
            f"declares void; a void gave {_status(result)}",
        )
        expect(
            self.ledger_payment(run, payment).voided,
            "agrees-with-ledger",
            "void SUCCEEDED, the gateway did not void",
        )
        after = self.refund(run, payment, self.partial())
        expect(
            after.status is _FAILED,
            "decline-is-failed",
            f"refund of a voided payment: {_status(after)}",
        )

    def test_undeclared_operations_are_refused(self, run: SandboxRun) -> None:
        """A query or a callback the provider does not declare is refused before anything
        is sent or trusted."""
        caps = run.info.capabilities
        payment = self.seed(run)
        self.forget_requests(run)
        if not caps.query:
            with pytest.raises(ValidationError):
                self.query(run, "kit-no-query", payment)
        if not caps.callbacks:
            with pytest.raises(ValidationError):
                self.refund(run, payment, self.partial(), notify_url=run.notify_url)
            with pytest.raises(ValidationError):
                run.client.verify_callback(
                    self.provider, method="POST", path="/", headers={}, body=b"{}"
                )
        self._sent_nothing(run, "undeclared operations were refused", "capability-honoured")

    def test_notify_url_as_declared(self, run: SandboxRun) -> None:
        """Where the wire carries a notify URL (``notify_url`` declared), the one given
        goes on the wire and the gateway's callback arrives there and verifies. Where
        it does not, the callback arrives at the URL the merchant set at the gateway."""
        caps = run.info.capabilities
        if not caps.callbacks:
            pytest.skip("provider declares no callbacks")
        payment = self.seed(run)
        self.forget_requests(run)
        result = self.refund(run, payment, self.partial(), **self.notify_kwargs(run))
        if caps.notify_url:
            forms = {
                run.notify_url,
                quote_plus(run.notify_url),
                quote(run.notify_url, safe=""),
                run.notify_url.replace("/", "\\/"),
            }
            sent = [
                request.target + "\n" + request.body.decode("latin-1")
                for request in run.server.requests
            ]
            expect(
                any(form in text for form in forms for text in sent),
                "capability-honoured",
                "declares notify_url, but the URL given is nowhere in the request sent "
                "(declare notify_url=False if the gateway's wire has no place for it)",
            )
        expect(result.status is _SUCCEEDED, "refund-succeeds", f"refund: {_status(result)}")
        record = self.ledger_refunds(run, payment)[-1]
        note = self.delivered_note(run, record)
        self.agrees("the delivered callback", note.status, record.status, exact=True)

    def test_notify_url_the_wire_cannot_carry_is_refused(self, run: SandboxRun) -> None:
        """Where ``notify_url=False`` is declared (the refund request has no place for a
        notify URL), one given with a refund raises ValidationError naming
        ``notify_url`` and where the merchant sets the URL instead
        (``notify_url_setting``), before anything is sent: never dropped silently."""
        caps = run.info.capabilities
        if not caps.callbacks or caps.notify_url:
            pytest.skip("provider carries a notify URL with a refund")
        setting = caps.notify_url_setting
        expect(
            setting,
            "capability-honoured",
            "declares notify_url=False but no notify_url_setting: say where the merchant "
            "sets the callback URL",
        )
        payment = self.seed(run)
        self.forget_requests(run)
        try:
            self.refund(run, payment, self.partial(), notify_url=run.notify_url)
        except ValidationError as exc:
            expect(
                exc.field == "notify_url" and str(setting) in str(exc),
                "capability-honoured",
                f"the refusal names neither field notify_url nor {setting!r}: "
                f"field {exc.field!r}, {exc}",
            )
            self._sent_nothing(run, "a notify_url was refused", "capability-honoured")
            return
        broken(
            "capability-honoured",
            "declares notify_url=False, yet a refund with a notify_url was not refused",
        )
