"""Batch manifests in a PostgreSQL journal: what a batch asks for, row by row, kept in
the journal's database so that workers on other machines (a task queue's) can send a
row knowing only its batch id and line.

A manifest is written once per batch (writing it again changes nothing): a header (a
JSON object: the batch's settings) and one JSON object per line (the row, or its
problems). Its rows are claimed one at a time by line in the journal's batch work
queue (:mod:`.batch_queue`'s table), under a lease on the journal's clock, so two
deliveries of the same row never work on it together.

PostgreSQL only: a manifest is for workers on several machines, which a SQLite file
cannot serve. The tables are created on first use, beside the journal's own schema.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import ConfigError
from .interface import Journal
from .schema import BATCH_TABLE, SCHEMA_TABLE

if TYPE_CHECKING:
    from .postgres import PostgresJournal

__all__ = ["BatchManifests", "ManifestRow", "RowClaim", "RowVerdict", "postgres_journal"]

MANIFEST_TABLE = "refundcore_batch_manifests"
MANIFEST_ROWS_TABLE = "refundcore_batch_manifest_rows"

_TABLES = (
    f"""CREATE TABLE IF NOT EXISTS {MANIFEST_TABLE} (
        batch_id TEXT PRIMARY KEY,
        data JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    f"""CREATE TABLE IF NOT EXISTS {MANIFEST_ROWS_TABLE} (
        batch_id TEXT NOT NULL,
        line INTEGER NOT NULL,
        data JSONB NOT NULL,
        PRIMARY KEY (batch_id, line)
    )""",
)
# Rows per INSERT: few statements, far below PostgreSQL's limit of bound parameters.
_INSERT_ROWS = 500


def postgres_journal(journal: Journal | None, purpose: str) -> PostgresJournal:
    """``journal`` if it is a PostgreSQL one; ``ConfigError`` (field ``journal``) saying
    that ``purpose`` needs one otherwise."""
    url = "none" if journal is None else journal.url
    if journal is not None and url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresJournal

        if isinstance(journal, PostgresJournal):
            return journal
    raise ConfigError(
        f"{purpose} needs a PostgreSQL journal (--journal postgresql://…), which workers "
        f"on every machine share; the journal is {url}",
        field="journal",
    )


class RowVerdict(str, enum.Enum):
    """What claiming one row by line found. ``CLAIMED``: it is this caller's until its
    lease ends. ``DONE``: its outcome is recorded. ``BUSY``: another delivery holds it
    (:attr:`RowClaim.wait` seconds of lease left). ``MISSING``: no such row."""

    CLAIMED = "CLAIMED"
    DONE = "DONE"
    BUSY = "BUSY"
    MISSING = "MISSING"


@attrs.frozen
class RowClaim:
    """The verdict of :meth:`BatchManifests.claim_row`, with the row's refund id and
    recorded outcome (for DONE) and, for BUSY, the seconds its holder's lease has left."""

    verdict: RowVerdict
    refund_id: str | None = None
    outcome: str | None = None
    wait: float = 0.0


@attrs.frozen
class ManifestRow:
    """One line of a manifest: whatever the batch stored for it (a JSON object)."""

    line: int
    data: dict[str, Any]


