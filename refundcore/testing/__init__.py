"""The conformance kit every provider plugin adopts, and helpers for its own tests.

In the plugin's tests::

    from refundcore.testing import ProviderConformance

    class TestAcmeConformance(ProviderConformance):
        provider = "acme"

Each check runs the real client against the plugin's own gateway emulator over
loopback sockets and holds the plugin to the gateway's truth, the emulator's ledger:
refunds, pending and declined outcomes, faults before and after the gateway applied a
refund, lookups among several refunds, every declared capability, callbacks forged,
fuzzed and replayed in the parts the emulator declares its signature lives in, and a
search for every configured secret in everything the run produced. A failing check
names the rule broken (:data:`RULES`) and what was seen.

The emulator declares what the kit needs (:meth:`Emulator.refund_outcomes`,
:meth:`Emulator.signature_parts`, :meth:`Emulator.signed_payment_callback`); a check that
needs a missing declaration fails saying so. Override
:meth:`ProviderConformance.tamper_request_signature` when the gateway carries its
request signature somewhere other than a header whose name contains ``sign``.

:class:`ProviderStages` calls one provider's stage hooks directly, for a plugin's own
tests of exact replies and callbacks. Needs ``pytest`` and ``hypothesis``
(``pip install refundcore[testing]``).

Every check runs with :class:`~refundcore.RefundClient` and with
:class:`~refundcore.AsyncRefundClient` (behind :class:`AsyncAsSync`; skipped when httpx
is not installed): the same plugin hooks serve both.

:func:`traceback_texts` is the kit's view of an exception as an error reporter that
records a traceback's local variables sees it (every frame's locals, over the chain of
causes and contexts): the secret search reads it for every RefundError a check provokes,
and a plugin's own tests may search it too.
"""

from __future__ import annotations

from .clients import AsyncAsSync
from .conformance import ProviderConformance
from .rules import RULES
from .stages import ProviderStages
from .transcript import exception_chain, traceback_texts

__all__ = [
    "RULES",
    "AsyncAsSync",
    "ProviderConformance",
    "ProviderStages",
    "exception_chain",
    "traceback_texts",
]
