"""A property: whatever a gateway or a plugin does with a configured secret (echoes it
anywhere in a reply, in another letter case or encoded, puts it in an error, its notes
or the errors it was raised from or during), neither the secret nor such a form of it
appears in any output — the result, the exception and its traceback, the log records,
the spans and metrics, the journal's file, a batch's report and its CSV file, a
verified callback's notification."""

from __future__ import annotations

import base64
import builtins
import http.server
import json
import logging
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from refundcore import (
    Money,
    OutcomeUnknown,
    PaymentRef,
    RefundClient,
    RefundError,
    TransportError,
    ValidationError,
    hookimpl,
)
from refundcore.batch import BatchRow
from refundcore.models import HttpResponse
from refundcore.telemetry import Telemetry

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/="
#: A secret has upper and lower case letters and a digit, as credentials do: text
#: without one of them may be a word refundcore writes anyway (``http_sta`` is part of
#: every result's repr), which would be reported as a leak.
secrets = st.text(alphabet=_ALPHABET, min_size=8, max_size=40).filter(
    lambda s: (
        any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s)
    )
)

#: Where a reply carries the secret: each builds a JSON body around it.
_REPLIES = {
    "error message": lambda s: {"status": "failed", "error": {"code": "x", "message": s}},
    "error code": lambda s: {"status": "failed", "error": {"code": s, "message": "no"}},
    "inside a sentence": lambda s: {
        "status": "failed",
        "error": {"code": "auth", "message": f"bad token {s}; client secret={s}!"},
    },
    "nested field": lambda s: {
        "status": "succeeded",
        "refund": {"id": "R1", "amount": "10.00", "currency": "HKD", "echo": [{"k": s}]},
    },
    "a key": lambda s: {"status": "pending", "refund": {"id": "R1", s: "v"}},
    "the refund's id": lambda s: {"status": "succeeded", "refund": {"id": s}},
    "lower-cased": lambda s: {"status": "failed", "error": {"message": f"key {s.lower()}"}},
    "upper-cased": lambda s: {"status": "failed", "error": {"code": s.upper()}},
    "url-encoded": lambda s: {
        "status": "failed",
        "error": {"message": f"sent secret={quote_plus(s)}&b={quote(s, safe='')}"},
    },
    "json-escaped": lambda s: {
        "status": "failed",
        "error": {"message": json.dumps({"echo": s}).replace("/", "\\/")},
    },
    "hex": lambda s: {"status": "failed", "error": {"message": f"key {s.encode().hex()}"}},
    "base64": lambda s: {
        "status": "failed",
        "error": {"message": f"Authorization: Basic {_b64(f'id:{s}')} refused"},
        "echo": {"auth": _b64(f"ab{s}")},
    },
}
_FAILURES = {
    "transport error": lambda s: TransportError(f"connect https://gw.example/?token={s} failed"),
    "outcome unknown": lambda s: OutcomeUnknown(f"read timed out after sending key={s}"),
    "untyped send error": lambda s: RuntimeError(f"socket said {s}"),
    # An error's text is cut at 200 characters: here just inside the secret.
    "cut short": lambda s: TransportError(f"{'x' * 150} token={s[: len(s) // 2 + 2]}"),
}
_STAGE_ERRORS = {
    "refund error": lambda s: ValidationError(f"the gateway wants {s}", field="amount"),
    "untyped error": lambda s: KeyError(s),
    "chained error": lambda s: _chained(s),
    "a note": lambda s: _noted(s),
    "bytes": lambda s: RuntimeError(b"request body: secret=" + s.encode()),
    "a file name": lambda s: FileNotFoundError(2, "No such file", f"/keys/{s}"),
    "context behind a cause": lambda s: _behind_a_cause(s),
}
if hasattr(builtins, "ExceptionGroup"):  # Python 3.11+
    _STAGE_ERRORS["a group"] = lambda s: builtins.ExceptionGroup("stages", [ValueError(s)])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _forms(secret: str) -> list[str]:
    """The secret and the encoded forms of it the replies above plant (those of base64
    without the edge characters that depend on what surrounds the secret)."""
    return [
        secret,
        secret.lower(),
        secret.upper(),
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        secret.encode().hex(),
        _b64(f"id:{secret}")[4:-4],
        _b64(f"ab{secret}")[4:-4],
    ]


