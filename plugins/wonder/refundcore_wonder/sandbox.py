"""An emulator of the Wonder gateway, for the sandbox, the demo and the tests.

What it checks, as the gateway does: the ``Credential`` header (format, app id, a
request_time within ±30 minutes of its clock), the ``Nonce`` (16 alphanumerics, never
accepted twice) and the ``Signature`` with the merchant's public key. It keeps orders
with one sale transaction each, takes any number of partial refunds up to the sale's
amount, answers in the ``{error_code, error_message, data: {order}}`` shape of Wonder's
pages (or ``{code, message, data}`` with ``envelope="code"``), and posts webhooks
signed with its own key (``webhook_private_key``; the merchant holds the public half).

It takes the refund object in every shape Wonder's sources show: the API page's
``{amount, note}``, the production plugin's ``{amount, currency, reason}``, and the
plugin's ``{amount, currency, reason, note}`` (a ``currency`` must be the order's).
Besides ``order.refunded`` webhooks it signs ``order.paid`` ones
(:meth:`WonderEmulator.signed_payment_callback`), which a receiver must acknowledge
and not take for a refund.

ASSUMPTIONS of the emulator (the live gateway's behaviour is not documented there):
a refund's ``X-Request-ID`` is treated as its idempotency key; an order's
``notify_url`` may be given with the refund; business refusals (unknown order, over-
refund) are HTTP 200 envelopes with an error code, malformed requests HTTP 400,
credential problems HTTP 401, a wrong signature / stale time / reused nonce HTTP 403.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from refundcore.crypto import PrivateKey, generate_rsa_keypair
from refundcore.errors import ValidationError
from refundcore.models import Callback, PaymentRef, RefundStatus, check_url
from refundcore.money import Money
from refundcore.sandbox import (
    Emulator,
    Incoming,
    LedgerPayment,
    LedgerRefund,
    RefundDecision,
    Reply,
    SignatureParts,
)

from . import (
    ALGORITHM,
    CHECK_PATH,
    CREDENTIAL_WINDOW,
    REFUND_PATH,
    credential,
    new_nonce,
    request_time,
    verify_wonder_signature,
    wonder_signature,
)

#: Sale uuids are derived from the payment key in this namespace.
_SALE_NAMESPACE = uuid.UUID("5b0f2c1e-8d4a-4e6b-9a57-2f6d1c3e9b80")
_NONCE = re.compile(r"[A-Za-z0-9]{16}\Z")
_TIME = re.compile(r"[0-9]{14}\Z")
_AMOUNT = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,2})?\Z")

#: Business errors: (error_code, HTTP status, numeric code of the newer envelope).
_ERRORS: dict[str, tuple[int, int]] = {
    "INVALID_PARAMS": (400, 400),
    "CREDENTIAL_INVALID": (401, 401),
    "SIGNATURE_INVALID": (403, 403),
    "REQUEST_EXPIRED": (403, 403),
    "NONCE_REUSED": (403, 403),
    "NOT_FOUND": (404, 404),
    "METHOD_NOT_ALLOWED": (405, 405),
    "ORDER_NOT_FOUND": (200, 40401),
    "TRANSACTION_NOT_FOUND": (200, 40402),
    "REFUND_AMOUNT_EXCEEDED": (200, 42201),
    "ORDER_VOIDED": (200, 42202),
    "DUPLICATE_REQUEST_ID": (200, 40901),
}
_DECISION_ERRORS = {
    RefundDecision.CONFLICT: ("DUPLICATE_REQUEST_ID", "X-Request-ID was used for another refund"),
    RefundDecision.UNKNOWN_PAYMENT: ("ORDER_NOT_FOUND", "order not found"),
    RefundDecision.OVER_REFUND: ("REFUND_AMOUNT_EXCEEDED", "refund amount exceeds refundable"),
    RefundDecision.VOIDED: ("ORDER_VOIDED", "order was voided"),
    RefundDecision.CURRENCY_MISMATCH: ("INVALID_PARAMS", "currency mismatch"),
    RefundDecision.ALREADY_REFUNDED: ("REFUND_AMOUNT_EXCEEDED", "already refunded"),
}


def json_bytes(value: Any) -> bytes:
    """Compact JSON in which a Decimal is written as a JSON number from its text (the
    pages show totals as numbers), so no float is ever involved."""
    if isinstance(value, Decimal):
        return f"{value:f}".encode("ascii")
    if isinstance(value, Mapping):
        items = (json_bytes(str(k)) + b":" + json_bytes(v) for k, v in value.items())
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(json_bytes(item) for item in value) + b"]"
    return json.dumps(value).encode("ascii")


def _private_key(value: Any) -> PrivateKey:
    return value if isinstance(value, PrivateKey) else PrivateKey.from_pem(str(value))


class WonderEmulator(Emulator):
    """The Wonder gateway, emulated. ``envelope`` is ``"error_code"`` (the refund
    page's shape, default) or ``"code"`` (the newer ``{code, message, data}``)."""

    provider_id = "wonder"
    refund_paths = (REFUND_PATH,)

    def __init__(
        self,
        credentials: Mapping[str, Any] | None = None,
        *,
        envelope: str = "error_code",
        **options: Any,
    ) -> None:
        super().__init__(credentials, **options)
        if envelope not in ("error_code", "code"):
            raise ValueError(f"envelope must be 'error_code' or 'code', not {envelope!r}")
        self.envelope = envelope
        self.app_id = str(self.credentials["app_id"])
        self.merchant_key = _private_key(self.credentials["private_key"])
        self.merchant_public_key = self.merchant_key.public_key()
        self.webhook_key = _private_key(self.credentials["webhook_private_key"])
        self._nonces: dict[str, dt.datetime] = {}
        self._lock = threading.Lock()

    # -- the Emulator contract ----------------------------------------------------------

    @classmethod
    def make_credentials(cls) -> dict[str, Any]:
        """A fresh app id, merchant key pair and webhook key pair (never stored)."""
        return {
            "app_id": str(uuid.uuid4()),
            "private_key": generate_rsa_keypair(),
            "webhook_private_key": generate_rsa_keypair(),
        }

    def client_config(self, base_url: str) -> dict[str, Any]:
        """The merchant's config: its private key and the public half of the webhook key."""
        return {
            "base_url": base_url,
            "app_id": self.app_id,
            "private_key": self.merchant_key.to_pem(),
            "webhook_public_key": self.webhook_key.public_key().to_pem(),
        }

    def new_payment_ref(self, key: str) -> PaymentRef:
        """Order number, merchant reference number and the sale transaction's uuid."""
        return PaymentRef(
            payment_id=f"W{key:0>12}",
            merchant_reference=f"shop-order-{key}",
            # Derived from the key, so a new sandbox offers the same payments to an app
            # (and to the examples in the docs) as the last one did.
            transaction_id=str(uuid.uuid5(_SALE_NAMESPACE, key)),
        )

    def handle(self, request: Incoming) -> Reply:
        """Route, authenticate, then refund or check an order."""
        if request.path not in (REFUND_PATH, CHECK_PATH):
            return self._error("NOT_FOUND", "no such API")
        if request.method != "POST":
            return self._error("METHOD_NOT_ALLOWED", "POST only")
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            return self._error("INVALID_PARAMS", "body is not JSON")
        if not isinstance(data, dict) or not isinstance(data.get("order"), dict):
            return self._error("INVALID_PARAMS", "order is required")
        if request.path == REFUND_PATH:
            return self._refund(request, data)
        payment = self._find_order(data["order"])
        if isinstance(payment, Reply):
            return payment
        return self._ok(self._order_json(payment))

    def build_callback(self, record: LedgerRefund, *, path: str, at: dt.datetime) -> Callback:
        """An ``order.refunded`` webhook: the order-check body, signed with Wonder's key."""
        return self.webhook(self.ledger.payment_of(record), "order.refunded", path=path, at=at)

    def signed_payment_callback(
        self, payment: PaymentRef, *, path: str = "/callback"
    ) -> Callback | None:
        """The ``order.paid`` webhook about a seeded payment."""
        found = self.ledger.find_payment(
            payment_id=payment.payment_id, merchant_reference=payment.merchant_reference
        )
        if found is None:
            raise KeyError(f"no payment {payment!r} in the ledger")
        return self.webhook(found, "order.paid", path=path, at=self.clock())

    def webhook(
        self, payment: LedgerPayment, action: str, *, path: str, at: dt.datetime
    ) -> Callback:
        """A webhook about ``payment``'s order as it stands, with ``X-Action: action``,
        signed with Wonder's key as of ``at`` (the order-check body; ``X-Action`` is not
        signed, as at Wonder)."""
        body = self._envelope_bytes(self._order_json(payment))
        time_text = request_time(at)
        nonce = new_nonce()
        return Callback(
            method="POST",
            path=path,
            headers={
                "Content-Type": "application/json",
                "Credential": credential(self.app_id, time_text),
                "Nonce": nonce,
                "Signature": wonder_signature(
                    "POST", path, body, nonce, time_text, self.webhook_key
                ),
                "X-Action": action,
            },
            body=body,
        )

    # -- authentication -----------------------------------------------------------------

    def _authenticate(self, request: Incoming) -> Reply | None:
        header = request.headers.get("Credential", "")
        nonce = request.headers.get("Nonce", "")
        signature = request.headers.get("Signature", "")
        parts = header.split("/")
        if len(parts) != 3 or parts[2] != ALGORITHM or not _TIME.match(parts[1]):
            return self._error("CREDENTIAL_INVALID", "malformed Credential")
        if parts[0] != self.app_id:
            return self._error("CREDENTIAL_INVALID", "unknown app id")
        if not _NONCE.match(nonce):
            return self._error("CREDENTIAL_INVALID", "Nonce must be 16 alphanumerics")
        if not signature:
            return self._error("CREDENTIAL_INVALID", "Signature is required")
        try:
            signed_at = dt.datetime.strptime(parts[1], "%Y%m%d%H%M%S").replace(
                tzinfo=dt.timezone.utc
            )
        except ValueError:
            return self._error("CREDENTIAL_INVALID", "malformed request time")
        now = self.clock()
        if abs(now - signed_at) > CREDENTIAL_WINDOW:
            return self._error("REQUEST_EXPIRED", "request time is outside ±30 minutes")
        if not verify_wonder_signature(
            request.method,
            request.target,
            request.body,
            nonce,
            parts[1],
            signature,
            self.merchant_public_key,
        ):
            return self._error("SIGNATURE_INVALID", "signature verification failed")
        with self._lock:
            # Anything older than the window could not pass the time check any more.
            horizon = now - 2 * CREDENTIAL_WINDOW
            self._nonces = {n: t for n, t in self._nonces.items() if t >= horizon}
            if nonce in self._nonces:
                return self._error("NONCE_REUSED", "nonce was already used")
            self._nonces[nonce] = now
        return None

    # -- refunds and orders ----------------------------------------------------------------

    def _find_order(self, order: Mapping[str, Any]) -> LedgerPayment | Reply:
        number, reference = order.get("number"), order.get("reference_number")
        if number is None and reference is None:
            return self._error("INVALID_PARAMS", "order.number or order.reference_number")
        if not all(value is None or isinstance(value, str) for value in (number, reference)):
            return self._error("INVALID_PARAMS", "order identifiers are strings")
        payment = self.ledger.find_payment(payment_id=number, merchant_reference=reference)
        if payment is None:
            return self._error("ORDER_NOT_FOUND", "order not found")
        return payment

    def _refund(self, request: Incoming, data: Mapping[str, Any]) -> Reply:
        transaction, refund = data.get("transaction"), data.get("refund")
        if not isinstance(transaction, dict) or not isinstance(transaction.get("uuid"), str):
            return self._error("INVALID_PARAMS", "transaction.uuid is required")
        if not isinstance(refund, dict):
            return self._error("INVALID_PARAMS", "refund is required")
        amount_text = refund.get("amount")
        if not isinstance(amount_text, str) or not _AMOUNT.match(amount_text):
            return self._error("INVALID_PARAMS", "refund.amount must be a decimal string")
        texts = {name: refund.get(name) for name in ("currency", "reason", "note")}
        if not all(value is None or isinstance(value, str) for value in texts.values()):
            return self._error("INVALID_PARAMS", "refund.currency, reason and note are strings")
        notify_url = data["order"].get("notify_url")
        if notify_url is not None:
            try:
                check_url(notify_url, "order.notify_url")
            except ValidationError:
                return self._error("INVALID_PARAMS", "order.notify_url is not a URL")
        request_id = request.headers.get("X-Request-Id", "")
        if not request_id:
            return self._error("INVALID_PARAMS", "X-Request-ID is required")
        payment = self._find_order(data["order"])
        if isinstance(payment, Reply):
            return payment
        if transaction["uuid"] != payment.ref.transaction_id:
            return self._error("TRANSACTION_NOT_FOUND", "no such transaction in this order")
        if texts["currency"] not in (None, payment.amount.currency):
            return self._error("INVALID_PARAMS", "refund.currency is not the order's currency")
        try:
            amount = Money(amount_text, payment.amount.currency)
        except ValidationError:
            return self._error("INVALID_PARAMS", "refund.amount must be greater than zero")
        decision, record = self.ledger.refund(
            payment,
            refund_id=request_id,
            amount=amount,
            fingerprint=hashlib.sha256(request.body).hexdigest(),
            notify_url=notify_url or payment.extra.get("notify_url"),
            now=self.clock(),
        )
        if decision is RefundDecision.ACCEPTED and record is not None:
            with self._lock:
                record.provider_refund_id = str(uuid.uuid4())
                record.extra["note"] = texts["note"] or texts["reason"] or ""
            if record.status is not RefundStatus.PENDING:
                self.notify(record)
        if decision in (RefundDecision.ACCEPTED, RefundDecision.REPEATED):
            return self._ok(self._order_json(payment))
        code, message = _DECISION_ERRORS[decision]
        return self._error(code, message)

    def _order_json(self, payment: LedgerPayment) -> dict[str, Any]:
        total = payment.amount.amount
        refunds = [r for r in payment.refunds if r.status is RefundStatus.SUCCEEDED]
        refunded = sum((r.amount.amount for r in refunds), Decimal(0))
        if payment.voided:
            state = "voided"
        elif refunded >= total:
            state = "refunded"
        elif refunded:
            state = "partial_refunded"
        else:
            state = "paid"
        currency = payment.amount.currency
        sale_uuid = payment.ref.transaction_id
        transactions = [
            {
                "type": "Sales",
                "uuid": sale_uuid,
                "currency": currency,
                "amount": payment.amount.to_wire(),
                "success": True,
                "is_pending": False,
                "captured": True,
                "allow_void": not payment.refunds and not payment.voided,
                "allow_refund": payment.refundable > 0,
                "void_is_pending": False,
                "payment_method": "visa",
                "note": "",
                "payment_data": {"last_4_digits": "4242", "payment_method": "visa"},
                "original_transaction_uuid": "",
            }
        ]
        for record in payment.refunds:
            transactions.append(
                {
                    "type": "Refund",
                    "uuid": record.provider_refund_id,
                    "currency": currency,
                    "amount": record.amount.to_wire(),
                    "success": record.status is RefundStatus.SUCCEEDED,
                    "is_pending": record.status is RefundStatus.PENDING,
                    "captured": True,
                    "allow_void": False,
                    "allow_refund": False,
                    "void_is_pending": False,
                    "payment_method": "visa",
                    "note": record.extra.get("note", ""),
                    "payment_data": {"last_4_digits": "4242", "payment_method": "visa"},
                    "original_transaction_uuid": sale_uuid,
                }
            )
        return {
            "source": "openapi",
            "type": "Order",
            "number": payment.ref.payment_id,
            "reference_number": payment.ref.merchant_reference,
            "due_date": "",
            "initial_total": total,
            "initial_tips": Decimal("0.00"),
            "subtotal": total,
            "paid_total": payment.amount.to_wire(),
            "unpaid_total": "0.00",
            "state": "completed",
            "correspondence_state": state,
            "currency": currency,
            "return_url": "",
            "notify_url": payment.extra.get("notify_url", ""),
            "line_items": [],
            "transactions": transactions,
            "payment_method_option": {"online": {}},
        }

    # -- replies ----------------------------------------------------------------------------

    def _envelope_bytes(self, order: Mapping[str, Any]) -> bytes:
        if self.envelope == "code":
            return json_bytes({"code": 200, "message": "success", "data": {"order": order}})
        return json_bytes({"error_code": "0", "error_message": "", "data": {"order": order}})

    def _ok(self, order: Mapping[str, Any]) -> Reply:
        return Reply(200, self._envelope_bytes(order))

    def _error(self, code: str, message: str) -> Reply:
        status, numeric = _ERRORS[code]
        if self.envelope == "code":
            body = {"code": numeric, "message": f"{code}: {message}", "data": None}
        else:
            body = {"error_code": code, "error_message": message, "data": None}
        return Reply(status, json_bytes(body))

    # -- what the conformance kit is told -------------------------------------------------

    def refund_outcomes(self) -> frozenset[RefundStatus]:
        """A refund transaction is successful, failed or pending (``success`` /
        ``is_pending``); a pending one settles through :meth:`settle` and a webhook."""
        return frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.PENDING})

    def signature_parts(self) -> SignatureParts:
        """Webhooks are signed as requests are: ``Signature`` over the body, the path, and
        the ``Nonce`` and ``Credential`` time."""
        return SignatureParts(signature_headers=("Signature",), headers=("Credential", "Nonce"))
