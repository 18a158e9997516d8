"""Structured logs: every record from ``refundcore.*`` carries the same fields in
``extra`` under a message that never changes; one INFO record per operation, stage
detail at DEBUG; no configured secret in any record's message or fields.

Over real sockets against the testpay emulator, with a SQLite journal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from refundcore import (
    Money,
    PaymentRef,
    SignatureError,
    TransportError,
    ValidationError,
    hookimpl,
)
from refundcore.batch import BatchRow
from refundcore.logs import FIELDS, record_fields
from refundcore.sandbox import Fault, SandboxRun

#: ``make_client(**kwargs)``: the client of this test's kind (see conftest).
MakeClient = Callable[..., Any]

HKD = "HKD"
# The emulated gateway's own log (refundcore.sandbox) is the gateway's side: it is held
# to the fields, not to the client's messages.
CLIENT_LOGGERS = ("refundcore.client", "refundcore.transport", "refundcore.callbacks")


@pytest.fixture
def run(installed: Path, tmp_path: Path, make_client: MakeClient) -> Iterator[SandboxRun]:
    """Every test here runs against both clients (``client_kind``)."""
    client = make_client(journal=f"sqlite:///{tmp_path / 'journal.db'}", lease_seconds=7.0)
    with SandboxRun("testpay", client=client) as run:
        yield run


def seed(run: SandboxRun, **kw: Any) -> PaymentRef:
    return run.emulator.seed_payment(Money("100.00", HKD), **kw)


def refund(run: SandboxRun, payment: PaymentRef, refund_id: str, **kw: Any) -> Any:
    return run.client.refund(
        "testpay", payment=payment, amount=Money("10", HKD), refund_id=refund_id, **kw
    )


def ours(caplog: pytest.LogCaptureFixture, *names: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("refundcore") and (not names or r.name in names)
    ]


def everything(run: SandboxRun) -> None:
    """A refund, its replay, a query, a lost refund reconciled, a callback through the
    WSGI app, a forged one, a refusal and a batch."""
    payment = seed(run)
    refund(run, payment, "r-1", notify_url=run.notify_url)
    run.wait_for_notifications(1)
    refund(run, payment, "r-1", notify_url=run.notify_url)
    run.client.query("testpay", refund_id="r-1", payment=payment)
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    refund(run, seed(run), "r-u")
    run.client.reconcile()
    forged = run.emulator.signed_callback("r-1", path="/testpay")
    response = requests.post(run.notify_url, data=forged.body + b" ", timeout=5)
    assert response.status_code == 400
    with pytest.raises(ValidationError):
        refund(run, payment, "r-2", original_amount=Money("1", HKD))
    rows = [
        BatchRow(provider="testpay", payment_id=seed(run).payment_id, amount=Money("1", HKD))
        for _ in range(2)
    ]
    assert run.client.refund_many(rows, workers=2).succeeded


def test_every_record_carries_the_fields_under_a_constant_message(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    everything(run)
    records = ours(caplog)
    assert {r.name for r in records} >= {
        "refundcore.client",
        "refundcore.transport",
        "refundcore.sandbox",
    }
    for record in records:
        missing = [name for name in FIELDS if not hasattr(record, name)]
        assert not missing, f"{record.name} {record.msg!r} lacks {missing}"
        assert record.args == () or record.args is None, record.msg
        assert record.getMessage() == record.msg
    client_side = ours(caplog, *CLIENT_LOGGERS)
    messages = {r.msg for r in client_side}
    assert {"operation finished", "operation refused", "stage finished", "http exchange"} <= (
        messages
    )
    # Nothing about one refund is in a message: ids live in the fields.
    assert not [m for m in messages if "r-1" in m or "testpay" in m]
    # The records are JSON-ready as they are.
    for record in client_side:
        json.dumps(record_fields(record))


def test_one_info_record_per_operation(run: SandboxRun, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="refundcore")
    payment = seed(run)
    refund(run, payment, "r-1")
    refund(run, payment, "r-1")
    run.client.query("testpay", refund_id="r-1", payment=payment)
    info = [r for r in ours(caplog) if r.levelno == logging.INFO]
    assert [r.msg for r in info] == ["operation finished"] * 3
    fields = [
        {name: getattr(r, name) for name in ("operation", "refund_id", "status", "attempt")}
        | {"source": r.source}  # type: ignore[attr-defined]
        for r in info
    ]
    assert fields == [
        {
            "operation": "refund",
            "refund_id": "r-1",
            "status": "SUCCEEDED",
            "attempt": 1,
            "source": "sent",
        },
        {
            "operation": "refund",
            "refund_id": "r-1",
            "status": "SUCCEEDED",
            "attempt": 1,
            "source": "replayed",
        },
        {
            "operation": "query",
            "refund_id": "r-1",
            "status": "SUCCEEDED",
            "attempt": None,
            "source": "sent",
        },
    ]
    assert all(r.provider == "testpay" and r.duration_ms > 0 for r in info)  # type: ignore[attr-defined]


def test_a_retry_after_an_unknown_outcome_is_attempt_two(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="refundcore")
    payment = seed(run)
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    refund(run, payment, "r-u")
    refund(run, payment, "r-u")
    info = [r for r in ours(caplog, "refundcore.client") if r.levelno == logging.INFO]
    assert [(r.status, r.attempt, r.source) for r in info] == [  # type: ignore[attr-defined]
        ("UNKNOWN", 1, "sent"),
        ("SUCCEEDED", 2, "reconciled"),
    ]


def test_stage_detail_at_debug(run: SandboxRun, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="refundcore")
    refund(run, seed(run), "r-1")
    stages = [r for r in ours(caplog, "refundcore.client") if r.msg == "stage finished"]
    assert [r.stage for r in stages] == [  # type: ignore[attr-defined]
        "journal claim",
        "build",
        "sign",
        "send",
        "parse",
        "journal record",
    ]
    for record in stages:
        assert record.levelno == logging.DEBUG
        assert (record.provider, record.operation, record.refund_id) == ("testpay", "refund", "r-1")
        assert record.duration_ms >= 0  # type: ignore[attr-defined]
    (send,) = [r for r in stages if r.stage == "send"]  # type: ignore[attr-defined]
    assert (send.method, send.http_status) == ("POST", 200)  # type: ignore[attr-defined]
    assert send.url.endswith("/v1/refunds")  # type: ignore[attr-defined]
    (http,) = [r for r in ours(caplog, "refundcore.transport") if r.msg == "http exchange"]
    assert http.refund_id == "r-1"  # type: ignore[attr-defined]


def test_records_of_a_batch_name_the_line(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="refundcore")
    rows = [
        BatchRow(provider="testpay", payment_id=seed(run).payment_id, amount=Money("1", HKD))
        for _ in range(3)
    ]
    report = run.client.refund_many(rows, workers=2)
    finished = [r for r in ours(caplog, "refundcore.client") if r.msg == "operation finished"]
    by_line = {r.batch_line: r.refund_id for r in finished}  # type: ignore[attr-defined]
    assert by_line == {o.line: o.refund_id for o in report.outcomes}
    refund(run, seed(run), "after")
    assert caplog.records[-1].batch_line is None  # type: ignore[attr-defined]


def test_no_secret_in_any_record_at_debug(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    secret = run.emulator.credentials["secret"]

    class Leaky:
        """Errors that quote the secret, as a careless plugin or proxy might."""

        @hookimpl(wrapper=True)
        def refundcore_build_request(self, operation: Any) -> Any:
            if operation.refund_id == "leak-build":
                raise ValidationError(f"refusing {secret}", field="reason")
            return (yield)

        @hookimpl(wrapper=True)
        def refundcore_send_request(self, request: Any) -> Any:
            if b"leak-send" in request.body:
                raise TransportError(f"proxy refused key={secret}")
            return (yield)

        @hookimpl(wrapper=True)
        def refundcore_verify_callback(self) -> Any:
            try:
                return (yield)
            except SignatureError:
                raise SignatureError(f"expected a signature made with {secret}") from None

    run.client.register_plugin(Leaky())
    caplog.set_level(logging.DEBUG)
    everything(run)
    for refund_id in ("leak-build", "leak-send"):
        with pytest.raises((ValidationError, TransportError)):
            refund(run, seed(run), refund_id)
    refused = [r for r in ours(caplog, "refundcore.client") if r.msg == "operation refused"]
    assert {r.error_code for r in refused} >= {  # type: ignore[attr-defined]
        "ValidationError",
        "TransportError",
        "SignatureError",
    }
    assert any("********" in (r.error or "") for r in refused)  # type: ignore[attr-defined]
    for record in ours(caplog):
        text = record.getMessage() + json.dumps(record_fields(record), default=str)
        assert secret not in text, f"{record.name} {record.msg!r} leaked the secret"
        if record.exc_info:
            assert secret not in logging.Formatter().formatException(record.exc_info)
