"""refundcore provider plugin for Wonder (wonder.today, Hong Kong).

Everything this provider does is in this module: its config, how a refund or a query
becomes a signed request, how a reply becomes a result, and how a webhook is verified.
The gateway emulator used by the sandbox and the tests is in ``sandbox.py``.

Protocol sources: Wonder's developer pages (authentication, webhooks, API reference 13
and 15); the signature follows Wonder's official PHP SDK (``generateSignatureMessage`` /
``sign``). Choices the sources leave open are marked **ASSUMPTION** and each lives in
one small function or config option below; PROTOCOL.md beside this package lists them
with their sources.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
import string
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import attrs

from refundcore import (
    Capabilities,
    ConfigError,
    HttpRequest,
    HttpResponse,
    Lookup,
    LookupKey,
    NotARefund,
    ProviderConfig,
    ProviderInfo,
    RefundNotification,
    RefundResult,
    RefundStatus,
    SignatureError,
    ValidationError,
    hookimpl,
)
from refundcore.crypto import PrivateKey, PublicKey, hmac_sha256, hmac_sha256_hex
from refundcore.models import (
    Callback,
    CallbackAck,
    Operation,
    PaymentRef,
    Refund,
    RefundQuery,
)
from refundcore.money import Money

__all__ = [
    "ALGORITHM",
    "CHECK_PATH",
    "CREDENTIAL_WINDOW",
    "LANGUAGES",
    "REFUND_PATH",
    "WebhookKey",
    "WonderConfig",
    "credential",
    "find_refund_transaction",
    "lookup_outcome",
    "new_nonce",
    "pre_sign_string",
    "query_body",
    "refund_body",
    "refund_fields",
    "refund_request_id",
    "refund_transaction_status",
    "reply_request_id_problem",
    "request_time",
    "signature_message",
    "verify_wonder_signature",
    "webhook_key_pem",
    "webhook_refund",
    "wire_amount",
    "wonder_signature",
]

PROVIDER_ID = "wonder"
#: The third part of every ``Credential`` header, and the HMAC chain's second message.
ALGORITHM = "Wonder-RSA-SHA256"
REFUND_PATH = "/svc/payment/api/v1/openapi/orders/refund"
CHECK_PATH = "/svc/payment/api/v1/openapi/orders/check"
#: Wonder rejects a request_time further than this from its clock; webhooks get the
#: same treatment here (a replayed webhook older than this is refused).
CREDENTIAL_WINDOW = dt.timedelta(minutes=30)
#: Values Wonder takes in ``x-i18n-lang``.
LANGUAGES = ("en", "zh-HK", "zh-CN")

_NONCE_ALPHABET = string.ascii_letters + string.digits
_NONCE_LENGTH = 16
_REQUEST_TIME = re.compile(r"[0-9]{14}\Z")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}\Z")
_APP_ID = re.compile(r"[!-.0-~]{1,128}\Z")  # printable ASCII, no space, no "/"
_AMOUNT_TEXT = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,8})?\Z")
_CENT = Decimal("0.01")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+\Z")
_PEM_PUBLIC = "-----BEGIN PUBLIC KEY-----"


# -- configuration ---------------------------------------------------------------------


def _check_app_id(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    # The app id is the first part of "app_id/time/algorithm": a "/" would shift the parts.
    if not _APP_ID.match(value):
        raise ConfigError(
            "must be 1 to 128 printable ASCII characters without spaces or '/' "
            "(the app id Wonder issued, like d900da8b-6e16-4a85-8a66-05d29ac53f24)",
            field=attribute.name,
        )


def _check_language(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and value not in LANGUAGES:
        raise ConfigError(f"{value!r} is not one of {', '.join(LANGUAGES)}", field=attribute.name)


def webhook_key_pem(text: str) -> str:
    """ASSUMPTION (source: Wonder's production WooCommerce plugin; the API pages say
    only "PEM"): the webhook public key as PEM text, from any of the forms Wonder's own
    plugin accepts, tried in its order:

    1. PEM (any ``-----BEGIN …-----`` block) as it is;
    2. base64 of a PEM text (what copying the key out of some consoles gives);
    3. hex of the DER SubjectPublicKeyInfo (an even number of hex digits);
    4. bare base64 of the DER (whitespace ignored), wrapped as a ``PUBLIC KEY`` PEM.

    A hex text is also valid base64, which is why a base64 text is taken as a PEM only
    when it decodes to one. ``ValueError`` for empty text.
    """
    key = text.strip()
    if not key:
        raise ValueError("the webhook public key is empty")
    if "-----BEGIN " in key:
        return key
    compact = "".join(key.split())
    try:
        decoded = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if b"-----BEGIN " in decoded:
        return decoded.decode("ascii", "replace").strip()
    if _HEX.match(compact):
        compact = base64.b64encode(bytes.fromhex(compact)).decode("ascii")
    lines = "\n".join(compact[i : i + 64] for i in range(0, len(compact), 64))
    return f"{_PEM_PUBLIC}\n{lines}\n-----END PUBLIC KEY-----\n"


class WebhookKey:
    """Wonder's webhook public key (``WonderConfig.webhook_public_key``), read from any
    form :func:`webhook_key_pem` takes. ``public_key`` verifies the signatures."""

    __slots__ = ("public_key",)

    def __init__(self, public_key: PublicKey) -> None:
        self.public_key = public_key

    def __repr__(self) -> str:
        return "WebhookKey(RSA)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WebhookKey) and self.public_key == other.public_key

    __hash__ = None  # type: ignore[assignment]


def _webhook_key(value: object) -> WebhookKey:
    if isinstance(value, WebhookKey):
        return value
    if isinstance(value, PublicKey):
        return WebhookKey(value)
    if not isinstance(value, str):
        raise ConfigError(
            f"expected the key as text, got {type(value).__name__}", field="webhook_public_key"
        )
    try:
        return WebhookKey(PublicKey.from_pem(webhook_key_pem(value)))
    except ValueError as exc:
        raise ConfigError(
            f"{exc} (give PEM, base64 of the PEM, base64 DER or hex DER)",
            field="webhook_public_key",
        ) from None


@attrs.frozen(kw_only=True)
class WonderConfig(ProviderConfig):
    """Settings for Wonder.

    ``private_key`` signs requests (Wonder holds its public half, uploaded in the
    portal); ``webhook_public_key`` is Wonder's key for webhooks, shown once when the
    app id is created (PEM, base64 of the PEM, base64 DER or hex DER: see
    :func:`webhook_key_pem`). Both are parsed once, when the config is loaded.
    """

    app_id: str = attrs.field(validator=_check_app_id)
    private_key: PrivateKey
    # Its own converter reads the raw text: the forms Wonder's plugin takes go beyond
    # the PEM the core's key type reads.
    webhook_public_key: WebhookKey = attrs.field(converter=_webhook_key)
    #: Sent as ``x-i18n-lang``: the language of Wonder's messages.
    language: str | None = attrs.field(default=None, validator=_check_language)


# -- signing -----------------------------------------------------------------------------


def pre_sign_string(method: str, uri: str, body: bytes) -> bytes:
    """``METHOD\\nURI[\\nBODY]``: what Wonder's SDK HMACs. ``uri`` is the path plus
    ``?query`` exactly as sent; the body is left out (with its newline) when empty."""
    pre = method.upper().encode("utf-8") + b"\n" + uri.encode("utf-8")
    return pre + b"\n" + body if body else pre


def signature_message(method: str, uri: str, body: bytes, nonce: str, request_time: str) -> str:
    """The 64 lowercase hex characters Wonder signs with RSA.

    k1 = HMAC-SHA256(key=nonce, msg=request_time); k2 = HMAC-SHA256(key=k1,
    msg="Wonder-RSA-SHA256"); result = hex(HMAC-SHA256(key=k2, msg=pre-sign string)).
    """
    k1 = hmac_sha256(nonce.encode("utf-8"), request_time.encode("utf-8"))
    k2 = hmac_sha256(k1, ALGORITHM.encode("ascii"))
    return hmac_sha256_hex(k2, pre_sign_string(method, uri, body))


def wonder_signature(
    method: str,
    uri: str,
    body: bytes,
    nonce: str,
    request_time: str,
    private_key: PrivateKey,
) -> str:
    """The ``Signature`` header: base64 of RSASSA-PKCS1-v1_5 SHA-256 over the ASCII
    bytes of :func:`signature_message`. Deterministic for fixed inputs."""
    message = signature_message(method, uri, body, nonce, request_time)
    return base64.b64encode(private_key.sign_sha256(message.encode("ascii"))).decode("ascii")


def verify_wonder_signature(
    method: str,
    uri: str,
    body: bytes,
    nonce: str,
    request_time: str,
    signature: str,
    public_key: PublicKey,
) -> bool:
    """True when ``signature`` (base64) is Wonder's signature of this request."""
    try:
        raw = base64.b64decode(signature.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeError):
        return False
    message = signature_message(method, uri, body, nonce, request_time)
    return public_key.verify_sha256(raw, message.encode("ascii"))


