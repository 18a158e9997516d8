"""The journal's rules over SQL, shared by the SQLite and PostgreSQL backends.

The rules live once, in :class:`SqlJournal`; a backend only supplies connections,
transactions, column encodings and its schema (:class:`~.backend.SqlBackend`), so
SQLite and PostgreSQL cannot drift apart on what a claim or a callback does. The batch
work queue's rules come from :class:`~.batch_queue.SqlBatchQueue`.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import attrs

from ..errors import JournalError
from ..status import JournalState
from .backend import utc_now
from .batch_queue import SqlBatchQueue
from .pool import Transaction
from .schema import COLUMNS, SELECT, TABLE, UNSETTLED_STATES, sql_list
from .values import Claim, ClaimVerdict, JournalEntry, NewRefund, ResultRecord

__all__ = ["SqlJournal"]

# How much a state knows; a row only ever moves to a state of higher rank, so a late or
# repeated report can never undo a better-informed one.
_RANK = {
    JournalState.SUBMITTING: 0,
    JournalState.UNKNOWN: 1,
    JournalState.PENDING: 2,
    JournalState.SUCCEEDED: 3,
    JournalState.FAILED: 3,
}

#: States whose amount is committed: the money has left or may have left.
COMMITTED_STATES = frozenset(
    {JournalState.SUBMITTING, JournalState.PENDING, JournalState.SUCCEEDED, JournalState.UNKNOWN}
)
# States the gateway has answered with: a claim finds such a row DONE, and a callback
# moves a row only to one of them.
_ANSWERED = frozenset({JournalState.PENDING, JournalState.SUCCEEDED, JournalState.FAILED})

_NEW_COLUMNS = tuple(attrs.fields_dict(NewRefund))
_KEY = "WHERE provider = ? AND refund_id = ?"
_new_values = operator.attrgetter(*_NEW_COLUMNS)
_AMOUNT = _NEW_COLUMNS.index("amount")
_ORIGINAL = _NEW_COLUMNS.index("original_amount")
_INSERTED = (
    *_NEW_COLUMNS,
    "state",
    "raw",
    "attempts",
    "owner",
    "lease_until",
    "created_at",
    "updated_at",
)
# RETURNING: a row back means this claim inserted it.
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(_INSERTED)}) "  # noqa: S608 - constant names
    f"VALUES ({', '.join('?' * len(_INSERTED))}) "
    "ON CONFLICT (provider, refund_id) DO NOTHING RETURNING refund_id"
)
# The outcome of the claimant's own send: its row is SUBMITTING and owned by it, and
# every outcome ranks above SUBMITTING, so nothing needs reading first.
_RECORD_OWN_ONLY = (
    f"UPDATE {TABLE} SET state = ?, "  # noqa: S608 - constant names
    "provider_refund_id = COALESCE(?, provider_refund_id), message = ?, error_code = ?, "
    "http_status = ?, raw = COALESCE(?, raw), owner = NULL, lease_until = NULL, "
    f"updated_at = ? {_KEY} AND owner = ? AND state = 'SUBMITTING'"
)
_RECORD_OWN = f"{_RECORD_OWN_ONLY} RETURNING {', '.join(COLUMNS)}"
_RECORD_OWN_ACK = f"{_RECORD_OWN_ONLY} RETURNING 1"
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
        currency=new.currency,
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
        attempts=1,
        owner=owner,
        lease_until=lease_until,
        created_at=now,
        updated_at=now,
    )


class SqlJournal(SqlBatchQueue):
    """The journal's rules for refunds over SQL; a backend subclasses it and supplies
    what :class:`~.backend.SqlBackend` asks for."""

    def _committed(self, tx: Transaction, new: NewRefund, limit: Decimal) -> Decimal:
        """What is already refunded or on its way for ``new``'s payment."""
        rows = tx.all(_COMMITTED, (new.provider, new.payment_key))
        total = limit * 0  # keeps the currency's decimals: "0.00", not "0"
        for row in rows:
            if row["currency"] is not None and new.currency not in (None, row["currency"]):
                continue
            # A void without amount reversed the whole payment.
            amount = self._decode_amount(row["amount"]) or self._decode_amount(
                row["original_amount"]
            )
            total += limit if amount is None else Decimal(amount)
        return total

    def _new_row(
        self, new: NewRefund, owner: str, lease_until: datetime, now: datetime
    ) -> list[Any]:
        """The values of :data:`_INSERT` for a claim of ``new``."""
        values = list(_new_values(new))
        values[_AMOUNT] = self._encode_amount(new.amount)
        values[_ORIGINAL] = self._encode_amount(new.original_amount)
        stamp = self._encode_time(now)
        values += (
            JournalState.SUBMITTING.value,
            self._encode_raw({}),
            1,
            owner,
            self._encode_time(lease_until),
            stamp,
            stamp,
        )
        return values

    # -- the interface --------------------------------------------------------------

    def claim(
        self,
        new: NewRefund,
        *,
        owner: str,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
    ) -> Claim:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        now = utc_now(now)
        lease_until = now + timedelta(seconds=lease_seconds)
        # Keyed by payment: claims that could together pass the payment's limit queue up.
        lock = f"{new.provider}\0{new.payment_key}"
        # No limit to check: the insert alone decides, one statement for the common case
        # of a fresh refund id; anything else takes the path below.
        if new.original_amount is None and self._alone(
            _INSERT, self._new_row(new, owner, lease_until, now), lock=lock
        ):
            return Claim(ClaimVerdict.NEW, _inserted_entry(new, owner, lease_until, now))
        with self._transaction(write=True, lock=lock) as tx:
            entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
            if entry is None:
                if new.original_amount is not None:
                    limit = Decimal(new.original_amount)
                    committed = self._committed(tx, new, limit)
                    wanted = limit if new.amount is None else Decimal(new.amount)
                    if committed + wanted > limit:
                        return Claim(ClaimVerdict.OVER_LIMIT, None, refunded=f"{committed:f}")
                # ON CONFLICT: a claim of the same refund id for another payment holds
                # another lock; whoever inserts second finds the row below instead.
                if tx.all(_INSERT, self._new_row(new, owner, lease_until, now)):
                    # The row is exactly what was written: no need to read it back on
                    # the path every refund takes.
                    return Claim(ClaimVerdict.NEW, _inserted_entry(new, owner, lease_until, now))
                entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
                if entry is None:  # pragma: no cover - the insert found it there
                    raise JournalError(f"journal {self.url} lost refund {new.refund_id!r}")
            if entry.fingerprint != new.fingerprint:
                return Claim(ClaimVerdict.CONFLICT, entry)
            if entry.state in _ANSWERED:
                return Claim(ClaimVerdict.DONE, entry)
            if entry.lease_until is not None and entry.lease_until > now:
                return Claim(ClaimVerdict.BUSY, entry)
            tx.run(
                f"UPDATE {TABLE} SET owner = ?, lease_until = ?, attempts = attempts + 1, "  # noqa: S608
                f"updated_at = ? {_KEY}",
                (
                    owner,
                    self._encode_time(lease_until),
                    self._encode_time(now),
                    new.provider,
                    new.refund_id,
                ),
            )
            return Claim(ClaimVerdict.TAKEOVER, self._refetch(tx, new.provider, new.refund_id))

    def record(
        self,
        provider: str,
        refund_id: str,
        *,
        owner: str,
        state: JournalState,
        provider_refund_id: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        raw: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> JournalEntry:
        state = JournalState(state)
        if state is JournalState.SUBMITTING:
            raise ValueError("record takes PENDING, SUCCEEDED, FAILED or UNKNOWN")
        now = utc_now(now)
        own = ResultRecord(
            provider,
            refund_id,
            owner,
            state,
            provider_refund_id,
            message,
            error_code,
            http_status,
            raw,
        )
        # Lost to a power cut, the row is still SUBMITTING and a reconcile asks the
        # gateway: the claim, not the outcome, is what keeps money from going twice.
        recorded = self._alone(_RECORD_OWN, self._own_outcome(own, now), sync=False)
        if recorded:
            return self._entry(recorded[0])
        return self._record_by_rules(own, now)

    def _record_by_rules(self, outcome: ResultRecord, now: datetime) -> JournalEntry:
        """:meth:`record` for a row that is not, or no longer, its owner's SUBMITTING row:
        a final row stays, a live lease of another owner refuses, a less-informed state
        only gives the lease back."""
        provider, refund_id, owner, state = (o := outcome).provider, o.refund_id, o.owner, o.state
        with self._transaction(write=True) as tx:
            entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None:
                raise JournalError(
                    f"journal {self.url} has no refund {refund_id!r} of {provider!r} to record"
                )
            if entry.state.is_final:
                return entry
            if (
                entry.owner not in (None, owner)
                and entry.lease_until is not None
                and entry.lease_until > now
            ):
                raise JournalError(
                    f"journal {self.url}: refund {refund_id!r} is leased by another owner "
                    f"until {entry.lease_until.isoformat()}; {owner!r} may not record it"
                )
            if _RANK[state] < _RANK[entry.state]:
                # E.g. a query answering UNKNOWN for a refund already PENDING: keep what
                # is known, only give the lease back.
                tx.run(
                    f"UPDATE {TABLE} SET owner = NULL, lease_until = NULL, updated_at = ? "  # noqa: S608
                    + _KEY,
                    (self._encode_time(now), provider, refund_id),
                )
                return self._refetch(tx, provider, refund_id)
            return self._write_outcome(tx, entry, o, now)

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

    def _own_outcome(self, outcome: ResultRecord, now: datetime) -> tuple[Any, ...]:
        """The values of :data:`_RECORD_OWN_ONLY` for ``outcome``."""
        raw = outcome.raw
        return (
            outcome.state.value,
            outcome.provider_refund_id,
            outcome.message,
            outcome.error_code,
            outcome.http_status,
            None if raw is None else self._encode_raw(raw),
            self._encode_time(now),
            outcome.provider,
            outcome.refund_id,
            outcome.owner,
        )

    def record_many(self, outcomes: Sequence[ResultRecord], *, now: datetime | None = None) -> None:
        for outcome in outcomes:
            if outcome.state is JournalState.SUBMITTING:
                raise ValueError("record takes PENDING, SUCCEEDED, FAILED or UNKNOWN")
        now = utc_now(now)
        others = []
        if len(outcomes) == 1:
            # One outcome is one statement, as durable as record makes it, without
            # reading the row back: the way a client records the refund it just sent.
            if not self._alone(_RECORD_OWN_ACK, self._own_outcome(outcomes[0], now), sync=False):
                others.append(outcomes[0])
        elif outcomes:
            with self._transaction(write=True) as tx:
                for outcome in outcomes:
                    if not tx.run(_RECORD_OWN_ONLY, self._own_outcome(outcome, now)):
                        others.append(outcome)
        # Not a SUBMITTING row of its owner any more (a callback or a takeover came
        # first): record's own rules decide, one at a time, as rarely as that happens.
        for outcome in others:
            self._record_by_rules(outcome, now)

    def abandon(self, provider: str, refund_id: str, *, owner: str) -> bool:
        with self._transaction(write=True) as tx:
            # A taken-over row (attempts > 1) may have been sent by an earlier attempt:
            # it must stay, whatever this attempt managed.
            removed = tx.run(
                f"DELETE FROM {TABLE} {_KEY} AND owner = ? AND state = ? AND attempts = 1",  # noqa: S608
                (provider, refund_id, owner, JournalState.SUBMITTING.value),
            )
        return bool(removed)

    def apply_notification(
        self,
        provider: str,
        *,
        state: JournalState,
        refund_id: str | None = None,
        provider_refund_id: str | None = None,
        raw: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> JournalEntry | None:
        state = JournalState(state)
        now = utc_now(now)
        with self._transaction(write=True) as tx:
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
            advances = state in _ANSWERED and _RANK[state] > _RANK[entry.state]
            fills_id = entry.provider_refund_id is None and provider_refund_id is not None
            if not advances and not fills_id:
                return entry
            new_state = state if advances else entry.state
            # A final row has nothing left to submit: its lease means nothing any more.
            final = new_state.is_final
            lease_until = None if final or entry.lease_until is None else entry.lease_until
            tx.run(
                f"UPDATE {TABLE} SET state = ?, "  # noqa: S608
                "provider_refund_id = COALESCE(provider_refund_id, ?), raw = ?, "
                f"owner = ?, lease_until = ?, updated_at = ? {_KEY}",
                (
                    new_state.value,
                    provider_refund_id,
                    self._encode_raw(raw if advances and raw is not None else entry.raw),
                    None if final else entry.owner,
                    None if lease_until is None else self._encode_time(lease_until),
                    self._encode_time(now),
                    entry.provider,
                    entry.refund_id,
                ),
            )
            return self._refetch(tx, entry.provider, entry.refund_id)

    def get(self, provider: str, refund_id: str) -> JournalEntry | None:
        with self._transaction(write=False) as tx:
            return self._fetch(tx, provider, refund_id, lock=False)

    def find_by_provider_refund_id(
        self, provider: str, provider_refund_id: str
    ) -> JournalEntry | None:
        with self._transaction(write=False) as tx:
            row = tx.one(
                f"{SELECT} WHERE provider = ? AND provider_refund_id = ? "
                "ORDER BY created_at, refund_id LIMIT 1",
                (provider, provider_refund_id),
            )
            return None if row is None else self._entry(row)

    def committed_refunds(self, provider: str, payment_key: str) -> list[JournalEntry]:
        with self._transaction(write=False) as tx:
            rows = tx.all(
                f"{SELECT} {_COMMITTED_WHERE} ORDER BY created_at, refund_id",
                (provider, payment_key),
            )
        return [self._entry(row) for row in rows]

    def entries(
        self, *, unsettled: bool = False, provider: str | None = None, limit: int | None = None
    ) -> list[JournalEntry]:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        where: list[str] = []
        params: list[Any] = []
        if unsettled:
            where.append(f"state IN ({sql_list(JournalState, UNSETTLED_STATES)})")
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        sql = SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at, provider, refund_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._transaction(write=False) as tx:
            return [self._entry(row) for row in tx.all(sql, params)]
