"""What a callback endpoint answers, whatever serves it (the WSGI and the ASGI app).

The servers differ only in how they read a request; from the provider named in the path
and the body on, every answer is decided here, so the gateways get the same replies from
either app. :func:`deliver` (WSGI) and :func:`deliver_async` (ASGI) differ only in how
they call the client and ``on_notification``; what each outcome is answered with is
:func:`_refused` and :func:`_handler_failed`, one table for both.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Union

import attrs

from .client import RefundClient
from .errors import (
    ConfigError,
    JournalError,
    NotARefund,
    PluginError,
    ProviderNotInstalled,
    RefundError,
)
from .logs import EventLogger
from .models import CallbackAck, ProviderInfo, RefundNotification

if TYPE_CHECKING:
    from .async_client import AsyncRefundClient
    from .client_base import ClientBase

__all__ = [
    "Answer",
    "OnNotification",
    "Refused",
    "check_limits",
    "deliver",
    "deliver_async",
    "find_provider",
]

#: What the ASGI app hands a genuine notification to: a function, or a coroutine function.
OnNotification = Callable[[RefundNotification], Union[object, Awaitable[object]]]  # noqa: UP007

log = EventLogger("refundcore.callbacks")

_MAX_BODY_TIMEOUT = 300.0


@attrs.frozen
class Answer:
    """One HTTP answer: ``status`` with its reason phrase, and the body."""

    status: int
    reason: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @property
    def status_line(self) -> str:
        """``"200 OK"``: the status as WSGI's ``start_response`` takes it."""
        return f"{self.status} {self.reason}"

    @classmethod
    def text(cls, status: int, reason: str, message: str) -> Answer:
        """A plain-text answer of one line."""
        return cls(status, reason, f"{message}\n".encode())

    @classmethod
    def ack(cls, ack: CallbackAck) -> Answer:
        """The success answer the gateway expects."""
        return _ack_answer(ack)


