"""``unnamed``: a callback's word reduced to what the gateway's signature vouches for."""

from __future__ import annotations

import attrs

from refundcore import CallbackVerdict, Money, PaymentRef, RefundNotification, RefundStatus
from refundcore.notifications import unnamed


def test_unnamed_drops_the_tie_and_the_journals_flags_and_keeps_the_rest() -> None:
    word = RefundNotification(
        provider="paywiser",
        status=RefundStatus.FAILED,
        event="refund",
        refund_id="r-1",
        provider_refund_id="7000002",
        payment=PaymentRef(payment_id="7000001"),
        amount=Money("30.00", "USD"),
        raw={"txid": "7000002"},
        duplicate=True,
        contradicts=RefundStatus.SUCCEEDED,
        verdict=CallbackVerdict.VERIFIED,
        unsigned_tie=True,
    )

    told = unnamed(word, CallbackVerdict.UNCONFIRMED)

    expected = attrs.evolve(
        word,
        refund_id=None,
        payment=None,
        duplicate=False,
        contradicts=None,
        verdict=CallbackVerdict.UNCONFIRMED,
    )
    # Every field, so one added later cannot be left out of unnamed unnoticed.
    for field in attrs.fields(RefundNotification):
        assert getattr(told, field.name) == getattr(expected, field.name), field.name
    assert type(told) is RefundNotification
    assert (word.refund_id, word.duplicate) == ("r-1", True)  # the original is unchanged
