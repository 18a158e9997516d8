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
"""

from __future__ import annotations

from .conformance import ProviderConformance
from .rules import RULES
from .stages import ProviderStages

__all__ = ["RULES", "ProviderConformance", "ProviderStages"]
