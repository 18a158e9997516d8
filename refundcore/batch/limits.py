"""Rate limits: at most so many refunds a second per provider, evenly spaced."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from ..errors import ValidationError

__all__ = ["RateLimits"]


class _Spacing:
    """At most ``rate`` starts a second, evenly spaced: no burst, so a gateway's limit
    per second holds over every window, not just on average."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, halt: threading.Event) -> bool:
        """Block until this caller's turn; False if ``halt`` was set meanwhile."""
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next)
            self._next = turn + self._interval
        return turn <= now or not halt.wait(turn - now)


class RateLimits:
    """One :class:`_Spacing` per provider: ``rate`` is a number for every provider, or
    a mapping of provider id to number where ``"*"`` stands for the others."""

    def __init__(self, rate: float | Mapping[str, float] | None) -> None:
        spec: dict[str, Any] = {}
        if isinstance(rate, Mapping):
            spec = dict(rate)
        elif rate is not None:
            spec = {"*": rate}
        for provider, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValidationError(
                    f"{provider}: must be a positive number of requests per second, got {value!r}",
                    field="rate",
                )
            if value == float("inf"):
                raise ValidationError(f"{provider}: must be finite", field="rate")
        self._default: float | None = spec.pop("*", None)
        self._rates: dict[str, float] = spec
        self._spacings: dict[str, _Spacing] = {}
        self._lock = threading.Lock()

    def wait(self, provider: str, halt: threading.Event) -> bool:
        """Wait for ``provider``'s next slot; False if ``halt`` was set meanwhile."""
        with self._lock:
            spacing = self._spacings.get(provider)
            if spacing is None:
                rate = self._rates.get(provider, self._default)
                if rate is None:
                    return True
                spacing = self._spacings[provider] = _Spacing(rate)
        return spacing.wait(halt)
