"""Exactly-once refunds: the protocol between the pipeline and the journal.

A refund or void is claimed in the journal before anything is built, and the
journal's verdict decides what happens next:

    NEW         prepare (build, sign), send, finish, then record the outcome
    DONE        the recorded outcome, finished: nothing is built, signed or sent
    TAKEOVER    an earlier attempt may have sent it: reconcile (query where the
                provider can; resend only where it deduplicates on the refund id;
                otherwise UNKNOWN), then record
    BUSY        another worker is sending it: wait up to ``wait`` seconds, claim again
    CONFLICT    the refund id was used for another refund: ``IdempotencyConflict``
    OVER_LIMIT  refunds of the payment would pass its original amount: ``ValidationError``

Input errors come first: the caller runs :meth:`Pipeline.validate` before
:meth:`ExactlyOnce.execute`, and a build or sign stage that refuses a claimed refund
gives the claim back (nothing was sent), so a corrected retry is not blocked. A query's
or a verified callback's word settles a recorded refund (:meth:`ExactlyOnce.settle`);
:meth:`ExactlyOnce.reconcile` sweeps every unsettled one.

The protocol is written once for both clients, without I/O of its own: each method is
a flow (:mod:`refundcore.effects`) that yields the sends, journal calls and pauses it
needs, carried out by :func:`~refundcore.effects.drive` (``RefundClient``) or
:func:`~refundcore.effects.drive_async` (``AsyncRefundClient``). :func:`plain` is the
flow without a journal.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import attrs

from .effects import Call, Pause, Send, Steps
from .errors import IdempotencyConflict, JournalError, RefundError, TransportError, ValidationError
from .journal import Claim, ClaimVerdict, Journal, JournalEntry, ResultRecord
from .journal.records import (
    new_refund,
    operation_for,
    query_for,
    result_from_entry,
    result_record,
)
from .models import (
    HttpRequest,
    Operation,
    ProviderInfo,
    Refund,
    RefundNotification,
    RefundQuery,
    RefundResult,
    RefundStatus,
    Void,
)
from .money import Money
from .pipeline import Pipeline, unknown_result
from .status import JournalState

__all__ = ["DeferRecord", "ExactlyOnce", "ProviderLookup", "plain"]

# The protocol logs as the client it serves: one logger for users to configure.
log = logging.getLogger("refundcore.client")

#: Takes the outcome of a request sent now, for the caller to journal later (a batch
#: journals its rows' outcomes together with :meth:`Journal.record_many`).
DeferRecord = Callable[[ResultRecord], None]
#: A provider id → its info and its loaded config (what :meth:`ExactlyOnce.reconcile`
#: needs to reach the providers of journalled refunds).
ProviderLookup = Callable[[str], tuple[ProviderInfo, Any]]

_FIRST_PAUSE = 0.02
_LONGEST_PAUSE = 0.5


def plain(
    pipeline: Pipeline, info: ProviderInfo, config: Any, operation: Operation
) -> Steps[RefundResult]:
    """The flow without a journal (a query's, or any operation's on a client without
    one): prepare, send, finish."""
    return _deliver(pipeline, info, config, operation, pipeline.prepare(info, config, operation))


def _deliver(
    pipeline: Pipeline, info: ProviderInfo, config: Any, operation: Operation, signed: HttpRequest
) -> Steps[RefundResult]:
    """Send and finish: never raises, except ``TransportError`` (nothing was sent)."""
    reply = yield Send(info, config, operation, signed)
    return pipeline.finish_reply(info, config, operation, reply)


class ExactlyOnce:
    """Sends refunds through ``pipeline`` at most once, recorded in ``journal``.

    ``wait`` bounds how long a caller waits for another worker that is sending the
    same refund; ``lease_seconds`` is how long a sender may take before its refund
    counts as interrupted. Thread-safe; the journal is the only shared state.
    """

    def __init__(
        self, pipeline: Pipeline, journal: Journal, *, wait: float, lease_seconds: float
    ) -> None:
        self._pipeline = pipeline
        self._journal = journal
        self._wait = wait
        self._lease_seconds = lease_seconds
        self._owner_prefix = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def journal(self) -> Journal:
        """The journal refunds are recorded in."""
        return self._journal

    def execute(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Operation,
        original_amount: Money | None = None,
        *,
        defer_record: DeferRecord | None = None,
    ) -> Steps[RefundResult]:
        """Run a validated ``operation`` once: a query is sent and settles what it
        answers; a refund or void goes through the claim (see the module's doc).

        ``original_amount`` caps the payment's recorded refunds. With
        ``defer_record``, the outcome of a request sent now is handed to it instead
        of being recorded at once.
        """
        if isinstance(operation, RefundQuery):
            result = yield from plain(self._pipeline, info, config, operation)
            yield from self.settle(info, result)
            return result
        verdict, owner, entry = yield from self._claim(info, operation, original_amount)
        if verdict is ClaimVerdict.DONE:
            return self._pipeline.finish(info, operation, result_from_entry(entry))
        if verdict is ClaimVerdict.TAKEOVER:
            return (yield from self._reconcile_claimed(info, config, operation, owner, entry))
        if verdict is ClaimVerdict.NEW:
            request = yield from self._prepare(info, config, operation, owner, taken_over=None)
            return (
                yield from self._send_and_record(
                    info, config, operation, request, owner, defer_record
                )
            )
        busy = unknown_result(
            "another worker is submitting this refund and has not finished",
            "in_progress",
        )
        return self._pipeline.finish(info, operation, busy)

    def settle(self, info: ProviderInfo, word: RefundResult | RefundNotification) -> Steps[None]:
        """Let a query's or callback's word settle the journalled refund (the journal
        keeps it monotonic: nothing undoes a final state)."""
        if word.status is RefundStatus.UNKNOWN:
            return
        yield Call(
            self._journal.apply_notification,
            (info.id,),
            {
                "state": JournalState.of(word.status),
                "refund_id": word.refund_id,
                "provider_refund_id": word.provider_refund_id,
                "raw": word.raw,
            },
        )

    def reconcile(
        self, lookup: ProviderLookup, provider: str | None = None
    ) -> Steps[list[RefundResult]]:
        """Query every unsettled journalled refund (of ``provider``, or of all) and
        settle what can be settled; returns each one's outcome now. A refund being
        sent right now is left to its sender."""
        outcomes = []
        entries = yield Call(self._journal.entries, (), {"unsettled": True, "provider": provider})
        for entry in entries:
            if (
                entry.state is JournalState.SUBMITTING
                and entry.lease_until is not None
                and (entry.lease_until > _utcnow())
            ):
                continue
            try:
                info, config = lookup(entry.provider)
                outcomes.append((yield from self._reconcile_entry(info, config, entry)))
            except RefundError as exc:
                problem = self._pipeline.redactor.text(entry.provider, str(exc))
                log.error(
                    "cannot reconcile %s via %s: %s", entry.refund_id, entry.provider, problem
                )
                outcomes.append(result_from_entry(entry, message=problem))
        return outcomes

    def _claim(
        self, info: ProviderInfo, operation: Refund | Void, original_amount: Money | None
    ) -> Steps[tuple[ClaimVerdict, str, JournalEntry]]:
        """Claim the refund, waiting while another worker holds it: the verdict (NEW,
        TAKEOVER, DONE; BUSY when the wait ran out), this attempt's owner, the row."""
        new = new_refund(info.id, operation, original_amount)
        deadline = time.monotonic() + self._wait
        pause = _FIRST_PAUSE
        while True:
            owner = f"{self._owner_prefix}:{uuid.uuid4().hex[:12]}"
            claim: Claim = yield Call(
                self._journal.claim, (new,), {"owner": owner, "lease_seconds": self._lease_seconds}
            )
            if claim.outcome is ClaimVerdict.CONFLICT:
                raise IdempotencyConflict(
                    f"{operation.refund_id!r} was already used for a different refund via "
                    f"{info.id}; nothing was sent (use a new refund_id for a new refund)",
                    field="refund_id",
                )
            if claim.outcome is ClaimVerdict.OVER_LIMIT:
                raise ValidationError(
                    f"refunds of this payment would exceed its original amount "
                    f"{original_amount} ({claim.refunded} already sent or pending); "
                    "nothing was sent",
                    field="amount",
                )
            if claim.outcome is not ClaimVerdict.BUSY or time.monotonic() + pause > deadline:
                if claim.entry is None:  # the journal's contract: only OVER_LIMIT has none
                    raise JournalError(
                        f"journal {self._journal.url} claimed {operation.refund_id!r} "
                        "without returning its row"
                    )
                return claim.outcome, owner, claim.entry
            yield Pause(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    def _prepare(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        owner: str,
        *,
        taken_over: JournalEntry | None,
    ) -> Steps[HttpRequest]:
        """Build and sign a claimed refund. If a stage refuses it, nothing was sent:
        the claim is given back (a new row forgotten, a taken-over one put back as it
        was found, unleased) before the error is raised, so a retry is not blocked."""
        try:
            return self._pipeline.prepare(info, config, operation)
        except BaseException:
            if taken_over is None:
                yield Call(self._journal.abandon, (info.id, operation.refund_id), {"owner": owner})
            else:
                yield from self._record(info, operation, owner, result_from_entry(taken_over))
            raise

    def _send_and_record(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        request: HttpRequest,
        owner: str,
        defer_record: DeferRecord | None = None,
    ) -> Steps[RefundResult]:
        try:
            result = yield from _deliver(self._pipeline, info, config, operation, request)
        except TransportError:
            # Nothing left the process: free the refund id for a retry.
            yield Call(self._journal.abandon, (info.id, operation.refund_id), {"owner": owner})
            raise
        if defer_record is None:
            yield from self._record(info, operation, owner, result)
        else:
            defer_record(result_record(info.id, operation, owner, result))
        return result

    def _record(
        self, info: ProviderInfo, operation: Operation, owner: str, result: RefundResult
    ) -> Steps[None]:
        try:
            yield Call(
                self._journal.record_many, ([result_record(info.id, operation, owner, result)],)
            )
        except JournalError as exc:
            # The request is out: report what happened; the row stays SUBMITTING and
            # `refundcore journal reconcile` settles it once the journal is back.
            log.error(
                "%s %s via %s: outcome not journalled: %s",
                operation.kind,
                operation.refund_id,
                info.id,
                exc,
            )

    def _reconcile_claimed(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        owner: str,
        entry: JournalEntry,
    ) -> Steps[RefundResult]:
        """Settle a refund an earlier attempt may have sent: query where the provider
        can; resend only where the provider deduplicates on the refund id; otherwise
        keep it UNKNOWN. Never a blind second refund."""
        caps = info.capabilities
        if caps.query:
            settled = yield from self._settled_by_query(info, config, operation, entry)
            if settled is not None:
                yield from self._record(info, operation, owner, settled)
                return settled
        if caps.idempotent_refund_id:
            request = yield from self._prepare(info, config, operation, owner, taken_over=entry)
            return (yield from self._send_and_record(info, config, operation, request, owner))
        unconfirmed = unknown_result(
            f"an earlier attempt may have reached {info.name}, which could not confirm it",
            "unconfirmed",
        )
        unknown = self._pipeline.finish(info, operation, unconfirmed)
        yield from self._record(info, operation, owner, unknown)
        return unknown

    def _settled_by_query(
        self, info: ProviderInfo, config: Any, operation: Refund | Void, entry: JournalEntry
    ) -> Steps[RefundResult | None]:
        """What the gateway's answer to a query settles the refund as, finished; None
        when it settles nothing (no answer, UNKNOWN, or FAILED where a resend is safe)."""
        query = RefundQuery(
            refund_id=operation.refund_id,
            payment=operation.payment,
            provider_refund_id=entry.provider_refund_id,
        )
        try:
            answer = yield from plain(self._pipeline, info, config, query)
        except RefundError as exc:
            log.warning(
                "reconciling %s via %s: query failed: %s", operation.refund_id, info.id, exc
            )
            return None
        if answer.status is RefundStatus.UNKNOWN or (
            answer.status is RefundStatus.FAILED and info.capabilities.idempotent_refund_id
        ):
            return None
        note = (
            "the gateway has no completed refund under this id, so nothing was "
            "refunded; use a new refund_id to try again"
            if answer.status is RefundStatus.FAILED
            else "settled by a query after an interrupted attempt"
        )
        message = f"{note} ({answer.message})" if answer.message else note
        return self._pipeline.finish(info, operation, attrs.evolve(answer, message=message))

    def _reconcile_entry(
        self, info: ProviderInfo, config: Any, entry: JournalEntry
    ) -> Steps[RefundResult]:
        """One unsettled row of the sweep: a PENDING one is asked about, any other is
        claimed and reconciled as a retry of it would be."""
        if entry.state is JournalState.PENDING:
            if not info.capabilities.query:
                return result_from_entry(entry)
            answer = yield from plain(self._pipeline, info, config, query_for(entry))
            yield from self.settle(info, answer)
            # Reported as the refund or void it settles, not as the query that asked.
            return attrs.evolve(answer, operation=entry.operation)
        operation = operation_for(entry)
        self._pipeline.validate(info, operation)
        return (yield from self.execute(info, config, operation))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)
