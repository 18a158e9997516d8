"""The refund journal's value types, its interface, and the rules both backends share.

The journal is what makes "money never goes out twice, no refund is forgotten" hold
across threads, processes and machines: a refund is recorded (state ``SUBMITTING``)
before its request leaves the process, and every later outcome or callback moves that
row forward, never back.

The rules live once, in :class:`SqlJournal`; a backend only supplies connections,
transactions, column encodings and its schema, so SQLite and PostgreSQL cannot drift
apart on what a claim or a callback does.
"""

from __future__ import annotations

import abc
import enum
import json
import operator
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import attrs

from ..errors import JournalError, ValidationError

__all__ = [
    "SETTLED_OUTCOMES",
    "BatchCounts",
    "BatchDone",
    "BatchEntry",
    "BatchItem",
    "BatchItemState",
    "Claim",
    "ClaimOutcome",
    "Journal",
    "JournalEntry",
    "JournalState",
    "NewRefund",
    "Outcome",
]

UTC = timezone.utc


class JournalState(str, enum.Enum):
    """Where a journalled refund stands.

    ``SUBMITTING``: recorded, and its request may be on the wire right now (or may have
    been, if the process died). ``UNKNOWN``: sent, outcome not known. Neither may be
    sent again without reconciling first.
    """

    SUBMITTING = "SUBMITTING"
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"

    @property
    def is_final(self) -> bool:
        """True for SUCCEEDED and FAILED: nothing will change any more."""
        return self in (JournalState.SUCCEEDED, JournalState.FAILED)

    def __str__(self) -> str:
        return self.value


# How much a state knows; a row only ever moves to a state of higher rank, so a late or
# repeated report can never undo a better-informed one.
_RANK = {
    JournalState.SUBMITTING: 0,
    JournalState.UNKNOWN: 1,
    JournalState.PENDING: 2,
    JournalState.SUCCEEDED: 3,
    JournalState.FAILED: 3,
}

#: States whose amount is committed: the money has left or may have left.
COMMITTED_STATES = (
    JournalState.SUBMITTING,
    JournalState.PENDING,
    JournalState.SUCCEEDED,
    JournalState.UNKNOWN,
)
_FINAL = (JournalState.SUCCEEDED, JournalState.FAILED)
#: States a reconciler still has to settle.
UNSETTLED_STATES = (JournalState.SUBMITTING, JournalState.PENDING, JournalState.UNKNOWN)

_PLAIN_DECIMAL = re.compile(r"[0-9]{1,24}(?:\.[0-9]{1,8})?\Z")
_OPERATIONS = ("refund", "void")


