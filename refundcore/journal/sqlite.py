"""The SQLite journal: the embedded default, one file shared by the threads and
processes of one machine.

Durability before sending: WAL mode, and a claim's commit is on disk before the request
can leave. Connections run with ``synchronous=NORMAL``, which writes a commit to the
write-ahead log without an ``fsync``; a claim (every write but the outcome of the
claimant's own send) then syncs the log itself, which is all ``synchronous=FULL`` adds
to a commit in WAL mode, without switching a connection's level (a ``PRAGMA`` that
reads the schema each time) twice a refund. The outcome is not synced (one ``fsync`` a
refund, not two): it survives the process dying at once, and a power cut only from the
next claim's or checkpoint's ``fsync``, which covers everything written before it.
Lost to a power cut, it leaves the row SUBMITTING, which reconciling settles by asking
the gateway; nothing is ever sent twice for it. Every write transaction is ``BEGIN
IMMEDIATE``: it takes the database's single write lock up front, which serialises
claims across threads and processes (a deferred transaction would read first and
could then lose the race to write).

The journal's clock is SQLite's own (``'now'``, read inside the write transaction):
the machine's clock, not the one a Python process may be told. That is one clock only
as long as every writer of the file runs on one machine, which a SQLite file on a
local disk requires anyway; workers on several machines share a PostgreSQL journal.

A file found at the journal's path is always a journal that existed: a new journal is
built under a temporary name and linked into place complete, so a file there that is
empty, cut short, not SQLite or another program's database is an error naming the
file and what to do, never a reason to start an empty journal over it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import JournalError
from .backend import UTC
from .claim_groups import ClaimGroups
from .engine import SqlJournal
from .pool import Pool, Row, Transaction
from .schema import CREATE_SCHEMA_TABLE, SCHEMA_TABLE, SET_SCHEMA_VERSION
from .sqlite_schema import MIGRATIONS
from .urls import MEMORY
from .values import Claim, NewRefund

__all__ = ["SqliteJournal"]

_MAGIC = b"SQLite format 3\x00"
_HEADER_BYTES = 100

# The journal's clock, in the encoding of every stored timestamp (ISO 8601, UTC, fixed
# microseconds: SQLite's own clock counts milliseconds).
_NOW = "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')"
# SQLite reads 'now' once per step of a statement: every use of it in one statement is
# the same instant, so a claim's lease starts exactly at its created_at.
_LATER = "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now', '+' || ? || ' seconds')"

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

# One encoder for every write: json.dumps with options builds a new one each call.
_dumps = json.JSONEncoder(default=str, separators=(",", ":"), sort_keys=True).encode


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


class _Connection(sqlite3.Connection):
    """A connection that keeps the write-ahead log it commits to open, to sync it."""

    #: The log's path, as SQLite opened it (``None`` in memory: no log).
    wal_path: str | None = None
    wal_fd: int | None = None

    def sync_wal(self) -> None:
        """Make every commit written so far durable: ``fsync`` the log this connection
        commits to (it exists while the connection is open, and a checkpoint that
        empties it has synced the database first)."""
        if self.wal_path is None:
            return
        if self.wal_fd is None:
            self.wal_fd = os.open(self.wal_path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        _sync(self.wal_fd)


def _reusable(conn: sqlite3.Connection) -> bool:
    return not conn.in_transaction


def _close(conn: _Connection) -> None:
    with suppress(sqlite3.Error):
        conn.close()
    if conn.wal_fd is not None:
        with suppress(OSError):
            os.close(conn.wal_fd)
        conn.wal_fd = None


class SqliteJournal(SqlJournal):
    """A journal in the SQLite file at ``path`` (created, with its parent directories,
    if missing), or in memory for ``":memory:"`` (tests only: it dies with the object).

    ``busy_timeout`` is how long, in seconds, a writer waits for another process's
    write lock before giving up with ``JournalError``.
    """

    _migrations = MIGRATIONS
    _now_sql = _NOW
    _stamp_sql = _NOW
    _later_sql = _LATER

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
        # One writer at a time: claims of threads that meet here share a commit.
        self._groups = ClaimGroups(
            lambda claims, lease: self.claim_many(claims, lease_seconds=lease),
            url=self.url,
            patience=busy_timeout,
            locked=self._locked,
        )
        if not memory:
            path = Path(self._path)
            self._prepare_path(path)
            if not os.path.lexists(path):
                self._create(path)
            self._check_file(path)
            self._check_journal()
        # Every connection to ":memory:" is a database of its own: keep exactly one.
        self._pool: Pool[_Connection] = Pool(
            self.url,
            self._connect,
            _close,
            _reusable,
            size=1 if memory else max_connections,
        )
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def _create(self, path: Path) -> None:
        """Create the journal at ``path``, which does not exist, all at once.

        It is built complete under a temporary name and linked into place, so ``path``
        never exists half made: a file found there is always a journal that existed,
        and anything wrong with it is an error, never a reason to start afresh.
        Linking fails if another process created the journal first; that one is used.
        """
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.new")
        try:
            conn = sqlite3.connect(temporary, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = FULL")
                conn.execute("BEGIN IMMEDIATE")
                for migration in self._migrations:
                    for statement in migration:
                        conn.execute(statement)
                conn.execute(CREATE_SCHEMA_TABLE)
                conn.execute(SET_SCHEMA_VERSION, (len(self._migrations),))
                conn.execute("COMMIT")
            finally:
                conn.close()
            with suppress(FileExistsError):
                os.link(temporary, path)
            _sync_directory(path.parent)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.url} cannot be created: {exc}") from exc
        except OSError as exc:
            raise JournalError(
                f"journal {self.url} cannot be created: {exc.strerror or exc}: {exc.filename}"
            ) from exc
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with suppress(OSError):
                    os.unlink(f"{temporary}{suffix}")

    def _check_file(self, path: Path) -> None:
        """Refuse a file at the journal's path that cannot be the journal it was:
        empty, cut short, or not SQLite at all."""
        advice = (
            f"restore the journal from a backup, or, if {path} never held refunds, move "
            "it away so a new journal can be created there"
        )
        try:
            size = path.stat().st_size
            with path.open("rb") as file:
                header = file.read(_HEADER_BYTES)
        except OSError as exc:
            raise JournalError(
                f"journal {self.url} cannot be opened: {exc.strerror or exc}: {path}"
            ) from exc
        if size == 0:
            raise JournalError(
                f"journal {self.url} is an empty file (0 bytes), not a journal: a journal "
                f"that existed has lost its content; {advice}"
            )
        if header[: len(_MAGIC)] != _MAGIC[: len(header)]:
            raise JournalError(
                f"journal {self.url} is corrupted or not a SQLite database (it does not "
                f"begin with the SQLite header); {advice}"
            )
        if len(header) < _HEADER_BYTES:
            raise JournalError(
                f"journal {self.url} is truncated: {size} bytes, shorter than a SQLite "
                f"header; {advice}"
            )
        expected = _expected_size(header)
        # A write-ahead log present means a connection may be checkpointing, which
        # grows the file after its header: then SQLite's own checks decide.
        if expected is not None and size < expected and not os.path.exists(f"{path}-wal"):
            raise JournalError(
                f"journal {self.url} is truncated: {size} bytes where its header says "
                f"{expected}; {advice}"
            )

    def _check_journal(self) -> None:
        """Refuse a SQLite database that holds no journal: another program's data. Read
        over a plain connection, which changes nothing in the file (the journal's own
        would switch it to WAL first)."""
        try:
            with closing(sqlite3.connect(self._path, timeout=self._busy_timeout)) as conn:
                names = [
                    row[0]
                    for row in conn.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
                    )
                ]
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        if SCHEMA_TABLE in names:
            return
        found = f"other tables ({', '.join(names)})" if names else "no tables"
        raise JournalError(
            f"journal {self.url} is a SQLite database with {found} and no refundcore "
            "journal in it: point the journal at another path, or restore the journal "
            "that was there from a backup"
        )

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

    def _connect(self) -> _Connection:
        # isolation_level=None: no implicit transactions; _transaction issues BEGIN.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            factory=_Connection,
        )
        try:
            # Rows read by column name, made in C.
            conn.row_factory = sqlite3.Row
            if self._path != MEMORY:
                _use_wal(conn, self._busy_timeout)
                # The file SQLite opened, wherever a relative path pointed when it did.
                main = conn.execute("PRAGMA database_list").fetchone()
                conn.wal_path = f"{main['file']}-wal"
            conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            _close(conn)
            raise
        return conn

    def claim(self, new: NewRefund, *, owner: str, lease_seconds: float = 60.0) -> Claim:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        return self._groups.claim(new, owner, lease_seconds)

    def _locked(self) -> JournalError:
        return JournalError(
            f"journal {self.url} is locked by another writer for too long: "
            f"waited {self._busy_timeout:g} s"
        )

    @contextmanager
    def _transaction(
        self, *, write: bool, lock: str | None = None, sync: bool = True
    ) -> Iterator[Transaction]:
        # ``lock`` needs nothing more here: BEGIN IMMEDIATE already serialises writers.
        # One generator, no nested context managers: this runs twice for every refund.
        if not write:
            try:
                with self._pool.connection() as conn:
                    yield _SqliteTransaction(conn)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            return
        # SQLite lets one writer in at a time and makes the others poll, sleeping up to
        # 100 ms between tries: threads of one process queue on this lock instead, each
        # woken the moment the writer before it commits. Other processes still meet at
        # SQLite's lock.
        if not self._writer.acquire(timeout=self._busy_timeout):
            raise self._locked()
        try:
            conn = self._pool.acquire()
            try:
                # One connection for both kinds of write: a connection's page cache is
                # dropped whenever another connection has written since its last
                # transaction, so a claim and an outcome on two connections each read
                # their pages anew.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SqliteTransaction(conn)
                    conn.execute("COMMIT")
                    if sync:
                        self._sync_log(conn)
                except BaseException:
                    # SQLite may already have rolled back (a full disk does that).
                    if conn.in_transaction:
                        with suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            finally:
                self._pool.release(conn)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._writer.release()

    def _sync_log(self, conn: _Connection) -> None:
        """``fsync`` the log a write was just committed to. If that fails the write may
        not be on disk: the caller must not act on it (a claim left behind is taken
        over once its lease runs out, never sent blindly)."""
        try:
            conn.sync_wal()
        except OSError as exc:
            raise JournalError(
                f"journal {self.url} could not be synced to disk: {exc.strerror or exc}"
            ) from exc

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
        decoded = datetime.fromisoformat(value)
        # Every stamp the journal writes is in UTC already.
        return decoded if decoded.tzinfo is UTC else decoded.astimezone(UTC)

    def _encode_amount(self, value: str | None) -> str | None:
        return value

    def _decode_amount(self, value: Any) -> str | None:
        return None if value is None else str(value)

    def _encode_raw(self, value: Mapping[str, Any]) -> str:
        # The encoder takes only a dict for an object (a read-only view is copied).
        return _dumps(value if type(value) is dict else dict(value))

    def _decode_raw(self, value: Any) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(value)
        return decoded

    def close(self) -> None:
        self._pool.close()


def _expected_size(header: bytes) -> int | None:
    """The file size a SQLite header promises, when it says (pages x page size)."""
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count is valid only while the change counter matches "version-valid-for".
    if pages == 0 or header[24:28] != header[92:96]:
        return None
    return pages * page_size


# What SQLite's synchronous=FULL calls to sync the log: the file's data, and its size
# where it grew, without its times.
_sync = getattr(os, "fdatasync", os.fsync)


def _sync_directory(directory: Path) -> None:
    """Make a new directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
