"""The ledger of an emulated gateway: the payments it was seeded with and the refunds it
accepted, the gateway's refund rules applied to them atomically, outcomes scheduled on
demand (:meth:`Ledger.schedule`), and the whole as JSON (:meth:`Ledger.dump`,
:meth:`Ledger.load`) for ``refundcore sandbox --state-dir``."""

from __future__ import annotations

import datetime as dt
import enum
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs

from ..models import PaymentRef, RefundStatus
from ..money import Money

__all__ = ["Ledger", "LedgerPayment", "LedgerRefund", "RefundDecision", "utcnow"]


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (the default emulator clock)."""
    return dt.datetime.now(dt.timezone.utc)


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

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data (``extra`` values: see :meth:`Ledger.dump`)."""
        return {
            "refund_id": self.refund_id,
            "provider_refund_id": self.provider_refund_id,
            "payment_key": self.payment_key,
            "amount": _to_json(self.amount),
            "status": self.status.value,
            "fingerprint": self.fingerprint,
            "notify_url": self.notify_url,
            "created": _to_json(self.created),
            "extra": _to_json(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerRefund:
        """The record :meth:`to_json` described."""
        return cls(
            refund_id=data["refund_id"],
            provider_refund_id=data["provider_refund_id"],
            payment_key=data["payment_key"],
            amount=_from_json(data["amount"]),
            status=RefundStatus(data["status"]),
            fingerprint=data["fingerprint"],
            notify_url=data["notify_url"],
            created=_from_json(data["created"]),
            extra=_from_json(data["extra"]),
        )


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

    def to_json(self) -> dict[str, Any]:
        """The payment, without its refunds, as JSON-ready data."""
        return {
            "key": self.key,
            "ref": attrs.asdict(self.ref),
            "amount": _to_json(self.amount),
            "refund_outcome": self.refund_outcome.value,
            "voided": self.voided,
            "extra": _to_json(self.extra),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerPayment:
        """The payment :meth:`to_json` described (refunds are added by the ledger)."""
        return cls(
            key=data["key"],
            ref=PaymentRef(**data["ref"]),
            amount=_from_json(data["amount"]),
            refund_outcome=RefundStatus(data["refund_outcome"]),
            voided=data["voided"],
            extra=_from_json(data["extra"]),
        )


# Values of ``extra`` that JSON has no type for are written as one-key objects tagged so.
_TAGS = ("$decimal", "$datetime", "$money")


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, Money):
        return {"$money": [value.to_wire(), value.currency]}
    if isinstance(value, (list, tuple)):
        return [_to_json(item) for item in value]
    if isinstance(value, Mapping) and all(
        isinstance(key, str) and not key.startswith("$") for key in value
    ):
        return {key: _to_json(item) for key, item in value.items()}
    raise TypeError(
        f"a ledger cannot keep {type(value).__name__} {value!r}: use text, numbers, "
        "Decimal, datetime, Money, and lists or str-keyed dicts of them"
    )


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in _TAGS:
        tag, data = next(iter(value.items()))
        if tag == "$decimal":
            return Decimal(data)
        if tag == "$datetime":
            return dt.datetime.fromisoformat(data)
        return Money(*data)
    return {key: _from_json(item) for key, item in value.items()}


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

    #: The version of :meth:`dump`'s format.
    FORMAT = 1

    def __init__(self, id_prefix: str = "") -> None:
        self._lock = threading.RLock()
        self._payments: dict[str, LedgerPayment] = {}
        self._refunds: dict[str, LedgerRefund] = {}
        # The merchant's refund ids a gateway never sees, to the keys their refunds are
        # filed under (see link_refund_id).
        self._links: dict[str, str] = {}
        self._next = 1
        self._prefix = id_prefix
        self._scheduled: tuple[RefundStatus, int | None] | None = None

    def next_id(self) -> str:
        """A fresh gateway-side identifier (digits, with the ledger's prefix)."""
        with self._lock:
            number, self._next = self._next, self._next + 1
        return f"{self._prefix}{number:06d}"

    def dump(self) -> dict[str, Any]:
        """Every payment and refund as JSON-ready data, for :meth:`load` after a restart.

        ``extra`` values may be text, numbers, booleans, ``None``, ``Decimal``,
        ``datetime``, ``Money``, and lists or str-keyed dicts of them (``TypeError``
        otherwise). Scheduled outcomes are not kept.
        """
        with self._lock:
            return {
                "format": self.FORMAT,
                "next_id": self._next,
                "payments": [payment.to_json() for payment in self._payments.values()],
                "refunds": [record.to_json() for record in self._refunds.values()],
                "links": dict(self._links),
            }

    def load(self, data: Any) -> None:
        """Replace the ledger's content with what :meth:`dump` gave. ``ValueError`` if
        ``data`` is not such a dump."""
        if not isinstance(data, Mapping) or data.get("format") != self.FORMAT:
            raise ValueError(f"not a ledger dump of format {self.FORMAT}")
        try:
            payments = {p.key: p for p in map(LedgerPayment.from_json, data["payments"])}
            refunds = {r.refund_id: r for r in map(LedgerRefund.from_json, data["refunds"])}
            for record in refunds.values():
                payments[record.payment_key].refunds.append(record)
            next_id = int(data["next_id"])
            links = {str(k): str(v) for k, v in dict(data.get("links", {})).items()}
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise ValueError(f"not a usable ledger dump: {type(exc).__name__}: {exc}") from None
        with self._lock:
            self._payments, self._refunds, self._next = payments, refunds, next_id
            self._links = links

    def schedule(self, status: RefundStatus, count: int | None = 1) -> None:
        """Give the next ``count`` accepted refunds (every one, with ``None``) ``status``
        instead of their payment's ``refund_outcome``; replaces an earlier schedule."""
        with self._lock:
            self._scheduled = (status, count)

    def clear_schedule(self) -> None:
        """Refunds get their payment's ``refund_outcome`` again."""
        with self._lock:
            self._scheduled = None

    @property
    def scheduled(self) -> tuple[RefundStatus, int | None] | None:
        """The scheduled status and how many refunds are left to get it, if any."""
        with self._lock:
            return self._scheduled

    def take_outcome(self, payment: LedgerPayment) -> RefundStatus:
        """The status an accepted refund of ``payment`` gets now: a scheduled one (which
        counts as used), else the payment's ``refund_outcome``."""
        with self._lock:
            if self._scheduled is None:
                return payment.refund_outcome
            status, left = self._scheduled
            if left is not None:
                self._scheduled = (status, left - 1) if left > 1 else None
            return status

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
        status: RefundStatus | None = None,
        remember: float | None = None,
    ) -> tuple[RefundDecision, LedgerRefund | None]:
        """Apply the gateway's refund rules atomically and record an accepted refund.

        ``fingerprint`` identifies the request's content, so a retry with the same
        refund id is told apart from a different refund reusing it, for ``remember``
        seconds after the first (``None``: for ever); later the id is new again, as at
        a gateway whose idempotency keys expire. An accepted refund gets ``status``, or
        else :meth:`take_outcome`'s.
        """
        now = now or utcnow()
        with self._lock:
            existing = self._refunds.get(refund_id)
            if (
                existing is not None
                and remember is not None
                and (now - existing.created).total_seconds() > remember
            ):
                # Forgotten: the old refund stays on its payment under a key of its own.
                self._refunds[f"{refund_id}#{existing.provider_refund_id}"] = existing
                existing = None
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
                status=self.take_outcome(payment) if status is None else status,
                fingerprint=fingerprint,
                notify_url=notify_url,
                created=now,
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

    def link_refund_id(self, refund_id: str, record: LedgerRefund) -> None:
        """Let the merchant's ``refund_id`` find ``record`` (filed under another key),
        for a gateway whose wire never carries the merchant's refund id."""
        with self._lock:
            self._links[refund_id] = record.refund_id

    def find_refund(
        self, refund_id: str | None = None, provider_refund_id: str | None = None
    ) -> LedgerRefund | None:
        """A recorded refund by the merchant's (or a linked) refund id, or the gateway's
        id."""
        with self._lock:
            if refund_id is not None:
                return self._refunds.get(refund_id) or self._refunds.get(
                    self._links.get(refund_id, "")
                )
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