def request_time(now: dt.datetime) -> str:
    """``yyyymmddHHMMSS`` in UTC, as the ``Credential`` header carries it."""
    return now.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%S")


def credential(app_id: str, time_text: str) -> str:
    """The ``Credential`` header: ``<app_id>/<request_time>/Wonder-RSA-SHA256``."""
    return f"{app_id}/{time_text}/{ALGORITHM}"


def new_nonce() -> str:
    """16 random alphanumerics from the OS's CSPRNG."""
    return "".join(secrets.choice(_NONCE_ALPHABET) for _ in range(_NONCE_LENGTH))


def _utcnow() -> dt.datetime:
    # One seam for the clock, so tests can move it.
    return dt.datetime.now(dt.timezone.utc)


# -- building requests ---------------------------------------------------------------------


def wire_amount(amount: Money) -> str:
    """ASSUMPTION (source: Wonder's production plugin, which writes
    ``number_format($amount, 2)``): the amount is a decimal string with two decimals
    (``"10.00"``, JPY ``"17.00"``). An amount that needs more cannot be sent."""
    try:
        cents = amount.amount.quantize(_CENT)
    except InvalidOperation:
        raise ValidationError(f"{amount} cannot be sent", field="amount") from None
    if cents != amount.amount:
        raise ValidationError(
            f"{amount} has more than the two decimals Wonder takes", field="amount"
        )
    return f"{cents:f}"


