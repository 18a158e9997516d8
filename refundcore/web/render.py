"""Turning journal values into HTML: the template environment and what the templates
call on (ages, amounts, the stored reply with anything secret-looking masked)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import jinja2

from ..durations import format_age

__all__ = ["MASK", "environment", "masked"]

MASK = "***"
# Key names that hold credentials in some gateway's replies or callbacks. The client
# already removes every configured secret's value before a reply is journalled; this
# second net keeps such a field out of the page even if a plugin journalled one.
_SECRET_KEY = re.compile(
    r"secret|passw|token|api[_-]?key|private|credential|authori[sz]ation|rcode|cookie", re.I
)


def masked(value: Any) -> Any:
    """``value`` with every item under a secret-looking key replaced by :data:`MASK`."""
    if isinstance(value, Mapping):
        return {
            str(key): MASK if _SECRET_KEY.search(str(key)) else masked(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked(item) for item in value]
    return value


def _pretty(value: Any) -> str:
    return json.dumps(masked(value), indent=2, sort_keys=True, ensure_ascii=False, default=str)


def _when(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _stamp(value: datetime) -> str:
    """A history event's time to the millisecond, as ``refundcore journal show`` prints it."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _age(value: datetime | None, now: datetime) -> str:
    return "" if value is None else format_age(now - value)


def environment() -> jinja2.Environment:
    """The console's templates (shipped in the package), escaped by default."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("refundcore.web", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = _pretty
    env.filters["when"] = _when
    env.filters["stamp"] = _stamp
    env.filters["age"] = _age
    env.filters["span"] = format_age
    return env
