"""What the gateway's answers prove about a refund whose outcome is not known.

"The gateway does not know this refund *now*" proves nothing by itself. It proves
that the refund never reached the gateway only when the provider declares its lookup
authoritative (:class:`~refundcore.lookup.Lookup`) and the lookup was made after the
last moment a request of an earlier attempt could still have been on its way (that
attempt's lease) plus the provider's settle delay, all measured on the journal's
clock. Anything less leaves the refund ``UNKNOWN``, with the answer kept as evidence.

And a sender's lease must outlast its request: :func:`check_lease` refuses a lease no
longer than the provider's connect and read timeouts plus :data:`LEASE_MARGIN`, before
anything is sent, so no live sender's refund is ever taken over; and a sender that
stalled after its claim does not send once its request could outlive the lease
(:func:`send_by`), so "the lease ran out" does mean "its request can no longer leave".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from .errors import ConfigError
from .journal import EventKind, JournalEvent
from .models import ProviderInfo, RefundResult, RefundStatus

__all__ = [
    "LEASE_MARGIN",
    "Reading",
    "absence_counts_from",
    "as_told",
    "check_lease",
    "read_answer",
    "send_by",
]

#: Seconds a lease must outlast the provider's connect + read timeouts: the build and
#: sign between the claim and the request. (A sender that records its outcome after
#: its lease ran out loses nothing: its answer is kept, under its attempt.)
LEASE_MARGIN = 0.5


def _request_seconds(config: Any) -> float:
    """How long a request may take under the provider's ``config``: its connect and
    read timeouts, those it has."""
    timeouts = (getattr(config, "connect_timeout", None), getattr(config, "read_timeout", None))
    return sum(t for t in timeouts if isinstance(t, (int, float)))


def send_by(config: Any, asked_at: float, lease_seconds: float) -> float:
    """The :func:`time.monotonic` moment after which a refund claimed under
    ``lease_seconds`` must not be sent: its lease, less the provider's connect and read
    timeouts its request may take. ``asked_at`` is when the claim was asked for, on
    this process's monotonic clock: no later than the journal started the lease, and
    immune to a wrong wall clock here."""
    return asked_at + lease_seconds - _request_seconds(config)


def check_lease(info: ProviderInfo, config: Any, lease_seconds: float) -> None:
    """``ConfigError`` naming ``lease_seconds`` and the provider's timeouts when a
    sender could still be waiting for its reply after its lease ran out."""
    connect = getattr(config, "connect_timeout", None)
    read = getattr(config, "read_timeout", None)
    if not isinstance(connect, (int, float)) or not isinstance(read, (int, float)):
        return
    needed = connect + read + LEASE_MARGIN
    if lease_seconds < needed:
        raise ConfigError(
            f"lease_seconds {lease_seconds:g} is not longer than {info.name}'s "
            f"connect_timeout {connect:g} s + read_timeout {read:g} s + {LEASE_MARGIN:g} s: "
            "a refund still being sent could be taken over; nothing was sent (give "
            f"lease_seconds of at least {needed:g}, or shorter timeouts)",
            field="lease_seconds",
            provider=info.id,
        )


@attrs.frozen
class Reading:
    """What one query's answer proves. ``settles``: the answer is the refund's outcome
    (PENDING, SUCCEEDED, or a FAILED that is a decline). ``absent``: the gateway says
    it has no such refund; ``proven``: and that proves it never arrived. ``note`` says
    why, for the history and the caller."""

    settles: bool
    absent: bool
    proven: bool
    note: str


def absence_counts_from(
    history: Sequence[JournalEvent], attempt: int, settle_delay: float
) -> datetime | None:
    """When a lookup's "not found" starts to count for a refund now under ``attempt``:
    the settle delay after the last moment a request of an earlier attempt could still
    have been on its way (a claim's lease, or a send). ``None`` when the history does
    not tell (a refund recorded before histories were kept, a claim whose lease is not
    recorded)."""
    latest: datetime | None = None
    for event in history:
        if event.attempt >= attempt:
            continue
        if event.kind is EventKind.CLAIM:
            lease = event.data.get("lease_seconds")
            if isinstance(lease, bool) or not isinstance(lease, (int, float)):
                # Without its lease, the claim does not say until when its request
                # could leave: taking none would make "not found" count too early.
                return None
            moment = event.at + timedelta(seconds=lease)
        elif event.kind is EventKind.SEND:
            moment = event.at
        else:
            # A takeover only asks; a new attempt that sends begins with a claim.
            continue
        latest = moment if latest is None else max(latest, moment)
    return None if latest is None else latest + timedelta(seconds=settle_delay)


def resend_is_deduplicated(
    info: ProviderInfo, config: Any, history: Sequence[JournalEvent], now: datetime
) -> bool:
    """Whether the gateway still remembers this refund id, so that sending it again
    cannot refund twice: it deduplicates (``idempotent_refund_id``) and its
    ``idempotency_window`` (if any) outlasts the first claim by more than the resend
    could take to arrive. Measured from the first claim, which no request of this
    refund id can precede; a history that does not tell is not trusted."""
    caps = info.capabilities
    if not caps.idempotent_refund_id:
        return False
    if caps.idempotency_window is None:
        return True
    first = min((e.at for e in history if e.kind is EventKind.CLAIM), default=None)
    if first is None:
        return False
    transit = _request_seconds(config) + LEASE_MARGIN
    return (now - first).total_seconds() + transit < caps.idempotency_window


_UNKNOWN_ADVICE = "the outcome is unknown: query the refund before trying again"
_NOT_FOUND_ADVICE = (
    "the gateway does not show this refund, which proves nothing by itself: one it "
    "received may show later (a journal's reconcile concludes it was never sent only "
    "where the provider's lookup can prove it)"
)


def as_told(
    info: ProviderInfo, kind: str, result: RefundResult, message: str | None
) -> tuple[RefundStatus, str | None]:
    """The status and ``message`` (masked) a caller is told for ``result`` of an
    operation of ``kind``: an ``UNKNOWN`` refund or void with the advice to query
    first, and a query's declared "no such refund" as ``UNKNOWN``, saying why. The
    plugin reads the gateway truly, but to a caller FAILED says nothing was refunded,
    and a refund the gateway received may not show in its queries yet: only the
    journal, knowing when the request could last have arrived, concludes that (from
    the code, :func:`read_answer`)."""
    status = result.status
    if status is RefundStatus.UNKNOWN and kind != "query":
        return status, f"{message or 'no usable reply'}; {_UNKNOWN_ADVICE}"
    if (
        status is RefundStatus.FAILED
        and kind == "query"
        and result.error_code in info.capabilities.lookup.not_found_codes
    ):
        return RefundStatus.UNKNOWN, f"{message or 'no such refund'}; {_NOT_FOUND_ADVICE}"
    return status, message


def read_answer(
    info: ProviderInfo, answer: RefundResult, *, counts_from: datetime | None, asked_at: datetime
) -> Reading:
    """What ``answer`` (to a query asked at ``asked_at`` on the journal's clock) proves,
    given the provider's declared lookup and when absence starts to count."""
    lookup = info.capabilities.lookup
    # A declared "no such refund" reaches callers UNKNOWN (the pipeline's finish):
    # the code, not the status, says the gateway answered it.
    not_found = answer.error_code in lookup.not_found_codes and answer.status in (
        RefundStatus.FAILED,
        RefundStatus.UNKNOWN,
    )
    if answer.status is RefundStatus.UNKNOWN and not not_found:
        told = answer.error_code or "no usable answer"
        return Reading(False, False, False, f"the query could not tell ({told})")
    if not not_found:
        return Reading(True, False, False, f"{info.name} answered {answer.status.value}")
    if not lookup.absence_authoritative:
        note = (
            "the gateway does not show it, which proves nothing: its lookup "
            f"(by {lookup.by.value}) is not declared authoritative"
        )
        return Reading(False, True, False, note)
    if counts_from is None:
        note = "no record of when it was last sent, so its absence proves nothing"
        return Reading(False, True, False, note)
    if asked_at < counts_from:
        # Rounded up: "before 12:00:11" must not read as over at 12:00:10.5.
        shown = counts_from.replace(microsecond=0) + timedelta(seconds=counts_from.microsecond > 0)
        note = (
            "the gateway does not show it yet, which proves nothing before "
            f"{shown.isoformat()} (the last send's lease plus {lookup.settle_delay:g} s "
            "to settle)"
        )
        return Reading(False, True, False, note)
    note = (
        f"the gateway has no such refund, asked {lookup.settle_delay:g} s or more after "
        "the last request could have arrived: it never reached the gateway"
    )
    return Reading(False, True, True, note)
