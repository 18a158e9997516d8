"""refundcore provider plugin for BBMSL PayAPI (Hong Kong): payments made through
"Online Direct" (the default) or "Hosted Checkout" (``checkout = "hosted"``).

Everything this provider does is in this module: its config, how an operation becomes
a signed request, how a reply becomes a result, and how a notification is verified. The
gateway emulator used by the sandbox and the tests is in ``sandbox.py``.

The protocol in one paragraph: every call is ``POST`` with the JSON body
``{"request": "<params as a JSON string>", "signature": "<base64>"}``, where the
signature is RSASSA-PKCS1-v1_5 SHA-256 with the merchant's private key over the UTF-8
bytes of the ``request`` string. The reply is plain JSON with ``responseCode``
(``"0000"`` is success), ``message``, ``order`` and ``transaction``. Notifications are
flat JSON objects carrying a ``signature`` field made by BBMSL's own key over the other
fields written as sorted ``k=v`` pairs joined with ``&``. The refund request carries
no notify URL: BBMSL notifies the URL given when the payment was created.

Each guess the public documentation forces is marked ASSUMPTION and lives in one small
function named in PROTOCOL.md, beside this package, with its source.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal
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
from refundcore.crypto import PrivateKey, PublicKey, b64decode_strict
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
    "CHECKOUTS",
    "CURRENCIES",
    "NOTIFICATION_READ_FIELDS",
    "NOTIFY_URL_SETTING",
    "PATHS",
    "PROVIDER_ID",
    "SUCCESS_CODE",
    "DirectgwConfig",
    "JsonNumber",
    "check_notification_framing",
    "checkout_paths",
    "envelope",
    "json_text",
    "notification_amount",
    "notification_event",
    "notification_sign_texts",
    "notification_value_text",
    "order_id_number",
    "order_identifiers",
    "parse_notification",
    "php_query_text",
    "php_urlencode",
    "php_value_text",
    "provider_refund_id",
    "query_identifiers",
    "query_outcome",
    "sign_request_string",
]

PROVIDER_ID = "directgw"
#: The checkout a payment was made through (``DirectgwConfig.checkout``).
CHECKOUTS = ("direct", "hosted")
#: One path per checkout and operation kind; every call is a POST of the signed
#: envelope. Online Direct's are the API pages'; Hosted Checkout's are those BBMSL's
#: production WooCommerce plugin calls (trailing slash included).
PATHS: Mapping[str, Mapping[str, str]] = {
    "direct": {"refund": "/direct/refund", "query": "/direct/query", "void": "/direct/void"},
    "hosted": {
        "refund": "/hosted-checkout/refund/",
        "query": "/hosted-checkout/query/",
        "void": "/hosted-checkout/void/",
    },
}
#: Where a merchant sets the URL BBMSL notifies: a refund request cannot carry one.
NOTIFY_URL_SETTING = (
    "the order's callbackUrl.notify, given when the payment is created "
    "(BBMSL notifies that URL about the order's refund too)"
)
#: The only ``responseCode`` that means success.
SUCCESS_CODE = "0000"
#: ASSUMPTION: the currencies BBMSL documents for orders (both have 2 decimals, which is
#: what the refund ``amount`` carries). A refund names no currency: it is in the order's.
CURRENCIES = frozenset({"HKD", "USD"})
MERCHANT_REFERENCE_MAX = 64
# A JSON number without leading zeros that a Java ``long`` (BBMSL's order id type in its
# own demo app) holds whatever the digits: at most 18 of them.
_ORDER_ID = re.compile(r"0|[1-9][0-9]{0,17}")
_DIGITS = re.compile(r"[0-9]+")
_MAX_ID_TEXT = 128


def _check_checkout(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in CHECKOUTS:
        raise ConfigError(f"{value!r} is not one of {', '.join(CHECKOUTS)}", field=attribute.name)


def _check_merchant_id(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value or not value.isprintable() or value != value.strip():
        raise ConfigError(
            "must be non-empty, printable, without surrounding spaces", field=attribute.name
        )


@attrs.frozen(kw_only=True)
class DirectgwConfig(ProviderConfig):
    """Settings for BBMSL PayAPI (Online Direct).

    ``private_key`` is the merchant's RSA key (PEM PKCS#8 or PKCS#1, or bare base64)
    whose public half is registered with BBMSL; ``gateway_public_key`` is BBMSL's key,
    used to verify notifications. ``checkout`` is how the payments being refunded were
    made: ``"direct"`` (Online Direct, the default) or ``"hosted"`` (Hosted Checkout);
    each is refunded, queried and voided at its own paths (:func:`checkout_paths`).
    """

    merchant_id: str = attrs.field(validator=_check_merchant_id)
    private_key: PrivateKey
    gateway_public_key: PublicKey
    checkout: str = attrs.field(default="direct", validator=_check_checkout)


# -- JSON written exactly (no float anywhere) -------------------------------------------


@attrs.frozen
class JsonNumber:
    """A JSON number kept as the literal text it arrived as (``100.60`` stays
    ``"100.60"``), so nothing is lost to float or Decimal normalisation."""

    text: str

    def to_decimal(self) -> Decimal:
        """The exact value."""
        return Decimal(self.text)


def _decimal_number(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} cannot be written as a JSON number")
    # Fixed-point text of the Decimal itself: 76.19 stays "76.19", 100.00 stays "100.00".
    return format(value, "f")


def json_text(value: Any) -> str:
    """Compact JSON text for ``value``, written by hand so that numbers are exact.

    ``Decimal`` becomes a JSON number in fixed-point notation with its own digits
    (``Decimal("76.19")`` → ``76.19``), :class:`JsonNumber` its literal text, ``int``
    its digits; strings are escaped as JSON requires and otherwise left as they are
    (non-ASCII included). A ``float`` is refused: money never passes through one.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return _decimal_number(value)
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, got {type(key).__name__}")
            items.append(f"{json.dumps(key, ensure_ascii=False)}:{json_text(item)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(json_text(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON here")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Decoders are made once: ``json.loads`` with options builds a new one on every call.
