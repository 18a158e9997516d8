"""Fresh refund ids: ULIDs, unique and sorting by when they were made."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_refund_id"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class _MonotonicUlid:
    """ULIDs in the spec's monotonic mode: within one millisecond the random part counts
    up, so ids made by one process sort in the order they were made (a random part
    alone would order ids of the same millisecond by chance)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def __call__(self) -> str:
        with self._lock:
            value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
            if value >> 80 <= self._last >> 80:
                value = self._last + 1
            self._last = value
        return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


_next_ulid = _MonotonicUlid()


def new_refund_id() -> str:
    """A fresh refund id: 26 characters, unique, and sorting by creation time (a ULID;
    ids from one process sort in the order they were made)."""
    return _next_ulid()