def refund_fields(amount: Money, reason: str | None) -> dict[str, str]:
    """ASSUMPTION, where Wonder's sources disagree: the ``refund`` object sent.

    The API page (reference 15) shows ``amount`` and ``note``; Wonder's production
    WooCommerce plugin sends ``amount``, ``currency`` and ``reason`` and never
    ``note``. Both are sent: ``amount`` (:func:`wire_amount`), ``currency`` (the
    amount's), and the merchant's reason in both ``reason`` and ``note`` (``""`` when
    there is none). Nothing of ours rides in the free text: a refund is found again
    only through what the gateway returns (see :func:`find_refund_transaction`)."""
    text = reason or ""
    return {
        "amount": wire_amount(amount),
        "currency": amount.currency,
        "reason": text,
        "note": text,
    }


def refund_request_id(refund_id: str) -> str:
    """ASSUMPTION: the ``X-Request-ID`` of a refund is its refund id, so a resend of the
    same refund carries the same id (the sandbox emulator refuses to refund twice under
    one request id; whether the live gateway does is not documented, hence
    ``idempotent_refund_id=False``). Queries get a fresh uuid4 each."""
    return refund_id


def reply_request_id_problem(refund_id: str, response: HttpResponse) -> str | None:
    """Why a refund's reply cannot be about that refund (``None`` when it can be).

    ASSUMPTION (our decision; Wonder documents no reply headers): a reply that echoes
    an ``X-Request-ID`` answers the request that carried it, so an echo of another id
    means the reply belongs to another request; a reply without one is taken as ours.
    """
    echoed = response.headers.get("X-Request-ID")
    if echoed is None or echoed.strip() == refund_request_id(refund_id):
        return None
    return "the reply echoes another X-Request-ID: it answers another request"


