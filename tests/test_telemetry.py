"""refundcore.telemetry with the OpenTelemetry SDK's in-memory exporters: the spans,
metrics and gauges an application sees for a refund, a replay, a reconcile and a
duplicate callback; the HTTP span of an instrumented transport under the send span;
nothing secret or about the payer in any span.

Over real sockets against the testpay emulator, with a SQLite journal.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, StatusCode

from refundcore import (
    CallbackVerdict,
    HttpResponse,
    Money,
    PaymentRef,
    Refund,
    RefundNotification,
    RefundStatus,
    SignatureError,
    ValidationError,
    hookimpl,
)
from refundcore.sandbox import Fault, LedgerRefund, SandboxRun
from refundcore.telemetry import DURATION_BUCKETS, Telemetry

#: ``make_client(**kwargs)``: the client of this test's kind (see conftest).
MakeClient = Callable[..., Any]

HKD = "HKD"


#: The stages and journal steps of a journalled refund, each timed.
JOURNALLED_STAGES = {"journal claim", "build", "sign", "send", "parse", "journal record"}


class App:
    """What an application wires up: the SDK with in-memory exporters, a client with a
    journal, and refundcore's telemetry plugin on it."""

    def __init__(self, run: SandboxRun, sampler: Sampler | None = None) -> None:
        self.run = run
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(sampler=sampler)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.metrics = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.metrics])
        run.client.register_plugin(
            Telemetry(
                tracer_provider=self.tracer_provider,
                meter_provider=self.meter_provider,
                journal=run.client.journal,
            )
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def operations(self) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.parent is None]

    def children(self, parent: ReadableSpan) -> list[str]:
        assert parent.context is not None
        return [
            span.name
            for span in self.finished()
            if span.parent is not None and span.parent.span_id == parent.context.span_id
        ]

    def span(self, name: str) -> ReadableSpan:
        (span,) = [span for span in self.finished() if span.name == name]
        return span

    def durations(self) -> dict[str, float]:
        """``refundcore.stage.duration`` now: stage → the sum of its durations."""
        found = {}
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "refundcore.stage.duration":
                        for point in metric.data.data_points:
                            attributes = dict(point.attributes or {})
                            assert set(attributes) == {"refundcore.provider", "refundcore.stage"}
                            found[attributes["refundcore.stage"]] = point.sum  # type: ignore[union-attr]
        return found

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The metric's data points now: attributes → value (a histogram's count)."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        found[key] = getattr(point, "value", None)
                        if found[key] is None:
                            found[key] = point.count  # type: ignore[union-attr]
        return found


@pytest.fixture
def run(installed: Path, tmp_path: Path, make_client: MakeClient) -> Iterator[SandboxRun]:
    """Every test here runs against both clients (``client_kind``)."""
    client = make_client(journal=f"sqlite:///{tmp_path / 'journal.db'}", lease_seconds=7.0)
    with SandboxRun("testpay", client=client) as run:
        yield run


@pytest.fixture
def app(run: SandboxRun) -> App:
    return App(run)


def seed(run: SandboxRun, **kw: Any) -> PaymentRef:
    return run.emulator.seed_payment(Money("100.00", HKD), **kw)


def refund(run: SandboxRun, payment: PaymentRef, refund_id: str) -> Any:
    return run.client.refund(
        "testpay", payment=payment, amount=Money("10", HKD), refund_id=refund_id
    )


def key(**attributes: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((f"refundcore.{k}", v) for k, v in attributes.items()))


def test_a_refund_is_one_span_with_a_child_per_stage(app: App) -> None:
    refund(app.run, seed(app.run), "r-1")
    (operation,) = app.operations()
    assert operation.name == "refundcore refund" and operation.kind is SpanKind.INTERNAL
    assert dict(operation.attributes or {}) == {
        "refundcore.provider": "testpay",
        "refundcore.operation": "refund",
        "refundcore.refund_id": "r-1",
        "refundcore.attempt": 1,
        "refundcore.status": "SUCCEEDED",
        "refundcore.source": "sent",
        "refundcore.replayed": False,
    }
    assert operation.status.status_code is StatusCode.UNSET
    assert app.children(operation) == [
        "refundcore journal claim",
        "refundcore build",
        "refundcore sign",
        "refundcore send",
        "refundcore parse",
        "refundcore journal record",
    ]
    # A stage span has what differs from its operation's: the send's answer here.
    for span in app.finished():
        if span is not operation:
            expected = {"http.response.status_code": 200} if span.name == "refundcore send" else {}
            assert dict(span.attributes or {}) == expected, span.name
    assert app.points("refundcore.results") == {
        key(provider="testpay", operation="refund", status="SUCCEEDED", source="sent"): 1
    }
    stages = app.points("refundcore.stage.duration")
    assert {dict(k)["refundcore.stage"] for k in stages} == JOURNALLED_STAGES
    assert set(stages.values()) == {1}


