"""Exactly-once refunds: the protocol between the pipeline and the journal.

A refund or void is claimed in the journal before anything is built (under a lease
longer than the provider's timeouts: :func:`~refundcore.evidence.check_lease`), and
the journal's verdict decides what happens next:

    NEW         prepare (build, sign), send, finish, then record the outcome under
                the claim's attempt (its fencing token)
    DONE        the recorded outcome, finished: nothing is built, signed or sent
    TAKEOVER    an earlier attempt may have sent it: reconcile, then record
    BUSY        another worker is sending it: wait up to ``wait`` seconds, claim again
    CONFLICT    the refund id was used for another refund: ``IdempotencyConflict``
    OVER_LIMIT  refunds of the payment would pass its original amount: ``ValidationError``

Reconciling a refund an earlier attempt may have sent:

1. Where the provider can be queried, ask; the answer is kept as evidence in the
   refund's history. PENDING, SUCCEEDED or a decline settles it.
2. "Not found" settles nothing unless it proves the refund never reached the gateway
   (:mod:`refundcore.evidence`: an authoritative lookup, late enough). Proven, the
   refund is NOT_SENT, and a caller asking for it now sends it again with the same
   refund id; a sweep (:meth:`ExactlyOnce.reconcile`) leaves the resend to one.
3. Where the provider deduplicates on the refund id, resending it is safe: it is
   resent, with the same refund id.
4. Otherwise it stays UNKNOWN, with the evidence, for a later query, a callback, or an
   operator's decision (:meth:`~refundcore.journal.Journal.resolve`).

Input errors come first: :meth:`Pipeline.validate`, then :meth:`ExactlyOnce.execute`
refuses a refund the journal's count of the payment's refunds leaves no room for
(:func:`~refundcore.checks.check_refunds_per_payment`); a build or sign stage that
refuses a claimed refund gives the claim back (nothing was sent), so a corrected retry
is not blocked. A verified callback settles a recorded refund
(:meth:`ExactlyOnce.settle`); a query's answer is evidence, and settles when it can.

The protocol is written once for both clients, without I/O of its own: each method is
a flow (:mod:`refundcore.effects`) that yields the sends, journal calls and pauses it
needs, carried out by :func:`~refundcore.effects.drive` (``RefundClient``) or
:func:`~refundcore.effects.drive_async` (``AsyncRefundClient``).
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import attrs

from .checks import check_refunds_per_payment
from .effects import Call, Pause, Steps
from .errors import IdempotencyConflict, JournalError, RefundError, TransportError, ValidationError
from .evidence import (
    Reading,
    absence_counts_from,
    check_lease,
    read_answer,
    resend_is_deduplicated,
    send_by,
)
from .journal import Applied, ClaimVerdict, Journal, JournalEntry, ResultRecord
from .journal.records import (
    new_refund,
    operation_for,
    query_for,
    result_from_entry,
    result_record,
)
from .logs import EventLogger
from .models import (
    HttpRequest,
    Operation,
    ProviderInfo,
    Refund,
    RefundNotification,
    RefundQuery,
    RefundResult,
    RefundStatus,
    ResultSource,
    Void,
)
from .money import Money
from .notifications import as_heard
from .pipeline import Pipeline, unknown_result
from .status import JournalState

__all__ = ["DeferRecord", "ExactlyOnce", "ProviderLookup"]

# The protocol logs as the client it serves: one logger for users to configure.
log = EventLogger("refundcore.client")

#: Takes the outcome of a request sent now, for the caller to journal later (a batch
#: journals its rows' outcomes together with :meth:`Journal.record_many`).
DeferRecord = Callable[[ResultRecord], None]
#: A provider id → its info and its loaded config (what :meth:`ExactlyOnce.reconcile`
#: needs to reach the providers of journalled refunds).
ProviderLookup = Callable[[str], tuple[ProviderInfo, Any]]

_FIRST_PAUSE = 0.02
_LONGEST_PAUSE = 0.5


@attrs.frozen
class _Claimed:
    """This attempt at a refund: its owner (unique to it), the row as claimed, and
    when (:func:`time.monotonic`) the claim was asked for."""

    owner: str
    entry: JournalEntry
    asked_at: float

    @property
    def attempt(self) -> int:
        return self.entry.attempt


class ExactlyOnce:
    """Sends refunds through ``pipeline`` at most once, recorded in ``journal``.

    ``wait`` bounds how long a caller waits for another worker that is sending the
    same refund; ``lease_seconds`` is how long a sender may take before its refund
    counts as interrupted (longer than any provider's timeouts, or the refund is
    refused). Thread-safe; the journal is the only shared state.
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
        """Run a validated ``operation`` once: a query is sent and kept as evidence
        for the refund it asks about; a refund or void goes through the claim (see
        the module's doc).

        ``original_amount`` caps the payment's recorded refunds. With
        ``defer_record``, the outcome of a request sent now is handed to it instead
        of being recorded at once. ``ConfigError`` (``lease_seconds``) before anything
        is sent when the lease does not outlast the provider's timeouts.
        """
        if isinstance(operation, RefundQuery):
            result = yield from self._pipeline.run(info, config, operation)
            yield from self._keep_query(info, result, result.refund_id)
            return result
        check_lease(info, config, self._lease_seconds)
        # Only a provider with a limit costs a journal read (a worker thread's hop on
        # the async client).
        if isinstance(operation, Refund) and info.capabilities.refunds_per_payment is not None:
            yield Call(check_refunds_per_payment, (self._journal, info, operation))
        return (
            yield from self._once(info, config, operation, original_amount, defer_record, send=True)
        )

    def settle(self, info: ProviderInfo, word: RefundNotification) -> Steps[RefundNotification]:
        """Let a verified callback's word settle the journalled refund it names (found
        by its refund id, else by its gateway refund id); the word for the app as the
        journal read it, with its ``verdict`` (:func:`~refundcore.notifications.as_heard`)."""
        state = JournalState.of(word.status)
        applied: Applied | None = yield self._step(
            info,
            "apply",
            word.refund_id,
            functools.partial(
                self._journal.apply_notification,
                info.id,
                state=state,
                refund_id=word.refund_id,
                provider_refund_id=word.provider_refund_id,
                raw=word.raw,
                unsigned_tie=word.unsigned_tie,
            ),
        )
        return as_heard(word, applied, state)

    def reconcile(
        self, lookup: ProviderLookup, provider: str | None = None
    ) -> Steps[list[RefundResult]]:
        """Query every unsettled journalled refund (of ``provider``, or of all) and
        settle what can be settled, by the same rules as a retry; returns each one's
        outcome now. A refund being sent or reconciled right now (its lease, on the
        journal's clock, has not run out) is left to its owner."""
        outcomes = []
        entries = yield Call(self._journal.entries, (), {"unsettled": True, "provider": provider})
        for entry in entries:
            if entry.lease_until is not None and entry.lease_until > (
                yield Call(self._journal.now)
            ):
                continue
            try:
                info, config = lookup(entry.provider)
                outcome = yield from self._pipeline.operate(
                    info,
                    entry.operation,
                    entry.refund_id,
                    self._reconcile_entry(info, config, entry),
                )
                outcomes.append(outcome)
            except RefundError as exc:
                problem = self._pipeline.redactor.text(entry.provider, str(exc))
                log.error(
                    "cannot reconcile",
                    provider=entry.provider,
                    operation=entry.operation,
                    refund_id=entry.refund_id,
                    error_code=type(exc).__name__,
                    error=problem,
                )
                outcomes.append(result_from_entry(entry, message=problem))
        return outcomes

    # -- one refund ------------------------------------------------------------------

    def _once(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        original_amount: Money | None,
        defer_record: DeferRecord | None,
        *,
        send: bool,
    ) -> Steps[RefundResult]:
        """Claim and act on the verdict. ``send``: a refund proven never to have been
        sent is claimed once more and sent (the caller asks for it now); without it
        (a sweep), nothing is ever sent."""
        verdict, claimed = yield from self._claim(info, operation, original_amount)
        if verdict is ClaimVerdict.TAKEOVER:
            settled, unsent = yield from self._reconcile_claimed(info, config, operation, claimed)
            if not (unsent and send):
                return settled
            verdict, claimed = yield from self._claim(info, operation, original_amount)
        if verdict is ClaimVerdict.NEW and not send:
            # Listed as unsettled, it became sendable before this claim (an operator
            # decided it was never sent, its sender gave its claim back): a sweep
            # settles refunds, it never sends one nobody asked for again.
            yield self._abandon(info, operation, claimed)
            entry = yield Call(self._journal.get, (info.id, operation.refund_id))
            held = (
                unknown_result("nothing was sent: nobody is sending this refund", "not_sent")
                if entry is None
                else result_from_entry(entry)
            )
            return self._pipeline.finish(info, operation, held, ResultSource.RECONCILED)
        if verdict is ClaimVerdict.DONE:
            replayed = result_from_entry(claimed.entry)
            source = ResultSource.DECIDED if claimed.entry.decided_by else ResultSource.REPLAYED
            return self._pipeline.finish(info, operation, replayed, source)
        if verdict is ClaimVerdict.NEW:
            request = yield from self._prepare(info, config, operation, claimed, taken_over=False)
            return (
                yield from self._send_and_record(
                    info, config, operation, request, claimed, defer_record
                )
            )
        # BUSY, or a second TAKEOVER: someone else's turn, or a later one.
        busy = unknown_result(
            "another worker is submitting this refund and has not finished", "in_progress"
        )
        return self._pipeline.finish(info, operation, busy, ResultSource.REPLAYED)

    def _claim(
        self, info: ProviderInfo, operation: Refund | Void, original_amount: Money | None
    ) -> Steps[tuple[ClaimVerdict, _Claimed]]:
        """Claim the refund, waiting while another worker holds it: the verdict (NEW,
        TAKEOVER, DONE; BUSY when the wait ran out) and this attempt."""
        new = new_refund(info.id, operation, original_amount)
        deadline = time.monotonic() + self._wait
        pause = _FIRST_PAUSE
        while True:
            # 48 random bits, as uuid4().hex[:12] gave, without building a UUID.
            owner = f"{self._owner_prefix}:{secrets.token_hex(6)}"
            asked_at = time.monotonic()
            claim = yield self._step(
                info,
                "claim",
                operation.refund_id,
                functools.partial(
                    self._journal.claim, new, owner=owner, lease_seconds=self._lease_seconds
                ),
            )
            if claim.outcome is ClaimVerdict.CONFLICT:
                raise IdempotencyConflict(
                    f"{operation.refund_id!r} was already used for a different refund via "
                    f"{info.id}; nothing was sent (each refund needs a refund_id of its own)",
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
                return claim.outcome, _Claimed(owner, claim.entry, asked_at)
            yield Pause(pause)
            pause = min(pause * 2, _LONGEST_PAUSE)

    def _prepare(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        claimed: _Claimed,
        *,
        taken_over: bool,
    ) -> Steps[HttpRequest]:
        """Build and sign a claimed refund. If a stage refuses it, nothing was sent:
        the claim is given back (a new one forgotten, a taken-over one put back as it
        was found, unleased) before the error is raised, so a retry is not blocked."""
        try:
            return self._pipeline.prepare(info, config, operation)
        except BaseException:
            if not taken_over:
                yield self._abandon(info, operation, claimed)
            else:
                unchanged = result_from_entry(claimed.entry)
                yield from self._record(info, operation, claimed, unchanged, sent=False)
            raise

    def _send_and_record(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Refund | Void,
        request: HttpRequest,
        claimed: _Claimed,
        defer_record: DeferRecord | None = None,
    ) -> Steps[RefundResult]:
        deadline = send_by(config, claimed.asked_at, self._lease_seconds)
        try:
            result = yield from self._pipeline.deliver(info, config, operation, request, deadline)
        except TransportError:
            # Nothing left the process: give the claim back for a retry.
            yield self._abandon(info, operation, claimed)
            raise
        if defer_record is None:
            yield from self._record(info, operation, claimed, result)
        else:
            defer_record(result_record(info.id, operation, claimed.owner, claimed.attempt, result))
        return result

    def _record(
        self,
        info: ProviderInfo,
        operation: Operation,
        claimed: _Claimed,
        result: RefundResult,
        *,
        sent: bool = True,
        state: JournalState | None = None,
    ) -> Steps[None]:
        """Record ``result`` as this attempt's outcome (``state`` when it is not the
        result's own status: NOT_SENT)."""
        outcome = result_record(
            info.id, operation, claimed.owner, claimed.attempt, result, sent=sent
        )
        if state is not None:
            outcome = attrs.evolve(outcome, state=state)
        try:
            yield self._step(
                info,
                "record",
                operation.refund_id,
                functools.partial(self._journal.record_many, [outcome]),
            )
        except RefundError as exc:
            # The request is out, whatever stopped the record (the journal, or a wrapper):
            # the row stays SUBMITTING for `refundcore journal reconcile` to settle.
            log.error(
                "outcome not journalled",
                status=result.status.value,
                error_code=type(exc).__name__,
                error=self._pipeline.redactor.text(info.id, str(exc)),
            )

    # -- reconciling ---------------------------------------------------------------

    def _reconcile_claimed(
        self, info: ProviderInfo, config: Any, operation: Refund | Void, claimed: _Claimed
    ) -> Steps[tuple[RefundResult, bool]]:
        """Settle a refund an earlier attempt may have sent (see the module's doc):
        the result, and whether it was proven never sent (now NOT_SENT). Never a blind
        second refund, never a guess from a refund the gateway does not show."""
        caps = info.capabilities
        why = f"{info.name} offers no query to confirm it"
        if caps.query:
            settled, proven, why = yield from self._ask(info, config, operation, claimed)
            if settled is not None:
                yield from self._record(info, operation, claimed, settled, sent=False)
                return settled, False
            if proven and not caps.idempotent_refund_id:
                return (yield from self._not_sent(info, operation, claimed, why)), True
        history = yield Call(self._journal.history, (info.id, operation.refund_id))
        now = yield Call(self._journal.now)
        if resend_is_deduplicated(info, config, history, now):
            # The gateway refuses a second refund under this id: resending is safe.
            request = yield from self._prepare(info, config, operation, claimed, taken_over=True)
            resent = yield from self._send_and_record(info, config, operation, request, claimed)
            return resent, False
        if caps.idempotent_refund_id:
            why = (
                f"{info.name} remembers a refund id for {caps.idempotency_window:g} s and "
                "the journal cannot show this one was first sent recently enough for a "
                "resend to be deduplicated"
            )
        return (yield from self._still_unknown(info, operation, claimed, why)), False

    def _ask(
        self, info: ProviderInfo, config: Any, operation: Refund | Void, claimed: _Claimed
    ) -> Steps[tuple[RefundResult | None, bool, str]]:
        """Query the gateway about the refund and keep the answer as evidence: the
        finished result it settles the refund as (or ``None``), whether it proves the
        refund never reached the gateway, and what it says in words."""
        entry = claimed.entry
        history = yield Call(self._journal.history, (info.id, operation.refund_id))
        lookup = info.capabilities.lookup
        counts_from = absence_counts_from(history, claimed.attempt, lookup.settle_delay)
        asked_at = yield Call(self._journal.now)
        query = RefundQuery(
            refund_id=operation.refund_id,
            payment=operation.payment,
            provider_refund_id=entry.provider_refund_id,
        )
        try:
            answer = yield from self._pipeline.run(info, config, query)
        except RefundError as exc:
            problem = self._pipeline.redactor.text(info.id, str(exc))
            log.warning("reconcile query failed", error_code=type(exc).__name__, error=problem)
            answer = unknown_result(f"the query could not be made: {problem}", type(exc).__name__)
        reading = read_answer(info, answer, counts_from=counts_from, asked_at=asked_at)
        yield self._record_query(info, operation.refund_id, answer, reading, claimed.owner)
        if not reading.settles:
            return None, reading.proven, reading.note
        note = "settled by a query after an interrupted attempt"
        message = f"{note} ({answer.message})" if answer.message else note
        settled = attrs.evolve(answer, message=message)
        finished = self._pipeline.finish(info, operation, settled, ResultSource.RECONCILED)
        return finished, False, reading.note

    def _not_sent(
        self, info: ProviderInfo, operation: Refund | Void, claimed: _Claimed, why: str
    ) -> Steps[RefundResult]:
        """Record that the refund never reached the gateway: nothing was refunded, and
        its refund id may be sent again."""
        result = self._pipeline.finish(
            info,
            operation,
            RefundResult(
                status=RefundStatus.FAILED,
                error_code="not_sent",
                message=f"{why}; nothing was refunded, and this refund id can be sent again",
            ),
            ResultSource.RECONCILED,
        )
        yield from self._record(
            info, operation, claimed, result, sent=False, state=JournalState.NOT_SENT
        )
        return result

    def _still_unknown(
        self, info: ProviderInfo, operation: Refund | Void, claimed: _Claimed, why: str
    ) -> Steps[RefundResult]:
        """Keep the refund UNKNOWN, saying what is known and what settles it."""
        refund_id = operation.refund_id
        unconfirmed = unknown_result(
            f"an earlier attempt may have reached {info.name}, and {why}: it stays UNKNOWN "
            f"(evidence: refundcore journal show {refund_id}) until a query or a callback "
            f"settles it, or an operator does (refundcore journal resolve {refund_id})",
            "unconfirmed",
        )
        unknown = self._pipeline.finish(info, operation, unconfirmed, ResultSource.RECONCILED)
        yield from self._record(info, operation, claimed, unknown, sent=False)
        return unknown

    def _keep_query(
        self, info: ProviderInfo, answer: RefundResult, refund_id: str
    ) -> Steps[Reading | None]:
        """Keep a query's answer in the history of the journalled refund it is about,
        settling it where the answer can (never from "not found" alone): what the
        answer proves, or ``None`` when the journal has no such refund."""
        if (yield Call(self._journal.get, (info.id, refund_id))) is None:
            return None
        asked_at = yield Call(self._journal.now)
        reading = read_answer(info, answer, counts_from=None, asked_at=asked_at)
        yield self._record_query(info, refund_id, answer, reading)
        return reading

    def _reconcile_entry(
        self, info: ProviderInfo, config: Any, entry: JournalEntry
    ) -> Steps[RefundResult]:
        """One unsettled row of the sweep: a PENDING one is asked about, any other is
        claimed and reconciled as a retry of it would be, without sending a refund
        proven never sent (a caller asking for it again does)."""
        operation = operation_for(entry)
        if entry.state is JournalState.PENDING:
            if not info.capabilities.query:
                stored = result_from_entry(entry)
                return self._pipeline.finish(info, operation, stored, ResultSource.REPLAYED)
            answer = yield from self._pipeline.run(info, config, query_for(entry))
            reading = yield from self._keep_query(info, answer, entry.refund_id)
            if reading is not None and not reading.settles:
                # The gateway accepted it: an answer that settles nothing (a "not
                # found" above all) must not be reported as the refund's outcome; the
                # row is, as it stands now (a callback may have come meanwhile).
                now = (yield Call(self._journal.get, (info.id, entry.refund_id))) or entry
                held = result_from_entry(
                    now,
                    message=f"{info.name} accepted it and it stands {now.state.value}: "
                    f"a query now settles nothing ({reading.note})",
                )
                return self._pipeline.finish(info, operation, held, ResultSource.RECONCILED)
            # Reported as the refund or void it settles, not as the query that asked.
            return self._pipeline.finish(info, operation, answer, ResultSource.RECONCILED)
        self._pipeline.validate(info, operation)
        check_lease(info, config, self._lease_seconds)
        return (yield from self._once(info, config, operation, None, None, send=False))

    # -- journal steps ---------------------------------------------------------------

    def _record_query(
        self,
        info: ProviderInfo,
        refund_id: str,
        answer: RefundResult,
        reading: Reading,
        actor: str | None = None,
    ) -> Call:
        """The journal step that keeps a query's ``answer`` as evidence, settling the
        refund where ``reading`` says it can."""
        return self._step(
            info,
            "query",
            refund_id,
            functools.partial(
                self._journal.record_query,
                info.id,
                refund_id,
                state=JournalState.of(answer.status),
                settles=reading.settles,
                provider_refund_id=answer.provider_refund_id,
                message=answer.message,
                error_code=answer.error_code,
                http_status=answer.http_status,
                raw=answer.raw,
                actor=actor,
                # What a "not found" proves is the journal's reading, worth keeping; any
                # other answer speaks for itself.
                note=reading.note if reading.absent else None,
            ),
        )

    def _step(
        self, info: ProviderInfo, action: str, refund_id: str | None, proceed: Callable[[], Any]
    ) -> Call:
        """One journal step inside the ``refundcore_journal`` wrapper point."""
        return Call(self._pipeline.journal, (info, action, refund_id, proceed))

    def _abandon(self, info: ProviderInfo, operation: Refund | Void, claimed: _Claimed) -> Call:
        """Give the claim back: nothing was sent."""
        return Call(self._journal.abandon, (info.id, operation.refund_id), {"owner": claimed.owner})
