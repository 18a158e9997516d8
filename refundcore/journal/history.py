"""Each refund's history over SQL: the append-only events table and how it is read.

Every change the journal makes to a refund row appends its event in the same
transaction, so the history never disagrees with the row. An attempt's send and its
answer are recorded at the same moment and share one stored event (its data says
``sent``); they are read back as the two events they are.

A callback can be delivered any number of times (a gateway retrying, or anyone who
saw a genuine one replaying it, where callbacks carry no timestamp to refuse it by), so
its repeats are folded:
the first delivery of a word (its state and gateway refund id) is kept under a key
(``fold``), the first repeat once more as a duplicate under another, and every later
repeat that changes nothing only counts on that duplicate (``times``, ``last_at``).
Whether a word was heard before is one lookup by its keys, so neither the work nor the
storage of a delivery grows with the deliveries before it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import attrs

from ..status import JournalState
from .pool import Transaction
from .reading import SqlReading
from .schema import EVENT_COLUMNS, EVENTS_TABLE
from .values import EventKind, JournalEntry, JournalEvent

__all__ = ["SENT", "Event", "Heard", "SqlHistory", "answer_data", "fold_key"]

log = logging.getLogger("refundcore.journal")

#: In a stored answer's data: the attempt's request had left (read back as a send).
SENT = "sent"

_KEY = "WHERE provider = ? AND refund_id = ?"
_INSERT = f"INSERT INTO {EVENTS_TABLE} ({', '.join(EVENT_COLUMNS)}) VALUES "  # noqa: S608
_VALUES = f"({', '.join('?' * len(EVENT_COLUMNS))})"
_SELECT = (
    f"SELECT {', '.join(EVENT_COLUMNS)}, times, last_at FROM {EVENTS_TABLE} "  # noqa: S608
    f"{_KEY} ORDER BY id"
)
_INSERT_FOLDED = (
    f"INSERT INTO {EVENTS_TABLE} ({', '.join(EVENT_COLUMNS)}, fold) "  # noqa: S608
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) + 1))})"
)
# Both keys of a word at once: at most two rows, found through the unique index on them.
_FOLDS = f"SELECT id, fold FROM {EVENTS_TABLE} {_KEY} AND fold IN (?, ?)"  # noqa: S608
_COUNT_AGAIN = f"UPDATE {EVENTS_TABLE} SET times = times + 1, last_at = ? WHERE id = ?"  # noqa: S608
#: The kinds of key a callback's word is kept under: its first delivery's, and its
#: repeats'.
_FIRST, _AGAIN = "callback", "callback-again"
# Events per INSERT: few statements, far below SQLite's limit of bound parameters.
_PER_INSERT = 200


class Event(NamedTuple):
    """An event to append, as :meth:`SqlHistory._log` takes it."""

    provider: str
    refund_id: str
    at: datetime
    kind: EventKind
    attempt: int
    state: JournalState | None
    actor: str | None
    data: Mapping[str, Any]


def answer_data(
    provider_refund_id: str | None,
    message: str | None,
    error_code: str | None,
    http_status: int | None,
    raw: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """An answer's evidence for its event, without the fields it does not have."""
    data: dict[str, Any] = {}
    if provider_refund_id is not None:
        data["provider_refund_id"] = provider_refund_id
    if message is not None:
        data["message"] = message
    if error_code is not None:
        data["error_code"] = error_code
    if http_status is not None:
        data["http_status"] = http_status
    if raw:
        data["raw"] = raw
    return data


def fold_key(kind: str, state: JournalState, provider_refund_id: str | None) -> str:
    """The key of a word (its ``state`` and gateway refund id) kept as ``kind`` of
    event: the refund id last, as it may hold spaces, and only where the word has one
    (schema v6 writes the same keys for the callbacks it finds)."""
    key = f"{kind} {state.value}"
    return key if provider_refund_id is None else f"{key} {provider_refund_id}"


class Heard(NamedTuple):
    """Whether a callback's word was heard before (:meth:`SqlHistory._heard`)."""

    #: The keys of its first delivery and of its repeats.
    first: str
    again: str
    #: Its first delivery is in the history: this one is a duplicate.
    before: bool
    #: The stored id of the event its repeats count on, once there is one.
    repeats: Any