_REPLY_JSON = json.JSONDecoder(parse_float=Decimal, parse_constant=_refuse_constant)


def _load_reply(body: bytes) -> Any:
    """A gateway reply as JSON, numbers with a fraction as ``Decimal`` (never float)."""
    return _REPLY_JSON.decode(body.decode("utf-8"))


# -- request signature ------------------------------------------------------------------


def sign_request_string(private_key: PrivateKey, request: str) -> str:
    """The envelope's ``signature``: base64 (once) of RSASSA-PKCS1-v1_5 SHA-256 over the
    UTF-8 bytes of the ``request`` string."""
    signature = private_key.sign_sha256(request.encode("utf-8"))
    return base64.b64encode(signature).decode("ascii")


def envelope(request: str, signature: str) -> bytes:
    """The body that goes on the wire: ``{"request":"<request>","signature":"<sig>"}``.

    The request string is JSON-escaped here; the gateway decodes it back to exactly the
    text that was signed.
    """
    return json_text({"request": request, "signature": signature}).encode("utf-8")


# -- building requests ------------------------------------------------------------------


def order_id_number(payment_id: str) -> int:
    """``payment_id`` → the ``orderId`` JSON number: ASCII digits only, no leading zero,
    at most 18 digits; anything else is refused naming ``payment.payment_id``."""
    if not _ORDER_ID.fullmatch(payment_id):
        raise ValidationError(
            f"{payment_id[:40]!r} is not a BBMSL order id (the orderId is a number: "
            "ASCII digits, no leading zero, at most 18 digits)",
            field="payment.payment_id",
        )
    return int(payment_id)


def checkout_paths(checkout: str) -> Mapping[str, str]:
    """ASSUMPTION (sources: the API pages for Online Direct; BBMSL's production
    WooCommerce plugin for Hosted Checkout, which the pages do not cover): the refund,
    query and void paths of the checkout a payment was made through. Hosted Checkout
    payments are refunded at ``/hosted-checkout/refund/``, Online Direct ones at
    ``/direct/refund``; each checkout's order is unknown at the other's paths."""
    return PATHS[checkout]


