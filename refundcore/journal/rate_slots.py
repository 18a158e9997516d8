"""A rate limit shared by every worker of a PostgreSQL journal: one row per key holds
when its next request may start, and each worker takes the next free slot with one
atomic statement on the journal's clock.

It is a token bucket holding one token (the generic cell rate algorithm): requests are
spaced ``1 / rate`` seconds apart across all workers together, with no burst, so a
gateway's limit per second holds over every window, as a single process's limit does
(:mod:`refundcore.batch.limits`). A slot taken by a worker that then does not send is
lost: the achieved rate can only fall short of the requested one, never exceed it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .schema import SCHEMA_TABLE

if TYPE_CHECKING:
    from .postgres import PostgresJournal

__all__ = ["RateSlots"]

RATE_TABLE = "refundcore_rate_slots"

_CREATE = f"""CREATE TABLE IF NOT EXISTS {RATE_TABLE} (
    key TEXT PRIMARY KEY,
    next_at TIMESTAMPTZ NOT NULL
)"""
# The new row's next_at is the taken slot's start plus one interval.
_TAKE = (
    f"INSERT INTO {RATE_TABLE} AS s (key, next_at) "  # noqa: S608 - constant name
    "VALUES (?, clock_timestamp() + make_interval(secs => ?)) "
    "ON CONFLICT (key) DO UPDATE SET next_at = "
    "GREATEST(s.next_at, clock_timestamp()) + make_interval(secs => ?) "
    "RETURNING GREATEST(0, EXTRACT(EPOCH FROM (s.next_at - clock_timestamp())) - ?) AS wait"
)


class RateSlots:
    """The shared rate limits of the PostgreSQL journal ``journal``."""

    def __init__(self, journal: PostgresJournal) -> None:
        self._transaction = journal._transaction
        with self._transaction(write=True, lock=SCHEMA_TABLE) as tx:
            tx.run(_CREATE)

    def take(self, key: str, rate: float) -> float:
        """Take the next slot of ``key`` at ``rate`` requests a second (every worker
        naming ``key`` shares it); the seconds to wait before starting the request."""
        if not 0 < rate < float("inf"):
            raise ValueError("rate must be a positive number")
        interval = 1.0 / rate
        with self._transaction(write=True) as tx:
            found = tx.one(_TAKE, (key, interval, interval, interval))
        return 0.0 if found is None else float(found["wait"])
