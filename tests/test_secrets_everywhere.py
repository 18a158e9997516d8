"""A property: whatever a gateway or a plugin does with a configured secret (echoes it
anywhere in a reply, puts it in an error or in the error an error was raised from), the
secret appears in no output — the result, the exception and its traceback, the log
records, the journal's file."""

from __future__ import annotations

import json
import logging
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from refundcore.models import HttpResponse

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~+/="
secrets = st.text(alphabet=_ALPHABET, min_size=8, max_size=40)

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
}
_FAILURES = {
    "transport error": lambda s: TransportError(f"connect https://gw.example/?token={s} failed"),
    "outcome unknown": lambda s: OutcomeUnknown(f"read timed out after sending key={s}"),
    "untyped send error": lambda s: RuntimeError(f"socket said {s}"),
}
_STAGE_ERRORS = {
    "refund error": lambda s: ValidationError(f"the gateway wants {s}", field="amount"),
    "untyped error": lambda s: KeyError(s),
    "chained error": lambda s: _chained(s),
}


def _chained(secret: str) -> Exception:
    try:
        raise ValueError(f"config value {secret} rejected")
    except ValueError as inner:
        try:
            raise RuntimeError("while building") from inner
        except RuntimeError as outer:
            return outer


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
            outputs += [repr(exc), "".join(traceback.format_exception(exc))]
        client.close()
        for path in Path(tmp).iterdir():
            outputs.append(path.read_bytes().decode("latin-1"))
    formatter = logging.Formatter("%(message)s %(exc_text)s")
    for record in caplog.records:
        outputs += [formatter.format(record), repr(vars(record))]
    leaked = [i for i, text in enumerate(outputs) if secret in text]
    assert not leaked, f"{where}: the secret is in output(s) {leaked}"
