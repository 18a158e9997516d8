"""OpenTelemetry traces and metrics for refundcore, from the plugin hooks alone.

    pip install 'refundcore[otel]'    # opentelemetry-api; the application sets up the SDK

    from refundcore.telemetry import Telemetry

    client.register_plugin(Telemetry(journal=client.journal))

:class:`Telemetry` is an app plugin: it implements hooks and touches nothing else of
the client, so it serves any client that runs refundcore's hooks. Without an SDK
configured, OpenTelemetry's API makes all of it a no-op.

Spans (kind INTERNAL; names never carry an id)::

    refundcore refund | refundcore query | refundcore void | refundcore callback
        refundcore journal claim | refundcore journal record | refundcore journal apply
        refundcore journal query
        refundcore build | refundcore sign | refundcore send | refundcore parse
        refundcore verify

one per operation, with a child per stage and journal step. The send span is current
while the transport runs, so the HTTP client span of an instrumented transport
(``requests``, ``httpx``) is its child. Attributes: ``refundcore.provider``,
``refundcore.operation``, ``refundcore.refund_id``, ``refundcore.status``,
``refundcore.source``, ``refundcore.replayed``, ``refundcore.error_code``,
``refundcore.attempt``, ``refundcore.duplicate`` and ``refundcore.callback.verdict``
(callbacks), ``refundcore.stage``, ``http.response.status_code`` (send) and
``error.type`` when an operation or stage raised. Never an amount, a payment or payer
detail, a header, a body, a message or a secret.

Metrics:

``refundcore.results`` (counter)
    every result, by provider, operation, status and source (``sent``, ``replayed``,
    ``reconciled``, …); the queries a reconcile sends count as queries
``refundcore.callbacks`` (counter)
    every callback, by provider and verdict: ``verified`` (it settled something),
    ``duplicate`` (the journal already had what it says), ``forged``, ``not_a_refund``
    or ``error``
``refundcore.stage.duration`` (histogram, s)
    by provider and stage (an operation's own duration is its span's)
``refundcore.unsettled.count``, ``refundcore.unsettled.oldest_age`` (gauges)
    read from ``journal`` when the metrics are collected: how many refunds of each
    provider are ``UNKNOWN``, ``PENDING`` or ``SUBMITTING``, and how old (seconds since
    it was recorded) the oldest of them is. A provider's state that drains reports 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

try:
    from opentelemetry import context, metrics, trace
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.trace import Status, StatusCode
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "refundcore.telemetry needs OpenTelemetry: pip install 'refundcore[otel]'"
    ) from exc

from .errors import JournalError, NotARefund, SignatureError
from .hookspecs import hookimpl
from .journal import Claim, Journal, JournalState
from .logs import EventLogger
from .models import HttpResponse, ProviderInfo, RefundNotification, RefundResult, ResultSource

__all__ = ["Telemetry"]

log = EventLogger("refundcore.telemetry")

#: States the unsettled gauges report.
UNSETTLED = (JournalState.UNKNOWN, JournalState.PENDING, JournalState.SUBMITTING)

Attributes = Mapping[str, Any]


class Telemetry:
    """An app plugin that traces and measures every operation of the client it is
    registered on (``client.register_plugin(Telemetry(...))``).

    ``tracer_provider`` and ``meter_provider`` default to OpenTelemetry's global ones.
    ``journal`` (usually ``client.journal``) is what the unsettled-refund gauges are
    read from; without it there are no gauges.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        journal: Journal | None = None,
    ) -> None:
        import refundcore

        version = refundcore.__version__
        self._tracer = trace.get_tracer("refundcore", version, tracer_provider)
        meter = metrics.get_meter("refundcore", version, meter_provider)
        self._results = meter.create_counter(
            "refundcore.results",
            unit="{result}",
            description="Results of refunds, voids and queries, by status and source",
        )
        self._callbacks = meter.create_counter(
            "refundcore.callbacks",
            unit="{callback}",
            description="Callbacks received, by verdict",
        )
        self._stage_duration = meter.create_histogram(
            "refundcore.stage.duration",
            unit="s",
            description="Time of one stage or journal step of an operation",
        )
        # Span names and attribute maps are made once per provider and stage, not per
        # call (the SDK copies what it keeps).
        self._stages: dict[tuple[str, str], tuple[str, Attributes]] = {}
        self._backlog = None if journal is None else _Backlog(journal)
        if self._backlog is not None:
            meter.create_observable_gauge(
                "refundcore.unsettled.count",
                callbacks=[self._backlog.counts],
                unit="{refund}",
                description="Refunds not settled yet, by provider and state",
            )
            meter.create_observable_gauge(
                "refundcore.unsettled.oldest_age",
                callbacks=[self._backlog.ages],
                unit="s",
                description="Age of the oldest refund not settled yet, by provider and state",
            )

    # -- the operation --------------------------------------------------------------

    @hookimpl(wrapper=True)
    def refundcore_operation(
        self, provider: ProviderInfo, kind: str, refund_id: str | None
    ) -> Generator[None, Any, Any]:
        attributes = {"refundcore.provider": provider.id, "refundcore.operation": kind}
        if refund_id is not None:
            attributes["refundcore.refund_id"] = refund_id
        name = _OPERATION_SPANS.get(kind) or f"refundcore {kind}"
        span = self._tracer.start_span(name, None, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        try:
            outcome = yield
            if isinstance(outcome, RefundResult):
                self._finished(span, outcome)
            elif isinstance(outcome, RefundNotification):
                self._notified(span, provider, outcome)
        except BaseException as exc:
            self._refused(span, provider, kind, exc)
            raise
        finally:
            context.detach(token)
            span.end()
        return outcome

    @staticmethod
    def _finished(span: trace.Span, result: RefundResult) -> None:
        span.set_attributes(
            {
                "refundcore.status": result.status.value,
                "refundcore.source": result.source.value,
                "refundcore.replayed": result.source is ResultSource.REPLAYED,
            }
        )
        if result.error_code is not None:
            span.set_attribute("refundcore.error_code", result.error_code)

    def _notified(self, span: trace.Span, provider: ProviderInfo, note: RefundNotification) -> None:
        verdict = "duplicate" if note.duplicate else "verified"
        span.set_attributes(
            {
                "refundcore.status": note.status.value,
                "refundcore.duplicate": note.duplicate,
                "refundcore.callback.verdict": verdict,
            }
        )
        if note.refund_id is not None:
            span.set_attribute("refundcore.refund_id", note.refund_id)
        self._callbacks.add(
            1, {"refundcore.provider": provider.id, "refundcore.callback.verdict": verdict}
        )

    def _refused(
        self, span: trace.Span, provider: ProviderInfo, kind: str, exc: BaseException
    ) -> None:
        error = type(exc).__name__
        span.set_attribute("error.type", error)
        # A genuine callback about something else is answered as a success: no error.
        if not isinstance(exc, NotARefund):
            span.set_status(Status(StatusCode.ERROR, error))
        if kind == "callback":
            if isinstance(exc, SignatureError):
                verdict = "forged"
            elif isinstance(exc, NotARefund):
                verdict = "not_a_refund"
            else:
                verdict = "error"
            span.set_attribute("refundcore.callback.verdict", verdict)
            self._callbacks.add(
                1, {"refundcore.provider": provider.id, "refundcore.callback.verdict": verdict}
            )

    @hookimpl
    def refundcore_result(self, provider: ProviderInfo, result: RefundResult) -> None:
        self._results.add(
            1,
            {
                "refundcore.provider": provider.id,
                "refundcore.operation": result.operation,
                "refundcore.status": result.status.value,
                "refundcore.source": result.source.value,
            },
        )

    # -- stages and journal steps ---------------------------------------------------

    @hookimpl(wrapper=True)
    def refundcore_journal(self, provider: ProviderInfo, action: str) -> Generator[None, Any, Any]:
        outcome = yield from self._stage(provider, f"journal {action}")
        if isinstance(outcome, Claim) and outcome.entry is not None:
            # The claim's span has ended: the current span is the operation's.
            trace.get_current_span().set_attribute("refundcore.attempt", outcome.entry.attempt)
        return outcome

    @hookimpl(wrapper=True)
    def refundcore_build_request(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "build"))

    @hookimpl(wrapper=True)
    def refundcore_sign_request(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "sign"))

    @hookimpl(wrapper=True)
    def refundcore_send_request(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "send"))

    @hookimpl(wrapper=True)
    def refundcore_parse_response(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "parse"))

    @hookimpl(wrapper=True)
    def refundcore_verify_callback(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "verify"))

    def _stage(self, provider: ProviderInfo, stage: str) -> Generator[None, Any, Any]:
        """A child span of the operation, current while the stage runs (whatever the
        stage does, an HTTP request or a call to a key service, nests under it), and
        the stage's duration."""
        known = self._stages.get((provider.id, stage))
        if known is None:
            known = (
                f"refundcore {stage}",
                {
                    "refundcore.provider": provider.id,
                    "refundcore.stage": stage,
                },
            )
            self._stages[provider.id, stage] = known
        name, attributes = known
        span = self._tracer.start_span(name, None, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        started = time.perf_counter()
        try:
            outcome = yield
            if isinstance(outcome, HttpResponse):
                span.set_attribute("http.response.status_code", outcome.status)
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            self._stage_duration.record(time.perf_counter() - started, attributes)
            context.detach(token)
            span.end()
        return outcome


_OPERATION_SPANS = {kind: f"refundcore {kind}" for kind in ("refund", "query", "void", "callback")}


class _Backlog:
    """The journal's unsettled refunds, read (one aggregate query over the unsettled
    rows) by each gauge when metrics are collected; a provider's state that drained is
    reported as 0 from then on."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._lock = threading.Lock()
        self._seen: set[tuple[str, JournalState]] = set()

    def counts(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(count, _gauge_attributes(key)) for key, (count, _) in self._read().items()
        ]

    def ages(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(age, _gauge_attributes(key)) for key, (_, age) in self._read().items()]

    def _read(self) -> dict[tuple[str, JournalState], tuple[int, float]]:
        try:
            backlog = self._journal.backlog()
        except JournalError as exc:
            log.warning(
                "journal unreadable for the unsettled gauges",
                error_code=type(exc).__name__,
                error=str(exc),
            )
            return {}
        now = datetime.now(timezone.utc)
        rows = {
            (row.provider, row.state): (row.count, (now - row.oldest).total_seconds())
            for row in backlog
            if row.state in UNSETTLED
        }
        with self._lock:
            self._seen.update(rows)
            drained = self._seen - rows.keys()
        rows.update(dict.fromkeys(drained, (0, 0.0)))
        return rows


def _gauge_attributes(key: tuple[str, JournalState]) -> Attributes:
    return {"refundcore.provider": key[0], "refundcore.state": key[1].value}