def _check_uuid(value: str, field: str) -> None:
    if not _UUID.match(value):
        raise ValidationError(
            f"{value[:40]!r} is not a Wonder transaction uuid "
            "(like 0f8fad5b-d9cb-469f-a165-70867728950e)",
            field=field,
        )


def _order_keys(payment: PaymentRef) -> dict[str, str]:
    keys = {}
    if payment.payment_id is not None:
        keys["number"] = payment.payment_id
    if payment.merchant_reference is not None:
        keys["reference_number"] = payment.merchant_reference
    if not keys:
        raise ValidationError(
            "Wonder needs the order: give payment_id (order number) and/or "
            "merchant_reference (order reference_number)",
            field="payment",
        )
    return keys


def _json_bytes(data: Mapping[str, Any]) -> bytes:
    # Serialised once, compact, ASCII only: these exact bytes are signed and sent.
    return json.dumps(data, separators=(",", ":")).encode("ascii")


def refund_body(operation: Refund) -> bytes:
    """The refund request body. Needs the sale transaction's uuid and at least one of
    the order number / reference number; identifiers not given are left out."""
    payment = operation.payment
    if payment.transaction_id is None:
        raise ValidationError(
            "Wonder refunds a transaction: give the sale transaction's uuid",
            field="payment.transaction_id",
        )
    _check_uuid(payment.transaction_id, "payment.transaction_id")
    order: dict[str, str] = _order_keys(payment)
    if operation.notify_url is not None:
        # ASSUMPTION: the refund API has no webhook URL; Wonder posts webhooks to the
        # order's notify_url. One given here is sent as the order's, and the live
        # gateway may ignore it: register the URL with Wonder as well.
        order["notify_url"] = operation.notify_url
    return _json_bytes(
        {
            "order": order,
            "transaction": {"uuid": payment.transaction_id},
            "refund": refund_fields(operation.amount, operation.reason),
        }
    )


def query_body(operation: RefundQuery) -> bytes:
    """The order-check body: ``{"order": {"number"?, "reference_number"?}}``."""
    if operation.payment is None:
        raise ValidationError(
            "Wonder queries the order: give the payment the refund belongs to",
            field="payment",
        )
    if operation.payment.transaction_id is not None:
        _check_uuid(operation.payment.transaction_id, "payment.transaction_id")
    return _json_bytes({"order": _order_keys(operation.payment)})


@hookimpl
def refundcore_register_providers(register: Any) -> None:
    """Register Wonder."""
    register(
        ProviderInfo(
            id=PROVIDER_ID,
            name="Wonder",
            config_class=WonderConfig,
            capabilities=Capabilities(
                partial_refunds=True,
                refunds_per_payment=None,
                query=True,
                void=False,
                callbacks=True,
                currencies=None,
                idempotent_refund_id=False,
                callback_timestamps=True,
                # Found again only by the refund transaction's uuid, which a lost reply
                # took with it; not finding it proves nothing (lookup_outcome).
                lookup=Lookup(
                    by=LookupKey.PROVIDER_REFUND_ID,
                    absence_authoritative=False,
                    settle_delay=60.0,
                ),
                # See wire_amount: two decimals, whatever the currency.
                wire_decimals={"*": 2},
            ),
            environments={
                "sandbox": "https://gateway-stg.wonder.today",
                "production": "https://gateway.wonder.today",
            },
            sandbox="refundcore_wonder.sandbox:WonderEmulator",
            # Wonder retries on 5xx and network errors; any 2xx is taken.
            callback_ack=CallbackAck(200, "text/plain; charset=utf-8", b"OK"),
            docs_url="https://developer.wonder.today",
        )
    )