def _check_amount(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and not (isinstance(value, str) and _PLAIN_DECIMAL.match(value)):
        raise ValidationError(
            f"{value!r} is not a plain decimal like '10.00'", field=attribute.name
        )


def _check_operation(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in _OPERATIONS:
        raise ValidationError(f"must be 'refund' or 'void', got {value!r}", field=attribute.name)


@attrs.frozen
class NewRefund:
    """What the client records before sending a refund or void.

    ``fingerprint`` identifies the request's parameters: a second claim of the same
    ``(provider, refund_id)`` with another fingerprint is a conflict. ``payment_key``
    identifies the payment for the per-payment limit. A void without ``amount`` counts
    as the whole ``original_amount`` toward that limit.
    """

    provider: str
    refund_id: str
    operation: str = attrs.field(validator=_check_operation)
    payment_id: str | None
    merchant_reference: str | None
    transaction_id: str | None
    amount: str | None = attrs.field(validator=_check_amount)
    currency: str | None
    reason: str | None
    notify_url: str | None
    original_amount: str | None = attrs.field(validator=_check_amount)
    fingerprint: str
    payment_key: str


@attrs.frozen
class JournalEntry:
    """One journalled refund, as stored. Timestamps are timezone-aware UTC.

    ``owner`` and ``lease_until`` say who is submitting or reconciling it right now;
    both are ``None`` once its outcome has been recorded.
    """

    provider: str
    refund_id: str
    operation: str
    payment_id: str | None
    merchant_reference: str | None
    transaction_id: str | None
    amount: str | None
    currency: str | None
    reason: str | None
    notify_url: str | None
    original_amount: str | None
    fingerprint: str
    payment_key: str
    state: JournalState
    provider_refund_id: str | None
    message: str | None
    error_code: str | None
    http_status: int | None
    raw: dict[str, Any]
    attempts: int
    owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime


class ClaimOutcome(str, enum.Enum):
    """What :meth:`Journal.claim` found, and so what the caller must do next."""

    #: Row inserted in SUBMITTING, owned by the caller: send the request.
    NEW = "NEW"
    #: The row was SUBMITTING with an expired lease, or UNKNOWN and not leased: the
    #: caller now owns it (lease renewed, attempts + 1) and must reconcile, not resend.
    TAKEOVER = "TAKEOVER"
    #: Another owner holds a live lease on the row: wait, then read or claim again.
    BUSY = "BUSY"
    #: The row is PENDING, SUCCEEDED or FAILED: return its stored result.
    DONE = "DONE"
    #: Same ``(provider, refund_id)`` with another fingerprint: raise IdempotencyConflict.
    CONFLICT = "CONFLICT"
    #: This amount would take the payment's committed refunds past ``original_amount``.
    OVER_LIMIT = "OVER_LIMIT"

    def __str__(self) -> str:
        return self.value


@attrs.frozen
class Claim:
    """The result of :meth:`Journal.claim`.

    ``entry`` is the row as it is after the claim (``None`` only for OVER_LIMIT);
    ``refunded`` is, for OVER_LIMIT, the amount already committed for the payment.
    """

    outcome: ClaimOutcome
    entry: JournalEntry | None
    refunded: str | None = None


class BatchItemState(str, enum.Enum):
    """Where one row of a batch stands in the batch's work queue.

    ``OPEN``: nobody is working on it. ``CLAIMED``: a worker holds it until its lease
    ends (renewed while the worker lives). ``DONE``: a worker recorded its outcome.
    """

    OPEN = "OPEN"
    CLAIMED = "CLAIMED"
    DONE = "DONE"

    def __str__(self) -> str:
        return self.value


#: Batch outcomes after which a row is never run again. Any other outcome (UNKNOWN,
#: or the row could not be sent at all) is retried by the next run of the batch.
SETTLED_OUTCOMES = ("SUCCEEDED", "FAILED", "PENDING")


@attrs.frozen
class BatchItem:
    """One row of a batch as the journal knows it: its line and the refund it makes."""

    line: int
    provider: str
    refund_id: str


@attrs.frozen
class BatchDone:
    """The outcome of one claimed batch row, for :meth:`Journal.finish_batch`.

    ``outcome`` is a refund status (``SUCCEEDED``, ``FAILED``, ``PENDING``,
    ``UNKNOWN``) or a word for a row that was not sent (``ERROR``, ``INVALID``).
    """

    line: int
    outcome: str
    error_code: str | None = None
    message: str | None = None


@attrs.frozen
class Outcome:
    """What :meth:`Journal.record` takes, as a value: for :meth:`Journal.record_many`."""

    provider: str
    refund_id: str
    owner: str
    state: JournalState = attrs.field(converter=JournalState)
    provider_refund_id: str | None = None
    message: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    raw: Mapping[str, Any] | None = None


@attrs.frozen
class BatchCounts:
    """How many rows of a batch are in each state."""

    open: int
    claimed: int
    done: int


@attrs.frozen
class BatchEntry:
    """One batch row as stored, with the journalled refund of its refund id (``refund``;
    ``None`` when that refund was never recorded, e.g. nothing could be sent)."""

    batch_id: str
    line: int
    provider: str
    refund_id: str
    state: BatchItemState
    owner: str | None
    lease_until: datetime | None
    outcome: str | None
    error_code: str | None
    message: str | None
    updated_at: datetime
    refund: JournalEntry | None


class Journal(abc.ABC):
    """Durable record of every refund sent, shared by all threads of a client.

    Open one with :func:`refundcore.journal.open_journal`; use it as a context manager
    or call :meth:`close`. Every method raises :class:`~refundcore.errors.JournalError`
    when the journal cannot be used, naming the journal and the cause.
    """

    #: Where the journal lives, for messages: never contains a password.
    url: str

    @abc.abstractmethod
    def claim(
        self,
        new: NewRefund,
        *,
        owner: str,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
    ) -> Claim:
        """Record ``new`` as SUBMITTING before sending it, atomically.

        Exactly one concurrent caller gets NEW (or TAKEOVER) for a refund id; see
        :class:`ClaimOutcome` for the rest. ``owner`` must be unique to the attempt:
        a live lease makes any claim BUSY, the holder's own included.
        """

    @abc.abstractmethod
    def record(
        self,
        provider: str,
        refund_id: str,
        *,
        owner: str,
        state: JournalState,
        provider_refund_id: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        raw: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> JournalEntry:
        """Store the outcome of ``owner``'s send or reconcile and release its lease.

        ``state`` is PENDING, SUCCEEDED, FAILED or UNKNOWN. A final row is returned
        unchanged, and a row never moves to a less-informed state (UNKNOWN after
        PENDING keeps PENDING). ``JournalError`` if another owner holds a live lease
        or there is no such row.
        """

    @abc.abstractmethod
    def record_many(self, outcomes: Sequence[Outcome], *, now: datetime | None = None) -> None:
        """:meth:`record` each outcome, in as few transactions as the journal can.

        For a caller that finishes many refunds at once (a batch): the outcomes of
        the owners' own sends share one commit. Each is stored exactly as
        :meth:`record` would store it; ``JournalError`` if the journal cannot be
        used, with none or only some of them stored.
        """

    @abc.abstractmethod
    def abandon(self, provider: str, refund_id: str, *, owner: str) -> bool:
        """Forget a SUBMITTING row whose request certainly never left the process (the
        transport said nothing was sent), so the refund id can be used again.

        Only ``owner``'s own, still SUBMITTING, first attempt is removed; anything else
        is left as it is. True when the row was removed.
        """

    @abc.abstractmethod
    def apply_notification(
        self,
        provider: str,
        *,
        state: JournalState,
        refund_id: str | None = None,
        provider_refund_id: str | None = None,
        raw: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> JournalEntry | None:
        """Apply a verified callback to the row it names (by refund id, else by the
        provider's refund id); ``None`` if there is no such row.

        Monotonic and idempotent: SUBMITTING, UNKNOWN and PENDING move to PENDING or a
        final state, PENDING only to a final state, a final row never changes. A
        missing ``provider_refund_id`` is filled in.
        """

    @abc.abstractmethod
    def get(self, provider: str, refund_id: str) -> JournalEntry | None:
        """The row of ``(provider, refund_id)``, or ``None``."""

    @abc.abstractmethod
    def find_by_provider_refund_id(
        self, provider: str, provider_refund_id: str
    ) -> JournalEntry | None:
        """The row the gateway knows as ``provider_refund_id`` (the oldest, if several)."""

    @abc.abstractmethod
    def entries(
        self, *, unsettled: bool = False, provider: str | None = None, limit: int | None = None
    ) -> list[JournalEntry]:
        """Rows ordered by creation time; ``unsettled`` keeps SUBMITTING, PENDING and
        UNKNOWN ones (what a reconciler has to look at)."""

    # -- batches: a work queue of rows shared by every worker of the journal ----------

    @abc.abstractmethod
    def open_batch(
        self, batch_id: str, items: Sequence[BatchItem], *, now: datetime | None = None
    ) -> None:
        """Make ``items`` the rows of batch ``batch_id``, ready to be claimed.

        Rows already there are kept as they are, except that a row an earlier run left
        DONE without a settled outcome (anything but :data:`SETTLED_OUTCOMES`) before
        ``now`` is opened again, so a re-run retries it. Safe to call from every worker.
        """

    @abc.abstractmethod
    def claim_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        limit: int,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
    ) -> list[int]:
        """Take up to ``limit`` rows for ``owner`` in one transaction, lowest lines
        first: rows whose lease ran out, then OPEN rows. Returns their lines (ascending
        within each kind). Concurrent callers, on any machine, never get the same row
        while its lease lasts."""

    @abc.abstractmethod
    def renew_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
    ) -> int:
        """Extend the lease of every row ``owner`` holds; returns how many it holds."""

    @abc.abstractmethod
    def finish_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        done: Sequence[BatchDone],
        now: datetime | None = None,
    ) -> int:
        """Record outcomes of rows ``owner`` holds, in one transaction; returns how many
        were recorded. A row ``owner`` no longer holds (its lease ran out and another
        worker took it) is left to that worker."""

    @abc.abstractmethod
    def release_batch(self, batch_id: str, *, owner: str) -> int:
        """Give every row ``owner`` still holds back (OPEN); returns how many."""

    @abc.abstractmethod
    def count_batch(self, batch_id: str) -> BatchCounts:
        """How many rows of the batch are OPEN, CLAIMED and DONE."""

    @abc.abstractmethod
    def batch_entries(self, batch_id: str) -> list[BatchEntry]:
        """Every row of the batch in line order, each with its journalled refund."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the journal's connections. Further use raises ``JournalError``."""

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def _inserted_entry(
    new: NewRefund, owner: str, lease_until: datetime, now: datetime
) -> JournalEntry:
    """The row a NEW claim has just inserted, as :meth:`Journal.get` would read it."""
    return JournalEntry(
        provider=new.provider,
        refund_id=new.refund_id,
        operation=new.operation,
        payment_id=new.payment_id,
        merchant_reference=new.merchant_reference,
        transaction_id=new.transaction_id,
        amount=new.amount,
        currency=new.currency,
        reason=new.reason,
        notify_url=new.notify_url,
        original_amount=new.original_amount,
        fingerprint=new.fingerprint,
        payment_key=new.payment_key,
        state=JournalState.SUBMITTING,
        provider_refund_id=None,
        message=None,
        error_code=None,
        http_status=None,
        raw={},
        attempts=1,
        owner=owner,
        lease_until=lease_until,
        created_at=now,
        updated_at=now,
    )


def utc_now(now: datetime | None = None) -> datetime:
    """``now`` (which must be timezone-aware) in UTC, or the current time."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def mask_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) masked."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    userinfo, at, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo.partition(':')[0]}:***@{host}" if at and ":" in userinfo else parts.netloc
    query = "&".join(
        "password=***" if unquote(item.partition("=")[0]).lower() == "password" else item
        for item in parts.query.split("&")
    )
    return urlunsplit(parts._replace(netloc=netloc, query=query))


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
        self._cond = threading.Condition()
        self._idle: list[C] = []
        self._open = 0
        self._closed = False

    @contextmanager
    def connection(self) -> Iterator[C]:
        """Borrow a connection for the duration of the ``with`` block."""
        conn = self._acquire()
        try:
            yield conn
        finally:
            self._release(conn)

    def _acquire(self) -> C:
        with self._cond:
            while True:
                if self._closed:
                    raise JournalError(f"journal {self._name} is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self._size:
                    self._open += 1
                    break
                self._cond.wait()
        try:
            return self._connect()
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def _release(self, conn: C) -> None:
        with self._cond:
            keep = not self._closed and self._reusable(conn)
            if keep:
                self._idle.append(conn)
            else:
                self._open -= 1
            self._cond.notify()
        if not keep:
            self._close(conn)

    def close(self) -> None:
        """Close idle connections now and borrowed ones when they are given back."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for conn in idle:
            self._close(conn)


TABLE = "refundcore_journal"
SCHEMA_TABLE = "refundcore_schema"

_NEW_COLUMNS = tuple(attrs.fields_dict(NewRefund))
_COLUMNS = tuple(attrs.fields_dict(JournalEntry))
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM {TABLE}"  # noqa: S608 - constant names
_BY_ID = f"{_SELECT} WHERE provider = ? AND refund_id = ?"
_KEY = "WHERE provider = ? AND refund_id = ?"
_new_values = operator.attrgetter(*_NEW_COLUMNS)
_AMOUNT = _NEW_COLUMNS.index("amount")
_ORIGINAL = _NEW_COLUMNS.index("original_amount")
_INSERTED = (
    *_NEW_COLUMNS,
    "state",
    "raw",
    "attempts",
    "owner",
    "lease_until",
    "created_at",
    "updated_at",
)
# RETURNING: a row back means this claim inserted it.
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(_INSERTED)}) "  # noqa: S608 - constant names
    f"VALUES ({', '.join('?' * len(_INSERTED))}) "
    "ON CONFLICT (provider, refund_id) DO NOTHING RETURNING refund_id"
)
# The outcome of the claimant's own send: its row is SUBMITTING and owned by it, and
# every outcome ranks above SUBMITTING, so nothing needs reading first.
_RECORD_OWN_ONLY = (
    f"UPDATE {TABLE} SET state = ?, "  # noqa: S608 - constant names
    "provider_refund_id = COALESCE(?, provider_refund_id), message = ?, error_code = ?, "
    "http_status = ?, raw = COALESCE(?, raw), owner = NULL, lease_until = NULL, "
    f"updated_at = ? {_KEY} AND owner = ? AND state = 'SUBMITTING'"
)
_RECORD_OWN = f"{_RECORD_OWN_ONLY} RETURNING {', '.join(_COLUMNS)}"
_RECORD_OWN_ACK = f"{_RECORD_OWN_ONLY} RETURNING 1"


