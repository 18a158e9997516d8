"""The value types that flow through the pipeline. All are frozen; change one with
:func:`attrs.evolve`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Union
from urllib.parse import urlsplit

import attrs

from .errors import ValidationError
from .lookup import Lookup
from .money import Money, currency_exponent
from .refund_ids import new_refund_id
from .status import CallbackVerdict, RefundStatus
from .urls import parse_http_url
from .words import WordEnum

__all__ = [
    "Callback",
    "CallbackAck",
    "Capabilities",
    "Headers",
    "HttpRequest",
    "HttpResponse",
    "Operation",
    "PaymentRef",
    "ProviderInfo",
    "Refund",
    "RefundNotification",
    "RefundQuery",
    "RefundResult",
    "RefundStatus",
    "ResultSource",
    "Void",
    "new_refund_id",
]


class Headers(Mapping[str, str]):
    """Immutable, order-preserving HTTP headers with case-insensitive lookup.

    Its ``repr`` shows header *names* only: header values carry tokens and signatures.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        # A plain dict is by far the most common input: test for it before the (slow)
        # abstract Mapping check. Headers are built on every request and callback.
        if type(items) is dict or isinstance(items, Mapping):
            pairs = tuple(items.items())
        else:
            pairs = tuple(items)
        index: dict[str, str] = {}
        for name, value in pairs:
            # Exact types first: the isinstance() calls run only for str subclasses.
            if (type(name) is not str or type(value) is not str) and not (
                isinstance(name, str) and isinstance(value, str)
            ):
                raise ValidationError(f"header {name!r} must be str: str", field="headers")
            # Indexed in the same loop: a comprehension is one more call per value.
            index[name.lower()] = value
        self._items = pairs
        self._index = index

    @classmethod
    def _checked(cls, pairs: tuple[tuple[str, str], ...]) -> Headers:
        """Headers from pairs already known to be ``str: str`` (no second check)."""
        headers = cls.__new__(cls)
        headers._items = pairs
        headers._index = {name.lower(): value for name, value in pairs}
        return headers

    def __getitem__(self, name: str) -> str:
        value: str = self._index[name.lower()]
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return self._index == other._index
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._index.items())))

    def __repr__(self) -> str:
        return f"Headers({[name for name, _ in self._items]!r})"

    def set(self, name: str, value: str) -> Headers:
        """A copy with ``name`` set to ``value`` (replacing any value, whatever its case)."""
        return self.updated({name: value})

    def updated(self, changes: Mapping[str, str]) -> Headers:
        """A copy with every header of ``changes`` set (each replacing any value of that
        name, whatever its case), in one copy."""
        for name, value in changes.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValidationError(f"header {name!r} must be str: str", field="headers")
        # Keyed by lower-case name: of two changes differing only in case, the last wins.
        added = {name.lower(): (name, value) for name, value in changes.items()}
        kept = tuple(pair for pair in self._items if pair[0].lower() not in added)
        return Headers._checked(kept + tuple(added.values()))


def _headers(value: Headers | Mapping[str, str] | Iterable[tuple[str, str]]) -> Headers:
    # A plain dict (most callers) first: isinstance() of a dict against a Mapping
    # subclass goes through the ABC machinery.
    if type(value) is dict:
        return Headers(value)
    return value if isinstance(value, Headers) else Headers(value)


def _url_for_display(url: str) -> str:
    # Query strings can carry credentials (some gateways put hashes of secrets there).
    base, sep, _ = url.partition("?")
    return f"{base}?…" if sep else base


@attrs.frozen(repr=False)
class HttpRequest:
    """An HTTP request as it will go on the wire: the body is the exact bytes signed and sent."""

    method: str
    url: str
    headers: Headers = attrs.field(factory=Headers, converter=_headers)
    body: bytes = b""

    def with_header(self, name: str, value: str) -> HttpRequest:
        """A copy with one header set."""
        return self.with_headers({name: value})

    def with_headers(self, changes: Mapping[str, str]) -> HttpRequest:
        """A copy with every header of ``changes`` set (one copy, however many)."""
        headers = self.headers.updated(changes)
        if type(self) is not HttpRequest:  # a subclass may have fields of its own
            return attrs.evolve(self, headers=headers)
        # Built directly rather than through attrs.evolve, which re-reads the class's
        # fields on every call: signing stages call this on every request.
        return HttpRequest(self.method, self.url, headers, self.body)

    def with_body(self, body: bytes) -> HttpRequest:
        """A copy with ``body`` as its body (signing stages that sign into the body)."""
        if type(self) is not HttpRequest:
            return attrs.evolve(self, body=body)
        return HttpRequest(self.method, self.url, self.headers, body)

    @property
    def path(self) -> str:
        """Path plus ``?query`` as it goes on the wire (what several gateways sign)."""
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def __repr__(self) -> str:
        return (
            f"HttpRequest({self.method} {_url_for_display(self.url)}, "
            f"headers={list(self.headers)!r}, body=<{len(self.body)} bytes>)"
        )


