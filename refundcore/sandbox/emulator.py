"""The emulator contract every provider plugin's sandbox follows, and the pieces they share.

A provider's ``ProviderInfo.sandbox`` names a factory ``factory(credentials=None)``
returning an :class:`Emulator`: a WSGI app that behaves like the gateway for one set of
test credentials. It checks request signatures with those credentials (a bad one gets
the gateway's real rejection), keeps a :class:`Ledger` of the payments it was seeded
with, enforces the gateway's rules, answers in the documented format, and sends signed
callbacks to the ``notify_url`` it was given.
"""

from __future__ import annotations

import abc
import datetime as dt
import enum
import itertools
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import attrs

from ..logs import EventLogger
from ..models import Callback, Headers, PaymentRef, RefundStatus
from ..money import Money
from .callbacks import CallbackSender, OutgoingCallback

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "Emulator",
    "Incoming",
    "Ledger",
    "LedgerPayment",
    "LedgerRefund",
    "RefundDecision",
    "Reply",
    "utcnow",
]

log = EventLogger("refundcore.sandbox")


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (the default emulator clock)."""
    return dt.datetime.now(dt.timezone.utc)


@attrs.frozen
class Incoming:
    """A request as the emulator received it."""

    method: str
    path: str
    query: str
    headers: Headers
    body: bytes

    @property
    def target(self) -> str:
        """Path plus ``?query`` as received."""
        return self.path + (f"?{self.query}" if self.query else "")

    def json(self) -> Any:
        """The body as JSON (``ValueError`` if it is not)."""
        return json.loads(self.body.decode("utf-8"))

    def form(self) -> dict[str, str]:
        """The body as ``application/x-www-form-urlencoded`` fields."""
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


@attrs.frozen
class Reply:
    """What the emulator answers."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"

    @classmethod
    def json(cls, data: Any, status: int = 200) -> Reply:
        """A compact JSON reply."""
        return cls(status, json.dumps(data, separators=(",", ":")).encode("utf-8"))

    @classmethod
    def text(cls, text: str, status: int = 200) -> Reply:
        """A plain-text reply."""
        return cls(status, text.encode("utf-8"), "text/plain; charset=utf-8")


@attrs.define
class LedgerRefund:
    """A refund the emulated gateway accepted (or is processing)."""

    refund_id: str
    provider_refund_id: str
    payment_key: str
    amount: Money
    status: RefundStatus
    fingerprint: str
    notify_url: str | None
    created: dt.datetime
    extra: dict[str, Any] = attrs.Factory(dict)


@attrs.define
class LedgerPayment:
    """A payment the emulator was seeded with."""

    key: str
    ref: PaymentRef
    amount: Money
    refund_outcome: RefundStatus = RefundStatus.SUCCEEDED
    refunds: list[LedgerRefund] = attrs.Factory(list)
    voided: bool = False
    extra: dict[str, Any] = attrs.Factory(dict)

    @property
    def refunded(self) -> Decimal:
        """Amount refunded or being refunded."""
        return sum(
            (r.amount.amount for r in self.refunds if r.status is not RefundStatus.FAILED),
            Decimal(0),
        )

    @property
    def refundable(self) -> Decimal:
        """What can still be refunded."""
        return Decimal(0) if self.voided else self.amount.amount - self.refunded


class RefundDecision(str, enum.Enum):
    """Why the ledger accepted or refused a refund."""

    ACCEPTED = "accepted"
    REPEATED = "repeated"  # same refund id, same request: the earlier refund
    CONFLICT = "conflict"  # same refund id, different request
    UNKNOWN_PAYMENT = "unknown_payment"
    OVER_REFUND = "over_refund"
    ALREADY_REFUNDED = "already_refunded"  # refund-once gateways
    CURRENCY_MISMATCH = "currency_mismatch"
    VOIDED = "voided"


