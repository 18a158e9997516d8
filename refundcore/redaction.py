"""Secret scrubbing: the one place that keeps configured credentials out of whatever
refundcore hands back, logs or stores.

A provider's config names its secrets (its :class:`~refundcore.config.Secret`
fields). A :class:`Redactor` learns them as each config is loaded and masks them
wherever a gateway or a plugin could echo them: a result's reply and message (the
journal stores the finished result, so its rows are clean too), a verified callback,
a batch report's messages, an error's text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import attrs

from .config import Secret

__all__ = ["MASK", "Redactor", "error_reason", "scrub", "secret_values", "without_queries"]

#: What a secret is replaced with.
MASK = "********"

# Shorter values are too likely to occur by chance in a reply to be masked in it.
_MIN_SECRET = 4


class Redactor:
    """Masks each provider's configured secrets; shared by every path of one client.

    Thread-safe: a provider's secrets are replaced as a whole when its config is
    (re)loaded, and read without a lock.
    """

    def __init__(self) -> None:
        self._secrets: dict[str, tuple[str, ...]] = {}

    def learn(self, provider_id: str, config: Any) -> None:
        """Mask ``config``'s secrets in what ``provider_id`` produces from now on
        (replacing those of the provider's previous config)."""
        self._secrets[provider_id] = secret_values(config)

    def value(self, provider_id: str, value: Any) -> Any:
        """``value`` (a reply: text, mappings, lists) with ``provider_id``'s secrets
        masked; the same object when it holds none (see :func:`scrub`)."""
        secrets = self._secrets.get(provider_id, ())
        return scrub(value, secrets) if secrets else value

    def text(self, provider_id: str, text: str | None) -> str | None:
        """A message or an error's text with ``provider_id``'s secrets masked."""
        return None if text is None else str(self.value(provider_id, text))

    def exception(self, provider_id: str, exc: BaseException) -> BaseException:
        """``exc``, masked in place (so a ``raise`` keeps it and its traceback), with
        every exception it was raised from or during: their messages reach logs and
        tracebacks as surely as the error itself does."""
        secrets = self._secrets.get(provider_id, ())
        if secrets:
            seen: set[int] = set()
            current: BaseException | None = exc
            while current is not None and id(current) not in seen:
                seen.add(id(current))
                _mask_exception(current, secrets)
                current = current.__cause__ or current.__context__
        return exc


def secret_values(config: Any) -> tuple[str, ...]:
    """The revealed values of ``config``'s :class:`Secret` fields (an attrs class)."""
    values = []
    for field in attrs.fields(type(config)):
        value = getattr(config, field.name)
        if isinstance(value, Secret) and len(value.reveal()) >= _MIN_SECRET:
            values.append(value.reveal())
    return tuple(values)


def _mask_exception(exc: BaseException, secrets: tuple[str, ...]) -> None:
    """Mask ``exc``'s arguments and the text attributes its ``str()`` is made from."""
    try:
        exc.args = tuple(scrub(arg, secrets) for arg in exc.args)
        for name, value in list(vars(exc).items()):
            if isinstance(value, str):
                setattr(exc, name, scrub(value, secrets))
    except (AttributeError, TypeError):
        # An exception type with read-only or slotted state keeps its own text; what
        # refundcore prints of it goes through Redactor.text.
        pass


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """``value`` with every secret masked: the same object when it holds none, so a
    clean reply (nearly every reply) is not copied. The caller's value is never
    changed; masked containers come back as plain dicts and lists."""
    kind = type(value)
    if kind in _ATOMS:
        return value
    if kind is str or isinstance(value, str):
        return _masked(value, secrets)
    if kind in _PLAIN_MAPPINGS or isinstance(value, Mapping):
        if kind in _PLAIN_MAPPINGS and _surely_clean(value, secrets):
            return value
        # Copied only from the first masked item on (always, for other mapping types).
        scrubbed: dict[Any, Any] | None = None if kind in _PLAIN_MAPPINGS else {}
        for key, item in value.items():
            # Most items of a reply are text or numbers: handled here, without recursing.
            item_kind = type(item)
            if item_kind is str:
                new = item
                for secret in secrets:
                    if secret in new:
                        new = new.replace(secret, MASK)
            elif item_kind in _ATOMS:
                new = item
            else:
                new = scrub(item, secrets)
            # A gateway may echo a credential as a key too.
            new_key = _masked(key, secrets) if type(key) is str else key
            if scrubbed is None and (new is not item or new_key is not key):
                scrubbed = dict(value)
            if scrubbed is not None:
                if new_key is not key:
                    scrubbed.pop(key, None)
                scrubbed[new_key] = new
        return value if scrubbed is None else scrubbed
    if isinstance(value, (list, tuple)):
        items = [scrub(item, secrets) for item in value]
        same = kind is list and all(new is old for new, old in zip(items, value, strict=True))
        return value if same else items
    return value


def _surely_clean(mapping: Mapping[Any, Any], secrets: tuple[str, ...]) -> bool:
    """True when a flat mapping (text keys, text or number values: most replies and
    callbacks) holds no secret, found by searching its keys and text values joined into
    one text rather than item by item. A secret found only across a joint is a false
    alarm (the caller then masks item by item), never a miss."""
    texts = []
    for item in mapping.values():
        kind = type(item)
        if kind is str:
            texts.append(item)
        elif kind not in _ATOMS:
            return False
    try:
        text = "\0".join(mapping) + "\0" + "\0".join(texts)
    except TypeError:  # a key that is not text
        return False
    return not any(map(text.__contains__, secrets))


def _masked(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


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
    text (queries masked, cut at 200 characters). Transports raise their own errors
    without chaining the original (it may hold the full URL), so this is all that is
    kept of it."""
    text = without_queries(str(exc)).strip("()'\" ")
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