@hookimpl
def refundcore_build_request(config: WonderConfig, operation: Operation) -> HttpRequest:
    """A refund or an order check, unsigned."""
    if isinstance(operation, Refund):
        path, body = REFUND_PATH, refund_body(operation)
        request_id = refund_request_id(operation.refund_id)
    elif isinstance(operation, RefundQuery):
        path, body = CHECK_PATH, query_body(operation)
        request_id = str(uuid.uuid4())
    else:
        raise ValidationError(f"Wonder does not take a {operation.kind} here", field="operation")
    headers = [("Content-Type", "application/json"), ("X-Request-ID", request_id)]
    if config.language is not None:
        headers.append(("x-i18n-lang", config.language))
    return HttpRequest("POST", f"{config.base_url}{path}", headers=headers, body=body)


@hookimpl
def refundcore_sign_request(config: WonderConfig, request: HttpRequest) -> HttpRequest:
    """Add ``Credential``, ``Nonce`` and ``Signature`` (one RSA operation)."""
    time_text = request_time(_utcnow())
    nonce = new_nonce()
    signature = wonder_signature(
        request.method, request.path, request.body, nonce, time_text, config.private_key
    )
    return request.with_headers(
        {
            "Credential": credential(config.app_id, time_text),
            "Nonce": nonce,
            "Signature": signature,
        }
    )


# -- reading replies ---------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# Decoders are made once: ``json.loads`` with options builds a new one on every call.
_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)


def _load_json(body: bytes) -> Any:
    """JSON with decimals as Decimal (never float); ``ValueError`` if unreadable."""
    try:
        # Decoded as json.loads decodes bytes (UTF-8, -16 or -32, told by the first bytes).
        return _JSON.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise ValueError("not JSON") from exc


def _text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, Decimal)):
        text = str(value)
        return text[:500] if text else None
    return None


@attrs.frozen
class _Envelope:
    ok: bool
    code: str | None
    message: str | None
    order: Mapping[str, Any] | None


def _envelope(data: Mapping[str, Any]) -> _Envelope:
    """Read either envelope: ``{error_code, error_message, data}`` (developer pages) or
    ``{code, message, data}`` (newer pages). ``code`` 200 is success, as the official
    plugins take it; ``error_code`` ``"0"``, ``""``, null or absent is success."""
    code: str | None = None
    ok = True
    if "code" in data:
        raw_code = data["code"]
        if isinstance(raw_code, bool) or raw_code not in (200, "200"):
            ok, code = False, _text(raw_code) or "error"
    if "error_code" in data:
        raw_error = data["error_code"]
        if not (raw_error is None or raw_error in ("", "0", 0)) or isinstance(raw_error, bool):
            ok, code = False, _text(raw_error) or "error"
    message = _text(data.get("error_message")) or _text(data.get("message"))
    inner = data.get("data")
    order = inner.get("order") if isinstance(inner, Mapping) else None
    return _Envelope(ok, code, message, order if isinstance(order, Mapping) else None)


def _transactions(order: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    items = order.get("transactions") if order is not None else None
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, Mapping)]


def _is_refund(transaction: Mapping[str, Any]) -> bool:
    kind = transaction.get("type")
    return isinstance(kind, str) and kind.lower() == "refund"


def _amount(value: object) -> Decimal | None:
    # Refund amounts may come negative (the official plugin takes abs()); compare magnitudes.
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        return None
    text = str(value)
    if not _AMOUNT_TEXT.match(text):
        return None
    return abs(Decimal(text))


def find_refund_transaction(
    transactions: Sequence[Mapping[str, Any]],
    *,
    provider_refund_id: str | None = None,
    amount: Decimal | None = None,
    sale_uuid: str | None = None,
) -> Mapping[str, Any] | None:
    """Pick *our* refund among the order's transactions (entries with type "Refund"),
    from what the gateway itself returns, never from free text we sent.

    With ``provider_refund_id`` (the refund transaction's uuid): the entry with that
    uuid, nothing else. Else, with ``amount`` (a refund's own reply, already tied to our
    request by :func:`reply_request_id_problem`): the newest refund of that amount.
    Refunds of another sale transaction (``original_transaction_uuid``) are never
    picked.

    ASSUMPTION: Wonder lists transactions oldest first, so "newest" is the last match.
    The documented transaction shape carries no time, so time cannot narrow it further.
    """
    refunds = [
        item
        for item in transactions
        if _is_refund(item)
        and (
            sale_uuid is None
            or not isinstance(item.get("original_transaction_uuid"), str)
            or item["original_transaction_uuid"].lower() == sale_uuid.lower()
        )
    ]
    if provider_refund_id is not None:
        found = [item for item in refunds if item.get("uuid") == provider_refund_id]
        return found[-1] if found else None
    if amount is not None:
        same = [item for item in refunds if _amount(item.get("amount")) == amount]
        if same:
            return same[-1]
    return None


