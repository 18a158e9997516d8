"""An emulator of BBMSL PayAPI, for the sandbox, the demo and the tests.

It behaves like the gateway for one merchant: it reads the ``{"request", "signature"}``
envelope, verifies the signature with the merchant's public key, keeps a ledger of the
seeded orders, refunds an order at most once and only within its unsettled balance,
voids unsettled orders, answers queries, and posts notifications signed with its own
gateway key to the order's notify URL, retrying until the receiver answers ``OK``.

Orders are made through one checkout (``checkout="direct"``, Online Direct, or
``"hosted"``, Hosted Checkout) and are found only at that checkout's paths, with the
``orderId`` type of its requests (a JSON number on Online Direct; a string of digits,
as BBMSL's production plugin sends, on Hosted Checkout).

Notifications carry ``amount`` and ``orderId`` as JSON numbers and are signed over
the values as BBMSL's production plugin (PHP) prints them (``notification_values=
"php"``, the default: ``40.00`` → ``40``); ``"json"`` signs the raw JSON text
instead, ``"strings"`` sends every value as a string (the pages' example), where
the two agree, and ``"query"`` signs the URL-encoded text BBMSL's plugin verified
before (``http_build_query``: ``updateTime=2022-08-01T10%3A00%3A00``). Besides refund
(REFUNDED) and void (VOIDED) notifications it signs sale (SUCCESS) ones, which a
receiver must acknowledge and not take for a refund.

BBMSL publishes no list of ``responseCode`` values; the decline codes below are this
emulator's own (the plugin treats every code but ``0000`` alike).

The notify URL is the order's (set when the payment was created), else the one the
merchant set at the gateway (``notify_url``, which :class:`SandboxRun` sets):
a BBMSL refund request carries none. The merchant's own refund id, which BBMSL never
sees, reaches the emulator through :class:`~refundcore.sandbox.MerchantBridge`, an app
plugin for the sandbox's client.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from refundcore.crypto import PrivateKey, generate_rsa_keypair
from refundcore.errors import SignatureError, ValidationError
from refundcore.models import (
    Callback,
    PaymentRef,
    RefundStatus,
)
from refundcore.money import Money
from refundcore.sandbox import (
    CallbackSender,
    Emulator,
    Incoming,
    LedgerPayment,
    LedgerRefund,
    MerchantBridge,
    RefundDecision,
    Reply,
    SignatureParts,
    utcnow,
)

from . import (
    CHECKOUTS,
    PATHS,
    PROVIDER_ID,
    SUCCESS_CODE,
    JsonNumber,
    json_text,
    notification_value_text,
    php_query_text,
    php_value_text,
)

__all__ = ["DECLINES", "NOTIFICATION_VALUES", "DirectgwEmulator"]

#: How the emulator writes and signs notification values (see the module).
NOTIFICATION_VALUES = ("php", "json", "strings", "query")

#: The emulator's decline codes (its own choice: BBMSL publishes none).
DECLINES: Mapping[str, str] = {
    "1001": "Signature verification failed",
    "1002": "Invalid merchant",
    "1003": "Invalid request",
    "2001": "Order not found",
    "2002": "Order has already been refunded",
    "2003": "Refund amount exceeds the order amount",
    "2004": "Insufficient unsettled balance",
    "2005": "Order cannot be voided",
    "2006": "Order has been voided",
    "2007": "Refund declined",
}
_MASKED_PAN = "400000XXXXXX1000"
_CARD_TYPE = "VISA"


def _time(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def _json_reply(data: Mapping[str, Any], status: int = 200) -> Reply:
    # Decimals go out as exact JSON numbers (76.19), never through float.
    return Reply(status, json_text(data).encode("utf-8"))


class DirectgwEmulator(Emulator):
    """BBMSL PayAPI (Online Direct), emulated for one merchant.

    Credentials: ``merchant_id``, ``private_key`` (the merchant's, whose public half the
    emulator verifies requests with) and ``gateway_key`` (the emulator's own, which
    signs notifications; its public half is the client's ``gateway_public_key``).

    Orders are seeded with :meth:`seed_payment` (``orderId`` digits, a
    ``merchantReference``) through the emulator's ``checkout``; each has an unsettled
    balance (the order amount unless :meth:`set_unsettled_balance` says otherwise) and
    can be :meth:`mark_settled`. BBMSL has no pending refunds: a ``PENDING`` seed is
    refused; a ``FAILED`` one makes its refunds declined. ``notification_values`` is
    how notifications are written and signed (:data:`NOTIFICATION_VALUES`).
    """

    provider_id = PROVIDER_ID
    # Ledger ids become order and transaction ids: JSON numbers, so no leading zero.
    id_prefix = "1"
    refund_paths = tuple(paths["refund"] for paths in PATHS.values())
    refund_statuses = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED})

    def __init__(
        self,
        credentials: Mapping[str, Any] | None = None,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        callback_delay: float = 0.0,
        send_callbacks: bool = True,
        checkout: str = "direct",
        notification_values: str = "php",
    ) -> None:
        if checkout not in CHECKOUTS:
            raise ValueError(f"checkout must be one of {CHECKOUTS}, not {checkout!r}")
        if notification_values not in NOTIFICATION_VALUES:
            raise ValueError(
                f"notification_values must be one of {NOTIFICATION_VALUES}, "
                f"not {notification_values!r}"
            )
        super().__init__(
            credentials, clock=clock, callback_delay=callback_delay, send_callbacks=send_callbacks
        )
        self.checkout = checkout
        self.notification_values = notification_values
        # Held across each rule check and the ledger write it leads to.
        self._lock = threading.Lock()
        self._merchant_key = self._private_key("private_key").public_key()

    # -- credentials and config ----------------------------------------------------------

    @classmethod
    def make_credentials(cls) -> dict[str, Any]:
        """A fresh merchant id and two fresh RSA keys (merchant's and gateway's)."""
        return {
            "merchant_id": f"3{secrets.randbelow(10**6):06d}",
            "private_key": generate_rsa_keypair(),
            "gateway_key": generate_rsa_keypair(),
        }

    def _private_key(self, name: str) -> PrivateKey:
        key = self.credentials[name]
        return key if isinstance(key, PrivateKey) else PrivateKey.from_pem(str(key))

    def client_config(self, base_url: str) -> dict[str, Any]:
        """The merchant's config table for this emulator at ``base_url``."""
        return {
            "base_url": base_url,
            "merchant_id": self.credentials["merchant_id"],
            "private_key": self._private_key("private_key").to_pem(),
            "gateway_public_key": self._private_key("gateway_key").public_key().to_pem(),
            "checkout": self.checkout,
        }

    def make_sender(self) -> CallbackSender:
        """BBMSL retries a notification (up to 15 times) until the answer is 2xx ``OK``."""
        return CallbackSender(
            retry_until=lambda status, body: 200 <= status < 300 and body.strip() == b"OK",
            max_attempts=15,
        )

    def client_plugin(self) -> MerchantBridge:
        """The app plugin a client talking to this emulator registers (see the module)."""
        return MerchantBridge(self)

    # -- seeding and merchant-side knowledge ----------------------------------------------

    def new_payment_ref(self, key: str) -> PaymentRef:
        """An order's identifiers: ``orderId`` = the gateway's id, plus a merchant reference."""
        return PaymentRef(payment_id=key, merchant_reference=f"SHOP-{key}")

    def seed_payment(
        self, amount: Money, *, refund_outcome: RefundStatus = RefundStatus.SUCCEEDED
    ) -> PaymentRef:
        """A completed card payment (order status SUCCESS) of ``amount``."""
        if refund_outcome is RefundStatus.PENDING:
            raise ValueError("BBMSL has no pending refunds: seed SUCCEEDED or FAILED")
        ref = super().seed_payment(amount, refund_outcome=refund_outcome)
        payment = self._find(ref)
        assert payment is not None
        payment.extra.update(
            created=self.clock(),
            unsettled=amount.amount,
            settled=False,
            sale_transaction_id=self.ledger.next_id(),
            checkout=self.checkout,
        )
        return ref

    def _find(self, ref: PaymentRef) -> LedgerPayment | None:
        return self.ledger.find_payment(
            payment_id=ref.payment_id, merchant_reference=ref.merchant_reference
        )

    def set_unsettled_balance(self, ref: PaymentRef, balance: Money) -> None:
        """Set what can still be refunded of an order before it settles."""
        payment = self._find(ref)
        if payment is None:
            raise KeyError(f"no payment {ref!r}")
        payment.extra["unsettled"] = balance.amount

    def mark_settled(self, ref: PaymentRef) -> None:
        """Settle an order: its status becomes SETTLED and it can no longer be voided."""
        payment = self._find(ref)
        if payment is None:
            raise KeyError(f"no payment {ref!r}")
        payment.extra["settled"] = True

    def set_notify_url(self, ref: PaymentRef, url: str) -> None:
        """The notify URL of an order, as the merchant gave it when creating the payment."""
        payment = self._find(ref)
        if payment is not None:
            payment.extra["notify_url"] = url

    # -- the gateway -----------------------------------------------------------------------

    def handle(self, request: Incoming) -> Reply:
        """Answer one PayAPI call, at either checkout's paths."""
        actions = {"refund": self._refund, "query": self._query, "void": self._void}
        routes = {
            path: (checkout, actions[kind])
            for checkout, paths in PATHS.items()
            for kind, path in paths.items()
        }
        route = routes.get(request.path)
        if request.method != "POST" or route is None:
            return _json_reply(
                {"status": 404, "error": "Not Found", "path": request.path}, status=404
            )
        params = self._authenticated_params(request)
        if isinstance(params, Reply):
            return params
        checkout, action = route
        return action(params, checkout)

    def _authenticated_params(self, request: Incoming) -> dict[str, Any] | Reply:
        try:
            outer = request.json()
            text, signature = outer["request"], outer["signature"]
            if not isinstance(text, str) or not isinstance(signature, str):
                raise TypeError("request and signature are strings")
            params = json.loads(text, parse_float=Decimal)
            if not isinstance(params, dict):
                raise TypeError("the request is a JSON object")
        except (ValueError, TypeError, KeyError, RecursionError):
            return self._decline("1003")
        # The merchant id picks the public key the signature is checked with.
        if params.get("merchantId") != self.credentials["merchant_id"]:
            return self._decline("1002")
        try:
            self._merchant_key.verify_sha256_b64(signature, text.encode("utf-8"))
        except SignatureError:
            return self._decline("1001")
        return params

    def _decline(self, code: str, payment: LedgerPayment | None = None, **extra: Any) -> Reply:
        body: dict[str, Any] = {"responseCode": code, "message": DECLINES[code]}
        if payment is not None:
            body["order"] = self._order_json(payment)
        return _json_reply({**body, **extra})

    def _payment_for(self, params: Mapping[str, Any], checkout: str) -> LedgerPayment | Reply:
        order_id, reference = params.get("orderId"), params.get("merchantReference")
        # Strict about types, as each checkout's sources have them: orderId a JSON
        # integer on Online Direct, a string of digits on Hosted Checkout;
        # merchantReference a string of at most 64 characters.
        if checkout == "direct":
            usable = isinstance(order_id, int) and not isinstance(order_id, bool)
        else:
            usable = isinstance(order_id, str) and order_id.isascii() and order_id.isdigit()
        if order_id is not None and not usable:
            return self._decline("1003")
        if reference is not None and (not isinstance(reference, str) or len(reference) > 64):
            return self._decline("1003")
        if order_id is None and reference is None:
            return self._decline("1003")
        payment = self.ledger.find_payment(
            payment_id=None if order_id is None else str(order_id), merchant_reference=reference
        )
        # An order is known only at the paths of the checkout it was made through.
        if payment is None or payment.extra.get("checkout") != checkout:
            return self._decline("2001")
        return payment

    def _refund(self, params: Mapping[str, Any], checkout: str) -> Reply:
        payment = self._payment_for(params, checkout)
        if isinstance(payment, Reply):
            return payment
        amount = params.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, (int, Decimal)):
            return self._decline("1003")
        try:
            money = Money(amount, payment.amount.currency)
        except ValidationError:
            return self._decline("1003")
        outcome = self.ledger.take_outcome(payment)
        if outcome is RefundStatus.FAILED:
            declined = self._transaction_json(self.ledger.next_id(), "REFUND", money, "DECLINED")
            return self._decline("2007", payment, transaction=declined)
        with self._lock:
            code = self._refund_refusal(payment, money)
            if code is not None:
                return self._decline(code, payment)
            key = str(payment.ref.payment_id)
            decision, record = self.ledger.refund(
                payment,
                refund_id=key,
                amount=money,
                fingerprint=hashlib.sha256(json_text(dict(params)).encode()).hexdigest(),
                notify_url=payment.extra.get("notify_url") or self.notify_url,
                once=True,
                now=self.clock(),
                status=outcome,
            )
            if decision is not RefundDecision.ACCEPTED or record is None:
                return self._decline("2002", payment)
            # A notification identifies the refund by its order (refunded at most once);
            # the refund transaction has an id of its own.
            record.provider_refund_id = key
            record.extra["transaction_id"] = self.ledger.next_id()
            payment.extra["unsettled"] -= money.amount
        self.notify(record)
        return _json_reply(
            {
                "responseCode": SUCCESS_CODE,
                "message": "SUCCESS",
                "order": self._order_json(payment),
                "transaction": self._refund_transaction(payment, record),
            }
        )

    def _refund_refusal(self, payment: LedgerPayment, money: Money) -> str | None:
        if payment.voided:
            return "2006"
        if any(r.status is not RefundStatus.FAILED for r in payment.refunds):
            return "2002"
        if money.amount > payment.refundable:
            return "2003"
        if money.amount > payment.extra["unsettled"]:
            return "2004"
        return None

    def _query(self, params: Mapping[str, Any], checkout: str) -> Reply:
        payment = self._payment_for(params, checkout)
        if isinstance(payment, Reply):
            return payment
        return _json_reply(
            {
                "responseCode": SUCCESS_CODE,
                "message": "SUCCESS",
                "order": self._order_json(payment),
                "transaction": self._latest_transaction(payment),
            }
        )

    def _void(self, params: Mapping[str, Any], checkout: str) -> Reply:
        payment = self._payment_for(params, checkout)
        if isinstance(payment, Reply):
            return payment
        with self._lock:
            if payment.voided:
                return self._decline("2006", payment)
            if payment.extra["settled"] or not self.ledger.void(payment):
                return self._decline("2005", payment)
            payment.extra["void_transaction_id"] = self.ledger.next_id()
            payment.extra["voided_at"] = self.clock()
        return _json_reply(
            {
                "responseCode": SUCCESS_CODE,
                "message": "SUCCESS",
                "order": self._order_json(payment),
                "transaction": self._latest_transaction(payment),
            }
        )

    # -- reply bodies ----------------------------------------------------------------------

    def _order_status(self, payment: LedgerPayment) -> str:
        if payment.voided:
            return "VOIDED"
        if any(r.status is RefundStatus.SUCCEEDED for r in payment.refunds):
            return "REFUNDED"
        return "SETTLED" if payment.extra.get("settled") else "SUCCESS"

    def _order_json(self, payment: LedgerPayment) -> dict[str, Any]:
        created = payment.extra.get("created", self.clock())
        updated = max(
            [
                created,
                payment.extra.get("voided_at", created),
                *(r.created for r in payment.refunds),
            ]
        )
        return {
            "id": int(str(payment.ref.payment_id)),
            "merchantReference": payment.ref.merchant_reference,
            "currency": payment.amount.currency,
            "status": self._order_status(payment),
            "amount": payment.amount.amount,
            "createTime": _time(created),
            "updateTime": _time(updated),
        }

    def _transaction_json(
        self, txn_id: str, kind: str, amount: Money, status: str
    ) -> dict[str, Any]:
        merchant = self.credentials["merchant_id"]
        return {
            "id": int(txn_id),
            "merchantId": int(merchant) if merchant.isdigit() else merchant,
            "type": kind,
            "currency": amount.currency,
            "amount": amount.amount,
            "status": status,
            "maskedPan": _MASKED_PAN,
            "stan": f"{int(txn_id) % 10**6:06d}",
        }

    def _refund_transaction(self, payment: LedgerPayment, record: LedgerRefund) -> dict[str, Any]:
        # Only approved refunds are recorded: declined ones are answered and forgotten.
        return self._transaction_json(
            record.extra["transaction_id"], "REFUND", record.amount, "SUCCESS"
        )

    def _latest_transaction(self, payment: LedgerPayment) -> dict[str, Any]:
        if payment.voided:
            txn_id = payment.extra["void_transaction_id"]
            return self._transaction_json(txn_id, "VOID", payment.amount, "SUCCESS")
        if payment.refunds:
            return self._refund_transaction(payment, payment.refunds[-1])
        status = "SETTLED" if payment.extra.get("settled") else "SUCCESS"
        txn_id = payment.extra["sale_transaction_id"]
        return self._transaction_json(txn_id, "SALE", payment.amount, status)

    # -- notifications ---------------------------------------------------------------------

    def sign_notification(self, fields: Mapping[str, Any]) -> bytes:
        """A notification body: ``fields`` plus a ``signature`` made with the gateway
        key over the sorted ``k=v`` strings joined with ``&``, each value written as
        ``notification_values`` says (a :class:`Decimal` or int is a JSON number); for
        ``"query"``, names and values URL-encoded as well."""
        if self.notification_values == "strings":
            fields = {
                key: value if isinstance(value, str) else str(value)
                for key, value in fields.items()
            }
        as_received = {
            key: JsonNumber(json_text(value)) if isinstance(value, (Decimal, int)) else value
            for key, value in fields.items()
        }
        if self.notification_values == "query":
            text = php_query_text(as_received)
            if text is None:
                raise ValueError("the query text covers flat fields without null only")
        else:
            write = php_value_text if self.notification_values == "php" else notification_value_text
            text = "&".join(sorted(f"{key}={write(value)}" for key, value in as_received.items()))
        signature = self._private_key("gateway_key").sign_sha256(text.encode("utf-8"))
        body = {**fields, "signature": base64.b64encode(signature).decode("ascii")}
        return json_text(body).encode("utf-8")

    def notification(
        self, payment: LedgerPayment, status: str, amount: Money, *, path: str, at: dt.datetime
    ) -> Callback:
        """A signed notification about ``payment``'s order with ``status`` and ``amount``."""
        fields: dict[str, Any] = {
            "amount": amount.amount,
            "maskedPan": _MASKED_PAN,
            "orderId": int(str(payment.ref.payment_id)),
            "cardType": _CARD_TYPE,
            "status": status,
            "merchantReference": str(payment.ref.merchant_reference),
            "updateTime": _time(at),
        }
        return Callback(
            method="POST",
            path=path,
            headers={"Content-Type": "application/json"},
            body=self.sign_notification(fields),
        )

    def build_callback(self, record: LedgerRefund, *, path: str, at: dt.datetime) -> Callback:
        """The refund notification: the order's fields with status REFUNDED and the
        refund's amount."""
        payment = self.ledger.payment_of(record)
        return self.notification(payment, "REFUNDED", record.amount, path=path, at=at)

    def signed_payment_callback(
        self, payment: PaymentRef, *, path: str = "/callback"
    ) -> Callback | None:
        """The sale notification (status SUCCESS) about a seeded order."""
        found = self._find(payment)
        if found is None:
            raise KeyError(f"no payment {payment!r}")
        return self.notification(found, "SUCCESS", found.amount, path=path, at=self.clock())

    # -- what the conformance kit is told ----------------------------------------------------

    def refund_outcomes(self) -> frozenset[RefundStatus]:
        """BBMSL approves or declines a refund at once: it has no pending refunds."""
        return frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED})

    def signature_parts(self) -> SignatureParts:
        """A notification carries its signature in the body's ``signature`` field."""
        return SignatureParts(signature_fields=("signature",))
