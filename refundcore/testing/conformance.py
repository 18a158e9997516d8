"""``ProviderConformance``: every group of checks in one base class."""

from __future__ import annotations

from .callback_identity import CallbackIdentityChecks
from .hostile import HostileChecks
from .lookups import LookupChecks
from .outcomes import OutcomeChecks
from .refunds import RefundChecks

__all__ = ["ProviderConformance"]


class ProviderConformance(
    RefundChecks, OutcomeChecks, LookupChecks, CallbackIdentityChecks, HostileChecks
):
    """Base class of a provider's conformance tests. Set ``provider`` (the id); set
    ``plugin`` to a plugin object to test it without installing it; set ``currency``
    and ``payment_amount`` for the payments the checks seed.

    Each check drives the real client against the plugin's own gateway emulator over
    loopback sockets and compares what the plugin reports with the emulator's ledger.
    A failure names the rule broken (:data:`refundcore.testing.RULES`) and what was
    seen; the check's docstring says what to look at.
    """