class Refused(Exception):
    """A request answered with :attr:`answer` before it reaches a plugin: what the
    server read of it (its length, its body) cannot be verified."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.answer = Answer.text(status, reason, message)

    def logged(self, log: EventLogger, info: ProviderInfo) -> Answer:
        """:attr:`answer`, once ``log`` (the server's) has said why the callback to
        ``info`` was refused."""
        log.warning(
            "callback refused before verifying",
            provider=info.id,
            operation="callback",
            http_status=self.answer.status,
            error=str(self),
        )
        return self.answer


@functools.cache
def _ack_answer(ack: CallbackAck) -> Answer:
    # Made once per provider: both are frozen, and every genuine callback is answered so.
    return Answer(ack.status, "OK", ack.body, ack.content_type)


def check_limits(max_body: int, body_timeout: float) -> None:
    """``ConfigError`` naming the field unless ``max_body`` is a positive number of bytes
    and ``body_timeout`` a number of seconds above 0 and at most 300."""
    if isinstance(max_body, bool) or not isinstance(max_body, int) or not max_body > 0:
        raise ConfigError(f"must be a positive number of bytes, got {max_body!r}", field="max_body")
    if (
        isinstance(body_timeout, bool)
        or not isinstance(body_timeout, (int, float))
        or not (math.isfinite(body_timeout) and 0 < body_timeout <= _MAX_BODY_TIMEOUT)
    ):
        raise ConfigError(
            f"must be more than 0 and at most {_MAX_BODY_TIMEOUT:g} seconds, got {body_timeout!r}",
            field="body_timeout",
        )


def find_provider(client: ClientBase, method: str, path: str) -> ProviderInfo | Answer:
    """The provider a callback at ``path`` (below the mount point) is for, or the answer
    that ends the request before its body is read."""
    provider = path.strip("/")
    if method != "POST":
        return Answer.text(405, "Method Not Allowed", "callbacks are POSTed")
    try:
        info = client.provider(provider) if provider and "/" not in provider else None
    except ProviderNotInstalled:
        info = None
    except RefundError as exc:
        log.error(
            "provider unavailable for a callback",
            provider=provider,
            operation="callback",
            error_code=type(exc).__name__,
            error=str(exc),
        )
        return Answer.text(503, "Service Unavailable", "provider unavailable")
    if info is None:
        return Answer.text(404, "Not Found", "no such provider")
    return info


def deliver(
    client: RefundClient,
    info: ProviderInfo,
    *,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    on_notification: Callable[[RefundNotification], object],
) -> Answer:
    """Verify the callback and hand a genuine refund notification to ``on_notification``.

    ``target`` is the path and query exactly as received. A forgery gets 400 (never a
    500 for bad input); a genuine event that is not about a refund gets the gateway's
    success answer and is not handed on, so the gateway stops delivering it; 503 when
    the journal could not record it, and 500 when the plugin failed to read it
    (:class:`~refundcore.errors.PluginError`) or ``on_notification`` raised, so that the
    gateway delivers it again later.
    """
    try:
        note = client.verify_callback(
            info.id, method="POST", path=target, headers=headers, body=body
        )
    except RefundError as exc:
        return _refused(info, exc)
    try:
        on_notification(note)
    except Exception:
        return _handler_failed(info, note)
    return Answer.ack(info.callback_ack)


async def deliver_async(
    client: RefundClient | AsyncRefundClient,
    info: ProviderInfo,
    *,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    on_notification: OnNotification,
) -> Answer:
    """:func:`deliver` for an event loop, answering the same. An
    :class:`~refundcore.AsyncRefundClient`'s verification is awaited; a sync client's,
    which may write its journal, runs in a worker thread, and so does a plain-function
    ``on_notification`` (it may block); a coroutine function is awaited."""
    try:
        if isinstance(client, RefundClient):
            note = await asyncio.to_thread(
                functools.partial(
                    client.verify_callback,
                    info.id,
                    method="POST",
                    path=target,
                    headers=headers,
                    body=body,
                )
            )
        else:
            note = await client.verify_callback(
                info.id, method="POST", path=target, headers=headers, body=body
            )
    except RefundError as exc:
        return _refused(info, exc)
    try:
        if inspect.iscoroutinefunction(on_notification):
            await on_notification(note)
        else:
            outcome = await asyncio.to_thread(on_notification, note)
            if inspect.isawaitable(outcome):
                await outcome
    except Exception:
        return _handler_failed(info, note)
    return Answer.ack(info.callback_ack)


def _refused(info: ProviderInfo, exc: RefundError) -> Answer:
    """The answer to a callback the client would not take. The callback operation
    logs its own outcome; what is left here is how to answer."""
    if isinstance(exc, ConfigError):
        # Before the callback operation began: the provider's config is unusable.
        log.error(
            "provider not configured for a callback",
            provider=info.id,
            operation="callback",
            error_code=type(exc).__name__,
            error=str(exc),
        )
        return Answer.text(400, "Bad Request", "callback rejected")
    if isinstance(exc, JournalError):
        # Genuine or not, it could not be recorded: let the gateway deliver it again.
        return Answer.text(503, "Service Unavailable", "try again later")
    if isinstance(exc, NotARefund):
        # Refusing it would make the gateway deliver it again and again (and some
        # disable an endpoint that keeps refusing); it is genuine, so it is taken.
        return Answer.ack(info.callback_ack)
    if isinstance(exc, PluginError):
        # The plugin failed, not the sender: a plugin answers bad input with a typed
        # error (the conformance kit's callback-typed-errors rule), so this may be a
        # genuine callback, which a 400 would make the gateway drop. A 500 has it
        # delivered again, once the plugin is fixed.
        return Answer.text(500, "Internal Server Error", "try again later")
    return Answer.text(400, "Bad Request", "callback rejected")


def _handler_failed(info: ProviderInfo, note: RefundNotification) -> Answer:
    log.exception(
        "the application failed to handle a callback",
        provider=info.id,
        operation="callback",
        refund_id=note.refund_id,
        status=note.status.value,
    )
    return Answer.text(500, "Internal Server Error", "try again later")
