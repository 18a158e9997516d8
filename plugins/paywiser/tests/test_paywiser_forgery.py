"""PayWiser postbacks attacked: the check value covers txid, status, amount, currency and
action only, and the refund id rides in our own URL. A genuine postback of one refund,
moved to another refund's URL, must settle nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest
import requests

from refundcore import Money, RefundClient, RefundStatus
from refundcore.journal import JournalState
from refundcore.sandbox import SandboxRun

USD = "USD"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def run(tmp_path: Path) -> Iterator[SandboxRun]:
    client = RefundClient(journal=f"sqlite:///{tmp_path / 'journal.db'}")
    with SandboxRun("paywiser", client=client) as sandbox:
        yield sandbox


def _postback_url(run: SandboxRun, ptxid: str) -> str:
    """The tagged postback URL refundcore sent with the refund of ``ptxid``."""
    (sent,) = [r for r in run.server.requests if r.target.startswith(f"/api/v1/index.php/{ptxid}")]
    return dict(parse_qsl(sent.body.decode()))["postback_url"]


def test_another_refunds_genuine_postback_at_this_refunds_url_settles_nothing(
    run: SandboxRun,
) -> None:
    """Refund A (30.00 USD) waits for approval. Refund B of another payment, also 30.00
    USD, succeeds and is posted back. B's genuine postback, its unsigned parent_txid
    changed to A's payment, is posted to A's tagged URL: PayWiser's check value and our
    URL tag both hold, but B's txid is not A's: A stays PENDING."""
    journal = run.client.journal
    assert journal is not None
    pending = run.emulator.seed_payment(Money("80.00", USD), refund_outcome=RefundStatus.PENDING)
    a = run.client.refund(
        "paywiser", payment=pending, amount=Money("30.00", USD), notify_url=run.notify_url
    )
    assert a.status is RefundStatus.PENDING and a.provider_refund_id
    assert pending.payment_id is not None
    a_url = urlsplit(_postback_url(run, pending.payment_id))

    other = run.emulator.seed_payment(Money("50.00", USD))
    b = run.client.refund(
        "paywiser", payment=other, amount=Money("30.00", USD), notify_url=run.notify_url
    )
    assert b.status is RefundStatus.SUCCEEDED
    run.wait_for_notifications(1)
    (delivered,) = [r for r in run.receiver.received if r.target.startswith("/paywiser")]
    fields = [
        (name, pending.payment_id if name == "parent_txid" else value)
        for name, value in parse_qsl(delivered.body.decode())
    ]

    reply = requests.post(
        f"{run.receiver_server.base_url}{a_url.path}?{a_url.query}",
        data=urlencode(fields),
        headers=FORM,
        timeout=5,
    )

    assert reply.status_code == 200  # genuine as far as the signatures go
    entry = journal.get("paywiser", a.refund_id)
    assert entry is not None
    assert (entry.state, entry.provider_refund_id) == (JournalState.PENDING, a.provider_refund_id)
    run.emulator.settle(a.refund_id, RefundStatus.FAILED)
    run.wait_for_notifications(3)
    entry = journal.get("paywiser", a.refund_id)
    assert entry is not None and entry.state is JournalState.FAILED
