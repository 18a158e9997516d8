"""Structured log records: the fields every record from ``refundcore.*`` carries.

Each record has these attributes (set through ``extra``), ``None`` where one does not
apply, so a formatter can read them without checking:

``provider``
    the provider id
``operation``
    ``refund``, ``query``, ``void`` or ``callback``
``refund_id``
    the refund the record is about
``status``
    ``SUCCEEDED``, ``PENDING``, ``FAILED`` or ``UNKNOWN``, once an outcome is known
``attempt``
    which attempt at the refund id this is (the journal's count; ``None`` without one)
``duration_ms``
    how long the operation or the stage took
``batch_line``
    the line of the batch file the refund comes from

Some records add their own (``stage``, ``source``, ``error_code``, ``error``, …). The
message of an event never changes (``"operation finished"``, ``"stage finished"``):
group and filter on it, read the rest from the fields. One record per operation is
logged at INFO, each stage, journal step and HTTP exchange at DEBUG.

An operation's records are logged on its thread, inside its :class:`OperationScope`,
which fills in the operation's fields: even the transport's records name the refund
they belong to. Messages are constant and never carry values; free text in a field (an
error's text) is masked with the client's :class:`~refundcore.redaction.Redactor`
before it is logged, so no configured secret reaches a log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import attrs

from .models import RefundNotification, RefundResult

__all__ = [
    "FIELDS",
    "EventLogger",
    "OperationScope",
    "Scope",
    "batch_line",
    "log_finished",
    "milliseconds",
    "note_attempt",
    "record_fields",
]

#: The fields every record carries.
FIELDS = ("provider", "operation", "refund_id", "status", "attempt", "duration_ms", "batch_line")


@attrs.define
class Scope:
    """The fields of the operation running on this thread (or task)."""

    provider: str
    operation: str
    refund_id: str | None
    attempt: int | None = None


_scope: ContextVar[Scope | None] = ContextVar("refundcore_log_scope", default=None)
_batch_line: ContextVar[int | None] = ContextVar("refundcore_log_batch_line", default=None)


class OperationScope:
    """A context manager: records logged inside carry the operation's provider, kind
    and refund id. (A class, not a generator: every operation enters one.)"""

    __slots__ = ("_token", "scope")

    def __init__(self, provider: str, operation: str, refund_id: str | None) -> None:
        self.scope = Scope(provider, operation, refund_id)

    def __enter__(self) -> Scope:
        self._token = _scope.set(self.scope)
        return self.scope

    def __exit__(self, *exc_info: object) -> None:
        _scope.reset(self._token)


def note_attempt(attempt: int) -> None:
    """Records of the current operation from now on carry ``attempt``."""
    scope = _scope.get()
    if scope is not None:
        scope.attempt = attempt


@contextmanager
def batch_line(line: int | None) -> Iterator[None]:
    """Records logged inside carry the batch file's ``line``."""
    token = _batch_line.set(line)
    try:
        yield
    finally:
        _batch_line.reset(token)


class EventLogger:
    """A :class:`logging.Logger` that logs events: a constant message, fields in
    ``extra`` (every one of :data:`FIELDS`, the current operation's filled in)."""

    __slots__ = ("logger",)

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def enabled(self, level: int) -> bool:
        """Whether a record at ``level`` would be handled (skip costly fields if not)."""
        return self.logger.isEnabledFor(level)

    def debug(self, message: str, *, exc_info: bool = False, **fields: Any) -> None:
        """Log an event at DEBUG (with the exception being handled if ``exc_info``)."""
        self._emit(logging.DEBUG, message, fields, exc_info)

    def info(self, message: str, *, exc_info: bool = False, **fields: Any) -> None:
        """Log an event at INFO (with the exception being handled if ``exc_info``)."""
        self._emit(logging.INFO, message, fields, exc_info)

    def warning(self, message: str, *, exc_info: bool = False, **fields: Any) -> None:
        """Log an event at WARNING (with the exception being handled if ``exc_info``)."""
        self._emit(logging.WARNING, message, fields, exc_info)

    def error(self, message: str, *, exc_info: bool = False, **fields: Any) -> None:
        """Log an event at ERROR (with the exception being handled if ``exc_info``)."""
        self._emit(logging.ERROR, message, fields, exc_info)

    def exception(self, message: str, **fields: Any) -> None:
        """Log an event at ERROR with the exception being handled."""
        self._emit(logging.ERROR, message, fields, True)

    def log(self, level: int, message: str, **fields: Any) -> None:
        """Log an event at ``level``."""
        self._emit(level, message, fields, False)

    def _emit(self, level: int, message: str, fields: dict[str, Any], exc_info: bool) -> None:
        if not self.logger.isEnabledFor(level):
            return
        extra = dict.fromkeys(FIELDS)
        scope = _scope.get()
        if scope is not None:
            extra["provider"] = scope.provider
            extra["operation"] = scope.operation
            extra["refund_id"] = scope.refund_id
            extra["attempt"] = scope.attempt
        extra["batch_line"] = _batch_line.get()
        extra.update(fields)
        # stacklevel 3: the record names the line that called debug()/info()/…
        self.logger.log(level, message, exc_info=exc_info, extra=extra, stacklevel=3)


# What every LogRecord has: anything else on a record came in through ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a record carries in ``extra`` that are set (not ``None``): what a
    JSON formatter adds to the message, level and logger name."""
    return {
        name: value
        for name, value in record.__dict__.items()
        if name not in _STANDARD and value is not None
    }


def milliseconds(seconds: float) -> float:
    """A duration for ``duration_ms``."""
    return round(seconds * 1000, 3)


def log_finished(log: EventLogger, outcome: object, seconds: float) -> None:
    """The one INFO record of an operation that gave a result or a notification."""
    if isinstance(outcome, RefundResult):
        log.info(
            "operation finished",
            status=outcome.status.value,
            source=outcome.source.value,
            error_code=outcome.error_code,
            duration_ms=milliseconds(seconds),
        )
    elif isinstance(outcome, RefundNotification):
        log.info(
            "operation finished",
            refund_id=outcome.refund_id,
            status=outcome.status.value,
            event=outcome.event,
            duplicate=outcome.duplicate,
            verdict=outcome.verdict.value,
            duration_ms=milliseconds(seconds),
        )
