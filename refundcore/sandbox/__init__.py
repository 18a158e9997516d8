"""Gateway sandboxes: a loopback HTTP server with fault injection, callback delivery
and reception, the emulator contract plugins implement, :class:`SandboxRun`, which
wires one provider's emulator to a configured client, and the demo
(:mod:`refundcore.sandbox.demo`: ``refundcore demo`` and ``refundcore sandbox``).

Nothing here talks to a real gateway, and no key is stored: emulators generate their
credentials when they start.
"""

from __future__ import annotations

from .callbacks import (
    CallbackReceiver,
    CallbackSender,
    Delivery,
    OutgoingCallback,
    ReceivedCallback,
)
from .emulator import (
    Emulator,
    Incoming,
    Ledger,
    LedgerPayment,
    LedgerRefund,
    RefundDecision,
    Reply,
    utcnow,
)
from .run import SandboxRun, emulator_factory
from .server import Fault, RecordedRequest, SandboxServer, serve

__all__ = [
    "CallbackReceiver",
    "CallbackSender",
    "Delivery",
    "Emulator",
    "Fault",
    "Incoming",
    "Ledger",
    "LedgerPayment",
    "LedgerRefund",
    "OutgoingCallback",
    "ReceivedCallback",
    "RecordedRequest",
    "RefundDecision",
    "Reply",
    "SandboxRun",
    "SandboxServer",
    "emulator_factory",
    "serve",
    "utcnow",
]
