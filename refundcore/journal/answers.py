"""What the gateway says about a refund from outside its current attempt (a callback,
a query, the late answer of an attempt taken over), and what an operator decides.

One rule for all of them: a row only moves to an answered state that knows more
(monotonic), a row an operator decided never moves (but where the gateway's own answer
shows the money left: a decided "never sent" answered at all, a decided FAILED answered
SUCCEEDED), and a word that disagrees with what the journal holds as settled is
recorded as a contradiction, never lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from ..errors import JournalError, ValidationError
from ..status import JournalState
from .history import SENT, Event, SqlHistory, answer_data
from .pool import Transaction
from .schema import SELECT, TABLE
from .values import Applied, EventKind, JournalEntry, ResultRecord

__all__ = ["ANSWERED", "DECISIONS", "RANK", "SqlAnswers", "contradicts", "overrules_decision"]

#: How much a state knows; a row only ever moves to a state of higher rank, so a late
#: or repeated report can never undo a better-informed one. NOT_SENT knows no more
#: than UNKNOWN about the gateway: any answer from it outranks both.
RANK = {
    JournalState.SUBMITTING: 0,
    JournalState.UNKNOWN: 1,
    JournalState.NOT_SENT: 1,
    JournalState.PENDING: 2,
    JournalState.SUCCEEDED: 3,
    JournalState.FAILED: 3,
}
#: States the gateway answers with: a claim finds such a row DONE, and the gateway's
#: word moves a row only to one of them.
ANSWERED = frozenset({JournalState.PENDING, JournalState.SUCCEEDED, JournalState.FAILED})
#: What an operator may decide a refund is (:meth:`SqlAnswers.resolve`).
DECISIONS = frozenset({JournalState.SUCCEEDED, JournalState.FAILED, JournalState.NOT_SENT})

_KEY = "WHERE provider = ? AND refund_id = ?"


def contradicts(held: JournalState, word: JournalState) -> bool:
    """Whether the gateway's ``word`` disagrees with what the journal ``held`` as
    settled (a final state, an operator's decision, or "never sent")."""
    if word not in ANSWERED:
        return False
    if held is JournalState.NOT_SENT:
        return True  # the gateway has it: it was sent after all
    if held.is_final:
        # A PENDING after SUCCEEDED is a stale report, not a disagreement.
        return word is not held and not (
            held is JournalState.SUCCEEDED and word is JournalState.PENDING
        )
    return False


def overrules_decision(entry: JournalEntry, word: JournalState) -> bool:
    """Whether the gateway's ``word`` settles a refund against an operator's decision,
    because the decision left standing could refund the money a second time: any
    answer disproves a decided "never sent" (the same refund id would be sent again),
    and SUCCEEDED a decided FAILED (the money left; counted as failed, the payment's
    limit would let it be refunded again under another id). A decided SUCCEEDED is
    never moved: a FAILED word then only says the money may still be owed, which an
    operator settles."""
    if entry.decided_by is None or word not in ANSWERED:
        return False
    return entry.state is JournalState.NOT_SENT or (
        entry.state is JournalState.FAILED and word is JournalState.SUCCEEDED
    )


def _nonempty(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("must be a non-empty string", field=field)
    return value.strip()


class SqlAnswers(SqlHistory):
    """Callbacks, queries, late answers and decisions, over SQL."""

    def apply_notification(
        self,
        provider: str,
        *,
        state: JournalState,
        refund_id: str | None = None,
        provider_refund_id: str | None = None,
        raw: Mapping[str, Any] | None = None,
        unsigned_tie: bool = False,
    ) -> Applied | None:
        state = JournalState(state)
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            entry = None
            if refund_id is not None:
                entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None and provider_refund_id is not None:
                row = tx.one(
                    f"{SELECT} WHERE provider = ? AND provider_refund_id = ? "
                    f"ORDER BY created_at, refund_id LIMIT 1{self._for_update}",
                    (provider, provider_refund_id),
                )
                entry = None if row is None else self._entry(row)
            if entry is None:
                return None
            data = answer_data(provider_refund_id, None, None, None, raw)
            conflict = self._identity_conflict(
                tx, entry, provider_refund_id, unsigned_tie=unsigned_tie
            )
            data.update(conflict)
            unconfirmed = "unsigned_tie" in conflict
            reopens = unconfirmed and _reopens(entry, state)
            if reopens:
                data["reopened"] = True
            word = Event(
                provider, entry.refund_id, now, EventKind.CALLBACK, entry.attempt, state, None, data
            )
            applied = self._hear(tx, entry, word, settles=not conflict)
            if not conflict:
                return applied
            if unconfirmed and entry.state is JournalState.SUBMITTING:
                # The reply, still on its way, brings the gateway refund id and its own
                # word: a callback that overtook it is kept, and disagrees with nothing.
                return attrs.evolve(applied, unconfirmed=True)
            # Recorded with its first delivery: a repeat only counts on its callback.
            if not applied.contradiction and not applied.duplicate:
                self._contradiction(tx, entry, now, word, entry.state)
            if reopens:
                applied = attrs.evolve(
                    applied, entry=self._reopen(tx, entry, now, state), changed=True
                )
            return attrs.evolve(
                applied, contradiction=True, misdirected=not unconfirmed, unconfirmed=unconfirmed
            )

    def _reopen(
        self, tx: Transaction, entry: JournalEntry, now: datetime, word: JournalState
    ) -> JournalEntry:
        """Put ``entry`` back to UNKNOWN, for an operator: a word it cannot trust says
        the money may have left, against its "never sent" or decided FAILED."""
        message = (
            f"a callback says {word.value}, against {entry.state.value}; only unsigned data "
            "ties it to this refund: UNKNOWN until an operator decides"
        )
        changes: dict[str, Any] = {
            "state": JournalState.UNKNOWN,
            "decided_by": None,
            "provider_refund_id": entry.provider_refund_id,
            "owner": entry.owner,
            "lease_until": entry.lease_until,
            "updated_at": now,
            "message": message,
            "error_code": None,
        }
        self._write_changes(tx, entry, changes, entry.raw)
        return attrs.evolve(entry, **changes)

    def _identity_conflict(
        self,
        tx: Transaction,
        entry: JournalEntry,
        provider_refund_id: str | None,
        *,
        unsigned_tie: bool,
    ) -> dict[str, Any]:
        """Why a callback found by its refund id cannot settle ``entry``: the row is
        known at the gateway by another refund id (``held_provider_refund_id``), the
        callback's gateway refund id is another row's (``belongs_to``), or its tie to
        the row is unsigned and no gateway refund id the row holds confirms it
        (``unsigned_tie``); empty when nothing disagrees. A refund id may reach a
        callback from a place the gateway does not sign (a URL, an echo of the
        merchant's own text); the gateway's refund id is what its signature covers, so
        it decides which refund is meant."""
        if provider_refund_id is not None and entry.provider_refund_id == provider_refund_id:
            return {}
        if provider_refund_id is not None:
            if entry.provider_refund_id is not None:
                return {"held_provider_refund_id": entry.provider_refund_id}
            other = tx.one(
                f"SELECT refund_id FROM {TABLE} WHERE provider = ? AND provider_refund_id = ? "  # noqa: S608
                "LIMIT 1",
                (entry.provider, provider_refund_id),
            )
            if other is not None:
                return {"belongs_to": str(other["refund_id"])}
        # A tie the gateway does not sign, with no gateway refund id held to check it
        # against: another refund's genuine word, its unsigned fields rewritten, would
        # read just like this one.
        return {"unsigned_tie": True} if unsigned_tie else {}

    def record_query(
        self,
        provider: str,
        refund_id: str,
        *,
        state: JournalState,
        settles: bool,
        provider_refund_id: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        raw: Mapping[str, Any] | None = None,
        actor: str | None = None,
        note: str | None = None,
    ) -> Applied:
        state = JournalState(state)
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None:
                raise JournalError(
                    f"journal {self.url} has no refund {refund_id!r} of {provider!r}"
                )
            data = answer_data(provider_refund_id, message, error_code, http_status, raw)
            if note:
                data["note"] = note
            word = Event(
                provider, refund_id, now, EventKind.QUERY, entry.attempt, state, actor, data
            )
            return self._hear(tx, entry, word, settles=settles)

    def resolve(
        self, provider: str, refund_id: str, *, state: JournalState, reason: str, by: str
    ) -> JournalEntry:
        decided = _decision(state)
        reason = _nonempty(reason, "reason")
        by = _nonempty(by, "by")
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            entry = self._fetch(tx, provider, refund_id, lock=True)
            self._check_decision(entry, refund_id, provider, decided, now)
            assert entry is not None  # checked above
            message = f"decided {decided.value} by {by}: {reason}"
            tx.run(
                f"UPDATE {TABLE} SET state = ?, decided_by = ?, message = ?, error_code = NULL, "  # noqa: S608
                f"owner = NULL, lease_until = NULL, updated_at = ? {_KEY}",
                (decided.value, by, message, self._encode_time(now), provider, refund_id),
            )
            facts = {"reason": reason, "by": by, "previous_state": entry.state.value}
            self._log(
                tx,
                [
                    Event(
                        provider,
                        refund_id,
                        now,
                        EventKind.DECISION,
                        entry.attempt,
                        decided,
                        by,
                        facts,
                    )
                ],
            )
            return attrs.evolve(
                entry,
                state=decided,
                decided_by=by,
                message=message,
                error_code=None,
                owner=None,
                lease_until=None,
                updated_at=now,
            )

    def _check_decision(
        self,
        entry: JournalEntry | None,
        refund_id: str,
        provider: str,
        decided: JournalState,
        now: datetime,
    ) -> None:
        """Refuse a decision about a refund that is missing, still being sent, or
        settled by the gateway's own word."""
        if entry is None:
            raise JournalError(f"journal {self.url} has no refund {refund_id!r} of {provider!r}")
        if entry.lease_until is not None and entry.lease_until > now:
            raise JournalError(
                f"journal {self.url}: refund {refund_id!r} is being sent or reconciled "
                f"by {entry.owner} until {entry.lease_until.isoformat()}; decide after"
            )
        if entry.decided_by is None and entry.state.is_final:
            raise ValidationError(
                f"refund {refund_id!r} is {entry.state.value} by the gateway's own "
                "answer; a decision cannot override it",
                field="refund_id",
            )
        if decided is JournalState.NOT_SENT and entry.state is JournalState.PENDING:
            raise ValidationError(
                f"refund {refund_id!r} is PENDING at the gateway, so it was sent",
                field="state",
            )

    # -- the rules ----------------------------------------------------------------------

    def _hear(self, tx: Transaction, entry: JournalEntry, word: Event, *, settles: bool) -> Applied:
        """A callback's or query's ``word``: kept as an event, applied by the monotonic
        rules when it ``settles``, recorded as a contradiction where it disagrees."""
        data = word.data
        heard = self._heard(tx, word) if word.kind is EventKind.CALLBACK else None
        duplicate = heard is not None and heard.before
        settled = None
        if settles and word.state is not None:
            settled = self._settle(tx, entry, word.at, word.state, data)
        facts: dict[str, Any] = {**data, "applied": settled is not None}
        if duplicate:
            facts["duplicate"] = True
        if not settles:
            facts["settles"] = False
        kept = word._replace(data=facts)
        if heard is None:
            self._log(tx, [kept])
        elif not duplicate:
            self._log_folded(tx, kept, heard.first)
        elif settled is not None:
            # A repeat that moved the row (over a decision made since) is news: kept whole.
            self._log(tx, [kept])
        elif heard.repeats is None:
            self._log_folded(tx, kept, heard.again)
        else:
            self._count_again(tx, heard.repeats, word.at)
        contradiction = (
            word.state is not None
            and contradicts(entry.state, word.state)
            and (entry.decided_by is not None or entry.state.is_final or settles)
        )
        if contradiction and not duplicate:
            self._contradiction(tx, entry, word.at, word, entry.state)
        return Applied(
            entry=entry if settled is None else settled,
            changed=settled is not None,
            duplicate=duplicate,
            contradiction=contradiction,
        )

    def _late_answer(
        self, tx: Transaction, entry: JournalEntry, outcome: ResultRecord, now: datetime
    ) -> JournalEntry:
        """A result of an attempt that is no longer the current one: kept as evidence,
        and applied only as a callback would be (never over the current attempt's
        lease or answer, never over a decision)."""
        state = outcome.state
        data = answer_data(
            outcome.provider_refund_id,
            outcome.message,
            outcome.error_code,
            outcome.http_status,
            outcome.raw,
        )
        # It contradicts a "never sent" concluded at or after its own attempt: its
        # request did reach the gateway.
        denied = any(
            event.state is JournalState.NOT_SENT
            and event.attempt >= outcome.attempt
            and event.kind in (EventKind.ANSWER, EventKind.DECISION)
            for event in self._history(tx, entry.provider, entry.refund_id)
        )
        settled = self._settle(tx, entry, now, state, data, answer=True)
        facts = {**data, "applied": settled is not None}
        if outcome.sent:
            facts[SENT] = True
        word = Event(
            outcome.provider,
            outcome.refund_id,
            now,
            EventKind.LATE_ANSWER,
            outcome.attempt,
            state,
            outcome.owner,
            facts,
        )
        self._log(tx, [word])
        held = JournalState.NOT_SENT if denied and state in ANSWERED else entry.state
        if contradicts(held, state):
            self._contradiction(tx, entry, now, word, held)
        return entry if settled is None else settled

    def _settle(
        self,
        tx: Transaction,
        entry: JournalEntry,
        now: datetime,
        state: JournalState,
        data: Mapping[str, Any],
        *,
        answer: bool = False,
    ) -> JournalEntry | None:
        """Apply a gateway's word (``state`` and its :func:`answer_data`) by the
        monotonic rules: the row moves only to an answered state that knows more, and a
        missing provider refund id is filled in; a row an operator decided never moves,
        unless the word shows the money left (:func:`overrules_decision`).
        Returns the row afterwards, or ``None`` if nothing changed. ``answer``: the word
        is a recorded answer, whose message and codes replace the row's."""
        provider_refund_id, raw = data.get("provider_refund_id"), data.get("raw")
        advances = (
            state in ANSWERED and entry.decided_by is None and RANK[state] > RANK[entry.state]
        ) or overrules_decision(entry, state)
        fills_id = entry.provider_refund_id is None and provider_refund_id is not None
        if not advances and not fills_id:
            return None
        new_state = state if advances else entry.state
        # A final row has nothing left to submit: its lease means nothing any more.
        final = new_state.is_final
        kept_raw = dict(raw) if advances and raw is not None else entry.raw
        changes: dict[str, Any] = {
            "state": new_state,
            "decided_by": None if advances else entry.decided_by,
            "provider_refund_id": entry.provider_refund_id or provider_refund_id,
            "raw": json.loads(json.dumps(kept_raw, default=str)),
            "owner": None if final else entry.owner,
            "lease_until": None if final else entry.lease_until,
            "updated_at": now,
        }
        if advances and answer:
            changes.update(
                message=data.get("message"),
                error_code=data.get("error_code"),
                http_status=data.get("http_status"),
            )
        self._write_changes(tx, entry, changes, kept_raw)
        return attrs.evolve(entry, **changes)

    def _write_changes(
        self,
        tx: Transaction,
        entry: JournalEntry,
        changes: Mapping[str, Any],
        raw: Mapping[str, Any],
    ) -> None:
        lease_until = changes["lease_until"]
        tx.run(
            f"UPDATE {TABLE} SET state = ?, decided_by = ?, provider_refund_id = ?, raw = ?, "  # noqa: S608
            "owner = ?, lease_until = ?, message = ?, error_code = ?, http_status = ?, "
            f"updated_at = ? {_KEY}",
            (
                changes["state"].value,
                changes["decided_by"],
                changes["provider_refund_id"],
                self._encode_raw(raw),
                changes["owner"],
                None if lease_until is None else self._encode_time(lease_until),
                changes.get("message", entry.message),
                changes.get("error_code", entry.error_code),
                changes.get("http_status", entry.http_status),
                self._encode_time(changes["updated_at"]),
                entry.provider,
                entry.refund_id,
            ),
        )

    def _release(self, tx: Transaction, entry: JournalEntry, now: datetime) -> JournalEntry:
        """Give the row's lease back, changing nothing else."""
        if entry.owner is None and entry.lease_until is None:
            return entry
        tx.run(
            f"UPDATE {TABLE} SET owner = NULL, lease_until = NULL, updated_at = ? {_KEY}",  # noqa: S608
            (self._encode_time(now), entry.provider, entry.refund_id),
        )
        return attrs.evolve(entry, owner=None, lease_until=None, updated_at=now)


def _reopens(entry: JournalEntry, word: JournalState) -> bool:
    """Whether a word whose tie to ``entry`` nothing confirms still withdraws what the
    row holds: where a confirmed word would overrule it because, left standing, it
    could refund the money a second time ("never sent", a decided FAILED against
    SUCCEEDED). Such a word settles nothing, but the row goes back to UNKNOWN."""
    return overrules_decision(entry, word) or (
        entry.state is JournalState.NOT_SENT and word in ANSWERED
    )


def _decision(state: object) -> JournalState:
    try:
        decided = JournalState(state)
    except ValueError:
        decided = None
    if decided is None or decided not in DECISIONS:
        raise ValidationError(
            f"must be SUCCEEDED, FAILED or NOT_SENT, got {state!r}", field="state"
        )
    return decided