def test_each_stage_span_lies_in_its_operation_and_its_duration_is_the_span_s(
    app: App,
) -> None:
    """Stage spans other than send's are made from the stage's own times when the
    operation ends: they still lie in the operation's span, in the order the stages
    ran, and each duration recorded is its span's."""
    refund(app.run, seed(app.run), "r-1")
    (operation,) = app.operations()
    assert operation.start_time is not None and operation.end_time is not None
    started = operation.start_time
    durations = app.durations()
    for name in app.children(operation):
        span = app.span(name)
        assert span.start_time is not None and span.end_time is not None
        assert started <= span.start_time <= span.end_time <= operation.end_time
        started = span.end_time
        assert durations[name.removeprefix("refundcore ")] == (
            (span.end_time - span.start_time) / 1e9
        )


def test_stage_durations_fall_in_buckets_of_seconds(app: App) -> None:
    """The SDK's default boundaries (0, 5, 10, … 10000) are for milliseconds: in
    seconds every stage would share one bucket (0 to 5 s). The plugin advises its
    own."""
    refund(app.run, seed(app.run), "r-1")
    data = app.metrics.get_metrics_data()
    assert data is not None
    (points,) = [
        metric.data.data_points
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "refundcore.stage.duration"
    ]
    for point in points:
        assert tuple(point.explicit_bounds) == DURATION_BUCKETS  # type: ignore[union-attr]
        assert sum(point.bucket_counts) == point.count == 1  # type: ignore[union-attr]


def test_a_stage_that_fails_is_an_error_span_and_still_a_duration(app: App) -> None:
    class Refusing:
        """An app's policy, enforced as the request is signed."""

        @hookimpl
        def refundcore_sign_request(self) -> None:
            raise ValidationError("not today", field="amount")

    app.run.client.register_plugin(Refusing())
    with pytest.raises(ValidationError):
        refund(app.run, seed(app.run), "r-1")
    (operation,) = app.operations()
    assert operation.status.status_code is StatusCode.ERROR
    assert (operation.attributes or {})["error.type"] == "ValidationError"
    assert (operation.attributes or {})["refundcore.attempt"] == 1
    sign = app.span("refundcore sign")
    assert sign.status.status_code is StatusCode.ERROR
    assert dict(sign.attributes or {}) == {"error.type": "ValidationError"}
    assert app.span("refundcore build").status.status_code is StatusCode.UNSET
    assert {"build", "sign"} <= set(app.durations())


def test_the_operation_span_is_current_while_it_runs(app: App) -> None:
    """What an app does in a stage (other than the send: its span is current there)
    nests under the operation's span."""
    seen: list[trace.Span] = []

    class Watching:
        @hookimpl
        def refundcore_sign_request(self) -> None:
            seen.append(trace.get_current_span())

        @hookimpl
        def refundcore_result(self) -> None:
            seen.append(trace.get_current_span())

    app.run.client.register_plugin(Watching())
    refund(app.run, seed(app.run), "r-1")
    (operation,) = app.operations()
    assert operation.context is not None
    assert [span.get_span_context().span_id for span in seen] == [operation.context.span_id] * 2


def test_a_request_checked_outside_any_operation_is_a_build_span(app: App) -> None:
    payment = seed(app.run)
    app.run.client.check(
        "testpay", Refund(refund_id="r-1", payment=payment, amount=Money("1", HKD))
    )
    build = app.span("refundcore build")
    assert build.parent is None
    # No operation's span says which provider: this one does.
    assert dict(build.attributes or {}) == {
        "refundcore.provider": "testpay",
        "refundcore.stage": "build",
    }
    assert app.durations().keys() == {"build"}


