"""refundcore provider plugin for the PayWizard Open Platform (WizarPOS): refunds, voids
and status queries of APM (QR code / wallet) payments, and the signed result push.

Everything this provider does is in this module: its config, how an operation becomes a
signed request, how a reply becomes a result, and how a result push is verified. The
gateway emulator used by the sandbox and the tests is in ``sandbox.py``.

Wire protocol (PROTOCOL.md beside this package gives every detail and its source):

* ``POST /ovstrade/openPay/refundOrder`` (refund), ``/reversalOrder`` (void),
  ``/queryOrder`` (query); compact JSON bodies, headers ``Content-Type``,
  ``jwt-token`` and ``sign``.
* ``sign`` = :func:`v3_signature` over the exact body bytes sent.
* Reply ``{code, msg, timestamp, data}``; see :func:`transaction_status` and
  :func:`refund_status_from_state` for how it maps to a :class:`RefundStatus`.
* Result push: :func:`push_signature`, read by :func:`refundcore_verify_callback`.

Each ASSUMPTION (a point the provider's documentation leaves open) sits in one small
function whose docstring starts with "ASSUMPTION"; PROTOCOL.md lists them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import attrs

from refundcore import (
    Capabilities,
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
    Secret,
    SignatureError,
    ValidationError,
    hookimpl,
)
from refundcore.crypto import HmacSha256Key, constant_time_equals, hmac_sha256_hex
from refundcore.models import (
    Callback,
    CallbackAck,
    Operation,
    PaymentRef,
    Refund,
    RefundQuery,
    Void,
)
from refundcore.money import Money

__all__ = [
    "PROVIDER_ID",
    "PUSH_READ_FIELDS",
    "QUERY_PATH",
    "REFUND_PATH",
    "VOID_PATH",
    "JsonNumber",
    "PaywizardConfig",
    "check_checkout_id",
    "check_push_framing",
    "check_trans_index_code",
    "currency_from_code",
    "load_push_fields",
    "numeric_currency_code",
    "push_ack",
    "push_event",
    "push_field_text",
    "push_signature",
    "push_signing_string",
    "push_status",
    "read_push_signature",
    "refund_status_from_state",
    "transaction_status",
    "v3_signature",
    "void_body",
]

PROVIDER_ID = "paywizard"
REFUND_PATH = "/ovstrade/openPay/refundOrder"
VOID_PATH = "/ovstrade/openPay/reversalOrder"
QUERY_PATH = "/ovstrade/openPay/queryOrder"
#: ``code`` of an accepted request; any other value is an error and ``data`` is null.
SUCCESS_CODE = 200
_MESSAGE_MAX = 300


def _printable_ascii(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # A token with a control character would make the transport refuse the request only
    # after the client considers it sent, and a client id outside ASCII would be escaped
    # in the body but not in the signed suffix: refuse both when the config is loaded.
    text = value.reveal() if isinstance(value, Secret) else value
    if not isinstance(text, str) or not text or not all("!" <= ch <= "~" for ch in text):
        raise ValueError(f"{attribute.name} must be printable ASCII without spaces")


@attrs.frozen(kw_only=True)
class PaywizardConfig(ProviderConfig):
    """Settings for PayWizard: the developer credentials issued at onboarding.

    ``client_id`` goes into every body and into the signed string; ``client_secret`` is
    the HMAC key (and part of the signed string); ``token`` is the merchant's
    "semi-permanent" transaction token, sent as the ``jwt-token`` header. There is no
    token refresh flow: the token endpoint is deprecated.
    """

    client_id: str = attrs.field(validator=_printable_ascii)
    client_secret: Secret
    token: Secret = attrs.field(validator=_printable_ascii)
    # Made from the secret with the config, not per request or push: see HmacSha256Key.
    _key: HmacSha256Key = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda self: HmacSha256Key(self.client_secret.reveal().encode("utf-8")),
            takes_self=True,
        ),
    )


# -- signatures ------------------------------------------------------------------------


def v3_signature(body: bytes, client_id: str, client_secret: str) -> str:
    """The request signature of PayWizard's "Signature Guide V3".

    Lowercase hex HMAC-SHA256, key = the client secret (UTF-8), message = the exact body
    bytes + ``&clientId=<client_id>&clientSecret=<client_secret>``. Sign the bytes that
    are sent; re-serialising the JSON would change them.
    """
    suffix = _credentials_text(client_id, client_secret).encode()
    return hmac_sha256_hex(client_secret.encode("utf-8"), body + suffix)


class JsonNumber(str):
    """A JSON number from a result push, kept as the exact text it had in the body
    (``0.10`` stays ``0.10``, a long id stays exact); see :func:`push_field_text`."""

    __slots__ = ()


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With a repeated key, the gateway and this verifier could each read a different
    # value under the same signature: refuse it.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("repeated key in a JSON object")
    return result


# Decoders are made once: ``json.loads`` with options builds a new one on every call.
_PUSH_JSON = json.JSONDecoder(
    parse_int=JsonNumber,
    parse_float=JsonNumber,
    parse_constant=_refuse_constant,
    object_pairs_hook=_unique_keys,
)


def load_push_fields(body: bytes) -> dict[str, Any]:
    """Parse a result push body: a JSON object whose numbers become :class:`JsonNumber`
    (never float). ``ValueError`` (or ``RecursionError``) when it is anything else."""
    fields = _PUSH_JSON.decode(body.decode("utf-8"))
    if not isinstance(fields, dict):
        raise ValueError("a result push is a JSON object")
    return fields


def _compact(value: Any) -> str:
    if isinstance(value, JsonNumber):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dict):
        items = (
            f"{json.dumps(str(k), ensure_ascii=False)}:{_compact(v)}" for k, v in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_compact(item) for item in value) + "]"
    raise TypeError(f"cannot sign a {type(value).__name__}")


def push_field_text(value: Any) -> str | None:
    """ASSUMPTION: how one top-level result-push value is written in the signed string
    (the provider documents only string values). ``None`` means "leave the field out".

    * string → the string itself (JSON escapes decoded);
    * number → its literal text exactly as it appears in the body (``1.50``, ``2``);
    * ``true`` / ``false`` → ``true`` / ``false``;
    * ``null`` or ``""`` → left out (the guide signs only non-empty values);
    * object or array → compact JSON (no spaces, keys in received order, non-ASCII
      kept as is, numbers as their literal text); ``{}`` and ``[]`` are signed as such.
    """
    if value is None:
        return None
    text = value if isinstance(value, str) else _compact(value)
    return text or None


def push_signing_string(fields: Mapping[str, Any], client_id: str, client_secret: str) -> str:
    """The string a result push's signature covers: every non-empty top-level field but
    ``sign``, sorted by name (code point order), as ``k=v`` joined with ``&``, then
    ``&clientId=<client_id>&clientSecret=<client_secret>``. It contains the secret:
    never log it."""
    return _push_fields_text(fields) + _credentials_text(client_id, client_secret)


def _push_fields_text(fields: Mapping[str, Any]) -> str:
    """The start of :func:`push_signing_string`, before the credentials."""
    pairs = []
    for name in sorted(fields):
        if name == "sign":
            continue
        value = fields[name]
        # Strings and numbers (a JsonNumber is a str) are most fields: written as they are.
        text = value if isinstance(value, str) else push_field_text(value)
        if text:
            pairs.append(f"{name}={text}")
    return "&".join(pairs)


def _credentials_text(client_id: str, client_secret: str) -> str:
    """What every signed message ends with: ``&clientId=…&clientSecret=…``."""
    return f"&clientId={client_id}&clientSecret={client_secret}"


def _credentials(config: PaywizardConfig) -> bytes:
    """:func:`_credentials_text` of ``config``."""
    # Revealed in the return expression and never bound to a name here (the helper's
    # frame, which cannot raise, is gone once it returns): an error reporter that
    # captures the locals of a traceback's frames finds the secret in none of them.
    return _credentials_text(config.client_id, config.client_secret.reveal()).encode()


def push_signature(fields: Mapping[str, Any], client_id: str, client_secret: str) -> str:
    """ASSUMPTION (the APM pages do not describe refund notifications; this follows the
    "Transaction Result Push" page): lowercase hex HMAC-SHA256, key = the client secret,
    over :func:`push_signing_string`."""
    message = push_signing_string(fields, client_id, client_secret).encode("utf-8")
    return hmac_sha256_hex(client_secret.encode("utf-8"), message)


def read_push_signature(callback: Callback, fields: Mapping[str, Any]) -> str | None:
    """ASSUMPTION: the push carries its signature in a ``sign`` header, else in a
    top-level ``sign`` string field of the body (the documentation shows neither
    clearly). Hex is compared case-insensitively."""
    given = callback.headers.get("sign")
    if not given:
        body_sign = fields.get("sign")
        given = body_sign if isinstance(body_sign, str) else None
    return given.strip().lower() if given else None


#: The top-level fields a verified push is read by (its refund, status, amount, what it
#: is about): each must stand as its own ``name=value`` in the signed string.
PUSH_READ_FIELDS = (
    "amount",
    "checkoutId",
    "currencyCode",
    "oriCheckoutId",
    "oriTransIndexCode",
    "state",
    "transIndexCode",
    "transResult",
    "transType",
)


def check_push_framing(fields: Mapping[str, Any]) -> None:
    """Refuse a push its signed string cannot tell apart from another reading: a field
    name holding ``&`` or ``=``, a field of :data:`PUSH_READ_FIELDS` whose value holds
    ``&``, or any value holding ``&<name>=`` for a field of :data:`PUSH_READ_FIELDS`.
    The signed string joins ``name=value`` pairs with ``&`` and escapes nothing, so
    ``{"transResult": "0&transType=SALE"}`` signs exactly as ``{"transResult": "0",
    "transType": "SALE"}`` does: a genuine push about a sale, re-cut so, would be read
    with neither field (a push about the refund it names). None of the fields read
    ever holds ``&`` (ids, codes, amounts). :class:`SignatureError` when it is so."""
    for name, value in fields.items():
        if "&" in name or "=" in name:
            raise SignatureError("a result push field name holds '&' or '='")
        text = value if isinstance(value, str) else push_field_text(value)
        if not text or "&" not in text:
            continue
        if name in PUSH_READ_FIELDS or any(f"&{read}=" in text for read in PUSH_READ_FIELDS):
            raise SignatureError(f"result push field {name} holds another field's text")


def push_ack() -> CallbackAck:
    """ASSUMPTION: what the gateway expects in reply to a push (undocumented): HTTP 200
    with the platform's own success shape."""
    return CallbackAck(
        status=200, content_type="application/json", body=b'{"code":200,"msg":"success"}'
    )


