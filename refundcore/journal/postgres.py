"""The PostgreSQL journal: one database shared by several app servers or workers.

Needs psycopg 3 (``pip install 'psycopg[binary]>=3.1'``); this module is imported only
when a ``postgresql://`` journal is opened.

Concurrency: every write is one transaction at READ COMMITTED. A claim first takes a
transaction-scoped advisory lock on a hash of ``(provider, payment_key)``, so claims for
one payment (the same refund id, or different ones that share the payment's limit)
run one after the other on every machine; the row is then read ``FOR UPDATE``, and a
new one inserted with ``ON CONFLICT DO NOTHING`` in case the same refund id is claimed
for another payment at the same moment. Outcomes and callbacks lock only their row.
Batch rows are claimed ``FOR UPDATE SKIP LOCKED``: workers claiming at the same moment
each get other rows instead of queueing behind one another.

The journal's clock is the server's ``clock_timestamp()``, read inside each write
transaction once its locks are held: leases are set and compared on it, so workers
whose own clocks are minutes apart agree on when a lease runs out.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb

from ..errors import ConfigError, JournalError
from ..status import JournalState
from .backend import UTC
from .dsn import mask_dsn
from .engine import SqlJournal
from .pool import Pool, Row, Transaction
from .schema import (
    BATCH_TABLE,
    EVENT_KIND_CHECK,
    EVENTS_INDEX,
    EVENTS_TABLE,
    PARTIAL_PROVIDER_REFUND_ID_INDEX,
    TABLE,
    UNSETTLED_STATES,
    V4_STATE_CHECK,
    V6_FOLD_INDEX,
    sql_list,
    v6_fold_backfill,
)

__all__ = ["PostgresJournal"]

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE {TABLE} (
            provider TEXT NOT NULL,
            refund_id TEXT NOT NULL,
            operation TEXT NOT NULL,
            payment_id TEXT,
            merchant_reference TEXT,
            transaction_id TEXT,
            amount NUMERIC,
            currency TEXT,
            reason TEXT,
            notify_url TEXT,
            original_amount NUMERIC,
            fingerprint TEXT NOT NULL,
            payment_key TEXT NOT NULL,
            state TEXT NOT NULL
                CHECK (state IN ('SUBMITTING', 'PENDING', 'SUCCEEDED', 'FAILED', 'UNKNOWN')),
            provider_refund_id TEXT,
            message TEXT,
            error_code TEXT,
            http_status INTEGER,
            raw JSONB NOT NULL DEFAULT '{{}}',
            attempts INTEGER NOT NULL,
            owner TEXT,
            lease_until TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (provider, refund_id)
        )""",
        f"CREATE INDEX {TABLE}_payment ON {TABLE} (provider, payment_key)",
        f"CREATE INDEX {TABLE}_provider_refund_id ON {TABLE} (provider, provider_refund_id)",
        f"CREATE INDEX {TABLE}_unsettled ON {TABLE} (created_at) "
        f"WHERE state IN ({sql_list(JournalState, UNSETTLED_STATES)})",
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
            lease_until TIMESTAMPTZ,
            outcome TEXT,
            error_code TEXT,
            message TEXT,
            updated_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (batch_id, line)
        )""",
        f"CREATE INDEX {BATCH_TABLE}_state ON {BATCH_TABLE} (batch_id, state, line)",
    ),
    PARTIAL_PROVIDER_REFUND_ID_INDEX,
    # v4: NOT_SENT, the attempt (fencing token), operators' decisions, and each
    # refund's history.
    (
        f"ALTER TABLE {TABLE} RENAME COLUMN attempts TO attempt",
        f"ALTER TABLE {TABLE} ADD COLUMN decided_by TEXT",
        f"ALTER TABLE {TABLE} DROP CONSTRAINT {TABLE}_state_check",
        f"ALTER TABLE {TABLE} ADD CONSTRAINT {TABLE}_state_check {V4_STATE_CHECK}",
        f"""CREATE TABLE {EVENTS_TABLE} (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            provider TEXT NOT NULL,
            refund_id TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            kind TEXT NOT NULL {EVENT_KIND_CHECK},
            attempt INTEGER NOT NULL,
            state TEXT,
            actor TEXT,
            data JSONB NOT NULL
        )""",
        EVENTS_INDEX,
    ),
    # v5 rewrites SQLite's checks and its partial index on unsettled refunds, which
    # SQLite evaluated slowly; PostgreSQL's stay as they are.
    (),
    # v6: a callback delivered again and again is counted on one event, not appended
    # each time (see the SQLite schema's v6). BIGINT: a replay at 10,000 a second would
    # run an INTEGER out in under three days, and the callback then past recording.
    (
        f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN fold TEXT",
        f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN times BIGINT NOT NULL DEFAULT 1",
        f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN last_at TIMESTAMPTZ",
        v6_fold_backfill("data ->> 'provider_refund_id'"),
        V6_FOLD_INDEX,
    ),
)

# One encoder for every write: json.dumps with options builds a new one each call.
_dumps = json.JSONEncoder(default=str, separators=(",", ":"), sort_keys=True).encode

Connection = psycopg.Connection[DictRow]


@functools.lru_cache(maxsize=64)
def _placeholders(sql: str) -> str:
    # The shared SQL uses "?"; it never contains "?" or "%" otherwise.
    return sql.replace("?", "%s")


def _lock_id(key: str) -> int:
    """A stable 64-bit advisory lock id: the same on every machine and process."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class _PostgresTransaction(Transaction):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._conn.execute(_placeholders(sql), params or None).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return list(self._conn.execute(_placeholders(sql), params or None).fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(_placeholders(sql), params or None).rowcount


