"""The journal's value types: what a caller hands the journal and what it gets back.

Amounts travel as plain decimal strings (``"10.00"``), exactly as they go on the wire.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

import attrs

from ..errors import ValidationError
from ..models import Refund, Void
from ..status import JournalState, RefundStatus

__all__ = [
    "SETTLED_OUTCOMES",
    "Backlog",
    "BatchCounts",
    "BatchDone",
    "BatchEntry",
    "BatchItem",
    "BatchItemState",
    "BatchSummary",
    "Claim",
    "ClaimVerdict",
    "JournalEntry",
    "JournalStats",
    "NewRefund",
    "OldestRefund",
    "ResultRecord",
    "StateCount",
]


_PLAIN_DECIMAL = re.compile(r"[0-9]{1,24}(?:\.[0-9]{1,8})?\Z")
_OPERATIONS = frozenset({Refund.kind, Void.kind})


def _check_amount(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and _PLAIN_DECIMAL.match(value)):
        raise ValidationError(
            f"{value!r} is not a plain decimal like '10.00'", field=attribute.name
        )


def _check_operation(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _OPERATIONS:
        raise ValidationError(f"must be 'refund' or 'void', got {value!r}", field=attribute.name)


@attrs.frozen
class NewRefund:
    """What the client records before sending a refund or void.

    ``fingerprint`` identifies the request's parameters: a second claim of the same
    ``(provider, refund_id)`` with another fingerprint is a conflict. ``payment_key``
    identifies the payment for the per-payment limit. A void without ``amount`` counts
    as the whole ``original_amount`` toward that limit.
    """

    provider: str
    refund_id: str
    operation: str = attrs.field(validator=_check_operation)
    payment_id: str | None
    merchant_reference: str | None
    transaction_id: str | None
    amount: str | None = attrs.field(validator=_check_amount)
    currency: str | None
    reason: str | None
    notify_url: str | None
    original_amount: str | None = attrs.field(validator=_check_amount)
    fingerprint: str
    payment_key: str


@attrs.frozen
class JournalEntry:
    """One journalled refund, as stored. Timestamps are timezone-aware UTC.

    ``owner`` and ``lease_until`` say who is submitting or reconciling it right now;
    both are ``None`` once its outcome has been recorded.
    """

    provider: str
    refund_id: str
    operation: str
    payment_id: str | None
    merchant_reference: str | None
    transaction_id: str | None
    amount: str | None
    currency: str | None
    reason: str | None
    notify_url: str | None
    original_amount: str | None
    fingerprint: str
    payment_key: str
    state: JournalState
    provider_refund_id: str | None
    message: str | None
    error_code: str | None
    http_status: int | None
    raw: dict[str, Any]
    attempts: int
    owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime


@attrs.frozen
class Backlog:
    """The unsettled refunds of one provider in one state (:meth:`Journal.backlog`):
    how many, and when the oldest of them was recorded (timezone-aware UTC)."""

    provider: str
    state: JournalState
    count: int
    oldest: datetime


class ClaimVerdict(str, enum.Enum):
    """What :meth:`Journal.claim` found, and so what the caller must do next."""

    #: Row inserted in SUBMITTING, owned by the caller: send the request.
    NEW = "NEW"
    #: The row was SUBMITTING with an expired lease, or UNKNOWN and not leased: the
    #: caller now owns it (lease renewed, attempts + 1) and must reconcile, not resend.
    TAKEOVER = "TAKEOVER"
    #: Another owner holds a live lease on the row: wait, then read or claim again.
    BUSY = "BUSY"
    #: The row is PENDING, SUCCEEDED or FAILED: return its stored result.
    DONE = "DONE"
    #: Same ``(provider, refund_id)`` with another fingerprint: raise IdempotencyConflict.
    CONFLICT = "CONFLICT"
    #: This amount would take the payment's committed refunds past ``original_amount``.
    OVER_LIMIT = "OVER_LIMIT"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Claim:
    """The result of :meth:`Journal.claim`.

    ``entry`` is the row as it is after the claim (``None`` only for OVER_LIMIT);
    ``refunded`` is, for OVER_LIMIT, the amount already committed for the payment.
    """

    outcome: ClaimVerdict
    entry: JournalEntry | None
    refunded: str | None = None


class BatchItemState(str, enum.Enum):
    """Where one row of a batch stands in the batch's work queue.

    ``OPEN``: nobody is working on it. ``CLAIMED``: a worker holds it until its lease
    ends (renewed while the worker lives). ``DONE``: a worker recorded its outcome.
    """

    OPEN = "OPEN"
    CLAIMED = "CLAIMED"
    DONE = "DONE"

    def __str__(self) -> str:
        return self.value


#: Batch outcomes after which a row is never run again. Any other outcome (UNKNOWN,
#: or the row could not be sent at all) is retried by the next run of the batch.
SETTLED_OUTCOMES = frozenset({RefundStatus.SUCCEEDED, RefundStatus.FAILED, RefundStatus.PENDING})


@attrs.frozen
class BatchItem:
    """One row of a batch as the journal knows it: its line and the refund it makes."""

    line: int
    provider: str
    refund_id: str


@attrs.frozen
class BatchDone:
    """The outcome of one claimed batch row, for :meth:`Journal.finish_batch`.

    ``outcome`` is a refund status (``SUCCEEDED``, ``FAILED``, ``PENDING``,
    ``UNKNOWN``) or a word for a row that was not sent (``ERROR``, ``INVALID``).
    """

    line: int
    outcome: str
    error_code: str | None = None
    message: str | None = None


@attrs.frozen
class ResultRecord:
    """A refund's result as the journal records it: what :meth:`Journal.record` takes,
    as a value, for :meth:`Journal.record_many`."""

    provider: str
    refund_id: str
    owner: str
    state: JournalState = attrs.field(converter=JournalState)
    provider_refund_id: str | None = None
    message: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    raw: Mapping[str, Any] | None = None


@attrs.frozen
class BatchCounts:
    """How many rows of a batch are in each state."""

    open: int
    claimed: int
    done: int


@attrs.frozen
class BatchEntry:
    """One batch row as stored, with the journalled refund of its refund id (``refund``;
    ``None`` when that refund was never recorded, e.g. nothing could be sent)."""

    batch_id: str
    line: int
    provider: str
    refund_id: str
    state: BatchItemState
    owner: str | None
    lease_until: datetime | None
    outcome: str | None
    error_code: str | None
    message: str | None
    updated_at: datetime
    refund: JournalEntry | None


@attrs.frozen
class BatchSummary:
    """One batch as the work queue holds it, for a list of batches.

    ``outcomes`` counts the DONE rows by outcome (``SUCCEEDED``, ``UNKNOWN``,
    ``ERROR``, ...); ``updated_at`` is when any of its rows last changed.
    """

    batch_id: str
    counts: BatchCounts
    outcomes: Mapping[str, int]
    updated_at: datetime

    @property
    def rows(self) -> int:
        """How many rows the batch has."""
        return self.counts.open + self.counts.claimed + self.counts.done


@attrs.frozen
class OldestRefund:
    """The refund that has waited longest in its state: its id and when it was recorded."""

    refund_id: str
    created_at: datetime


@attrs.frozen
class StateCount:
    """How many refunds of one provider are in one state; for the states still to be
    settled (SUBMITTING, PENDING, UNKNOWN), also the oldest of them."""

    provider: str
    state: JournalState
    count: int
    oldest: OldestRefund | None


@attrs.frozen
class JournalStats:
    """What :meth:`Journal.stats` counts: one :class:`StateCount` per provider and
    state that has refunds, ordered by provider and then state."""

    groups: tuple[StateCount, ...]

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers that have refunds in the journal, sorted."""
        return tuple(sorted({group.provider for group in self.groups}))

    def count(
        self, *, provider: str | None = None, states: Collection[JournalState] | None = None
    ) -> int:
        """How many refunds (of ``provider``, in one of ``states``; all by default)."""
        return sum(
            group.count
            for group in self.groups
            if (provider is None or group.provider == provider)
            and (states is None or group.state in states)
        )