# -- identifiers -----------------------------------------------------------------------

_TRANS_INDEX_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_CHECKOUT_ID = re.compile(r"[0-9]{1,32}\Z")


def check_trans_index_code(value: str, field: str) -> str:
    """ASSUMPTION: a ``transIndexCode`` (the merchant's order id: our refund id, the
    original payment's ``merchant_reference``) is 1-64 letters, digits, ``-`` or ``_``.
    The pages give no rule; this is the common denominator of the order-number rules of
    the wallets behind the gateway, and every example is 21 digits."""
    if not isinstance(value, str) or not _TRANS_INDEX_CODE.match(value):
        raise ValidationError(
            "PayWizard takes 1-64 letters, digits, '-' or '_' as a transIndexCode", field=field
        )
    return value


def check_checkout_id(value: str, field: str) -> str:
    """ASSUMPTION: a ``checkoutId`` (the platform's transaction id) is 1-32 digits; every
    one the documentation shows is an 18-digit number."""
    if not isinstance(value, str) or not _CHECKOUT_ID.match(value):
        raise ValidationError("a PayWizard checkoutId is a string of 1-32 digits", field=field)
    return value


# -- build and sign --------------------------------------------------------------------


def _original_payment(payment: PaymentRef) -> dict[str, str]:
    fields = {}
    if payment.payment_id is not None:
        fields["oriCheckoutId"] = check_checkout_id(payment.payment_id, "payment.payment_id")
    if payment.merchant_reference is not None:
        fields["oriTransIndexCode"] = check_trans_index_code(
            payment.merchant_reference, "payment.merchant_reference"
        )
    if not fields:
        raise ValidationError(
            "PayWizard finds the original payment by payment_id (oriCheckoutId) or "
            "merchant_reference (oriTransIndexCode); transaction_id alone cannot be used",
            field="payment.payment_id",
        )
    return fields


