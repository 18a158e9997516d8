""" "Not found" proves nothing by itself: attacks from outside, as a slow or
eventually-consistent gateway (or whatever answers in its place) would mount them,
over real sockets against the bundled emulators, on SQLite and on PostgreSQL.

Each test here failed before the fix it names, or pins a path an attacker tried and
found holding.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Generator
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from refundcore import (
    AsyncRefundClient,
    Money,
    RefundClient,
    RefundStatus,
    TransportError,
    hookimpl,
)
from refundcore.evidence import absence_counts_from
from refundcore.journal import EventKind, JournalEvent, JournalState, open_journal
from refundcore.sandbox import Fault
from refundcore.testing import AsyncAsSync
from tests.journal.test_exactly_once import (
    CONNECT_TIMEOUT,
    LEASE,
    READ_TIMEOUT,
    SETTLE,
    gateway,
    history,
    no_new_id_advice,
    quick_settling,
    refund,
    refund_path,
    refund_posts,
    refunds_at_the_gateway,
    seed,
)

#: What paywizard's query answers for a transIndexCode it has no transaction under;
#: unsigned, as every paywizard reply is, so a stale cache or a proxy can say it too.
_PAYWIZARD_NOTHING = json.dumps({"code": 200, "msg": "success", "data": None}).encode()


# -- an operator's "never sent", then the gateway's word that it was -----------------------


@pytest.mark.parametrize("word", ["callback", "late query"])
def test_a_refund_decided_not_sent_that_the_gateway_then_shows_is_never_sent_again(
    journal_url: str, client_kind: str, word: str
) -> None:
    """paywiser applied the refund but its reply was lost; its lookup proves nothing,
    and an operator, misled, decides it was never sent. The gateway's postback (or a
    query of a refund it can find) then shows the money left: that word must win over
    the decision, or asking for the refund again sends it a second time. A query by
    the refund's txid settles it; the postback, tied to it only by its unsigned
    parent_txid, cannot settle it, but puts it back to UNKNOWN for the operator."""
    with gateway("paywiser", journal_url, kind=client_kind) as run:
        run.emulator.send_callbacks = False
        payment = seed(run)
        run.server.inject(refund_path(run, payment), Fault(drop=True, times=1))
        lost = refund(run, payment, "r-op")
        time.sleep(LEASE)
        decided = run.client.resolve(
            "paywiser", "r-op", as_="not-sent", reason="not in the portal yet", by="bob"
        )
        record = run.emulator.ledger.find_refund("r-op")
        assert record is not None
        if word == "callback":
            assert record.notify_url
            target = record.notify_url.split("/", 3)[3]
            callback = run.emulator.signed_callback("r-op", path=f"/{target}")
            run.client.verify_callback(
                "paywiser",
                method=callback.method,
                path=callback.path,
                headers=callback.headers,
                body=callback.body,
            )
        else:
            # The gateway's refund id, learnt from its report: a query that finds it.
            queried = run.client.query(
                "paywiser",
                refund_id="r-op",
                payment=payment,
                provider_refund_id=record.provider_refund_id,
            )
            assert queried.status is RefundStatus.SUCCEEDED
        again = refund(run, payment, "r-op")

    assert lost.status is RefundStatus.UNKNOWN
    assert decided.state is JournalState.NOT_SENT
    settled = RefundStatus.SUCCEEDED if word == "late query" else RefundStatus.UNKNOWN
    assert again.status is settled, again
    assert refunds_at_the_gateway(run, payment) == 1
    assert refund_posts(run) == 1
    with open_journal(journal_url) as journal:
        entry = journal.get("paywiser", "r-op")
    assert entry is not None and entry.state is JournalState.of(settled)
    assert entry.decided_by is None
    # The decision it overrode is kept, and the disagreement reported.
    events = history(journal_url, "paywiser", "r-op")
    assert EventKind.DECISION in [e.kind for e in events]
    contradiction = next(e for e in events if e.kind is EventKind.CONTRADICTION)
    assert contradiction.data["held"] == "NOT_SENT"
    no_new_id_advice(lost.message, again.message)


# -- the sweep's report of a refund the gateway had accepted ----------------------------


def test_the_sweep_never_reports_a_pending_refund_failed_on_a_not_found(
    journal_url: str, client_kind: str
) -> None:
    """paywizard accepted the refund (PENDING); a query then comes back "no such
    transaction" (a replica behind, a stale cache, a proxy). The journal rightly
    keeps PENDING; the sweep must not report the refund FAILED."""
    # Nothing here waits out a lease: timeouts roomy enough for a loaded machine.
    with gateway("paywizard", journal_url, kind=client_kind, lease_seconds=12.0) as run:
        run.client.configure(
            "paywizard",
            {
                **run.emulator.client_config(run.server.base_url),
                "read_timeout": 8.0,
                "connect_timeout": 2.0,
            },
        )
        run.emulator.send_callbacks = False
        payment = run.emulator.seed_payment(
            Money("100.00", run.emulator.currency), refund_outcome=RefundStatus.PENDING
        )
        accepted = refund(run, payment, "r-pend")
        run.server.inject(
            "/ovstrade/openPay/queryOrder", Fault(status=200, body=_PAYWIZARD_NOTHING, times=1)
        )
        (swept,) = run.client.reconcile("paywizard")

    assert accepted.status is RefundStatus.PENDING
    assert swept.status is RefundStatus.PENDING, swept
    assert "proves nothing" in (swept.message or ""), swept.message
    with open_journal(journal_url) as journal:
        entry = journal.get("paywizard", "r-pend")
    assert entry is not None and entry.state is JournalState.PENDING
    no_new_id_advice(swept.message)


# -- a sender that stalls after its claim, past its lease --------------------------------


class _Stalls:
    """An app plugin holding the first request for ``seconds`` (a process paused, a
    host suspended, a slow hook): the refund's claim is taken, nothing has left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.stalled = threading.Event()
        self.released = threading.Event()

    def _hold(self) -> None:
        if not self.stalled.is_set():
            self.stalled.set()
            time.sleep(self.seconds)
            self.released.set()