def _states(states: Sequence[JournalState]) -> str:
    return ", ".join(f"'{state.value}'" for state in states)


#: Schema v3, the same on every backend: rows get their provider refund id from the
#: gateway's reply, so a fresh claim need not add a NULL to this index (one b-tree less
#: to write on the path every refund takes); lookups by that id still use it, since
#: ``provider_refund_id = ?`` implies it is not NULL.
PARTIAL_PROVIDER_REFUND_ID_INDEX = (
    f"DROP INDEX {TABLE}_provider_refund_id",
    f"CREATE INDEX {TABLE}_provider_refund_id ON {TABLE} (provider, provider_refund_id) "
    "WHERE provider_refund_id IS NOT NULL",
)

BATCH_TABLE = "refundcore_batch_rows"
_BATCH_COLUMNS = (
    "batch_id",
    "line",
    "provider",
    "refund_id",
    "state",
    "owner",
    "lease_until",
    "outcome",
    "error_code",
    "message",
    "updated_at",
)
# The refund's columns come prefixed: both tables have provider, state, owner, ...
_BATCH_SELECT = (
    f"SELECT {', '.join(f'b.{name}' for name in _BATCH_COLUMNS)}, "  # noqa: S608 - constants
    f"{', '.join(f'j.{name} AS j_{name}' for name in _COLUMNS)} "
    f"FROM {BATCH_TABLE} b LEFT JOIN {TABLE} j "
    "ON j.provider = b.provider AND j.refund_id = b.refund_id "
    "WHERE b.batch_id = ? ORDER BY b.line"
)
_SETTLED = ", ".join(f"'{outcome}'" for outcome in SETTLED_OUTCOMES)
# Rows per INSERT or UPDATE of batch rows: few statements, far below SQLite's limit of
# bound parameters.
_INSERT_ROWS = 200


