"""The SQLite journal's schema: every migration from an empty file to the current
version, as SQLite's SQL writes it."""

from __future__ import annotations

from ..status import JournalState
from .schema import (
    BATCH_TABLE,
    EVENT_KIND_CHECK,
    EVENTS_INDEX,
    EVENTS_TABLE,
    PARTIAL_PROVIDER_REFUND_ID_INDEX,
    PAYMENT_INDEX,
    TABLE,
    UNSETTLED_STATES,
    V4_INDEXES,
    V4_STATE_CHECK,
    V5_EVENT_KIND_CHECK,
    V5_STATE_CHECK,
    V5_UNSETTLED_INDEX,
    V6_FOLD_INDEX,
    sql_list,
    v6_fold_backfill,
)

__all__ = ["MIGRATIONS"]

# The v3 refund columns kept as they are by v4, up to ``raw``.
_V3_COLUMNS = (
    "provider, refund_id, operation, payment_id, merchant_reference, transaction_id, "
    "amount, currency, reason, notify_url, original_amount, fingerprint, payment_key, "
    "state, provider_refund_id, message, error_code, http_status, raw"
)


def _refund_table(name: str, state_check: str) -> str:
    """The refund table as schema v4 made it, under ``name``, with ``state_check``."""
    return f"""CREATE TABLE {name} (
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
            state TEXT NOT NULL {state_check},
            provider_refund_id TEXT,
            message TEXT,
            error_code TEXT,
            http_status INTEGER,
            raw TEXT NOT NULL DEFAULT '{{}}',
            attempt INTEGER NOT NULL,
            decided_by TEXT,
            owner TEXT,
            lease_until TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (provider, refund_id)
        )"""


def _events_table(name: str, kind_check: str) -> str:
    """The events table as schema v4 made it, under ``name``, with ``kind_check``."""
    return f"""CREATE TABLE {name} (
            id INTEGER PRIMARY KEY,
            provider TEXT NOT NULL,
            refund_id TEXT NOT NULL,
            at TEXT NOT NULL,
            kind TEXT NOT NULL {kind_check},
            attempt INTEGER NOT NULL,
            state TEXT,
            actor TEXT,
            data TEXT NOT NULL
        )"""


#: Each migration's statements: migration *i* takes the schema from version *i* to
#: *i + 1*.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
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
    # v4: NOT_SENT, the attempt (fencing token), operators' decisions, and each
    # refund's history. SQLite cannot change a CHECK constraint: the table is rebuilt.
    (
        _refund_table(f"{TABLE}_v4", V4_STATE_CHECK),
        f"INSERT INTO {TABLE}_v4 SELECT {_V3_COLUMNS}, attempts, NULL, "  # noqa: S608
        f"owner, lease_until, created_at, updated_at FROM {TABLE}",
        f"DROP TABLE {TABLE}",
        f"ALTER TABLE {TABLE}_v4 RENAME TO {TABLE}",
        *V4_INDEXES,
        _events_table(EVENTS_TABLE, EVENT_KIND_CHECK),
        EVENTS_INDEX,
    ),
    # v5: the checks and the partial index on unsettled refunds as comparisons, not IN
    # lists, which SQLite evaluated by building a temporary b-tree for every write of a
    # row or an event (seven a refund); the tables are rebuilt, as they are.
    (
        _refund_table(f"{TABLE}_v5", V5_STATE_CHECK),
        f"INSERT INTO {TABLE}_v5 SELECT * FROM {TABLE}",  # noqa: S608 - constant names
        f"DROP TABLE {TABLE}",
        f"ALTER TABLE {TABLE}_v5 RENAME TO {TABLE}",
        PAYMENT_INDEX,
        PARTIAL_PROVIDER_REFUND_ID_INDEX[1],
        V5_UNSETTLED_INDEX,
        _events_table(f"{EVENTS_TABLE}_v5", V5_EVENT_KIND_CHECK),
        f"INSERT INTO {EVENTS_TABLE}_v5 SELECT * FROM {EVENTS_TABLE}",  # noqa: S608
        f"DROP TABLE {EVENTS_TABLE}",
        f"ALTER TABLE {EVENTS_TABLE}_v5 RENAME TO {EVENTS_TABLE}",
        EVENTS_INDEX,
    ),
    # v6: a callback delivered again and again is counted on one event, not appended
    # each time: the key its repeats are found by, and the count and latest time of
    # the deliveries an event stands for. The callbacks already kept get their keys,
    # so a repeat of one received before the upgrade is still known as one.
    (
        f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN fold TEXT",
        f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN times INTEGER NOT NULL DEFAULT 1",
        f"ALTER TABLE {EVENTS_TABLE} ADD COLUMN last_at TEXT",
        v6_fold_backfill("json_extract(data, '$.provider_refund_id')"),
        V6_FOLD_INDEX,
    ),
)