class SqlHistory(SqlReading):
    """Appends to and reads refunds' histories; the rules above it record every change."""

    def history(self, provider: str, refund_id: str) -> list[JournalEvent]:
        with self._transaction(write=False) as tx:
            return self._history(tx, provider, refund_id)

    def _log(self, tx: Transaction, events: Sequence[Event]) -> None:
        """Append events to their refunds' histories, within ``tx``."""
        for start in range(0, len(events), _PER_INSERT):
            part = events[start : start + _PER_INSERT]
            params: list[Any] = []
            # The events of one change share its time: encode it once.
            stamps: dict[datetime, Any] = {}
            for provider, refund_id, at, kind, attempt, state, actor, data in part:
                stamp = stamps.get(at)
                if stamp is None:
                    stamp = stamps[at] = self._encode_time(at)
                params += (
                    provider,
                    refund_id,
                    stamp,
                    kind.value,
                    attempt,
                    None if state is None else state.value,
                    actor,
                    self._encode_raw(data),
                )
            tx.run(_INSERT + ", ".join([_VALUES] * len(part)), params)

    def _heard(self, tx: Transaction, word: Event) -> Heard:
        """Whether the callback ``word`` was heard before, by one lookup of its keys
        (never a read of the history)."""
        assert word.state is not None  # a callback always says a state
        provider_refund_id = word.data.get("provider_refund_id")
        first = fold_key(_FIRST, word.state, provider_refund_id)
        again = fold_key(_AGAIN, word.state, provider_refund_id)
        rows = tx.all(_FOLDS, (word.provider, word.refund_id, first, again))
        found = {row["fold"]: row["id"] for row in rows}
        return Heard(first, again, first in found, found.get(again))

    def _log_folded(self, tx: Transaction, event: Event, fold: str) -> None:
        """Append ``event``, kept under ``fold`` for its repeats to be found by."""
        provider, refund_id, at, kind, attempt, state, actor, data = event
        tx.run(
            _INSERT_FOLDED,
            (
                provider,
                refund_id,
                self._encode_time(at),
                kind.value,
                attempt,
                None if state is None else state.value,
                actor,
                self._encode_raw(data),
                fold,
            ),
        )

    def _count_again(self, tx: Transaction, stored: Any, at: datetime) -> None:
        """Count one more delivery, at ``at``, on the stored event ``stored``."""
        tx.run(_COUNT_AGAIN, (self._encode_time(at), stored))

    def _history(self, tx: Transaction, provider: str, refund_id: str) -> list[JournalEvent]:
        events: list[JournalEvent] = []
        for row in tx.all(_SELECT, (provider, refund_id)):
            event = self._event(row)
            if event.data.get(SENT):
                data = dict(event.data)
                del data[SENT]
                sent = JournalEvent(event.at, EventKind.SEND, event.attempt, None, event.actor)
                events += (sent, attrs.evolve(event, data=data))
            else:
                events.append(event)
        return events

    def _forget(self, tx: Transaction, provider: str, refund_id: str) -> None:
        """Drop a refund's history, with the row that was all it was about."""
        tx.run(f"DELETE FROM {EVENTS_TABLE} {_KEY}", (provider, refund_id))  # noqa: S608

    def _contradiction(
        self,
        tx: Transaction,
        entry: JournalEntry,
        now: datetime,
        word: Event,
        held: JournalState,
    ) -> None:
        """Record (and log) ``word``, a gateway's answer that disagrees with what the
        journal ``held`` as settled."""
        facts: dict[str, Any] = {"held": held.value, "source": word.kind.value}
        facts.update(
            (key, value)
            for key, value in word.data.items()
            if key not in (SENT, "applied", "duplicate", "settles", "note")
        )
        if entry.decided_by is not None:
            facts["decided_by"] = entry.decided_by
        event = word._replace(at=now, kind=EventKind.CONTRADICTION, data=facts)
        self._log(tx, [event])
        log.warning(
            "journal %s: refund %r of %s: %s",
            self.url,
            entry.refund_id,
            entry.provider,
            JournalEvent(now, event.kind, event.attempt, event.state, event.actor, facts).detail,
        )