def refund_transaction_status(transaction: Mapping[str, Any]) -> RefundStatus:
    """``is_pending`` true → PENDING; else ``success`` true → SUCCEEDED; ``success``
    false → FAILED; anything else → UNKNOWN.

    ASSUMPTION: a refund flagged both successful and pending is reported PENDING —
    not final yet — rather than SUCCEEDED.
    """
    if transaction.get("is_pending") is True:
        return RefundStatus.PENDING
    success = transaction.get("success")
    if success is True:
        return RefundStatus.SUCCEEDED
    if success is False:
        return RefundStatus.FAILED
    return RefundStatus.UNKNOWN


def _money(
    transaction: Mapping[str, Any], order: Mapping[str, Any] | None, fallback: str | None
) -> Money | None:
    value = _amount(transaction.get("amount"))
    currency = transaction.get("currency")
    if not isinstance(currency, str) or not currency:
        currency = order.get("currency") if order is not None else None
    if not isinstance(currency, str) or not currency:
        currency = fallback
    if value is None or currency is None:
        return None
    try:
        return Money(value, currency)
    except ValidationError:
        return None


def _uuid_text(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return value
    return None


def _sale_uuid(operation: Operation) -> str | None:
    payment = operation.payment
    return payment.transaction_id if payment is not None else None


@hookimpl
def refundcore_parse_response(
    provider: ProviderInfo, operation: Operation, response: HttpResponse
) -> RefundResult:
    """Map Wonder's reply to a result (see the status table in PROTOCOL.md)."""
    is_query = isinstance(operation, RefundQuery)

    def result(status: RefundStatus, **extra: Any) -> RefundResult:
        return RefundResult(
            provider=provider.id, refund_id=operation.refund_id, status=status, **extra
        )

    # A refused query says nothing about the refund itself: that stays UNKNOWN.
    refused = RefundStatus.UNKNOWN if is_query else RefundStatus.FAILED
    status_code = response.status
    if status_code >= 500:
        return result(
            RefundStatus.UNKNOWN,
            error_code=f"http_{status_code}",
            message=f"Wonder server error (HTTP {status_code})",
        )
    mismatch = (
        reply_request_id_problem(operation.refund_id, response)
        if isinstance(operation, Refund)
        else None
    )
    if mismatch is not None:
        return result(RefundStatus.UNKNOWN, error_code="mismatched_reply", message=mismatch)
    try:
        data = _load_json(response.body)
    except ValueError:
        data = None
    envelope = _envelope(data) if isinstance(data, dict) else None
    raw = data if isinstance(data, dict) else {}
    message = envelope.message if envelope is not None else None
    if status_code in (401, 403):
        return result(
            refused,
            error_code="credential_refused",
            message=message or f"Wonder refused the credential or signature (HTTP {status_code})",
            raw=raw,
        )
    if 400 <= status_code < 500:
        code = envelope.code if envelope is not None and envelope.code else None
        return result(
            refused,
            error_code=code or ("bad_request" if status_code == 400 else f"http_{status_code}"),
            message=message or f"Wonder refused the request (HTTP {status_code})",
            raw=raw,
        )
    if not 200 <= status_code < 300 or envelope is None:
        return result(
            RefundStatus.UNKNOWN,
            error_code="unparseable",
            message=f"unreadable reply (HTTP {status_code})",
            raw=raw,
        )
    if not envelope.ok:
        return result(refused, error_code=envelope.code, message=message, raw=raw)
    if envelope.order is None:
        return result(
            RefundStatus.UNKNOWN,
            error_code="no_order",
            message="Wonder's reply has no order",
            raw=raw,
        )

    transactions = _transactions(envelope.order)
    if isinstance(operation, Refund):
        found = find_refund_transaction(
            transactions, amount=operation.amount.amount, sale_uuid=_sale_uuid(operation)
        )
        fallback_currency: str | None = operation.amount.currency
    else:
        assert isinstance(operation, RefundQuery)
        found = find_refund_transaction(
            transactions,
            provider_refund_id=operation.provider_refund_id,
            sale_uuid=_sale_uuid(operation),
        )
        fallback_currency = None
    if found is None:
        code, explanation = lookup_outcome(operation)
        return result(RefundStatus.UNKNOWN, error_code=code, message=explanation, raw=raw)
    status = refund_transaction_status(found)
    return result(
        status,
        provider_refund_id=_uuid_text(found.get("uuid")),
        amount=_money(found, envelope.order, fallback_currency),
        error_code="refund_declined" if status is RefundStatus.FAILED else None,
        message=message,
        raw=raw,
    )


def lookup_outcome(operation: Operation) -> tuple[str, str]:
    """Error code and message when no refund transaction matched; the status is always
    UNKNOWN.

    What a Wonder lookup proves (our decision, from the sources): finding the refund
    transaction by its uuid (``provider_refund_id``) proves that refund and its
    status. Not finding it proves nothing: the refund API has no merchant refund id,
    so a refund whose reply was lost can only be matched by amount, which another
    refund of the same amount (the portal's, say) also matches, and a refund still
    being processed may not be listed yet. "Not found" is never taken as "never sent".
    """
    if isinstance(operation, RefundQuery) and operation.provider_refund_id is not None:
        return (
            "refund_not_found",
            "the order does not list refund transaction "
            f"{operation.provider_refund_id} (yet): its outcome is unknown",
        )
    if isinstance(operation, RefundQuery):
        return (
            "refund_not_identified",
            "a Wonder refund is found again only by its uuid: query with "
            "provider_refund_id (the refund transaction's uuid)",
        )
    return (
        "refund_not_identified",
        "the reply does not show a refund of this amount on this sale: "
        "query with provider_refund_id",
    )


# -- webhooks --------------------------------------------------------------------------------


def _credential_time(header: str, now: dt.datetime) -> str:
    """The request_time of a webhook's ``Credential``, checked for format, algorithm and
    the replay window; :class:`SignatureError` otherwise."""
    parts = header.split("/")
    if len(parts) != 3 or not parts[0] or parts[2] != ALGORITHM:
        raise SignatureError("Credential is not <app_id>/<yyyymmddHHMMSS>/Wonder-RSA-SHA256")
    time_text = parts[1]
    if not _REQUEST_TIME.match(time_text):
        raise SignatureError("Credential time is not yyyymmddHHMMSS")
    try:
        # The 14 digits are checked above; building the datetime from them directly is
        # an order of magnitude cheaper than strptime, on every webhook.
        signed_at = dt.datetime(
            int(time_text[0:4]),
            int(time_text[4:6]),
            int(time_text[6:8]),
            int(time_text[8:10]),
            int(time_text[10:12]),
            int(time_text[12:14]),
            tzinfo=dt.timezone.utc,
        )
    except ValueError:
        raise SignatureError("Credential time is not a valid date") from None
    if abs(now - signed_at) > CREDENTIAL_WINDOW:
        raise SignatureError("Credential time is outside ±30 minutes: refused as a replay")
    return time_text


def _webhook_order(data: object) -> Mapping[str, Any]:
    """The order a webhook body carries: the query-order shape ``{…, data: {order}}``,
    or (as the official WooCommerce plugin also accepts) ``{order}`` or a bare order."""
    if not isinstance(data, Mapping):
        raise SignatureError("signed webhook body is not a JSON object")
    inner = data.get("data")
    if isinstance(inner, Mapping) and isinstance(inner.get("order"), Mapping):
        order: Mapping[str, Any] = inner["order"]
        return order
    if isinstance(data.get("order"), Mapping):
        order = data["order"]
        return order
    if "transactions" in data or "reference_number" in data or "number" in data:
        return data
    raise SignatureError("signed webhook body carries no order")


def _action(header: str) -> str:
    """The ``X-Action`` header as a short event name (lower-cased, bounded, printable)."""
    action = header.strip().lower()[:64]
    return action if action.isprintable() else "unprintable"


def _webhook_payment(order: Mapping[str, Any], refund: Mapping[str, Any]) -> PaymentRef | None:
    sale = refund.get("original_transaction_uuid")
    if not isinstance(sale, str) or not sale:
        sales = [item for item in _transactions(order) if not _is_refund(item)]
        sale = sales[0].get("uuid") if sales else None
    try:
        return PaymentRef(
            payment_id=_uuid_text(order.get("number")),
            merchant_reference=_uuid_text(order.get("reference_number")),
            transaction_id=_uuid_text(sale),
        )
    except ValidationError:
        return None


#: The ``X-Action`` that reads a webhook's body as a report on a refund.
REFUND_ACTION = "order.refunded"


def webhook_refund(action: str, order: Mapping[str, Any], provider: str) -> Mapping[str, Any]:
    """ASSUMPTION (sources: Wonder's webhook page and production plugin; ``X-Action`` is
    not covered by the signature): which refund transaction a verified webhook reports.
    ``X-Action`` only chooses how the signed body is read, never the outcome: the
    status always comes from the refund transaction's own signed fields.

    * ``order.refunded``: the body's newest refund transaction. A body without one
      contradicts the header: :class:`SignatureError` (a forged or mismatched header).
    * no ``X-Action``: the body decides: its newest refund transaction if it has one,
      else :class:`NotARefund` (``order.updated``).
    * any other action (``order.paid``, ``order.created``, ``order.payment_failure``,
      ``order.voided``, ``transaction.voided``, …): not about a refund refundcore made
      (this plugin offers no void): :class:`NotARefund` under that action, whatever the
      body holds, so nothing is settled from it.
    """
    if action and action != REFUND_ACTION:
        raise NotARefund(action, provider=provider)
    refunds = [item for item in _transactions(order) if _is_refund(item)]
    if refunds:
        return refunds[-1]  # the newest (see find_refund_transaction)
    if action:
        raise SignatureError(f"X-Action {action} but the signed body carries no refund")
    raise NotARefund("order.updated", provider=provider)


@hookimpl
def refundcore_verify_callback(
    provider: ProviderInfo, config: WonderConfig, callback: Callback
) -> RefundNotification:
    """Verify a webhook with ``webhook_public_key`` (same algorithm as requests, over
    POST, the path as received and the raw body), then read the order it carries."""
    headers = callback.headers
    header = headers.get("Credential", "")
    nonce = headers.get("Nonce", "")
    signature = headers.get("Signature", "")
    if not header or not nonce or not signature:
        raise SignatureError("missing Credential, Nonce or Signature header")
    if not nonce.isascii() or not nonce.isprintable() or len(nonce) > 128:
        raise SignatureError("Nonce is not printable ASCII")
    time_text = _credential_time(header, _utcnow())
    try:
        genuine = verify_wonder_signature(
            callback.method,
            callback.path,
            callback.body,
            nonce,
            time_text,
            signature,
            config.webhook_public_key.public_key,
        )
    except UnicodeError:
        genuine = False
    if not genuine:
        raise SignatureError("signature does not match")
    try:
        data = _load_json(callback.body)
    except ValueError:
        raise SignatureError("signed webhook body is not JSON") from None
    order = _webhook_order(data)
    refund = webhook_refund(_action(headers.get("X-Action", "")), order, provider.id)
    return RefundNotification(
        provider=provider.id,
        status=refund_transaction_status(refund),
        event=REFUND_ACTION,
        provider_refund_id=_uuid_text(refund.get("uuid")),
        payment=_webhook_payment(order, refund),
        amount=_money(refund, order, None),
        raw=data if isinstance(data, dict) else {"order": order},
    )
