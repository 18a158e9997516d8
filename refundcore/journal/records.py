"""The journal's rows and the pipeline's values, translated both ways.

Going in, an operation becomes the row claimed before it is sent
(:func:`new_refund`) and a finished result the outcome recorded for it
(:func:`result_record`). Coming out, a row becomes the operation to reconcile
(:func:`operation_for`), the query that asks about it (:func:`query_for`) or the
result it stands for (:func:`result_from_entry`), with no network involved.
"""

from __future__ import annotations

import hashlib
import json

from ..errors import ValidationError
from ..models import (
    Operation,
    PaymentRef,
    Refund,
    RefundQuery,
    RefundResult,
    RefundStatus,
    Void,
)
from ..money import Money
from ..status import JournalState
from .values import JournalEntry, NewRefund, ResultRecord

__all__ = [
    "entry_payment",
    "fingerprint",
    "new_refund",
    "operation_for",
    "payment_key",
    "query_for",
    "result_from_entry",
    "result_record",
]

_PAYMENT_IDS = ("payment_id", "merchant_reference", "transaction_id")


def fingerprint(operation: Refund | Void) -> str:
    """What makes two requests with one refund id the same refund (the notify URL is
    a delivery detail, not part of it)."""
    amount = operation.amount
    identity = [
        operation.kind,
        operation.payment.payment_id,
        operation.payment.merchant_reference,
        operation.payment.transaction_id,
        None if amount is None else amount.to_wire(),
        None if amount is None else amount.currency,
        operation.reason,
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def payment_key(payment: PaymentRef) -> str:
    """The payment as the journal counts its refunds against its original amount: by
    its first identifier (``payment_id``, else ``merchant_reference``, else
    ``transaction_id``)."""
    for name in _PAYMENT_IDS:
        value = getattr(payment, name)
        if value is not None:
            return f"{name}:{value}"
    raise ValidationError("give at least one identifier", field="payment")


def new_refund(provider: str, operation: Refund | Void, original: Money | None) -> NewRefund:
    """The row :meth:`~refundcore.journal.Journal.claim` records before ``operation``
    is sent."""
    return NewRefund(
        provider=provider,
        refund_id=operation.refund_id,
        operation=operation.kind,
        payment_id=operation.payment.payment_id,
        merchant_reference=operation.payment.merchant_reference,
        transaction_id=operation.payment.transaction_id,
        amount=operation.amount,
        reason=operation.reason,
        notify_url=operation.notify_url,
        original_amount=original,
        fingerprint=fingerprint(operation),
        payment_key=payment_key(operation.payment),
    )


def result_record(
    provider: str,
    operation: Operation,
    owner: str,
    attempt: int,
    result: RefundResult,
    *,
    sent: bool = True,
) -> ResultRecord:
    """What ``owner`` records for its ``attempt`` at ``operation`` once ``result`` is
    finished; ``sent`` when the attempt sent a request (``result`` is its answer)."""
    return ResultRecord(
        provider,
        operation.refund_id,
        owner,
        attempt,
        JournalState.of(result.status),
        result.provider_refund_id,
        result.message,
        result.error_code,
        result.http_status,
        result.raw,
        sent,
    )


def entry_payment(entry: JournalEntry) -> PaymentRef:
    """The payment a journalled refund was made against."""
    return PaymentRef(entry.payment_id, entry.merchant_reference, entry.transaction_id)


def operation_for(entry: JournalEntry) -> Refund | Void:
    """The refund or void a journalled row records, to be sent or reconciled again."""
    if entry.operation == "void":
        return Void(
            refund_id=entry.refund_id,
            payment=entry_payment(entry),
            amount=entry.amount,
            reason=entry.reason,
            notify_url=entry.notify_url,
        )
    if entry.amount is None:
        raise ValidationError("journalled refund has no amount", field="amount")
    return Refund(
        refund_id=entry.refund_id,
        payment=entry_payment(entry),
        amount=entry.amount,
        reason=entry.reason,
        notify_url=entry.notify_url,
    )


def query_for(entry: JournalEntry) -> RefundQuery:
    """The query that asks the gateway where a journalled refund stands."""
    return RefundQuery(
        refund_id=entry.refund_id,
        payment=entry_payment(entry),
        provider_refund_id=entry.provider_refund_id,
    )


def result_from_entry(entry: JournalEntry, message: str | None = None) -> RefundResult:
    """A journalled outcome as a result (no network involved); a row still being
    sent is UNKNOWN."""
    return RefundResult(
        provider=entry.provider,
        refund_id=entry.refund_id,
        status=entry.state.status or RefundStatus.UNKNOWN,
        operation=entry.operation,
        amount=entry.amount,
        provider_refund_id=entry.provider_refund_id,
        message=message or entry.message,
        error_code=entry.error_code,
        http_status=entry.http_status,
        raw=entry.raw,
    )
