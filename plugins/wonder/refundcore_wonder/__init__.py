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
    "WonderConfig",
    "credential",
    "find_refund_transaction",
    "new_nonce",
    "note_refund_id",
    "pre_sign_string",
    "query_body",
    "refund_body",
    "refund_note",
    "refund_request_id",
    "refund_transaction_status",
    "request_time",
    "signature_message",
    "verify_wonder_signature",
    "webhook_status",
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


@attrs.frozen(kw_only=True)
class WonderConfig(ProviderConfig):
    """Settings for Wonder.

    ``private_key`` signs requests (Wonder holds its public half, uploaded in the
    portal); ``webhook_public_key`` is Wonder's key for webhooks, shown once when the
    app id is created. Both are parsed once, when the config is loaded.
    """

    app_id: str = attrs.field(validator=_check_app_id)
    private_key: PrivateKey
    webhook_public_key: PublicKey
    #: Sent as ``x-i18n-lang``: the language of Wonder's messages.
    language: str | None = attrs.field(default=None, validator=_check_language)
    #: ASSUMPTION: tag ``refund.note`` with the refund id (``"[<refund_id>] <reason>"``)
    #: so a query finds this refund among several on the same order even when the
    #: refund's own reply was lost. Off sends the reason alone.
    note_refund_id: bool = True


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
    """ASSUMPTION: Wonder takes the amount as a decimal string with two decimals
    (``"10.00"``), in the order's currency — the refund carries no currency of its own.
    An amount that needs more than two decimals cannot be sent."""
    try:
        cents = amount.amount.quantize(_CENT)
    except InvalidOperation:
        raise ValidationError(f"{amount} cannot be sent", field="amount") from None
    if cents != amount.amount:
        raise ValidationError(
            f"{amount} has more than the two decimals Wonder takes", field="amount"
        )
    return f"{cents:f}"


def refund_note(refund_id: str, reason: str | None, *, tag: bool) -> str:
    """``refund.note`` (required by Wonder, a string): the reason or ``""``, prefixed
    with ``[<refund_id>]`` when ``tag`` is on (see ``WonderConfig.note_refund_id``)."""
    text = reason or ""
    if not tag:
        return text
    return f"[{refund_id}] {text}" if text else f"[{refund_id}]"


def note_refund_id(note: object) -> str | None:
    """The refund id a note made by :func:`refund_note` carries, if any. Refund ids
    never contain spaces, so the tag is everything before the first space."""
    if not isinstance(note, str) or not note.startswith("["):
        return None
    tag = note.split(" ", 1)[0]
    if len(tag) < 3 or not tag.endswith("]"):
        return None
    return tag[1:-1]


def refund_request_id(refund_id: str) -> str:
    """ASSUMPTION: the ``X-Request-ID`` of a refund is its refund id, so a resend of the
    same refund carries the same id (the sandbox emulator refuses to refund twice under
    one request id; whether the live gateway does is not documented, hence
    ``idempotent_refund_id=False``). Queries get a fresh uuid4 each."""
    return refund_id


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