class Ledger:
    """Payments and refunds of one emulated gateway; thread-safe."""

    def __init__(self, id_prefix: str = "") -> None:
        self._lock = threading.RLock()
        self._payments: dict[str, LedgerPayment] = {}
        self._refunds: dict[str, LedgerRefund] = {}
        self._counter = itertools.count(1)
        self._prefix = id_prefix

    def next_id(self) -> str:
        """A fresh gateway-side identifier (digits, with the ledger's prefix)."""
        return f"{self._prefix}{next(self._counter):06d}"

    def add_payment(self, payment: LedgerPayment) -> LedgerPayment:
        """Seed a payment."""
        with self._lock:
            self._payments[payment.key] = payment
            return payment

    def find_payment(
        self,
        *,
        payment_id: str | None = None,
        merchant_reference: str | None = None,
        transaction_id: str | None = None,
    ) -> LedgerPayment | None:
        """The payment matching every identifier given (``None`` if none matches)."""
        wanted = {
            "payment_id": payment_id,
            "merchant_reference": merchant_reference,
            "transaction_id": transaction_id,
        }
        wanted = {k: v for k, v in wanted.items() if v is not None}
        if not wanted:
            return None
        with self._lock:
            for payment in self._payments.values():
                if all(getattr(payment.ref, k) == v for k, v in wanted.items()):
                    return payment
        return None

    def payments(self) -> list[LedgerPayment]:
        """Every seeded payment."""
        with self._lock:
            return list(self._payments.values())

    def refund(
        self,
        payment: LedgerPayment | None,
        *,
        refund_id: str,
        amount: Money,
        fingerprint: str,
        notify_url: str | None = None,
        once: bool = False,
        now: dt.datetime | None = None,
    ) -> tuple[RefundDecision, LedgerRefund | None]:
        """Apply the gateway's refund rules atomically and record an accepted refund.

        ``fingerprint`` identifies the request's content, so a retry with the same
        refund id is told apart from a different refund reusing it.
        """
        with self._lock:
            existing = self._refunds.get(refund_id)
            if existing is not None:
                if existing.fingerprint == fingerprint:
                    return RefundDecision.REPEATED, existing
                return RefundDecision.CONFLICT, existing
            if payment is None:
                return RefundDecision.UNKNOWN_PAYMENT, None
            if payment.voided:
                return RefundDecision.VOIDED, None
            if amount.currency != payment.amount.currency:
                return RefundDecision.CURRENCY_MISMATCH, None
            if once and any(r.status is not RefundStatus.FAILED for r in payment.refunds):
                return RefundDecision.ALREADY_REFUNDED, None
            if amount.amount > payment.refundable:
                return RefundDecision.OVER_REFUND, None
            record = LedgerRefund(
                refund_id=refund_id,
                provider_refund_id=self.next_id(),
                payment_key=payment.key,
                amount=amount,
                status=payment.refund_outcome,
                fingerprint=fingerprint,
                notify_url=notify_url,
                created=now or utcnow(),
            )
            payment.refunds.append(record)
            self._refunds[refund_id] = record
            return RefundDecision.ACCEPTED, record

    def void(self, payment: LedgerPayment) -> bool:
        """Void a payment that has no refunds yet; False if it cannot be voided."""
        with self._lock:
            if payment.voided or payment.refunds:
                return False
            payment.voided = True
            return True

    def find_refund(
        self, refund_id: str | None = None, provider_refund_id: str | None = None
    ) -> LedgerRefund | None:
        """A recorded refund by the merchant's or the gateway's id."""
        with self._lock:
            if refund_id is not None:
                return self._refunds.get(refund_id)
            for record in self._refunds.values():
                if record.provider_refund_id == provider_refund_id:
                    return record
        return None

    def settle(self, refund_id: str, status: RefundStatus) -> LedgerRefund:
        """Move a pending refund to its final status (as the gateway's back office would)."""
        with self._lock:
            record = self._refunds[refund_id]
            record.status = status
            return record

    def payment_of(self, record: LedgerRefund) -> LedgerPayment:
        """The payment a refund belongs to."""
        with self._lock:
            return self._payments[record.payment_key]


