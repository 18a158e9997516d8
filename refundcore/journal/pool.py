"""What the SQL rules run on: a backend's transactions, and a pool of its connections."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar

from ..errors import JournalError

__all__ = ["Pool", "Row", "Transaction"]

Row = Mapping[str, Any]


class Transaction(Protocol):
    """A backend's open transaction (or read). SQL uses ``?`` placeholders."""

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or ``None``."""

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute a statement; the number of rows it changed."""


C = TypeVar("C")


class Pool(Generic[C]):
    """At most ``size`` connections, each used by one thread at a time.

    Not one connection per thread: threads come and go (a client's worker pool), and a
    per-thread connection would outlive its thread until garbage collection.
    """

    def __init__(
        self,
        name: str,
        connect: Callable[[], C],
        close: Callable[[C], None],
        reusable: Callable[[C], bool],
        *,
        size: int,
    ) -> None:
        self._name = name
        self._connect = connect
        self._close = close
        self._reusable = reusable
        self._size = size
        # Borrowing and giving back take the plain lock; only a borrower that has to
        # wait for a connection uses the condition, and only then is it notified.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting = 0
        self._idle: list[C] = []
        self._open = 0
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[C]:
        """Borrow a connection for the duration of the ``with`` block."""
        conn = self.acquire()
        try:
            yield conn
        finally:
            self.release(conn)

    def acquire(self) -> C:
        """Borrow a connection, waiting while all ``size`` are borrowed; give it back
        with :meth:`release`."""
        with self._lock:
            while True:
                if self._closed:
                    raise JournalError(f"journal {self._name} is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self._size:
                    self._open += 1
                    break
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
        try:
            return self._connect()
        except BaseException:
            with self._lock:
                self._open -= 1
                if self._waiting:
                    self._cond.notify()
            raise

    def release(self, conn: C) -> None:
        """Give back a connection :meth:`acquire` lent."""
        with self._lock:
            keep = not self._closed and self._reusable(conn)
            if keep:
                self._idle.append(conn)
            else:
                self._open -= 1
            if self._waiting:
                self._cond.notify()
        if not keep:
            self._close(conn)

    def close(self) -> None:
        """Close idle connections now and borrowed ones when they are given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            self._close(conn)
