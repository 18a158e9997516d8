"""The conformance suite every provider plugin adopts.

In the plugin's tests::

    from refundcore.testing import ProviderConformance

    class TestAcmeConformance(ProviderConformance):
        provider = "acme"

Each check runs the real pipeline against the plugin's own gateway emulator over
loopback sockets. When one fails, its docstring says what a plugin author should look
at. Needs ``pytest`` and ``hypothesis`` (the ``testing`` extra: in a clone of refundcore,
``pip install -e '.[testing]'``).

Override :meth:`ProviderConformance.tamper_request_signature` or
:meth:`ProviderConformance.tamper_callback_signature` when the gateway carries its
signature somewhere other than a header whose name contains ``sign``.

Every check runs with :class:`~refundcore.RefundClient` and with
:class:`~refundcore.AsyncRefundClient` (behind :class:`AsyncAsSync`; skipped when httpx
is not installed): the same plugin hooks serve both.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, ClassVar

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..config import Secret
from ..crypto import PrivateKey
from ..errors import (
    ConfigError,
    NotARefund,
    PluginError,
    RefundError,
    SignatureError,
    ValidationError,
)
from ..hookspecs import hookimpl
from ..logs import record_fields
from ..models import (
    Callback,
    HttpRequest,
    HttpResponse,
    PaymentRef,
    Refund,
    RefundResult,
    RefundStatus,
)
from ..money import Money
from ..sandbox import Fault, OutgoingCallback, SandboxRun
from .clients import AsyncAsSync, sandbox_client

__all__ = ["AsyncAsSync", "ProviderConformance"]

# Every provider's conformance class runs these same methods in one pytest process:
# hypothesis's differing-executors check would flag that, though each class is an
# independent run against its own emulator.
_HOSTILE = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.differing_executors,
    ],
)


class _TamperSignature:
    """App plugin that corrupts the request after the provider signed it."""

    def __init__(self, tamper: Any) -> None:
        self._tamper = tamper

    @hookimpl(wrapper=True)
    def refundcore_sign_request(self, request: HttpRequest) -> Any:
        signed = yield
        return self._tamper(request, signed)


def _flip(text: str) -> str:
    if not text:
        return "x"
    last = text[-1]
    replacement = "A" if last != "A" else "B"
    if last.isdigit():
        replacement = "1" if last != "1" else "2"
    elif last.islower():
        replacement = "a" if last != "a" else "b"
    return text[:-1] + replacement


class ProviderConformance:
    """Base class of a provider's conformance tests. Set ``provider`` (the id); set
    ``plugin`` to a plugin object to test it without installing it."""

    provider: ClassVar[str] = ""
    plugin: ClassVar[object | None] = None
    #: Currency and amount of the payments seeded in the emulator.
    currency: ClassVar[str] = "HKD"
    payment_amount: ClassVar[str] = "100.00"
    #: Kept short so the timeout checks are quick.
    read_timeout: ClassVar[float] = 0.5

    # -- fixtures and helpers ----------------------------------------------------------

    @pytest.fixture(params=["sync", "async"])
    def run(self, request: pytest.FixtureRequest) -> Iterator[SandboxRun]:
        """The provider's emulator, served on loopback, with a client configured for it:
        a RefundClient, then an AsyncRefundClient."""
        assert self.provider, 'set `provider = "<id>"` on your conformance class'
        client = sandbox_client(request.param, entry_points=self.plugin is None)
        with SandboxRun(
            self.provider, plugin=self.plugin, read_timeout=self.read_timeout, client=client
        ) as run:
            yield run

    def money(self, amount: str | Decimal) -> Money:
        """An amount in the suite's currency."""
        return Money(Decimal(amount), self.currency)

    def seed(self, run: SandboxRun, **kwargs: Any) -> PaymentRef:
        """A fresh completed payment of ``payment_amount`` in the emulator."""
        return run.emulator.seed_payment(self.money(self.payment_amount), **kwargs)

    def partial(self) -> Money:
        """About 40% of the payment, exact in the currency."""
        full = self.money(self.payment_amount)
        return Money((full.amount * Decimal("0.4")).quantize(full.amount), self.currency)

    def over(self) -> Money:
        """One minor unit more than the payment."""
        full = self.money(self.payment_amount)
        return Money(full.amount + Decimal(1).scaleb(-full.exponent), self.currency)

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
            signed = signed.with_header(name, _flip(signed.headers[name]))
        return signed

    def tamper_callback_signature(self, callback: Callback) -> Callback:
        """Corrupt a genuine callback's signature. The default changes headers whose name
        contains ``sign``; override for signatures carried in the body."""
        names = [name for name in callback.headers if "sign" in name.lower()]
        if not names:
            pytest.fail("no signature header in the callback: override tamper_callback_signature()")
        headers = callback.headers
        for name in names:
            headers = headers.set(name, _flip(headers[name]))
        return attrs.evolve(callback, headers=headers)

    def tamper_callback_body(self, callback: Callback) -> Callback:
        """Change the callback's content while keeping its signature. The default swaps
        the amount's last digit, or flips a byte when no amount is found."""
        body = callback.body
        for marker in (b"amount", b"AMOUNT"):
            at = body.find(marker)
            if at >= 0:
                for index in range(at + len(marker), len(body)):
                    if body[index : index + 1].isdigit():
                        digit = b"7" if body[index : index + 1] != b"7" else b"3"
                        return attrs.evolve(callback, body=body[:index] + digit + body[index + 1 :])
        flipped = bytes([body[-1] ^ 0x01]) if body else b"x"
        return attrs.evolve(callback, body=body[:-1] + flipped)

    def _refund(
        self, run: SandboxRun, payment: PaymentRef, amount: Money, **kw: Any
    ) -> RefundResult:
        return run.client.refund(self.provider, payment=payment, amount=amount, **kw)

    def _notify_url(self, run: SandboxRun) -> str | None:
        """The receiver's URL to pass with a refund, or ``None`` where the provider's
        refund request cannot carry one (the sandbox then set it at the emulator)."""
        return run.notify_url if run.info.capabilities.notify_url else None

    def _verify(self, run: SandboxRun, callback: Callback) -> Any:
        return run.client.verify_callback(
            self.provider,
            method=callback.method,
            path=callback.path,
            headers=callback.headers,
            body=callback.body,
        )

    # -- refunds -----------------------------------------------------------------------

    def test_full_refund_succeeds(self, run: SandboxRun) -> None:
        """Refunding a whole payment must be SUCCEEDED with the gateway's refund id.
        If this fails, check the request body/URL the build stage makes and the
        signature; the result's message and error_code show what the emulator said."""
        payment = self.seed(run)
        result = self._refund(run, payment, self.money(self.payment_amount), reason="conformance")
        assert result.status is RefundStatus.SUCCEEDED, (
            f"full refund: {result.status} ({result.error_code}: {result.message})"
        )
        assert result.provider_refund_id, "parse_response must set provider_refund_id"
        assert result.refund_id and result.provider == self.provider

    def test_partial_refund_succeeds(self, run: SandboxRun) -> None:
        """A partial refund must be SUCCEEDED where the provider declares partial
        refunds; the amount must go on the wire with exactly the currency's decimals."""
        if not run.info.capabilities.partial_refunds:
            pytest.skip("provider declares no partial refunds")
        payment = self.seed(run)
        result = self._refund(run, payment, self.partial())
        assert result.status is RefundStatus.SUCCEEDED, f"{result.error_code}: {result.message}"
        if result.amount is not None:
            assert result.amount == self.partial(), "the reported amount must be the refunded one"

    def test_refund_above_refundable_fails(self, run: SandboxRun) -> None:
        """More than the payment must come back FAILED (a decline), not UNKNOWN and
        not an exception: map the gateway's refusal in parse_response."""
        payment = self.seed(run)
        result = self._refund(run, payment, self.over())
        assert result.status is RefundStatus.FAILED, f"over-refund gave {result.status}"

    def test_second_refund_obeys_provider_rules(self, run: SandboxRun) -> None:
        """Where the gateway allows one refund per payment, a second is FAILED; where it
        allows several, partial refunds add up and the one that exceeds is FAILED."""
        caps = run.info.capabilities
        payment = self.seed(run)
        first = self._refund(run, payment, self.partial())
        assert first.status is RefundStatus.SUCCEEDED, f"{first.error_code}: {first.message}"
        second = self._refund(run, payment, self.partial())
        if caps.refunds_per_payment == 1:
            assert second.status is RefundStatus.FAILED, "refund-once gateway accepted a second"
            return
        assert second.status is RefundStatus.SUCCEEDED, f"{second.error_code}: {second.message}"
        third = self._refund(run, payment, self.partial())
        assert third.status is RefundStatus.FAILED, "refunds beyond the payment must fail"

    def test_unknown_payment_fails(self, run: SandboxRun) -> None:
        """A payment the gateway does not know must be FAILED."""
        payment = run.emulator.new_payment_ref("999999")
        result = self._refund(run, payment, self.partial())
        assert result.status is RefundStatus.FAILED, f"unknown payment gave {result.status}"

    def test_query_after_refund_agrees(self, run: SandboxRun) -> None:
        """Querying a refund must report the same status and gateway id as the refund."""
        if not run.info.capabilities.query:
            pytest.skip("provider declares no query")
        payment = self.seed(run)
        refund = self._refund(run, payment, self.partial())
        assert refund.status is RefundStatus.SUCCEEDED
        queried = run.client.query(
            self.provider,
            refund_id=refund.refund_id,
            payment=payment,
            provider_refund_id=refund.provider_refund_id,
        )
        assert queried.status is RefundStatus.SUCCEEDED, f"{queried.error_code}: {queried.message}"
        assert queried.operation == "query"
        if queried.provider_refund_id is not None:
            assert queried.provider_refund_id == refund.provider_refund_id

    def test_repeated_refund_id_never_refunds_twice(self, run: SandboxRun) -> None:
        """Where the provider declares ``idempotent_refund_id``, sending the same refund
        id twice must not move money twice: the second answer repeats the first or is
        FAILED, and the ledger holds one refund. (Elsewhere the journal is what stops a
        resend.)"""
        if not run.info.capabilities.idempotent_refund_id:
            pytest.skip("provider does not deduplicate refund ids")
        payment = self.seed(run)
        first = self._refund(run, payment, self.partial(), refund_id="conf-repeat-1")
        second = self._refund(run, payment, self.partial(), refund_id="conf-repeat-1")
        assert first.status is RefundStatus.SUCCEEDED
        assert second.status in (RefundStatus.SUCCEEDED, RefundStatus.FAILED)
        found = run.emulator.ledger.find_payment(
            payment_id=payment.payment_id, merchant_reference=payment.merchant_reference
        )
        assert found is not None and len(found.refunds) == 1, "the gateway refunded twice"

    # -- faults ------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "fault",
        [
            Fault(delay=1.5),
            Fault(drop=True),
            Fault(status=502, body=b"<html>Bad Gateway</html>", reach_app=False),
            Fault(status=503, body=b"", reach_app=True),
            Fault(garbage=True),
            Fault(truncate=True),
        ],
        ids=["timeout", "dropped", "502", "503-after-processing", "garbage", "truncated"],
    )
    def test_uncertain_outcome_is_unknown(self, run: SandboxRun, fault: Fault) -> None:
        """A timeout, a dropped connection, a 5xx, or an unreadable or cut-short reply
        must give UNKNOWN, never FAILED: the refund may have gone through."""
        payment = self.seed(run)
        run.server.inject("*", fault)
        result = self._refund(run, payment, self.partial())
        assert result.status is RefundStatus.UNKNOWN, f"{fault} gave {result.status}"

    def test_altered_signature_is_rejected(self, run: SandboxRun) -> None:
        """A request whose signature was changed after signing must be refused by the
        emulator (FAILED) and move no money: proof the signature is really checked."""
        run.client.register_plugin(_TamperSignature(self.tamper_request_signature))
        payment = self.seed(run)
        result = self._refund(run, payment, self.partial())
        assert result.status is RefundStatus.FAILED, f"tampered request gave {result.status}"
        found = run.emulator.ledger.find_payment(
            payment_id=payment.payment_id, merchant_reference=payment.merchant_reference
        )
        assert found is not None and not found.refunds, "a tampered request moved money"

    def test_bad_input_is_refused_before_sending(self, run: SandboxRun) -> None:
        """Malformed input raises ValidationError and nothing reaches the gateway."""
        payment = self.seed(run)
        run.server.clear_requests()
        with pytest.raises(ValidationError):
            self._refund(run, payment, self.partial(), refund_id="bad id with spaces")
        with pytest.raises(ValidationError):
            self._refund(run, payment, self.partial(), notify_url="not a url")
        with pytest.raises(ValidationError):
            run.client.refund(self.provider, payment=payment, amount=1.5)  # type: ignore[arg-type]
        assert run.server.requests == [], "a refused input still reached the gateway"

    # -- callbacks -----------------------------------------------------------------------

    def _callback_ready(self, run: SandboxRun) -> str:
        if not run.info.capabilities.callbacks:
            pytest.skip("provider declares no callbacks")
        payment = self.seed(run)
        result = self._refund(run, payment, self.partial())
        assert result.status is RefundStatus.SUCCEEDED
        return result.refund_id

    def test_genuine_callback_verifies(self, run: SandboxRun) -> None:
        """A callback signed by the emulator must verify and name the refund."""
        refund_id = self._callback_ready(run)
        note = self._verify(run, run.emulator.signed_callback(refund_id, path="/hooks/cb?x=1"))
        assert note.status is RefundStatus.SUCCEEDED
        record = run.emulator.ledger.find_refund(refund_id)
        assert record is not None
        assert refund_id == note.refund_id or record.provider_refund_id == note.provider_refund_id

    def test_callback_delivered_to_notify_url(self, run: SandboxRun) -> None:
        """A refund with notify_url must lead the emulator to deliver a callback that
        refundcore.wsgi verifies and hands to the application."""
        if not run.info.capabilities.callbacks:
            pytest.skip("provider declares no callbacks")
        payment = self.seed(run)
        result = self._refund(run, payment, self.partial(), notify_url=self._notify_url(run))
        assert result.status is RefundStatus.SUCCEEDED
        notes = run.wait_for_notifications(1)
        assert notes[0].status is RefundStatus.SUCCEEDED

    def test_notify_url_the_wire_cannot_carry_is_refused(self, run: SandboxRun) -> None:
        """Where the provider declares ``notify_url=False`` (its refund request has no
        notify URL), passing one must raise ValidationError naming ``notify_url`` and
        where the merchant sets the URL instead, before anything is sent: never dropped
        silently."""
        caps = run.info.capabilities
        if not caps.callbacks or caps.notify_url:
            pytest.skip("provider carries a notify URL with a refund")
        assert caps.notify_url_setting, "say where the merchant sets the callback URL"
        payment = self.seed(run)
        run.server.clear_requests()
        with pytest.raises(ValidationError) as error:
            self._refund(run, payment, self.partial(), notify_url=run.notify_url)
        assert error.value.field == "notify_url"
        assert caps.notify_url_setting in str(error.value)
        assert run.server.requests == [], "a refused notify_url still reached the gateway"

    def test_genuine_callback_not_about_a_refund_is_acknowledged(self, run: SandboxRun) -> None:
        """A genuine callback about the payment itself (a sale) must raise NotARefund
        from verify_callback (not SignatureError, not a notification), and the WSGI app
        must answer it as the gateway expects for success without handing it to the
        application: refusing it makes the gateway deliver it again and again."""
        if not run.info.capabilities.callbacks:
            pytest.skip("provider declares no callbacks")
        payment = self.seed(run)
        path = f"/{self.provider}"
        callback = run.emulator.signed_payment_callback(payment, path=path)
        if callback is None:
            pytest.skip("the emulator sends no callback about a payment")
        with pytest.raises(NotARefund) as error:
            self._verify(run, callback)
        assert error.value.event, "NotARefund must name the event"
        delivery = run.emulator.sender.send_now(
            OutgoingCallback(
                url=run.receiver_server.base_url + path,
                method=callback.method,
                headers=tuple(callback.headers.items()),
                body=callback.body,
            )
        )
        ack = run.info.callback_ack
        assert (delivery.status, delivery.body) == (ack.status, ack.body)
        assert run.notifications == [], "a payment callback was handed over as a refund"

    def test_tampered_callback_body_is_refused(self, run: SandboxRun) -> None:
        """Changing a signed callback's body must raise SignatureError."""
        refund_id = self._callback_ready(run)
        genuine = run.emulator.signed_callback(refund_id, path="/hooks/cb")
        with pytest.raises(SignatureError):
            self._verify(run, self.tamper_callback_body(genuine))

    def test_tampered_callback_signature_is_refused(self, run: SandboxRun) -> None:
        """Changing a callback's signature must raise SignatureError."""
        refund_id = self._callback_ready(run)
        genuine = run.emulator.signed_callback(refund_id, path="/hooks/cb")
        with pytest.raises(SignatureError):
            self._verify(run, self.tamper_callback_signature(genuine))

    def test_stale_callback_is_refused(self, run: SandboxRun) -> None:
        """Where callbacks carry a signed timestamp, an old one must raise SignatureError
        (a replay)."""
        if not run.info.capabilities.callback_timestamps:
            pytest.skip("provider's callbacks carry no timestamp")
        import datetime as dt

        refund_id = self._callback_ready(run)
        stale = run.emulator.signed_callback(refund_id, age=dt.timedelta(hours=2))
        with pytest.raises(SignatureError):
            self._verify(run, stale)

    # -- hostile input -----------------------------------------------------------------

    @_HOSTILE
    @given(
        status=st.sampled_from([200, 201, 400, 401, 403, 404, 409, 500, 502, 503]),
        body=st.one_of(
            st.binary(max_size=300),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                lambda children: (
                    st.lists(children, max_size=4)
                    | st.dictionaries(st.text(max_size=12), children, max_size=5)
                ),
                max_leaves=12,
            ).map(lambda value: json.dumps(value).encode()),
        ),
    )
    def test_hostile_reply_never_crashes(self, run: SandboxRun, status: int, body: bytes) -> None:
        """parse_response must turn any bytes into a result (or a RefundError), never
        crash, never report SUCCEEDED for a body that is not even JSON, and map 5xx to
        UNKNOWN."""
        operation = Refund(
            refund_id="hostile-1", payment=PaymentRef(payment_id="1"), amount=self.partial()
        )
        hooks = run.client._registry.hooks(self.provider)
        try:
            result = hooks.parse(
                provider=run.info,
                config=run.client.config_for(self.provider),
                operation=operation,
                response=HttpResponse(status=status, body=body),
            )
        except RefundError:
            return
        assert isinstance(result, RefundResult)
        if status >= 500:
            assert result.status is RefundStatus.UNKNOWN
        try:
            json.loads(body)
        except ValueError:
            assert result.status is not RefundStatus.SUCCEEDED, "garbage read as success"

    @_HOSTILE
    @given(
        body=st.binary(max_size=400),
        headers=st.dictionaries(
            st.sampled_from(
                [
                    "Signature",
                    "sign",
                    "Credential",
                    "Nonce",
                    "X-Signature",
                    "X-Timestamp",
                    "Content-Type",
                    "X-Action",
                ]
            ),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
        ),
        path=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40),
    )
    def test_hostile_callback_only_raises_refund_errors(
        self, run: SandboxRun, body: bytes, headers: dict[str, str], path: str
    ) -> None:
        """verify_callback must answer any bytes and headers with a SignatureError (or
        another RefundError) raised by the plugin itself, never another exception."""
        if not run.info.capabilities.callbacks:
            pytest.skip("provider declares no callbacks")
        try:
            self._verify(run, Callback(method="POST", path="/" + path, headers=headers, body=body))
        except PluginError as exc:
            pytest.fail(f"verify_callback crashed on hostile input: {exc.__cause__!r}")
        except NotARefund:
            pytest.fail("an unsigned, random callback was taken for a genuine one")
        except RefundError:
            return
        pytest.fail("an unsigned, random callback was accepted")

    def test_hostile_callback_variants_of_a_genuine_one(self, run: SandboxRun) -> None:
        """Truncated, emptied and doubled versions of a genuine callback must all be
        refused with SignatureError."""
        refund_id = self._callback_ready(run)
        genuine = run.emulator.signed_callback(refund_id, path="/hooks/cb")
        variants = [
            attrs.evolve(genuine, body=genuine.body[: len(genuine.body) // 2]),
            attrs.evolve(genuine, body=b""),
            attrs.evolve(genuine, body=genuine.body + genuine.body),
            attrs.evolve(genuine, headers={}),
        ]
        for variant in variants:
            with pytest.raises(SignatureError):
                self._verify(run, variant)

    # -- secrets and config --------------------------------------------------------------

    def _secret_texts(self, run: SandboxRun) -> list[str]:
        config = run.client.config_for(self.provider)
        texts = []
        for field in attrs.fields(type(config)):
            value = getattr(config, field.name)
            if isinstance(value, Secret):
                texts.append(value.reveal())
            elif isinstance(value, PrivateKey):
                pem = value.to_pem()
                texts.append("".join(pem.splitlines()[1:3]))
        return [text for text in texts if len(text) >= 4]

    def test_no_secret_in_logs_reprs_or_raw(
        self, run: SandboxRun, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No secret may appear in a log record (its message or its fields, DEBUG
        included), a repr, ``raw``, or an error's text. Log ids and statuses, never
        credentials or signed material."""
        secrets = self._secret_texts(run)
        assert secrets, "the config declares no Secret/PrivateKey fields: type them"
        caplog.set_level(logging.DEBUG)
        payment = self.seed(run)
        result = self._refund(run, payment, self.partial(), notify_url=self._notify_url(run))
        texts = [repr(result), json.dumps(dict(result.raw), default=str)]
        texts.append(repr(run.client.config_for(self.provider)))
        texts.append(repr(run.client))
        if run.info.capabilities.query:
            queried = run.client.query(self.provider, refund_id=result.refund_id, payment=payment)
            texts += [repr(queried), json.dumps(dict(queried.raw), default=str)]
        if run.info.capabilities.callbacks:
            note = self._verify(run, run.emulator.signed_callback(result.refund_id))
            texts += [repr(note), json.dumps(dict(note.raw), default=str)]
        bad = dict(run.emulator.client_config(run.server.base_url))
        bad["no_such_setting"] = "x"
        with pytest.raises(ConfigError) as error:
            run.client.configure(self.provider, bad)
        texts.append(str(error.value))
        texts += [record.getMessage() for record in caplog.records]
        texts += [json.dumps(record_fields(record), default=str) for record in caplog.records]
        for secret in secrets:
            for text in texts:
                assert secret not in text, f"a secret leaked into: {text[:200]!r}"

    def test_config_errors_name_the_field(self, run: SandboxRun) -> None:
        """A missing field, a misspelt key and a wrongly typed value must each raise
        ConfigError naming the provider and the field."""
        good = dict(run.emulator.client_config(run.server.base_url))
        required = [
            field.name
            for field in attrs.fields(run.info.config_class)
            if field.default is attrs.NOTHING
        ]
        for name in required:
            settings = {k: v for k, v in good.items() if k != name}
            with pytest.raises(ConfigError, match=name) as error:
                run.client.configure(self.provider, settings)
            assert self.provider in str(error.value)
        with pytest.raises(ConfigError, match="read_timout"):
            run.client.configure(self.provider, {**good, "read_timout": 3})
        with pytest.raises(ConfigError, match="read_timeout"):
            run.client.configure(self.provider, {**good, "read_timeout": "soon"})