def _transaction_body(
    config: PaywizardConfig, operation: Refund | Void, amount: Money | None
) -> dict[str, str]:
    body = {
        "clientId": config.client_id,
        "transIndexCode": check_trans_index_code(operation.refund_id, "refund_id"),
        **_original_payment(operation.payment),
    }
    if amount is not None:
        body["amount"] = amount.to_wire()
    if operation.notify_url is not None:
        body["notifyUrl"] = operation.notify_url
    return body


def void_body(config: PaywizardConfig, operation: Void) -> dict[str, str]:
    """ASSUMPTION: ``reversalOrder`` takes the refund body ("same body shape"), with
    ``amount`` sent only when the caller gives one (a void reverses the whole payment,
    so the amount, if sent, is the payment's)."""
    return _transaction_body(config, operation, operation.amount)


def _query_body(config: PaywizardConfig, operation: RefundQuery) -> dict[str, str]:
    # The refund's own transIndexCode names it; its checkoutId, when known, is added
    # (the gateway lets checkoutId win) and the reply is checked against both.
    body = {"clientId": config.client_id}
    if operation.provider_refund_id is not None:
        body["checkoutId"] = check_checkout_id(operation.provider_refund_id, "provider_refund_id")
    body["transIndexCode"] = check_trans_index_code(operation.refund_id, "refund_id")
    return body


