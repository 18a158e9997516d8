"""A batch's working store: its rows, their problems and their results, in a temporary
SQLite database.

The checks that need the whole batch look rows up in it (a refund id used twice, a
payment's rows adding up), the runner takes the rows it claims from it, and the report
is read back from it, a page at a time: a batch of a million rows takes the memory of a
batch of ten. It is a scratch copy, never the record of what was sent (that is the
journal): SQLite's anonymous temporary database, which keeps a small page cache in
memory and spills the rest to a file in the temporary directory (``$SQLITE_TMPDIR``,
else ``$TMPDIR``) that it unlinks as soon as it creates it, so the space goes back to
the system when the store is closed (:meth:`close`, garbage collection, exit) and
nothing is left behind even by a process that is killed.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar, overload

from ..money import Money
from .results import BatchStatus, RowResult
from .rows import COLUMNS, BatchRow, RowError

__all__ = ["PAGE", "OnDisk", "RowStore", "Stored"]

#: Rows read or written at a time.
PAGE = 500

# A row as a file gives it, with its line and the original amount's own currency.
_ROW_COLUMNS = ("line", *COLUMNS, "original_currency")
_RESULT_COLUMNS = (
    "line",
    "status",
    "provider",
    "refund_id",
    "amount",
    "currency",
    "provider_refund_id",
    "error_code",
    "message",
    "ran_here",
)
_SCHEMA = (
    f"CREATE TABLE rows ({', '.join(_ROW_COLUMNS)}, payment_key TEXT NOT NULL, "
    "explicit_id INTEGER NOT NULL, PRIMARY KEY (line)) WITHOUT ROWID",
    "CREATE INDEX rows_refund_id ON rows (refund_id)",
    "CREATE INDEX rows_payment ON rows (provider, payment_key, line)",
    "CREATE TABLE errors (seq INTEGER PRIMARY KEY, line INTEGER NOT NULL, field, problem)",
    "CREATE INDEX errors_line ON errors (line, seq)",
    "CREATE TABLE counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "CREATE TABLE totals (key TEXT PRIMARY KEY, total TEXT NOT NULL) WITHOUT ROWID",
    f"CREATE TABLE results ({', '.join(_RESULT_COLUMNS)}, PRIMARY KEY (line)) WITHOUT ROWID",
)
# The columns each copied table is read in the order of.
_KEYS = {"rows": "line", "errors": "seq"}
_VALID = "NOT EXISTS (SELECT 1 FROM errors e WHERE e.line = rows.line)"
_UNFINISHED = "NOT EXISTS (SELECT 1 FROM results r WHERE r.line = rows.line)"
# The SQL is built from the constants above only; values are always bound.
_ROW_SELECT = f"SELECT {', '.join(_ROW_COLUMNS)} FROM rows"  # noqa: S608
_ROW_INSERT = f"INSERT INTO rows VALUES ({', '.join('?' * (len(_ROW_COLUMNS) + 2))})"  # noqa: S608
_RESULT_INSERT = f"INSERT OR REPLACE INTO results VALUES ({', '.join('?' * len(_RESULT_COLUMNS))})"  # noqa: S608

T = TypeVar("T")
Owner = TypeVar("Owner", bound="OnDisk")


class RowStore:
    """One batch's rows, problems and results on disk. Thread-safe (one connection,
    one lock); every method takes a bounded amount of memory."""

    def __init__(self) -> None:
        # The empty name: a private temporary database, on disk once it outgrows the cache.
        self._db = sqlite3.connect("", check_same_thread=False)
        self._lock = threading.Lock()
        # Closes the database even when nobody calls close(): a report dropped on the
        # floor, an exception, the interpreter exiting.
        self._finalizer = weakref.finalize(self, self._db.close)
        # A small page cache: what is not in it is in the system's file cache anyway.
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -2048"):
            self._db.execute(f"PRAGMA {pragma}")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._db.commit()

    def close(self) -> None:
        """Close the store, giving its space back; it cannot be used afterwards."""
        self._finalizer()

    # -- writing ------------------------------------------------------------------------

    def add_row(self, row: BatchRow, *, payment_key: str, explicit_id: bool) -> bool:
        """Store ``row`` (its line and refund id known by now); False if its line is taken
        already. ``payment_key`` is its payment as the journal counts refunds;
        ``explicit_id`` says the batch gave its refund id (it was not derived)."""
        amount = row.amount
        original = row.original_amount
        values = (
            row.line,
            row.provider,
            row.payment_id,
            row.merchant_reference,
            row.transaction_id,
            amount.to_wire(),
            amount.currency,
            row.refund_id,
            row.reason,
            None if original is None else original.to_wire(),
            None if original is None else original.currency,
            payment_key,
            int(explicit_id),
        )
        with self._lock:
            try:
                self._db.execute(_ROW_INSERT, values)
            except sqlite3.IntegrityError:
                return False
        return True

    def add_errors(self, errors: Iterable[RowError]) -> None:
        """Store problems of rows (a row with one is not sent)."""
        with self._lock:
            self._db.executemany(
                "INSERT INTO errors (line, field, problem) VALUES (?, ?, ?)",
                ((error.line, error.field, error.problem) for error in errors),
            )

    def count(self, key: str) -> int:
        """Add one to the counter ``key``; its new value."""
        with self._lock:
            row = self._db.execute(
                "INSERT INTO counters VALUES (?, 1) "
                "ON CONFLICT (key) DO UPDATE SET n = n + 1 RETURNING n",
                (key,),
            ).fetchall()
        return int(row[0][0])

    def add_to_total(self, key: str, amount: Decimal) -> Decimal:
        """Add ``amount`` to the total ``key``; the new total."""
        with self._lock:
            found = self._db.execute("SELECT total FROM totals WHERE key = ?", (key,)).fetchone()
            total = amount if found is None else Decimal(found[0]) + amount
            self._db.execute(
                "INSERT INTO totals VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET total = ?",
                (key, str(total), str(total)),
            )
        return total

    def put_results(self, results: Iterable[RowResult]) -> None:
        """Store (or replace) rows' results."""
        with self._lock:
            self._db.executemany(
                _RESULT_INSERT,
                map(_result_values, results),
            )
            self._db.commit()

    def commit(self, *, idle: bool = False) -> None:
        """Let what was written so far leave the store's memory (``idle``: its page cache
        too, for a store that is only read now and then from here on)."""
        with self._lock:
            self._db.commit()
            if idle:
                self._db.execute("PRAGMA shrink_memory")

    def copy_from(self, other: RowStore) -> None:
        """Take ``other``'s rows and problems (a batch file's, for one run of it)."""
        for table in ("rows", "errors"):
            after: Any = None
            while page := other._page_of(table, after):
                with self._lock:
                    self._db.executemany(
                        f"INSERT INTO {table} VALUES ({', '.join('?' * len(page[0]))})",  # noqa: S608
                        page,
                    )
                after = page[-1][0]
        self.commit()

    def _page_of(self, table: str, after: Any) -> list[Any]:
        """Up to :data:`PAGE` rows of ``table`` (every column, in its key's order) after
        the one whose key is ``after``."""
        where = "" if after is None else f" WHERE {_KEYS[table]} > ?"
        sql = f"SELECT * FROM {table}{where} ORDER BY {_KEYS[table]} LIMIT {PAGE}"  # noqa: S608
        return self._all(sql, () if after is None else (after,))

    # -- reading ------------------------------------------------------------------------

    def first_line_of(self, refund_id: str) -> int | None:
        """The first line of a row with ``refund_id``, if any."""
        found = self._one("SELECT MIN(line) FROM rows WHERE refund_id = ?", (refund_id,))
        return None if found is None else int(found)

    def has_refund_id(self, refund_id: str) -> bool:
        """Whether a row of the batch has ``refund_id``."""
        return self.first_line_of(refund_id) is not None

    def has_refund(self, provider: str, refund_id: str) -> bool:
        """Whether a valid row of the batch is refund ``refund_id`` of ``provider``."""
        sql = f"SELECT COUNT(*) FROM rows WHERE refund_id = ? AND provider = ? AND {_VALID}"  # noqa: S608
        return bool(self._one(sql, (refund_id, provider)))

    def row_count(self, *, valid: bool = True) -> int:
        """How many rows there are (``valid``: without a problem)."""
        where = f" WHERE {_VALID}" if valid else ""
        return int(self._one(f"SELECT COUNT(*) FROM rows{where}"))  # noqa: S608

    def invalid_line_count(self) -> int:
        """How many lines have a problem."""
        return int(self._one("SELECT COUNT(DISTINCT line) FROM errors"))

    def rows(self, *, valid: bool = True, explicit_ids: bool = False) -> Stored[BatchRow]:
        """The rows in line order (``valid``: only those without a problem;
        ``explicit_ids``: only those whose refund id the batch gave)."""
        where = [_VALID] if valid else []
        if explicit_ids:
            where.append("explicit_id = 1")
        sql = f"{_ROW_SELECT} WHERE {' AND '.join(['line > ?', *where])} ORDER BY line LIMIT ?"
        filters = f" WHERE {' AND '.join(where)}" if where else ""
        return Stored(
            lambda: int(self._one(f"SELECT COUNT(*) FROM rows{filters}")),  # noqa: S608
            lambda after, limit: [(row.line or 0, row) for row in self._rows(sql, (after, limit))],
            0,
        )

    def queue_items(self) -> Iterator[tuple[int, str, str]]:
        """Line, provider and refund id of each valid row, in line order."""
        sql = (
            f"SELECT line, provider, refund_id FROM rows WHERE line > ? AND {_VALID} "  # noqa: S608
            "ORDER BY line LIMIT ?"
        )
        after = 0
        while page := self._all(sql, (after, PAGE)):
            yield from page
            after = page[-1][0]

    def rows_at(self, lines: Sequence[int], *, unfinished: bool = False) -> dict[int, BatchRow]:
        """The valid rows among ``lines`` (``unfinished``: those without a result yet),
        by line."""
        sql = f"{_ROW_SELECT} WHERE line IN ({', '.join('?' * len(lines))}) AND {_VALID}"
        if unfinished:
            sql += f" AND {_UNFINISHED}"
        return {row.line or 0: row for row in self._rows(sql, lines)}

    def payments(self) -> Iterator[tuple[str, str, int, bool]]:
        """Each payment the valid rows refund: provider, payment key, how many rows,
        whether some row gives the payment's original amount."""
        sql = (
            "SELECT provider, payment_key, COUNT(*), MAX(original_amount IS NOT NULL) "  # noqa: S608
            f"FROM rows WHERE (provider, payment_key) > (?, ?) AND {_VALID} "
            "GROUP BY provider, payment_key ORDER BY provider, payment_key LIMIT ?"
        )
        after: tuple[str, str] = ("", "")
        while page := self._all(sql, (*after, PAGE)):
            for provider, key, rows, original in page:
                yield provider, key, int(rows), bool(original)
            after = (page[-1][0], page[-1][1])

    def payment_rows(self, provider: str, payment_key: str) -> Iterator[BatchRow]:
        """The valid rows of one payment, in line order."""
        sql = (
            f"{_ROW_SELECT} WHERE provider = ? AND payment_key = ? AND line > ? AND {_VALID} "
            "ORDER BY line LIMIT ?"
        )
        after = 0
        while page := self._rows(sql, (provider, payment_key, after, PAGE)):
            yield from page
            after = page[-1].line or 0

    def errors(self) -> Stored[RowError]:
        """Every problem, by line (in the order found within a line)."""
        sql = (
            "SELECT line, field, problem, seq FROM errors WHERE (line, seq) > (?, ?) "
            "ORDER BY line, seq LIMIT ?"
        )

        def page(after: tuple[int, int], limit: int) -> list[tuple[tuple[int, int], RowError]]:
            found = self._all(sql, (*after, limit))
            return [((line, seq), RowError(line, field, why)) for line, field, why, seq in found]

        return Stored(lambda: int(self._one("SELECT COUNT(*) FROM errors")), page, (0, 0))

    def results(self) -> Stored[RowResult]:
        """Every row's result, in line order."""
        sql = (
            f"SELECT {', '.join(_RESULT_COLUMNS)} FROM results "  # noqa: S608 - constants
            "WHERE line > ? ORDER BY line LIMIT ?"
        )
        return Stored(
            lambda: int(self._one("SELECT COUNT(*) FROM results")),
            lambda after, limit: [(r[0], _result(r)) for r in self._all(sql, (after, limit))],
            0,
        )

    def result_counts(self) -> dict[BatchStatus, int]:
        """How many results there are of each status."""
        found = self._all("SELECT status, COUNT(*) FROM results GROUP BY status", ())
        return {BatchStatus(status): int(count) for status, count in found}

    def unfinished_count(self) -> int:
        """How many valid rows have no result yet."""
        return int(self._one(f"SELECT COUNT(*) FROM rows WHERE {_VALID} AND {_UNFINISHED}"))  # noqa: S608

    def unfinished(self) -> Iterator[list[BatchRow]]:
        """The valid rows without a result, a page at a time."""
        sql = f"{_ROW_SELECT} WHERE line > ? AND {_VALID} AND {_UNFINISHED} ORDER BY line LIMIT ?"
        after = 0
        while page := self._rows(sql, (after, PAGE)):
            yield page
            after = page[-1].line or 0

    def invalid(self) -> Iterator[tuple[int, BatchRow | None, list[RowError]]]:
        """Each line with a problem: its row (if it has one) and its problems."""
        errors = iter(self.errors())
        for line, grouped in itertools.groupby(errors, key=lambda error: error.line):
            problems = list(grouped)
            found = self._rows(f"{_ROW_SELECT} WHERE line = ?", (line,))
            yield line, (found[0] if found else None), problems

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._db.execute(sql, params).fetchone()[0]

    def _all(self, sql: str, params: Sequence[Any]) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _rows(self, sql: str, params: Sequence[Any]) -> list[BatchRow]:
        return [_row(values) for values in self._all(sql, params)]


