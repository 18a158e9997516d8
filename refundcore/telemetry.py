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

one per operation, with a child per stage and journal step. The operation's span is
current while it runs (what the application does meanwhile, in its own hooks say,
nests under it), and the send span while the transport runs, so the HTTP client span
of an instrumented transport (``requests``, ``httpx``) is its child. The other stage
spans are made when the operation ends, from the times each stage started and ended,
so a span processor sees them start then. An operation whose span the sampler drops
gets no stage span: the sampler is not asked about them (every standard sampler would
drop them too: ``ParentBased`` follows the parent, a ratio sampler decides by the
trace id they share); its measurements are recorded all the same. Attributes of an
operation's span: ``refundcore.provider``, ``refundcore.operation``,
``refundcore.refund_id``, ``refundcore.status``, ``refundcore.source``,
``refundcore.replayed``, ``refundcore.error_code``, ``refundcore.attempt``,
``refundcore.duplicate`` and ``refundcore.callback.verdict`` (callbacks), and
``error.type`` when it raised. A stage span has only what differs from its
operation's: ``error.type`` when the stage raised, ``http.response.status_code``
(send); its name says the stage. A stage outside any operation (a request checked, not
sent) is a span of its own with ``refundcore.provider`` and ``refundcore.stage``.
Never an amount, a payment or payer detail, a header, a body, a message or a secret.

Metrics:

``refundcore.results`` (counter)
    every result, by provider, operation, status and source (``sent``, ``replayed``,
    ``reconciled``, …); the queries a reconcile sends count as queries
``refundcore.callbacks`` (counter)
    every callback, by provider and verdict. A genuine one has its notification's
    :class:`~refundcore.status.CallbackVerdict`: ``verified`` (the journal holds the
    refund and the word settled it or moved it on), ``duplicate`` (the journal already
    had what it says), ``contradiction`` (the journal keeps another final state and did
    not apply it), ``misdirected`` (its gateway refund id is another refund's, or not
    the one the journal holds for the refund it names: not applied), ``unconfirmed``
    (only unsigned data ties it to the refund, and no journalled refund holds its
    gateway refund id: not applied), ``unmatched`` (the
    journal holds no refund of its ids: nothing applied) or ``unjournalled`` (the client
    has no journal: nothing checked). One refused: ``forged``, ``not_a_refund`` or
    ``error``
``refundcore.stage.duration`` (histogram, s)
    by provider and stage: each is its stage span's duration (an operation's own
    is its span's); buckets from 100 µs to 60 s (:data:`DURATION_BUCKETS`)
``refundcore.unsettled.count``, ``refundcore.unsettled.oldest_age`` (gauges)
    read from ``journal`` when the metrics are collected: how many refunds of each
    provider are ``UNKNOWN``, ``PENDING`` or ``SUBMITTING``, and how old (seconds since
    it was recorded) the oldest of them is. A provider's state that drains reports 0.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Mapping
from contextvars import ContextVar
from datetime import datetime, timezone
from time import time_ns
from typing import Any, NamedTuple

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

__all__ = ["DURATION_BUCKETS", "Telemetry"]

log = EventLogger("refundcore.telemetry")

#: States the unsettled gauges report.
UNSETTLED = (JournalState.UNKNOWN, JournalState.PENDING, JournalState.SUBMITTING)

#: The stage durations' bucket boundaries (s), unless the application's views say
#: otherwise. The SDK's default ones (0, 5, 10, … 10000) suit milliseconds: every
#: stage would land in one bucket (0 to 5 s). These span a build or parse of a few tens of
#: µs up to a send that waits out its read timeout.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

Attributes = Mapping[str, Any]


class _Stage(NamedTuple):
    """A stage or journal step that has run, as its operation keeps it until it ends."""

    name: str
    #: The provider and stage: the duration's attributes (and the span's when it has
    #: no operation to be a child of).
    attributes: Attributes
    #: When it started and ended (ns since the epoch): the span's times, and the
    #: duration recorded is the difference.
    started: int
    ended: int
    #: The send span, made as the send started; ``None``: the span is made from the
    #: times when the operation ends.
    span: trace.Span | None
    #: The exception's type name when the stage raised.
    error: str | None


