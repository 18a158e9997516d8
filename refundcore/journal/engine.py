"""The journal's rules over SQL, shared by the SQLite and PostgreSQL backends.

The rules live once: claims and the outcomes of their attempts here, in
:class:`SqlJournal`; callbacks, queries, late answers and decisions in
:class:`~.answers.SqlAnswers`; histories in :class:`~.history.SqlHistory`; the batch
work queue in :class:`~.batch_queue.SqlBatchQueue`. A backend only supplies
connections, transactions, its clock, column encodings and its schema
(:class:`~.backend.SqlBackend`), so SQLite and PostgreSQL cannot drift apart on what a
claim or a callback does.
"""

from __future__ import annotations

import functools
import json
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from ..errors import JournalError
from ..status import JournalState
from .answers import ANSWERED, RANK, SqlAnswers, contradicts, overrules_decision
from .history import SENT, Event, answer_data
from .pool import Row, Transaction
from .schema import COLUMNS, SELECT, TABLE, sql_list
from .values import (
    Claim,
    ClaimVerdict,
    EventKind,
    JournalEntry,
    NewRefund,
    ResultRecord,
)

__all__ = ["COMMITTED_STATES", "SqlJournal"]

#: States whose amount is committed: the money has left or may have left.
COMMITTED_STATES = frozenset(
    {JournalState.SUBMITTING, JournalState.PENDING, JournalState.SUCCEEDED, JournalState.UNKNOWN}
)
_RECORDED = frozenset(JournalState) - {JournalState.SUBMITTING}

_NEW_COLUMNS = (*attrs.fields_dict(NewRefund), "currency")
_KEY = "WHERE provider = ? AND refund_id = ?"
_new_values = operator.attrgetter(*attrs.fields_dict(NewRefund))
_AMOUNT = _NEW_COLUMNS.index("amount")
_CURRENCY = _NEW_COLUMNS.index("currency")
_ORIGINAL = _NEW_COLUMNS.index("original_amount")
_SUBMITTING = JournalState.SUBMITTING.value
_INSERTED = (*_NEW_COLUMNS, "state", "raw", "attempt", "owner")
# The clock is read inside the statements that write it (no query of its own on the
# path every refund takes); a backend's SQL for it goes where {stamp} and {later} are.
# RETURNING: a row back means this claim inserted it.
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(_INSERTED)}, lease_until, created_at, updated_at) "  # noqa: S608 - constant names
    f"VALUES ({', '.join('?' * len(_INSERTED))}, {{later}}, {{stamp}}, {{stamp}}) "
    "ON CONFLICT (provider, refund_id) DO NOTHING RETURNING created_at, lease_until"
)
# The outcome of the claimant's own send: its row is SUBMITTING, owned by it under the
# same attempt, and every outcome ranks above SUBMITTING, so nothing needs reading first.
_RECORD_OWN = (
    f"UPDATE {TABLE} SET state = ?, "  # noqa: S608 - constant names
    "provider_refund_id = COALESCE(?, provider_refund_id), message = ?, error_code = ?, "
    "http_status = ?, raw = COALESCE(?, raw), owner = NULL, lease_until = NULL, "
    f"updated_at = {{stamp}} {_KEY} AND owner = ? AND attempt = ? AND state = 'SUBMITTING' "
    "RETURNING updated_at"
)
_RECORD_OWN_ROW = f"{_RECORD_OWN}, {', '.join(c for c in COLUMNS if c != 'updated_at')}"
_COMMITTED_WHERE = (
    "WHERE provider = ? AND payment_key = ? "
    f"AND state IN ({sql_list(JournalState, COMMITTED_STATES)})"
)
_COMMITTED = f"SELECT amount, original_amount, currency FROM {TABLE} {_COMMITTED_WHERE}"  # noqa: S608


def _inserted_entry(
    new: NewRefund, owner: str, lease_until: datetime, now: datetime
) -> JournalEntry:
    """The row a NEW claim has just inserted, as :meth:`Journal.get` would read it."""
    return JournalEntry(
        provider=new.provider,
        refund_id=new.refund_id,
        operation=new.operation,
        payment_id=new.payment_id,
        merchant_reference=new.merchant_reference,
        transaction_id=new.transaction_id,
        amount=new.amount,
        reason=new.reason,
        notify_url=new.notify_url,
        original_amount=new.original_amount,
        fingerprint=new.fingerprint,
        payment_key=new.payment_key,
        state=JournalState.SUBMITTING,
        provider_refund_id=None,
        message=None,
        error_code=None,
        http_status=None,
        raw={},
        attempt=1,
        decided_by=None,
        owner=owner,
        lease_until=lease_until,
        created_at=now,
        updated_at=now,
    )