class OnDisk:
    """What keeps its data in a :class:`RowStore`: :meth:`close` (or ``with``) removes
    it, as garbage collection does."""

    def __init__(self, store: RowStore) -> None:
        self.store = store

    def close(self) -> None:
        """Remove the data kept on disk."""
        self.store.close()

    def __enter__(self: Owner) -> Owner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Stored(Sequence[T]):
    """A sequence kept in a :class:`RowStore`, read a page at a time as it is iterated
    (indexing reads up to the item: for a look at a few, not for a loop)."""

    def __init__(
        self,
        count: Callable[[], int],
        page: Callable[[Any, int], list[tuple[Any, T]]],
        start: Any,
    ) -> None:
        self._count = count
        self._page = page
        self._start = start

    def __len__(self) -> int:
        return self._count()

    def __iter__(self) -> Iterator[T]:
        after = self._start
        while page := self._page(after, PAGE):
            for _, item in page:
                yield item
            after = page[-1][0]

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += len(self)
        if index < 0:
            raise IndexError("index out of range")
        for item in itertools.islice(self, index, None):
            return item
        raise IndexError("index out of range")

    def __repr__(self) -> str:
        return f"<{len(self)} stored>"


def _row(values: Sequence[Any]) -> BatchRow:
    line, provider, payment_id, reference, transaction, amount, currency = values[:7]
    refund_id, reason, original, original_currency = values[7:]
    return BatchRow(
        provider=provider,
        payment_id=payment_id,
        merchant_reference=reference,
        transaction_id=transaction,
        amount=Money(amount, currency),
        refund_id=refund_id,
        reason=reason,
        original_amount=None if original is None else Money(original, original_currency),
        line=line,
    )


def _result_values(result: RowResult) -> tuple[Any, ...]:
    amount = result.amount
    return (
        result.line,
        result.status.value,
        result.provider,
        result.refund_id,
        None if amount is None else amount.to_wire(),
        None if amount is None else amount.currency,
        result.provider_refund_id,
        result.error_code,
        result.message,
        int(result.ran_here),
    )


def _result(values: Sequence[Any]) -> RowResult:
    line, status, provider, refund_id, amount, currency = values[:6]
    provider_refund_id, error_code, message, ran_here = values[6:]
    return RowResult(
        line=line,
        status=BatchStatus(status),
        provider=provider,
        refund_id=refund_id,
        amount=None if amount is None else Money(amount, currency),
        provider_refund_id=provider_refund_id,
        error_code=error_code,
        message=message,
        ran_here=bool(ran_here),
    )
