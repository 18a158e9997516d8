"""What a callback names: nothing its signature leaves out (other headers, routing
headers, the query, unsigned body values) changes what a genuine callback says, and
another refund's genuine callback, delivered at a refund's own callback URL, never
names that refund."""

from __future__ import annotations

from collections.abc import Iterator

import attrs
import pytest

from ..errors import NotARefund, RefundError, SignatureError
from ..models import Callback
from ..sandbox import Fault, SandboxRun
from .base import report
from .callbacks import CallbackChecks, _parts
from .mutations import (
    body_kind,
    form_names,
    get_field,
    json_leaves,
    set_field,
    set_header,
    set_json_leaf,
)
from .rules import broken, expect

__all__ = ["CallbackIdentityChecks"]

#: Headers an unsigned route to an outcome is often read from; added with hostile
#: values besides changing every header the callback carries.
ROUTING_HEADERS = ("X-Action", "X-Event", "X-Event-Type", "X-Status", "X-Amount", "X-Refund-Id")
#: Values that mean something to someone's status mapping.
LOADED_VALUES = (
    "",
    "x",
    "0",
    "1",
    "2",
    "-1",
    "OK",
    "SUCCESS",
    "SUCCEEDED",
    "REFUNDED",
    "VOIDED",
    "FAILED",
    "PENDING",
    "order.refunded",
    "order.voided",
    "order.paid",
    "refund.succeeded",
    "refund.failed",
    "payment.succeeded",
    "99999.99",
)


class CallbackIdentityChecks(CallbackChecks):
    """The callback checks of what a genuine callback names and says, whatever
    unsigned data comes with it."""

    # -- unsigned data -------------------------------------------------------------------

    def _unsigned_changes(self, callback: Callback) -> Iterator[tuple[str, Callback]]:
        declared = {p.name.lower() for p in _parts(self._declared_parts) if p.where == "header"}
        fields = {p.name for p in _parts(self._declared_parts) if p.where == "field"}
        names = [n for n in callback.headers if n.lower() not in declared]
        names += [
            n for n in ROUTING_HEADERS if n not in callback.headers and n.lower() not in declared
        ]
        for name in names:
            yield f"header {name!r} removed", set_header(callback, name, None)
            for value in LOADED_VALUES:
                yield f"header {name!r} set to {value!r}", set_header(callback, name, value)
        separator = "&" if "?" in callback.path else "?"
        yield (
            "a query parameter added",
            attrs.evolve(callback, path=callback.path + separator + "status=OK"),
        )
        kind = body_kind(callback)
        if kind == "json":
            for path in json_leaves(callback):
                if path and path[0] not in fields:
                    yield (
                        f"JSON value {'.'.join(map(str, path))} changed",
                        set_json_leaf(callback, path),
                    )
        elif kind == "form":
            for name in form_names(callback):
                if name not in fields:
                    value = (get_field(callback, name) or "") + "7"
                    yield f"form field {name!r} changed", set_field(callback, name, value)

    def test_unsigned_data_never_settles(self, run: SandboxRun) -> None:
        """Changing anything of a genuine callback that its signature does not cover
        (every other header, added routing headers such as ``X-Action``, the query, any
        body value) gives a SignatureError, NotARefund (an unsigned header may route)
        or the very same status, amount, ids and payment: unsigned data never decides
        an outcome. Where the emulator declares query parameters the verifier checks
        (a tag binding the refund id), the same holds of the callback without them, as
        it arrives at a URL that carries none, when it verifies so."""
        callback, note, _ = self._genuine(run)
        variants = [("", callback, report(note))]
        bare = callback
        for part in _parts(self._declared_parts):
            if part.where == "query":
                bare = part.set(bare, None)
        untagged = self._outcome(run, bare) if bare != callback else None
        if untagged is not None and not isinstance(untagged, RefundError):
            variants.append(("without its declared query parameters, ", bare, untagged))
        for prefix, base, genuine in variants:
            for change, changed in self._unsigned_changes(base):
                how = prefix + change
                outcome = self._outcome(run, changed)
                if isinstance(outcome, (SignatureError, NotARefund)):
                    continue
                if isinstance(outcome, RefundError):
                    broken("callback-typed-errors", f"{how}: {type(outcome).__name__}: {outcome}")
                expect(
                    outcome == genuine,
                    "signed-data-only",
                    f"{how}: reported {outcome}, the same callback unchanged {genuine}",
                )

    # -- the refund a callback names ------------------------------------------------------

    def test_another_refunds_callback_never_names_this_one(self, run: SandboxRun) -> None:
        """Refunds A and B of one payment, of the same amount and currency: B's genuine
        callback, delivered at A's callback URL (A's notify URL with its own query),
        never names A, without a journal or with one, and never settles A in the
        journal. A's reply is lost and B is made by another client, so the journal
        holds neither refund's gateway id and only the callback can tie it to one: a
        plugin reading the refund id from a URL the gateway does not sign, even
        behind a tag of its own, must say so (``unsigned_tie``). Skipped where both
        callbacks arrive at the same URL (nothing in it names a refund) or the
        gateway makes no two refunds of a payment."""
        self._require_callbacks(run)
        caps = run.info.capabilities
        if not caps.partial_refunds or (caps.refunds_per_payment or 2) < 2:
            pytest.skip("the gateway makes no two refunds of one payment (declared)")
        # The kit delivers each callback itself: one sent by the emulator to A's URL
        # would tie A to its gateway id before the moved callback comes.
        run.emulator.send_callbacks = False
        payment = self.seed(run)
        amount = self.partial()
        run.server.inject("*", Fault(drop=True, times=1))
        mine = self.refund(run, payment, amount, **self.notify_kwargs(run))
        run.server.clear_faults()
        with self.journal_free_client(run) as other:
            theirs = self.refund(run, payment, amount, client=other, **self.notify_kwargs(run))
            records = self.ledger_refunds(run, payment)
            if len(records) < 2:
                pytest.skip("the emulator made no two refunds of one payment")
            at_mine = self.callback_for(run, records[-2]).path
            if at_mine == self.callback_for(run, records[-1]).path:
                pytest.skip("both refunds' callbacks arrive at one URL: it names no refund")
            moved = run.emulator.build_callback(records[-1], path=at_mine, at=run.emulator.clock())
            journal = run.client.journal
            before = journal.get(self.provider, mine.refund_id) if journal else None
            for how, client in (("without a journal", other), ("with a journal", None)):
                outcome = self._outcome(run, moved, client=client)
                if isinstance(outcome, RefundError):
                    continue
                expect(
                    outcome[2] in (None, theirs.refund_id),
                    "right-refund",
                    f"refund {theirs.refund_id!r}'s callback, delivered at refund "
                    f"{mine.refund_id!r}'s URL, names {outcome[2]!r} {how} (provider_refund_id "
                    f"{outcome[3]!r}): a refund id read from unsigned data (the URL), even "
                    "behind a tag, needs unsigned_tie=True on the notification",
                )
        after = journal.get(self.provider, mine.refund_id) if journal else None
        if before is not None and after is not None:
            expect(
                (after.state, after.provider_refund_id)
                == (before.state, before.provider_refund_id),
                "right-refund",
                f"refund {theirs.refund_id!r}'s callback, delivered at refund "
                f"{mine.refund_id!r}'s URL, moved the journalled refund from "
                f"{before.state.value} ({before.provider_refund_id!r}) to "
                f"{after.state.value} ({after.provider_refund_id!r})",
            )
