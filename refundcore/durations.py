"""Spans and instants as an operator types them (``90m``, ``1h30m``, ``2026-03-01``),
and ages as one reads them (``3h 05m``): shared by the command line and the console."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from .errors import ValidationError

__all__ = ["format_age", "parse_duration", "parse_since"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"([0-9]{1,7})([smhdw])")
_DURATION = re.compile(r"(?:[0-9]{1,7}[smhdw]){1,5}\Z")
# Longer than any journal has existed; keeps datetime arithmetic in range.
_LONGEST = timedelta(days=36500)
_HINT = "a span like 90s, 15m, 1h30m, 2d or 1w"


def parse_duration(text: str, *, field: str) -> timedelta:
    """A span such as ``30s``, ``15m``, ``1h30m``, ``2d`` or ``1w`` (positive).

    ``ValidationError`` naming ``field`` for anything else.
    """
    cleaned = text.strip().lower() if isinstance(text, str) else ""
    if not _DURATION.match(cleaned):
        raise ValidationError(f"{text!r} is not {_HINT}", field=field)
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(cleaned))
    span = timedelta(seconds=seconds)
    if not timedelta(0) < span <= _LONGEST:
        raise ValidationError(f"{text!r} must be more than 0 and at most 100 years", field=field)
    return span


def parse_since(text: str, *, field: str, now: datetime) -> datetime:
    """An instant: an ISO date (``2026-03-01``, midnight UTC), an ISO date and time
    (UTC unless it names its offset), or a span meaning that long before ``now``.

    ``ValidationError`` naming ``field`` for anything else.
    """
    cleaned = text.strip() if isinstance(text, str) else ""
    if _DURATION.match(cleaned.lower()):
        return now - parse_duration(cleaned, field=field)
    try:
        if len(cleaned) == 10:
            day = date.fromisoformat(cleaned)
            return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        instant = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
        if instant.tzinfo is None or instant.utcoffset() is None:
            instant = instant.replace(tzinfo=timezone.utc)
        return instant.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ValidationError(
            f"{text!r} is not a date (2026-03-01), a date and time (2026-03-01T14:30) or {_HINT}",
            field=field,
        ) from None


def format_age(span: timedelta) -> str:
    """``span`` in its two largest units, e.g. ``45s``, ``12m 05s``, ``3h 05m``, ``2d 04h``."""
    seconds = max(0, int(span.total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"
