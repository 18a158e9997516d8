"""Each refund's history over SQL: the append-only events table and how it is read.

Every change the journal makes to a refund row appends its event in the same
transaction, so the history never disagrees with the row. An attempt's send and its
answer are recorded at the same moment and share one stored event (its data says
``sent``); they are read back as the two events they are.
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

__all__ = ["SENT", "Event", "SqlHistory", "answer_data"]

log = logging.getLogger("refundcore.journal")

#: In a stored answer's data: the attempt's request had left (read back as a send).
SENT = "sent"

_KEY = "WHERE provider = ? AND refund_id = ?"
_INSERT = f"INSERT INTO {EVENTS_TABLE} ({', '.join(EVENT_COLUMNS)}) VALUES "  # noqa: S608
_VALUES = f"({', '.join('?' * len(EVENT_COLUMNS))})"
_SELECT = f"SELECT {', '.join(EVENT_COLUMNS)} FROM {EVENTS_TABLE} {_KEY} ORDER BY id"  # noqa: S608
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
