"""PayWiser's check value does not cover ``parent_txid``, the one field that ties a
postback to the merchant's refund (through refundcore's URL tag). So a postback settles,
and names, only a journalled refund already known by its ``txid``: a refund whose reply
was lost is left UNKNOWN by any postback, genuine or moved from another refund, and the
word is kept in its history. Over real sockets: the emulator, the WSGI callback app,
RefundClient and AsyncRefundClient, a SQLite journal."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

from refundcore import (
    CallbackVerdict,
    Money,
    PaymentRef,
    RefundClient,
    RefundNotification,
    RefundStatus,
)
from refundcore.journal import EventKind, JournalState
from refundcore.sandbox import Fault, SandboxRun
from refundcore.testing.clients import sandbox_client

pytestmark = pytest.mark.timeout(120)

USD = "USD"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(params=["sync", "async"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SandboxRun]:
    """The emulator, the WSGI receiver, and a client of each kind journalling into
    SQLite; the emulator posts back only when a test delivers a postback."""
    client = sandbox_client(request.param, journal=f"sqlite:///{tmp_path / 'journal.db'}")
    options = {"send_callbacks": False}
    with SandboxRun("paywiser", client=client, read_timeout=2.0, emulator_options=options) as sb:
        yield sb


def _tagged_url(run: SandboxRun, ptxid: str) -> str:
    """The receiver's URL for the postback URL refundcore sent with the refund of
    ``ptxid`` (its tagged query included)."""
    (sent,) = [r for r in run.server.requests if r.target.startswith(f"/api/v1/index.php/{ptxid}/")]
    url = urlsplit(dict(parse_qsl(sent.body.decode()))["postback_url"])
    return f"{run.receiver_server.base_url}{url.path}?{url.query}"


def _post(run: SandboxRun, url: str, fields: list[tuple[str, str]]) -> RefundNotification:
    """POST a postback form to the WSGI receiver: what the application was handed."""
    before = len(run.notifications)
    reply = requests.post(url, data=urlencode(fields), headers=FORM, timeout=5)
    assert (reply.status_code, reply.text) == (200, "OK")  # acknowledged either way
    return run.wait_for_notifications(before + 1)[-1]


def _genuine_fields(run: SandboxRun, refund_id: str) -> list[tuple[str, str]]:
    """The form of PayWiser's genuine postback about ``refund_id``, as it stands now."""
    record = run.emulator.ledger.find_refund(refund_id=refund_id)
    assert record is not None
    callback = run.emulator.build_callback(record, path="/paywiser", at=run.emulator.clock())
    return parse_qsl(callback.body.decode())


def _lost_reply(run: SandboxRun, amount: Money) -> tuple[PaymentRef, str]:
    """A refund PayWiser makes but whose reply is lost: UNKNOWN, no txid known."""
    payment = run.emulator.seed_payment(Money("80.00", USD))
    assert payment.payment_id is not None
    run.server.inject(f"/api/v1/index.php/{payment.payment_id}/refund", Fault(drop=True, times=1))
    lost = run.client.refund("paywiser", payment=payment, amount=amount, notify_url=run.notify_url)
    assert (lost.status, lost.provider_refund_id) == (RefundStatus.UNKNOWN, None)
    assert run.emulator.ledger.find_refund(refund_id=lost.refund_id) is not None  # it was made
    return payment, lost.refund_id


def _portal_refund(run: SandboxRun, amount: Money, outcome: RefundStatus) -> str:
    """A refund of another payment, made outside this journal (PayWiser's portal, say):
    its refund id in the emulator's ledger."""
    other = run.emulator.seed_payment(Money("50.00", USD), refund_outcome=outcome)
    portal = RefundClient(journal=None)
    try:
        portal.configure("paywiser", run.emulator.client_config(run.server.base_url))
        made = portal.refund("paywiser", payment=other, amount=amount, notify_url=run.notify_url)
    finally:
        portal.close()
    assert made.status is outcome and made.provider_refund_id
    return made.refund_id


def _not_applied(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if r.getMessage() == "callback not applied"]


