"""The schema every SQL backend shares: table names, the refund row's columns, the
state lists its SQL filters on, and the migrations that are the same everywhere."""

from __future__ import annotations

import enum
from collections.abc import Set as AbstractSet
from typing import TypeVar

import attrs

from ..status import JournalState
from .values import JournalEntry

__all__ = [
    "BATCH_TABLE",
    "COLUMNS",
    "PARTIAL_PROVIDER_REFUND_ID_INDEX",
    "SCHEMA_TABLE",
    "SELECT",
    "TABLE",
    "UNSETTLED_STATES",
    "sql_list",
]

TABLE = "refundcore_journal"
SCHEMA_TABLE = "refundcore_schema"
BATCH_TABLE = "refundcore_batch_rows"

#: A refund row's columns, in the order of :class:`JournalEntry`'s fields.
COLUMNS = tuple(attrs.fields_dict(JournalEntry))
SELECT = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"  # noqa: S608 - constant names

#: States a reconciler still has to settle.
UNSETTLED_STATES = frozenset({JournalState.SUBMITTING, JournalState.PENDING, JournalState.UNKNOWN})

E = TypeVar("E", bound=enum.Enum)


def sql_list(kind: type[E], members: AbstractSet[E]) -> str:
    """``members`` as the items of a SQL ``IN (...)`` list, in ``kind``'s order: the
    text (and the schema written from it) never depends on a set's iteration order."""
    return ", ".join(f"'{member.value}'" for member in kind if member in members)


#: Schema v3, the same on every backend: rows get their provider refund id from the
#: gateway's reply, so a fresh claim need not add a NULL to this index (one b-tree less
#: to write on the path every refund takes); lookups by that id still use it, since
#: ``provider_refund_id = ?`` implies it is not NULL.
PARTIAL_PROVIDER_REFUND_ID_INDEX = (
    f"DROP INDEX {TABLE}_provider_refund_id",
    f"CREATE INDEX {TABLE}_provider_refund_id ON {TABLE} (provider, provider_refund_id) "
    "WHERE provider_refund_id IS NOT NULL",
)