def test_a_replay_is_marked_and_sends_nothing(app: App) -> None:
    payment = seed(app.run)
    refund(app.run, payment, "r-1")
    refund(app.run, payment, "r-1")
    _, replay = app.operations()
    assert (replay.attributes or {})["refundcore.replayed"] is True
    assert (replay.attributes or {})["refundcore.source"] == "replayed"
    assert app.children(replay) == ["refundcore journal claim"]
    assert app.points("refundcore.results") == {
        key(provider="testpay", operation="refund", status="SUCCEEDED", source="sent"): 1,
        key(provider="testpay", operation="refund", status="SUCCEEDED", source="replayed"): 1,
    }


def test_a_reconcile_and_the_unsettled_gauges(app: App) -> None:
    run = app.run
    payment = seed(run)
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    lost = refund(run, payment, "r-u")
    refund(run, seed(run, refund_outcome=RefundStatus.PENDING), "r-p")
    assert lost.status is RefundStatus.UNKNOWN
    counts = app.points("refundcore.unsettled.count")
    assert counts == {
        (("refundcore.provider", "testpay"), ("refundcore.state", "UNKNOWN")): 1,
        (("refundcore.provider", "testpay"), ("refundcore.state", "PENDING")): 1,
    }
    ages = app.points("refundcore.unsettled.oldest_age")
    assert all(0 <= age < 60 for age in ages.values()) and len(ages) == 2

    app.spans.clear()
    settled = refund(run, payment, "r-u")
    assert settled.status is RefundStatus.SUCCEEDED
    (operation,) = app.operations()
    attributes = dict(operation.attributes or {})
    assert (attributes["refundcore.source"], attributes["refundcore.attempt"]) == ("reconciled", 2)
    assert app.children(operation) == [
        "refundcore journal claim",
        "refundcore build",
        "refundcore sign",
        "refundcore send",
        "refundcore parse",
        "refundcore journal query",  # the query's answer kept as evidence
        "refundcore journal record",
    ]
    run.emulator.ledger.settle("r-p", RefundStatus.SUCCEEDED)
    assert [r.source.value for r in run.client.reconcile()] == ["reconciled"]
    results = app.points("refundcore.results")
    assert (
        results[
            key(provider="testpay", operation="refund", status="SUCCEEDED", source="reconciled")
        ]
        == 2
    )
    assert (
        results[key(provider="testpay", operation="query", status="SUCCEEDED", source="sent")] == 2
    )
    # Nothing is left unsettled: the drained states report 0.
    app.run.client.journal  # noqa: B018 - the gauges read it
    assert set(app.points("refundcore.unsettled.count").values()) == {0}
    assert set(app.points("refundcore.unsettled.oldest_age").values()) == {0.0}


def test_callbacks_by_verdict_a_duplicate_and_a_contradiction(app: App) -> None:
    run = app.run
    refund(run, seed(run, refund_outcome=RefundStatus.PENDING), "r-cb")
    run.emulator.ledger.settle("r-cb", RefundStatus.SUCCEEDED)
    final = run.emulator.signed_callback("r-cb", path="/testpay")
    for _ in range(2):
        response = requests.post(
            run.notify_url, data=final.body, headers=dict(final.headers), timeout=5
        )
        assert response.status_code == 200
    with pytest.raises(SignatureError):
        run.client.verify_callback(
            "testpay", method="POST", path="/testpay", headers={}, body=final.body
        )
    # The gateway then says it failed: the journal keeps SUCCEEDED and applies nothing.
    run.emulator.ledger.settle("r-cb", RefundStatus.FAILED)
    failed = run.emulator.signed_callback("r-cb", path="/testpay")
    run.client.verify_callback(
        "testpay", method="POST", path="/testpay", headers=failed.headers, body=failed.body
    )
    assert app.points("refundcore.callbacks") == {
        (("refundcore.callback.verdict", "verified"), ("refundcore.provider", "testpay")): 1,
        (("refundcore.callback.verdict", "duplicate"), ("refundcore.provider", "testpay")): 1,
        (("refundcore.callback.verdict", "forged"), ("refundcore.provider", "testpay")): 1,
        (("refundcore.callback.verdict", "contradiction"), ("refundcore.provider", "testpay")): 1,
    }
    callbacks = [span for span in app.operations() if span.name == "refundcore callback"]
    verified, duplicate, forged, refused = (dict(span.attributes or {}) for span in callbacks)
    assert refused["refundcore.status"] == "FAILED" and "refundcore.refund_id" not in refused
    assert (verified["refundcore.duplicate"], duplicate["refundcore.duplicate"]) == (False, True)
    assert duplicate["refundcore.refund_id"] == "r-cb"
    assert forged["error.type"] == "SignatureError"
    assert callbacks[2].status.status_code is StatusCode.ERROR
    assert app.children(callbacks[1]) == ["refundcore verify", "refundcore journal apply"]
    assert app.children(callbacks[2]) == ["refundcore verify"]


