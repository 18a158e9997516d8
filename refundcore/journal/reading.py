"""Reading refunds over SQL: one refund, lists with filters for people and
monitors, and counts. Nothing here writes."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from ..status import JournalState
from .batch_queue import SqlBatchQueue
from .schema import SELECT, TABLE, UNSETTLED, UNSETTLED_STATES, sql_list
from .values import Backlog, JournalEntry, JournalStats, OldestRefund, StateCount

__all__ = ["SqlReading"]

# OFFSET needs a LIMIT; SQLite knows no LIMIT ALL, and both take a 64-bit bound.
_NO_LIMIT = 2**63 - 1
# The ids an operator may have in hand for a refund: what Journal.entries(search=) matches.
_SEARCHED = (
    "refund_id",
    "payment_id",
    "merchant_reference",
    "transaction_id",
    "provider_refund_id",
)

# Its WHERE is the predicate of the partial index on unsettled rows, so only those are
# read, however many settled ones the journal holds. (Grouped by provider first, SQLite
# would rather walk the whole (provider, payment_key) index for the grouping's order.)
_BACKLOG = (
    "SELECT provider, state, COUNT(*) AS refunds, MIN(created_at) AS oldest "  # noqa: S608
    f"FROM {TABLE} WHERE {UNSETTLED} "
    "GROUP BY state, provider ORDER BY provider, state"
)


class SqlReading(SqlBatchQueue):
    """The read methods of :class:`~refundcore.journal.interface.Journal`, over SQL."""

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

    def backlog(self) -> list[Backlog]:
        with self._transaction(write=False) as tx:
            rows = tx.all(_BACKLOG, ())
        return [
            Backlog(
                provider=row["provider"],
                state=JournalState(row["state"]),
                count=int(row["refunds"]),
                oldest=self._decode_time(row["oldest"]),
            )
            for row in rows
        ]

    def entries(
        self,
        *,
        unsettled: bool = False,
        provider: str | None = None,
        limit: int | None = None,
        states: Collection[JournalState] | None = None,
        created_before: datetime | None = None,
        created_since: datetime | None = None,
        search: str | None = None,
        offset: int = 0,
        newest_first: bool = False,
    ) -> list[JournalEntry]:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        if offset < 0:
            raise ValueError("offset must not be negative")
        where: list[str] = []
        params: list[Any] = []
        if unsettled:
            where.append(UNSETTLED)
        if states is not None:
            # Only members of JournalState reach the SQL text: a stray string is refused.
            wanted = frozenset(JournalState(state) for state in states)
            where.append(f"state IN ({sql_list(JournalState, wanted) or 'NULL'})")
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        if created_before is not None:
            where.append("created_at < ?")
            params.append(self._encode_time(_aware(created_before, "created_before")))
        if created_since is not None:
            where.append("created_at >= ?")
            params.append(self._encode_time(_aware(created_since, "created_since")))
        if search is not None:
            where.append(f"({' OR '.join(f'{column} = ?' for column in _SEARCHED)})")
            params += [search] * len(_SEARCHED)
        sql = SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        order = " DESC" if newest_first else ""
        sql += f" ORDER BY created_at{order}, provider{order}, refund_id{order}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params += [_NO_LIMIT if limit is None else limit, offset]
        with self._transaction(write=False) as tx:
            return [self._entry(row) for row in tx.all(sql, params)]

    def stats(self) -> JournalStats:
        groups = []
        with self._transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT provider, state, COUNT(*) AS n FROM {TABLE} "  # noqa: S608 - constant
                "GROUP BY provider, state"
            )
            order = {state: rank for rank, state in enumerate(JournalState)}
            for row in sorted(rows, key=lambda r: (r["provider"], order[JournalState(r["state"])])):
                state = JournalState(row["state"])
                oldest = None
                if state in UNSETTLED_STATES:
                    first = tx.one(
                        f"SELECT refund_id, created_at FROM {TABLE} "  # noqa: S608 - constant
                        "WHERE provider = ? AND state = ? ORDER BY created_at, refund_id LIMIT 1",
                        (row["provider"], state.value),
                    )
                    if first is not None:
                        oldest = OldestRefund(
                            first["refund_id"], self._decode_time(first["created_at"])
                        )
                groups.append(StateCount(row["provider"], state, int(row["n"]), oldest))
        return JournalStats(tuple(groups))


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value
