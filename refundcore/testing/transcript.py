"""What a merchant could see of a kit run, searched for the provider's secrets.

Everything a check produces through the client is added here: results (their repr,
``message`` and ``raw``), notifications, every exception and its cause, the local
variables of every frame of their tracebacks (:func:`traceback_texts`), and every error
a plugin's stage raised (:class:`StageWitness`). At the end of the check the log records
(DEBUG included) and the journal's rows are added, and every configured secret is looked
for in all of it.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Generator, Iterable, Iterator
from typing import Any

import attrs

from ..config import Secret
from ..crypto import PrivateKey
from ..hookspecs import hookimpl
from ..journal.interface import Journal
from ..logs import record_fields
from ..models import RefundNotification, RefundResult
from ..redaction import Masks

__all__ = [
    "StageWitness",
    "Transcript",
    "exception_chain",
    "secret_masks",
    "secret_texts",
    "traceback_texts",
]

# Shorter values would match by chance (and cannot be worth stealing).
_MIN_SECRET = 4


def secret_texts(config: Any) -> list[str]:
    """The secret values of a provider config: each :class:`Secret`, and each line of
    a private key's PEM body."""
    texts = []
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if isinstance(value, Secret):
            texts.append(value.reveal())
        elif isinstance(value, PrivateKey):
            lines = value.to_pem().splitlines()
            texts += [line for line in lines[1:-1] if len(line) >= 32]
    return [text for text in texts if len(text) >= _MIN_SECRET]


def secret_masks(config: Any) -> Masks:
    """The :class:`~refundcore.redaction.Masks` of :func:`secret_texts` of ``config``."""
    return _masks_of(tuple(secret_texts(config)))


# Keyed by the secrets themselves, so masks never outlive the secrets they search for;
# a config's are asked for more than once (its settings vaulted, the scan at the end).
@functools.lru_cache(maxsize=8)
def _masks_of(secrets: tuple[str, ...]) -> Masks:
    return Masks(secrets)


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception reachable from it, each once: causes, contexts
    (suppressed or not: an error reporter may show them) and members of groups."""
    pending: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]
        pending += getattr(current, "exceptions", None) or ()


def traceback_texts(exc: BaseException) -> Iterator[tuple[str, str]]:
    """``(where, text)`` of all an error reporter that records a traceback's local
    variables (Sentry's Python SDK does by default) could show of ``exc``: the text
    and notes of every exception in its chain (:func:`exception_chain`), and the repr
    of every local of every frame of their tracebacks, as the values are now.

    Each repr is whole, so no secret is missed in a long one; an object held by several
    frames (a config, a client) is rendered once per call. The traceback starts at the
    frame that caught ``exc``: a caller checking what the plugin and the core hold
    catches where it holds no secret itself."""
    rendered: set[int] = set()
    for current in exception_chain(exc):
        kind = type(current).__name__
        yield f"a traceback's {kind}", f"{kind}: {_safe(str, current)}"
        for note in getattr(current, "__notes__", None) or ():
            yield f"a note of a traceback's {kind}", _safe(str, note)
        tb = current.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            # co_qualname (Python 3.11+) names the class too.
            function = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
            for name, value in frame.f_locals.items():
                if id(value) in rendered:
                    continue
                rendered.add(id(value))
                yield f"a traceback local {name!r} of {function}", _safe(repr, value)
            tb = tb.tb_next


def _safe(render: Any, value: object) -> str:
    try:
        return str(render(value))
    except Exception as failure:  # a reporter shows what it can, and so does the search
        return f"<{render.__name__} failed: {type(failure).__name__}>"


def _raw_text(raw: Any) -> str:
    return json.dumps(dict(raw), default=str, ensure_ascii=False)


class Transcript:
    """Texts of one run, each with where it came from."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []
        self._seen: set[str] = set()

    def add(self, where: str, text: str) -> None:
        """Record ``text`` as seen in ``where``."""
        self.texts.append((where, text))

    def result(self, result: RefundResult) -> None:
        """Record a result as a caller sees it."""
        self.add("a result", repr(result))
        self.add("a result's message", result.message or "")
        self.add("a result's raw", _raw_text(result.raw))

    def note(self, note: RefundNotification) -> None:
        """Record a verified notification."""
        self.add("a notification", repr(note))
        self.add("a notification's raw", _raw_text(note.raw))

    def error(self, exc: BaseException) -> None:
        """Record an exception a caller would see: its text, and all
        :func:`traceback_texts` finds of it and the exceptions behind it (the repr of
        every frame's locals, as when it was caught). A text already recorded is not
        kept twice: the same config or client is in the frames of every error."""
        self.add("an exception", f"{type(exc).__name__}: {exc}")
        for where, text in traceback_texts(exc):
            if text not in self._seen:
                self._seen.add(text)
                self.add(where, text)

    def logs(self, records: Iterable[logging.LogRecord]) -> None:
        """Record log records (message, and any traceback the handler would print)."""
        formatter = logging.Formatter()
        for record in records:
            self.add(f"a log record of {record.name!r}", record.getMessage())
            self.add(
                f"a log record's fields of {record.name!r}",
                json.dumps(record_fields(record), default=str),
            )
            if record.exc_info:
                self.add(
                    f"a log traceback of {record.name!r}",
                    formatter.formatException(record.exc_info),
                )

    def journal(self, journal: Journal | None) -> None:
        """Record every journal row."""
        if journal is None:
            return
        for entry in journal.entries():
            self.add("a journal row", repr(entry))

    def leak(self, secrets: list[str]) -> tuple[str, str] | None:
        """``(where, excerpt)`` of the first secret found, in any letter case or encoded
        form the client masks (see :mod:`refundcore.redaction`), or ``None``. The
        excerpt shows the text around the secret with the secret itself masked."""
        masks = _masks_of(tuple(secrets))
        for where, text in self.texts:
            span = masks.locate(text)
            if span is not None:
                start, end = span
                excerpt = text[max(0, start - 60) : start] + "<SECRET>" + text[end : end + 60]
                return where, excerpt
        return None


class StageWitness:
    """An app plugin that records every exception a plugin's stage raises, as raised:
    refundcore masks configured secrets in errors before anyone sees them, and the kit
    holds the plugin to the rule on its own (a secret it derives, or one the core does
    not know of, would not be masked)."""

    def __init__(self, transcript: Transcript) -> None:
        self._transcript = transcript

    def _witness(self) -> Generator[None, Any, Any]:
        try:
            return (yield)
        except Exception as exc:
            self._transcript.add("an error a plugin raised", f"{type(exc).__name__}: {exc}")
            raise

    refundcore_build_request = hookimpl(wrapper=True)(_witness)
    refundcore_sign_request = hookimpl(wrapper=True)(_witness)
    refundcore_parse_response = hookimpl(wrapper=True)(_witness)
    refundcore_verify_callback = hookimpl(wrapper=True)(_witness)