def _close(conn: Connection) -> None:
    with suppress(psycopg.Error):
        conn.close()


def _reusable(conn: Connection) -> bool:
    return not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE


class PostgresJournal(SqlJournal):
    """A journal in the PostgreSQL database at ``url`` (``postgresql://user:pw@host/db``;
    any libpq parameter may be added as a query parameter).

    Keeps up to ``max_connections`` connections, one per concurrently working thread.
    ``connect_timeout`` (seconds) applies unless the URL sets its own.
    """

    _migrations = _MIGRATIONS
    # clock_timestamp(), not now(): now() is when the transaction began, before any
    # lock it waited for.
    _now_sql = "clock_timestamp()"
    # Inside a writing statement: the time it arrived, after the statements before it
    # took their locks (the claim's advisory lock); clock_timestamp() would differ
    # between two uses in one statement.
    _stamp_sql = "statement_timestamp()"
    _later_sql = "statement_timestamp() + ? * interval '1 second'"
    _for_update = " FOR UPDATE"
    _skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str, *, max_connections: int = 10, connect_timeout: int = 5) -> None:
        self.url = mask_dsn(url)
        self._conninfo = url
        try:
            password = urlsplit(url).password or ""
        except ValueError as exc:
            raise ConfigError(
                f"{self.url} is not a valid PostgreSQL URL: {exc}", field="journal"
            ) from exc
        # Both spellings: libpq's messages may quote the URL as given or decoded.
        self._secrets = {secret for secret in (password, unquote(password)) if secret}
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigError(
                f"{self.url} is not a valid PostgreSQL URL: {self._scrub(str(exc))}",
                field="journal",
            ) from exc
        if params.get("password"):
            self._secrets.add(str(params["password"]))
        self._connect_options: dict[str, Any] = (
            {} if "connect_timeout" in params else {"connect_timeout": connect_timeout}
        )
        self._pool: Pool[Connection] = Pool(
            self.url, self._connect, _close, _reusable, size=max_connections
        )
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def _connect(self) -> Connection:
        # autocommit: reads need no transaction, writes open one explicitly.
        return psycopg.connect(
            self._conninfo, autocommit=True, row_factory=dict_row, **self._connect_options
        )

    @contextmanager
    def _transaction(
        self, *, write: bool, lock: str | None = None, sync: bool = True
    ) -> Iterator[Transaction]:
        try:
            with self._pool.connection() as conn:
                if not write:
                    yield _PostgresTransaction(conn)
                    return
                with conn.transaction():
                    tx = _PostgresTransaction(conn)
                    if lock is not None:
                        self._hold(tx, lock)
                    yield tx
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    def _hold(self, tx: Transaction, key: str) -> None:
        tx.run("SELECT pg_advisory_xact_lock(?)", (_lock_id(key),))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())

    def _error(self, exc: psycopg.Error) -> JournalError:
        if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            cause = "is read-only"
        elif isinstance(exc, pg_errors.DiskFull):
            cause = "is full"
        elif isinstance(exc, pg_errors.InsufficientPrivilege):
            cause = "refused access"
        elif isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            # No SQLSTATE: the server never answered (refused, timed out, dropped).
            cause = "is unreachable"
        else:
            cause = "cannot be used"
        return JournalError(f"journal {self.url} {cause}: {self._scrub(str(exc))}")

    def _has_table(self, tx: Transaction, name: str) -> bool:
        row = tx.one("SELECT to_regclass(?) IS NOT NULL AS present", (name,))
        return bool(row and row["present"])

    def _encode_time(self, value: datetime) -> datetime:
        return value

    def _decode_time(self, value: Any) -> datetime:
        utc: datetime = value.astimezone(UTC)
        return utc

    def _encode_amount(self, value: str | None) -> Decimal | None:
        return None if value is None else Decimal(value)

    def _decode_amount(self, value: Any) -> str | None:
        return None if value is None else f"{value:f}"

    def _encode_raw(self, value: Mapping[str, Any]) -> Jsonb:
        return Jsonb(dict(value), dumps=_dumps)

    def _decode_raw(self, value: Any) -> dict[str, Any]:
        return dict(value)

    def close(self) -> None:
        self._pool.close()
