"""Where a refund stands: one vocabulary for results, callbacks and the journal.

:class:`RefundStatus` is what a gateway's answer (or the lack of one) says about a
refund. :class:`JournalState` is what the journal records: the same four, plus
``SUBMITTING`` while the refund's request may be in flight and ``NOT_SENT`` for a refund
proven never to have reached the gateway. Convert between them with
:meth:`JournalState.of` and :attr:`JournalState.status`, never through their strings.
"""

from __future__ import annotations

from .words import WordEnum

__all__ = ["JournalState", "RefundStatus"]


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
