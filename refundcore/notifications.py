"""What the application is told of a verified callback: the word as the journal read it
(rules 9 and 10 of docs/exactly-once.md), or, without a journal, what nothing but the
gateway's signature vouches for."""

from __future__ import annotations

import logging

import attrs

from .journal.values import Applied
from .logs import EventLogger
from .models import RefundNotification
from .status import JournalState

__all__ = ["as_heard", "unnamed"]

# Logged as the client the protocol serves: one logger for users to configure.
log = EventLogger("refundcore.client")


def unnamed(word: RefundNotification) -> RefundNotification:
    """``word`` naming no refund: without ``refund_id`` and ``payment``, and with
    ``duplicate`` and ``contradicts`` (only a journal can say them) cleared; every other
    field as it is. What a word whose unsigned tie nothing confirmed is reduced to."""
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
    put(told, "duplicate", False)
    put(told, "contradicts", None)
    put(told, "unsigned_tie", word.unsigned_tie)
    return told


def as_heard(
    word: RefundNotification, applied: Applied | None, state: JournalState
) -> RefundNotification:
    """The word for the application once the journal heard it (``applied``: ``None``
    when it holds no such refund): ``duplicate`` if the journal had it; without
    ``refund_id`` where the row disagrees once applied (misdirected, unconfirmed, or
    ``contradicts`` its final state, logged as ``callback not applied``); and, for a
    word whose tie is unsigned, without ``refund_id`` and ``payment`` unless the row of
    that refund id holds its ``provider_refund_id``."""
    if applied is None or applied.agrees(state):
        duplicate = (
            applied is not None and state is not JournalState.UNKNOWN and not applied.changed
        )
        if word.unsigned_tie and (applied is None or applied.entry.refund_id != word.refund_id):
            # No row of that refund id confirmed the unsigned tie: it names nothing.
            return attrs.evolve(unnamed(word), duplicate=duplicate)
        return attrs.evolve(word, duplicate=duplicate, contradicts=None)
    # A PENDING behind a final answer is the gateway's reordering, not a conflict; so is
    # an unconfirmed word that overtook the reply being awaited.
    astray = applied.misdirected or applied.unconfirmed
    if applied.unconfirmed:
        warn = applied.entry.state is not JournalState.SUBMITTING
    else:
        warn = applied.misdirected or state.is_final
    log.log(
        logging.WARNING if warn else logging.INFO,
        "callback not applied",
        refund_id=word.refund_id,
        status=word.status.value,
        held=applied.entry.state.value,
        misdirected=applied.misdirected,
        unconfirmed=applied.unconfirmed,
    )
    kept = None if astray else applied.entry.state.status
    payment = None if word.unsigned_tie else word.payment
    return attrs.evolve(word, refund_id=None, payment=payment, duplicate=False, contradicts=kept)