def _json_bytes(fields: Mapping[str, str]) -> bytes:
    return json.dumps(fields, separators=(",", ":")).encode("ascii")


@hookimpl
def refundcore_register_providers(register: Callable[[ProviderInfo], None]) -> None:
    register(
        ProviderInfo(
            id=PROVIDER_ID,
            name="PayWizard (WizarPOS) APM",
            config_class=PaywizardConfig,
            capabilities=Capabilities(
                partial_refunds=True,
                refunds_per_payment=None,
                query=True,
                void=True,
                callbacks=True,
                currencies=None,
                # The gateway requires a new transIndexCode per refund, but what it
                # answers to a reused one is undocumented (most likely an error code,
                # which reads as FAILED although the first attempt may have refunded):
                # after UNKNOWN, query before resending. See the README.
                idempotent_refund_id=False,
                callback_timestamps=False,
                # A query finds a refund by its transIndexCode (= refund_id), and "no
                # transaction" (data null) means the gateway never took one under it;
                # a minute allows for a refund that arrived just before the query.
                lookup=Lookup(
                    by=LookupKey.REFUND_ID,
                    absence_authoritative=True,
                    settle_delay=60.0,
                    not_found_codes={"not_found"},
                ),
            ),
            environments={
                "sandbox": "https://uat.paywizard.biz",
                "production": "https://portal.paywizard.biz",
            },
            sandbox="refundcore_paywizard.sandbox:PaywizardEmulator",
            callback_ack=push_ack(),
            docs_url="https://smartpossdk.gitbook.io/paywizard-open-api",
        )
    )


