"""What a SQL backend supplies, and what every rule of the journal builds on.

A backend (SQLite, PostgreSQL) provides connections, transactions, its migrations,
its clock and the encodings of the columns whose types differ; on top of that
:class:`SqlBackend` brings the schema up to date and reads rows back as values.

One clock: every timestamp the journal writes or compares (leases above all) is read
from the database inside the transaction that uses it, never from the caller's
machine, so workers whose clocks disagree still agree on when a lease runs out.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

import attrs

from ..errors import JournalError
from ..money import Money
from ..status import JournalState
from .interface import Journal
from .pool import Row, Transaction
from .schema import CREATE_SCHEMA_TABLE, SCHEMA_TABLE, SELECT, SET_SCHEMA_VERSION
from .values import JournalEntry, JournalEvent

__all__ = ["UTC", "SqlBackend"]

UTC = timezone.utc

_BY_ID = f"{SELECT} WHERE provider = ? AND refund_id = ?"
_ENTRY_FIELDS = tuple(attrs.fields_dict(JournalEntry))


class SqlBackend(Journal):
    """A journal over SQL, as far as its backend goes.

    A backend provides :meth:`_transaction`, its migrations and the encodings of the
    columns whose types differ (timestamps, amounts, ``raw``); the journal's rules
    (:class:`~refundcore.journal.engine.SqlJournal`) use nothing else of it.
    """

    #: Each migration's statements, in order; migration *i* takes the schema from
    #: version *i* to *i + 1*.
    _migrations: Sequence[Sequence[str]]
    #: Appended to a SELECT that must lock the rows it reads until commit.
    _for_update: str = ""
    #: Appended to a SELECT that locks the rows it reads and passes over rows another
    #: transaction has locked (SQLite needs neither: a writer holds the whole file).
    _skip_locked: str = ""
    #: A SQL expression for the journal's clock: the current time as the database
    #: reads it, in the encoding :meth:`_decode_time` reads back.
    _now_sql: str
    #: The journal's clock inside a writing statement: the same instant wherever the
    #: statement uses it (a claim's ``created_at`` and the start of its lease), taken
    #: once the statements before it in the transaction hold their locks.
    _stamp_sql: str
    #: :attr:`_stamp_sql` plus the seconds of its one ``?`` parameter, in the same
    #: encoding.
    _later_sql: str

    @abc.abstractmethod
    def _transaction(
        self, *, write: bool, lock: str | None = None, sync: bool = True
    ) -> AbstractContextManager[Transaction]:
        """A transaction (``write``) or a plain read. A write transaction with ``lock``
        holds that key until it ends, so writers of the same key are serialised; every
        driver error becomes a ``JournalError``. ``sync=False`` allows the commit to
        become durable with the next synchronous one instead of at once (it must
        survive the process dying, though), for writes whose loss a reconcile repairs.
        """

    def _hold(self, tx: Transaction, key: str) -> None:
        """Hold ``key`` until ``tx`` ends, as ``_transaction(lock=key)`` does; a backend
        whose write transactions exclude each other already (SQLite) needs nothing."""

    def _clock(self, tx: Transaction) -> datetime:
        """The journal's clock, read inside ``tx`` (after any lock it waited for)."""
        row = tx.one(f"SELECT {self._now_sql} AS now")
        if row is None:  # pragma: no cover - a SELECT without FROM returns one row
            raise JournalError(f"journal {self.url} did not tell the time")
        return self._decode_time(row["now"])

    def now(self) -> datetime:
        with self._transaction(write=False) as tx:
            return self._clock(tx)

    @abc.abstractmethod
    def _has_table(self, tx: Transaction, name: str) -> bool:
        """Whether the table exists."""

    @abc.abstractmethod
    def _encode_time(self, value: datetime) -> Any:
        """A UTC datetime as the driver stores it."""

    @abc.abstractmethod
    def _decode_time(self, value: Any) -> datetime:
        """A stored timestamp as a UTC datetime."""

    @abc.abstractmethod
    def _encode_amount(self, value: str | None) -> Any:
        """A wire amount string as the driver stores it."""

    @abc.abstractmethod
    def _decode_amount(self, value: Any) -> str | None:
        """A stored amount as its wire string."""

    @abc.abstractmethod
    def _encode_raw(self, value: Mapping[str, Any]) -> Any:
        """A reply mapping as the driver stores it (JSON)."""

    @abc.abstractmethod
    def _decode_raw(self, value: Any) -> dict[str, Any]:
        """A stored reply as a dict."""

    # -- schema ---------------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the schema up to date, one transaction per migration.

        Reads first, so an up-to-date journal opens without writing (a read-only
        journal can still be inspected).
        """
        with self._transaction(write=False) as tx:
            version = self._schema_version(tx)
        while version < len(self._migrations):
            with self._transaction(write=True, lock=SCHEMA_TABLE) as tx:
                tx.run(CREATE_SCHEMA_TABLE)
                version = self._schema_version(tx)
                if version < len(self._migrations):
                    for statement in self._migrations[version]:
                        tx.run(statement)
                    version += 1
                    tx.run(f"DELETE FROM {SCHEMA_TABLE}")  # noqa: S608 - constant name
                    tx.run(SET_SCHEMA_VERSION, (version,))

    def _schema_version(self, tx: Transaction) -> int:
        if not self._has_table(tx, SCHEMA_TABLE):
            return 0
        row = tx.one(f"SELECT MAX(version) AS version FROM {SCHEMA_TABLE}")  # noqa: S608
        version = int(row["version"]) if row and row["version"] is not None else 0
        if version > len(self._migrations):
            raise JournalError(
                f"journal {self.url} has schema version {version}, newer than this "
                f"refundcore understands ({len(self._migrations)}): upgrade refundcore"
            )
        return version

    # -- rows -----------------------------------------------------------------------

    def _money_columns(
        self, amount: Money | None, original: Money | None
    ) -> tuple[Any, str | None, Any]:
        """A refund's amounts as its ``amount``, ``currency`` and ``original_amount``
        columns store them: the wire text in the driver's encoding, one currency."""
        money = amount or original
        return (
            self._encode_amount(None if amount is None else amount.to_wire()),
            None if money is None else money.currency,
            self._encode_amount(None if original is None else original.to_wire()),
        )

    def _row_money(self, row: Row) -> tuple[Money | None, Money | None]:
        """A row's amount and original amount, read back from its columns."""
        currency = row["currency"]
        if currency is None:
            # No amount; and a void of the whole payment journalled before its row
            # kept the original amount's currency cannot say what that amount was in.
            return None, None
        amount, original = (
            self._decode_amount(row["amount"]),
            self._decode_amount(row["original_amount"]),
        )
        return (
            None if amount is None else Money(amount, currency),
            None if original is None else Money(original, currency),
        )

    def _entry(self, row: Row) -> JournalEntry:
        values = {name: row[name] for name in _ENTRY_FIELDS}
        lease_until = row["lease_until"]
        amount, original = self._row_money(row)
        values.update(
            amount=amount,
            original_amount=original,
            state=JournalState(row["state"]),
            raw=self._decode_raw(row["raw"]),
            attempt=int(row["attempt"]),
            lease_until=None if lease_until is None else self._decode_time(lease_until),
            created_at=self._decode_time(row["created_at"]),
            updated_at=self._decode_time(row["updated_at"]),
        )
        return JournalEntry(**values)

    def _fetch(
        self, tx: Transaction, provider: str, refund_id: str, *, lock: bool
    ) -> JournalEntry | None:
        row = tx.one(_BY_ID + (self._for_update if lock else ""), (provider, refund_id))
        return None if row is None else self._entry(row)

    def _refetch(self, tx: Transaction, provider: str, refund_id: str) -> JournalEntry:
        entry = self._fetch(tx, provider, refund_id, lock=False)
        if entry is None:  # pragma: no cover - the row was locked by this transaction
            raise JournalError(f"journal {self.url} lost refund {refund_id!r}")
        return entry

    def _event(self, row: Row) -> JournalEvent:
        state, last_at = row["state"], row["last_at"]
        return JournalEvent(
            at=self._decode_time(row["at"]),
            kind=row["kind"],
            attempt=int(row["attempt"]),
            state=None if state is None else JournalState(state),
            actor=row["actor"],
            data=self._decode_raw(row["data"]),
            times=int(row["times"]),
            last_at=None if last_at is None else self._decode_time(last_at),
        )