def refund_body(operation: Refund, *, tag_note: bool) -> bytes:
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
            "refund": {
                "amount": wire_amount(operation.amount),
                "note": refund_note(operation.refund_id, operation.reason, tag=tag_note),
            },
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
        path, body = REFUND_PATH, refund_body(operation, tag_note=config.note_refund_id)
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
    refund_id: str | None = None,
    amount: Decimal | None = None,
    note: str | None = None,
    sale_uuid: str | None = None,
) -> Mapping[str, Any] | None:
    """Pick *our* refund among the order's transactions (entries with type "Refund").

    In order of preference: the one whose ``uuid`` is ``provider_refund_id`` (when
    given, nothing else is tried); the newest whose note carries ``refund_id`` (see
    :func:`refund_note`); with ``amount`` (a refund's own reply), the newest with that
    amount and, where the entry has a note, that note. Refunds of another sale
    transaction (``original_transaction_uuid``) are never picked.

    ASSUMPTION: Wonder lists transactions oldest first, so "newest" is the last match.
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
    if refund_id is not None:
        tagged = [item for item in refunds if note_refund_id(item.get("note")) == refund_id]
        if tagged:
            return tagged[-1]
    if amount is not None:
        same = [
            item
            for item in refunds
            if _amount(item.get("amount")) == amount
            and (note is None or not isinstance(item.get("note"), str) or item["note"] == note)
        ]
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
    provider: ProviderInfo, config: WonderConfig, operation: Operation, response: HttpResponse
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
            transactions,
            refund_id=operation.refund_id if config.note_refund_id else None,
            amount=operation.amount.amount,
            note=refund_note(operation.refund_id, operation.reason, tag=config.note_refund_id),
            sale_uuid=_sale_uuid(operation),
        )
        fallback_currency: str | None = operation.amount.currency
    else:
        assert isinstance(operation, RefundQuery)
        found = find_refund_transaction(
            transactions,
            provider_refund_id=operation.provider_refund_id,
            refund_id=operation.refund_id if config.note_refund_id else None,
            sale_uuid=_sale_uuid(operation),
        )
        fallback_currency = None
    if found is None:
        status, code, explanation = _not_found(operation, config)
        return result(status, error_code=code, message=explanation, raw=raw)
    status = refund_transaction_status(found)
    return result(
        status,
        provider_refund_id=_uuid_text(found.get("uuid")),
        amount=_money(found, envelope.order, fallback_currency),
        error_code="refund_declined" if status is RefundStatus.FAILED else None,
        message=message,
        raw=raw,
    )


def _not_found(operation: Operation, config: WonderConfig) -> tuple[RefundStatus, str, str]:
    """Status, code and message when no refund transaction matched. Only a query that
    looked for the refund id tag can say the refund does not exist (it never reached
    Wonder); anything else is not known."""
    if (
        isinstance(operation, RefundQuery)
        and operation.provider_refund_id is None
        and config.note_refund_id
    ):
        return (
            RefundStatus.FAILED,
            "refund_not_found",
            "the order has no refund tagged with this refund id: it never reached Wonder",
        )
    return (
        RefundStatus.UNKNOWN,
        "refund_not_identified",
        "the reply does not show this refund: query with provider_refund_id",
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


def _webhook_payment(
    order: Mapping[str, Any], refund: Mapping[str, Any] | None
) -> PaymentRef | None:
    sale = refund.get("original_transaction_uuid") if refund is not None else None
    if not isinstance(sale, str):
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


def webhook_status(action: str, refund: Mapping[str, Any] | None) -> RefundStatus:
    """ASSUMPTION: what each ``X-Action`` means for refunds. ``order.refunded`` takes
    the status of the refund transaction; ``order.voided`` / ``transaction.voided``
    report a completed reversal (SUCCEEDED); other events (``order.paid``,
    ``order.created``, ``order.payment_failure``, …) are not about a refund: UNKNOWN,
    and the application goes by ``event``."""
    if action == "order.refunded":
        return refund_transaction_status(refund) if refund is not None else RefundStatus.UNKNOWN
    if action in ("order.voided", "transaction.voided"):
        return RefundStatus.SUCCEEDED
    return RefundStatus.UNKNOWN


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
            config.webhook_public_key,
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
    # X-Action is not covered by the signature: the status comes from the signed body.
    action = headers.get("X-Action", "").strip().lower()[:64] or "order.updated"
    refunds = [item for item in _transactions(order) if _is_refund(item)]
    refund = refunds[-1] if refunds else None  # the newest (see find_refund_transaction)
    return RefundNotification(
        provider=provider.id,
        status=webhook_status(action, refund),
        event=action,
        refund_id=note_refund_id(refund.get("note"))
        if refund is not None and config.note_refund_id
        else None,
        provider_refund_id=_uuid_text(refund.get("uuid")) if refund is not None else None,
        payment=_webhook_payment(order, refund),
        amount=_money(refund, order, None) if refund is not None else None,
        raw=data if isinstance(data, dict) else {"order": order},
    )