class SqlJournal(Journal):
    """The journal's rules over SQL, shared by the SQLite and PostgreSQL backends.

    A backend provides :meth:`_transaction`, its migrations and the encodings of the
    columns whose types differ (timestamps, amounts, ``raw``).
    """

    #: Each migration's statements, in order; migration *i* takes the schema from
    #: version *i* to *i + 1*.
    _migrations: Sequence[Sequence[str]]
    #: Appended to a SELECT that must lock the rows it reads until commit.
    _for_update: str = ""
    #: Appended to a SELECT that locks the rows it reads and passes over rows another
    #: transaction has locked (SQLite needs neither: a writer holds the whole file).
    _skip_locked: str = ""

    @abc.abstractmethod
    def _transaction(
        self, *, write: bool, lock: str | None = None
    ) -> AbstractContextManager[Transaction]:
        """A transaction (``write``) or a plain read. A write transaction with ``lock``
        holds that key until it ends, so writers of the same key are serialised; every
        driver error becomes a ``JournalError``."""

    def _alone(
        self, sql: str, params: Sequence[Any], *, lock: str | None = None, sync: bool = True
    ) -> list[Row]:
        """Run one write statement as a transaction of its own (under ``lock``, as
        :meth:`_transaction` does) and return the rows its ``RETURNING`` gives.

        The path every refund takes is one such statement to claim and one to record;
        a backend that can commit a lone statement without ``BEGIN``/``COMMIT`` round
        trips overrides this. ``sync=False`` allows the commit to become durable with
        the next synchronous one instead of at once (it must survive the process
        dying, though), for writes whose loss a reconcile repairs.
        """
        with self._transaction(write=True, lock=lock) as tx:
            return tx.all(sql, params)

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
                tx.run(f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version INTEGER NOT NULL)")
                version = self._schema_version(tx)
                if version < len(self._migrations):
                    for statement in self._migrations[version]:
                        tx.run(statement)
                    version += 1
                    tx.run(f"DELETE FROM {SCHEMA_TABLE}")  # noqa: S608 - constant name
                    tx.run(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (?)", (version,))  # noqa: S608

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

    def _entry(self, row: Row) -> JournalEntry:
        values = {name: row[name] for name in _COLUMNS}
        lease_until = row["lease_until"]
        values.update(
            amount=self._decode_amount(row["amount"]),
            original_amount=self._decode_amount(row["original_amount"]),
            state=JournalState(row["state"]),
            raw=self._decode_raw(row["raw"]),
            attempts=int(row["attempts"]),
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

    def _committed(self, tx: Transaction, new: NewRefund, limit: Decimal) -> Decimal:
        """What is already refunded or on its way for ``new``'s payment."""
        rows = tx.all(
            f"SELECT amount, original_amount, currency FROM {TABLE} "  # noqa: S608
            f"WHERE provider = ? AND payment_key = ? AND state IN ({_states(COMMITTED_STATES)})",
            (new.provider, new.payment_key),
        )
        total = limit * 0  # keeps the currency's decimals: "0.00", not "0"
        for row in rows:
            if row["currency"] is not None and new.currency not in (None, row["currency"]):
                continue
            # A void without amount reversed the whole payment.
            amount = self._decode_amount(row["amount"]) or self._decode_amount(
                row["original_amount"]
            )
            total += limit if amount is None else Decimal(amount)
        return total

    def _new_row(
        self, new: NewRefund, owner: str, lease_until: datetime, now: datetime
    ) -> list[Any]:
        """The values of :data:`_INSERT` for a claim of ``new``."""
        values = list(_new_values(new))
        values[_AMOUNT] = self._encode_amount(new.amount)
        values[_ORIGINAL] = self._encode_amount(new.original_amount)
        stamp = self._encode_time(now)
        values += (
            JournalState.SUBMITTING.value,
            self._encode_raw({}),
            1,
            owner,
            self._encode_time(lease_until),
            stamp,
            stamp,
        )
        return values

    # -- the interface --------------------------------------------------------------

    def claim(
        self,
        new: NewRefund,
        *,
        owner: str,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
    ) -> Claim:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        now = utc_now(now)
        lease_until = now + timedelta(seconds=lease_seconds)
        # Keyed by payment: claims that could together pass the payment's limit queue up.
        lock = f"{new.provider}\0{new.payment_key}"
        # No limit to check: the insert alone decides, one statement for the common case
        # of a fresh refund id; anything else takes the path below.
        if new.original_amount is None and self._alone(
            _INSERT, self._new_row(new, owner, lease_until, now), lock=lock
        ):
            return Claim(ClaimOutcome.NEW, _inserted_entry(new, owner, lease_until, now))
        with self._transaction(write=True, lock=lock) as tx:
            entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
            if entry is None:
                if new.original_amount is not None:
                    limit = Decimal(new.original_amount)
                    committed = self._committed(tx, new, limit)
                    wanted = limit if new.amount is None else Decimal(new.amount)
                    if committed + wanted > limit:
                        return Claim(ClaimOutcome.OVER_LIMIT, None, refunded=f"{committed:f}")
                # ON CONFLICT: a claim of the same refund id for another payment holds
                # another lock; whoever inserts second finds the row below instead.
                if tx.all(_INSERT, self._new_row(new, owner, lease_until, now)):
                    # The row is exactly what was written: no need to read it back on
                    # the path every refund takes.
                    return Claim(ClaimOutcome.NEW, _inserted_entry(new, owner, lease_until, now))
                entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
                if entry is None:  # pragma: no cover - the insert found it there
                    raise JournalError(f"journal {self.url} lost refund {new.refund_id!r}")
            if entry.fingerprint != new.fingerprint:
                return Claim(ClaimOutcome.CONFLICT, entry)
            if entry.state in (JournalState.PENDING, *_FINAL):
                return Claim(ClaimOutcome.DONE, entry)
            if entry.lease_until is not None and entry.lease_until > now:
                return Claim(ClaimOutcome.BUSY, entry)
            tx.run(
                f"UPDATE {TABLE} SET owner = ?, lease_until = ?, attempts = attempts + 1, "  # noqa: S608
                f"updated_at = ? {_KEY}",
                (
                    owner,
                    self._encode_time(lease_until),
                    self._encode_time(now),
                    new.provider,
                    new.refund_id,
                ),
            )
            return Claim(ClaimOutcome.TAKEOVER, self._refetch(tx, new.provider, new.refund_id))

    def record(
        self,
        provider: str,
        refund_id: str,
        *,
        owner: str,
        state: JournalState,
        provider_refund_id: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
        raw: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> JournalEntry:
        state = JournalState(state)
        if state is JournalState.SUBMITTING:
            raise ValueError("record takes PENDING, SUCCEEDED, FAILED or UNKNOWN")
        now = utc_now(now)
        own = Outcome(
            provider,
            refund_id,
            owner,
            state,
            provider_refund_id,
            message,
            error_code,
            http_status,
            raw,
        )
        # Lost to a power cut, the row is still SUBMITTING and a reconcile asks the
        # gateway: the claim, not the outcome, is what keeps money from going twice.
        recorded = self._alone(_RECORD_OWN, self._own_outcome(own, now), sync=False)
        if recorded:
            return self._entry(recorded[0])
        return self._record_by_rules(own, now)

    def _record_by_rules(self, outcome: Outcome, now: datetime) -> JournalEntry:
        """:meth:`record` for a row that is not, or no longer, its owner's SUBMITTING row:
        a final row stays, a live lease of another owner refuses, a less-informed state
        only gives the lease back."""
        provider, refund_id, owner, state = (
            outcome.provider,
            outcome.refund_id,
            outcome.owner,
            outcome.state,
        )
        provider_refund_id, message, error_code, http_status, raw = (
            outcome.provider_refund_id,
            outcome.message,
            outcome.error_code,
            outcome.http_status,
            outcome.raw,
        )
        with self._transaction(write=True) as tx:
            entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None:
                raise JournalError(
                    f"journal {self.url} has no refund {refund_id!r} of {provider!r} to record"
                )
            if entry.state.is_final:
                return entry
            if (
                entry.owner not in (None, owner)
                and entry.lease_until is not None
                and entry.lease_until > now
            ):
                raise JournalError(
                    f"journal {self.url}: refund {refund_id!r} is leased by another owner "
                    f"until {entry.lease_until.isoformat()}; {owner!r} may not record it"
                )
            if _RANK[state] < _RANK[entry.state]:
                # E.g. a query answering UNKNOWN for a refund already PENDING: keep what
                # is known, only give the lease back.
                tx.run(
                    f"UPDATE {TABLE} SET owner = NULL, lease_until = NULL, updated_at = ? "  # noqa: S608
                    + _KEY,
                    (self._encode_time(now), provider, refund_id),
                )
                return self._refetch(tx, provider, refund_id)
            kept_raw = entry.raw if raw is None else dict(raw)
            tx.run(
                f"UPDATE {TABLE} SET state = ?, "  # noqa: S608
                "provider_refund_id = COALESCE(?, provider_refund_id), message = ?, "
                "error_code = ?, http_status = ?, raw = ?, owner = NULL, "
                f"lease_until = NULL, updated_at = ? {_KEY}",
                (
                    state.value,
                    provider_refund_id,
                    message,
                    error_code,
                    http_status,
                    self._encode_raw(kept_raw),
                    self._encode_time(now),
                    provider,
                    refund_id,
                ),
            )
            # What was just written, without reading the row back.
            return attrs.evolve(
                entry,
                state=state,
                provider_refund_id=provider_refund_id or entry.provider_refund_id,
                message=message,
                error_code=error_code,
                http_status=http_status,
                raw=json.loads(json.dumps(kept_raw, default=str)),
                owner=None,
                lease_until=None,
                updated_at=now,
            )

    def _own_outcome(self, outcome: Outcome, now: datetime) -> tuple[Any, ...]:
        """The values of :data:`_RECORD_OWN_ONLY` for ``outcome``."""
        raw = outcome.raw
        return (
            outcome.state.value,
            outcome.provider_refund_id,
            outcome.message,
            outcome.error_code,
            outcome.http_status,
            None if raw is None else self._encode_raw(raw),
            self._encode_time(now),
            outcome.provider,
            outcome.refund_id,
            outcome.owner,
        )

    def record_many(self, outcomes: Sequence[Outcome], *, now: datetime | None = None) -> None:
        for outcome in outcomes:
            if outcome.state is JournalState.SUBMITTING:
                raise ValueError("record takes PENDING, SUCCEEDED, FAILED or UNKNOWN")
        now = utc_now(now)
        others = []
        if len(outcomes) == 1:
            # One outcome is one statement, as durable as record makes it, without
            # reading the row back: the way a client records the refund it just sent.
            if not self._alone(_RECORD_OWN_ACK, self._own_outcome(outcomes[0], now), sync=False):
                others.append(outcomes[0])
        elif outcomes:
            with self._transaction(write=True) as tx:
                for outcome in outcomes:
                    if not tx.run(_RECORD_OWN_ONLY, self._own_outcome(outcome, now)):
                        others.append(outcome)
        # Not a SUBMITTING row of its owner any more (a callback or a takeover came
        # first): record's own rules decide, one at a time, as rarely as that happens.
        for outcome in others:
            self._record_by_rules(outcome, now)

    def abandon(self, provider: str, refund_id: str, *, owner: str) -> bool:
        with self._transaction(write=True) as tx:
            # A taken-over row (attempts > 1) may have been sent by an earlier attempt:
            # it must stay, whatever this attempt managed.
            removed = tx.run(
                f"DELETE FROM {TABLE} {_KEY} AND owner = ? AND state = ? AND attempts = 1",  # noqa: S608
                (provider, refund_id, owner, JournalState.SUBMITTING.value),
            )
        return bool(removed)

    def apply_notification(
        self,
        provider: str,
        *,
        state: JournalState,
        refund_id: str | None = None,
        provider_refund_id: str | None = None,
        raw: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> JournalEntry | None:
        state = JournalState(state)
        now = utc_now(now)
        with self._transaction(write=True) as tx:
            entry = None
            if refund_id is not None:
                entry = self._fetch(tx, provider, refund_id, lock=True)
            if entry is None and provider_refund_id is not None:
                row = tx.one(
                    f"{_SELECT} WHERE provider = ? AND provider_refund_id = ? "
                    f"ORDER BY created_at, refund_id LIMIT 1{self._for_update}",
                    (provider, provider_refund_id),
                )
                entry = None if row is None else self._entry(row)
            if entry is None:
                return None
            advances = (
                state in (JournalState.PENDING, *_FINAL) and _RANK[state] > _RANK[entry.state]
            )
            fills_id = entry.provider_refund_id is None and provider_refund_id is not None
            if not advances and not fills_id:
                return entry
            new_state = state if advances else entry.state
            # A final row has nothing left to submit: its lease means nothing any more.
            final = new_state.is_final
            lease_until = None if final or entry.lease_until is None else entry.lease_until
            tx.run(
                f"UPDATE {TABLE} SET state = ?, "  # noqa: S608
                "provider_refund_id = COALESCE(provider_refund_id, ?), raw = ?, "
                f"owner = ?, lease_until = ?, updated_at = ? {_KEY}",
                (
                    new_state.value,
                    provider_refund_id,
                    self._encode_raw(raw if advances and raw is not None else entry.raw),
                    None if final else entry.owner,
                    None if lease_until is None else self._encode_time(lease_until),
                    self._encode_time(now),
                    entry.provider,
                    entry.refund_id,
                ),
            )
            return self._refetch(tx, entry.provider, entry.refund_id)

    def get(self, provider: str, refund_id: str) -> JournalEntry | None:
        with self._transaction(write=False) as tx:
            return self._fetch(tx, provider, refund_id, lock=False)

    def find_by_provider_refund_id(
        self, provider: str, provider_refund_id: str
    ) -> JournalEntry | None:
        with self._transaction(write=False) as tx:
            row = tx.one(
                f"{_SELECT} WHERE provider = ? AND provider_refund_id = ? "
                "ORDER BY created_at, refund_id LIMIT 1",
                (provider, provider_refund_id),
            )
            return None if row is None else self._entry(row)

    def entries(
        self, *, unsettled: bool = False, provider: str | None = None, limit: int | None = None
    ) -> list[JournalEntry]:
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        where: list[str] = []
        params: list[Any] = []
        if unsettled:
            where.append(f"state IN ({_states(UNSETTLED_STATES)})")
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        sql += " ORDER BY created_at, provider, refund_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._transaction(write=False) as tx:
            return [self._entry(row) for row in tx.all(sql, params)]

    # -- batches ----------------------------------------------------------------------

    def open_batch(
        self, batch_id: str, items: Sequence[BatchItem], *, now: datetime | None = None
    ) -> None:
        now = utc_now(now)
        stamp = self._encode_time(now)
        # Serialised per batch, so workers opening it together neither deadlock on
        # each other's inserts nor reopen what another has just reopened.
        with self._transaction(write=True, lock=f"batch\0{batch_id}") as tx:
            for start in range(0, len(items), _INSERT_ROWS):
                part = items[start : start + _INSERT_ROWS]
                params: list[Any] = []
                for item in part:
                    params += [batch_id, item.line, item.provider, item.refund_id, stamp]
                tx.run(
                    f"INSERT INTO {BATCH_TABLE} "  # noqa: S608
                    "(batch_id, line, provider, refund_id, state, updated_at) VALUES "
                    + ", ".join(["(?, ?, ?, ?, 'OPEN', ?)"] * len(part))
                    + " ON CONFLICT (batch_id, line) DO NOTHING",
                    params,
                )
            tx.run(
                f"UPDATE {BATCH_TABLE} SET state = 'OPEN', owner = NULL, "  # noqa: S608
                "lease_until = NULL, outcome = NULL, error_code = NULL, message = NULL, "
                "updated_at = ? WHERE batch_id = ? AND state = 'DONE' "
                f"AND outcome NOT IN ({_SETTLED}) AND updated_at < ?",
                (stamp, batch_id, stamp),
            )

    def claim_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        limit: int,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
    ) -> list[int]:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        now = utc_now(now)
        stamp = self._encode_time(now)
        with self._transaction(write=True) as tx:
            # Two queries rather than one with OR: each follows the (batch_id, state,
            # line) index instead of walking past every row already done.
            expired = tx.all(
                f"SELECT line FROM {BATCH_TABLE} WHERE batch_id = ? AND state = 'CLAIMED' "  # noqa: S608
                f"AND lease_until <= ? ORDER BY line LIMIT ?{self._skip_locked}",
                (batch_id, stamp, limit),
            )
            lines = [int(row["line"]) for row in expired]
            if len(lines) < limit:
                fresh = tx.all(
                    f"SELECT line FROM {BATCH_TABLE} WHERE batch_id = ? AND state = 'OPEN' "  # noqa: S608
                    f"ORDER BY line LIMIT ?{self._skip_locked}",
                    (batch_id, limit - len(lines)),
                )
                lines += [int(row["line"]) for row in fresh]
            if lines:
                tx.run(
                    f"UPDATE {BATCH_TABLE} SET state = 'CLAIMED', owner = ?, "  # noqa: S608
                    "lease_until = ?, updated_at = ? WHERE batch_id = ? "
                    f"AND line IN ({', '.join('?' * len(lines))})",
                    (
                        owner,
                        self._encode_time(now + timedelta(seconds=lease_seconds)),
                        stamp,
                        batch_id,
                        *lines,
                    ),
                )
        return lines

    def renew_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        lease_seconds: float = 60.0,
        now: datetime | None = None,
    ) -> int:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        now = utc_now(now)
        with self._transaction(write=True) as tx:
            return tx.run(
                f"UPDATE {BATCH_TABLE} SET lease_until = ? "  # noqa: S608
                "WHERE batch_id = ? AND state = 'CLAIMED' AND owner = ?",
                (self._encode_time(now + timedelta(seconds=lease_seconds)), batch_id, owner),
            )

    def finish_batch(
        self,
        batch_id: str,
        *,
        owner: str,
        done: Sequence[BatchDone],
        now: datetime | None = None,
    ) -> int:
        stamp = self._encode_time(utc_now(now))
        # Rows with the same outcome (most of a chunk, usually) share one statement.
        groups: dict[tuple[str, str | None, str | None], list[int]] = {}
        for item in done:
            groups.setdefault((item.outcome, item.error_code, item.message), []).append(item.line)
        recorded = 0
        with self._transaction(write=True) as tx:
            for (outcome, error_code, message), lines in groups.items():
                for start in range(0, len(lines), _INSERT_ROWS):
                    part = lines[start : start + _INSERT_ROWS]
                    recorded += tx.run(
                        f"UPDATE {BATCH_TABLE} SET state = 'DONE', outcome = ?, "  # noqa: S608
                        "error_code = ?, message = ?, owner = NULL, lease_until = NULL, "
                        "updated_at = ? WHERE batch_id = ? AND state = 'CLAIMED' AND owner = ? "
                        f"AND line IN ({', '.join('?' * len(part))})",
                        (outcome, error_code, message, stamp, batch_id, owner, *part),
                    )
        return recorded

    def release_batch(self, batch_id: str, *, owner: str) -> int:
        with self._transaction(write=True) as tx:
            return tx.run(
                f"UPDATE {BATCH_TABLE} SET state = 'OPEN', owner = NULL, "  # noqa: S608
                "lease_until = NULL WHERE batch_id = ? AND state = 'CLAIMED' AND owner = ?",
                (batch_id, owner),
            )

    def count_batch(self, batch_id: str) -> BatchCounts:
        with self._transaction(write=False) as tx:
            rows = tx.all(
                f"SELECT state, COUNT(*) AS n FROM {BATCH_TABLE} "  # noqa: S608
                "WHERE batch_id = ? GROUP BY state",
                (batch_id,),
            )
        counts = {str(row["state"]): int(row["n"]) for row in rows}
        return BatchCounts(
            open=counts.get("OPEN", 0),
            claimed=counts.get("CLAIMED", 0),
            done=counts.get("DONE", 0),
        )

    def batch_entries(self, batch_id: str) -> list[BatchEntry]:
        with self._transaction(write=False) as tx:
            rows = tx.all(_BATCH_SELECT, (batch_id,))
        entries = []
        for row in rows:
            refund = None
            if row["j_refund_id"] is not None:
                refund = self._entry({name: row[f"j_{name}"] for name in _COLUMNS})
            lease_until = row["lease_until"]
            entries.append(
                BatchEntry(
                    batch_id=row["batch_id"],
                    line=int(row["line"]),
                    provider=row["provider"],
                    refund_id=row["refund_id"],
                    state=BatchItemState(row["state"]),
                    owner=row["owner"],
                    lease_until=None if lease_until is None else self._decode_time(lease_until),
                    outcome=row["outcome"],
                    error_code=row["error_code"],
                    message=row["message"],
                    updated_at=self._decode_time(row["updated_at"]),
                    refund=refund,
                )
            )
        return entries
