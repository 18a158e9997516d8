"""Gateway sandboxes: a loopback HTTP server with fault injection, callback delivery
and reception, the emulator contract plugins implement and the ledger an emulator
keeps, :class:`SandboxRun`, which wires one provider's emulator to a configured client,
the demo (:mod:`refundcore.sandbox.demo`: ``refundcore demo``) and the service
``refundcore sandbox`` runs (:mod:`refundcore.sandbox.service`).

Nothing here talks to a real gateway. Emulators generate their credentials when they
start; only ``refundcore sandbox --state-dir`` keeps them (see
:mod:`refundcore.sandbox.service`).

The names below load on first use: the command line reads
:mod:`refundcore.sandbox.scenarios` without paying for the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bridge import MerchantBridge
    from .callbacks import (
        CallbackReceiver,
        CallbackSender,
        Delivery,
        OutgoingCallback,
        ReceivedCallback,
    )
    from .emulator import Emulator, EmulatorUndeclared, Incoming, Reply, SignatureParts
    from .ledger import Ledger, LedgerPayment, LedgerRefund, RefundDecision, utcnow
    from .run import SandboxRun, emulator_factory
    from .server import Fault, RecordedRequest, SandboxServer, serve

_MODULES = {
    ".bridge": ("MerchantBridge",),
    ".callbacks": (
        "CallbackReceiver",
        "CallbackSender",
        "Delivery",
        "OutgoingCallback",
        "ReceivedCallback",
    ),
    ".emulator": ("Emulator", "EmulatorUndeclared", "Incoming", "Reply", "SignatureParts"),
    ".ledger": ("Ledger", "LedgerPayment", "LedgerRefund", "RefundDecision", "utcnow"),
    ".run": ("SandboxRun", "emulator_factory"),
    ".server": ("Fault", "RecordedRequest", "SandboxServer", "serve"),
}
_WHERE = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [
    "CallbackReceiver",
    "CallbackSender",
    "Delivery",
    "Emulator",
    "EmulatorUndeclared",
    "Fault",
    "Incoming",
    "Ledger",
    "LedgerPayment",
    "LedgerRefund",
    "MerchantBridge",
    "OutgoingCallback",
    "ReceivedCallback",
    "RecordedRequest",
    "RefundDecision",
    "Reply",
    "SandboxRun",
    "SandboxServer",
    "SignatureParts",
    "emulator_factory",
    "serve",
    "utcnow",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
