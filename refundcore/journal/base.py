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
    "Claim",
    "ClaimOutcome",
    "Journal",
    "JournalEntry",
    "JournalState",
    "NewRefund",
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


def _states(states: Sequence[JournalState]) -> str:
    return ", ".join(f"'{state.value}'" for state in states)


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

    @abc.abstractmethod
    def _transaction(
        self, *, write: bool, lock: str | None = None
    ) -> AbstractContextManager[Transaction]:
        """A transaction (``write``) or a plain read. A write transaction with ``lock``
        holds that key until it ends, so writers of the same key are serialised; every
        driver error becomes a ``JournalError``."""

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
        with self._transaction(write=True, lock=f"{new.provider}\0{new.payment_key}") as tx:
            entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
            if entry is None:
                if new.original_amount is not None:
                    limit = Decimal(new.original_amount)
                    committed = self._committed(tx, new, limit)
                    wanted = limit if new.amount is None else Decimal(new.amount)
                    if committed + wanted > limit:
                        return Claim(ClaimOutcome.OVER_LIMIT, None, refunded=f"{committed:f}")
                values = {name: getattr(new, name) for name in _NEW_COLUMNS}
                values.update(
                    amount=self._encode_amount(new.amount),
                    original_amount=self._encode_amount(new.original_amount),
                    state=JournalState.SUBMITTING.value,
                    raw=self._encode_raw({}),
                    attempts=1,
                    owner=owner,
                    lease_until=self._encode_time(lease_until),
                    created_at=self._encode_time(now),
                    updated_at=self._encode_time(now),
                )
                # ON CONFLICT: a claim of the same refund id for another payment holds
                # another lock; whoever inserts second finds the row below instead.
                inserted = tx.run(
                    f"INSERT INTO {TABLE} ({', '.join(values)}) "  # noqa: S608
                    f"VALUES ({', '.join('?' * len(values))}) "
                    "ON CONFLICT (provider, refund_id) DO NOTHING",
                    tuple(values.values()),
                )
                entry = self._fetch(tx, new.provider, new.refund_id, lock=True)
                if entry is None:  # pragma: no cover - inserted or found by the insert
                    raise JournalError(f"journal {self.url} lost refund {new.refund_id!r}")
                if inserted:
                    return Claim(ClaimOutcome.NEW, entry)
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
            else:
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
                        self._encode_raw(entry.raw if raw is None else raw),
                        self._encode_time(now),
                        provider,
                        refund_id,
                    ),
                )
            return self._refetch(tx, provider, refund_id)

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
