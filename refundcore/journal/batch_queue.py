"""The batch work queue over SQL: the rows of a batch, claimed by every worker that
shares the journal, so processes on several machines split one batch without doing a
row twice."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from ..status import RefundStatus
from .backend import SqlBackend
from .schema import BATCH_TABLE, COLUMNS, TABLE, sql_list
from .values import (
    SETTLED_OUTCOMES,
    BatchCounts,
    BatchDone,
    BatchEntry,
    BatchItem,
    BatchItemState,
    BatchSummary,
)

__all__ = ["SqlBatchQueue"]

_BATCH_COLUMNS = (
    "batch_id",
    "line",
    "provider",
    "refund_id",
    "state",
    "owner",
    "lease_until",
    "outcome",
    "error_code",
    "message",
    "updated_at",
)
# The refund's columns come prefixed: both tables have provider, state, owner, ...
_BATCH_SELECT = (
    f"SELECT {', '.join(f'b.{name}' for name in _BATCH_COLUMNS)}, "  # noqa: S608 - constants
    f"{', '.join(f'j.{name} AS j_{name}' for name in COLUMNS)} "
    f"FROM {BATCH_TABLE} b LEFT JOIN {TABLE} j "
    "ON j.provider = b.provider AND j.refund_id = b.refund_id "
    "WHERE b.batch_id = ? ORDER BY b.line"
)
_SETTLED = sql_list(RefundStatus, SETTLED_OUTCOMES)
# Rows per INSERT or UPDATE of batch rows: few statements, far below SQLite's limit of
# bound parameters.
_INSERT_ROWS = 200


class SqlBatchQueue(SqlBackend):
    """The batch methods of :class:`~refundcore.journal.interface.Journal`, over SQL."""

    def open_batch(self, batch_id: str, items: Sequence[BatchItem]) -> None:
        # Serialised per batch, so workers opening it together neither deadlock on
        # each other's inserts nor reopen what another has just reopened.
        with self._transaction(write=True, lock=f"batch\0{batch_id}") as tx:
            stamp = self._encode_time(self._clock(tx))
            for start in range(0, len(items), _INSERT_ROWS):
                part = items[start : start + _INSERT_ROWS]
                params: list[Any] = []
                for item in part:
                    params += [batch_id, item.line, item.provider, item.refund_id, stamp]
                tx.run(
                    f"INSERT INTO {BATCH_TABLE} "  # noqa: S608
                    "(batch_id, line, provider, refund_id, state, updated_at) VALUES "
                    + ", ".join(["(?, ?, ?, ?, 'OPEN', ?)"] * len(part))
                    + " ON CONFLICT (batch_id, line) DO NOTHING",
                    params,
                )
            tx.run(
                f"UPDATE {BATCH_TABLE} SET state = 'OPEN', owner = NULL, "  # noqa: S608
                "lease_until = NULL, outcome = NULL, error_code = NULL, message = NULL, "
                "updated_at = ? WHERE batch_id = ? AND state = 'DONE' "
                f"AND outcome NOT IN ({_SETTLED}) AND updated_at < ?",
                (stamp, batch_id, stamp),
            )

    def claim_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        limit: int,
        lease_seconds: float = 60.0,
    ) -> list[int]:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            stamp = self._encode_time(now)
            # Two queries rather than one with OR: each follows the (batch_id, state,
            # line) index instead of walking past every row already done.
            expired = tx.all(
                f"SELECT line FROM {BATCH_TABLE} WHERE batch_id = ? AND state = 'CLAIMED' "  # noqa: S608
                f"AND lease_until <= ? ORDER BY line LIMIT ?{self._skip_locked}",
                (batch_id, stamp, limit),
            )
            lines = [int(row["line"]) for row in expired]
            if len(lines) < limit:
                fresh = tx.all(
                    f"SELECT line FROM {BATCH_TABLE} WHERE batch_id = ? AND state = 'OPEN' "  # noqa: S608
                    f"ORDER BY line LIMIT ?{self._skip_locked}",
                    (batch_id, limit - len(lines)),
                )
                lines += [int(row["line"]) for row in fresh]
            if lines:
                tx.run(
                    f"UPDATE {BATCH_TABLE} SET state = 'CLAIMED', owner = ?, "  # noqa: S608
                    "lease_until = ?, updated_at = ? WHERE batch_id = ? "
                    f"AND line IN ({', '.join('?' * len(lines))})",
                    (
                        owner,
                        self._encode_time(now + timedelta(seconds=lease_seconds)),
                        stamp,
                        batch_id,
                        *lines,
                    ),
                )
        return lines

    def renew_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        lease_seconds: float = 60.0,
    ) -> int:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        with self._transaction(write=True) as tx:
            now = self._clock(tx)
            return tx.run(
                f"UPDATE {BATCH_TABLE} SET lease_until = ? "  # noqa: S608
                "WHERE batch_id = ? AND state = 'CLAIMED' AND owner = ?",
                (self._encode_time(now + timedelta(seconds=lease_seconds)), batch_id, owner),
            )

    def finish_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        done: Sequence[BatchDone],
    ) -> int:
        # Rows with the same outcome (most of a chunk, usually) share one statement.
        groups: dict[tuple[str, str | None, str | None], list[int]] = {}
        for item in done:
            groups.setdefault((item.outcome, item.error_code, item.message), []).append(item.line)
        recorded = 0
        with self._transaction(write=True) as tx:
            stamp = self._encode_time(self._clock(tx))
            for (outcome, error_code, message), lines in groups.items():
                for start in range(0, len(lines), _INSERT_ROWS):
                    part = lines[start : start + _INSERT_ROWS]
                    recorded += tx.run(
                        f"UPDATE {BATCH_TABLE} SET state = 'DONE', outcome = ?, "  # noqa: S608
                        "error_code = ?, message = ?, owner = NULL, lease_until = NULL, "
                        "updated_at = ? WHERE batch_id = ? AND state = 'CLAIMED' AND owner = ? "
                        f"AND line IN ({', '.join('?' * len(part))})",
                        (outcome, error_code, message, stamp, batch_id, owner, *part),
                    )
        return recorded

    def release_batch(self, batch_id: str, *, owner: str) -> int:
        with self._transaction(write=True) as tx:
            return tx.run(
                f"UPDATE {BATCH_TABLE} SET state = 'OPEN', owner = NULL, "  # noqa: S608
                "lease_until = NULL WHERE batch_id = ? AND state = 'CLAIMED' AND owner = ?",
                (batch_id, owner),
            )

    def count_batch(self, batch_id: str) -> BatchCounts:
        with self._transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT state, COUNT(*) AS n FROM {BATCH_TABLE} "  # noqa: S608
                "WHERE batch_id = ? GROUP BY state",
                (batch_id,),
            )
        counts = {str(row["state"]): int(row["n"]) for row in rows}
        return BatchCounts(
            open=counts.get("OPEN", 0),
            claimed=counts.get("CLAIMED", 0),
            done=counts.get("DONE", 0),
        )

    def batch_entries(self, batch_id: str) -> list[BatchEntry]:
        with self._transaction(write=False) as tx:
            rows = tx.all(_BATCH_SELECT, (batch_id,))
        entries = []
        for row in rows:
            refund = None
            if row["j_refund_id"] is not None:
                refund = self._entry({name: row[f"j_{name}"] for name in COLUMNS})
            lease_until = row["lease_until"]
            entries.append(
                BatchEntry(
                    batch_id=row["batch_id"],
                    line=int(row["line"]),
                    provider=row["provider"],
                    refund_id=row["refund_id"],
                    state=BatchItemState(row["state"]),
                    owner=row["owner"],
                    lease_until=None if lease_until is None else self._decode_time(lease_until),
                    outcome=row["outcome"],
                    error_code=row["error_code"],
                    message=row["message"],
                    updated_at=self._decode_time(row["updated_at"]),
                    refund=refund,
                )
            )
        return entries

    def batches(self, *, limit: int | None = None) -> list[BatchSummary]:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        with self._transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT batch_id, state, outcome, COUNT(*) AS n, MAX(updated_at) AS latest "  # noqa: S608
                f"FROM {BATCH_TABLE} GROUP BY batch_id, state, outcome"
            )
        states: dict[str, Counter[str]] = {}
        outcomes: dict[str, Counter[str]] = {}
        latest: dict[str, datetime] = {}
        for row in rows:
            batch_id, count = str(row["batch_id"]), int(row["n"])
            states.setdefault(batch_id, Counter())[str(row["state"])] += count
            tally = outcomes.setdefault(batch_id, Counter())
            if row["state"] == BatchItemState.DONE.value and row["outcome"] is not None:
                tally[str(row["outcome"])] += count
            updated = self._decode_time(row["latest"])
            if batch_id not in latest or updated > latest[batch_id]:
                latest[batch_id] = updated
        summaries = [
            BatchSummary(
                batch_id=batch_id,
                counts=BatchCounts(
                    open=counted["OPEN"], claimed=counted["CLAIMED"], done=counted["DONE"]
                ),
                outcomes=dict(outcomes[batch_id]),
                updated_at=latest[batch_id],
            )
            for batch_id, counted in states.items()
        ]
        summaries.sort(key=lambda summary: (summary.updated_at, summary.batch_id), reverse=True)
        return summaries if limit is None else summaries[:limit]
