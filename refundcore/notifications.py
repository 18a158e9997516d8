"""What the application is told of a verified callback: the word as the journal read it
(rules 9 and 10 of docs/exactly-once.md), or, without a journal, what nothing but the
gateway's signature vouches for."""

from __future__ import annotations

import logging

import attrs

from .journal.values import Applied
from .logs import EventLogger
from .models import RefundNotification
from .status import CallbackVerdict, JournalState

__all__ = ["as_heard", "unnamed"]

# Logged as the client the protocol serves: one logger for users to configure.
log = EventLogger("refundcore.client")


def unnamed(
    word: RefundNotification, verdict: CallbackVerdict, *, duplicate: bool = False
) -> RefundNotification:
    """``word`` naming no refund: without ``refund_id`` and ``payment``, with
    ``verdict`` and ``duplicate`` as given and no ``contradicts``; every other field as
    it is. What a word whose unsigned tie nothing confirmed is reduced to."""
    # Every field is converted already: set directly, as the frozen __init__ does, at a
    # third of what attrs.evolve costs on every callback of such a gateway.
    told = object.__new__(RefundNotification)
    put = object.__setattr__
    put(told, "provider", word.provider)
    put(told, "status", word.status)
    put(told, "event", word.event)
    put(told, "refund_id", None)
    put(told, "provider_refund_id", word.provider_refund_id)
    put(told, "payment", None)
    put(told, "amount", word.amount)
    put(told, "raw", word.raw)
    put(told, "duplicate", duplicate)
    put(told, "contradicts", None)
    put(told, "verdict", verdict)
    put(told, "unsigned_tie", word.unsigned_tie)
    return told


def as_heard(
    word: RefundNotification, applied: Applied | None, state: JournalState
) -> RefundNotification:
    """The word for the application once the journal heard it (``applied``: ``None``
    when it holds no refund of its ids), with the journal's ``verdict``: ``duplicate``
    if the journal had it; without ``refund_id`` where the row disagrees once applied
    (misdirected, unconfirmed, or ``contradicts`` its final state), logged as
    ``callback not applied``; and, for a word whose tie is unsigned, without
    ``refund_id`` and ``payment`` unless the row of that refund id holds its
    ``provider_refund_id``. An unmatched word keeps the callback's own ids where they
    are signed: nothing of the journal's disagrees."""
    verdict = CallbackVerdict.UNMATCHED if applied is None else applied.verdict(state)
    if applied is not None and verdict.agrees:
        duplicate = verdict is CallbackVerdict.DUPLICATE
        if word.unsigned_tie and applied.entry.refund_id != word.refund_id:
            # Found by its signed gateway refund id under another refund id: the
            # unsigned one names nothing.
            return unnamed(word, verdict, duplicate=duplicate)
        return attrs.evolve(word, duplicate=duplicate, contradicts=None, verdict=verdict)
    _not_applied(word, applied, state, verdict)
    if applied is None:
        if word.unsigned_tie:
            return unnamed(word, verdict)
        return attrs.evolve(word, duplicate=False, contradicts=None, verdict=verdict)
    kept = applied.entry.state.status if verdict is CallbackVerdict.CONTRADICTION else None
    payment = None if word.unsigned_tie else word.payment
    return attrs.evolve(
        word, refund_id=None, payment=payment, duplicate=False, contradicts=kept, verdict=verdict
    )


def _not_applied(
    word: RefundNotification,
    applied: Applied | None,
    state: JournalState,
    verdict: CallbackVerdict,
) -> None:
    """The ``callback not applied`` record: WARNING where the word and the journal
    disagree, INFO for the gateway's reordering (a late PENDING behind a final answer,
    an unconfirmed word that overtook the reply being awaited), for a refund the
    journal does not hold and for a word delivered again."""
    if applied is None or applied.duplicate:
        # A repeat was warned of at its first delivery: a replayed callback must not
        # fill the application's log with warnings.
        warn = False
    elif applied.unconfirmed:
        warn = applied.entry.state is not JournalState.SUBMITTING
    else:
        warn = applied.misdirected or state.is_final
    log.log(
        logging.WARNING if warn else logging.INFO,
        "callback not applied",
        refund_id=word.refund_id,
        status=word.status.value,
        held=None if applied is None else applied.entry.state.value,
        misdirected=applied is not None and applied.misdirected,
        unconfirmed=applied is not None and applied.unconfirmed,
        verdict=verdict.value,
    )