def genuine(run: SandboxRun, record: LedgerRefund) -> Any:
    """The gateway's signed callback about ``record`` (its ids as the test sets them)."""
    return run.emulator.build_callback(record, path="/testpay", at=run.emulator.clock())


def verify(run: SandboxRun, callback: Any) -> RefundNotification:
    note: RefundNotification = run.client.verify_callback(
        "testpay", method="POST", path="/testpay", headers=callback.headers, body=callback.body
    )
    return note


def test_each_callback_verdict_says_what_the_journal_made_of_it(app: App) -> None:
    """A fresh word, its redelivery, a word against the final state, one whose gateway
    refund id is another journalled refund's, and one about a refund the journal does
    not hold: each span and each count says which it was."""
    run = app.run
    refund(run, seed(run, refund_outcome=RefundStatus.PENDING), "r-a")
    refund(run, seed(run, refund_outcome=RefundStatus.PENDING), "r-b")
    run.emulator.ledger.settle("r-a", RefundStatus.SUCCEEDED)
    a = run.emulator.ledger.find_refund("r-a")
    b = run.emulator.ledger.find_refund("r-b")
    assert a is not None and b is not None
    told = [verify(run, genuine(run, a)) for _ in range(2)]
    run.emulator.ledger.settle("r-a", RefundStatus.FAILED)
    told.append(verify(run, genuine(run, a)))
    # It names r-b by its refund id, but the gateway's id it signed is r-a's.
    told.append(verify(run, genuine(run, attrs.evolve(b, provider_refund_id=a.provider_refund_id))))
    # Made at the gateway, not through this client (its dashboard, say).
    elsewhere = attrs.evolve(a, refund_id="r-dashboard", provider_refund_id="pr-dashboard")
    told.append(verify(run, genuine(run, elsewhere)))

    verdicts = ["verified", "duplicate", "contradiction", "misdirected", "unmatched"]
    assert [note.verdict.value for note in told] == verdicts
    assert [note.refund_id for note in told] == ["r-a", "r-a", None, None, "r-dashboard"]
    assert [note.contradicts for note in told] == [None, None, RefundStatus.SUCCEEDED, None, None]
    callbacks = [span for span in app.operations() if span.name == "refundcore callback"]
    attributes = [dict(span.attributes or {}) for span in callbacks]
    assert [each["refundcore.callback.verdict"] for each in attributes] == verdicts
    assert [each.get("refundcore.refund_id") for each in attributes] == [
        "r-a",
        "r-a",
        None,
        None,
        "r-dashboard",
    ]
    assert [each["refundcore.duplicate"] for each in attributes] == [
        False,
        True,
        False,
        False,
        False,
    ]
    assert all(span.status.status_code is StatusCode.UNSET for span in callbacks)
    assert app.points("refundcore.callbacks") == {
        key(provider="testpay", **{"callback.verdict": verdict}): 1 for verdict in verdicts
    }


def test_a_callback_without_a_journal_is_unjournalled(
    installed: Path, make_client: MakeClient
) -> None:
    """Nothing to check it against: not counted as having settled anything, whatever
    the plugin's notification claimed."""

    class Boastful:
        """A plugin wrapper that claims the journal's say for itself."""

        @hookimpl(wrapper=True)
        def refundcore_verify_callback(self) -> Generator[None, Any, Any]:
            note = yield
            return attrs.evolve(note, verdict=CallbackVerdict.VERIFIED)

    with SandboxRun("testpay", client=make_client(journal=None)) as run:
        app = App(run)
        run.client.register_plugin(Boastful())
        refund(run, seed(run), "r-free")
        record = run.emulator.ledger.find_refund("r-free")
        assert record is not None
        for _ in range(2):
            note = verify(run, genuine(run, record))
            assert (note.verdict, note.duplicate) == (CallbackVerdict.UNJOURNALLED, False)
        (span, _) = [s for s in app.operations() if s.name == "refundcore callback"]
        assert dict(span.attributes or {})["refundcore.callback.verdict"] == "unjournalled"
        assert app.points("refundcore.callbacks") == {
            key(provider="testpay", **{"callback.verdict": "unjournalled"}): 2
        }


