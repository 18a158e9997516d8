"""Secret scrubbing: the one place that keeps configured credentials out of whatever
refundcore hands back, logs or stores.

A provider's config names its secrets (its :class:`~refundcore.config.Secret`
fields). A :class:`Redactor` learns them as each config is loaded and masks them
wherever a gateway or a plugin could echo them: a result's reply, message and ids
(the journal stores the finished result, so its rows are clean too), a verified
callback, a batch report's messages, an error's text and every error behind it.

A secret is masked in any letter case and in the forms a gateway or an HTTP stack may
echo it in: URL-encoded, JSON-escaped, hex, base64 (at any of the three alignments it
can have inside a longer text), each line of a multi-line secret (a PEM body); and a
message or an error's text cut short (an error's text is cut at 200 characters) loses
a trailing start of one. A secret split across fields, a start of one left in a reply's
``raw``, or a secret shorter than four characters is not masked: none can be told from
text that merely looks like it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, quote_plus

import attrs

from .config import Secret
from .models import RefundNotification

__all__ = [
    "MASK",
    "Masks",
    "Redactor",
    "error_reason",
    "scrub",
    "secret_values",
    "without_queries",
]

#: What a secret is replaced with.
MASK = "********"

# Shorter values are too likely to occur by chance in a reply to be masked in it.
_MIN_SECRET = 4
# A form made from a secret (its hex, a base64 core, a line) is masked from this length:
# a shorter one says little of the secret and would match ordinary text.
_MIN_FORM = 8
# The fewest characters of a secret's start at the end of a text that are masked.
_MIN_PREFIX = 4


class Masks:
    """What masking a set of secrets searches for, made once per config: every form of
    each secret (see the module's description), lower-cased for a case-blind search,
    and one pattern that replaces them all (compiled when a text first holds one)."""

    __slots__ = ("_forms", "_needles", "_pattern", "_starts")

    def __init__(self, secrets: Iterable[str]) -> None:
        secrets = tuple(secrets)
        forms = {form for secret in secrets for form in _forms(secret)}
        # Longest first: the pattern then masks a form whole rather than a part of it.
        self._forms = tuple(
            sorted({form.lower(): form for form in forms}.values(), key=len, reverse=True)
        )
        self._needles = tuple(form.lower() for form in self._forms)
        # Compiled when a text first holds a secret: the needles clear a clean text on
        # their own, and compiling the alternation of every form costs more than many
        # searches (tens of milliseconds for the lines of a PEM key).
        self._pattern: re.Pattern[str] | None = None
        # What a text cut short may end with: a secret's start (not an encoded form's).
        self._starts = tuple(
            (secret.lower()[:_MIN_PREFIX], secret.lower())
            for secret in secrets
            if len(secret) > _MIN_PREFIX
        )

    def __bool__(self) -> bool:
        return bool(self._needles)

    def found(self, lowered: str) -> bool:
        """True when ``lowered`` (a lower-cased text) holds a form of a secret."""
        return any(map(lowered.__contains__, self._needles))

    def locate(self, text: str) -> tuple[int, int] | None:
        """Where in ``text`` the first form of a secret is (start, end); None if nowhere."""
        if not self._needles or not self.found(text.lower()):
            return None
        match = self._compiled().search(text)
        return (0, len(text)) if match is None else match.span()

    def mask(self, text: str) -> str:
        """``text`` with every form of every secret masked; ``text`` itself when clean."""
        return self._mask(text, text.lower())

    def _mask(self, text: str, lowered: str) -> str:
        if not self._needles or not self.found(lowered):
            return text
        masked = self._compiled().sub(MASK, text)
        if masked is text or self.found(masked.lower()):
            # Lower-casing changed the text's length (a few non-ASCII letters do), so the
            # pattern and the search disagree: the whole text goes.
            return MASK
        return masked

    def _compiled(self) -> re.Pattern[str]:
        pattern = self._pattern
        if pattern is None:
            # Threads that get here together each compile the same pattern: any one kept.
            pattern = re.compile("|".join(map(re.escape, self._forms)), re.IGNORECASE)
            self._pattern = pattern
        return pattern

    def mask_text(self, text: str) -> str:
        """:meth:`mask`, and a secret's start left at the end of ``text`` (the text was
        cut short, perhaps before an ellipsis or a closing bracket) masked too."""
        lowered = text.lower()
        masked = self._mask(text, lowered)
        if masked is not text:
            text, lowered = masked, masked.lower()
        if len(lowered) != len(text):  # see _mask(): positions would not line up
            return text
        end = len(lowered.rstrip(_CUT_ENDS))
        for start, secret in self._starts:
            at = lowered.find(start, max(end - len(secret) + 1, 0), end)
            while at >= 0:
                if secret.startswith(lowered[at:end]):
                    return text[:at] + MASK + text[end:]
                at = lowered.find(start, at + 1, end)
        return text


# What may follow where a text was cut: an ellipsis, the brackets and quotes around it.
_CUT_ENDS = "…)]}'\" "


def _forms(secret: str) -> set[str]:
    """``secret`` and the forms it may be echoed in, those long enough to be masked."""
    forms = {secret} if len(secret) >= _MIN_SECRET else set()
    if not forms:
        return forms
    data = secret.encode("utf-8")
    escaped = json.dumps(secret)[1:-1]
    derived = {
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        escaped,
        escaped.replace("/", "\\/"),
        data.hex(),
    }
    # Base64 of the secret inside a longer text starts at any of three byte alignments:
    # the characters that depend on the secret's bytes alone are the same whatever
    # surrounds it.
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii").rstrip("=")
        first = -(-offset * 8 // 6)
        last = (offset + len(data)) * 8 // 6
        core = encoded[first:last]
        derived.add(core)
    if "\n" in secret:
        derived |= {line.strip() for line in secret.splitlines() if "-----" not in line}
    return forms | {form for form in derived if len(form) >= _MIN_FORM}


@functools.lru_cache(maxsize=64)
def _masks_of(secrets: tuple[str, ...]) -> Masks:
    return Masks(secrets)


class Redactor:
    """Masks each provider's configured secrets; shared by every path of one client.

    Thread-safe: a provider's secrets are replaced as a whole when its config is
    (re)loaded, and read without a lock.
    """

    def __init__(self) -> None:
        self._masks: dict[str, Masks] = {}

    def learn(self, provider_id: str, config: Any) -> None:
        """Mask ``config``'s secrets in what ``provider_id`` produces from now on
        (replacing those of the provider's previous config)."""
        masks = Masks(secret_values(config))
        if masks:
            self._masks[provider_id] = masks
        else:
            self._masks.pop(provider_id, None)

    def value(self, provider_id: str, value: Any) -> Any:
        """``value`` (a reply: text, mappings, lists) with ``provider_id``'s secrets
        masked; the same object when it holds none (see :func:`scrub`)."""
        masks = self._masks.get(provider_id)
        return value if masks is None else scrub(value, masks)

    def text(self, provider_id: str, text: str | None) -> str | None:
        """A message, an id or an error's text with ``provider_id``'s secrets masked
        (a start of one at its end too: such texts are often cut short)."""
        masks = self._masks.get(provider_id)
        if text is None or masks is None:
            return text
        return masks.mask_text(str(text))

    def notification(self, provider_id: str, note: RefundNotification) -> RefundNotification:
        """``note`` stamped with ``provider_id`` and its secrets masked: every text a
        gateway put in it (its raw, event, ids and payment), the same object when it
        needs neither."""
        masks = self._masks.get(provider_id)
        changes: dict[str, Any] = {} if note.provider == provider_id else {"provider": provider_id}
        if masks is not None:
            payment = note.payment
            # Searched with its raw as one text (None reads "None": a false alarm at
            # worst), as nearly every callback holds no secret.
            joined = f"{note.event}\0{note.refund_id}\0{note.provider_refund_id}"
            if payment is not None:
                joined += (
                    f"\0{payment.payment_id}\0{payment.merchant_reference}"
                    f"\0{payment.transaction_id}"
                )
            if not _surely_clean(note.raw, masks, joined):
                raw = scrub(note.raw, masks)
                if raw is not note.raw:
                    changes["raw"] = raw
                texts = {name: getattr(note, name) for name in _NOTE_TEXTS}
                changes.update(_masked_texts(texts, masks))
                if payment is not None:
                    paid = {name: getattr(payment, name) for name in _PAYMENT_TEXTS}
                    masked = _masked_texts(paid, masks)
                    if masked:
                        changes["payment"] = attrs.evolve(payment, **masked)
        return attrs.evolve(note, **changes) if changes else note

    def exception(self, provider_id: str, exc: BaseException) -> BaseException:
        """``exc``, masked in place (so a ``raise`` keeps it and its traceback), with
        every exception it was raised from, raised during or groups: their messages
        reach logs and tracebacks as surely as the error itself does."""
        masks = self._masks.get(provider_id)
        if masks is not None:
            seen: set[int] = set()
            pending: list[BaseException | None] = [exc]
            while pending:
                current = pending.pop()
                if current is None or id(current) in seen:
                    continue
                seen.add(id(current))
                _mask_exception(current, masks)
                pending += [current.__cause__, current.__context__]
                pending += getattr(current, "exceptions", None) or ()
        return exc


def secret_values(config: Any) -> tuple[str, ...]:
    """The revealed values of ``config``'s :class:`Secret` fields (none when it is not
    an attrs class)."""
    if not attrs.has(type(config)):
        return ()
    values = []
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if isinstance(value, Secret) and len(value.reveal()) >= _MIN_SECRET:
            values.append(value.reveal())
    return tuple(values)


# A notification's texts the gateway chose, and those of its payment.
_NOTE_TEXTS = ("event", "refund_id", "provider_refund_id")
_PAYMENT_TEXTS = ("payment_id", "merchant_reference", "transaction_id")


def _masked_texts(texts: Mapping[str, str | None], masks: Masks) -> dict[str, str]:
    """Those of ``texts`` that hold a secret, masked."""
    masked = {name: masks.mask(text) for name, text in texts.items() if text is not None}
    return {name: text for name, text in masked.items() if text is not texts[name]}


# Text an exception's str() or traceback shows that is kept outside its __dict__ (an
# OSError's file names, a UnicodeError's object, a SyntaxError's line).
_BUILTIN_TEXTS = ("filename", "filename2", "strerror", "object", "reason", "msg", "text")


def _mask_exception(exc: BaseException, masks: Masks) -> None:
    """Mask ``exc``'s arguments, its notes and the attributes its ``str()`` is made from."""
    # An exception type with read-only arguments keeps its own; what refundcore prints
    # of it goes through Redactor.text.
    with contextlib.suppress(AttributeError, TypeError):
        exc.args = tuple(
            masks.mask_text(arg) if type(arg) is str else scrub(arg, masks) for arg in exc.args
        )
    names = [*getattr(exc, "__dict__", ()), *(n for n in _BUILTIN_TEXTS if hasattr(exc, n))]
    for name in names:
        try:
            value = getattr(exc, name)
            masked = scrub(value, masks)
            if masked is not value:
                setattr(exc, name, masked)
        except (AttributeError, TypeError, ValueError):
            pass


def scrub(value: Any, secrets: tuple[str, ...] | Masks) -> Any:
    """``value`` with every secret (``secrets``, or :class:`Masks` made of them) masked,
    in any of its forms: the same object when it holds none, so a clean reply (nearly
    every reply) is not copied. The caller's value is never changed; masked containers
    come back as plain dicts and lists, masked bytes as bytes."""
    masks = secrets if isinstance(secrets, Masks) else _masks_of(tuple(secrets))
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is str or isinstance(value, str):
        return masks.mask(value)
    if kind in _PLAIN_MAPPINGS or isinstance(value, Mapping):
        if kind in _PLAIN_MAPPINGS and _surely_clean(value, masks):
            return value
        # Copied only from the first masked item on (always, for other mapping types).
        scrubbed: dict[Any, Any] | None = None if kind in _PLAIN_MAPPINGS else {}
        for key, item in value.items():
            # Most items of a reply are text or numbers: handled here, without recursing.
            item_kind = type(item)
            if item_kind is str:
                new = masks.mask(item)
            elif item_kind in _ATOMS:
                new = item
            else:
                new = scrub(item, masks)
            # A gateway may echo a credential as a key too.
            new_key = masks.mask(key) if type(key) is str else key
            if scrubbed is None and (new is not item or new_key is not key):
                scrubbed = dict(value)
            if scrubbed is not None:
                if new_key is not key:
                    scrubbed.pop(key, None)
                scrubbed[new_key] = new
        return value if scrubbed is None else scrubbed
    if isinstance(value, (list, tuple)):
        items = [scrub(item, masks) for item in value]
        same = kind is list and all(new is old for new, old in zip(items, value, strict=True))
        return value if same else items
    if isinstance(value, (bytes, bytearray)):
        return _masked_bytes(bytes(value), masks) or value
    return value


def _masked_bytes(data: bytes, masks: Masks) -> bytes | None:
    """``data`` masked (as UTF-8 text, or byte for byte when it is not); None when clean."""
    for codec in ("utf-8", "latin-1"):
        try:
            text = data.decode(codec)
        except UnicodeDecodeError:
            continue
        masked = masks.mask(text)
        return None if masked is text else masked.encode(codec)
    return None  # pragma: no cover - latin-1 decodes any bytes


def _surely_clean(mapping: Mapping[Any, Any], masks: Masks, *more: str) -> bool:
    """True when a reply made of plain values (text keys; text, numbers, dicts and lists
    of them, a few levels deep: most replies and callbacks), and ``more`` texts, hold no
    secret, found by searching all their text joined into one rather than item by
    item. A secret found only across a joint is a false alarm (the caller then masks
    item by item), never a miss."""
    texts = list(more)
    if not _gather(mapping, texts, _GATHER_DEPTH):
        return False
    try:
        joined = "\0".join(texts)
    except TypeError:  # a key that is not text
        return False
    return not masks.found(joined.lower())


# Deeper replies are searched item by item.
_GATHER_DEPTH = 6


def _gather(value: Any, texts: list[Any], depth: int) -> bool:
    """Add the keys and texts of ``value`` (a plain mapping or list) to ``texts`` (a key
    that is not text too: joining them then fails); False when it holds anything else,
    or is nested deeper than ``depth``."""
    if depth == 0:
        return False
    if type(value) is list:
        items: Any = value
    else:
        texts.extend(value)
        items = value.values()
    for item in items:
        kind = type(item)
        if kind is str:
            texts.append(item)
        elif kind in _ATOMS:
            continue
        elif kind is dict or kind is list:
            if not _gather(item, texts, depth - 1):
                return False
        else:
            return False
    return True


# Values that cannot hold a secret, checked by exact type before anything slower.
_ATOMS = frozenset({int, float, bool, type(None), Decimal})
# Mappings handed back as they are when clean: a plain dict, and the read-only view every
# model's ``raw`` is (returning the view itself spares the model a copy and a rebuild).
_PLAIN_MAPPINGS = frozenset({dict, MappingProxyType})


_QUERY = re.compile(r"\?[^\s'\")]*")


def without_queries(text: str) -> str:
    """``text`` with every URL's query string masked: query strings can carry
    credentials (one gateway puts a hash of its secret there)."""
    return _QUERY.sub("?…", text)


def error_reason(exc: BaseException) -> str:
    """What an HTTP stack's exception says, fit for logs and errors: its type and its
    text (queries masked, cut at 200 characters, an ellipsis marking the cut).
    Transports raise their own errors without chaining the original (it may hold the
    full URL), so this is all that is kept of it."""
    text = without_queries(str(exc)).strip("()'\" ")
    if len(text) > 200:
        text = text[:200] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
