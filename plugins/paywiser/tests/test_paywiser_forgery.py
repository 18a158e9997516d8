"""PayWiser postbacks attacked: the check value covers txid, status, amount, currency and
action only, and the refund id rides in our own URL. A genuine postback of one refund,
moved to another refund's URL, must settle nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, quote_plus, urlencode, urlsplit

import pytest
import refundcore_paywiser as paywiser
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    run: SandboxRun, caplog: pytest.LogCaptureFixture
) -> None:
    """Refund A (30.00 USD) waits for approval. Refund B of another payment, also 30.00
    USD, succeeds and is posted back. B's genuine postback, its unsigned parent_txid
    changed to A's payment, is posted to A's tagged URL: PayWiser's check value and our
    URL tag both hold, but B's txid is not A's: A stays PENDING, and the application's
    notification names no refund."""
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
    # Nor is the application told that A succeeded: the word names no refund it trusts.
    moved = run.wait_for_notifications(2)[-1]
    assert (moved.refund_id, moved.provider_refund_id) == (None, b.provider_refund_id)
    assert moved.status is RefundStatus.SUCCEEDED and not moved.duplicate
    assert moved.contradicts is None  # it is about another refund, not against A's state
    assert [n.refund_id for n in run.notifications].count(a.refund_id) == 0
    (refused,) = [r for r in caplog.records if r.getMessage() == "callback not applied"]
    assert (refused.refund_id, refused.held, refused.misdirected) == (  # type: ignore[attr-defined]
        a.refund_id,
        "PENDING",
        True,
    )
    run.emulator.settle(a.refund_id, RefundStatus.FAILED)
    run.wait_for_notifications(3)
    entry = journal.get("paywiser", a.refund_id)
    assert entry is not None and entry.state is JournalState.FAILED


def _encode(text: str, how: int) -> str:
    """``text`` as a form writes it: escaped as usual, every byte escaped (either hex
    case), or spaces as ``+``."""
    if how == 0:
        return quote_plus(text)
    raw = "".join(f"%{byte:02X}" for byte in text.encode())
    return raw.lower() if how == 1 else raw


@pytest.fixture(scope="module")
def signed_run() -> Iterator[SandboxRun]:
    with SandboxRun("paywiser") as sandbox:
        yield sandbox


_FIELDS = {
    "status": "EXC",
    "parent_txid": "7000001",
    "txid": "7000002",
    "tx_action": "REFUND",
    "amount": "10.00",
    "currency": USD,
}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    how=st.lists(st.integers(0, 2), min_size=9, max_size=9),
    extra=st.lists(
        st.tuples(
            st.sampled_from(["Status", "STATUS", "status ", "Txid", "amount[]", "vry2", "ok"]),
            st.sampled_from(["OK", "10.00", "7000003", "REFUND"]),
        ),
        max_size=3,
        unique_by=lambda pair: pair[0],
    ),
    parent=st.sampled_from(["7000001", "7000009", ""]),
)
def test_a_postback_encoded_any_way_reads_as_signed(
    signed_run: SandboxRun, how: list[int], extra: list[tuple[str, str]], parent: str
) -> None:
    """A genuine EXC postback, each name and value percent-encoded another way, with
    unsigned look-alike fields added and its unsigned parent_txid changed: it still
    verifies, and reads FAILED for txid 7000002, 10.00 USD, whatever was added."""
    run = signed_run
    fields = {**_FIELDS, "sid": run.emulator.sid, "parent_txid": parent}
    check = paywiser.postback_check(
        fields["sid"],
        run.emulator.rcode,
        fields["txid"],
        fields["status"],
        fields["amount"],
        fields["currency"],
        fields["tx_action"],
    )
    pairs = [*fields.items(), ("vry", check)]
    body = "&".join(
        f"{_encode(name, how[i])}={_encode(value, how[-1 - i])}"
        for i, (name, value) in enumerate(pairs)
    )
    body += "".join(f"&{quote_plus(name)}={quote_plus(value)}" for name, value in extra)
    note = run.client.verify_callback(
        "paywiser", method="POST", path="/hooks/paywiser", headers=FORM, body=body.encode()
    )
    assert (note.status, note.event, note.provider_refund_id, note.amount) == (
        RefundStatus.FAILED,
        "refund",
        "7000002",
        Money("10.00", USD),
    )
    assert note.refund_id is None  # no tagged URL: nothing names a refund of ours