def test_the_send_span_is_the_parent_of_the_http_client_span(app: App, client_kind: str) -> None:
    """The app instruments the HTTP client the refund goes out on: ``requests`` under
    its own sync transport, the async client's own ``httpx`` client."""

    class RequestsTransport:
        """An app's own transport on requests, which it instruments."""

        def __init__(self) -> None:
            self.session = requests.Session()

        @hookimpl
        def refundcore_send_request(self, request: Any) -> HttpResponse:
            reply = self.session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=request.body,
                timeout=5,
            )
            return HttpResponse(status=reply.status_code, body=reply.content)

    instrumentor: Any
    if client_kind == "sync":
        transport = RequestsTransport()
        app.run.client.register_plugin(transport)
        instrumentor, closing = RequestsInstrumentor(), transport.session.close
    else:
        instrumentor, closing = HTTPXClientInstrumentor(), lambda: None
    instrumentor.instrument(tracer_provider=app.tracer_provider)
    try:
        result = refund(app.run, seed(app.run), "r-1")
    finally:
        instrumentor.uninstrument()
        closing()
    assert result.status is RefundStatus.SUCCEEDED
    (send,) = [span for span in app.finished() if span.name == "refundcore send"]
    (http,) = [span for span in app.finished() if span.kind is SpanKind.CLIENT]
    assert send.context is not None and http.parent is not None
    assert http.parent.span_id == send.context.span_id
    assert http.context is not None and send.context.trace_id == http.context.trace_id


def test_a_trace_not_sampled_gets_no_stage_span_and_every_measurement(
    run: SandboxRun, client_kind: str
) -> None:
    """A trace the sampler drops has no span at all, not even the instrumented HTTP
    client's; its stages are not even offered to the sampler (``ParentBased`` would
    drop them). The durations and results are all recorded."""

    class Asked(Sampler):
        def __init__(self) -> None:
            self.names: list[str] = []
            self.deciding = ParentBased(ALWAYS_OFF)

        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            self.names.append(args[2])
            return self.deciding.should_sample(*args, **kwargs)

        def get_description(self) -> str:
            return "asked"

    sampler = Asked()
    app = App(run, sampler=sampler)
    instrumentor: Any = (
        RequestsInstrumentor() if client_kind == "sync" else HTTPXClientInstrumentor()
    )
    instrumentor.instrument(tracer_provider=app.tracer_provider)
    try:
        assert refund(run, seed(run), "r-1").status is RefundStatus.SUCCEEDED
    finally:
        instrumentor.uninstrument()
    assert app.finished() == []
    assert [name for name in sampler.names if name.startswith("refundcore")] == [
        "refundcore refund"
    ]
    assert app.durations().keys() == JOURNALLED_STAGES
    assert app.points("refundcore.results") == {
        key(provider="testpay", operation="refund", status="SUCCEEDED", source="sent"): 1,
    }


def test_no_secret_or_payer_detail_in_any_span(app: App) -> None:
    run = app.run
    secret = run.emulator.credentials["secret"]
    payment = seed(run, refund_outcome=RefundStatus.PENDING)
    result = run.client.refund(
        "testpay",
        payment=payment,
        amount=Money("12.34", HKD),
        refund_id="r-1",
        reason="customer Jane Doe",
        notify_url=run.notify_url,
    )
    run.emulator.settle("r-1", RefundStatus.SUCCEEDED)  # and sends its callback
    run.wait_for_notifications(1)
    run.client.query("testpay", refund_id="r-1", payment=payment)
    forbidden = [
        secret,
        payment.payment_id,
        payment.merchant_reference,
        "12.34",
        "Jane Doe",
        result.provider_refund_id,
    ]
    spans = app.finished()
    assert {span.name for span in spans} >= {"refundcore refund", "refundcore callback"}
    for span in spans:
        texts = [span.name, repr(dict(span.attributes or {})), repr(span.events)]
        texts.append(span.status.description or "")
        for text in texts:
            for value in forbidden:
                assert value is not None and value not in text, (span.name, text)


def test_without_an_sdk_the_plugin_costs_nothing_and_changes_nothing(run: SandboxRun) -> None:
    run.client.register_plugin(Telemetry(journal=run.client.journal))
    assert refund(run, seed(run), "r-1").status is RefundStatus.SUCCEEDED
