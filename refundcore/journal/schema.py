"""The schema every SQL backend shares: table names, the refund row's columns, the
state lists its SQL filters on, and the migrations that are the same everywhere."""

from __future__ import annotations

import enum
from collections.abc import Set as AbstractSet
from typing import TypeVar

import attrs

from ..status import JournalState
from .values import EventKind, JournalEntry

__all__ = [
    "BATCH_TABLE",
    "COLUMNS",
    "CREATE_SCHEMA_TABLE",
    "EVENTS_INDEX",
    "EVENTS_TABLE",
    "EVENT_COLUMNS",
    "EVENT_KIND_CHECK",
    "PARTIAL_PROVIDER_REFUND_ID_INDEX",
    "PAYMENT_INDEX",
    "SCHEMA_TABLE",
    "SELECT",
    "SET_SCHEMA_VERSION",
    "TABLE",
    "UNSETTLED",
    "UNSETTLED_STATES",
    "V4_INDEXES",
    "V4_STATE_CHECK",
    "V5_EVENT_KIND_CHECK",
    "V5_STATE_CHECK",
    "V5_UNSETTLED_INDEX",
    "V6_FOLD_INDEX",
    "sql_list",
    "sql_one_of",
    "v6_fold_backfill",
]

TABLE = "refundcore_journal"
SCHEMA_TABLE = "refundcore_schema"
CREATE_SCHEMA_TABLE = f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)"
SET_SCHEMA_VERSION = f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (?)"  # noqa: S608
BATCH_TABLE = "refundcore_batch_rows"
EVENTS_TABLE = "refundcore_events"

#: A refund row's columns: :class:`JournalEntry`'s fields, in their order, and the one
#: currency its amounts are in (each :class:`~refundcore.money.Money` carries it there).
COLUMNS = (*attrs.fields_dict(JournalEntry), "currency")
SELECT = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"  # noqa: S608 - constant names

#: States a reconciler still has to settle.
UNSETTLED_STATES = frozenset({JournalState.SUBMITTING, JournalState.PENDING, JournalState.UNKNOWN})

E = TypeVar("E", bound=enum.Enum)


def sql_list(kind: type[E], members: AbstractSet[E]) -> str:
    """``members`` as the items of a SQL ``IN (...)`` list, in ``kind``'s order: the
    text (and the schema written from it) never depends on a set's iteration order."""
    return ", ".join(f"'{member.value}'" for member in kind if member in members)


def sql_one_of(column: str, kind: type[E], members: AbstractSet[E]) -> str:
    """``column`` equal to one of ``members``, in ``kind``'s order, as comparisons joined
    by OR. SQLite evaluates an IN list of more than two constants by building a
    temporary b-tree of them, once per statement: where that is every write (a CHECK
    constraint, a partial index's WHERE), comparisons cost a fraction of it."""
    terms = [f"{column} = '{member.value}'" for member in kind if member in members]
    return f"({' OR '.join(terms)})"


#: The refunds a reconciler still has to settle, as SQL. It is the WHERE of the partial
#: index on them (schema v5 on SQLite), which a query must repeat as it is written for
#: SQLite to read that index; PostgreSQL proves either form from the other.
UNSETTLED = sql_one_of("state", JournalState, UNSETTLED_STATES)


#: Schema v3, the same on every backend: rows get their provider refund id from the
#: gateway's reply, so a fresh claim need not add a NULL to this index (one b-tree less
#: to write on the path every refund takes); lookups by that id still use it, since
#: ``provider_refund_id = ?`` implies it is not NULL.
PARTIAL_PROVIDER_REFUND_ID_INDEX = (
    f"DROP INDEX {TABLE}_provider_refund_id",
    f"CREATE INDEX {TABLE}_provider_refund_id ON {TABLE} (provider, provider_refund_id) "
    "WHERE provider_refund_id IS NOT NULL",
)


#: An event row's columns (besides its ordering id), as :class:`JournalEvent` reads.
EVENT_COLUMNS = (
    "provider",
    "refund_id",
    "at",
    "kind",
    "attempt",
    "state",
    "actor",
    "data",
)

#: Schema v4: the states a refund row may hold, NOT_SENT included.
V4_STATE_CHECK = f"CHECK (state IN ({sql_list(JournalState, frozenset(JournalState))}))"

#: The refund table's index by payment (its refunds counted against its limit).
PAYMENT_INDEX = f"CREATE INDEX {TABLE}_payment ON {TABLE} (provider, payment_key)"

#: Schema v4: the refund table's indexes, as v3 left them (SQLite rebuilds the table).
V4_INDEXES = (
    PAYMENT_INDEX,
    PARTIAL_PROVIDER_REFUND_ID_INDEX[1],
    f"CREATE INDEX {TABLE}_unsettled ON {TABLE} (created_at) "
    f"WHERE state IN ({sql_list(JournalState, UNSETTLED_STATES)})",
)

#: Schema v5 (SQLite): the checks and the partial index on unsettled refunds, written
#: with :func:`sql_one_of` (the tables are rebuilt: SQLite cannot change a CHECK).
V5_STATE_CHECK = f"CHECK {sql_one_of('state', JournalState, frozenset(JournalState))}"
V5_UNSETTLED_INDEX = f"CREATE INDEX {TABLE}_unsettled ON {TABLE} (created_at) WHERE {UNSETTLED}"

#: Schema v4: the events table's kind check and index (the table's types differ).
EVENT_KIND_CHECK = f"CHECK (kind IN ({sql_list(EventKind, frozenset(EventKind))}))"
EVENTS_INDEX = f"CREATE INDEX {EVENTS_TABLE}_refund ON {EVENTS_TABLE} (provider, refund_id, id)"
#: Schema v5 (SQLite): the events table's kind check, as :data:`V5_STATE_CHECK` is.
V5_EVENT_KIND_CHECK = f"CHECK {sql_one_of('kind', EventKind, frozenset(EventKind))}"


#: Schema v6: the key a repeated word is folded under (``fold``), and how many
#: deliveries an event stands for (``times``) and when the latest came (``last_at``).
#: Unique, so a refund's history holds one event per key however often the word comes;
#: partial, so the events nothing folds into (every claim and answer) add no entry.
V6_FOLD_INDEX = (
    f"CREATE UNIQUE INDEX {EVENTS_TABLE}_fold ON {EVENTS_TABLE} (provider, refund_id, fold) "
    "WHERE fold IS NOT NULL"
)


def v6_fold_backfill(provider_refund_id: str) -> str:
    """Schema v6: the first of each refund's callbacks saying one word (a state and a
    gateway refund id, read from ``data`` by the backend's ``provider_refund_id``
    expression) gets the key a repeat of it is recognised by, as
    :func:`~refundcore.journal.history.fold_key` writes it."""
    # Parenthesised: PostgreSQL's ->> binds no tighter than ||.
    key = f"'callback ' || state || COALESCE(' ' || ({provider_refund_id}), '')"
    return (
        f"UPDATE {EVENTS_TABLE} SET fold = {key} WHERE id IN ("  # noqa: S608 - constant names
        f"SELECT MIN(id) FROM {EVENTS_TABLE} WHERE kind = 'callback' AND state IS NOT NULL "
        f"GROUP BY provider, refund_id, state, {provider_refund_id})"
    )