class BatchManifests:
    """The manifests and row claims of the PostgreSQL journal ``journal``."""

    def __init__(self, journal: PostgresJournal) -> None:
        self._journal = journal
        # The journal's own transactions: one pool, one clock, its error wording.
        self._transaction = journal._transaction
        with self._transaction(write=True, lock=SCHEMA_TABLE) as tx:
            for statement in _TABLES:
                tx.run(statement)

    @property
    def journal(self) -> PostgresJournal:
        """The journal the manifests are kept in."""
        return self._journal

    def write(self, batch_id: str, header: Mapping[str, Any], rows: Iterable[ManifestRow]) -> bool:
        """Store a batch's manifest; False (nothing changed) if it has one already: a
        batch id is a hash of its rows, so the rows are the same."""
        with self._transaction(write=True, lock=f"manifest\0{batch_id}") as tx:
            if tx.one(f"SELECT 1 FROM {MANIFEST_TABLE} WHERE batch_id = ?", (batch_id,)):  # noqa: S608
                return False
            stamp = self._journal._clock(tx)
            tx.run(
                f"INSERT INTO {MANIFEST_TABLE} (batch_id, data, created_at) VALUES (?, ?, ?)",  # noqa: S608
                (batch_id, self._journal._encode_raw(header), stamp),
            )
            part: list[ManifestRow] = []
            for row in rows:
                part.append(row)
                if len(part) >= _INSERT_ROWS:
                    self._insert(tx, batch_id, part)
                    part = []
            if part:
                self._insert(tx, batch_id, part)
        return True

    def _insert(self, tx: Any, batch_id: str, rows: list[ManifestRow]) -> None:
        params: list[Any] = []
        for row in rows:
            params += [batch_id, row.line, self._journal._encode_raw(row.data)]
        tx.run(
            f"INSERT INTO {MANIFEST_ROWS_TABLE} (batch_id, line, data) VALUES "  # noqa: S608
            + ", ".join(["(?, ?, ?)"] * len(rows)),
            params,
        )

    def header(self, batch_id: str) -> dict[str, Any] | None:
        """The manifest's header, or ``None`` if the journal has no such batch."""
        with self._transaction(write=False) as tx:
            found = tx.one(f"SELECT data FROM {MANIFEST_TABLE} WHERE batch_id = ?", (batch_id,))  # noqa: S608
        return None if found is None else self._journal._decode_raw(found["data"])

    def row(self, batch_id: str, line: int) -> ManifestRow | None:
        """One line of the manifest."""
        with self._transaction(write=False) as tx:
            found = tx.one(
                f"SELECT data FROM {MANIFEST_ROWS_TABLE} WHERE batch_id = ? AND line = ?",  # noqa: S608
                (batch_id, line),
            )
        return (
            None if found is None else ManifestRow(line, self._journal._decode_raw(found["data"]))
        )

    def rows(self, batch_id: str, *, page: int = 500) -> Iterator[list[ManifestRow]]:
        """Every line of the manifest, in order, a page at a time."""
        decode = self._journal._decode_raw
        for found in self._pages(
            f"SELECT line, data FROM {MANIFEST_ROWS_TABLE} "  # noqa: S608
            "WHERE batch_id = ? AND line > ? ORDER BY line LIMIT ?",
            batch_id,
            page,
        ):
            yield [ManifestRow(int(r["line"]), decode(r["data"])) for r in found]

    def unfinished_lines(self, batch_id: str, *, page: int = 500) -> Iterator[list[int]]:
        """The lines of the batch's work queue that are not DONE, a page at a time."""
        for found in self._pages(
            f"SELECT line FROM {BATCH_TABLE} WHERE batch_id = ? AND line > ? "  # noqa: S608
            "AND state <> 'DONE' ORDER BY line LIMIT ?",
            batch_id,
            page,
        ):
            yield [int(r["line"]) for r in found]

    def _pages(self, sql: str, batch_id: str, page: int) -> Iterator[list[Any]]:
        """The rows ``sql`` selects for ``batch_id``, ordered by line, a page per
        transaction: each page starts after the last line of the one before."""
        after = 0
        while True:
            with self._transaction(write=False) as tx:
                found = tx.all(sql, (batch_id, after, page))
            if not found:
                return
            yield found
            after = int(found[-1]["line"])

    def claim_row(self, batch_id: str, line: int, *, owner: str, lease_seconds: float) -> RowClaim:
        """Claim one row of the work queue for ``owner`` under a lease (one that another
        holder's lease ran out on included); see :class:`RowVerdict`."""
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        journal = self._journal
        with self._transaction(write=True) as tx:
            found = tx.one(
                f"SELECT refund_id, state, lease_until, outcome FROM {BATCH_TABLE} "  # noqa: S608
                "WHERE batch_id = ? AND line = ? FOR UPDATE",
                (batch_id, line),
            )
            if found is None:
                return RowClaim(RowVerdict.MISSING)
            refund_id = str(found["refund_id"])
            if found["state"] == "DONE":
                return RowClaim(RowVerdict.DONE, refund_id, found["outcome"])
            now = journal._clock(tx)
            if found["state"] == "CLAIMED":
                until = journal._decode_time(found["lease_until"])
                if until > now:
                    return RowClaim(RowVerdict.BUSY, refund_id, wait=(until - now).total_seconds())
            tx.run(
                f"UPDATE {BATCH_TABLE} SET state = 'CLAIMED', owner = ?, lease_until = ?, "  # noqa: S608
                "updated_at = ? WHERE batch_id = ? AND line = ?",
                (owner, now + timedelta(seconds=lease_seconds), now, batch_id, line),
            )
        return RowClaim(RowVerdict.CLAIMED, refund_id)

    def release_row(self, batch_id: str, line: int, *, owner: str) -> bool:
        """Give back a row ``owner`` holds (nothing was sent): OPEN again."""
        with self._transaction(write=True) as tx:
            return bool(
                tx.run(
                    f"UPDATE {BATCH_TABLE} SET state = 'OPEN', owner = NULL, "  # noqa: S608
                    "lease_until = NULL WHERE batch_id = ? AND line = ? "
                    "AND state = 'CLAIMED' AND owner = ?",
                    (batch_id, line, owner),
                )
            )

    def outcomes(self, batch_id: str) -> dict[str, int]:
        """The batch's rows by state (``OPEN``, ``CLAIMED``) and, once DONE, by recorded
        outcome (``SUCCEEDED``, ``ERROR``, ...)."""
        with self._transaction(write=False) as tx:
            found = tx.all(
                f"SELECT CASE WHEN state = 'DONE' THEN outcome ELSE state END AS what, "  # noqa: S608
                f"COUNT(*) AS n FROM {BATCH_TABLE} WHERE batch_id = ? GROUP BY 1",
                (batch_id,),
            )
        return {str(row["what"]): int(row["n"]) for row in found}

    def stale_rows(self, *, open_for: float | None, limit: int = 1000) -> list[tuple[str, int]]:
        """Rows of manifested batches that a sweep should enqueue again: CLAIMED under a
        lease that ran out (their worker died), and OPEN ones untouched for
        ``open_for`` seconds (their message may be lost), if given."""
        with self._transaction(write=True) as tx:
            now = self._journal._clock(tx)
            where = "(b.state = 'CLAIMED' AND b.lease_until <= ?)"
            params: list[Any] = [now]
            if open_for is not None:
                where += " OR (b.state = 'OPEN' AND b.updated_at <= ?)"
                params.append(now - timedelta(seconds=open_for))
            found = tx.all(
                f"SELECT b.batch_id, b.line FROM {BATCH_TABLE} b "  # noqa: S608
                f"JOIN {MANIFEST_TABLE} m ON m.batch_id = b.batch_id "
                f"WHERE {where} ORDER BY b.batch_id, b.line LIMIT ?",
                (*params, limit),
            )
            rows = [(str(r["batch_id"]), int(r["line"])) for r in found]
            # Touched, so the next sweep does not enqueue them again at once.
            for batch_id, line in rows:
                tx.run(
                    f"UPDATE {BATCH_TABLE} SET updated_at = ? "  # noqa: S608
                    "WHERE batch_id = ? AND line = ? AND state = 'OPEN'",
                    (now, batch_id, line),
                )
        return rows