class _Operation:
    """One operation under way: its span, the context that makes it current, and what
    its stages and results leave for the operation's end. The SDK's work for them (a
    span and a measurement each) is then done back to back rather than a piece after
    each network or disk wait: the same instructions, measured cheaper that way (see
    benchmarks/findings.md, "Telemetry overhead")."""

    __slots__ = ("attempt", "context", "open", "results", "span", "stages", "traced")

    def __init__(self, span: trace.Span, current: context.Context) -> None:
        self.span = span
        self.context = current
        #: Whether the operation's span is recorded. When the sampler dropped it, its
        #: stages get no span: every standard sampler drops them too (``ParentBased``
        #: follows the parent, a ratio sampler decides by the trace id they share),
        #: and asking it costs a decision, a span id and a non-recording span per
        #: stage (about a third of a recorded span's instructions).
        self.traced = span.is_recording()
        self.stages: list[_Stage] = []
        self.results: list[Attributes] = []
        self.attempt: int | None = None
        self.open = True

    def close_span(self, attributes: dict[str, Any]) -> None:
        """Set the operation span's closing ``attributes``, with the attempt the
        journal gave the operation when it has one, in one call."""
        if not self.traced:
            return
        if self.attempt is not None:
            attributes["refundcore.attempt"] = self.attempt
        self.span.set_attributes(attributes)


