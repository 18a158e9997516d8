"""The telemetry plugin's cost: client CPU per refund with ``refundcore.telemetry`` on,
against the same client without it.

Two clients refund through one gateway process, with the same credentials and the
same kind of journal: one bare, one with :class:`refundcore.telemetry.Telemetry`
registered on the OpenTelemetry SDK. Every metric is aggregated; spans go to a
``BatchSpanProcessor``, all of them (``sampled=1.0``) or, with a production-style
sampler (``ParentBased(TraceIdRatioBased(sampled))``), that share of the traces. What
the application does with the data afterwards (serialising, exporting) is its
exporter's cost, not the plugin's: here the exporter drops the spans and the metrics
are never collected. The sides take turns in rounds, as in
:mod:`benchmarks.client_cpu`; a round's CPU time (``time.process_time()``) divided by
its refunds is one sample, and the figure is the ratio of the medians. A telemetry
round ends by flushing the batch processor, inside the clock: handing its spans to the
exporter is then counted in the round that made them, never in a bare round the
processor's thread happened to run in.

``python -m benchmarks.telemetry --breakdown`` splits the plugin's cost: it drives the
hooks of one journalled refund in-process (no network, no client), with no SDK, the
metrics SDK alone, the tracing SDK alone, both, and both with a tenth of the traces
sampled, and prints the CPU per refund of each; and, for comparison, the SDK calls
alone that the spans and measurements of one refund need, made back to back with no
plugin around them (the least any plugin emitting them pays), and the CPU of each kind
of call alone (a stage span, a duration with and without an exemplar, a result).

``python -m benchmarks.telemetry paywizard --side traced --refunds 300`` only runs
refunds on one side (``bare``, ``no-sdk``, ``metrics``, ``traced``), untimed: under
``valgrind --tool=cachegrind --cache-sim=no``, the difference of two such runs'
instruction counts (300 and 100 refunds) over 200 is one refund's, whatever the load.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from refundcore import (
    HttpResponse,
    ProviderConfig,
    ProviderInfo,
    RefundClient,
    RefundResult,
    RefundStatus,
)
from refundcore.telemetry import Telemetry

from .client_cpu import Refunder, _refundcore, _round, refund_ids
from .common import PROVIDERS, BenchmarkError, Figure, Gateway, loopback_only
from .report import text_table

TARGET = 1.15


class _Dropped(SpanExporter):
    """Takes every span and keeps none: exporting is the application's cost."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def measure(
    provider: str,
    *,
    journal: bool = True,
    sampled: float = 1.0,
    rounds: int = 10,
    per_round: int = 40,
    warmup: int = 10,
) -> Figure:
    """One provider's per-refund CPU ratio, telemetry on / off."""
    needed = 2 * (warmup + rounds * per_round)
    with Gateway(provider, payments=needed) as gateway, tempfile.TemporaryDirectory() as tmp:

        def client(name: str) -> RefundClient:
            url = f"sqlite:///{Path(tmp) / name}.db" if journal else None
            return RefundClient({provider: gateway.config}, journal=url)

        bare, traced = client("bare"), client("traced")
        tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sampled)))
        tracer_provider.add_span_processor(BatchSpanProcessor(_Dropped()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        traced.register_plugin(Telemetry(tracer_provider, meter_provider, journal=traced.journal))
        on = _refundcore(traced, provider, gateway.currency)
        off = _refundcore(bare, provider, gateway.currency)
        payments = iter(gateway.payments)
        ids = refund_ids()
        try:
            traced_round = functools.partial(_flushed, on, tracer_provider.force_flush)
            bare_round = functools.partial(_round, off)
            traced_round(payments, ids, warmup)
            bare_round(payments, ids, warmup)
            on_cpu: list[float] = []
            off_cpu: list[float] = []
            for index in range(rounds):
                turns = [(traced_round, on_cpu), (bare_round, off_cpu)]
                for one_round, samples in turns if index % 2 == 0 else reversed(turns):
                    samples.append(one_round(payments, ids, per_round))
        except Exception as exc:
            raise BenchmarkError(f"{provider}: {exc}\ngateway: {gateway.errors()}") from exc
        finally:
            bare.close()
            traced.close()
            tracer_provider.shutdown()
            meter_provider.shutdown()
    journalled = " + SQLite journal" if journal else ""
    share = "" if sampled == 1.0 else f", {sampled:.0%} of traces sampled"
    return Figure(
        name=f"client CPU per refund, telemetry on / off{journalled}{share}: {provider}",
        ours=statistics.median(on_cpu) * 1e6,
        baseline=statistics.median(off_cpu) * 1e6,
        unit="µs CPU",
        target=TARGET,
        higher_is_better=False,
        detail=(
            f"{rounds} rounds x {per_round} refunds per side, medians; OpenTelemetry SDK, "
            f"{sampled:.0%} of traces sampled (BatchSpanProcessor, exporter dropping "
            "them), every metric aggregated"
        ),
    )


#: What :func:`run_side` registers: no plugin, the plugin on the API's no-ops, on the
#: metrics SDK alone, on both SDKs.
SIDES = ("bare", "no-sdk", "metrics", "traced")


def run_side(
    provider: str, side: str, refunds: int, *, sampled: float = 1.0, journal: bool = True
) -> None:
    """``refunds`` refunds (after 20 to warm up) on one client set up as ``side`` says,
    untimed: for counting the instructions a refund takes under valgrind, which the
    machine's load does not change (the difference of two counts divided by the
    difference of their ``refunds`` is one refund's; the gateway is another process)."""
    with Gateway(provider, payments=refunds + 20) as gateway, tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'journal'}.db" if journal else None
        client = RefundClient({provider: gateway.config}, journal=url)
        tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sampled)))
        tracer_provider.add_span_processor(BatchSpanProcessor(_Dropped()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        if side != "bare":
            client.register_plugin(
                Telemetry(
                    tracer_provider if side == "traced" else None,
                    meter_provider if side in ("metrics", "traced") else None,
                    journal=client.journal,
                )
            )
        refund = _refundcore(client, provider, gateway.currency)
        payments, ids = iter(gateway.payments), refund_ids()
        try:
            for _ in range(refunds + 20):
                refund(next(payments), next(ids))
        finally:
            client.close()
            tracer_provider.shutdown()
            meter_provider.shutdown()


def _flushed(
    refund: Refunder,
    flush: Callable[[], object],
    payments: Iterator[Mapping[str, Any]],
    ids: Iterator[str],
    n: int,
) -> float:
    """:func:`~benchmarks.client_cpu._round` and then ``flush`` (the spans the round
    made handed to the exporter), both on the clock: CPU seconds per refund."""
    work = [(next(payments), next(ids)) for _ in range(n)]
    started = time.process_time()
    for payment, refund_id in work:
        refund(payment, refund_id)
    flush()
    return (time.process_time() - started) / n


def _drive(plugin: Telemetry, rounds: int) -> float:
    """CPU seconds per refund of the plugin's hooks alone, called as pluggy calls them
    for one journalled refund: claim, build, sign, send, parse, result, record."""
    info = ProviderInfo(id="paywizard", name="PayWizard", config_class=ProviderConfig)
    result = RefundResult(status=RefundStatus.SUCCEEDED, provider="paywizard", refund_id="r")
    reply = HttpResponse(200)

    def stage(wrapper: Any, outcome: object) -> None:
        next(wrapper)
        with contextlib.suppress(StopIteration):
            wrapper.send(outcome)

    def refund() -> None:
        operation = plugin.refundcore_operation(info, "refund", "r")
        next(operation)
        stage(plugin.refundcore_journal(info, "claim"), None)
        stage(plugin.refundcore_build_request(info), None)
        stage(plugin.refundcore_sign_request(info), None)
        stage(plugin.refundcore_send_request(info), reply)
        stage(plugin.refundcore_parse_response(info), result)
        plugin.refundcore_result(info, result)
        stage(plugin.refundcore_journal(info, "record"), None)
        with contextlib.suppress(StopIteration):
            operation.send(result)

    return _per_call(refund, rounds)


#: The stages and journal steps of one journalled refund, in the order they run.
STAGES = ("journal claim", "build", "sign", "send", "parse", "journal record")


def _sdk_alone(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, rounds: int
) -> float:
    """CPU seconds per refund of the OpenTelemetry calls alone that the plugin's spans
    and measurements of one journalled refund need, back to back: the operation's span
    (current while its stages' are made), a span (no attributes: the operation's span
    has them) and a duration (provider and stage) per stage, the result counted."""
    tracer = tracer_provider.get_tracer("refundcore")
    meter = meter_provider.get_meter("refundcore")
    results = meter.create_counter("refundcore.results")
    durations = meter.create_histogram("refundcore.stage.duration", unit="s")
    operation = {
        "refundcore.provider": "paywizard",
        "refundcore.operation": "refund",
        "refundcore.refund_id": "r",
    }
    stages = [
        (f"refundcore {stage}", {"refundcore.provider": "paywizard", "refundcore.stage": stage})
        for stage in STAGES
    ]
    result = {
        "refundcore.provider": "paywizard",
        "refundcore.operation": "refund",
        "refundcore.status": "SUCCEEDED",
        "refundcore.source": "sent",
    }
    outcome = {
        "refundcore.status": "SUCCEEDED",
        "refundcore.source": "sent",
        "refundcore.replayed": False,
        "refundcore.attempt": 1,
    }

    def refund() -> None:
        span = tracer.start_span("refundcore refund", attributes=operation)
        current = trace.set_span_in_context(span)
        token = context.attach(current)
        for name, attributes in stages:
            stage = tracer.start_span(name, current)
            stage.end()
            durations.record(0.001, attributes, trace.set_span_in_context(stage, current))
        results.add(1, result)
        span.set_attributes(outcome)
        context.detach(token)
        span.end()

    return _per_call(refund, rounds)


def _sdk_each(
    tracer_provider: TracerProvider, meter_provider: MeterProvider, rounds: int
) -> dict[str, float]:
    """CPU seconds of each kind of OpenTelemetry call the plugin makes, alone: a stage
    span (made from its times, as the plugin makes it), a stage duration recorded under
    its span (offering an exemplar) and outside any span, a result counted."""
    tracer = tracer_provider.get_tracer("refundcore")
    meter = meter_provider.get_meter("refundcore")
    results = meter.create_counter("refundcore.results")
    durations = meter.create_histogram("refundcore.stage.duration", unit="s")
    parent = tracer.start_span("refundcore refund")
    current = trace.set_span_in_context(parent)
    stage = {"refundcore.provider": "paywizard", "refundcore.stage": "build"}
    result = {
        "refundcore.provider": "paywizard",
        "refundcore.operation": "refund",
        "refundcore.status": "SUCCEEDED",
        "refundcore.source": "sent",
    }
    outside = context.Context()

    def span() -> None:
        tracer.start_span("refundcore build", current, start_time=1).end(2)

    calls = {
        "a stage span": span,
        "a duration, exemplar offered": lambda: durations.record(0.001, stage, current),
        "a duration, no span": lambda: durations.record(0.001, stage, outside),
        "a result counted": lambda: results.add(1, result, current),
    }
    costs = {label: _per_call(call, rounds) for label, call in calls.items()}
    parent.end()
    return costs


def _per_call(call: Callable[[], None], rounds: int) -> float:
    """CPU seconds per ``call`` over ``rounds`` calls, after a tenth as many to warm up."""
    for _ in range(rounds // 10):
        call()
    started = time.process_time()
    for _ in range(rounds):
        call()
    return (time.process_time() - started) / rounds


def breakdown(rounds: int = 3000) -> dict[str, float]:
    """µs of CPU per refund spent in the plugin, by what the SDK records, and in the
    SDK's calls alone; then µs per call of each kind of SDK call."""
    costs = {}
    for label, traces, meters, sampled in (
        ("no SDK (the API's no-ops)", False, False, 1.0),
        ("metrics SDK", False, True, 1.0),
        ("tracing SDK, every trace", True, False, 1.0),
        ("both SDKs, every trace", True, True, 1.0),
        ("both SDKs, 10% of traces", True, True, 0.1),
    ):
        tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(sampled)))
        tracer_provider.add_span_processor(BatchSpanProcessor(_Dropped(), max_queue_size=1 << 20))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        plugin = Telemetry(tracer_provider if traces else None, meter_provider if meters else None)
        costs[label] = _drive(plugin, rounds) * 1e6
        tracer_provider.shutdown()
        meter_provider.shutdown()
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(1.0)))
    tracer_provider.add_span_processor(BatchSpanProcessor(_Dropped(), max_queue_size=1 << 20))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    costs["SDK calls alone, every trace"] = (
        _sdk_alone(tracer_provider, meter_provider, rounds) * 1e6
    )
    for label, seconds in _sdk_each(tracer_provider, meter_provider, rounds * 5).items():
        costs[f"SDK: {label}"] = seconds * 1e6
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("providers", nargs="*", default=list(PROVIDERS))
    parser.add_argument("--no-journal", action="store_true")
    parser.add_argument("--sampled", type=float, default=1.0, help="share of traces sampled")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--breakdown", action="store_true", help="the plugin's cost alone")
    parser.add_argument(
        "--side", choices=SIDES, help="only run --refunds refunds on this side, untimed"
    )
    parser.add_argument("--refunds", type=int, default=100)
    args = parser.parse_args(argv)
    if args.side:
        loopback_only()
        for provider in args.providers:
            run_side(
                provider,
                args.side,
                args.refunds,
                sampled=args.sampled,
                journal=not args.no_journal,
            )
        return 0
    if args.breakdown:
        for label, micros in breakdown().items():
            unit = "call" if label.startswith("SDK: ") else "refund"
            print(f"{label:36} {micros:6.1f} µs per {unit}")
        return 0
    loopback_only()
    figures = [
        measure(
            provider,
            journal=not args.no_journal,
            sampled=args.sampled,
            rounds=args.rounds,
            per_round=args.per_round,
        )
        for provider in args.providers
    ]
    print(text_table(figures, {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
