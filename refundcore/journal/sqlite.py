"""The SQLite journal: the embedded default, one file shared by the threads and
processes of one machine.

Durability before sending: WAL mode with ``synchronous=FULL``, so a claim's commit is
on disk before the request can leave. The outcome of the claimant's own send is
committed with ``synchronous=NORMAL`` instead (one ``fsync`` a refund, not two): it
survives the process dying at once, and a power cut only from the next claim's or
checkpoint's ``fsync``, which covers everything written before it. Lost to a power
cut, it leaves the row SUBMITTING, which reconciling settles by asking the gateway;
nothing is ever sent twice for it. Every write transaction is ``BEGIN IMMEDIATE``:
it takes the database's single write lock up front, which serialises claims across
threads and processes (a deferred transaction would read first and could then lose
the race to write).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import JournalError
from .base import (
    BATCH_TABLE,
    PARTIAL_PROVIDER_REFUND_ID_INDEX,
    TABLE,
    UNSETTLED_STATES,
    UTC,
    Pool,
    Row,
    SqlJournal,
    Transaction,
    _states,
)

__all__ = ["MEMORY", "SqliteJournal"]

#: The path of a database that lives as long as the journal object (sqlite3's name).
MEMORY = ":memory:"

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE {TABLE} (
            provider TEXT NOT NULL,
            refund_id TEXT NOT NULL,
            operation TEXT NOT NULL,
            payment_id TEXT,
            merchant_reference TEXT,
            transaction_id TEXT,
            amount TEXT,
            currency TEXT,
            reason TEXT,
            notify_url TEXT,
            original_amount TEXT,
            fingerprint TEXT NOT NULL,
            payment_key TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('SUBMITTING', 'PENDING', 'SUCCEEDED', 'FAILED', 'UNKNOWN')),
            provider_refund_id TEXT,
            message TEXT,
            error_code TEXT,
            http_status INTEGER,
            raw TEXT NOT NULL DEFAULT '{{}}',
            attempts INTEGER NOT NULL,
            owner TEXT,
            lease_until TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (provider, refund_id)
        )""",
        f"CREATE INDEX {TABLE}_payment ON {TABLE} (provider, payment_key)",
        f"CREATE INDEX {TABLE}_provider_refund_id ON {TABLE} (provider, provider_refund_id)",
        f"CREATE INDEX {TABLE}_unsettled ON {TABLE} (created_at) "
        f"WHERE state IN ({_states(UNSETTLED_STATES)})",
    ),
    # v2: batch rows, the work queue that workers sharing the journal split a batch by.
    (
        f"""CREATE TABLE {BATCH_TABLE} (
            batch_id TEXT NOT NULL,
            line INTEGER NOT NULL,
            provider TEXT NOT NULL,
            refund_id TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('OPEN', 'CLAIMED', 'DONE')),
            owner TEXT,
            lease_until TEXT,
            outcome TEXT,
            error_code TEXT,
            message TEXT,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (batch_id, line)
        )""",
        f"CREATE INDEX {BATCH_TABLE}_state ON {BATCH_TABLE} (batch_id, state, line)",
    ),
    PARTIAL_PROVIDER_REFUND_ID_INDEX,
)

# sqlite3 error texts, most specific first; the cause is named from what SQLite says
# because the Python exception classes do not tell "read-only" from "full".
_CAUSES = (
    ("readonly", "is read-only"),
    ("disk is full", "is full"),
    ("disk i/o error", "could not be written (disk I/O error)"),
    ("database is locked", "is locked by another writer for too long"),
    ("unable to open", "cannot be opened"),
    ("not a database", "is corrupted or not a SQLite database"),
    ("malformed", "is corrupted"),
)

_dumps = functools.partial(json.dumps, default=str, separators=(",", ":"), sort_keys=True)


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


class _SqliteTransaction(Transaction):
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self._conn.execute(sql, params).fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, params).rowcount


def _reusable(conn: sqlite3.Connection) -> bool:
    return not conn.in_transaction


def _close(conn: sqlite3.Connection) -> None:
    with suppress(sqlite3.Error):
        conn.close()