@attrs.frozen(repr=False)
class HttpResponse:
    """A gateway's reply."""

    status: int
    headers: Headers = attrs.field(factory=Headers, converter=_headers)
    body: bytes = b""
    elapsed: float = 0.0

    def __repr__(self) -> str:
        return f"HttpResponse({self.status}, body=<{len(self.body)} bytes>)"


_MAX_ID = 128


def _check_identifier(value: str | None, field: str, max_len: int = _MAX_ID) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(f"must be a str, got {type(value).__name__}", field=field)
    if not value:
        raise ValidationError("must not be empty", field=field)
    if len(value) > max_len:
        raise ValidationError(f"is {len(value)} characters, at most {max_len}", field=field)
    if not value.isprintable() or value != value.strip():
        raise ValidationError(
            "must be printable, without control characters or surrounding spaces",
            field=field,
        )


@attrs.frozen
class PaymentRef:
    """Which payment to refund. Give at least one identifier; each plugin maps them to
    its gateway's fields (its README says how)."""

    payment_id: str | None = None
    merchant_reference: str | None = None
    transaction_id: str | None = None

    def __attrs_post_init__(self) -> None:
        _check_identifier(self.payment_id, "payment.payment_id")
        _check_identifier(self.merchant_reference, "payment.merchant_reference")
        _check_identifier(self.transaction_id, "payment.transaction_id")
        # Each is None or non-empty (checked above).
        if not (self.payment_id or self.merchant_reference or self.transaction_id):
            raise ValidationError(
                "give at least one of payment_id, merchant_reference, transaction_id",
                field="payment",
            )


REFUND_ID_MAX = 64


def check_refund_id(refund_id: str) -> str:
    """Validate a caller-given refund id: printable ASCII, no spaces, 1 to 64 characters."""
    if not isinstance(refund_id, str):
        raise ValidationError(f"must be a str, got {type(refund_id).__name__}", field="refund_id")
    if not 1 <= len(refund_id) <= REFUND_ID_MAX:
        raise ValidationError(
            f"must be 1 to {REFUND_ID_MAX} characters, got {len(refund_id)}", field="refund_id"
        )
    # Printable ASCII is "!" to "~" plus the space, which is refused on its own.
    if not (refund_id.isascii() and refund_id.isprintable()) or " " in refund_id:
        raise ValidationError(
            "must be printable ASCII without spaces (letters, digits, punctuation)",
            field="refund_id",
        )
    return refund_id


