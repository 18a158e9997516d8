"""The send stage of :class:`~refundcore.pipeline.Pipeline`: the request goes out
through the transport, inside every app plugin's wrapper of ``refundcore_send_request``.

Once a request may have left the process, only the transport can say it did not: a
``TransportError`` promises that nothing was sent, and the caller gives the refund's
claim back for a retry, so that promise is taken from the transport alone (refundcore's
own, or a plugin implementing the hook to replace it). A wrapper that raises one after
the transport sent the request, or after it raised ``OutcomeUnknown``, is not believed:
the outcome is ``UNKNOWN``, as for any failure of a wrapper once the request may have
left. The wrappers are entered and left by hand (:class:`~refundcore.wrappers.Wrappers`)
around the implementations, on both clients, so the stage sees which of them said what.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .effects import Send, done_sending, start_sending
from .errors import OutcomeUnknown, TransportError
from .logs import EventLogger, milliseconds
from .models import HttpRequest, HttpResponse, ProviderInfo, RefundResult, RefundStatus
from .plugins import PluginRegistry
from .redaction import Redactor
from .wrappers import Wrappers

__all__ = ["SendStage", "stage_done", "unknown_result"]

# The stages log as the client they serve: one logger for users to configure.
log = EventLogger("refundcore.client")


def unknown_result(message: str, code: str) -> RefundResult:
    """An ``UNKNOWN`` result, for :meth:`Pipeline.finish` to complete."""
    return RefundResult(status=RefundStatus.UNKNOWN, message=message, error_code=code)


def stage_done(
    stage: str, started: float, error: BaseException | None = None, **fields: Any
) -> None:
    """The DEBUG record of a stage, with its duration."""
    if log.enabled(logging.DEBUG):
        log.debug(
            "stage finished",
            stage=stage,
            duration_ms=milliseconds(time.perf_counter() - started),
            error_code=None if error is None else type(error).__name__,
            **fields,
        )


class SendStage:
    """Sends requests for one client's pipeline: its registry's send hooks (the sync
    transport is one of them) and its :class:`~refundcore.redaction.Redactor`."""

    def __init__(self, registry: PluginRegistry, redactor: Redactor) -> None:
        self._registry = registry
        self._redactor = redactor

    def send(self, effect: Send) -> HttpResponse | RefundResult:
        """The sync send stage (the transport, and any app plugin wrapping it): the
        gateway's reply, or the UNKNOWN result of a send that may have gone out but
        brought no reply. Raises only ``TransportError`` (nothing was sent)."""
        wrappers = self._wrappers(effect)
        started = time.perf_counter()
        left = False
        try:
            sending = start_sending(effect)
            try:
                wrappers.enter()
                try:
                    response = wrappers.first_result()
                except Exception as exc:
                    response, error, left = _through(wrappers, None, exc)
                except BaseException as exc:
                    wrappers.leave(None, exc)
                    raise
                else:
                    response, error, left = _through(wrappers, response, None)
            finally:
                done_sending(sending)
            if error is not None:
                raise error
        except Exception as exc:
            return self._failed(exc, started, left)
        return self._sent(effect.info, effect.request, response, started)

    async def send_awaited(
        self, effect: Send, send: Callable[[], Awaitable[HttpResponse]]
    ) -> HttpResponse | RefundResult:
        """:meth:`send` for a request sent by awaiting ``send()`` (the async client's
        transport), inside every app plugin's wrapper of ``refundcore_send_request``
        as the sync send is. A task cancelled meanwhile is cancelled still (the
        wrappers see it); the caller decides what that means for the refund."""
        wrappers = self._wrappers(effect)
        started = time.perf_counter()
        left = False
        try:
            sending = start_sending(effect)
            try:
                wrappers.enter()
                try:
                    response: object = await send()
                except Exception as exc:
                    response, error, left = _through(wrappers, None, exc)
                except BaseException as exc:
                    wrappers.leave(None, exc)
                    raise
                else:
                    response, error, left = _through(wrappers, response, None)
            finally:
                done_sending(sending)
            if error is not None:
                raise error
        except Exception as exc:
            return self._failed(exc, started, left)
        return self._sent(effect.info, effect.request, response, started)

    def replacements(self, info: ProviderInfo) -> list[str]:
        """The plugins that implement ``refundcore_send_request`` for ``info``'s
        provider instead of wrapping it: they replace the sync transport (which is
        one of them, on a sync client)."""
        hooks = self._registry.hooks(info.id)
        return [
            impl.plugin_name
            for impl in hooks.send.get_hookimpls()
            if not (impl.wrapper or impl.hookwrapper)
        ]

    def _wrappers(self, effect: Send) -> Wrappers:
        info = effect.info
        return Wrappers(
            self._registry.hooks(info.id).send,
            {"provider": info, "config": effect.config, "request": effect.request},
        )

    def _sent(
        self, info: ProviderInfo, signed: HttpRequest, response: object, started: float
    ) -> HttpResponse | RefundResult:
        """What the send stage returned: the reply, logged at DEBUG, or UNKNOWN."""
        if not isinstance(response, HttpResponse):
            return unknown_result("no transport returned a response", "send_error")
        if log.enabled(logging.DEBUG):
            stage_done(
                "send",
                started,
                method=signed.method,
                # A plugin may put a credential in the path (some gateways want one).
                url=self._redactor.text(info.id, signed.url.partition("?")[0]),
                request_bytes=len(signed.body),
                http_status=response.status,
                response_bytes=len(response.body),
            )
        return response

    def _failed(self, exc: Exception, started: float, left: bool) -> RefundResult:
        """What a send that raised ``exc`` means: ``TransportError`` is raised again
        (nothing was sent) unless the request may have ``left`` by then; anything else
        may have sent the request: UNKNOWN."""
        if isinstance(exc, OutcomeUnknown):
            stage_done("send", started, error=exc)
            return unknown_result(str(exc), "no_reply")
        if isinstance(exc, TransportError) and not left:
            stage_done("send", started, error=exc)
            raise exc
        if isinstance(exc, TransportError):
            log.error(
                "a wrapper said nothing was sent after the request may have left",
                stage="send",
                error_code=type(exc).__name__,
            )
            return unknown_result(
                "a plugin wrapping the send said nothing was sent (TransportError) once "
                "the transport may have sent the request",
                "send_error",
            )
        # A custom transport or wrapper failed: it may have sent.
        log.error(
            "stage failed after the request may have left",
            stage="send",
            error_code=type(exc).__name__,
        )
        return unknown_result(f"send failed: {type(exc).__name__}", "send_error")


def _through(
    wrappers: Wrappers, response: object, error: Exception | None
) -> tuple[object, BaseException | None, bool]:
    """The wrappers left with the transport's ``response`` or ``error``: what they make
    of it, and whether the request may have left (the transport did not say it was not
    sent)."""
    left = not isinstance(error, TransportError)
    outcome, failure = wrappers.leave(response, error)
    return outcome, failure, left
