"""What a merchant could see of a kit run, searched for the provider's secrets.

Everything a check produces through the client is added here: results (their repr,
``message`` and ``raw``), notifications, every exception and its cause, and every error a
plugin's stage raised (:class:`StageWitness`). At the end of
the check the log records (DEBUG included) and the journal's rows are added, and every
configured secret is looked for in all of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Generator, Iterable
from typing import Any

import attrs

from ..config import Secret
from ..crypto import PrivateKey
from ..hookspecs import hookimpl
from ..journal.interface import Journal
from ..logs import record_fields
from ..models import RefundNotification, RefundResult
from ..redaction import Masks

__all__ = ["StageWitness", "Transcript", "secret_texts"]

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


def _raw_text(raw: Any) -> str:
    return json.dumps(dict(raw), default=str, ensure_ascii=False)


class Transcript:
    """Texts of one run, each with where it came from."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

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
        """Record an exception a caller would see, with its cause."""
        self.add("an exception", f"{type(exc).__name__}: {exc}")
        cause = exc.__cause__ or exc.__context__
        if cause is not None:
            self.add("an exception's cause", f"{type(cause).__name__}: {cause}")

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
        masks = Masks(secrets)
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