def check_text(value: str | None, field: str, max_len: int) -> None:
    """Validate free text (a reason, a note): printable, bounded."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ValidationError(f"must be a str, got {type(value).__name__}", field=field)
    if len(value) > max_len:
        raise ValidationError(f"is {len(value)} characters, at most {max_len}", field=field)
    if not value.isprintable():
        raise ValidationError("must not contain control characters", field=field)


def check_url(value: str | None, field: str) -> None:
    """Validate an absolute http(s) URL such as a notify_url, whole (host, port, IPv6
    brackets: see :func:`refundcore.urls.parse_http_url`); ``ValidationError`` naming
    ``field`` if it is not one."""
    if value is not None:
        parse_http_url(value, field)


def _check_refund_id_field(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    check_refund_id(value)


def _check_money(_: object, attribute: attrs.Attribute[Money], value: Money) -> None:
    if not isinstance(value, Money):
        raise ValidationError(
            f"must be refundcore.Money, got {type(value).__name__}", field=attribute.name
        )


def _check_payment(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, PaymentRef):
        raise ValidationError(
            f"must be refundcore.PaymentRef, got {type(value).__name__}", field=attribute.name
        )


REASON_MAX = 256


@attrs.frozen
class Refund:
    """Refund ``amount`` of a payment. ``refund_id`` is the idempotency key."""

    kind: ClassVar[str] = "refund"
    refund_id: str = attrs.field(validator=_check_refund_id_field)
    payment: PaymentRef = attrs.field(validator=_check_payment)
    amount: Money = attrs.field(validator=_check_money)
    reason: str | None = None
    notify_url: str | None = None

    def __attrs_post_init__(self) -> None:
        check_text(self.reason, "reason", REASON_MAX)
        check_url(self.notify_url, "notify_url")


@attrs.frozen
class RefundQuery:
    """Ask the gateway where a refund stands."""

    kind: ClassVar[str] = "query"
    refund_id: str = attrs.field(validator=_check_refund_id_field)
    payment: PaymentRef | None = None
    provider_refund_id: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.payment is not None:
            _check_payment(self, attrs.fields(RefundQuery).payment, self.payment)
        _check_identifier(self.provider_refund_id, "provider_refund_id")


@attrs.frozen
class Void:
    """Reverse a whole payment before settlement (same-day), where the gateway offers it.

    The result is reported like a refund; ``refund_id`` names this reversal.
    """

    kind: ClassVar[str] = "void"
    refund_id: str = attrs.field(validator=_check_refund_id_field)
    payment: PaymentRef = attrs.field(validator=_check_payment)
    amount: Money | None = None
    reason: str | None = None
    notify_url: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.amount is not None:
            _check_money(self, attrs.fields(Refund).amount, self.amount)
        check_text(self.reason, "reason", REASON_MAX)
        check_url(self.notify_url, "notify_url")


Operation = Union[Refund, RefundQuery, Void]  # noqa: UP007 - a runtime alias on 3.10


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(value or {}))


class ResultSource(WordEnum):
    """What produced a :class:`RefundResult`."""

    #: The gateway's reply to a request sent now.
    SENT = "sent"
    #: Answered from the journal, nothing sent: the refund id was already recorded
    #: (or another worker is sending it right now).
    REPLAYED = "replayed"
    #: The outcome of reconciling a refund an earlier attempt may have sent: settled
    #: by a query, or kept ``UNKNOWN`` when the gateway cannot confirm it.
    RECONCILED = "reconciled"
    #: Settled by a verified callback from the gateway.
    CALLBACK = "callback"
    #: Decided by an operator.
    DECIDED = "decided"


@attrs.frozen(eq=False, kw_only=True)
class RefundResult:
    """The normalised outcome of a refund, query or void.

    ``provider``, ``refund_id`` and ``operation`` say which request it answers, and
    ``source`` what produced it (a fresh reply, the journal's record, a reconcile):
    the client stamps them on every result it returns, so a plugin's parse stage need
    not set them. ``raw`` is the provider's parsed reply with anything secret removed;
    keep it for support tickets, never branch on it.
    """

    status: RefundStatus
    provider: str = ""
    refund_id: str = ""
    operation: str = "refund"
    amount: Money | None = None
    provider_refund_id: str | None = None
    message: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    source: ResultSource = ResultSource.SENT

    @property
    def succeeded(self) -> bool:
        """True when the gateway confirmed the refund."""
        return self.status is RefundStatus.SUCCEEDED


@attrs.frozen(repr=False)
class Callback:
    """A callback (webhook, notification, postback) as received over HTTP.

    ``path`` is the path plus ``?query`` exactly as received: some gateways sign it.
    """

    method: str
    path: str
    headers: Headers = attrs.field(factory=Headers, converter=_headers)
    body: bytes = b""

    def __repr__(self) -> str:
        return f"Callback({self.method} {self.path}, body=<{len(self.body)} bytes>)"


@attrs.frozen(eq=False)
class RefundNotification:
    """A verified callback about a refund (or another event the gateway reports).

    ``verdict`` is what the journal made of it (:class:`CallbackVerdict`). ``refund_id``
    is ``None`` where the journal did not apply it: the journal holds the word's
    ``provider_refund_id`` on another refund, or another one on the refund it names (that
    name is not signed), or keeps another final status, then given as ``contradicts``.
    ``duplicate``: the journal already had what it says (delivered again, or confirming a
    recorded outcome). The client sets these three, whatever a plugin put there.

    ``unsigned_tie``: set by a plugin whose gateway does not sign what ties the word to
    the merchant's refund (``refund_id`` and ``payment`` were read from unsigned data,
    such as a URL or a field outside the signature), so only ``provider_refund_id`` is
    the gateway's signed word. Such a word settles, and names, only a journalled refund
    already known by that ``provider_refund_id``; a refund whose gateway refund id is
    not known yet (its reply was lost) is not settled by it, the word kept in its
    history as evidence. Otherwise, and always without a journal, it reaches the
    application without ``refund_id`` and ``payment``: match it by
    ``provider_refund_id``.
    """

    provider: str
    status: RefundStatus
    event: str = "refund"
    refund_id: str | None = None
    provider_refund_id: str | None = None
    payment: PaymentRef | None = None
    amount: Money | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, converter=_frozen_mapping)
    duplicate: bool = False
    contradicts: RefundStatus | None = None
    verdict: CallbackVerdict = CallbackVerdict.UNJOURNALLED
    unsigned_tie: bool = False


@attrs.frozen(cache_hash=True)
class CallbackAck:
    """What a provider expects in reply to a callback it delivered."""

    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    body: bytes = b"OK"


def _frozenset_or_none(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _wire_decimals(value: Mapping[str, int] | None) -> Mapping[str, int]:
    rules = dict(value or {})
    for currency, decimals in rules.items():
        if currency != "*":
            currency_exponent(currency)
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 4:
            raise ValidationError(
                f"decimals for {currency} must be an int from 0 to 4", field="wire_decimals"
            )
    return MappingProxyType(rules)


@attrs.frozen
class Capabilities:
    """What a provider can do, honestly stated. ``None`` means "no limit"."""

    #: False: a refund smaller than the ``original_amount`` given with it is refused
    #: before sending.
    partial_refunds: bool = True
    #: Refunds of one payment the gateway takes; with a journal, one more is refused
    #: before sending (counted in the journal; a batch counts its own rows too).
    refunds_per_payment: int | None = None
    query: bool = True
    void: bool = False
    callbacks: bool = True
    currencies: frozenset[str] | None = attrs.field(default=None, converter=_frozenset_or_none)
    #: The gateway itself refuses a second refund with the same refund id, so resending
    #: after an UNKNOWN outcome is safe (within :attr:`idempotency_window`).
    idempotent_refund_id: bool = False
    #: Seconds the gateway remembers a refund id after first receiving it (``None``:
    #: for ever). Past it a resend could refund again, so the journal resends an
    #: ``UNKNOWN`` refund only while the first claim is younger than this, less the
    #: provider's timeouts. Only with ``idempotent_refund_id``.
    idempotency_window: float | None = attrs.field(default=None)
    #: Callbacks carry a signed timestamp, so replays can be refused.
    callback_timestamps: bool = False
    #: How a refund can be found again and what its absence proves (default: not at
    #: all, and absence proves nothing).
    lookup: Lookup = attrs.field(factory=Lookup)
    #: The refund request carries a notify URL. When False, the gateway notifies a URL
    #: the merchant set elsewhere, and a ``notify_url`` given with a refund is refused
    #: before sending (never silently dropped).
    notify_url: bool = True
    #: Where the merchant sets the callback URL instead, when ``notify_url`` is False
    #: (named in the error that refuses a ``notify_url``).
    notify_url_setting: str | None = None
    #: Decimals the gateway wants in an amount where they differ from the currency's
    #: ISO 4217 exponent: currency code → decimals, ``"*"`` for every currency not
    #: named (``{"ISK": 2}``, or ``{"*": 2}`` for a gateway that always writes two).
    wire_decimals: Mapping[str, int] = attrs.field(
        factory=dict, converter=_wire_decimals, hash=False
    )

    def __attrs_post_init__(self) -> None:
        window = self.idempotency_window
        if window is None:
            return
        if isinstance(window, bool) or not isinstance(window, (int, float)):
            raise ValidationError(
                f"must be a number of seconds or None, got {type(window).__name__}",
                field="idempotency_window",
            )
        if not math.isfinite(window) or window <= 0:
            raise ValidationError(
                f"must be more than zero seconds, got {window!r}", field="idempotency_window"
            )
        if not self.idempotent_refund_id:
            raise ValidationError(
                "a window for remembering refund ids needs idempotent_refund_id=True",
                field="idempotency_window",
            )

    def decimals_for(self, currency: str) -> int:
        """How many decimals the gateway wants in an amount of ``currency``."""
        if currency in self.wire_decimals:
            return self.wire_decimals[currency]
        return self.wire_decimals.get("*", currency_exponent(currency))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = attrs.asdict(self, recurse=False)
        if self.currencies is not None:
            data["currencies"] = sorted(self.currencies)
        data["lookup"] = self.lookup.as_dict()
        data["wire_decimals"] = dict(self.wire_decimals)
        return data


#: Makes a provider's gateway emulator (a :class:`refundcore.sandbox.Emulator`), which
#: the sandbox imports only when one is wanted.
SandboxFactory = Callable[..., Any]


@attrs.frozen(eq=False)
class ProviderInfo:
    """What a provider plugin registers: who it is and what it can do.

    ``sandbox`` names the factory of the gateway emulator, as ``"module:callable"``
    (imported only when a sandbox is wanted) or the callable itself.
    ``distribution`` and ``version`` are filled in by refundcore from the plugin's
    package metadata.
    """

    id: str
    name: str
    config_class: type[Any]
    capabilities: Capabilities = attrs.field(factory=Capabilities)
    environments: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping)
    sandbox: str | SandboxFactory | None = None
    callback_ack: CallbackAck = attrs.field(factory=CallbackAck)
    docs_url: str | None = None
    distribution: str | None = None
    version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no config, no secrets)."""
        return {
            "id": self.id,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "capabilities": self.capabilities.as_dict(),
            "environments": dict(self.environments),
            "docs_url": self.docs_url,
        }
