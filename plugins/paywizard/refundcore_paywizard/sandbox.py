"""An emulator of the PayWizard Open Platform APM endpoints, for the sandbox, the demo
and the tests.

Like the gateway it checks the ``jwt-token`` header and the V3 ``sign`` header over the
exact body bytes, keeps a ledger of seeded payments, refuses a ``transIndexCode`` that
was already used for a different request (the same request gets the same answer again),
refuses refunds beyond the refundable balance and refunds of a voided payment, voids
only a payment without refunds, answers ``{code, msg, timestamp, data}``, and pushes the
signed result to ``notifyUrl``.

Where the documentation is silent, the emulator makes these choices (the plugin does not
depend on them): every answer is HTTP 200 with the outcome in ``code`` (401 bad token,
403 bad signature or clientId, 400 bad parameters or a refused refund/void, 404 unknown
original transaction); ``transType`` in pushes is ``REFUND`` or ``VOID``, and ``SALE``
for the push about a payment (:meth:`PaywizardEmulator.signed_payment_callback`), which
a receiver must acknowledge and not take for a refund; ``tranTime`` is UTC.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import secrets
import string
import threading
from collections.abc import Mapping
from typing import Any

from refundcore.crypto import constant_time_equals
from refundcore.errors import ValidationError
from refundcore.models import Callback, PaymentRef, RefundStatus
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
    PROVIDER_ID,
    QUERY_PATH,
    REFUND_PATH,
    SUCCESS_CODE,
    VOID_PATH,
    numeric_currency_code,
    push_signature,
    v3_signature,
)

__all__ = ["PaywizardEmulator"]

log = logging.getLogger("refundcore.sandbox.paywizard")

_RESULT_CODE = {RefundStatus.SUCCEEDED: 0, RefundStatus.FAILED: 1, RefundStatus.PENDING: 2}
# The state a refund or void record shows when queried or pushed.
_RECORD_STATE = {RefundStatus.PENDING: 1, RefundStatus.SUCCEEDED: 2, RefundStatus.FAILED: 5}
_AMOUNT = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,4})?\Z")
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class _Refused(Exception):
    """A request the gateway answers with an error code (and ``data`` null)."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