@hookimpl
def refundcore_build_request(config: PaywizardConfig, operation: Operation) -> HttpRequest:
    if isinstance(operation, RefundQuery):
        path, fields = QUERY_PATH, _query_body(config, operation)
    elif isinstance(operation, Void):
        path, fields = VOID_PATH, void_body(config, operation)
    elif isinstance(operation, Refund):
        # The body has no currency or reason field: the gateway refunds in the original
        # payment's currency, and a reason is not sent.
        path, fields = REFUND_PATH, _transaction_body(config, operation, operation.amount)
    else:
        raise ValidationError(f"{operation.kind} is not supported", field="operation")
    return HttpRequest(
        "POST",
        f"{config.base_url}{path}",
        headers={"Content-Type": "application/json"},
        body=_json_bytes(fields),
    )


@hookimpl
def refundcore_sign_request(config: PaywizardConfig, request: HttpRequest) -> HttpRequest:
    # v3_signature, with the key made ready when the config was loaded and the secret
    # never bound to a name (see _credentials).
    signature = config._key.hexdigest(request.body + _credentials(config))
    return request.with_headers({"jwt-token": config.token.reveal(), "sign": signature})


# -- replies ---------------------------------------------------------------------------

_RESULTS = {
    0: RefundStatus.SUCCEEDED,
    1: RefundStatus.FAILED,
    2: RefundStatus.PENDING,
}

#: What a queried record's ``state`` says about a refund (or void) *transaction's own*
#: record. The reasoning, code by code, is in :func:`refund_status_from_state`.
REFUND_STATES: Mapping[int, RefundStatus] = {
    1: RefundStatus.PENDING,  # pending
    2: RefundStatus.SUCCEEDED,  # completed
    3: RefundStatus.UNKNOWN,  # revoked: ambiguous for a refund record
    4: RefundStatus.SUCCEEDED,  # refunded: the refund itself, done
    5: RefundStatus.FAILED,  # closed without completing
    6: RefundStatus.UNKNOWN,  # partially refunded: a payment's state
    7: RefundStatus.UNKNOWN,  # pre-auth completed: not a refund
    8: RefundStatus.UNKNOWN,  # pre-auth revoked: not a refund
    9: RefundStatus.UNKNOWN,  # partial revocation: a payment's state
}


def refund_status_from_state(state: int | None) -> RefundStatus:
    """ASSUMPTION: the status of a refund or void given the ``state`` of its own record
    (the codes are documented for payments, in "Transaction Result Push").

    * 1 pending → PENDING; 2 completed → SUCCEEDED.
    * 4 refunded → SUCCEEDED: the record carries our refund's own ``transIndexCode``
      (checked), and a refund cannot itself be refunded, so "refunded" can only mean
      that this refund went through.
    * 5 closed → FAILED: the order was closed without completing; nothing moved.
    * 3 revoked → UNKNOWN: for a refund it would mean the refund was reversed (no money
      back to the customer), for a void record it may mean the reversal took effect;
      the two readings disagree, so a person has to look.
    * 6 partially refunded, 9 partial revocation, 7/8 pre-auth states → UNKNOWN: they
      describe a payment, not a refund; seeing them means the gateway answered about
      something else.
    * anything else → UNKNOWN.
    """
    if state is None:
        return RefundStatus.UNKNOWN
    return REFUND_STATES.get(state, RefundStatus.UNKNOWN)


def transaction_status(code: int, result: int | None) -> RefundStatus:
    """The status of a refund or void from the reply's ``code`` and ``data.result``.

    ``code`` 200 with ``result`` 0 → SUCCEEDED, 2 → PENDING, 1 → FAILED; any other
    ``result`` → UNKNOWN. ``code`` ≠ 200 → FAILED (the request was refused), except
    ASSUMPTION: a 5xx-type ``code`` is the platform's own internal error, after which
    the refund may or may not have been made → UNKNOWN.
    """
    if code == SUCCESS_CODE:
        if result is None:
            return RefundStatus.UNKNOWN
        return _RESULTS.get(result, RefundStatus.UNKNOWN)
    if 500 <= code <= 599:
        return RefundStatus.UNKNOWN
    return RefundStatus.FAILED


_REPLY_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)


