"""Where a refund stands: one vocabulary for results, callbacks and the journal.

:class:`RefundStatus` is what a gateway's answer (or the lack of one) says about a
refund. :class:`JournalState` is what the journal records: the same four, plus
``SUBMITTING`` while the refund's request may be in flight and ``NOT_SENT`` for a refund
proven never to have reached the gateway. Convert between them with
:meth:`JournalState.of` and :attr:`JournalState.status`, never through their strings.
:class:`CallbackVerdict` is what the journal made of a gateway's callback.
"""

from __future__ import annotations

from .words import WordEnum

__all__ = ["CallbackVerdict", "JournalState", "RefundStatus"]


class RefundStatus(WordEnum):
    """Where a refund stands.

    ``UNKNOWN`` means the client cannot know (timeout after sending, 5xx, an unreadable
    reply): the refund may or may not have happened, and only a query or a callback
    settles it. It is never safe to treat ``UNKNOWN`` as ``FAILED`` and refund again.
    """

    SUCCEEDED = "SUCCEEDED"
    PENDING = "PENDING"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        """True for SUCCEEDED and FAILED: nothing will change any more."""
        return self in (RefundStatus.SUCCEEDED, RefundStatus.FAILED)


class JournalState(WordEnum):
    """Where a journalled refund stands: a :class:`RefundStatus`, ``SUBMITTING`` or
    ``NOT_SENT``.

    ``SUBMITTING``: recorded, and its request may be on the wire right now (or may have
    been, if the process died). ``UNKNOWN``: sent, outcome not known. Neither may be
    sent again without reconciling first.

    ``NOT_SENT``: proven never to have reached the gateway (nothing left the process,
    an authoritative lookup found nothing once enough time had passed, or an operator
    decided so). Nothing was refunded, so as a refund status it reads ``FAILED``; unlike
    ``FAILED`` it is not final: the same refund id, with the same parameters, may be
    sent again, and until then it counts nothing toward its payment's limit.
    """

    SUBMITTING = "SUBMITTING"
    PENDING = RefundStatus.PENDING.value
    SUCCEEDED = RefundStatus.SUCCEEDED.value
    FAILED = RefundStatus.FAILED.value
    UNKNOWN = RefundStatus.UNKNOWN.value
    NOT_SENT = "NOT_SENT"

    @classmethod
    def of(cls, status: RefundStatus) -> JournalState:
        """The state that records ``status``."""
        return _STATE_OF[status]

    @property
    def status(self) -> RefundStatus | None:
        """The refund status this state records; ``None`` for ``SUBMITTING``, whose
        outcome nobody knows yet; ``FAILED`` for ``NOT_SENT``: nothing was refunded."""
        if self is JournalState.NOT_SENT:
            return RefundStatus.FAILED
        return _STATUS_OF.get(self)

    @property
    def is_final(self) -> bool:
        """True for SUCCEEDED and FAILED: nothing will change any more."""
        status = _STATUS_OF.get(self)
        return status is not None and status.is_final


_STATE_OF = {status: JournalState[status.name] for status in RefundStatus}
_STATUS_OF = {state: status for status, state in _STATE_OF.items()}


class CallbackVerdict(WordEnum):
    """What the journal made of a verified callback
    (:attr:`~refundcore.models.RefundNotification.verdict`, and the
    ``refundcore.callback.verdict`` of :mod:`refundcore.telemetry`)."""

    #: The journal holds the refund it names, and the word agrees with it and is news:
    #: it settled the refund or moved it on. Act on it.
    VERIFIED = "verified"
    #: The journal already had what it says (delivered again, or confirming the
    #: outcome the reply gave): it changed nothing.
    DUPLICATE = "duplicate"
    #: Against the final state the journal keeps (given as ``contradicts``; a late
    #: ``PENDING`` too): not applied, no ``refund_id``.
    CONTRADICTION = "contradiction"
    #: It names a journalled refund by its refund id, but its gateway refund id is
    #: another refund's, or not the one the journal holds for it: the refund id it
    #: names cannot be trusted. Not applied, no ``refund_id``.
    MISDIRECTED = "misdirected"
    #: Its tie to the refund it names rests on data the gateway does not sign
    #: (:attr:`~refundcore.models.RefundNotification.unsigned_tie`), and no journalled
    #: refund holds its gateway refund id to confirm it (the refund's reply was lost,
    #: say): not applied, kept as evidence, no ``refund_id`` and no ``payment``.
    UNCONFIRMED = "unconfirmed"
    #: The journal holds no refund of its refund id or gateway refund id (one made
    #: outside this client, in the gateway's dashboard say, or journalled elsewhere):
    #: nothing was applied, and its ``refund_id`` is the callback's own, unchecked
    #: (none where its tie is unsigned).
    UNMATCHED = "unmatched"
    #: No journal is configured: the signature holds, and nothing was checked against
    #: a record of the refund.
    UNJOURNALLED = "unjournalled"

    @property
    def agrees(self) -> bool:
        """True for ``verified`` and ``duplicate``: the journal holds the refund the
        callback names and agrees with what it says."""
        return self is CallbackVerdict.VERIFIED or self is CallbackVerdict.DUPLICATE
