"""refundcore provider plugin for PayWiser "txshield" (the TxProcess / PayShield platform).

Everything this provider does is in this module: its config, how a refund or a status
query becomes a signed request, how a reply becomes a result, and how a postback is
verified. The gateway emulator used by the sandbox and the tests is in ``sandbox.py``.

The wire protocol, in short (PROTOCOL.md beside this package has the whole story):

* refund: ``POST /api/v1/index.php/{ptxid}/refund``, form fields ``sid, hash,
  postback_url, timestamp, currency, amount, tx_action=REFUND`` in that order, with
  ``hash = md5(sid + timestamp + amount + currency + rcode)`` and the amount always
  written with two decimals (:func:`wire_amount`); the reply is JSON with ``status``
  ``OK`` / ``PEND`` / ``EXC``.
* status: ``GET /api/v1/index.php/{ptxid}/getstatus?hash=md5(sid + rcode)``.
* postback: a form POST to the postback URL carrying ``vry`` (or ``vrfy``) =
  ``sha256(sid;rcode;txid;status;amount;currency;tx_action)``.

MD5, and plain hashes of a secret, are PayWiser's protocol, not a choice made here.

PayWiser's refund request carries no merchant reference, so the gateway cannot refuse
a repeated refund id: stopping a resend is the job of refundcore's journal, not the
gateway's. Nor does the postback say which refund it is about, so the plugin adds the
refund id, with a tag keyed by the rcode, to the postback URL it sends
(:func:`postback_url_for`), and :func:`refundcore_verify_callback` reads it back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote_plus, unquote_plus, urlencode, urlsplit, urlunsplit

import attrs

from refundcore import (
    CallbackAck,
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
    Secret,
    SignatureError,
    ValidationError,
    hookimpl,
)
from refundcore.crypto import HmacSha256Key, constant_time_equals, hmac_sha256_hex
from refundcore.models import Callback, Operation, PaymentRef, Refund, RefundQuery, check_url
from refundcore.money import Money

__all__ = [
    "CHECK_FIELDS",
    "DEFAULT_TIMESTAMP_FORMAT",
    "PaywiserConfig",
    "current_time",
    "form_fields",
    "postback_check",
    "postback_event",
    "postback_tag",
    "postback_url_for",
    "refund_hash",
    "status_hash",
    "status_record_problem",
    "timestamp_text",
    "wire_amount",
    "wire_status",
]

PROVIDER_ID = "paywiser"
PRODUCTION_URL = "https://office.paywiser.com"
API_PREFIX = "/api/v1/index.php"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: ASSUMPTION: PayWiser's page says only "hhmmss". We read it as UTC.
DEFAULT_TIMESTAMP_FORMAT = "%H%M%S"

#: Names the postback's check value goes by: ``vry`` on the refund page, ``vrfy`` on
#: PayWiser's other pages. Either is accepted; when both are present both must match.
CHECK_FIELDS = ("vry", "vrfy")

#: Query parameters refundcore adds to the postback URL (see :func:`postback_url_for`).
REFUND_ID_PARAM = "refundcore_refund_id"
TAG_PARAM = "refundcore_tag"

#: The order of the refund form's fields on the wire.
REFUND_FIELD_ORDER = ("sid", "hash", "postback_url", "timestamp", "currency", "amount", "tx_action")

# ptxid goes into the URL path: only characters that need no escaping and cannot change
# the path's meaning ("../", "/", "%", "?" and spaces are all refused).
_PTXID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# sid is concatenated into hashes and sent as a form field: printable ASCII, no spaces.
_SID = re.compile(r"[!-~]{1,64}")
# Longest text kept from one reply field, so a hostile reply cannot flood messages.
_FIELD_MAX = 300

# -- configuration ---------------------------------------------------------------------


def _check_sid(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not _SID.fullmatch(value):
        raise ConfigError(
            "must be 1 to 64 printable ASCII characters without spaces", field=attribute.name
        )


def _check_postback_url(
    _: object, attribute: attrs.Attribute[str | None], value: str | None
) -> None:
    if value is None:
        return
    try:
        check_url(value, attribute.name)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None
    names = {name for name, _ in parse_qsl(urlsplit(value).query, keep_blank_values=True)}
    if names & {REFUND_ID_PARAM, TAG_PARAM}:
        raise ConfigError(
            f"must not carry {REFUND_ID_PARAM} or {TAG_PARAM}: refundcore adds them",
            field=attribute.name,
        )


def _check_timestamp_format(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    # Two instants that differ in every field: a useful format tells them apart.
    early = dt.datetime(2001, 2, 3, 4, 5, 6, tzinfo=dt.timezone.utc)
    late = dt.datetime(2012, 11, 10, 13, 14, 15, tzinfo=dt.timezone.utc)
    try:
        # The C strftime stops at a NUL: refuse control characters before formatting.
        if not value.isprintable():
            raise ValueError("control character")
        first, second = early.strftime(value), late.strftime(value)
    except (ValueError, UnicodeError):
        first = second = ""
    if not first or first == second:
        raise ConfigError(
            f"{value[:40]!r} is not a strftime format that changes with time (e.g. '%H%M%S')",
            field=attribute.name,
        )
    if not (first.isascii() and first.isprintable()) or len(first) > 64:
        raise ConfigError(
            "must produce at most 64 printable ASCII characters", field=attribute.name
        )


@attrs.frozen(kw_only=True)
class PaywiserConfig(ProviderConfig):
    """Settings for PayWiser.

    PayWiser publishes no sandbox host: use ``environment = "production"``, or set
    ``base_url`` to the test host PayWiser gave you.
    """

    #: Site id: identifies the merchant's web site at PayWiser.
    sid: str = attrs.field(validator=_check_sid)
    #: The secret paired with the sid. Only ever hashed; never sent, logged or stored.
    rcode: Secret
    #: Where PayWiser posts refund results when a refund gives no ``notify_url``.
    postback_url: str | None = attrs.field(default=None, validator=_check_postback_url)
    #: How the request timestamp is written (UTC). See DEFAULT_TIMESTAMP_FORMAT.
    timestamp_format: str = attrs.field(
        default=DEFAULT_TIMESTAMP_FORMAT, validator=_check_timestamp_format
    )
    # The getstatus hash never changes: a standing credential. As a Secret field it is
    # masked wherever a reply or an error quotes it, as the rcode is.
    _status_hash: Secret = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda self: Secret(status_hash(self.sid, self.rcode.reveal())), takes_self=True
        ),
    )
    # Made from the rcode with the config, not per postback: see HmacSha256Key.
    _tag_key: HmacSha256Key = attrs.field(
        init=False,
        repr=False,
        eq=False,
        default=attrs.Factory(
            lambda self: HmacSha256Key(self.rcode.reveal().encode("utf-8")), takes_self=True
        ),
    )


# -- forms --------------------------------------------------------------------------------


def _unescaped(text: str) -> str:
    # Most fields carry no escape at all: leave those as they are.
    return unquote_plus(text, errors="replace") if "%" in text or "+" in text else text


def form_fields(
    text: str, *, strict: bool = False, max_fields: int | None = None
) -> list[tuple[str, str]]:
    """``application/x-www-form-urlencoded`` fields, in order: what
    ``urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=strict,
    max_num_fields=max_fields)`` returns, at a fraction of its cost (only fields with an
    escape are unescaped). ``ValueError`` where ``parse_qsl`` raises one.
    """
    if not text:
        return []
    if max_fields is not None and text.count("&") + 1 > max_fields:
        raise ValueError("too many form fields")
    pairs = []
    for field in text.split("&"):
        if not field and not strict:
            continue
        name, equals, value = field.partition("=")
        if not equals and strict:
            raise ValueError(f"bad form field: {field[:40]!r}")
        if "%" in field or "+" in field:
            name, value = _unescaped(name), _unescaped(value)
        pairs.append((name, value))
    return pairs


# quote_plus leaves these as they are: a text of them alone needs no quoting.
_FORM_SAFE = re.compile(r"[A-Za-z0-9_.~-]*\Z")


def _escaped(text: str) -> str:
    """``text`` as a form value: what ``quote_plus`` gives, without its cost for a text
    that needs no quoting."""
    return text if _FORM_SAFE.match(text) else quote_plus(text)


# -- signatures and check values (PayWiser's, weak as they are) -------------------------


def refund_hash(sid: str, timestamp: str, amount: str, currency: str, rcode: str) -> str:
    """The refund request's ``hash``: lowercase hex MD5 of
    ``sid + timestamp + amount + currency + rcode``, plain concatenation (UTF-8)."""
    text = sid + timestamp + amount + currency + rcode
    return hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 - PayWiser's protocol


def status_hash(sid: str, rcode: str) -> str:
    """The getstatus ``hash``: lowercase hex MD5 of ``sid + rcode``.

    It never changes, so it is a standing credential derived from the secret alone:
    treat it like the rcode itself.
    """
    return hashlib.md5((sid + rcode).encode("utf-8")).hexdigest()  # noqa: S324 - PayWiser's protocol


def postback_check(
    sid: str, rcode: str, txid: str, status: str, amount: str, currency: str, tx_action: str
) -> str:
    """The postback's check value (``vry`` / ``vrfy``): lowercase hex SHA-256 of
    ``sid;rcode;txid;status;amount;currency;tx_action``, from the values as received."""
    text = ";".join((sid, rcode, txid, status, amount, currency, tx_action))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def postback_tag(
    rcode: str, sid: str, ptxid: str, refund_id: str, amount: str, currency: str
) -> str:
    """refundcore's own tag on the postback URL: hex HMAC-SHA256, keyed with the rcode,
    binding the merchant's refund id to the payment, amount and currency it refunds.

    PayWiser's check value does not cover the URL, so without this tag anyone holding
    one genuine postback could replay it to the URL of another refund.
    """
    return hmac_sha256_hex(
        rcode.encode("utf-8"), _tag_message(sid, ptxid, refund_id, amount, currency)
    )


def _tag_message(sid: str, ptxid: str, refund_id: str, amount: str, currency: str) -> bytes:
    """What :func:`postback_tag` signs."""
    message = "\n".join(("refundcore-paywiser-postback", sid, ptxid, refund_id, amount, currency))
    return message.encode("utf-8")


# -- assumptions, each in one place ------------------------------------------------------


def current_time() -> dt.datetime:
    """The clock the sign stage reads: now, in UTC. Tests replace it to fix the timestamp."""
    return dt.datetime.now(dt.timezone.utc)


def timestamp_text(config: PaywiserConfig, now: dt.datetime) -> str:
    """The request ``timestamp``: ``now`` in UTC written with ``config.timestamp_format``.

    ASSUMPTION: PayWiser's page says "hhmmss" and names no time zone; UTC is our reading.
    The gateway must see the same value that went into the hash, which the sign stage
    guarantees by computing both from this one string.
    """
    return now.astimezone(dt.timezone.utc).strftime(config.timestamp_format)


_CENT = Decimal("0.01")


def wire_amount(amount: Money) -> str:
    """The ``amount`` field: always two decimals, as PayWiser's refund page says
    ("Refund amount with 2 decimals"), whatever the currency's own exponent: USD
    ``17.00``, JPY 17 → ``17.00``, KWD 1.250 → ``1.25``. The hash signs this exact
    text. An amount that cannot be written with two decimals (KWD 1.255) cannot be
    refunded through PayWiser: :class:`ValidationError` on ``amount``, before sending.
    """
    if amount.exponent == 2:
        return amount.to_wire()  # Money holds it with exactly its currency's decimals
    cents = amount.amount.quantize(_CENT)
    if cents != amount.amount:
        raise ValidationError(
            f"{amount} cannot be written with the two decimals PayWiser takes",
            field="amount",
        )
    return f"{cents:f}"


_WIRE_STATUSES = {
    "OK": RefundStatus.SUCCEEDED,
    "PEND": RefundStatus.PENDING,
    "EXC": RefundStatus.FAILED,
}


def wire_status(value: object) -> RefundStatus:
    """Map PayWiser's ``status`` to a refund status.

    ``OK`` → SUCCEEDED, ``PEND`` → PENDING, ``EXC`` → FAILED. Anything else is UNKNOWN,
    including ``PAYG_ERROR``. ASSUMPTION: ``PAYG_ERROR`` means the processing gateway
    behind PayWiser reported an error, and PayWiser does not say whether the refund
    reached the acquirer, so it is not safe to call it FAILED (a merchant would refund
    again). Query the payment or ask PayWiser.
    """
    if not isinstance(value, str):
        return RefundStatus.UNKNOWN
    return _WIRE_STATUSES.get(value, RefundStatus.UNKNOWN)


def status_record_problem(record: Mapping[str, Any], txid: str | None) -> str | None:
    """Why a getstatus reply cannot be taken as the status of the refund with gateway id
    ``txid`` (``None`` when it can).

    ASSUMPTION: PayWiser's refund page does not document the getstatus reply. PayShield
    (the same platform) documents it as one transaction object, the latest under the
    parent: ``{tid, txid, parent_txid, status, tx_action, amount, currency, reference,
    ref1..ref4, vrfy}``. So the reply is about our refund only when it is a ``REFUND``
    with our refund's ``txid``. Without a txid to compare, it cannot be tied to our
    refund id; a later transaction on the same payment hides an earlier refund's status.
    """
    action = _text(record.get("tx_action"), 40)
    if action is None:
        return "the status reply names no transaction"
    if action != "REFUND":
        return f"the latest transaction on this payment is a {action}, not a refund"
    latest = _text(record.get("txid"), 128)
    if txid is None:
        amount = _money(record.get("amount"), record.get("currency"))
        return (
            f"the latest refund on this payment is txid {latest}"
            + (f" for {amount}" if amount else "")
            + f" with status {_text(record.get('status'), 20)}; "
            "pass provider_refund_id to tie it to this refund"
        )
    if latest != txid:
        return f"the latest refund on this payment is another one (txid {latest})"
    return None


# -- requests -------------------------------------------------------------------------------


def _ptxid(payment: PaymentRef | None) -> str:
    value = payment.payment_id if payment is not None else None
    if value is None:
        raise ValidationError(
            "PayWiser needs the parent transaction id (ptxid) as payment_id; "
            "a merchant_reference or transaction_id alone cannot be refunded or queried",
            field="payment.payment_id",
        )
    if not _PTXID.fullmatch(value):
        raise ValidationError(
            "must be 1 to 64 letters, digits, '_' or '-' (it goes into the URL path)",
            field="payment.payment_id",
        )
    return value


def postback_url_for(
    url: str, config: PaywiserConfig, *, ptxid: str, refund_id: str, amount: str, currency: str
) -> str:
    """The postback URL sent to PayWiser: ``url`` plus ``refundcore_refund_id`` (the
    merchant's refund id) and ``refundcore_tag`` (:func:`postback_tag`) in its query.

    PayWiser posts back to the URL as given, so the postback then says which refund it
    is about; :func:`refundcore_verify_callback` checks the tag and reports the refund id.
    """
    parts = urlsplit(url)
    # Reading the query is only needed when it could spell one of our names.
    names = (
        {name for name, _ in form_fields(parts.query)}
        if "refundcore" in parts.query or "%" in parts.query
        else set()
    )
    if names & {REFUND_ID_PARAM, TAG_PARAM}:
        raise ValidationError(
            f"must not carry {REFUND_ID_PARAM} or {TAG_PARAM}: refundcore adds them",
            field="notify_url",
        )
    tag = postback_tag(config.rcode.reveal(), config.sid, ptxid, refund_id, amount, currency)
    extra = f"{REFUND_ID_PARAM}={_escaped(refund_id)}&{TAG_PARAM}={tag}"  # the tag is hex
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def _status_request(config: PaywiserConfig, ptxid: str) -> HttpRequest:
    return HttpRequest(
        "GET",
        f"{config.base_url}{API_PREFIX}/{ptxid}/getstatus",
        headers={"Accept": "application/json"},
    )


def _build_refund(config: PaywiserConfig, operation: Refund) -> HttpRequest:
    ptxid = _ptxid(operation.payment)
    notify = operation.notify_url or config.postback_url
    if notify is None:
        raise ValidationError(
            "PayWiser requires a postback URL: pass notify_url or set postback_url in the config",
            field="notify_url",
        )
    amount, currency = wire_amount(operation.amount), operation.amount.currency
    postback = postback_url_for(
        notify, config, ptxid=ptxid, refund_id=operation.refund_id, amount=amount, currency=currency
    )
    # hash and timestamp are added by the sign stage, in their places in this order.
    # The names, the currency (ISO letters) and the amount (digits) need no escaping.
    body = (
        f"sid={_escaped(config.sid)}&postback_url={_escaped(postback)}"
        f"&currency={currency}&amount={amount}&tx_action=REFUND"
    )
    return HttpRequest(
        "POST",
        f"{config.base_url}{API_PREFIX}/{ptxid}/refund",
        headers={"Content-Type": FORM_CONTENT_TYPE, "Accept": "application/json"},
        body=body.encode("ascii"),
    )


@hookimpl
def refundcore_build_request(config: PaywiserConfig, operation: Operation) -> HttpRequest:
    """A refund becomes the refund form POST (unsigned); a query becomes a getstatus GET."""
    if isinstance(operation, Refund):
        return _build_refund(config, operation)
    if isinstance(operation, RefundQuery):
        return _status_request(config, _ptxid(operation.payment))
    raise ValidationError(f"PayWiser has no {operation.kind} operation", field="operation")


_HASHED_FIELDS = ("sid", "amount", "currency")


def _sign_refund(config: PaywiserConfig, request: HttpRequest) -> HttpRequest:
    try:
        text = request.body.decode("ascii")
    except UnicodeDecodeError:
        raise ValidationError("the refund body is not a form", field="body") from None
    # One pass over the fields as built: the values the hash covers are read, hash and
    # timestamp go in at their places (any old ones are dropped: signed again), every
    # other byte stays as it was.
    values: dict[str, str] = {}
    pairs: list[str] = []
    hash_at = timestamp_at = -1
    for pair in text.split("&"):
        raw_name, equals, value = pair.partition("=")
        if not equals:
            raise ValidationError("the refund body is not a form", field="body")
        name = _unescaped(raw_name)
        if name in ("hash", "timestamp"):
            continue
        pairs.append(pair)
        if name == "sid":
            hash_at = len(pairs)
        elif name == "postback_url":
            timestamp_at = len(pairs)
        if name in _HASHED_FIELDS:
            values[name] = _unescaped(value)
    missing = [
        name
        for name, present in (
            ("sid", hash_at >= 0),
            ("postback_url", timestamp_at >= 0),
            ("amount", "amount" in values),
            ("currency", "currency" in values),
        )
        if not present
    ]
    if missing:
        raise ValidationError(f"the refund body lacks {', '.join(missing)}", field="body")
    timestamp = timestamp_text(config, current_time())
    digest = refund_hash(
        values["sid"], timestamp, values["amount"], values["currency"], config.rcode.reveal()
    )
    # The later place first, so that the earlier index still holds.
    places = sorted(
        [(hash_at, f"hash={digest}"), (timestamp_at, f"timestamp={_escaped(timestamp)}")],
        reverse=True,
    )
    for at, field in places:
        pairs.insert(at, field)
    return request.with_body("&".join(pairs).encode("ascii"))


def _with_status_hash(config: PaywiserConfig, url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "hash"]
    query.append(("hash", config._status_hash.reveal()))
    return urlunsplit(parts._replace(query=urlencode(query)))


@hookimpl
def refundcore_sign_request(config: PaywiserConfig, request: HttpRequest) -> HttpRequest:
    """Add the timestamp and MD5 ``hash`` to a refund form; the static ``hash`` to a
    getstatus URL. The timestamp is taken now, so a rebuilt request gets a fresh one."""
    path = urlsplit(request.url).path
    if path.endswith("/getstatus"):
        return attrs.evolve(request, url=_with_status_hash(config, request.url))
    if path.endswith("/refund"):
        return _sign_refund(config, request)
    return request


# -- replies --------------------------------------------------------------------------------


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# Decoders are made once: ``json.loads`` with options builds a new one on every call.
_REPLY_JSON = json.JSONDecoder(parse_float=str, parse_int=str, parse_constant=_refuse_constant)


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The reply as a JSON object, numbers kept as their literal text (never floats)."""
    try:
        # Decoded as json.loads decodes bytes (UTF-8, -16 or -32, told by the first bytes).
        data = _REPLY_JSON.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _text(value: object, limit: int = _FIELD_MAX) -> str | None:
    """A reply field as clean text: strings only, control characters dropped, bounded."""
    if not isinstance(value, str):
        return None
    if not value.isprintable():
        value = "".join(ch for ch in value if ch.isprintable())
    return value.strip()[:limit] or None


def _money(amount: object, currency: object) -> Money | None:
    if not isinstance(amount, str) or not isinstance(currency, str):
        return None
    try:
        return Money(amount, currency)
    except ValidationError:
        return None


def _message(data: Mapping[str, Any]) -> str | None:
    """The error fields and comment, joined: ``error_msg; error_info; comment
    [error_type/error_sys]`` without repeats or empty parts."""
    pieces: list[str] = []
    for name in ("error_msg", "error_info", "comment"):
        text = _text(data.get(name))
        if text and text not in pieces:
            pieces.append(text)
    origin = "/".join(t for t in (_text(data.get(n), 60) for n in ("error_type", "error_sys")) if t)
    message = "; ".join(pieces)
    if origin:
        message = f"{message} [{origin}]" if message else f"[{origin}]"
    return message or None


# A check value is a hash over the rcode: it would let anyone guess a short rcode
# offline, so it is not kept. (A set made once: not a tuple built for every key.)
_NOT_KEPT = frozenset({*CHECK_FIELDS, "hash"})


def _raw(data: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in _NOT_KEPT}


@hookimpl
def refundcore_parse_response(
    provider: ProviderInfo, operation: Operation, response: HttpResponse
) -> RefundResult:
    """Map the instant refund reply, or a getstatus reply, to a result (see PROTOCOL.md)."""

    def result(status: RefundStatus, message: str | None, **extra: Any) -> RefundResult:
        return RefundResult(
            provider=provider.id,
            refund_id=operation.refund_id,
            status=status,
            operation=operation.kind,
            message=message,
            **extra,
        )

    if response.status >= 500:
        return result(RefundStatus.UNKNOWN, f"PayWiser answered HTTP {response.status}")
    data = _json_object(response.body)
    if data is None:
        return result(RefundStatus.UNKNOWN, f"unreadable reply (HTTP {response.status})")
    status = wire_status(data.get("status"))
    message = _message(data)
    common: dict[str, Any] = {"error_code": _text(data.get("error_code"), 100), "raw": _raw(data)}
    if not 200 <= response.status < 300 and status is not RefundStatus.FAILED:
        return result(
            RefundStatus.UNKNOWN, f"HTTP {response.status}: {message or 'no explanation'}", **common
        )
    if isinstance(operation, RefundQuery):
        problem = status_record_problem(data, operation.provider_refund_id)
        if problem is not None:
            return result(
                RefundStatus.UNKNOWN, problem + (f" ({message})" if message else ""), **common
            )
    if status is RefundStatus.UNKNOWN:
        shown = _text(data.get("status"), 20)
        message = f"unexpected status {shown!r}" + (f": {message}" if message else "")
    return result(
        status,
        message,
        provider_refund_id=_text(data.get("txid"), 128),
        amount=_money(data.get("amount"), data.get("currency")),
        **common,
    )


# -- postbacks ----------------------------------------------------------------------------

_POSTBACK_REQUIRED = ("sid", "txid", "status", "amount", "currency", "tx_action")


def _postback_fields(callback: Callback) -> dict[str, str]:
    """The postback's form fields. ASSUMPTION: PayWiser posts
    ``application/x-www-form-urlencoded`` (the page says the fields "can be read from
    $_POST"); anything else, a repeated field or a malformed body is refused."""
    if callback.method != "POST":
        raise SignatureError("postbacks are POSTed")
    content_type = callback.headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if content_type != FORM_CONTENT_TYPE:
        raise SignatureError("postback is not a form post")
    try:
        pairs = form_fields(callback.body.decode("ascii"), strict=True, max_fields=64)
    except ValueError:
        raise SignatureError("postback body is not a form") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise SignatureError("postback repeats a field")
    return fields


def postback_event(tx_action: str, provider: str) -> str:
    """ASSUMPTION (PayWiser's TxHandler posts back every transaction, sales included;
    the refund page shows only ``tx_action`` REFUND): a verified postback with
    ``tx_action`` REFUND is about a refund (event ``refund``); any other (a sale's
    ``PAYMENT``, …) raises :class:`NotARefund` with that action, lower-cased."""
    if tx_action == "REFUND":
        return "refund"
    raise NotARefund((_text(tx_action, 40) or "unknown").lower(), provider=provider)


def _bound_refund_id(
    config: PaywiserConfig, path: str, fields: Mapping[str, str], amount: Money | None
) -> str | None:
    """The merchant refund id from the postback URL, once its tag proves refundcore put it
    there for this payment and ``amount`` (the postback's); None when the URL carries none."""
    try:
        # The query as urlsplit finds it: after the first "?" of what precedes any "#".
        query = dict(form_fields(path.partition("#")[0].partition("?")[2]))
    except ValueError:
        raise SignatureError("postback path is malformed") from None
    refund_id, tag = query.get(REFUND_ID_PARAM), query.get(TAG_PARAM)
    if refund_id is None and tag is None:
        return None
    ptxid = fields.get("parent_txid", "")
    try:
        amount_text = wire_amount(amount) if amount is not None else None
    except ValidationError:
        amount_text = None
    if refund_id is None or tag is None or amount is None or amount_text is None:
        raise SignatureError("postback URL's refund id cannot be checked")
    # postback_tag, with the key made ready when the config was loaded.
    expected = config._tag_key.hexdigest(
        _tag_message(config.sid, ptxid, refund_id, amount_text, amount.currency)
    )
    if not constant_time_equals(expected, tag):
        raise SignatureError("postback URL's refund id does not belong to this postback")
    return refund_id


@hookimpl
def refundcore_verify_callback(
    provider: ProviderInfo, config: PaywiserConfig, callback: Callback
) -> RefundNotification:
    """Check a postback's ``vry``/``vrfy`` and sid, then report what it says."""
    fields = _postback_fields(callback)
    missing = [name for name in _POSTBACK_REQUIRED if name not in fields]
    given = [fields[name] for name in CHECK_FIELDS if name in fields]
    if missing or not given:
        raise SignatureError(
            f"postback lacks {', '.join(missing) or 'a check value (vry or vrfy)'}"
        )
    expected = postback_check(
        fields["sid"],
        config.rcode.reveal(),
        fields["txid"],
        fields["status"],
        fields["amount"],
        fields["currency"],
        fields["tx_action"],
    )
    matches = [constant_time_equals(expected, value.lower()) for value in given]
    if not all(matches):
        raise SignatureError("postback check value does not match")
    if fields["sid"] != config.sid:
        raise SignatureError("postback is for another site id")
    event = postback_event(fields["tx_action"], provider.id)
    amount = _money(fields["amount"], fields["currency"])
    refund_id = _bound_refund_id(config, callback.path, fields, amount)
    return RefundNotification(
        provider=provider.id,
        status=wire_status(fields["status"]),
        event=event,
        refund_id=refund_id,
        provider_refund_id=_text(fields["txid"], 128),
        # parent_txid is outside PayWiser's check value; the URL tag covers it.
        payment=PaymentRef(payment_id=fields["parent_txid"]) if refund_id else None,
        amount=amount,
        raw=_raw(fields),
        # The tag binds the refund id to parent_txid, which PayWiser does not sign:
        # another refund's postback, parent_txid rewritten, passes it. Only txid is
        # PayWiser's word on which refund this is.
        unsigned_tie=True,
    )


# -- registration ---------------------------------------------------------------------------


@hookimpl
def refundcore_register_providers(register: Callable[[ProviderInfo], None]) -> None:
    """Announce PayWiser."""
    register(
        ProviderInfo(
            id=PROVIDER_ID,
            name="PayWiser",
            config_class=PaywiserConfig,
            capabilities=Capabilities(
                partial_refunds=True,
                refunds_per_payment=None,
                query=True,
                void=False,
                callbacks=True,
                idempotent_refund_id=False,
                callback_timestamps=False,
                # A query sees only the payment's latest transaction, by the refund's
                # txid once a reply or postback gave it: absence proves nothing.
                lookup=Lookup(
                    by=LookupKey.PROVIDER_REFUND_ID,
                    absence_authoritative=False,
                    settle_delay=60.0,
                ),
                # See wire_amount: two decimals, whatever the currency.
                wire_decimals={"*": 2},
            ),
            # No sandbox host: the core then asks for base_url when environment = "sandbox".
            environments={"production": PRODUCTION_URL},
            sandbox="refundcore_paywiser.sandbox:PaywiserEmulator",
            # ASSUMPTION: PayWiser documents no reply to a postback; a plain 200 "OK" is
            # what a PHP page reading $_POST answers.
            callback_ack=CallbackAck(status=200, body=b"OK"),
            docs_url="https://paywiser.eu/api/refund",
        )
    )
