"""refundcore: issue refunds through payment gateways.

A small core that knows no gateway, and one installable plugin per gateway::

    import refundcore

    client = refundcore.RefundClient.from_file("refundcore.toml")
    result = client.refund(
        "wonder",
        payment=refundcore.PaymentRef(payment_id="ORD-1001"),
        amount=refundcore.Money("10.00", "HKD"),
        reason="damaged",
    )
    if result.status is refundcore.RefundStatus.UNKNOWN:
        ...  # query before trying again

Names are imported on first use, so ``import refundcore`` stays cheap. ``__version__``
is the installed distribution's version: ``pyproject.toml`` is the one place it is written.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "RefundClient": "client",
    "AsyncRefundClient": "async_client",
    "Money": "money",
    "PaymentRef": "models",
    "Refund": "models",
    "RefundQuery": "models",
    "Void": "models",
    "RefundResult": "models",
    "RefundStatus": "status",
    "RefundNotification": "models",
    "ResultSource": "models",
    "Callback": "models",
    "CallbackAck": "models",
    "CallbackVerdict": "status",
    "Capabilities": "models",
    "Headers": "models",
    "HttpRequest": "models",
    "HttpResponse": "models",
    "Lookup": "lookup",
    "LookupKey": "lookup",
    "ProviderInfo": "models",
    "ProviderConfig": "config",
    "Secret": "config",
    "PrivateKey": "crypto",
    "PublicKey": "crypto",
    "hookimpl": "hookspecs",
    "hookspec": "hookspecs",
    "RefundError": "errors",
    "ConfigError": "errors",
    "ValidationError": "errors",
    "ProviderNotInstalled": "errors",
    "PluginLoadError": "errors",
    "PluginError": "errors",
    "SignatureError": "errors",
    "NotARefund": "errors",
    "TransportError": "errors",
    "OutcomeUnknown": "errors",
    "JournalError": "errors",
    "IdempotencyConflict": "errors",
}

__all__ = [
    "AsyncRefundClient",
    "Callback",
    "CallbackAck",
    "CallbackVerdict",
    "Capabilities",
    "ConfigError",
    "Headers",
    "HttpRequest",
    "HttpResponse",
    "IdempotencyConflict",
    "JournalError",
    "Lookup",
    "LookupKey",
    "Money",
    "NotARefund",
    "OutcomeUnknown",
    "PaymentRef",
    "PluginError",
    "PluginLoadError",
    "PrivateKey",
    "ProviderConfig",
    "ProviderInfo",
    "ProviderNotInstalled",
    "PublicKey",
    "Refund",
    "RefundClient",
    "RefundError",
    "RefundNotification",
    "RefundQuery",
    "RefundResult",
    "RefundStatus",
    "ResultSource",
    "Secret",
    "SignatureError",
    "TransportError",
    "ValidationError",
    "Void",
    "__version__",
    "hookimpl",
    "hookspec",
]

if TYPE_CHECKING:
    __version__: str

    from .async_client import AsyncRefundClient
    from .client import RefundClient
    from .config import ProviderConfig, Secret
    from .crypto import PrivateKey, PublicKey
    from .errors import (
        ConfigError,
        IdempotencyConflict,
        JournalError,
        NotARefund,
        OutcomeUnknown,
        PluginError,
        PluginLoadError,
        ProviderNotInstalled,
        RefundError,
        SignatureError,
        TransportError,
        ValidationError,
    )
    from .hookspecs import hookimpl, hookspec
    from .lookup import Lookup, LookupKey
    from .models import (
        Callback,
        CallbackAck,
        Capabilities,
        Headers,
        HttpRequest,
        HttpResponse,
        PaymentRef,
        ProviderInfo,
        Refund,
        RefundNotification,
        RefundQuery,
        RefundResult,
        ResultSource,
        Void,
    )
    from .money import Money
    from .status import CallbackVerdict, RefundStatus


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # Read on first use, like every other name: importlib.metadata costs milliseconds.
        from importlib.metadata import version

        globals()[name] = value = version("refundcore")
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'refundcore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