class SqliteJournal(SqlJournal):
    """A journal in the SQLite file at ``path`` (created, with its parent directories,
    if missing), or in memory for ``":memory:"`` (tests only: it dies with the object).

    ``busy_timeout`` is how long, in seconds, a writer waits for another process's
    write lock before giving up with ``JournalError``.
    """

    _migrations = _MIGRATIONS

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 30.0,
        max_connections: int = 8,
    ) -> None:
        self._path = os.fspath(path)
        self._busy_timeout = busy_timeout
        self._writer = threading.Lock()
        memory = self._path == MEMORY
        self.url = "sqlite://:memory:" if memory else f"sqlite:///{self._path}"
        if not memory:
            self._prepare_path(Path(self._path))
        # Every connection to ":memory:" is a database of its own: keep exactly one.
        self._pool: Pool[sqlite3.Connection] = Pool(
            self.url,
            self._connect,
            _close,
            _reusable,
            size=1 if memory else max_connections,
        )
        self._lazy_pool = (
            self._pool
            if memory
            else Pool(
                self.url,
                functools.partial(self._connect, sync="NORMAL"),
                _close,
                _reusable,
                size=max_connections,
            )
        )
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def _prepare_path(self, path: Path) -> None:
        if path.is_dir():
            raise JournalError(f"journal {self.url} cannot be opened: {path} is a directory")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # mkdir reports a file in the way as "File exists", which reads as success.
            reason = "Not a directory" if isinstance(exc, FileExistsError) else exc.strerror
            raise JournalError(
                f"journal {self.url} cannot be created: {reason or exc}: {exc.filename}"
            ) from exc

    def _connect(self, sync: str = "FULL") -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; _transaction issues BEGIN.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.row_factory = _dict_row
            if self._path != MEMORY:
                _use_wal(conn, self._busy_timeout)
            conn.execute(f"PRAGMA synchronous = {sync}")
        except BaseException:
            _close(conn)
            raise
        return conn

    @contextmanager
    def _transaction(self, *, write: bool, lock: str | None = None) -> Iterator[Transaction]:
        # ``lock`` needs nothing more here: BEGIN IMMEDIATE already serialises writers.
        try:
            with self._writing() if write else nullcontext(), self._pool.connection() as conn:
                if not write:
                    yield _SqliteTransaction(conn)
                    return
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteTransaction(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    # SQLite may already have rolled back (a full disk does that).
                    if conn.in_transaction:
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _alone(
        self, sql: str, params: Sequence[Any], *, lock: str | None = None, sync: bool = True
    ) -> list[Row]:
        # Outside BEGIN, a write statement is a transaction of its own: it waits for the
        # write lock as BEGIN IMMEDIATE would. fetchall steps it to the end, which is
        # when SQLite commits it.
        try:
            with self._writing(), (self._pool if sync else self._lazy_pool).connection() as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold this journal's writer lock.

        SQLite lets one writer in at a time and makes the others poll, sleeping up to
        100 ms between tries: threads of one process queue here instead, each woken
        the moment the writer before it commits. Other processes still meet at
        SQLite's lock.
        """
        if not self._writer.acquire(timeout=self._busy_timeout):
            raise JournalError(
                f"journal {self.url} is locked by another writer for too long: "
                f"waited {self._busy_timeout:g} s"
            )
        try:
            yield
        finally:
            self._writer.release()

    def _error(self, exc: sqlite3.Error) -> JournalError:
        text = str(exc)
        cause = next(
            (cause for needle, cause in _CAUSES if needle in text.lower()), "cannot be used"
        )
        return JournalError(f"journal {self.url} {cause}: {text}")

    def _has_table(self, tx: Transaction, name: str) -> bool:
        found = tx.one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return found is not None

    def _encode_time(self, value: datetime) -> str:
        # ISO 8601 in UTC with fixed microseconds sorts the way the instants do, so
        # ORDER BY created_at is chronological.
        return value.astimezone(UTC).isoformat(timespec="microseconds")

    def _decode_time(self, value: Any) -> datetime:
        return datetime.fromisoformat(value).astimezone(UTC)

    def _encode_amount(self, value: str | None) -> str | None:
        return value

    def _decode_amount(self, value: Any) -> str | None:
        return None if value is None else str(value)

    def _encode_raw(self, value: Mapping[str, Any]) -> str:
        return _dumps(dict(value))

    def _decode_raw(self, value: Any) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(value)
        return decoded

    def close(self) -> None:
        self._pool.close()
        self._lazy_pool.close()


def _use_wal(conn: sqlite3.Connection, patience: float) -> None:
    """Switch a file to WAL mode. The switch needs the file to itself and, unlike other
    statements, does not wait for it: two processes creating one journal at once would
    see "database is locked", so it is retried within the busy timeout."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