class Emulator(abc.ABC):
    """Base class of a gateway emulator. Subclasses implement the abstract methods.

    The emulator is itself a WSGI app; serve it with
    :class:`refundcore.sandbox.SandboxServer`.
    """

    #: The provider id this emulates.
    provider_id: str = ""
    #: Ids the gateway assigns are this prefix plus digits.
    id_prefix: str = ""
    #: The currency of the payments ``refundcore demo`` and ``refundcore sandbox`` seed.
    currency: str = "HKD"

    def __init__(
        self,
        credentials: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        callback_delay: float = 0.0,
        send_callbacks: bool = True,
    ) -> None:
        self.credentials: dict[str, Any] = (
            dict(credentials) if credentials is not None else self.make_credentials()
        )
        self.clock = clock
        self.ledger = Ledger(self.id_prefix)
        self.callback_delay = callback_delay
        self.send_callbacks = send_callbacks
        self.sender = self.make_sender()
        #: The callback URL the merchant set at the gateway itself (in its console, or
        #: when the payment was made), for gateways whose refund request carries none
        #: (``Capabilities.notify_url`` False). :class:`SandboxRun` sets it.
        self.merchant_notify_url: str | None = None

    # -- what a provider implements ----------------------------------------------------

    @classmethod
    @abc.abstractmethod
    def make_credentials(cls) -> dict[str, Any]:
        """Fresh test credentials (keys generated now, never stored)."""

    @abc.abstractmethod
    def client_config(self, base_url: str) -> dict[str, Any]:
        """The merchant-side config (a ``RefundClient`` config table) that matches these
        credentials, pointing at ``base_url``."""

    @abc.abstractmethod
    def handle(self, request: Incoming) -> Reply:
        """Answer one request as the gateway would."""

    @abc.abstractmethod
    def new_payment_ref(self, key: str) -> PaymentRef:
        """The identifiers a merchant would hold for a new payment with gateway id ``key``."""

    @abc.abstractmethod
    def build_callback(self, record: LedgerRefund, *, path: str, at: dt.datetime) -> Callback:
        """The callback the gateway sends about ``record``, signed as of ``at``, for a
        receiver at ``path`` (path plus query)."""

    def signed_payment_callback(
        self, payment: PaymentRef, *, path: str = "/callback"
    ) -> Callback | None:
        """A genuine callback the gateway sends about ``payment`` itself (the sale went
        through), not about a refund, for a receiver at ``path``; ``None`` when the
        gateway sends none. A receiver must acknowledge it and not take it for a refund."""
        return None

    # -- shared behaviour ----------------------------------------------------------------

    def client_plugin(self) -> object | None:
        """An app plugin for a client that talks to this emulator, or ``None``.

        It carries what a merchant knows but the gateway's wire does not, for gateways
        whose refund request names neither the notify URL nor the merchant's refund id
        (the URL was fixed when the payment was made). :class:`SandboxRun` registers it.
        """
        return None

    def make_sender(self) -> CallbackSender:
        """The sender used for callbacks; override to set a provider's retry policy."""
        return CallbackSender()

    def public_credentials(self) -> dict[str, str]:
        """The test credentials as text, for printing (they are throwaway test values)."""
        return {
            key: value if isinstance(value, str) else getattr(value, "to_pem", value.__str__)()
            for key, value in self.credentials.items()
        }

    def seed_payment(
        self, amount: Money, *, refund_outcome: RefundStatus = RefundStatus.SUCCEEDED
    ) -> PaymentRef:
        """Add a completed payment to the ledger and return the merchant's reference to it.

        ``refund_outcome`` is what refunds of it turn into: ``PENDING`` makes the gateway
        answer pending and settle later through a callback.
        """
        key = self.ledger.next_id()
        ref = self.new_payment_ref(key)
        self.ledger.add_payment(
            LedgerPayment(key=key, ref=ref, amount=amount, refund_outcome=refund_outcome)
        )
        return ref

    def signed_callback(
        self,
        refund_id: str,
        *,
        path: str = "/callback",
        age: dt.timedelta = dt.timedelta(0),
    ) -> Callback:
        """A genuine callback about a refund in the ledger, signed ``age`` ago."""
        record = self.ledger.find_refund(refund_id)
        if record is None:
            raise KeyError(f"no refund {refund_id!r} in the ledger")
        return self.build_callback(record, path=path, at=self.clock() - age)

    def notify(self, record: LedgerRefund) -> None:
        """Send the callback about ``record`` to its notify_url, in the background."""
        if not (self.send_callbacks and record.notify_url):
            return
        parts = urlsplit(record.notify_url)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        callback = self.build_callback(record, path=target, at=self.clock())
        try:
            self.sender.send(
                OutgoingCallback(
                    url=record.notify_url,
                    method=callback.method,
                    headers=tuple(callback.headers.items()),
                    body=callback.body,
                ),
                delay=self.callback_delay,
            )
        except ValueError as exc:
            # A sandbox only delivers to plain-http receivers (on loopback); the refund
            # itself stands, as at the real gateway when a callback cannot be delivered.
            log.warning(
                "emulator cannot deliver a callback",
                provider=self.provider_id,
                refund_id=record.refund_id,
                url=record.notify_url,
                error=str(exc),
            )

    def settle(self, refund_id: str, status: RefundStatus = RefundStatus.SUCCEEDED) -> None:
        """Finish a pending refund and send its callback."""
        self.notify(self.ledger.settle(refund_id, status))

    def close(self) -> None:
        """Stop the callback sender."""
        self.sender.close()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length else b""
        headers = Headers(
            (key[5:].replace("_", "-").title(), str(value))
            for key, value in environ.items()
            if key.startswith("HTTP_")
        )
        if environ.get("CONTENT_TYPE"):
            headers = headers.set("Content-Type", environ["CONTENT_TYPE"])
        request = Incoming(
            method=environ["REQUEST_METHOD"],
            path=environ.get("PATH_INFO", "/"),
            query=environ.get("QUERY_STRING", ""),
            headers=headers,
            body=body,
        )
        try:
            reply = self.handle(request)
        except Exception:
            log.exception(
                "emulator failed",
                provider=self.provider_id,
                method=request.method,
                path=request.path,
            )
            reply = Reply.json({"error": "emulator failure"}, status=500)
        start_response(
            f"{reply.status} {_reason(reply.status)}",
            [("Content-Type", reply.content_type), ("Content-Length", str(len(reply.body)))],
        )
        return [reply.body]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"
