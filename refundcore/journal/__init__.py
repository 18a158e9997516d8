"""The refund journal: a durable record of every refund, written before its request
leaves the process, so money never goes out twice and no refund is forgotten.

Open one with :func:`open_journal`::

    with open_journal("sqlite:///var/lib/refundcore/journal.db") as journal:
        claim = journal.claim(new_refund, owner=attempt_id)

Besides refunds it keeps the rows of batches (:meth:`Journal.open_batch`): a work queue
from which every worker sharing the journal claims rows, so processes on several
machines split one batch without doing a row twice.

Journal URLs:

``/absolute/path.db``, ``./relative/path.db``, ``~/path.db``
    A SQLite file at that path (``~`` is the home directory), as with ``sqlite:///``: a
    path that plainly is one needs no URL (``REFUNDCORE_JOURNAL=/var/lib/j.db``).
``sqlite:///relative/path.db``
    A SQLite file, relative to the current directory (three slashes).
``sqlite:////absolute/path.db``
    A SQLite file at an absolute path (four slashes: the path's own ``/`` follows).
    Missing parent directories are created. The path is taken literally (no
    ``%``-decoding, no ``~``, no query parameters). Only a path where nothing exists
    is made a new journal: a file there that is empty, cut short, not SQLite, another
    program's database or of a newer schema is a ``JournalError``, never replaced.
    Every writer of one file must run on one machine: its clock is the journal's.
``sqlite://:memory:``
    An in-memory database that lives as long as the journal object: for tests.
``postgresql://user:password@host:port/dbname`` (or ``postgres://``)
    A PostgreSQL database, for several app servers or workers; libpq parameters may be
    added as query parameters (``?sslmode=require``). Needs psycopg 3 (the ``postgres``
    extra).
    The server's clock is the journal's, whatever the workers' clocks say.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..status import JournalState
from .dsn import mask_dsn
from .interface import Journal
from .urls import PLAIN_PATH_PREFIXES, USAGE, sqlite_path
from .values import (
    SETTLED_OUTCOMES,
    Applied,
    Backlog,
    BatchCounts,
    BatchDone,
    BatchEntry,
    BatchItem,
    BatchItemState,
    BatchSummary,
    Claim,
    ClaimVerdict,
    EventKind,
    JournalEntry,
    JournalEvent,
    JournalStats,
    NewRefund,
    OldestRefund,
    ResultRecord,
    StateCount,
    decided_state,
)

if TYPE_CHECKING:
    from .sqlite import SqliteJournal

#: ``RefundClient(journal=DEFAULT_JOURNAL)`` (the default) journals to
#: :func:`default_journal_url`, opened on first use.
DEFAULT_JOURNAL = "default"


def default_journal_url() -> str:
    """``$REFUNDCORE_JOURNAL``, else a SQLite file in the user's data directory
    (``$XDG_DATA_HOME/refundcore/journal.db``, ``~/.local/share/…`` by default)."""
    configured = os.environ.get("REFUNDCORE_JOURNAL")
    if configured:
        return configured
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"sqlite:///{Path(base).resolve() / 'refundcore' / 'journal.db'}"


# The client imports the journal types on every start; sqlite3 loads only when a SQLite
# journal is opened.
def __getattr__(name: str) -> Any:
    if name == "SqliteJournal":
        from .sqlite import SqliteJournal

        return SqliteJournal
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_JOURNAL",
    "SETTLED_OUTCOMES",
    "Applied",
    "Backlog",
    "BatchCounts",
    "BatchDone",
    "BatchEntry",
    "BatchItem",
    "BatchItemState",
    "BatchSummary",
    "Claim",
    "ClaimVerdict",
    "EventKind",
    "Journal",
    "JournalEntry",
    "JournalEvent",
    "JournalState",
    "JournalStats",
    "NewRefund",
    "OldestRefund",
    "ResultRecord",
    "SqliteJournal",
    "StateCount",
    "decided_state",
    "default_journal_url",
    "open_journal",
]


def open_journal(url: str) -> Journal:
    """Open (creating or migrating as needed) the journal at ``url``.

    ``ConfigError`` (field ``journal``) for a URL that is not one of the forms above
    or needs a missing driver; ``JournalError`` if the journal cannot be used.
    """
    if not isinstance(url, str):
        raise ConfigError(f"must be a URL string, got {type(url).__name__}", field="journal")
    if url.startswith(PLAIN_PATH_PREFIXES):
        from .sqlite import SqliteJournal

        return SqliteJournal(os.path.expanduser(url))
    scheme = url.partition("://")[0].lower()
    if scheme == "sqlite":
        from .sqlite import SqliteJournal

        return SqliteJournal(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresJournal
        except ImportError as exc:
            if not (exc.name or "").startswith("psycopg"):
                raise
            raise ConfigError(
                f"{mask_dsn(url)} needs psycopg 3: pip install 'psycopg[binary]>=3.1' "
                "(in a clone of refundcore: pip install -e '.[postgres]')",
                field="journal",
            ) from exc
        return PostgresJournal(url)
    raise ConfigError(f"{mask_dsn(url)!r} is not a journal URL; {USAGE}", field="journal")
