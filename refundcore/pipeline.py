"""The stages of one request, each run by the provider's plugin (and any app plugin
wrapping it):

    validate  the capability and original-amount checks (no plugin involved)
    build     the plugin turns the operation into an unsigned HttpRequest
    sign      the plugin adds credentials and the signature
    send      the transport (pooled keep-alive connections) puts the exact bytes on the wire
    parse     the plugin maps the reply to a RefundResult
    finish    the core stamps the result's identity and source, masks secrets, and
              shows it to every ``refundcore_result`` hook

:meth:`Pipeline.prepare` (build and sign) raises every input error. Once a request
may have left the process, nothing raises except ``TransportError``, which promises
nothing was sent and is believed from the transport alone: the send stage
(:mod:`refundcore.send_stage`) turns any other failure into an ``UNKNOWN`` result and
:meth:`Pipeline.finish_reply` (parse and finish) never raises.

What a plugin's stage gives back is checked where a wrong value would break one of
those promises (:mod:`refundcore.stage_values`): a request that is not bytes, is too
large or leaves the configured ``base_url``'s scheme, host and port is refused before
it is sent (``PluginError``); a result the journal and the caller cannot read is
``UNKNOWN``; a notification they cannot read is a ``PluginError``.

What sends is written as a flow (:mod:`refundcore.effects`): :meth:`Pipeline.run`,
:meth:`Pipeline.deliver` and :meth:`Pipeline.verify` yield a :class:`~refundcore.effects.Send`
where the request goes out, and the client's driver carries it out: :meth:`Pipeline.send`
(the transport and every plugin wrapping ``refundcore_send_request``) on the sync
client, :meth:`Pipeline.send_awaited` (the same wrappers around an awaited send) on the
async one. Every other stage is one piece of code for both clients.

Around the stages, :meth:`Pipeline.operate` frames one whole operation (the
``refundcore_operation`` wrapper point, the operation's log scope and its INFO record)
and :meth:`Pipeline.journal` one journal step (``refundcore_journal``): the client and
the exactly-once protocol run their work through them, so app plugins can time and
trace it without knowing either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import attrs

from .checks import check_capabilities, check_original_amount, check_partial
from .effects import Send, Steps
from .errors import (
    JournalError,
    PluginError,
    RefundError,
    SignatureError,
    TransportError,
    ValidationError,
)
from .evidence import as_told
from .journal.values import Claim
from .logs import EventLogger, OperationScope, log_finished, milliseconds, note_attempt
from .models import (
    Callback,
    HttpRequest,
    HttpResponse,
    Operation,
    ProviderInfo,
    RefundNotification,
    RefundResult,
    ResultSource,
)
from .money import Money
from .notifications import unnamed
from .plugins import PluginRegistry
from .redaction import Redactor
from .send_stage import SendStage, stage_done, unknown_result
from .stage_values import notification_problem, request_problem, result_problem
from .status import CallbackVerdict
from .transport import HttpTransport
from .wrappers import Wrappers

__all__ = ["MAX_CALLBACK_BYTES", "Pipeline", "Settle", "unknown_result"]

# The stages log as the client they serve: one logger for users to configure.
log = EventLogger("refundcore.client")

T = TypeVar("T")
#: Lets a verified callback's word settle the journal (a flow): the notification as
#: the journal read it (``verdict``, ``duplicate`` and ``contradicts`` set, a refund id
#: the journal does not agree with taken out).
Settle = Callable[[ProviderInfo, RefundNotification], Steps[RefundNotification]]

_UNJOURNALLED = CallbackVerdict.UNJOURNALLED
#: Callback bodies beyond this are refused before any parsing.
MAX_CALLBACK_BYTES = 1024 * 1024


class Pipeline:
    """Runs the stages for one client: its plugin registry, its sync transport (closed
    with :meth:`close`; ``None`` for a client that sends otherwise) and its
    :class:`~refundcore.redaction.Redactor`. Thread-safe."""

    def __init__(
        self, registry: PluginRegistry, transport: HttpTransport | None, redactor: Redactor
    ) -> None:
        self._registry = registry
        self._transport = transport
        self._redactor = redactor
        self._sending = SendStage(registry, redactor)

    @property
    def redactor(self) -> Redactor:
        """What masks the configured secrets in everything the stages produce."""
        return self._redactor

    def validate(
        self, info: ProviderInfo, operation: Operation, original_amount: Money | None = None
    ) -> None:
        """Refuse what the provider cannot do (a partial refund to a provider without
        them, when ``original_amount`` tells) and an ``original_amount`` that cannot
        cover the refund: ``ValidationError`` naming the field."""
        check_capabilities(info, operation)
        check_original_amount(operation, original_amount)
        check_partial(info, operation, original_amount)

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
        request = self.build(info, config, operation)
        self._check_request(info, config, request, request)

    def operate(
        self, info: ProviderInfo, kind: str, refund_id: str | None, steps: Steps[T]
    ) -> Steps[T]:
        """Run one whole operation (the flow ``steps``) inside the ``refundcore_operation``
        wrapper point and the operation's log scope; log its one INFO record (or the
        refusal) with its duration. Returns or raises what ``steps`` does: a wrapper
        that raises before it runs refuses it; one that fails after is logged."""
        hooks = self._registry.hooks(info.id)
        started = time.perf_counter()
        with OperationScope(info.id, kind, refund_id):
            wrappers = None
            if hooks.operation is not None:
                wrappers = Wrappers(
                    hooks.operation,
                    {"provider": info, "kind": kind, "refund_id": refund_id, "proceed": _proceed},
                )
                try:
                    wrappers.enter()
                except BaseException as exc:
                    refusal = (
                        exc
                        if isinstance(exc, RefundError) or not isinstance(exc, Exception)
                        else PluginError(info.id, "refundcore_operation", exc)
                    )
                    self._redactor.exception(info.id, refusal)
                    self._log_refused(info, refusal, started)
                    raise refusal from None
            try:
                outcome = yield from steps
            except BaseException as exc:
                self._redactor.exception(info.id, exc)
                if wrappers is not None:
                    self._leave(wrappers, "refundcore_operation", None, exc)
                self._log_refused(info, exc, started)
                raise
            if wrappers is not None:
                self._leave(wrappers, "refundcore_operation", outcome, None)
            if log.enabled(logging.INFO):
                log_finished(log, outcome, time.perf_counter() - started)
        return outcome

    def journal(
        self, info: ProviderInfo, action: str, refund_id: str | None, proceed: Callable[[], T]
    ) -> T:
        """Run one journal step (``proceed``) inside the ``refundcore_journal`` wrapper
        point. A claim's attempt count is noted for the operation's log records."""
        hooks = self._registry.hooks(info.id)
        started = time.perf_counter()
        try:
            outcome = self._around(
                hooks.journal,
                "refundcore_journal",
                info,
                proceed,
                action=action,
                refund_id=refund_id,
            )
        except BaseException as exc:
            stage_done(f"journal {action}", started, error=exc)
            raise
        if isinstance(outcome, Claim) and outcome.entry is not None:
            note_attempt(outcome.entry.attempt)
        stage_done(f"journal {action}", started)
        return outcome

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
            signed = request
        elif not isinstance(signed, HttpRequest):
            raise _missing_stage(info, "refundcore_sign_request", signed)
        self._check_request(info, config, signed, request)
        return signed

    def _check_request(
        self, info: ProviderInfo, config: Any, signed: HttpRequest, built: HttpRequest
    ) -> None:
        """``PluginError`` naming the hook and the field when ``signed`` (made from
        ``built``) must not be sent: a method that is not one, a body that is not bytes
        or is too large, a URL off the configured ``base_url``'s scheme, host and port
        (see :mod:`refundcore.stage_values`). Nothing has been sent."""
        base_url = getattr(config, "base_url", None)
        problem = request_problem(signed, base_url)
        if problem is None:
            return
        # Checked once, as it would be sent; the build is named if its request was unfit.
        from_build = built is signed or request_problem(built, base_url) is not None
        stage = "build_request" if from_build else "sign_request"
        problem = self._redactor.text(info.id, problem) or problem
        log.error("stage failed", stage=_STAGE_NAMES[stage], error=problem)
        raise PluginError(info.id, f"refundcore_{stage}", TypeError(problem), problem=problem)

    def run(self, info: ProviderInfo, config: Any, operation: Operation) -> Steps[RefundResult]:
        """Prepare, send and parse ``operation``: its finished result."""
        signed = self.prepare(info, config, operation)
        return (yield from self.deliver(info, config, operation, signed))

    def deliver(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Operation,
        signed: HttpRequest,
        send_by: float | None = None,
    ) -> Steps[RefundResult]:
        """Send and parse: the finished result. The request may reach the gateway: never
        raises, except ``TransportError``, which promises that nothing was sent (also
        when it would start out after ``send_by``: see :class:`Send`)."""
        reply = yield Send(info, config, operation, signed, send_by)
        return self.finish_reply(info, config, operation, reply)

    def finish_reply(
        self,
        info: ProviderInfo,
        config: Any,
        operation: Operation,
        reply: HttpResponse | RefundResult,
    ) -> RefundResult:
        """Parse and finish what a send brought back: the gateway's reply, or the
        ``UNKNOWN`` result of a send that brought none. Never raises."""
        if isinstance(reply, RefundResult):
            return self.finish(info, operation, reply)
        return self.finish(info, operation, self._parse(info, config, operation, reply))

    def finish(
        self,
        info: ProviderInfo,
        operation: Operation,
        result: RefundResult,
        source: ResultSource = ResultSource.SENT,
    ) -> RefundResult:
        """The one place a result is completed, whichever path it came by: identity
        (provider, refund id, operation) stamped from ``operation`` and ``source``
        from the caller, the query-first advice on an ``UNKNOWN`` refund or void,
        secrets masked; then every ``refundcore_result`` hook sees it."""
        # Masked before the advice is added: a text cut short keeps a secret's start at
        # its end, which is where it is looked for.
        status, message = as_told(
            info, operation.kind, result, self._redactor.text(info.id, result.message)
        )
        result = attrs.evolve(
            result,
            status=status,
            message=message,
            error_code=self._redactor.text(info.id, result.error_code),
            provider_refund_id=self._redactor.value(info.id, result.provider_refund_id),
            provider=info.id,
            refund_id=operation.refund_id,
            operation=operation.kind,
            raw=self._redactor.value(info.id, result.raw),
            source=source,
        )
        if log.enabled(logging.DEBUG):
            log.debug(
                "result completed",
                operation=operation.kind,
                refund_id=operation.refund_id,
                status=result.status.value,
                source=source.value,
                error_code=result.error_code,
            )
        hooks = self._registry.hooks(info.id)
        self._observe(hooks.result, "refundcore_result", info, result=result)
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
        settle: Settle | None = None,
    ) -> Steps[RefundNotification]:
        """Check a callback's input, have the plugin verify and parse it and let
        ``settle`` apply it (a callback operation): the notification, stamped with the
        provider, secrets masked, as ``settle`` read it (``duplicate``), and shown to
        every ``refundcore_notification`` hook; without ``settle``, a notification whose
        tie is unsigned (``unsigned_tie``) names no refund or payment, since no journal
        can confirm it. ``SignatureError`` when the callback cannot be trusted."""

        steps = self._verify(info, config, method, path, headers, body, settle)
        return self.operate(info, "callback", None, steps)

    def _verify(
        self,
        info: ProviderInfo,
        config: Any,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        settle: Settle | None,
    ) -> Steps[RefundNotification]:
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
        hooks = self._registry.hooks(info.id)
        note = self._stage(hooks.verify, "verify_callback", info, config=config, callback=callback)
        if not isinstance(note, RefundNotification):
            raise _missing_stage(info, "refundcore_verify_callback", note)
        problem = notification_problem(note)
        if problem is not None:
            log.error("stage failed", stage="verify", error=problem)
            raise PluginError(
                info.id, "refundcore_verify_callback", TypeError(problem), problem=problem
            )
        note = self._redactor.notification(info.id, note)
        if settle is not None:
            note = yield from settle(info, note)
        elif note.unsigned_tie:
            # Only a journalled gateway refund id could confirm such a tie.
            note = unnamed(note, _UNJOURNALLED)
        elif note.duplicate or note.contradicts is not None or note.verdict is not _UNJOURNALLED:
            # All three are the journal's to say: a plugin's guess is not passed on.
            note = attrs.evolve(note, duplicate=False, contradicts=None, verdict=_UNJOURNALLED)
        self._observe(hooks.notification, "refundcore_notification", info, notification=note)
        return note

    def close(self) -> None:
        """Release the sync transport's pooled connections."""
        if self._transport is not None:
            self._transport.close()

    def send(self, effect: Send) -> HttpResponse | RefundResult:
        """The sync send stage (the transport, and any app plugin wrapping it): the
        gateway's reply, or the UNKNOWN result of a send that may have gone out but
        brought no reply. Raises only ``TransportError`` (nothing was sent); see
        :mod:`refundcore.send_stage`."""
        return self._sending.send(effect)

    async def send_awaited(
        self, effect: Send, send: Callable[[], Awaitable[HttpResponse]]
    ) -> HttpResponse | RefundResult:
        """:meth:`send` for a request sent by awaiting ``send()`` (the async client's
        transport), inside every app plugin's wrapper of ``refundcore_send_request``
        as the sync send is."""
        return await self._sending.send_awaited(effect, send)

    def send_replacements(self, info: ProviderInfo) -> list[str]:
        """The plugins that implement ``refundcore_send_request`` for ``info``'s
        provider instead of wrapping it: they replace the sync transport (which is
        one of them, on a sync client)."""
        return self._sending.replacements(info)

    def _parse(
        self, info: ProviderInfo, config: Any, operation: Operation, response: HttpResponse
    ) -> RefundResult:
        """The plugin's reading of the reply; UNKNOWN when it cannot read it."""
        hooks = self._registry.hooks(info.id)
        started = time.perf_counter()
        try:
            result = hooks.parse(
                provider=info, config=config, operation=operation, response=response
            )
        except Exception as exc:
            log.error(
                "stage failed",
                stage="parse",
                http_status=response.status,
                error_code=type(exc).__name__,
            )
            result = None
        else:
            stage_done("parse", started)
        if isinstance(result, RefundResult):
            problem = result_problem(result)
        else:
            problem = None if result is None else f"a {type(result).__name__}, not a RefundResult"
        if problem is not None:
            # What the plugin gave back cannot be read: the request was sent, so the
            # outcome is not known.
            log.error("stage failed", stage="parse", http_status=response.status, error=problem)
            result = unknown_result(
                f"refundcore_parse_response gave back an unusable result ({problem}); "
                f"reply HTTP {response.status}",
                "unparseable",
            )
        elif not isinstance(result, RefundResult):
            result = unknown_result(f"unreadable reply (HTTP {response.status})", "unparseable")
        if result.http_status is None:
            result = attrs.evolve(result, http_status=response.status)
        return result

    def _stage(self, caller: Any, stage: str, info: ProviderInfo, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            outcome = caller(provider=info, **kwargs)
        except RefundError as exc:
            self._redactor.exception(info.id, exc)
            stage_done(_STAGE_NAMES[stage], started, error=exc)
            raise
        except Exception as exc:
            log.error("stage failed", stage=_STAGE_NAMES[stage], error_code=type(exc).__name__)
            self._redactor.exception(info.id, exc)
            raise PluginError(info.id, f"refundcore_{stage}", exc) from exc
        stage_done(_STAGE_NAMES[stage], started)
        return outcome

    def _around(
        self,
        caller: Any,
        hook: str,
        info: ProviderInfo,
        proceed: Callable[[], T],
        **kwargs: Any,
    ) -> T:
        """Call a wrapper point whose own implementation runs ``proceed``: its outcome,
        whatever the app plugins' wrappers return or raise once it has run. Without
        wrappers (``caller`` is ``None``), ``proceed`` runs directly."""
        if caller is None:
            return proceed()
        ran: list[tuple[bool, Any]] = []

        def run() -> T:
            try:
                value = proceed()
            except BaseException as exc:
                ran.append((False, exc))
                raise
            ran.append((True, value))
            return value

        try:
            caller(provider=info, proceed=run, **kwargs)
        except Exception as exc:
            if not ran:
                if isinstance(exc, RefundError):
                    raise
                raise PluginError(info.id, hook, exc) from exc
            if ran[0][1] is not exc:
                log.error("app plugin failed", hook=hook, error_code=type(exc).__name__)
        if not ran:
            raise PluginError(info.id, hook, RuntimeError("no implementation ran the work"))
        completed, outcome = ran[0]
        if not completed:
            raise outcome
        result: T = outcome
        return result

    @staticmethod
    def _leave(wrappers: Wrappers, hook: str, outcome: object, error: BaseException | None) -> None:
        """Leave a wrapper point's wrappers with the work's outcome, which stays the
        work's whatever they return or raise (a failure of theirs is logged)."""
        _, failure = wrappers.leave(outcome, error)
        if failure is not None and failure is not error:
            log.error("app plugin failed", hook=hook, error_code=type(failure).__name__)

    def _observe(self, caller: Any, hook: str, info: ProviderInfo, **kwargs: Any) -> None:
        """Show a finished value to an observing hook (``None``: nobody observes); a
        failure there changes nothing."""
        if caller is None:
            return
        try:
            caller(provider=info, **kwargs)
        except Exception as exc:
            log.error("app plugin failed", hook=hook, error_code=type(exc).__name__)

    def _log_refused(self, info: ProviderInfo, exc: BaseException, started: float) -> None:
        """The one record of an operation that raised, at a level fit for the cause."""
        if isinstance(exc, (JournalError, PluginError)) or not isinstance(exc, RefundError):
            level = logging.ERROR
        elif isinstance(exc, (SignatureError, TransportError)):
            level = logging.WARNING
        else:
            level = logging.INFO
        log.log(
            level,
            "operation refused",
            error_code=type(exc).__name__,
            error=self._redactor.text(info.id, str(exc)) if isinstance(exc, RefundError) else None,
            duration_ms=milliseconds(time.perf_counter() - started),
        )


_STAGE_NAMES = {
    "build_request": "build",
    "sign_request": "sign",
    "verify_callback": "verify",
}


def _proceed() -> object:
    """What a wrapper point's wrappers are given as ``proceed``: refundcore runs the
    work itself, so a wrapper never calls it."""
    raise RuntimeError("refundcore runs the operation; a wrapper never calls proceed")


def _missing_stage(info: ProviderInfo, hook: str, got: object) -> PluginError:
    problem = (
        "no implementation returned a value" if got is None else f"returned {type(got).__name__}"
    )
    return PluginError(info.id, hook, TypeError(problem), problem=problem)