def order_identifiers(payment: PaymentRef, checkout: str) -> dict[str, Any]:
    """ASSUMPTION, where BBMSL's sources disagree: how an order is named in a request.

    ``orderId`` is a JSON number on Online Direct (the API page's type) and a JSON
    string of the same digits on Hosted Checkout (what BBMSL's production plugin sends
    there); either way it must be the digits of a BBMSL order id (:func:`order_id_number`).
    ``merchantReference`` is a string of at most 64 characters on both."""
    ids: dict[str, Any] = {}
    if payment.payment_id is not None:
        number = order_id_number(payment.payment_id)
        ids["orderId"] = number if checkout == "direct" else str(number)
    if payment.merchant_reference is not None:
        if len(payment.merchant_reference) > MERCHANT_REFERENCE_MAX:
            raise ValidationError(
                f"is {len(payment.merchant_reference)} characters; BBMSL takes at most "
                f"{MERCHANT_REFERENCE_MAX}",
                field="payment.merchant_reference",
            )
        ids["merchantReference"] = payment.merchant_reference
    if not ids:
        raise ValidationError(
            "BBMSL finds an order by payment_id (orderId) or merchant_reference "
            "(merchantReference); a transaction_id alone cannot be used",
            field="payment",
        )
    return ids


def query_identifiers(ids: Mapping[str, Any], checkout: str) -> dict[str, Any]:
    """ASSUMPTION: the query takes ``orderId`` *or* ``merchantReference`` (the docs say
    "or"), so only one is sent. Online Direct: the order id when known, else the
    merchant reference. Hosted Checkout: the merchant reference when known (BBMSL's
    production plugin queries by it alone), else the order id."""
    first = "orderId" if checkout == "direct" else "merchantReference"
    name = first if first in ids else next(key for key in ids if key != first)
    return {name: ids[name]}


def _params(config: DirectgwConfig, operation: Operation) -> tuple[str, dict[str, Any]]:
    paths = checkout_paths(config.checkout)
    if isinstance(operation, Refund):
        ids = order_identifiers(operation.payment, config.checkout)
        # Money holds exactly the currency's 2 decimals, so the number is "76.19" or
        # "100.00"; the currency itself is not sent: the refund is in the order's.
        return paths["refund"], {
            "merchantId": config.merchant_id,
            **ids,
            "amount": operation.amount.amount,
        }
    if isinstance(operation, Void):
        # A void reverses the whole order: BBMSL takes no amount for it.
        return paths["void"], {
            "merchantId": config.merchant_id,
            **order_identifiers(operation.payment, config.checkout),
        }
    if isinstance(operation, RefundQuery):
        if operation.payment is None:
            raise ValidationError(
                "BBMSL queries orders, not refunds: give the payment (payment_id or "
                "merchant_reference) the refund was made on",
                field="payment",
            )
        ids = query_identifiers(
            order_identifiers(operation.payment, config.checkout), config.checkout
        )
        return paths["query"], {"merchantId": config.merchant_id, **ids}
    raise ValidationError(f"{operation.kind} is not supported", field="operation")


# -- reading replies --------------------------------------------------------------------