class SqlJournal(SqlAnswers):
    """The journal's rules for refunds over SQL; a backend subclasses it and supplies
    what :class:`~.backend.SqlBackend` asks for."""

    _insert_sql: str
    _record_own_sql: str
    _record_own_row_sql: str

    @functools.cached_property
    def _empty_raw(self) -> Any:
        """A new claim's ``raw`` (no reply yet), encoded once."""
        return self._encode_raw({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if hasattr(cls, "_stamp_sql"):
            clock = {"stamp": cls._stamp_sql, "later": cls._later_sql}
            cls._insert_sql = _INSERT.format_map(clock)
            cls._record_own_sql = _RECORD_OWN.format_map(clock)
            cls._record_own_row_sql = _RECORD_OWN_ROW.format_map(clock)

    # -- claims ---------------------------------------------------------------------

    def claim(self, new: NewRefund, *, owner: str, lease_seconds: float = 60.0) -> Claim:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        with self._transaction(write=True, lock=_payment_lock(new)) as tx:
            return self._claim(tx, new, owner, lease_seconds)

    def claim_many(
        self, claims: Sequence[tuple[NewRefund, str]], *, lease_seconds: float = 60.0
    ) -> list[Claim]:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if not claims:
            return []
        # Every payment's lock, taken in one order by every worker, so two workers
        # claiming overlapping sets cannot wait on each other.
        keys = sorted({_payment_lock(new) for new, _ in claims})
        with self._transaction(write=True) as tx:
            for key in keys:
                self._hold(tx, key)
            return [self._claim(tx, new, owner, lease_seconds) for new, owner in claims]

    def _claim(self, tx: Transaction, new: NewRefund, owner: str, lease_seconds: float) -> Claim:
        """:meth:`claim` within ``tx``, which holds ``new``'s payment's lock."""
        entry = None
        if new.original_amount is not None:
            entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
            over = None if entry is not None else self._over_limit(tx, new)
            if over is not None:
                return Claim(ClaimVerdict.OVER_LIMIT, None, refunded=over)
        if entry is None:
            # ON CONFLICT: a claim of the same refund id for another payment holds
            # another lock; whoever inserts second finds the row below instead.
            inserted = tx.all(self._insert_sql, self._new_row(new, owner, lease_seconds))
            if inserted:
                entry = self._inserted(tx, new, owner, lease_seconds, inserted[0])
                return Claim(ClaimVerdict.NEW, entry)
            entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
            if entry is None:  # pragma: no cover - the insert found it there
                raise JournalError(f"journal {self.url} lost refund {new.refund_id!r}")
        now = self._clock(tx)
        claimed = _claim_event(new, owner, lease_seconds, now)
        lease_until = now + timedelta(seconds=lease_seconds)
        return self._claim_existing(tx, new, entry, claimed, lease_until)

    def _inserted(
        self, tx: Transaction, new: NewRefund, owner: str, lease_seconds: float, inserted: Row
    ) -> JournalEntry:
        """Log the claim of the row :data:`_INSERT` has just written; the row as
        :meth:`Journal.get` would read it (it is exactly what was written: no need to
        read it back on the path every refund takes)."""
        now = self._decode_time(inserted["created_at"])
        lease_until = self._decode_time(inserted["lease_until"])
        self._log(tx, [_claim_event(new, owner, lease_seconds, now)])
        return _inserted_entry(new, owner, lease_until, now)

    def _claim_existing(
        self,
        tx: Transaction,
        new: NewRefund,
        entry: JournalEntry,
        claimed: Event,
        lease_until: datetime,
    ) -> Claim:
        """The verdict on a claim of a refund id the journal already holds."""
        if entry.fingerprint != new.fingerprint:
            return Claim(ClaimVerdict.CONFLICT, entry)
        if entry.state is JournalState.NOT_SENT:
            # Never reached the gateway: this claim sends it, under its next attempt,
            # and only if the payment's limit still allows it.
            over = self._over_limit(tx, new)
            if over is not None:
                return Claim(ClaimVerdict.OVER_LIMIT, entry, refunded=over)
            return Claim(ClaimVerdict.NEW, self._reclaim(tx, entry, lease_until, claimed))
        if entry.state in ANSWERED:
            return Claim(ClaimVerdict.DONE, entry)
        if entry.lease_until is not None and entry.lease_until > claimed.at:
            return Claim(ClaimVerdict.BUSY, entry)
        return Claim(ClaimVerdict.TAKEOVER, self._take_over(tx, entry, lease_until, claimed))

    def _take_over(
        self, tx: Transaction, entry: JournalEntry, lease_until: datetime, claimed: Event
    ) -> JournalEntry:
        """A refund whose sender's lease ran out (or that was left UNKNOWN), now the
        claimant's to reconcile under the next attempt."""
        attempt, owner, now = entry.attempt + 1, claimed.actor, claimed.at
        tx.run(
            f"UPDATE {TABLE} SET owner = ?, lease_until = ?, attempt = ?, "  # noqa: S608
            f"updated_at = ? {_KEY}",
            (
                owner,
                self._encode_time(lease_until),
                attempt,
                self._encode_time(now),
                entry.provider,
                entry.refund_id,
            ),
        )
        facts = {
            **claimed.data,
            "previous_owner": entry.owner,
            "previous_state": entry.state.value,
        }
        taken = claimed._replace(
            kind=EventKind.TAKEOVER, attempt=attempt, state=entry.state, data=facts
        )
        self._log(tx, [taken])
        return attrs.evolve(
            entry, owner=owner, lease_until=lease_until, attempt=attempt, updated_at=now
        )

    def _reclaim(
        self, tx: Transaction, entry: JournalEntry, lease_until: datetime, claimed: Event
    ) -> JournalEntry:
        """A NOT_SENT row claimed again: SUBMITTING under the next attempt, as if new."""
        attempt, owner, now = entry.attempt + 1, claimed.actor, claimed.at
        tx.run(
            f"UPDATE {TABLE} SET state = ?, attempt = ?, decided_by = NULL, owner = ?, "  # noqa: S608
            "lease_until = ?, message = NULL, error_code = NULL, http_status = NULL, "
            f"updated_at = ? {_KEY}",
            (
                JournalState.SUBMITTING.value,
                attempt,
                owner,
                self._encode_time(lease_until),
                self._encode_time(now),
                entry.provider,
                entry.refund_id,
            ),
        )
        self._log(tx, [claimed._replace(attempt=attempt, data={**claimed.data, "again": True})])
        return attrs.evolve(
            entry,
            state=JournalState.SUBMITTING,
            attempt=attempt,
            decided_by=None,
            owner=owner,
            lease_until=lease_until,
            message=None,
            error_code=None,
            http_status=None,
            updated_at=now,
        )

    def _committed(self, tx: Transaction, new: NewRefund, limit: Decimal) -> Decimal:
        """What is already refunded or on its way for ``new``'s payment."""
        rows = tx.all(_COMMITTED, (new.provider, new.payment_key))
        total = limit * 0  # keeps the currency's decimals: "0.00", not "0"
        currency = None if new.amount is None else new.amount.currency
        for row in rows:
            if row["currency"] is not None and currency not in (None, row["currency"]):
                continue
            # A void without amount reversed the whole payment.
            amount = self._decode_amount(row["amount"]) or self._decode_amount(
                row["original_amount"]
            )
            total += limit if amount is None else Decimal(amount)
        return total

    def _over_limit(self, tx: Transaction, new: NewRefund) -> str | None:
        """What is already committed for ``new``'s payment, if ``new`` would take it
        past its original amount; ``None`` when it fits (or there is no limit)."""
        if new.original_amount is None:
            return None
        limit = new.original_amount.amount
        committed = self._committed(tx, new, limit)
        wanted = limit if new.amount is None else new.amount.amount
        return f"{committed:f}" if committed + wanted > limit else None

    def _new_row(self, new: NewRefund, owner: str, lease_seconds: float) -> list[Any]:
        """The values of :data:`_INSERT` for a claim of ``new``."""
        values = [*_new_values(new), None]
        values[_AMOUNT], values[_CURRENCY], values[_ORIGINAL] = self._money_columns(
            new.amount, new.original_amount
        )
        values += (_SUBMITTING, self._empty_raw, 1, owner, float(lease_seconds))
        return values

    # -- outcomes -------------------------------------------------------------------

    def record(
        self,
        provider: str,
        refund_id: str,
        *,
        owner: str,
        attempt: int,
        state: JournalState,
        provider_refund_id: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        raw: Mapping[str, Any] | None = None,
        sent: bool = True,
    ) -> JournalEntry:
        outcome = ResultRecord(
            provider,
            refund_id,
            owner,
            attempt,
            state,
            provider_refund_id,
            message,
            error_code,
            http_status,
            raw,
            sent,
        )
        _check_outcome(outcome)
        # Lost to a power cut, an outcome leaves the row SUBMITTING, and a reconcile asks
        # the gateway: the claim, not the outcome, keeps money from going out twice.
        with self._transaction(write=True, sync=False) as tx:
            recorded = tx.all(self._record_own_row_sql, self._own_outcome(outcome))
            if recorded:
                row = recorded[0]
                self._log(tx, [_answered(outcome, self._decode_time(row["updated_at"]))])
                return self._entry(row)
            return self._record_by_rules(tx, outcome, self._clock(tx))

    def _record_by_rules(
        self, tx: Transaction, outcome: ResultRecord, now: datetime
    ) -> JournalEntry:
        """:meth:`record` for a row that is not, or no longer, its owner's SUBMITTING row
        under the same attempt: an older attempt's result is a late answer, a final or
        decided row stays, a less-informed state only gives the lease back."""
        provider, refund_id, state = outcome.provider, outcome.refund_id, outcome.state
        entry = self._fetch(tx, provider, refund_id, lock=True)
        if entry is None:
            raise JournalError(
                f"journal {self.url} has no refund {refund_id!r} of {provider!r} to record"
            )
        if outcome.attempt > entry.attempt:
            raise JournalError(
                f"journal {self.url}: refund {refund_id!r} has had {entry.attempt} "
                f"attempt(s); {outcome.owner!r} reports attempt {outcome.attempt}"
            )
        if outcome.attempt < entry.attempt:
            return self._late_answer(tx, entry, outcome, now)
        if entry.owner not in (None, outcome.owner):
            raise JournalError(
                f"journal {self.url}: attempt {entry.attempt} of refund {refund_id!r} "
                f"belongs to {entry.owner!r}; {outcome.owner!r} may not record it"
            )
        answered = _answered(outcome, now)
        self._log(tx, [answered])
        held = entry.state
        if entry.decided_by is not None or held.is_final:
            if contradicts(held, state):
                self._contradiction(tx, entry, now, answered, held)
            if overrules_decision(entry, state):
                settled = self._settle(tx, entry, now, state, answered.data, answer=True)
                entry = entry if settled is None else settled
            return self._release(tx, entry, now)
        if RANK[state] < RANK[held]:
            # E.g. a query answering UNKNOWN for a refund already PENDING: keep what
            # is known, only give the lease back.
            return self._release(tx, entry, now)
        return self._write_outcome(tx, entry, outcome, now)

    def _write_outcome(
        self, tx: Transaction, entry: JournalEntry, o: ResultRecord, now: datetime
    ) -> JournalEntry:
        """Store ``o`` over ``entry`` (within ``tx``) and release the lease."""
        provider, refund_id, state = o.provider, o.refund_id, o.state
        kept_raw = entry.raw if o.raw is None else dict(o.raw)
        tx.run(
            f"UPDATE {TABLE} SET state = ?, "  # noqa: S608
            "provider_refund_id = COALESCE(?, provider_refund_id), message = ?, "
            "error_code = ?, http_status = ?, raw = ?, owner = NULL, "
            f"lease_until = NULL, updated_at = ? {_KEY}",
            (
                state.value,
                o.provider_refund_id,
                o.message,
                o.error_code,
                o.http_status,
                self._encode_raw(kept_raw),
                self._encode_time(now),
                provider,
                refund_id,
            ),
        )
        # What was just written, without reading the row back.
        return attrs.evolve(
            entry,
            state=state,
            provider_refund_id=o.provider_refund_id or entry.provider_refund_id,
            message=o.message,
            error_code=o.error_code,
            http_status=o.http_status,
            raw=json.loads(json.dumps(kept_raw, default=str)),
            owner=None,
            lease_until=None,
            updated_at=now,
        )

    def _own_outcome(self, outcome: ResultRecord) -> tuple[Any, ...]:
        """The values of :data:`_RECORD_OWN` for ``outcome``."""
        raw = outcome.raw
        return (
            outcome.state.value,
            outcome.provider_refund_id,
            outcome.message,
            outcome.error_code,
            outcome.http_status,
            None if raw is None else self._encode_raw(raw),
            outcome.provider,
            outcome.refund_id,
            outcome.owner,
            outcome.attempt,
        )

    def record_many(self, outcomes: Sequence[ResultRecord]) -> None:
        for outcome in outcomes:
            _check_outcome(outcome)
        if not outcomes:
            return
        with self._transaction(write=True, sync=False) as tx:
            others = []
            events: list[Event] = []
            for outcome in outcomes:
                recorded = tx.all(self._record_own_sql, self._own_outcome(outcome))
                if recorded:
                    at = self._decode_time(recorded[0]["updated_at"])
                    events.append(_answered(outcome, at))
                else:
                    others.append(outcome)
            self._log(tx, events)
            if others:
                # Not a SUBMITTING row of its owner's attempt any more (a callback or a
                # takeover came first): record's own rules decide, as rarely as that
                # happens.
                now = self._clock(tx)
                for outcome in others:
                    self._record_by_rules(tx, outcome, now)

    def abandon(self, provider: str, refund_id: str, *, owner: str) -> bool:
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None or entry.owner != owner or entry.state is not JournalState.SUBMITTING:
                return False
            history = self._history(tx, provider, refund_id)
            # An attempt that took over a refund may follow one that sent it: only an
            # attempt that began as a claim (nothing sent before it) proves nothing was.
            opened = [
                event
                for event in history
                if event.attempt == entry.attempt
                and event.kind in (EventKind.CLAIM, EventKind.TAKEOVER)
            ]
            if not opened or opened[0].kind is not EventKind.CLAIM:
                return False
            if len(history) == 1:
                # The refund is nothing but this claim: forget it, so the refund id is
                # free again, for a corrected refund too.
                tx.run(f"DELETE FROM {TABLE} {_KEY}", (provider, refund_id))  # noqa: S608
                self._forget(tx, provider, refund_id)
                return True
            message = "nothing was sent: the request never left the process"
            tx.run(
                f"UPDATE {TABLE} SET state = ?, message = ?, owner = NULL, "  # noqa: S608
                f"lease_until = NULL, updated_at = ? {_KEY}",
                (JournalState.NOT_SENT.value, message, self._encode_time(now), provider, refund_id),
            )
            self._log(
                tx,
                [
                    Event(
                        provider,
                        refund_id,
                        now,
                        EventKind.ANSWER,
                        entry.attempt,
                        JournalState.NOT_SENT,
                        owner,
                        {"message": message},
                    )
                ],
            )
        return True

    def committed_refunds(self, provider: str, payment_key: str) -> list[JournalEntry]:
        with self._transaction(write=False) as tx:
            rows = tx.all(
                f"{SELECT} {_COMMITTED_WHERE} ORDER BY created_at, refund_id",
                (provider, payment_key),
            )
        return [self._entry(row) for row in rows]


def _payment_lock(new: NewRefund) -> str:
    """The lock a claim of ``new`` holds: keyed by payment, so claims that could together
    pass the payment's limit queue up."""
    return f"{new.provider}\0{new.payment_key}"


def _claim_event(new: NewRefund, owner: str, lease_seconds: float, now: datetime) -> Event:
    """The event of a claim of ``new`` (the first attempt's, unless the caller makes it
    another's)."""
    return Event(
        new.provider,
        new.refund_id,
        now,
        EventKind.CLAIM,
        1,
        JournalState.SUBMITTING,
        owner,
        {"lease_seconds": lease_seconds},
    )


def _check_outcome(outcome: ResultRecord) -> None:
    if outcome.state not in _RECORDED:
        raise ValueError("record takes PENDING, SUCCEEDED, FAILED, UNKNOWN or NOT_SENT")


def _answered(outcome: ResultRecord, now: datetime) -> Event:
    """The event of the current attempt's own result (with its send, if it sent)."""
    data = answer_data(
        outcome.provider_refund_id,
        outcome.message,
        outcome.error_code,
        outcome.http_status,
        outcome.raw,
    )
    if outcome.sent:
        data[SENT] = True
    return Event(
        outcome.provider,
        outcome.refund_id,
        now,
        EventKind.ANSWER,
        outcome.attempt,
        outcome.state,
        outcome.owner,
        data,
    )