def _load_reply(body: bytes) -> dict[str, Any] | None:
    try:
        reply = _REPLY_JSON.decode(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    return reply if isinstance(reply, dict) else None


def _small_int(value: Any) -> int | None:
    """An integer code given as a JSON integer or a string of digits; else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and 0 < len(value) <= 9 and value.isascii() and value.isdigit():
        return int(value)
    return None


def _text(value: Any) -> str | None:
    """A string value (or a number's literal text), or ``None`` for anything else."""
    if type(value) is str:
        return value or None
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        return str(value) or None
    return None


def _money(value: Any, currency: str | None) -> Money | None:
    text = value if isinstance(value, str) else None
    if isinstance(value, Decimal) and value.is_finite():
        text = f"{value:f}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    if text is None or currency is None:
        return None
    try:
        return Money(text, currency)
    except ValidationError:
        return None


def _message(value: Any) -> str | None:
    return value[:_MESSAGE_MAX] if isinstance(value, str) and value else None


@hookimpl
def refundcore_parse_response(
    provider: ProviderInfo, operation: Operation, response: HttpResponse
) -> RefundResult:
    def result(status: RefundStatus, **extra: Any) -> RefundResult:
        return RefundResult(
            provider=provider.id,
            refund_id=operation.refund_id,
            status=status,
            operation=operation.kind,
            **extra,
        )

    if response.status >= 500:
        return result(
            RefundStatus.UNKNOWN,
            message=f"gateway error HTTP {response.status}; query before trying again",
            error_code=f"http_{response.status}",
        )
    reply = _load_reply(response.body)
    code = _small_int(reply.get("code")) if reply is not None else None
    if reply is None or code is None:
        return result(
            RefundStatus.UNKNOWN,
            message=f"unreadable reply (HTTP {response.status})",
            error_code="unparseable",
        )
    message = _message(reply.get("msg"))
    if code == SUCCESS_CODE and not 200 <= response.status <= 299:
        return result(
            RefundStatus.UNKNOWN,
            message=f"code 200 in an HTTP {response.status} reply",
            error_code="contradictory",
            raw=reply,
        )
    if isinstance(operation, RefundQuery):
        return _query_result(result, operation, code, message, reply)
    return _transaction_result(result, operation, code, message, reply)


def _transaction_result(
    result: Callable[..., RefundResult],
    operation: Refund | Void,
    code: int,
    message: str | None,
    reply: dict[str, Any],
) -> RefundResult:
    if code != SUCCESS_CODE:
        return result(
            transaction_status(code, None), message=message, error_code=str(code), raw=reply
        )
    data = reply.get("data")
    if not isinstance(data, dict):
        return result(
            RefundStatus.UNKNOWN,
            message="accepted, but the reply has no data",
            error_code="no_data",
            raw=reply,
        )
    echoed = _text(data.get("transIndexCode"))
    if echoed is not None and echoed != operation.refund_id:
        return result(
            RefundStatus.UNKNOWN,
            message="the reply is about another transIndexCode",
            error_code="mismatched_reply",
            raw=reply,
        )
    outcome = _small_int(data.get("result"))
    status = transaction_status(code, outcome)
    error_code = None
    if status is RefundStatus.FAILED:
        error_code = "declined"
    elif status is RefundStatus.UNKNOWN:
        error_code = "unknown_result"
    currency = operation.amount.currency if operation.amount is not None else None
    return result(
        status,
        provider_refund_id=_text(data.get("checkoutId")),
        amount=_money(data.get("amount"), currency),
        message=message,
        error_code=error_code,
        raw=reply,
    )


def _query_result(
    result: Callable[..., RefundResult],
    operation: RefundQuery,
    code: int,
    message: str | None,
    reply: dict[str, Any],
) -> RefundResult:
    if code != SUCCESS_CODE:
        # The query itself was refused (credentials, signature, parameters): that says
        # nothing about the refund.
        return result(
            RefundStatus.UNKNOWN,
            message=f"query refused: {message or code}",
            error_code=str(code),
            raw=reply,
        )
    if "data" not in reply:
        # "No transaction" is an explicit null, and proves a refund never arrived: a
        # reply that leaves the field out says nothing at all.
        return result(
            RefundStatus.UNKNOWN,
            message="query reply without data",
            error_code="unparseable",
            raw=reply,
        )
    data = reply["data"]
    if data is None:
        return result(
            RefundStatus.FAILED,
            message=(
                "the gateway has no transaction with this transIndexCode: the refund was "
                "not made under this refund_id (if a refund request timed out moments "
                "ago, query again before relying on this; resend only with the same "
                "refund_id)"
            ),
            error_code="not_found",
            raw=reply,
        )
    if not isinstance(data, dict):
        return result(
            RefundStatus.UNKNOWN, message="unreadable query data", error_code="unparseable"
        )
    echoed = _text(data.get("transIndexCode"))
    checkout_id = _text(data.get("checkoutId"))
    if (echoed is not None and echoed != operation.refund_id) or (
        operation.provider_refund_id is not None
        and checkout_id is not None
        and checkout_id != operation.provider_refund_id
    ):
        return result(
            RefundStatus.UNKNOWN,
            message="the gateway answered about another transaction",
            error_code="mismatched_reply",
            raw=reply,
        )
    state = _small_int(data.get("state"))
    status = refund_status_from_state(state)
    final_or_pending = status in (RefundStatus.SUCCEEDED, RefundStatus.PENDING)
    return result(
        status,
        provider_refund_id=checkout_id,
        message=message,
        error_code=None if final_or_pending else f"state_{state}",
        raw=reply,
    )


# -- result push -----------------------------------------------------------------------

#: ISO 4217 numeric codes of the currencies an APM merchant in the region may settle in.
_NUMERIC_CURRENCIES = {
    "036": "AUD",
    "048": "BHD",
    "124": "CAD",
    "156": "CNY",
    "208": "DKK",
    "344": "HKD",
    "356": "INR",
    "360": "IDR",
    "392": "JPY",
    "410": "KRW",
    "414": "KWD",
    "446": "MOP",
    "458": "MYR",
    "554": "NZD",
    "578": "NOK",
    "608": "PHP",
    "682": "SAR",
    "702": "SGD",
    "704": "VND",
    "752": "SEK",
    "756": "CHF",
    "764": "THB",
    "784": "AED",
    "826": "GBP",
    "840": "USD",
    "901": "TWD",
    "978": "EUR",
}
_ALPHA_CURRENCIES = {alpha: numeric for numeric, alpha in _NUMERIC_CURRENCIES.items()}


def currency_from_code(code: Any) -> str | None:
    """The alphabetic currency of a push's ``currencyCode``: the documentation shows the
    ISO 4217 numeric form (``"840"``); an alphabetic code is taken as is. ``None`` when
    unknown (the amount is then left out of the notification; ``raw`` keeps it)."""
    text = _text(code)
    if text is None:
        return None
    if text.isdigit():
        return _NUMERIC_CURRENCIES.get(text.zfill(3))
    return text.upper() if len(text) == 3 and text.isalpha() and text.isascii() else None


def numeric_currency_code(currency: str) -> str:
    """The ISO 4217 numeric code of ``currency`` where known, else the alphabetic code."""
    return _ALPHA_CURRENCIES.get(currency, currency)


def push_status(fields: Mapping[str, Any]) -> RefundStatus:
    """The status a push reports: ``transResult`` 0 success, 1 failure, 2 in progress;
    without a usable ``transResult``, the record's ``state`` as in
    :func:`refund_status_from_state`."""
    result = _small_int(fields.get("transResult"))
    if result in _RESULTS:
        return _RESULTS[result]
    return refund_status_from_state(_small_int(fields.get("state")))


#: ``transType`` values of a push about a refund or a void (compared case-insensitively).
REFUND_TRANS_TYPES: Mapping[str, str] = {"REFUND": "refund", "VOID": "void", "REVERSAL": "void"}


def push_event(fields: Mapping[str, Any], provider: str) -> str:
    """ASSUMPTION (the APM pages do not describe refund pushes; "Transaction Result
    Push" pushes every transaction, sales included): what a verified push is about,
    from its signed ``transType``. ``REFUND`` → ``refund``; ``VOID`` or ``REVERSAL`` →
    ``void``; no ``transType`` → ``result_push`` (taken as about the transaction it
    names, as the merchant's refund id when it is one); any other (``SALE``, ``PAY``,
    …) is a sale: :class:`NotARefund` (``push.<transType>``)."""
    kind = _text(fields.get("transType"))
    if kind is None:
        return "result_push"
    event = REFUND_TRANS_TYPES.get(kind.upper())
    if event is not None:
        return event
    plain = kind.isascii() and kind.replace("_", "").isalnum() and len(kind) <= 32
    raise NotARefund(f"push.{kind.lower() if plain else 'unknown'}", provider=provider)


def _plain(value: Any) -> Any:
    """``raw``-ready copy: numbers as int or Decimal (never float)."""
    if type(value) is str:  # most values: nothing to convert
        return value
    if isinstance(value, JsonNumber):
        digits = value.lstrip("-")
        if digits.isdigit() and len(digits) <= 18:
            return int(value)
        return Decimal(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _push_amount(fields: Mapping[str, Any]) -> Money | None:
    currency = currency_from_code(fields.get("currencyCode"))
    amount = fields.get("amount")
    if currency is None or type(amount) is not str:
        return _money(amount, currency)
    # The usual push: the amount as text (its exact digits), straight to Money.
    try:
        return Money(amount, currency)
    except ValidationError:
        return None


def _original_ref(fields: Mapping[str, Any]) -> PaymentRef | None:
    payment_id = _text(fields.get("oriCheckoutId"))
    reference = _text(fields.get("oriTransIndexCode"))
    if payment_id is None and reference is None:
        return None
    try:
        return PaymentRef(payment_id=payment_id, merchant_reference=reference)
    except ValidationError:
        return None


@hookimpl
def refundcore_verify_callback(
    provider: ProviderInfo, config: PaywizardConfig, callback: Callback
) -> RefundNotification:
    try:
        fields = load_push_fields(callback.body)
    except (ValueError, RecursionError):
        raise SignatureError("the result push is not a JSON object") from None
    given = read_push_signature(callback, fields)
    if not given:
        raise SignatureError("the result push carries no sign")
    try:
        unsigned = _push_fields_text(fields).encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        raise SignatureError("the result push cannot be put in signing form") from None
    # push_signature, with the key made ready when the config was loaded; the secret is
    # joined in only within the call, so no name in this frame (which goes on to raise
    # for a forged push) holds the signed text.
    expected = config._key.hexdigest(unsigned + _credentials(config))
    if not constant_time_equals(expected, given):
        raise SignatureError("sign does not match")
    # Only an '&' (as is or escaped) or a name with '=' lets the string be re-cut; most
    # pushes have neither, and then the field-by-field check is skipped.
    if b"&" in callback.body or b"\\u0026" in callback.body or "=" in "".join(fields):
        check_push_framing(fields)
    refund_id = _text(fields.get("transIndexCode"))
    provider_refund_id = _text(fields.get("checkoutId"))
    if refund_id is None and provider_refund_id is None:
        raise SignatureError("signed result push names no transaction")
    event = push_event(fields, provider.id)
    return RefundNotification(
        provider=provider.id,
        status=push_status(fields),
        event=event,
        refund_id=refund_id,
        provider_refund_id=provider_refund_id,
        payment=_original_ref(fields),
        amount=_push_amount(fields),
        raw=_push_raw(fields),
    )


def _push_raw(fields: dict[str, Any]) -> dict[str, Any]:
    """A verified push's ``raw``: its fields but ``sign``, numbers as int or Decimal."""
    # A copy in C, then only the values that are not text (a few numbers) converted.
    raw = dict(fields)
    raw.pop("sign", None)
    for key, value in raw.items():
        if type(value) is not str:
            raw[key] = _plain(value)
    return raw
