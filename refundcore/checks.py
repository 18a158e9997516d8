"""The checks of an operation against its provider before anything is built: what the
provider cannot do, an original amount that cannot cover the refund, and a part refund
a provider of whole refunds cannot take
(:meth:`Pipeline.validate <refundcore.pipeline.Pipeline.validate>` runs them); and,
with a journal, a payment its provider takes no more refunds of."""

from __future__ import annotations

from .errors import ValidationError
from .journal import Journal
from .journal.records import payment_key
from .models import Operation, ProviderInfo, Refund, RefundQuery, Void
from .money import Money

__all__ = [
    "check_capabilities",
    "check_original_amount",
    "check_partial",
    "check_refunds_per_payment",
]


def check_capabilities(info: ProviderInfo, operation: Operation) -> None:
    """``ValidationError`` naming the field for what ``info``'s provider cannot do."""
    caps = info.capabilities
    if isinstance(operation, RefundQuery) and not caps.query:
        raise ValidationError(f"{info.name} cannot query refunds", field="operation")
    if isinstance(operation, Void) and not caps.void:
        raise ValidationError(f"{info.name} offers no void", field="operation")
    amount = getattr(operation, "amount", None)
    if (
        amount is not None
        and caps.currencies is not None
        and amount.currency not in caps.currencies
    ):
        raise ValidationError(
            f"{info.name} does not take {amount.currency} "
            f"(takes {', '.join(sorted(caps.currencies))})",
            field="currency",
        )
    notify_url = getattr(operation, "notify_url", None)
    if notify_url and not caps.callbacks:
        raise ValidationError(f"{info.name} sends no callbacks", field="notify_url")
    if notify_url and not caps.notify_url:
        where = caps.notify_url_setting or "the gateway's own settings"
        raise ValidationError(
            f"{info.name} cannot carry a notify URL with a refund: set it in {where}",
            field="notify_url",
        )


def check_original_amount(operation: Operation, original: Money | None) -> None:
    """``ValidationError`` for an ``original`` amount that cannot cover the refund."""
    if original is None:
        return
    amount = getattr(operation, "amount", None)
    if not isinstance(original, Money):
        raise ValidationError(
            f"must be refundcore.Money, got {type(original).__name__}", field="original_amount"
        )
    if amount is not None and (original.currency != amount.currency or original < amount):
        raise ValidationError(
            f"{original} cannot cover a refund of {amount}", field="original_amount"
        )


def check_partial(info: ProviderInfo, operation: Operation, original: Money | None) -> None:
    """A provider without partial refunds takes only a refund of the whole payment:
    known to be partial when the payment's original amount is given."""
    if info.capabilities.partial_refunds or original is None or not isinstance(operation, Refund):
        return
    if operation.amount.currency == original.currency and operation.amount < original:
        raise ValidationError(
            f"{info.name} refunds only whole payments: {operation.amount} is less than the "
            f"payment's original amount {original}",
            field="amount",
        )


def check_refunds_per_payment(journal: Journal, info: ProviderInfo, refund: Refund) -> None:
    """Refuse ``refund`` when the journal already holds as many refunds of its payment as
    the provider takes (``Capabilities.refunds_per_payment``: one for a refund-once
    gateway), counting every refund that took or may take money, other than ``refund``
    itself (a retry of it is answered as usual). ``ValidationError`` before anything
    is built or sent.

    A check before the claim, not part of it: two first refunds of one payment sent at
    the same moment by two workers both pass, and the gateway declines the second.
    """
    limit = info.capabilities.refunds_per_payment
    if limit is None:
        return
    earlier = [
        entry.refund_id
        for entry in journal.committed_refunds(info.id, payment_key(refund.payment))
        if entry.operation == "refund" and entry.refund_id != refund.refund_id
    ]
    if len(earlier) >= limit:
        times = "once" if limit == 1 else f"{limit} times"
        raise ValidationError(
            f"{info.name} refunds a payment {times}: the journal has refund "
            f"{earlier[0]!r} of it already; nothing was sent",
            field="payment",
        )