def test_another_refunds_failure_moved_to_a_lost_refund_settles_nothing(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    """Refund A's reply is lost (PayWiser refunded it). Refund B of another payment,
    30.00 USD too and unknown to the journal, is declined; its genuine EXC postback,
    parent_txid rewritten to A's payment, is posted to A's tagged URL. Every check
    holds, yet only unsigned data says it is A's: A stays UNKNOWN (a FAILED A would be
    refunded again), the application is not told A failed, and A's history keeps the
    word."""
    journal = run.client.journal
    assert journal is not None
    amount = Money("30.00", USD)
    payment, a = _lost_reply(run, amount)
    b = _portal_refund(run, amount, RefundStatus.FAILED)
    b_txid = run.emulator.ledger.find_refund(refund_id=b).provider_refund_id  # type: ignore[union-attr]
    moved = [
        (name, payment.payment_id if name == "parent_txid" else value)
        for name, value in _genuine_fields(run, b)
    ]

    note = _post(run, _tagged_url(run, str(payment.payment_id)), moved)

    assert (note.status, note.provider_refund_id) == (RefundStatus.FAILED, b_txid)
    assert (note.refund_id, note.payment) == (None, None)
    assert note.unsigned_tie and not note.duplicate and note.contradicts is None
    assert note.verdict is CallbackVerdict.UNCONFIRMED
    entry = journal.get("paywiser", a)
    assert entry is not None
    assert (entry.state, entry.provider_refund_id) == (JournalState.UNKNOWN, None)
    history = journal.history("paywiser", a)
    (heard,) = [e for e in history if e.kind is EventKind.CALLBACK]
    assert (heard.state, heard.data["provider_refund_id"]) == (JournalState.FAILED, b_txid)
    assert heard.data["unsigned_tie"] is True and heard.data["applied"] is False
    (contradiction,) = [e for e in history if e.kind is EventKind.CONTRADICTION]
    assert contradiction.data["held"] == "UNKNOWN"
    assert "only unsigned data ties it to this refund" in contradiction.detail
    (refused,) = _not_applied(caplog)
    assert refused.levelno == logging.WARNING
    assert (refused.refund_id, refused.status, refused.held) == (a, "FAILED", "UNKNOWN")
    assert (refused.unconfirmed, refused.misdirected) == (True, False)


def test_a_lost_refunds_own_postback_leaves_it_for_an_operator(
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    """A's reply is lost and its own genuine postback arrives: nothing signed tells it
    from a moved one, so A stays UNKNOWN with the postback as evidence. A reconcile
    cannot tie PayWiser's getstatus to A without its txid either; an operator, shown
    both, decides."""
    journal = run.client.journal
    assert journal is not None
    payment, a = _lost_reply(run, Money("30.00", USD))
    a_txid = run.emulator.ledger.find_refund(refund_id=a).provider_refund_id  # type: ignore[union-attr]

    note = _post(run, _tagged_url(run, str(payment.payment_id)), _genuine_fields(run, a))

    assert (note.refund_id, note.provider_refund_id) == (None, a_txid)
    assert note.status is RefundStatus.SUCCEEDED
    assert note.verdict is CallbackVerdict.UNCONFIRMED
    (swept,) = run.client.reconcile("paywiser")
    assert (swept.refund_id, swept.status) == (a, RefundStatus.UNKNOWN)
    (asked,) = [e for e in journal.history("paywiser", a) if e.kind is EventKind.QUERY]
    assert f"the latest refund on this payment is txid {a_txid}" in asked.data["message"]
    entry = journal.get("paywiser", a)
    assert entry is not None and entry.state is JournalState.UNKNOWN
    decided = run.client.resolve(
        "paywiser", a, as_="succeeded", reason=f"postback and getstatus: txid {a_txid}", by="ops"
    )
    assert decided.state is JournalState.SUCCEEDED
    assert [r.unconfirmed for r in _not_applied(caplog)] == [True]


def test_a_postback_settles_a_refund_known_by_its_txid(run: SandboxRun) -> None:
    """The genuine case: A's reply gave its txid, so its own postback settles it and
    names it, payment included; the same postback again is a duplicate."""
    journal = run.client.journal
    assert journal is not None
    payment = run.emulator.seed_payment(Money("80.00", USD), refund_outcome=RefundStatus.PENDING)
    a = run.client.refund(
        "paywiser", payment=payment, amount=Money("30.00", USD), notify_url=run.notify_url
    )
    assert a.status is RefundStatus.PENDING and a.provider_refund_id
    run.emulator.ledger.settle(a.refund_id, RefundStatus.FAILED)
    url = _tagged_url(run, str(payment.payment_id))

    note = _post(run, url, _genuine_fields(run, a.refund_id))
    again = _post(run, url, _genuine_fields(run, a.refund_id))

    assert (note.refund_id, note.status, note.duplicate) == (
        a.refund_id,
        RefundStatus.FAILED,
        False,
    )
    assert note.payment == PaymentRef(payment_id=payment.payment_id)
    assert (again.refund_id, again.duplicate) == (a.refund_id, True)
    assert (note.verdict, again.verdict) == (CallbackVerdict.VERIFIED, CallbackVerdict.DUPLICATE)
    entry = journal.get("paywiser", a.refund_id)
    assert entry is not None and entry.state is JournalState.FAILED


def test_without_a_journal_a_postback_names_no_refund() -> None:
    """No journal holds a txid to confirm the tie: the application is handed the
    gateway's signed word (txid, status, amount) and matches it by txid itself."""
    with SandboxRun("paywiser", read_timeout=2.0) as run:
        payment = run.emulator.seed_payment(Money("50.00", USD))
        result = run.client.refund(
            "paywiser", payment=payment, amount=Money("20.00", USD), notify_url=run.notify_url
        )
        (note,) = run.wait_for_notifications(1)
    assert result.status is RefundStatus.SUCCEEDED
    assert (note.status, note.provider_refund_id) == (
        RefundStatus.SUCCEEDED,
        result.provider_refund_id,
    )
    assert (note.refund_id, note.payment) == (None, None)
    assert note.unsigned_tie and note.verdict is CallbackVerdict.UNJOURNALLED
    assert note.amount == Money("20.00", USD)