class PaywizardEmulator(Emulator):
    """The PayWizard APM refund, void and query endpoints, emulated."""

    provider_id = PROVIDER_ID
    #: 12 digits + the ledger's 6-digit counter: 18-digit ids like the gateway's checkoutIds.
    id_prefix = "917121926164"
    mid = "007889-3-006"
    paywizard_id = "10280000002"
    refund_paths = (REFUND_PATH,)

    def __init__(self, credentials: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(credentials, **options)
        # Makes "is this transIndexCode taken" and "record it" one step across the
        # ledger's refunds and this emulator's voids.
        self._lock = threading.RLock()
        self._voids: dict[str, LedgerRefund] = {}

    def export_state(self) -> dict[str, Any]:
        """The ledger's dump, and the voids kept beside it."""
        with self._lock:
            voids = [record.to_json() for record in self._voids.values()]
        return {**super().export_state(), "voids": voids}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Carry on from :meth:`export_state`'s data."""
        super().restore_state(state)
        try:
            voids = [LedgerRefund.from_json(record) for record in state.get("voids", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not usable voids: {type(exc).__name__}: {exc}") from None
        with self._lock:
            self._voids = {record.refund_id: record for record in voids}

    @classmethod
    def make_credentials(cls) -> dict[str, Any]:
        """A fresh developer id, secret and merchant token (throwaway test values)."""
        alphabet = string.ascii_uppercase + string.digits
        return {
            "client_id": "8" + "".join(secrets.choice(string.digits) for _ in range(17)),
            "client_secret": secrets.token_hex(16),
            "token": "".join(secrets.choice(alphabet) for _ in range(32)),
        }

    def client_config(self, base_url: str) -> dict[str, Any]:
        """The merchant-side settings matching these credentials."""
        return {"base_url": base_url, **self.credentials}

    def new_payment_ref(self, key: str) -> PaymentRef:
        """The checkoutId the gateway gave the payment, and the merchant's own
        transIndexCode for it (shaped like ``202506091432000000012``)."""
        serial = key.removeprefix(self.id_prefix)
        suffix = "".join(ch for ch in serial if ch.isdigit())[-9:].rjust(9, "0")
        return PaymentRef(payment_id=key, merchant_reference=f"{self.clock():%Y%m%d%H%M}{suffix}")

    # -- HTTP ------------------------------------------------------------------------

    def _answer(self, code: int, msg: str, data: dict[str, Any] | None) -> Reply:
        return Reply.json(
            {"code": code, "msg": msg, "timestamp": f"{self.clock():{_TIME_FORMAT}}", "data": data}
        )

    def handle(self, request: Incoming) -> Reply:
        """Route, authenticate, and answer one request as the gateway would."""
        routes = {REFUND_PATH: self._refund, VOID_PATH: self._void, QUERY_PATH: self._query}
        route = routes.get(request.path)
        try:
            if request.method != "POST" or route is None:
                raise _Refused(404, "Not Found")
            body = self._authenticate(request)
            return route(body)
        except _Refused as refused:
            return self._answer(refused.code, refused.msg, None)

    def _authenticate(self, request: Incoming) -> dict[str, Any]:
        token = request.headers.get("jwt-token", "")
        if not constant_time_equals(token, self.credentials["token"]):
            raise _Refused(401, "jwt-token is invalid or expired")
        expected = v3_signature(
            request.body, self.credentials["client_id"], self.credentials["client_secret"]
        )
        if not constant_time_equals(expected, request.headers.get("sign", "")):
            raise _Refused(403, "sign verification failed")
        if not request.headers.get("Content-Type", "").startswith("application/json"):
            raise _Refused(400, "Content-Type must be application/json")
        try:
            body = request.json()
        except ValueError:
            raise _Refused(400, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise _Refused(400, "request body is not a JSON object")
        if body.get("clientId") != self.credentials["client_id"]:
            raise _Refused(403, "clientId does not match the credentials")
        return body

    @staticmethod
    def _required(body: dict[str, Any], name: str) -> str:
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise _Refused(400, f"{name} is required and must be a non-empty string")
        return value

    @classmethod
    def _optional(cls, body: dict[str, Any], name: str) -> str | None:
        return None if body.get(name) is None else cls._required(body, name)

    @staticmethod
    def _fingerprint(kind: str, body: dict[str, Any]) -> str:
        canonical = json.dumps([kind, body], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    # -- lookups ---------------------------------------------------------------------

    def _original(self, body: dict[str, Any]) -> LedgerPayment:
        checkout_id = self._optional(body, "oriCheckoutId")
        reference = self._optional(body, "oriTransIndexCode")
        if checkout_id is None and reference is None:
            raise _Refused(400, "oriCheckoutId or oriTransIndexCode is required")
        # As documented: when both are sent, oriCheckoutId takes precedence.
        if checkout_id is not None:
            payment = self.ledger.find_payment(payment_id=checkout_id)
        else:
            payment = self.ledger.find_payment(merchant_reference=reference)
        if payment is None:
            raise _Refused(404, "original transaction not found")
        return payment

    def _record(self, trans_index_code: str) -> LedgerRefund | None:
        return self.ledger.find_refund(trans_index_code) or self._voids.get(trans_index_code)

    def _check_reuse(self, trans_index_code: str, fingerprint: str) -> LedgerRefund | None:
        """The earlier record for a repeated request; ``_Refused`` for a reused id."""
        existing = self._record(trans_index_code)
        if existing is not None:
            if existing.fingerprint == fingerprint:
                return existing
            raise _Refused(400, "transIndexCode already exists")
        if any(p.ref.merchant_reference == trans_index_code for p in self.ledger.payments()):
            raise _Refused(400, "transIndexCode already exists")
        return None

    # -- operations ------------------------------------------------------------------

    def _transaction_data(self, record: LedgerRefund) -> dict[str, Any]:
        payment = self.ledger.payment_of(record)
        return {
            "mid": self.mid,
            "paywizardId": self.paywizard_id,
            "checkoutId": record.provider_refund_id,
            "transIndexCode": record.refund_id,
            "amount": record.amount.to_wire(),
            "result": _RESULT_CODE[record.status],
            "oriCheckoutId": payment.ref.payment_id,
            "oriTransIndexCode": payment.ref.merchant_reference,
        }

    def _refund(self, body: dict[str, Any]) -> Reply:
        code = self._required(body, "transIndexCode")
        amount_text = self._required(body, "amount")
        notify_url = self._optional(body, "notifyUrl")
        fingerprint = self._fingerprint("refund", body)
        with self._lock:
            repeated = self._check_reuse(code, fingerprint)
            if repeated is not None:
                return self._answer(SUCCESS_CODE, "success", self._transaction_data(repeated))
            payment = self._original(body)
            amount = self._amount(amount_text, payment.amount.currency)
            decision, record = self.ledger.refund(
                payment,
                refund_id=code,
                amount=amount,
                fingerprint=fingerprint,
                notify_url=notify_url,
                now=self.clock(),
            )
        if decision is RefundDecision.VOIDED:
            raise _Refused(400, "the original transaction has been revoked")
        if decision is RefundDecision.OVER_REFUND:
            raise _Refused(400, "refund amount exceeds the refundable amount")
        if decision is not RefundDecision.ACCEPTED or record is None:
            raise _Refused(400, f"refund refused ({decision.value})")
        if record.status is not RefundStatus.PENDING:
            self._push(record)
        return self._answer(SUCCESS_CODE, "success", self._transaction_data(record))

    def _push(self, record: LedgerRefund) -> None:
        # The sandbox's sender delivers only to loopback http:// URLs; a real merchant URL
        # (https://shop.example/...) is accepted by the gateway but cannot be reached here,
        # and that must not turn an accepted refund into an emulator failure.
        try:
            self.notify(record)
        except ValueError:
            log.info("result push for %s not delivered: unreachable notifyUrl", record.refund_id)

    @staticmethod
    def _amount(text: str, currency: str) -> Money:
        if not _AMOUNT.match(text):
            raise _Refused(400, "amount must be a decimal string such as 1.50")
        try:
            return Money(text, currency)
        except ValidationError:
            raise _Refused(400, "invalid amount") from None

    def _void(self, body: dict[str, Any]) -> Reply:
        code = self._required(body, "transIndexCode")
        amount_text = self._optional(body, "amount")
        notify_url = self._optional(body, "notifyUrl")
        fingerprint = self._fingerprint("void", body)
        with self._lock:
            repeated = self._check_reuse(code, fingerprint)
            if repeated is not None:
                return self._answer(SUCCESS_CODE, "success", self._transaction_data(repeated))
            payment = self._original(body)
            whole = payment.amount
            if amount_text is not None and self._amount(amount_text, whole.currency) != whole:
                raise _Refused(400, "a void reverses the whole amount")
            if not self.ledger.void(payment):
                raise _Refused(400, "the transaction cannot be revoked (refunded or revoked)")
            record = LedgerRefund(
                refund_id=code,
                provider_refund_id=self.ledger.next_id(),
                payment_key=payment.key,
                amount=payment.amount,
                status=RefundStatus.SUCCEEDED,
                fingerprint=fingerprint,
                notify_url=notify_url,
                created=self.clock(),
                extra={"kind": "void"},
            )
            self._voids[code] = record
        self._push(record)
        return self._answer(SUCCESS_CODE, "success", self._transaction_data(record))

    def _query(self, body: dict[str, Any]) -> Reply:
        checkout_id = self._optional(body, "checkoutId")
        code = self._optional(body, "transIndexCode")
        if checkout_id is None and code is None:
            raise _Refused(400, "checkoutId or transIndexCode is required")
        with self._lock:
            data = self._lookup(checkout_id, code)
        return self._answer(SUCCESS_CODE, "success", data)

    def _lookup(self, checkout_id: str | None, code: str | None) -> dict[str, Any] | None:
        # As documented: checkoutId wins over transIndexCode.
        if checkout_id is not None:
            record = self.ledger.find_refund(provider_refund_id=checkout_id) or next(
                (v for v in self._voids.values() if v.provider_refund_id == checkout_id), None
            )
            payment = self.ledger.find_payment(payment_id=checkout_id)
        else:
            record = self._record(code or "")
            payment = self.ledger.find_payment(merchant_reference=code)
        if record is not None:
            return self._record_data(record)
        return self._payment_data(payment) if payment is not None else None

    def _record_data(self, record: LedgerRefund) -> dict[str, Any]:
        return {
            "mid": self.mid,
            "paywizardId": self.paywizard_id,
            "checkoutId": record.provider_refund_id,
            "transIndexCode": record.refund_id,
            "state": _RECORD_STATE[record.status],
            "amount": record.amount.to_wire(),
            "tranTime": f"{record.created:{_TIME_FORMAT}}",
        }

    def _payment_data(self, payment: LedgerPayment) -> dict[str, Any]:
        if payment.voided:
            state = 3
        elif payment.refunded >= payment.amount.amount:
            state = 4
        elif payment.refunded > 0:
            state = 6
        else:
            state = 2
        return {
            "mid": self.mid,
            "paywizardId": self.paywizard_id,
            "checkoutId": payment.ref.payment_id,
            "transIndexCode": payment.ref.merchant_reference,
            "state": state,
            "amount": payment.amount.to_wire(),
            "tranTime": None,
        }

    # -- result push -----------------------------------------------------------------

    def push_fields(self, record: LedgerRefund) -> dict[str, Any]:
        """The fields of the result push about ``record`` (before signing)."""
        return {
            "checkoutId": record.provider_refund_id,
            "transIndexCode": record.refund_id,
            "paywizardId": self.paywizard_id,
            "mid": self.mid,
            "transType": "VOID" if record.extra.get("kind") == "void" else "REFUND",
            "amount": record.amount.to_wire(),
            "state": _RECORD_STATE[record.status],
            "currencyCode": numeric_currency_code(record.amount.currency),
            "tranTime": f"{record.created:{_TIME_FORMAT}}",
            "transResult": _RESULT_CODE[record.status],
        }

    def build_callback(self, record: LedgerRefund, *, path: str, at: dt.datetime) -> Callback:
        """The signed result push about ``record``: JSON body, signature in ``sign``.
        The push carries no signed time, so ``at`` does not change it."""
        return self.signed_push(self.push_fields(record), path=path)

    def signed_payment_callback(
        self, payment: PaymentRef, *, path: str = "/callback"
    ) -> Callback | None:
        """The result push about a seeded payment itself (``transType`` ``SALE``)."""
        found = self.ledger.find_payment(payment_id=payment.payment_id)
        if found is None:
            raise KeyError(f"no payment {payment!r} in the ledger")
        fields = {
            "checkoutId": found.ref.payment_id,
            "transIndexCode": found.ref.merchant_reference,
            "paywizardId": self.paywizard_id,
            "mid": self.mid,
            "transType": "SALE",
            "amount": found.amount.to_wire(),
            "state": 2,
            "currencyCode": numeric_currency_code(found.amount.currency),
            "tranTime": f"{self.clock():{_TIME_FORMAT}}",
            "transResult": 0,
        }
        return self.signed_push(fields, path=path)

    def signed_push(self, fields: dict[str, Any], *, path: str) -> Callback:
        """A push of ``fields``, signed as the platform signs (``sign`` header)."""
        signature = push_signature(
            fields, self.credentials["client_id"], self.credentials["client_secret"]
        )
        return Callback(
            method="POST",
            path=path,
            headers={"Content-Type": "application/json", "sign": signature},
            body=json.dumps(fields, separators=(",", ":")).encode(),
        )

    # -- what the conformance kit is told ---------------------------------------------

    def refund_outcomes(self) -> frozenset[RefundStatus]:
        """Refunds answer success, failure or pending (``result`` 0, 1 or 2); a pending
        one settles through :meth:`settle` and a push."""
        return frozenset(_RESULT_CODE)

    def signature_parts(self) -> SignatureParts:
        """A push carries its signature in a ``sign`` header, else a ``sign`` field."""
        return SignatureParts(signature_headers=("sign",), signature_fields=("sign",))
