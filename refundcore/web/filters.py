"""Every input the console takes from a browser, checked before it reaches the journal:
a bad one is a 400 that names the field and the problem."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from http import HTTPStatus

import attrs

from ..durations import parse_duration
from ..errors import ValidationError
from ..status import JournalState
from .http import HttpError, Request

__all__ = [
    "MAX_PAGE",
    "RefundFilter",
    "check_reason",
    "check_text",
    "page_param",
    "provider_param",
    "span_param",
    "state_param",
]

MAX_PAGE = 100_000
# Provider ids and the ids of refunds, payments and batches: printable ASCII, no spaces.
_PROVIDER = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
_ID = re.compile(r"[!-~]{1,128}\Z")
REASON_MAX = 500


def _bad(field: str, problem: str) -> HttpError:
    return HttpError(HTTPStatus.BAD_REQUEST, f"{field}: {problem}", field=field)


def state_param(text: str, field: str = "status") -> JournalState | None:
    """A journal state by name (any case), or ``None`` for ``""``."""
    if not text:
        return None
    try:
        return JournalState(text.strip().upper())
    except ValueError:
        known = ", ".join(state.value for state in JournalState)
        raise _bad(field, f"{text[:40]!r} is not one of {known}") from None


def provider_param(text: str, field: str = "provider") -> str | None:
    """A provider id, or ``None`` for ``""``."""
    if not text:
        return None
    if not _PROVIDER.match(text):
        raise _bad(field, f"{text[:40]!r} is not a provider id (letters, digits, . _ -)")
    return text


def check_text(text: str, field: str) -> str:
    """An id typed or linked by an operator: printable ASCII without spaces."""
    cleaned = text.strip()
    if not _ID.match(cleaned):
        raise _bad(field, "give 1 to 128 printable ASCII characters without spaces")
    return cleaned


def check_reason(text: str, field: str = "reason") -> str:
    """An operator's reason for a decision: required, one line of plain text."""
    cleaned = " ".join(text.split())
    if not cleaned:
        raise _bad(field, "say why: the reason is kept with the decision")
    if len(cleaned) > REASON_MAX or not cleaned.isprintable():
        raise _bad(field, f"give at most {REASON_MAX} printable characters")
    return cleaned


def _date_param(text: str, field: str) -> date | None:
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise _bad(field, f"{text[:40]!r} is not a date like 2026-03-01") from None
    if not 1970 <= day.year <= 9000:
        raise _bad(field, f"{text!r} is not a date between 1970 and 9000")
    return day


def page_param(text: str, field: str = "page") -> int:
    """A page number, 1 for ``""``."""
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE:
        raise _bad(field, f"{text[:40]!r} is not a page number from 1 to {MAX_PAGE}")
    return int(text)


def span_param(text: str, default: timedelta, field: str) -> timedelta:
    """A span such as ``30m`` or ``2d``; ``default`` for ``""``."""
    if not text:
        return default
    try:
        return parse_duration(text, field=field)
    except ValidationError as exc:
        raise _bad(field, str(exc).partition(": ")[2]) from None


@attrs.frozen
class RefundFilter:
    """What the refunds view was asked to show."""

    status: JournalState | None = None
    provider: str | None = None
    since: date | None = None
    until: date | None = None
    search: str | None = None
    page: int = 1

    @classmethod
    def of(cls, request: Request) -> RefundFilter:
        """The filter in ``request``'s query; 400 for any bad value."""
        search = request.param("q")
        since = _date_param(request.param("since"), "since")
        until = _date_param(request.param("until"), "until")
        if since is not None and until is not None and until < since:
            raise _bad("until", "must not be before since")
        return cls(
            status=state_param(request.param("status")),
            provider=provider_param(request.param("provider")),
            since=since,
            until=until,
            search=check_text(search, "q") if search.strip() else None,
            page=page_param(request.param("page")),
        )

    @property
    def created_since(self) -> datetime | None:
        """The first instant of ``since`` (UTC)."""
        if self.since is None:
            return None
        return datetime.combine(self.since, time(), tzinfo=timezone.utc)

    @property
    def created_before(self) -> datetime | None:
        """The instant after ``until`` ends (UTC): ``until`` is included."""
        if self.until is None:
            return None
        return datetime.combine(self.until + timedelta(days=1), time(), tzinfo=timezone.utc)

    def params(self, **changes: object) -> dict[str, object]:
        """The query parameters that ask for this filter again (with ``changes``)."""
        params: dict[str, object] = {
            "status": self.status.value if self.status else None,
            "provider": self.provider,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "q": self.search,
            "page": self.page if self.page > 1 else None,
        }
        params.update(changes)
        return params