#: The operation running in this thread or task (a worker thread of the async client
#: gets a copy of its task's): what its stages and results report to.
_current: ContextVar[_Operation | None] = ContextVar("refundcore.telemetry", default=None)


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
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
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
        operation = _Operation(span, trace.set_span_in_context(span))
        token = context.attach(operation.context)
        reporting = _current.set(operation)
        try:
            outcome = yield
        except BaseException as exc:
            self._close(operation)
            self._refused(operation, provider, kind, exc)
            raise
        else:
            self._close(operation)
            if isinstance(outcome, RefundResult):
                self._finished(operation, outcome)
            elif isinstance(outcome, RefundNotification):
                self._notified(operation, provider, outcome)
        finally:
            _current.reset(reporting)
            context.detach(token)
            span.end()
        return outcome

    def _close(self, operation: _Operation) -> None:
        """The spans and durations of the operation's stages, and its results."""
        operation.open = False
        for stage in operation.stages:
            self._settle(stage, operation)
        for attributes in operation.results:
            self._results.add(1, attributes)

    def _emit(self, stage: _Stage, parent: context.Context | None) -> None:
        """A stage's span, a child of ``parent``'s (made from the stage's times, or
        the send span ended), and its duration."""
        span = stage.span
        if span is None:
            # Under an operation a stage span has only what differs: its name says
            # the stage, the operation's span has the provider. The SDK copies and
            # checks each attribute of each span, the first costing most.
            attributes = stage.attributes if parent is None else None
            if stage.error is not None:
                attributes = {**(attributes or {}), "error.type": stage.error}
            span = self._tracer.start_span(
                stage.name, parent, attributes=attributes, start_time=stage.started
            )
        if stage.error is not None:
            span.set_status(Status(StatusCode.ERROR, stage.error))
        span.end(end_time=stage.ended)
        # In the stage span's context: an exemplar of the duration points at it.
        self._measure(stage, trace.set_span_in_context(span, parent))

    def _measure(self, stage: _Stage, current: context.Context | None) -> None:
        """A stage's duration, recorded in ``current``."""
        self._stage_duration.record(
            max(stage.ended - stage.started, 0) / 1e9, stage.attributes, current
        )

    @staticmethod
    def _finished(operation: _Operation, result: RefundResult) -> None:
        attributes: dict[str, Any] = {
            "refundcore.status": result.status.value,
            "refundcore.source": result.source.value,
            "refundcore.replayed": result.source is ResultSource.REPLAYED,
        }
        if result.error_code is not None:
            attributes["refundcore.error_code"] = result.error_code
        operation.close_span(attributes)

    def _notified(
        self, operation: _Operation, provider: ProviderInfo, note: RefundNotification
    ) -> None:
        verdict = note.verdict.value
        attributes: dict[str, Any] = {
            "refundcore.status": note.status.value,
            "refundcore.duplicate": note.duplicate,
            "refundcore.callback.verdict": verdict,
        }
        if note.refund_id is not None:
            attributes["refundcore.refund_id"] = note.refund_id
        operation.close_span(attributes)
        self._callbacks.add(
            1, {"refundcore.provider": provider.id, "refundcore.callback.verdict": verdict}
        )

    def _refused(
        self, operation: _Operation, provider: ProviderInfo, kind: str, exc: BaseException
    ) -> None:
        error = type(exc).__name__
        attributes: dict[str, Any] = {"error.type": error}
        verdict = None
        if kind == "callback":
            if isinstance(exc, SignatureError):
                verdict = "forged"
            elif isinstance(exc, NotARefund):
                verdict = "not_a_refund"
            else:
                verdict = "error"
            attributes["refundcore.callback.verdict"] = verdict
        operation.close_span(attributes)
        # A genuine callback about something else is answered as a success: no error.
        if not isinstance(exc, NotARefund):
            operation.span.set_status(Status(StatusCode.ERROR, error))
        if verdict is not None:
            self._callbacks.add(
                1, {"refundcore.provider": provider.id, "refundcore.callback.verdict": verdict}
            )

    @hookimpl
    def refundcore_result(self, provider: ProviderInfo, result: RefundResult) -> None:
        attributes = {
            "refundcore.provider": provider.id,
            "refundcore.operation": result.operation,
            "refundcore.status": result.status.value,
            "refundcore.source": result.source.value,
        }
        operation = _current.get()
        if operation is not None and operation.open:
            operation.results.append(attributes)
        else:
            self._results.add(1, attributes)

    # -- stages and journal steps ---------------------------------------------------

    @hookimpl(wrapper=True)
    def refundcore_journal(self, provider: ProviderInfo, action: str) -> Generator[None, Any, Any]:
        outcome = yield from self._stage(provider, f"journal {action}")
        if isinstance(outcome, Claim) and outcome.entry is not None:
            operation = _current.get()
            if operation is not None:
                operation.attempt = outcome.entry.attempt
        return outcome

    @hookimpl(wrapper=True)
    def refundcore_build_request(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "build"))

    @hookimpl(wrapper=True)
    def refundcore_sign_request(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "sign"))

    @hookimpl(wrapper=True)
    def refundcore_send_request(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        """The one stage whose span is made as it starts, and current while the
        transport runs: an instrumented HTTP client's span is its child."""
        operation = _current.get()
        if operation is not None and not operation.traced:
            return (yield from self._stage(provider, "send"))
        name, attributes = self._names(provider, "send")
        started = time_ns()
        span = self._tracer.start_span(
            name,
            None,
            attributes=attributes if operation is None else None,
            start_time=started,
        )
        token = context.attach(trace.set_span_in_context(span))
        error = None
        try:
            outcome = yield
        except BaseException as exc:
            error = type(exc).__name__
            span.set_attribute("error.type", error)
            raise
        else:
            if isinstance(outcome, HttpResponse):
                span.set_attribute("http.response.status_code", outcome.status)
        finally:
            context.detach(token)
            self._done(_Stage(name, attributes, started, time_ns(), span, error))
        return outcome

    @hookimpl(wrapper=True)
    def refundcore_parse_response(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "parse"))

    @hookimpl(wrapper=True)
    def refundcore_verify_callback(self, provider: ProviderInfo) -> Generator[None, Any, Any]:
        return (yield from self._stage(provider, "verify"))

    def _stage(self, provider: ProviderInfo, stage: str) -> Generator[None, Any, Any]:
        """A stage's times and how it ended, for its span and duration."""
        started = time_ns()
        try:
            outcome = yield
        except BaseException as exc:
            name, attributes = self._names(provider, stage)
            self._done(_Stage(name, attributes, started, time_ns(), None, type(exc).__name__))
            raise
        name, attributes = self._names(provider, stage)
        self._done(_Stage(name, attributes, started, time_ns(), None, None))
        return outcome

    def _done(self, stage: _Stage) -> None:
        """Leave a stage that ran to its operation's end; one outside any operation
        (a request checked, not sent) is emitted at once."""
        operation = _current.get()
        if operation is None:
            self._emit(stage, None)
        elif operation.open:
            operation.stages.append(stage)
        else:
            self._settle(stage, operation)

    def _settle(self, stage: _Stage, operation: _Operation) -> None:
        """A stage of ``operation`` that has ended: its span under the operation's when
        that one is recorded, and its duration either way."""
        if operation.traced:
            self._emit(stage, operation.context)
        else:
            self._measure(stage, operation.context)

    def _names(self, provider: ProviderInfo, stage: str) -> tuple[str, Attributes]:
        """A stage's span name and its duration's attributes, made once per provider
        and stage (the SDK copies what it keeps)."""
        known = self._stages.get((provider.id, stage))
        if known is None:
            known = (
                f"refundcore {stage}",
                {"refundcore.provider": provider.id, "refundcore.stage": stage},
            )
            self._stages[provider.id, stage] = known
        return known


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