def _noted(secret: str) -> Exception:
    exc = RuntimeError("while signing")
    # What add_note (Python 3.11+) sets; tracebacks print it.
    setattr(exc, "__notes__", [f"the key was {secret}"])  # noqa: B010
    return exc


def _behind_a_cause(secret: str) -> Exception:
    # Shown by no traceback (the cause hides it), yet reachable as __context__.
    try:
        raise ValueError(f"config value {secret} rejected")
    except ValueError:
        try:
            raise KeyError("amount")
        except KeyError as cause:
            try:
                raise RuntimeError("while building") from cause
            except RuntimeError as outer:
                return outer


def _chain(exc: BaseException) -> list[str]:
    """The text of ``exc`` and of every exception reachable from it."""
    texts, pending, seen = [], [exc], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [repr(current), repr(current.args), repr(getattr(current, "__dict__", None))]
        texts += [repr(getattr(current, "filename", None))]
        pending += [current.__cause__, current.__context__]
        pending += getattr(current, "exceptions", None) or ()
    return texts


def _chained(secret: str) -> Exception:
    try:
        raise ValueError(f"config value {secret} rejected")
    except ValueError as inner:
        try:
            raise RuntimeError("while building") from inner
        except RuntimeError as outer:
            return outer


def _telemetry(client: RefundClient) -> Callable[[], list[str]]:
    """Telemetry on ``client``, exported in memory: what it exported so far, as text
    (spans with their attributes, events and status; metrics with their exemplars)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    client.register_plugin(
        Telemetry(
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[metrics]),
            journal=client.journal,
        )
    )

    def exported() -> list[str]:
        data = metrics.get_metrics_data()
        texts = [span.to_json() for span in spans.get_finished_spans()]
        return texts + ([] if data is None else [data.to_json()])

    return exported


class _Gateway:
    """Replaces the transport (and, if asked, breaks the build stage)."""

    def __init__(self, reply: Any, status: int, failure: Exception | None, stage: Exception | None):
        self.reply, self.status, self.failure, self.stage = reply, status, failure, stage

    @hookimpl
    def refundcore_send_request(self, provider: Any, config: Any, request: Any) -> HttpResponse:
        if self.failure is not None:
            raise self.failure
        body = self.reply if isinstance(self.reply, bytes) else json.dumps(self.reply).encode()
        return HttpResponse(status=self.status, body=body)

    @hookimpl(wrapper=True)
    def refundcore_build_request(self, provider: Any) -> Iterator[Any]:
        request = yield
        if self.stage is not None:
            raise self.stage
        return request


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    secret=secrets,
    where=st.sampled_from([*_REPLIES, "plain text body", *_FAILURES, *_STAGE_ERRORS]),
    status=st.sampled_from([200, 400, 401, 500, 503]),
)
def test_no_output_holds_a_secret(
    installed: Path, caplog: pytest.LogCaptureFixture, secret: str, where: str, status: int
) -> None:
    import refundcore_testpay

    reply: Any = _REPLIES.get(where, lambda s: f"denied: {s}".encode())(secret)
    failure = _FAILURES[where](secret) if where in _FAILURES else None
    stage = _STAGE_ERRORS[where](secret) if where in _STAGE_ERRORS else None
    caplog.clear()
    outputs: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        journal = Path(tmp) / "journal.db"
        client = RefundClient(entry_points=False, journal=f"sqlite:///{journal}")
        client.register_plugin(refundcore_testpay, "testpay")
        client.register_plugin(_Gateway(reply, status, failure, stage))
        exported = _telemetry(client)
        client.configure(
            "testpay", {"base_url": "https://gw.example", "api_key": "key-1", "secret": secret}
        )
        try:
            result = client.refund(
                "testpay", payment=PaymentRef("P-1"), amount=Money("10.00", "HKD")
            )
            outputs += [repr(result), str(result.message), str(result.error_code)]
            outputs.append(json.dumps(result.raw, default=str))
            entry = client.journal.get("testpay", result.refund_id)  # type: ignore[union-attr]
            outputs.append(repr(entry))
        except RefundError as exc:
            outputs += [repr(exc), "".join(traceback.format_exception(exc)), *_chain(exc)]
        # The same refund in a batch: its report and the CSV file written of it.
        row = BatchRow(provider="testpay", payment_id="P-2", amount=Money("10.00", "HKD"))
        with client.refund_many([row], skip_invalid=True) as report:
            report.write(Path(tmp) / "report.csv")
            outputs += [repr(outcome) for outcome in report.outcomes]
        client.close()
        outputs += exported()
        for path in Path(tmp).iterdir():
            outputs.append(path.read_bytes().decode("latin-1"))
    formatter = logging.Formatter("%(message)s %(exc_text)s")
    for record in caplog.records:
        outputs += [formatter.format(record), repr(vars(record))]
    # The start of the secret is looked for only where it was planted: a few
    # characters of it may well occur by chance elsewhere.
    start = f"token={secret[: len(secret) // 2 + 2]}"
    forms = [*_forms(secret), *([start] if where == "cut short" else [])]
    leaked = [(i, f) for i, text in enumerate(outputs) for f in forms if f in text]
    assert not leaked, f"{where}: the secret (form, output) is in {leaked}"


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(secret=secrets)
def test_a_callback_echoing_a_secret_gives_a_notification_without_it(
    installed: Path, caplog: pytest.LogCaptureFixture, secret: str
) -> None:
    # The gateway signs what it sends: a callback may quote the secret in any field
    # the plugin reads into the notification, not only in what stays in its raw.
    import refundcore_testpay

    caplog.clear()
    refund = {
        "status": "succeeded",
        "refund_id": f"R-{secret}",
        "id": secret.lower(),
        "payment_id": quote_plus(secret),
    }
    body = json.dumps({"event": f"refund.{secret}", "refund": refund}).encode()
    timestamp = str(int(time.time()))
    signature = refundcore_testpay.signature(secret, timestamp, "POST", "/callback", body)
    with tempfile.TemporaryDirectory() as tmp:
        client = RefundClient(entry_points=False, journal=f"sqlite:///{Path(tmp) / 'j.db'}")
        client.register_plugin(refundcore_testpay, "testpay")
        exported = _telemetry(client)
        client.configure(
            "testpay", {"base_url": "https://gw.example", "api_key": "key-1", "secret": secret}
        )
        note = client.verify_callback(
            "testpay",
            method="POST",
            path="/callback",
            headers={"X-Timestamp": timestamp, "X-Signature": signature},
            body=body,
        )
        client.close()
        outputs = exported()
    assert note.status.value == "SUCCEEDED"
    outputs += [repr(note), json.dumps(dict(note.raw), default=str)]
    formatter = logging.Formatter("%(message)s %(exc_text)s")
    outputs += [formatter.format(r) + repr(vars(r)) for r in caplog.records]
    leaked = [(i, f) for i, text in enumerate(outputs) for f in _forms(secret) if f in text]
    assert not leaked, f"the secret (form, output) is in {leaked}"


class _Pending(http.server.BaseHTTPRequestHandler):
    """A gateway on loopback: every refund is pending."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"status": "pending", "refund": {"id": "R1"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _KeyInThePath:
    """A plugin whose gateway wants the key in the path (some do)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    @hookimpl(wrapper=True)
    def refundcore_build_request(self, provider: Any) -> Iterator[Any]:
        request = yield
        key = quote(self.secret, safe="")
        return attrs.evolve(request, url=request.url.replace("/v1/", f"/v1/{key}/"))


def test_a_secret_in_the_request_path_is_in_no_log_record(
    installed: Path, caplog: pytest.LogCaptureFixture, make_client: Any
) -> None:
    # The stage record, the transport's record and the HTTP stack's own lines (urllib3,
    # httpx) all name the URL sent to, without its query but with its path.
    import refundcore_testpay

    secret = "Ab3/Secret+Key=Zq9"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pending)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = make_client(entry_points=False, journal=None)
        client.register_plugin(refundcore_testpay, "testpay")
        client.register_plugin(_KeyInThePath(secret))
        url = f"http://127.0.0.1:{server.server_address[1]}"
        client.configure("testpay", {"base_url": url, "api_key": "k", "secret": secret})
        caplog.clear()
        result = client.refund("testpay", payment=PaymentRef("P-1"), amount=Money("1", "HKD"))
    finally:
        server.shutdown()
        thread.join()
    assert result.status.value == "PENDING"
    urls = [r for r in caplog.records if "127.0.0.1" in r.getMessage() + repr(vars(r))]
    assert urls, "no record names the URL: the test proves nothing"
    texts = [(r.name, r.getMessage() + repr(vars(r))) for r in caplog.records]
    leaked = [(name, f) for name, text in texts for f in _forms(secret) if f in text]
    assert not leaked, f"the secret (logger, form) is in {leaked}"
