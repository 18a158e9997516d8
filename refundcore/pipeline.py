"""The stages of one request, each run by the provider's plugin (and any app plugin
wrapping it):

    validate  the capability and original-amount checks (no plugin involved)
    build     the plugin turns the operation into an unsigned HttpRequest
    sign      the plugin adds credentials and the signature
    send      the transport (pooled keep-alive connections) puts the exact bytes on the wire
    parse     the plugin maps the reply to a RefundResult
    finish    the core stamps the result's identity, masks secrets and logs it

:meth:`Pipeline.prepare` (build and sign) raises every input error. Once a request
may have left the process, :meth:`Pipeline.deliver` never raises except
``TransportError``, which promises nothing was sent: an outcome it cannot know is an
``UNKNOWN`` result.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import attrs

from .errors import (
    OutcomeUnknown,
    PluginError,
    RefundError,
    SignatureError,
    TransportError,
    ValidationError,
)
from .models import (
    Callback,
    HttpRequest,
    HttpResponse,
    Operation,
    ProviderInfo,
    RefundNotification,
    RefundQuery,
    RefundResult,
    RefundStatus,
    Void,
)
from .money import Money
from .plugins import PluginRegistry
from .redaction import Redactor
from .transport import HttpTransport

__all__ = ["MAX_CALLBACK_BYTES", "Pipeline", "unknown_result"]

# The stages log as the client they serve: one logger for users to configure.
log = logging.getLogger("refundcore.client")

_UNKNOWN_ADVICE = "the outcome is unknown: query the refund before trying again"
#: Callback bodies beyond this are refused before any parsing.
MAX_CALLBACK_BYTES = 1024 * 1024


class Pipeline:
    """Runs the stages for one client: its plugin registry, its transport (closed with
    :meth:`close`) and its :class:`~refundcore.redaction.Redactor`. Thread-safe."""

    def __init__(
        self, registry: PluginRegistry, transport: HttpTransport, redactor: Redactor
    ) -> None:
        self._registry = registry
        self._transport = transport
        self._redactor = redactor

    @property
    def redactor(self) -> Redactor:
        """What masks the configured secrets in everything the stages produce."""
        return self._redactor

    def validate(
        self, info: ProviderInfo, operation: Operation, original_amount: Money | None = None
    ) -> None:
        """Refuse what the provider cannot do and an ``original_amount`` that cannot
        cover the refund: ``ValidationError`` naming the field."""
        _check_capabilities(info, operation)
        _check_original_amount(operation, original_amount)

    def check(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Operation,
        original_amount: Money | None = None,
    ) -> None:
        """:meth:`validate`, then the plugin's build stage: everything refused before
        sending, without signing or sending."""
        self.validate(info, operation, original_amount)
        self.build(info, config, operation)

    def build(self, info: ProviderInfo, config: Any, operation: Operation) -> HttpRequest:
        """The unsigned request for ``operation``."""
        hooks = self._registry.hooks(info.id)
        request = self._stage(
            hooks.build, "build_request", info, config=config, operation=operation
        )
        if not isinstance(request, HttpRequest):
            raise _missing_stage(info, "refundcore_build_request", request)
        return request

    def prepare(self, info: ProviderInfo, config: Any, operation: Operation) -> HttpRequest:
        """Build and sign: every input error surfaces here, before anything is sent."""
        request = self.build(info, config, operation)
        hooks = self._registry.hooks(info.id)
        signed = self._stage(hooks.sign, "sign_request", info, config=config, request=request)
        if signed is None:
            return request
        if not isinstance(signed, HttpRequest):
            raise _missing_stage(info, "refundcore_sign_request", signed)
        return signed

    def run(self, info: ProviderInfo, config: Any, operation: Operation) -> RefundResult:
        """Prepare, send and parse ``operation``: its finished result."""
        return self.deliver(info, config, operation, self.prepare(info, config, operation))

    def deliver(
        self, info: ProviderInfo, config: Any, operation: Operation, signed: HttpRequest
    ) -> RefundResult:
        """Send and parse: the finished result. The request may reach the gateway: never
        raises, except ``TransportError``, which promises that nothing was sent."""
        reply = self._send(info, config, operation, signed)
        if isinstance(reply, RefundResult):
            return self.finish(info, operation, reply)
        parsed = self._parse(info, config, operation, reply)
        return self.finish(info, operation, parsed, http_status=reply.status)

    def finish(
        self,
        info: ProviderInfo,
        operation: Operation,
        result: RefundResult,
        *,
        http_status: int | None = None,
    ) -> RefundResult:
        """The one place a result is completed, whichever path it came by: identity
        (provider, refund id, operation) stamped from ``operation``, the reply's
        ``http_status`` where the plugin set none, the query-first advice on an
        ``UNKNOWN`` refund or void, secrets masked, the outcome logged."""
        message = result.message
        if result.status is RefundStatus.UNKNOWN and operation.kind != "query":
            message = f"{message or 'no usable reply'}; {_UNKNOWN_ADVICE}"
        changes: dict[str, Any] = {
            "provider": info.id,
            "refund_id": operation.refund_id,
            "operation": operation.kind,
            "message": self._redactor.text(info.id, message),
            "http_status": http_status if result.http_status is None else result.http_status,
            "raw": self._redactor.value(info.id, result.raw),
        }
        if type(result) is RefundResult:
            # Built directly rather than by attrs.evolve, which re-reads the class's
            # fields on every call: every result is finished here.
            result = RefundResult(
                status=result.status,
                amount=result.amount,
                provider_refund_id=result.provider_refund_id,
                error_code=result.error_code,
                **changes,
            )
        else:  # a subclass may have fields of its own
            result = attrs.evolve(result, **changes)
        if log.isEnabledFor(logging.INFO):
            log.info(
                "%s %s via %s: %s%s",
                operation.kind,
                operation.refund_id,
                info.id,
                result.status.value,
                f" ({result.error_code})" if result.error_code else "",
            )
        return result

    def verify(
        self,
        info: ProviderInfo,
        config: Any,
        *,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> RefundNotification:
        """Check a callback's input and have the plugin verify and parse it: the
        notification, stamped with the provider and with secrets masked.
        ``SignatureError`` when the callback cannot be trusted."""
        if not info.capabilities.callbacks:
            raise ValidationError(f"{info.name} sends no callbacks", field="provider")
        if not isinstance(body, bytes):
            raise ValidationError(f"must be bytes, got {type(body).__name__}", field="body")
        if len(body) > MAX_CALLBACK_BYTES:
            raise SignatureError(f"callback body of {len(body)} bytes is too large")
        try:
            callback = Callback(
                method=str(method).upper(), path=str(path), headers=headers, body=body
            )
        except ValidationError as exc:
            raise SignatureError(f"malformed callback: {exc}") from None
        verify = self._registry.hooks(info.id).verify
        try:
            note = verify(provider=info, config=config, callback=callback)
        except RefundError:
            raise
        except Exception as exc:
            raise _plugin_error(info, "verify_callback", exc) from exc
        if not isinstance(note, RefundNotification):
            raise _missing_stage(info, "refundcore_verify_callback", note)
        log.info("verified %s callback: %s %s", info.id, note.event, note.status)
        raw = self._redactor.value(info.id, note.raw)
        if note.provider != info.id or raw is not note.raw:
            note = attrs.evolve(note, provider=info.id, raw=raw)
        return note

    def close(self) -> None:
        """Release the transport's pooled connections."""
        self._transport.close()

    def _send(
        self, info: ProviderInfo, config: Any, operation: Operation, signed: HttpRequest
    ) -> HttpResponse | RefundResult:
        """The gateway's reply, or the UNKNOWN result of a send that may have gone out
        but brought no reply."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s via %s: %s %s (%d bytes)",
                operation.kind,
                operation.refund_id,
                info.id,
                signed.method,
                signed.url.partition("?")[0],
                len(signed.body),
            )
        hooks = self._registry.hooks(info.id)
        try:
            response = hooks.send(provider=info, config=config, request=signed)
        except OutcomeUnknown as exc:
            return unknown_result(str(exc), "no_reply")
        except TransportError:
            raise
        except Exception as exc:  # a custom transport or wrapper failed: it may have sent
            log.error(
                "send stage for %s failed after the request may have left: %s",
                info.id,
                type(exc).__name__,
            )
            return unknown_result(f"send failed: {type(exc).__name__}", "send_error")
        if not isinstance(response, HttpResponse):
            return unknown_result("no transport returned a response", "send_error")
        return response

    def _parse(
        self, info: ProviderInfo, config: Any, operation: Operation, response: HttpResponse
    ) -> RefundResult:
        """The plugin's reading of the reply; UNKNOWN when it cannot read it. The reply's
        status is stamped by :meth:`finish`."""
        hooks = self._registry.hooks(info.id)
        try:
            result = hooks.parse(
                provider=info, config=config, operation=operation, response=response
            )
        except Exception as exc:
            log.error(
                "%s could not parse a reply (HTTP %d): %s",
                info.id,
                response.status,
                type(exc).__name__,
            )
            result = None
        if not isinstance(result, RefundResult):
            result = unknown_result(f"unreadable reply (HTTP {response.status})", "unparseable")
        return result

    def _stage(self, caller: Any, stage: str, info: ProviderInfo, **kwargs: Any) -> Any:
        try:
            return caller(provider=info, **kwargs)
        except RefundError:
            raise
        except Exception as exc:
            raise _plugin_error(info, stage, exc) from exc


def unknown_result(message: str, code: str) -> RefundResult:
    """An ``UNKNOWN`` result, for :meth:`Pipeline.finish` to complete."""
    return RefundResult(status=RefundStatus.UNKNOWN, message=message, error_code=code)


def _check_capabilities(info: ProviderInfo, operation: Operation) -> None:
    caps = info.capabilities
    if isinstance(operation, RefundQuery) and not caps.query:
        raise ValidationError(f"{info.name} cannot query refunds", field="operation")
    if isinstance(operation, Void) and not caps.void:
        raise ValidationError(f"{info.name} offers no void", field="operation")
    amount = getattr(operation, "amount", None)
    if (
        amount is not None
        and caps.currencies is not None
        and amount.currency not in caps.currencies
    ):
        raise ValidationError(
            f"{info.name} does not take {amount.currency} "
            f"(takes {', '.join(sorted(caps.currencies))})",
            field="amount",
        )
    notify_url = getattr(operation, "notify_url", None)
    if notify_url and not caps.callbacks:
        raise ValidationError(f"{info.name} sends no callbacks", field="notify_url")
    if notify_url and not caps.notify_url:
        where = caps.notify_url_setting or "the gateway's own settings"
        raise ValidationError(
            f"{info.name} cannot carry a notify URL with a refund: set it in {where}",
            field="notify_url",
        )


def _check_original_amount(operation: Operation, original: Money | None) -> None:
    if original is None:
        return
    amount = getattr(operation, "amount", None)
    if not isinstance(original, Money):
        raise ValidationError(
            f"must be refundcore.Money, got {type(original).__name__}", field="original_amount"
        )
    if amount is not None and (original.currency != amount.currency or original < amount):
        raise ValidationError(
            f"{original} cannot cover a refund of {amount}", field="original_amount"
        )


def _plugin_error(info: ProviderInfo, stage: str, exc: Exception) -> PluginError:
    log.error("%s plugin failed in %s: %s", info.id, stage, type(exc).__name__)
    return PluginError(info.id, f"refundcore_{stage}", exc)


def _missing_stage(info: ProviderInfo, hook: str, got: object) -> PluginError:
    problem = (
        "no implementation returned a value" if got is None else f"returned {type(got).__name__}"
    )
    return PluginError(info.id, hook, TypeError(problem))
