"""Callbacks: a genuine one verifies and agrees with the ledger; the parts the
gateway's signature lives in (as the emulator declares them) are forged, fuzzed and
mixed, and every result is a SignatureError or the same verified report; a genuine
event about something else is not a refund; stale and replayed callbacks are refused
where the gateway signs a time. What a callback names: :mod:`.callback_identity`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote_plus

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..client import RefundClient
from ..errors import NotARefund, PluginError, RefundError, SignatureError
from ..models import Callback, RefundNotification, RefundStatus
from ..sandbox import LedgerRefund, OutgoingCallback, SandboxRun, SignatureParts
from .base import KitBase, Report, report
from .mutations import (
    edited_value,
    field_names,
    flip,
    get_field,
    same_bytes_base64,
    set_field,
    set_header,
    set_query,
)
from .rules import broken, expect

__all__ = ["CallbackChecks"]

_SUCCEEDED, _PENDING = RefundStatus.SUCCEEDED, RefundStatus.PENDING

# Every provider's conformance class runs these same methods in one pytest process:
# hypothesis's differing-executors check would flag that, though each class is an
# independent run against its own emulator.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.differing_executors,
    ],
)


@attrs.frozen
class _Part:
    """One place a callback carries signature material."""

    where: str  # "header", "field" or "query"
    name: str
    signature: bool

    def get(self, callback: Callback) -> str | None:
        if self.where == "header":
            return callback.headers.get(self.name)
        if self.where == "field":
            return get_field(callback, self.name)
        query = callback.path.partition("?")[2]
        for pair in query.split("&"):
            key, _, value = pair.partition("=")
            if unquote_plus(key) == self.name:
                return unquote_plus(value)
        return None

    def set(self, callback: Callback, value: str | None) -> Callback:
        if self.where == "header":
            return set_header(callback, self.name, value)
        if self.where == "field":
            return set_field(callback, self.name, value)
        return set_query(callback, self.name, value)

    def __str__(self) -> str:
        return f"{self.where} {self.name!r}"


def _parts(declared: SignatureParts) -> list[_Part]:
    return [
        *(_Part("header", name, True) for name in declared.signature_headers),
        *(_Part("field", name, True) for name in declared.signature_fields),
        *(_Part("header", name, False) for name in declared.headers),
        *(_Part("field", name, False) for name in declared.fields),
        *(_Part("query", name, False) for name in declared.query),
    ]


def _weaker(mutated: Report, genuine: Report) -> bool:
    """``mutated`` says the same as ``genuine``, or less: ids, payment and amount equal or
    left out, the same status."""
    return mutated[0] is genuine[0] and all(
        m is None or m == g for m, g in zip(mutated[1:], genuine[1:], strict=True)
    )


class CallbackChecks(KitBase):
    """Callbacks, their signatures and what they may be trusted for."""

    # -- tamper hooks a plugin's conformance class may override ---------------------------

    def signature_parts(self, run: SandboxRun) -> SignatureParts:
        """Where the gateway's callbacks carry their signature: the emulator's
        declaration (rule ``emulator-declares`` when it has none)."""
        declared = self.declared(run, run.emulator.signature_parts)
        expect(
            declared.signature_headers or declared.signature_fields,
            "emulator-declares",
            "signature_parts() names no header or field holding the signature",
        )
        return declared

    def tamper_callback_signature(self, callback: Callback) -> Callback:
        """Corrupt a genuine callback's signature. The default changes the middle
        character of every part the emulator declares as holding the signature."""
        parts = [p for p in _parts(self._declared_parts) if p.signature]
        changed = callback
        for part in parts:
            value = part.get(changed)
            if value:
                changed = part.set(changed, flip(value, len(value) // 2))
        if changed == callback:
            pytest.fail("no declared signature part found in the callback")
        return changed

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

    # -- helpers -------------------------------------------------------------------------

    def _require_callbacks(self, run: SandboxRun) -> None:
        if not run.info.capabilities.callbacks:
            pytest.skip("provider declares no callbacks")

    def _genuine(self, run: SandboxRun) -> tuple[Callback, RefundNotification, LedgerRefund]:
        """A genuine callback about a pending refund where the gateway has them (so a
        status read from anything unsigned shows), else about a succeeded one; made
        once per check."""
        cached = self._cache.get("genuine")
        if cached is not None:
            return cached  # type: ignore[no-any-return]
        self._require_callbacks(run)
        self._declared_parts = self.signature_parts(run)
        outcome = _PENDING if _PENDING in self.outcomes(run) else _SUCCEEDED
        record = self.refunded(run, outcome=outcome)
        callback = self.callback_for(run, record)
        try:
            note = self.verify(run, callback)
        except RefundError as exc:
            broken(
                "callback-verifies", f"a genuine callback was refused: {type(exc).__name__}: {exc}"
            )
        self._cache["genuine"] = (callback, note, record)
        return callback, note, record

    def _outcome(
        self, run: SandboxRun, callback: Callback, *, client: RefundClient | None = None
    ) -> Report | RefundError:
        """The report a callback verifies to (by ``client``, the run's unless given), or
        the RefundError it raises; rule ``callback-typed-errors`` for any other
        exception."""
        try:
            return report(self.verify(run, callback, client=client))
        except RefundError as exc:
            if isinstance(exc, PluginError):
                cause = exc.__cause__
                broken(
                    "callback-typed-errors",
                    f"verify_callback raised {type(cause).__name__}: {cause} (on headers "
                    f"{dict(callback.headers)!r}, path {callback.path!r}, "
                    f"body {callback.body[:200]!r})",
                )
            return exc

    # -- genuine callbacks ---------------------------------------------------------------

    def test_genuine_callback_verifies(self, run: SandboxRun) -> None:
        """A callback the gateway signed about a succeeded refund verifies, names that
        refund, and reports its status and amount as the ledger has them."""
        self._require_callbacks(run)
        record = self.refunded(run)
        try:
            note = self.verify(run, self.callback_for(run, record))
        except RefundError as exc:
            broken(
                "callback-verifies", f"a genuine callback was refused: {type(exc).__name__}: {exc}"
            )
        expect(
            self.note_record(run, note) is record,
            "agrees-with-ledger",
            "the callback names another refund",
        )
        self.agrees("a genuine callback", note.status, record.status, exact=True)
        self.amount_agrees("a genuine callback", note.amount, record)

    def test_duplicate_callback_gives_the_same_answer(self, run: SandboxRun) -> None:
        """The same genuine callback verified twice reports the same refund the same
        way (or is refused the second time as a replay)."""
        callback, note, _ = self._genuine(run)
        again = self._outcome(run, callback)
        expect(
            again == report(note) or isinstance(again, SignatureError),
            "duplicate-same-answer",
            f"first {report(note)}, then {again!r}",
        )

    def _payment_callback(self, run: SandboxRun) -> Callback:
        """The gateway's genuine callback about a seeded payment itself (a sale), as the
        emulator declares it, for the run's receiver; the check is skipped where the
        gateway sends callbacks about refunds only."""
        self._require_callbacks(run)
        payment = self.seed(run)
        callback = self.declared(
            run, lambda: run.emulator.signed_payment_callback(payment, path=f"/{self.provider}")
        )
        if callback is None:
            pytest.skip("the gateway sends callbacks about refunds only (emulator's declaration)")
        return callback

    def test_non_refund_event_is_not_a_refund(self, run: SandboxRun) -> None:
        """A genuine callback about something other than a refund (a payment, as the
        emulator declares it) raises NotARefund, naming the event, once its signature
        verified."""
        outcome = self._outcome(run, self._payment_callback(run))
        if isinstance(outcome, NotARefund):
            expect(outcome.event, "not-a-refund", "NotARefund names no event")
            return
        if isinstance(outcome, RefundError):
            broken(
                "not-a-refund",
                f"a genuine callback was refused: {type(outcome).__name__}: {outcome}",
            )
        broken("not-a-refund", f"a genuine non-refund callback was reported as {outcome}")

    def test_genuine_callback_not_about_a_refund_is_acknowledged(self, run: SandboxRun) -> None:
        """Delivered to the callback app, a genuine callback about a payment is answered
        as the gateway expects for success (``callback_ack``: refusing it makes the
        gateway deliver it again and again) and is not handed to the application."""
        callback = self._payment_callback(run)
        delivery = run.emulator.sender.send_now(
            OutgoingCallback(
                url=run.receiver_server.base_url + callback.path,
                method=callback.method,
                headers=tuple(callback.headers.items()),
                body=callback.body,
            )
        )
        ack = run.info.callback_ack
        expect(
            (delivery.status, delivery.body) == (ack.status, ack.body),
            "not-a-refund",
            f"the callback app answered {delivery.status} {delivery.body[:200]!r}; the "
            f"gateway expects {ack.status} {ack.body!r}",
        )
        expect(
            not run.notifications,
            "not-a-refund",
            f"a payment callback was handed to the application: {run.notifications[:1]}",
        )

    # -- signatures ----------------------------------------------------------------------

    def test_tampered_callback_body_is_refused(self, run: SandboxRun) -> None:
        """Changing a signed callback's body raises SignatureError."""
        callback, _, _ = self._genuine(run)
        outcome = self._outcome(run, self.tamper_callback_body(callback))
        expect(
            isinstance(outcome, SignatureError),
            "callback-signature-checked",
            f"a changed body gave {outcome!r}",
        )

    def test_tampered_callback_signature_is_refused(self, run: SandboxRun) -> None:
        """Changing a callback's signature raises SignatureError."""
        callback, _, _ = self._genuine(run)
        outcome = self._outcome(run, self.tamper_callback_signature(callback))
        expect(
            isinstance(outcome, SignatureError),
            "callback-signature-checked",
            f"a changed signature gave {outcome!r}",
        )

    def _forgeries(self, callback: Callback) -> Iterator[tuple[str, Callback]]:
        for part in _parts(self._declared_parts):
            if not part.signature:
                continue
            value = part.get(callback)
            if value is None:
                continue
            edits: dict[str, str | None] = {
                "removed": None,
                "emptied": "",
                "changed in its first character": flip(value, 0),
                "changed in its middle": flip(value, len(value) // 2),
                "truncated to half": value[: len(value) // 2],
                "cut by one character": value[:-1],
                "doubled": value + value,
                "all zeros": "0" * len(value),
            }
            last = flip(value, len(value) - 1)
            if not same_bytes_base64(last, value):
                edits["changed in its last character"] = last
            for how, new in edits.items():
                yield f"the {part} {how}", part.set(callback, new)

    def test_forged_signatures_are_refused(self, run: SandboxRun) -> None:
        """Every declared signature part removed, emptied, changed at its start, middle
        or end, truncated, cut by one, doubled or zeroed raises SignatureError: a
        verifier that compares a prefix, skips an empty value or falls back to
        another part when one is missing fails here."""
        callback, _, _ = self._genuine(run)
        for how, forged in self._forgeries(callback):
            outcome = self._outcome(run, forged)
            expect(
                isinstance(outcome, SignatureError),
                "callback-signature-checked",
                f"{how}: {outcome!r}",
            )

    def test_signature_parts_fuzzed(self, run: SandboxRun) -> None:
        """Every declared signature part (signature, timestamp, nonce, key id, path tag),
        edited the ways real verifiers trip over (an extra ``v0=`` element, a dropped
        or repeated one, digits, non-ASCII, truncation), gives a SignatureError or the
        very same report, never another exception."""
        callback, note, _ = self._genuine(run)
        genuine = report(note)
        parts = _parts(self._declared_parts)

        @FUZZ
        @given(part=st.sampled_from(parts), data=st.data())
        def fuzz(part: _Part, data: st.DataObject) -> None:
            value = data.draw(edited_value(part.get(callback)), label="value")
            changed = part.set(callback, value)
            outcome = self._outcome(run, changed)
            if isinstance(outcome, SignatureError):
                return
            if isinstance(outcome, RefundError):
                broken(
                    "callback-typed-errors",
                    f"the {part} set to {value!r}: {type(outcome).__name__}: {outcome}",
                )
            same = _weaker(outcome, genuine) if part.where == "query" else outcome == genuine
            expect(
                same,
                "signed-data-only",
                f"the {part} set to {value!r} verified as {outcome}, the genuine one as {genuine}",
            )

        fuzz()

    # -- one reading of a signed text -----------------------------------------------------

    def _recut(self, callback: Callback) -> Iterator[tuple[str, Callback]]:
        """``callback`` with one top-level text field folded into another as ``&name=
        value``: a signed text that joins ``name=value`` pairs with ``&`` and escapes
        nothing (sorted or in body order) is the same for both, and so is the signature."""
        names = [n for n in field_names(callback) if get_field(callback, n) is not None]
        for into in names:
            for taken in names:
                if taken == into:
                    continue
                value = f"{get_field(callback, into)}&{taken}={get_field(callback, taken)}"
                changed = set_field(set_field(callback, taken, None), into, value)
                yield f"field {taken!r} folded into {into!r} as {value!r}", changed

    def test_recut_callback_reads_one_way(self, run: SandboxRun) -> None:
        """A genuine callback whose fields are re-cut as a ``name=value&...`` signed text
        cannot tell apart (one field taken into another's value, ``"0&type=SALE"``)
        raises SignatureError or reads exactly as the genuine one: the same report
        about a refund, NotARefund still about a payment. A signature over such a text
        cannot say where a value ends, so the plugin must."""
        callback, note, _ = self._genuine(run)
        genuine = report(note)
        for how, changed in self._recut(callback):
            outcome = self._outcome(run, changed)
            expect(
                isinstance(outcome, SignatureError) or outcome == genuine,
                "one-reading",
                f"a refund callback with {how} gave {outcome!r}, the genuine one {genuine}",
            )
        paid = self.seed(run)
        sale = self.declared(
            run, lambda: run.emulator.signed_payment_callback(paid, path=f"/{self.provider}")
        )
        if sale is None:
            return
        for how, changed in self._recut(sale):
            outcome = self._outcome(run, changed)
            expect(
                isinstance(outcome, (SignatureError, NotARefund)),
                "one-reading",
                f"a payment callback with {how} gave {outcome!r}",
            )

    # -- replays -------------------------------------------------------------------------

    def test_stale_and_mixed_callbacks_are_refused(self, run: SandboxRun) -> None:
        """Where callbacks carry a signed timestamp, one signed two hours ago or two hours
        ahead raises SignatureError, and so does a stale callback given any declared
        part of a fresh one (a timestamp not covered by the signature shows here)."""
        if not run.info.capabilities.callback_timestamps:
            pytest.skip("provider's callbacks carry no timestamp")
        self._genuine(run)
        record = self.refunded(run)
        fresh = self.callback_for(run, record)
        stale = self.callback_for(run, record, age=dt.timedelta(hours=2))
        future = self.callback_for(run, record, age=dt.timedelta(hours=-2))
        for how, callback in (("signed two hours ago", stale), ("signed two hours ahead", future)):
            outcome = self._outcome(run, callback)
            expect(
                isinstance(outcome, SignatureError),
                "replay-refused",
                f"a callback {how} gave {outcome!r}",
            )
        for part in _parts(self._declared_parts):
            value = part.get(fresh)
            if value is None or value == part.get(stale):
                continue
            for how, mixed in (
                (f"a stale callback with the fresh one's {part}", part.set(stale, value)),
                (f"a fresh callback with the stale one's {part}", part.set(fresh, part.get(stale))),
            ):
                outcome = self._outcome(run, mixed)
                expect(
                    isinstance(outcome, SignatureError), "replay-refused", f"{how} gave {outcome!r}"
                )

    # -- hostile input -------------------------------------------------------------------

    @FUZZ
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
        """verify_callback answers any bytes and headers with a SignatureError (or
        another RefundError) raised by the plugin itself, never another exception, and
        never accepts an unsigned, random callback."""
        self._require_callbacks(run)
        outcome = self._outcome(
            run, Callback(method="POST", path="/" + path, headers=headers, body=body)
        )
        expect(
            isinstance(outcome, RefundError),
            "callback-typed-errors",
            f"a random callback was accepted: {outcome}",
        )
        expect(
            not isinstance(outcome, NotARefund),
            "callback-typed-errors",
            f"a random, unsigned callback was taken for a genuine one: {outcome!r}",
        )

    def test_hostile_callback_variants_of_a_genuine_one(self, run: SandboxRun) -> None:
        """Truncated, emptied, doubled and header-less versions of a genuine callback
        are all refused with SignatureError."""
        callback, _, _ = self._genuine(run)
        variants: dict[str, Callable[[Callback], Any]] = {
            "body cut in half": lambda c: attrs.evolve(c, body=c.body[: len(c.body) // 2]),
            "body emptied": lambda c: attrs.evolve(c, body=b""),
            "body doubled": lambda c: attrs.evolve(c, body=c.body + c.body),
            "every header removed": lambda c: attrs.evolve(c, headers={}),
        }
        for how, change in variants.items():
            outcome = self._outcome(run, change(callback))
            expect(
                isinstance(outcome, SignatureError),
                "callback-signature-checked",
                f"{how}: {outcome!r}",
            )