class _StallsSigning(_Stalls):
    @hookimpl(wrapper=True)
    def refundcore_sign_request(self) -> Generator[None, object, object]:
        self._hold()
        return (yield)


class _StallsSending(_Stalls):
    @hookimpl(wrapper=True)
    def refundcore_send_request(self) -> Generator[None, object, object]:
        self._hold()
        return (yield)


@pytest.mark.parametrize("stage", ["sign", "send"])
def test_a_sender_stalled_past_its_lease_never_sends_after_absence_was_proven(
    journal_url: str, client_kind: str, stage: str
) -> None:
    """paywizard's "not found" is authoritative once the claim's lease and the settle
    delay are over. A sender (of either client) that stalls between its claim and its
    request for longer than that must not send when it wakes: by then a retry has
    proven the refund absent and sent it, and a real gateway's answer to a reused
    transIndexCode is undocumented (a second refund, or an error code read as FAILED)."""
    with gateway("paywizard", journal_url, kind=client_kind) as run:
        payment = seed(run)
        stall = (_StallsSigning if stage == "sign" else _StallsSending)(LEASE + SETTLE + 1.0)
        config = {
            **run.emulator.client_config(run.server.base_url),
            "read_timeout": READ_TIMEOUT,
            "connect_timeout": CONNECT_TIMEOUT,
        }
        options: dict[str, Any] = {
            "entry_points": False,
            "journal": journal_url,
            "lease_seconds": LEASE,
        }
        made: Any = (
            RefundClient({"paywizard": config}, **options)
            if client_kind == "sync"
            else AsyncAsSync(AsyncRefundClient({"paywizard": config}, **options))
        )
        with made as slow_client:
            slow_client.register_plugin(quick_settling("paywizard"))
            slow_client.register_plugin(stall)
            slow: list[object] = []

            def send_slowly() -> None:
                try:
                    slow.append(
                        slow_client.refund(
                            "paywizard",
                            payment=payment,
                            amount=Money("10.00", run.emulator.currency),
                            refund_id="r-stall",
                        )
                    )
                except TransportError as exc:
                    slow.append(exc)

            sender = threading.Thread(target=send_slowly)
            sender.start()
            assert stall.stalled.wait(10)
            time.sleep(LEASE + SETTLE + 0.2)
            retried = refund(run, payment, "r-stall")
            sender.join(timeout=30)

    assert stall.released.is_set()
    assert retried.status is RefundStatus.SUCCEEDED, retried
    # The stalled sender's request never left: it was refused, nothing sent.
    (woke,) = slow
    assert isinstance(woke, TransportError), woke
    assert "nothing was sent" in str(woke)
    assert refund_posts(run) == 1
    assert refunds_at_the_gateway(run, payment) == 1
    with open_journal(journal_url) as journal:
        entry = journal.get("paywizard", "r-stall")
    assert entry is not None and entry.state is JournalState.SUCCEEDED


# -- a history that does not say how long a request could be on its way -----------------


