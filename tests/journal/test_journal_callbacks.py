"""A callback the journal refuses names no refund to the application: a signed word
that contradicts the state the journal keeps reaches ``on_notification`` and the
``refundcore_notification`` hooks without its ``refund_id``, with the kept state in
``contradicts``; the gateway still gets its acknowledgement. Over real sockets against
the testpay emulator, through ``verify_callback``, the WSGI app and the ASGI app alike,
with RefundClient and with AsyncRefundClient (the ``make_client`` fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import requests

from refundcore import (
    AsyncRefundClient,
    Money,
    RefundClient,
    RefundNotification,
    RefundStatus,
    hookimpl,
)
from refundcore.asgi import callback_app
from refundcore.journal import JournalState, open_journal
from refundcore.sandbox import Fault, SandboxRun

pytestmark = pytest.mark.timeout(120)

MakeClient = Callable[..., Any]
ServeAsgi = Callable[[Any], contextlib.AbstractContextManager[str]]
HKD = "HKD"
SURFACES = ("verify_callback", "wsgi", "asgi")
S = JournalState


class _Seen:
    """Every notification the ``refundcore_notification`` hook is shown."""

    def __init__(self) -> None:
        self.notes: list[RefundNotification] = []

    @hookimpl
    def refundcore_notification(self, notification: RefundNotification) -> None:
        self.notes.append(notification)


@attrs.frozen
class Case:
    """How the journal came to hold the refund (``decided``: an operator's decision
    after a lost reply), what the gateway's callback then says, and what the
    application must be told."""

    decided: RefundStatus | None
    word: RefundStatus
    held: JournalState
    named: bool
    duplicate: bool = False


CASES = {
    "failed-over-a-reply-that-succeeded": Case(None, RefundStatus.FAILED, S.SUCCEEDED, False),
    "failed-over-a-decided-success": Case(
        RefundStatus.SUCCEEDED, RefundStatus.FAILED, S.SUCCEEDED, False
    ),
    "pending-over-a-success": Case(None, RefundStatus.PENDING, S.SUCCEEDED, False),
    # The money left: the gateway's word overrules the decision, and the row moves.
    "succeeded-over-a-decided-failure": Case(
        RefundStatus.FAILED, RefundStatus.SUCCEEDED, S.SUCCEEDED, True
    ),
    "succeeded-again": Case(None, RefundStatus.SUCCEEDED, S.SUCCEEDED, True, duplicate=True),
}


@pytest.fixture
def journal(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture
def run(installed: Path, journal: str, make_client: MakeClient) -> Iterator[SandboxRun]:
    client = make_client(journal=journal)
    with SandboxRun("testpay", client=client) as run:
        run.emulator.send_callbacks = False  # each callback is delivered by the test
        yield run


@contextlib.contextmanager
def asgi_twin(
    run: SandboxRun, journal: str, kind: str, serve_asgi: ServeAsgi, seen: _Seen
) -> Iterator[tuple[str, list[RefundNotification]]]:
    """The ASGI app under uvicorn, on a client of ``kind`` sharing the run's journal:
    its base URL and what it handed to ``on_notification``."""
    twin: Any = (
        RefundClient(journal=journal) if kind == "sync" else AsyncRefundClient(journal=journal)
    )
    twin.configure("testpay", run.emulator.client_config(run.server.base_url))
    twin.register_plugin(seen)
    arrived: list[RefundNotification] = []
    try:
        with serve_asgi(callback_app(twin, arrived.append)) as base:
            yield base, arrived
    finally:
        if kind == "sync":
            twin.close()
        else:
            asyncio.run(twin.aclose())


def journalled(run: SandboxRun, refund_id: str, case: Case) -> None:
    """The refund as the case has the journal hold it, and the gateway's ledger saying
    ``case.word`` about it."""
    payment = run.emulator.seed_payment(Money("100.00", HKD))
    if case.decided is not None:
        # The gateway refunds it, but its reply is lost: UNKNOWN, for an operator.
        run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    sent = run.client.refund(
        "testpay", payment=payment, amount=Money("10", HKD), refund_id=refund_id
    )
    if case.decided is None:
        assert sent.status is RefundStatus.SUCCEEDED
    else:
        assert sent.status is RefundStatus.UNKNOWN
        run.client.resolve("testpay", refund_id, as_=case.decided, reason="seen", by="bob")
    run.emulator.ledger.settle(refund_id, case.word)


@pytest.mark.parametrize("name", list(CASES))
def test_the_application_is_told_only_what_the_journal_agrees_with(
    run: SandboxRun,
    journal: str,
    client_kind: str,
    serve_asgi: ServeAsgi,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    case = CASES[name]
    caplog.set_level(logging.INFO, logger="refundcore")
    seen = _Seen()
    run.client.register_plugin(seen)
    told: dict[str, RefundNotification] = {}
    answers: dict[str, int] = {}
    with asgi_twin(run, journal, client_kind, serve_asgi, seen) as (base, arrived):
        for surface in SURFACES:
            refund_id = f"r-{surface}"
            journalled(run, refund_id, case)
            callback = run.emulator.signed_callback(refund_id, path="/testpay")
            if surface == "verify_callback":
                told[surface] = run.client.verify_callback(
                    "testpay",
                    method="POST",
                    path="/testpay",
                    headers=callback.headers,
                    body=callback.body,
                )
                continue
            url = run.notify_url if surface == "wsgi" else f"{base}/testpay"
            reply = requests.post(
                url, data=callback.body, headers=dict(callback.headers), timeout=5
            )
            answers[surface] = reply.status_code
            told[surface] = (run.wait_for_notifications(1) if surface == "wsgi" else arrived)[-1]

    # The gateway is acknowledged either way: it must stop delivering the callback.
    assert answers == {"wsgi": 200, "asgi": 200}
    assert [note.refund_id for note in seen.notes] == [note.refund_id for note in told.values()]
    contradicts = None if case.named else case.held.status
    refused = [r for r in caplog.records if r.getMessage() == "callback not applied"]
    with open_journal(journal) as kept:
        for surface, note in told.items():
            refund_id = f"r-{surface}"
            assert note.status is case.word, surface
            assert note.refund_id == (refund_id if case.named else None), surface
            assert (note.duplicate, note.contradicts) == (case.duplicate, contradicts), surface
            entry = kept.get("testpay", refund_id)
            # A decision the word contradicts stands; one it overruled is gone.
            decided_by = "bob" if case.decided is not None and not case.named else None
            assert entry is not None and (entry.state, entry.decided_by) == (
                case.held,
                decided_by,
            ), surface
    if case.named:
        assert refused == []
    else:
        assert sorted(r.refund_id for r in refused) == sorted(f"r-{s}" for s in SURFACES)  # type: ignore[attr-defined]
        for record in refused:
            # A word that is not final behind a final one is only the gateway's reordering.
            final = case.word in (RefundStatus.SUCCEEDED, RefundStatus.FAILED)
            assert record.levelno == (logging.WARNING if final else logging.INFO)
            assert (record.status, record.held) == (case.word.value, case.held.value)  # type: ignore[attr-defined]
            assert record.misdirected is False  # type: ignore[attr-defined]


def test_a_replayed_contradiction_is_warned_of_once(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    """A callback the journal refused, delivered again and again (a gateway's retries,
    or anyone replaying it): every delivery is told the same, and only the first is a
    warning, so replays cannot fill the application's log with them."""
    caplog.set_level(logging.INFO, logger="refundcore")
    journalled(run, "r-1", CASES["failed-over-a-reply-that-succeeded"])
    callback = run.emulator.signed_callback("r-1", path="/testpay")
    told = [
        run.client.verify_callback(
            "testpay",
            method="POST",
            path="/testpay",
            headers=callback.headers,
            body=callback.body,
        )
        for _ in range(3)
    ]

    assert [(note.refund_id, note.contradicts) for note in told] == [
        (None, RefundStatus.SUCCEEDED)
    ] * 3
    refused = [r for r in caplog.records if r.getMessage() == "callback not applied"]
    assert [r.levelno for r in refused] == [logging.WARNING, logging.INFO, logging.INFO]