def _id_text(value: Any) -> str | None:
    """An identifier the gateway sent as a JSON string or an integer, as text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, JsonNumber) and _DIGITS.fullmatch(value.text):
        text = value.text
    elif isinstance(value, str):
        text = value
    else:
        return None
    if not text or len(text) > _MAX_ID_TEXT or not text.isprintable() or text != text.strip():
        return None
    return text


def provider_refund_id(order: Mapping[str, Any], transaction: Mapping[str, Any]) -> str | None:
    """ASSUMPTION: the gateway's id for a refund (or void) is ``transaction.id`` when the
    reply carries a transaction object with an id, else ``order.id`` (as the docs' own
    example reply, which has no transaction). ``order.id`` may be a number or a string."""
    return _id_text(transaction.get("id")) or _id_text(order.get("id"))


def _money(amount: Any, currency: Any) -> Money | None:
    if isinstance(amount, JsonNumber):
        amount = amount.to_decimal()
    if not isinstance(amount, (Decimal, int, str)) or not isinstance(currency, str):
        return None
    try:
        return Money(amount, currency)
    except ValidationError:
        return None


def _transaction_money(order: Mapping[str, Any], transaction: Mapping[str, Any]) -> Money | None:
    return _money(transaction.get("amount"), transaction.get("currency", order.get("currency")))


def _text(value: Any) -> str | None:
    return value.upper() if isinstance(value, str) else None


#: Transaction types whose transaction is the refund itself. ASSUMPTION: the docs name
#: the field but list no values; "REFUND" is what the emulator sends.
REFUND_TRANSACTION_TYPES = frozenset({"REFUND"})


def query_outcome(
    order: Mapping[str, Any], transaction: Mapping[str, Any]
) -> tuple[RefundStatus, str | None]:
    """ASSUMPTION: where a refund stands, from a successful query's order and
    transaction (statuses compared case-insensitively). Returns the status and, for a
    FAILED or UNKNOWN one, an error code.

    1. A refund transaction (type REFUND): SUCCESS, REFUNDED or SETTLED → SUCCEEDED;
       DECLINED or VOIDED → FAILED ``refund_declined`` / ``refund_voided``.
    2. Any transaction whose status is REFUNDED → SUCCEEDED.
    3. Else the order status: REFUNDED → SUCCEEDED; SUCCESS, SETTLED, OPEN or CLOSED →
       FAILED ``not_refunded`` (the order shows no refund now; a refund still being
       processed looks the same, so this alone never proves it did not happen: the
       lookup is declared not authoritative); VOIDED → FAILED ``voided`` (reversed in
       full, not refunded: after an UNKNOWN *void* this means the void went through).
    4. Anything else → UNKNOWN ``unrecognised_status``.
    """
    txn_type, txn_status = _text(transaction.get("type")), _text(transaction.get("status"))
    if txn_type in REFUND_TRANSACTION_TYPES:
        if txn_status in ("SUCCESS", "REFUNDED", "SETTLED"):
            return RefundStatus.SUCCEEDED, None
        if txn_status in ("DECLINED", "VOIDED"):
            return RefundStatus.FAILED, f"refund_{txn_status.lower()}"
    if txn_status == "REFUNDED":
        return RefundStatus.SUCCEEDED, None
    order_status = _text(order.get("status"))
    if order_status == "REFUNDED":
        return RefundStatus.SUCCEEDED, None
    if order_status in ("SUCCESS", "SETTLED", "OPEN", "CLOSED"):
        return RefundStatus.FAILED, "not_refunded"
    if order_status == "VOIDED":
        return RefundStatus.FAILED, "voided"
    return RefundStatus.UNKNOWN, "unrecognised_status"


def _object(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    return value if isinstance(value, dict) else {}


def _parse(
    operation: Operation, response: HttpResponse, make: Callable[..., RefundResult]
) -> RefundResult:
    if response.status >= 500:
        return make(
            RefundStatus.UNKNOWN,
            error_code=f"http_{response.status}",
            message=f"gateway error HTTP {response.status}: the outcome is unknown",
        )
    try:
        data = _load_reply(response.body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return make(RefundStatus.UNKNOWN, error_code="unparseable", message="unreadable reply")
    code = data.get("responseCode")
    if not isinstance(code, str) or not code:
        return make(
            RefundStatus.UNKNOWN,
            error_code="unparseable",
            message="reply without responseCode",
            raw=data,
        )
    message = data["message"] if isinstance(data.get("message"), str) else None
    order, transaction = _object(data, "order"), _object(data, "transaction")
    if code != SUCCESS_CODE:
        if isinstance(operation, RefundQuery):
            # BBMSL publishes no code list, so "order not found" cannot be told from
            # "bad signature" or "busy": the refund's own status is still unknown.
            return make(
                RefundStatus.UNKNOWN,
                error_code=code,
                message=f"query declined ({message or code}): the refund's status is unknown",
                raw=data,
            )
        return make(RefundStatus.FAILED, error_code=code, message=message, raw=data)
    if not 200 <= response.status < 300:
        return make(
            RefundStatus.UNKNOWN,
            error_code=f"http_{response.status}",
            message=f"responseCode {code} with HTTP {response.status}: contradictory reply",
            raw=data,
        )
    if isinstance(operation, RefundQuery):
        status, error_code = query_outcome(order, transaction)
        if status is not RefundStatus.SUCCEEDED:
            return make(status, error_code=error_code, message=message, raw=data)
        is_refund_txn = _text(transaction.get("type")) in REFUND_TRANSACTION_TYPES
        return make(
            status,
            provider_refund_id=provider_refund_id(order, transaction),
            amount=_transaction_money(order, transaction) if is_refund_txn else None,
            message=message,
            raw=data,
        )
    # ASSUMPTION: the reply's transaction is the refund (or void) transaction, so its
    # amount is what was refunded; order.amount is the order's total and is not used.
    return make(
        RefundStatus.SUCCEEDED,
        provider_refund_id=provider_refund_id(order, transaction),
        amount=_transaction_money(order, transaction),
        message=message,
        raw=data,
    )


# -- notifications ----------------------------------------------------------------------


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # A key given twice could show a verifier one value and an application another.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


_NOTIFICATION_JSON = json.JSONDecoder(
    parse_float=JsonNumber,
    parse_int=JsonNumber,
    parse_constant=_refuse_constant,
    object_pairs_hook=_unique_object,
)


def parse_notification(body: bytes) -> dict[str, Any]:
    """A notification body as a JSON object with every number kept as its literal text
    (:class:`JsonNumber`); ``ValueError`` if it is not one JSON object with unique keys."""
    data = _NOTIFICATION_JSON.decode(body.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("a notification is a JSON object")
    return data


def notification_value_text(value: Any) -> str:
    """One notification value as its raw JSON text (the API pages' reading):

    * a string: its value, unescaped (``"a\\"b"`` on the wire → ``a"b``);
    * a number: its literal text exactly as received (``100.6``, ``699.00``, ``1076``,
      ``1e2`` stay as they are: no rounding, no normalising);
    * ``true`` / ``false`` / ``null``: those JSON literals;
    * an object or array (never seen, the notification is flat): its compact JSON text,
      keys in the order received, numbers as received, non-ASCII unescaped.
    """
    if isinstance(value, str):
        return value
    return json_text(value)


#: PHP's ``precision`` setting (default 14): the significant digits of a float printed.
_PHP_PRECISION = 14
_PHP_INT_MIN, _PHP_INT_MAX = -(2**63), 2**63 - 1


def _php_float_text(value: float) -> str:
    """A float as PHP prints it (``(string)$float``: ``%.14G`` in PHP's own layout)."""
    if math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0"
    mantissa, _, exponent = f"{abs(value):.{_PHP_PRECISION - 1}e}".partition("e")
    digits = mantissa.replace(".", "").rstrip("0")
    point = int(exponent) + 1  # where the decimal point goes among the digits
    if point < -3 or point > _PHP_PRECISION:
        power = point - 1
        return f"{sign}{digits[0]}.{digits[1:] or '0'}E{'-' if power < 0 else '+'}{abs(power)}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if len(digits) <= point:
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def php_value_text(value: Any) -> str:
    """One notification value as BBMSL's production plugin (PHP) writes it in the
    signed text: ``sprintf('%s=%s', $k, $v)`` over ``json_decode($body, true)``.

    * a string: as it is;
    * an integer that fits PHP's int (64 bits): its digits (``-0`` → ``0``);
    * any other number is a PHP float, printed with 14 significant digits and no
      trailing zeros: ``699.00`` → ``699``, ``0.10`` → ``0.1``, ``1e2`` → ``100``,
      ``1e15`` → ``1.0E+15``, ``0.00001`` → ``1.0E-5``, ``1e999`` → ``INF``;
    * ``true`` → ``1``; ``false`` and ``null`` → empty;
    * an object or array → ``Array``.
    """
    if isinstance(value, str):
        return value
    if value is True:
        return "1"
    if value is False or value is None:
        return ""
    if isinstance(value, JsonNumber):
        text = value.text
        if not any(mark in text for mark in ".eE"):
            number = int(text)
            if _PHP_INT_MIN <= number <= _PHP_INT_MAX:
                return str(number)
        return _php_float_text(float(text))
    if isinstance(value, (dict, list)):
        return "Array"
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _sign_text(fields: Mapping[str, Any], value_text: Callable[[Any], str]) -> str:
    pairs = [f"{key}={value_text(value)}" for key, value in fields.items() if key != "signature"]
    return "&".join(sorted(pairs))


# PHP's urlencode, byte by byte over UTF-8: ASCII letters, digits and "-_." as they
# are, a space as "+", any other byte as "%XX" (upper-case hex; "~" too, which Python's
# quote would leave).
_URL_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
_URL_BYTES = tuple(
    chr(byte) if byte in _URL_SAFE else "+" if byte == 0x20 else f"%{byte:02X}"
    for byte in range(256)
)


def php_urlencode(text: str) -> str:
    """``text`` as PHP's ``urlencode`` writes it (what ``http_build_query`` uses by
    default, ``PHP_QUERY_RFC1738``): ``"a b~"`` → ``"a+b%7E"``."""
    return "".join([_URL_BYTES[byte] for byte in text.encode("utf-8")])


def php_query_text(fields: Mapping[str, Any]) -> str | None:
    """The text the *Woo plugin* 1.0.8 verified a notification over: ``ksort`` then
    ``http_build_query`` of every field but ``signature``. Fields are sorted by name
    (byte order) and written ``name=value`` joined with ``&``, name and value
    URL-encoded (:func:`php_urlencode`); a value is written as in
    :func:`php_value_text` except that ``false`` is ``0``: ``1e15`` → ``1.0E%2B15``.

    ``None`` when a value is ``null``, an array or an object: ``http_build_query``
    leaves a ``null`` out and writes an array's members under bracketed names
    (``a%5Bb%5D=c``, as a field named ``a[b]`` would be), so such a body would be
    signed alike with fields added, dropped or re-shaped."""
    pairs = []
    for name in sorted(fields):
        if name == "signature":
            continue
        value = fields[name]
        if value is None or isinstance(value, (dict, list)):
            return None
        text = "0" if value is False else php_value_text(value)
        pairs.append(f"{php_urlencode(name)}={php_urlencode(text)}")
    return "&".join(pairs)


#: The fields read that are read alike as a JSON string or number.
_NUMBER_READ_FIELDS = frozenset({"amount", "orderId"})


def _reads_alike_url_encoded(fields: Mapping[str, Any]) -> bool:
    # A read field whose text URL-encoding changes (a "+" or "%" in a reference...) would
    # read one way from this text and another from the PHP text of the same bytes; a
    # reference, status or currency sent as a number would be read as none at all.
    for name in NOTIFICATION_READ_FIELDS:
        if name not in fields:
            continue
        value = fields[name]
        if not isinstance(value, str) and not (
            isinstance(value, JsonNumber) and name in _NUMBER_READ_FIELDS
        ):
            return False
        text = php_value_text(value)
        if php_urlencode(text) != text:
            return False
    return True


def notification_sign_texts(fields: Mapping[str, Any]) -> Iterator[str]:
    """ASSUMPTION, where BBMSL's sources disagree: the texts a notification's signature
    may cover, given one at a time so that a text is built only once the ones before
    it failed to verify. The first two are every top-level field but ``signature`` as
    ``k=v``, the strings sorted (byte order), joined with ``&``; they differ in how a
    value is written:

    1. as PHP prints the json-decoded value (:func:`php_value_text`), as BBMSL's
       production plugin verifies: ``699.00`` → ``699``, ``true`` → ``1``;
    2. the raw JSON text (:func:`notification_value_text`), as the API pages read;
    3. the URL-encoded text BBMSL's plugin verified before it (:func:`php_query_text`),
       offered only when the body is flat with no ``null`` and every field read
       (:data:`NOTIFICATION_READ_FIELDS`) is a string (``amount`` and ``orderId`` may
       be numbers) that URL-encoding leaves as it is: then it reads those fields as
       the first text of the same bytes would.

    A signature over any of them is accepted. All are checked with BBMSL's key, so none
    lets anyone but BBMSL sign. The PHP text comes first (what the plugin that runs in
    production accepts, so usually the one verify needed); a text equal to one given
    before is not given again (with every value a string of letters and digits the
    three are one)."""
    php = _sign_text(fields, php_value_text)
    yield php
    raw = _sign_text(fields, notification_value_text)
    if raw != php:
        yield raw
    if not _reads_alike_url_encoded(fields):
        return
    query = php_query_text(fields)
    if query is not None and query not in (php, raw):
        yield query


#: The top-level fields a verified notification is read by.
NOTIFICATION_READ_FIELDS = ("amount", "currency", "merchantReference", "orderId", "status")
# "&", a name, "=": a whole signed pair, inside a value.
_PAIR_INSIDE = re.compile(r"&[^&=]*=")


def check_notification_framing(fields: Mapping[str, Any]) -> None:
    """ASSUMPTION: a genuine notification never needs a reading its signed text cannot
    tell apart from another. Refused: a field name holding ``&`` or ``=``; an
    ``amount``, ``currency``, ``orderId`` or ``status`` holding ``&``; a
    ``merchantReference`` (the merchant's own text) holding ``&<name>=``; any other
    value holding ``&<name>=`` for a field of :data:`NOTIFICATION_READ_FIELDS`. The
    signed text joins ``k=v`` with ``&`` and escapes nothing:
    ``{"merchantReference": "R1&orderId=1076"}`` signs as ``{"merchantReference":
    "R1", "orderId": 1076}`` does, and would be read with another reference and no
    order id. :class:`SignatureError` when it is so."""
    for name, value in fields.items():
        if "&" in name or "=" in name:
            raise SignatureError("a notification field name holds '&' or '='")
        text = notification_value_text(value)
        if "&" not in text:
            continue
        if name == "merchantReference":
            refused = _PAIR_INSIDE.search(text) is not None
        else:
            refused = name in NOTIFICATION_READ_FIELDS or any(
                f"&{read}=" in text for read in NOTIFICATION_READ_FIELDS
            )
        if refused:
            raise SignatureError(f"notification field {name} holds another field's text")


def notification_event(status: str | None, provider: str) -> str:
    """ASSUMPTION: what a notification's ``status`` reports. BBMSL documents only
    payment-success notifications; a refund is taken to be reported with the order's
    status REFUNDED (event ``refund``) and a void with VOIDED (event ``void``). Any
    other status is not about a refund: :class:`NotARefund` (SUCCESS → ``payment``,
    else ``order.<status>``), raised only once the signature has verified."""
    if status == "REFUNDED":
        return "refund"
    if status == "VOIDED":
        return "void"
    if status == "SUCCESS":
        raise NotARefund("payment", provider=provider)
    plain = status is not None and status.isascii() and status.isalnum() and len(status) <= 32
    label = status.lower() if plain and status else "unknown"
    raise NotARefund(f"order.{label}", provider=provider)


def _is_json_media_type(content_type: str | None) -> bool:
    """ASSUMPTION: BBMSL posts notifications as ``application/json`` (any ``…/json`` or
    ``…+json`` type is accepted). The signature is in the body, so this check is the only
    thing that refuses a body stripped of its headers."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media.endswith("/json") or media.endswith("+json")


def _raw_value(value: Any) -> Any:
    if isinstance(value, JsonNumber):
        return value.to_decimal()
    if isinstance(value, dict):
        return {key: _raw_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_raw_value(item) for item in value]
    return value


def notification_amount(amount: Any, currency: Any) -> Money | None:
    """A notification's amount, where it names a ``currency``. A JSON number is read
    only while it has at most 14 significant digits in the currency's minor units: the
    PHP text (which the signature may cover) keeps no more, so ``1234567890123.45`` and
    ``1234567890123.44`` sign alike and neither can be taken as signed; ``raw`` keeps
    it."""
    money = _money(amount, currency)
    if (
        money is not None
        and isinstance(amount, JsonNumber)
        and abs(money.minor_units) >= 10**_PHP_PRECISION
    ):
        return None
    return money


def _payment_ref(order_id: str | None, reference: Any) -> PaymentRef | None:
    try:
        return PaymentRef(
            payment_id=order_id,
            merchant_reference=reference if isinstance(reference, str) else None,
        )
    except ValidationError:
        return None


# -- hooks ------------------------------------------------------------------------------


@hookimpl
def refundcore_register_providers(register: Callable[[ProviderInfo], None]) -> None:
    """Register BBMSL PayAPI (Online Direct)."""
    register(
        ProviderInfo(
            id=PROVIDER_ID,
            name="BBMSL PayAPI (Online Direct)",
            config_class=DirectgwConfig,
            capabilities=Capabilities(
                partial_refunds=True,
                refunds_per_payment=1,
                query=True,
                void=True,
                callbacks=True,
                currencies=CURRENCIES,
                # The gateway never sees the refund id; only refund-once-per-order
                # protects against a resend, and it answers a resend with a decline.
                idempotent_refund_id=False,
                callback_timestamps=False,
                # BBMSL never sees the refund id: a query reports the order, and an
                # order standing unrefunded is read from an assumed status mapping.
                lookup=Lookup(
                    by=LookupKey.PAYMENT,
                    absence_authoritative=False,
                    settle_delay=60.0,
                    not_found_codes={"not_refunded"},
                ),
                notify_url=False,
                notify_url_setting=NOTIFY_URL_SETTING,
            ),
            environments={
                "sandbox": "https://payapi.sit.bbmsl.com",
                "production": "https://payapi.prod.bbmsl.com",
            },
            sandbox="refundcore_directgw.sandbox:DirectgwEmulator",
            callback_ack=CallbackAck(200, "text/plain", b"OK"),
            docs_url="https://docs.bbmsl.com",
        )
    )


@hookimpl
def refundcore_build_request(config: DirectgwConfig, operation: Operation) -> HttpRequest:
    """Build the request string (the params as compact JSON, serialised once).

    The body returned here is the ``request`` string itself; the sign stage signs those
    exact bytes and wraps them in the ``{"request", "signature"}`` envelope. There is
    no notify URL to send (``Capabilities.notify_url`` is False: the client refuses
    one before this runs); BBMSL notifies the URL given when the payment was created.
    """
    path, params = _params(config, operation)
    return HttpRequest(
        "POST",
        f"{config.base_url}{path}",
        headers={"Content-Type": "application/json"},
        body=json_text(params).encode("utf-8"),
    )


@hookimpl
def refundcore_sign_request(config: DirectgwConfig, request: HttpRequest) -> HttpRequest:
    """Sign the request string's exact bytes and put string and signature in the envelope."""
    text = request.body.decode("utf-8")
    return request.with_body(envelope(text, sign_request_string(config.private_key, text)))


@hookimpl
def refundcore_parse_response(
    provider: ProviderInfo, operation: Operation, response: HttpResponse
) -> RefundResult:
    """``responseCode`` 0000 → SUCCEEDED (for a query: per :func:`query_outcome`); any
    other code → FAILED with that code (for a query: UNKNOWN); HTTP 5xx or an unreadable
    reply → UNKNOWN."""

    def make(status: RefundStatus, **extra: Any) -> RefundResult:
        return RefundResult(
            provider=provider.id,
            refund_id=operation.refund_id,
            status=status,
            operation=operation.kind,
            http_status=response.status,
            **extra,
        )

    return _parse(operation, response, make)


@hookimpl
def refundcore_verify_callback(
    provider: ProviderInfo, config: DirectgwConfig, callback: Callback
) -> RefundNotification:
    """Verify a notification's body signature with ``gateway_public_key``, then parse it.

    There is no signed timestamp: a replayed genuine notification verifies, so handle
    notifications idempotently (by order id), as BBMSL itself asks.
    """
    if not _is_json_media_type(callback.headers.get("Content-Type")):
        raise SignatureError("a BBMSL notification is posted as application/json")
    try:
        fields = parse_notification(callback.body)
    except (ValueError, TypeError, RecursionError):
        raise SignatureError("notification body is not a JSON object") from None
    signature = fields.get("signature")
    if not isinstance(signature, str) or not signature:
        raise SignatureError("notification has no signature")
    raw_signature = b64decode_strict(signature)
    key = config.gateway_public_key
    try:
        verified = any(
            key.verify_sha256(raw_signature, text.encode("utf-8"))
            for text in notification_sign_texts(fields)
        )
    except (ValueError, TypeError, RecursionError):
        raise SignatureError(
            "notification body is not a JSON object BBMSL could have signed"
        ) from None
    if not verified:
        raise SignatureError("signature does not match")
    # Only an '&' (as is or escaped) or a name with '=' lets the text be re-cut; most
    # notifications have neither, and then the field-by-field check is skipped.
    if b"&" in callback.body or b"\\u0026" in callback.body or "=" in "".join(fields):
        check_notification_framing(fields)

    status_text = fields.get("status")
    event = notification_event(status_text if isinstance(status_text, str) else None, provider.id)
    order_id = _id_text(fields.get("orderId"))
    return RefundNotification(
        provider=provider.id,
        status=RefundStatus.SUCCEEDED,
        event=event,
        # No transaction id in a notification: the order id identifies the refund (a
        # BBMSL order is refunded at most once).
        provider_refund_id=order_id,
        payment=_payment_ref(order_id, fields.get("merchantReference")),
        # A notification names no currency, so its amount is left in raw.
        amount=notification_amount(fields.get("amount"), fields.get("currency")),
        raw={key: _raw_value(value) for key, value in fields.items() if key != "signature"},
    )