@pytest.mark.parametrize("lease", [None, "120", True])
def test_a_claim_without_its_lease_never_lets_absence_count(lease: object) -> None:
    """A claim event whose lease is missing or unreadable (a journal written by other
    code, or edited) does not say until when its request could leave: absence must
    prove nothing, rather than count from the claim itself."""
    claimed = datetime(2026, 12, 2, 12, 0, tzinfo=timezone.utc)
    data = {} if lease is None else {"lease_seconds": lease}
    history = [
        JournalEvent(claimed, EventKind.CLAIM, 1, JournalState.SUBMITTING, "A", data),
        JournalEvent(claimed, EventKind.TAKEOVER, 2, JournalState.SUBMITTING, "B", {}),
    ]
    assert absence_counts_from(history, 2, settle_delay=60.0) is None
    recorded = [attrs.evolve(history[0], data={"lease_seconds": 120.0}), history[1]]
    assert absence_counts_from(recorded, 2, settle_delay=60.0) == claimed + timedelta(seconds=180)


# -- a query reply that leaves out what "not found" is read from -------------------------


def test_a_paywizard_query_reply_without_data_is_no_not_found(
    journal_url: str, client_kind: str
) -> None:
    """paywizard's "no transaction" is ``"data": null``, and its lookup is
    authoritative. A reply without ``data`` at all (a proxy's or a new API version's
    short answer, a truncated object) says nothing: read as "not found", it proved a
    refund that reached the gateway absent, and it was sent again."""
    with gateway("paywizard", journal_url, kind=client_kind) as run:
        payment = seed(run)
        run.server.inject(refund_path(run, payment), Fault(drop=True, times=1))
        lost = refund(run, payment, "r-nodata")
        time.sleep(LEASE + SETTLE)
        short = json.dumps({"code": 200, "msg": "success"}).encode()
        run.server.inject("/ovstrade/openPay/queryOrder", Fault(status=200, body=short, times=1))
        again = refund(run, payment, "r-nodata")

    assert lost.status is RefundStatus.UNKNOWN
    assert again.status is RefundStatus.UNKNOWN, again
    assert refund_posts(run) == 1
    assert refunds_at_the_gateway(run, payment) == 1
    (query,) = [
        e for e in history(journal_url, "paywizard", "r-nodata") if e.kind is EventKind.QUERY
    ]
    assert query.state is JournalState.UNKNOWN
    no_new_id_advice(lost.message, again.message)


# -- the sweep never sends --------------------------------------------------------------


def test_the_sweep_never_sends_a_refund_that_became_sendable_while_it_ran(
    journal_url: str, client_kind: str
) -> None:
    """The sweep reads the unsettled refunds, then claims each. In between, an operator
    decides one was never sent (or its sender gives its claim back): the claim then
    finds it sendable, and the sweep, which settles and never sends, sent it, although
    nobody asked for it again (the operator may have refunded the customer otherwise)."""
    with (
        open_journal(journal_url) as journal,
        gateway("wonder", journal_url, kind=client_kind) as run,
    ):
        run.emulator.send_callbacks = False
        payment = seed(run)
        run.server.inject(refund_path(run, payment), Fault(drop=True, times=1))
        lost = refund(run, payment, "r-sweep")
        time.sleep(LEASE)
        listed = journal.entries

        def decided_meanwhile(**filters: Any) -> Any:
            found = listed(**filters)
            journal.resolve(
                "wonder", "r-sweep", state=JournalState.NOT_SENT, reason="portal", by="ann"
            )
            return found

        journal.entries = decided_meanwhile  # type: ignore[method-assign]
        made: Any = (
            RefundClient(entry_points=False, journal=journal, lease_seconds=LEASE)
            if client_kind == "sync"
            else AsyncAsSync(
                AsyncRefundClient(entry_points=False, journal=journal, lease_seconds=LEASE)
            )
        )
        with made as sweeper:
            sweeper.register_plugin(quick_settling("wonder"))
            sweeper.configure(
                "wonder",
                {
                    **run.emulator.client_config(run.server.base_url),
                    "read_timeout": READ_TIMEOUT,
                    "connect_timeout": CONNECT_TIMEOUT,
                },
            )
            (swept,) = sweeper.reconcile("wonder")
        entry = journal.get("wonder", "r-sweep")

    assert lost.status is RefundStatus.UNKNOWN
    assert refund_posts(run) == 1, "the sweep sent the refund"
    assert swept.status is not RefundStatus.SUCCEEDED, swept
    assert entry is not None and entry.state is JournalState.NOT_SENT
