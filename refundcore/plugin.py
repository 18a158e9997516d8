"""Everything a provider plugin uses, from one import::

    from refundcore.plugin import (
        Capabilities, HttpRequest, ProviderConfig, ProviderInfo, RefundResult,
        RefundStatus, Secret, SignatureError, hookimpl, load_json,
    )

The hook marker; the value types a stage takes and returns; the errors a stage raises
(``ValidationError`` before sending, ``SignatureError`` for an untrustworthy callback,
``NotARefund`` for a genuine callback about something else); ``Money``; the config
base and secret types; and the helpers plugins otherwise each write again: JSON that
never goes through ``float`` and refuses repeated keys, exact form encoding, and the
timestamped-HMAC check of many webhooks. Nothing here imports ``cryptography`` until a
key is used.

The gateway emulator (``sandbox.py``) imports from :mod:`refundcore.sandbox`, and the
plugin's tests from :mod:`refundcore.testing`.
"""

from __future__ import annotations

from .config import ProviderConfig, Secret
from .crypto import (
    HmacSha256Key,
    PrivateKey,
    PublicKey,
    b64decode_strict,
    check_timestamp,
    constant_time_equals,
    hmac_sha256,
    hmac_sha256_hex,
    verify_timestamped_hmac,
)
from .errors import (
    ConfigError,
    NotARefund,
    OutcomeUnknown,
    RefundError,
    SignatureError,
    TransportError,
    ValidationError,
)
from .formencode import FORM_CONTENT_TYPE, form_decode, form_encode, form_fields
from .hookspecs import hookimpl
from .jsonutil import JsonNumber, dump_json, load_json
from .lookup import Lookup, LookupKey
from .models import (
    Callback,
    CallbackAck,
    Capabilities,
    Headers,
    HttpRequest,
    HttpResponse,
    Operation,
    PaymentRef,
    ProviderInfo,
    Refund,
    RefundNotification,
    RefundQuery,
    RefundResult,
    RefundStatus,
    Void,
    check_url,
)
from .money import CURRENCY_EXPONENTS, Money, currency_exponent

__all__ = [
    "CURRENCY_EXPONENTS",
    "FORM_CONTENT_TYPE",
    "Callback",
    "CallbackAck",
    "Capabilities",
    "ConfigError",
    "Headers",
    "HmacSha256Key",
    "HttpRequest",
    "HttpResponse",
    "JsonNumber",
    "Lookup",
    "LookupKey",
    "Money",
    "NotARefund",
    "Operation",
    "OutcomeUnknown",
    "PaymentRef",
    "PrivateKey",
    "ProviderConfig",
    "ProviderInfo",
    "PublicKey",
    "Refund",
    "RefundError",
    "RefundNotification",
    "RefundQuery",
    "RefundResult",
    "RefundStatus",
    "Secret",
    "SignatureError",
    "TransportError",
    "ValidationError",
    "Void",
    "b64decode_strict",
    "check_timestamp",
    "check_url",
    "constant_time_equals",
    "currency_exponent",
    "dump_json",
    "form_decode",
    "form_encode",
    "form_fields",
    "hmac_sha256",
    "hmac_sha256_hex",
    "hookimpl",
    "load_json",
    "verify_timestamped_hmac",
]
