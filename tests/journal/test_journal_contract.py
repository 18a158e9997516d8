"""The journal's contract, run against every backend (SQLite and PostgreSQL).

Each rule of the refund journal is checked here once, so both backends are held to
exactly the same behaviour.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refundcore.errors import JournalError, ValidationError
from refundcore.journal import (
    Applied,
    Claim,
    ClaimVerdict,
    EventKind,
    Journal,
    JournalEntry,
    JournalState,
    NewRefund,
    ResultRecord,
)

MakeRefund = Callable[..., NewRefund]

#: A lease short enough to wait out: leases run on the journal's clock, not a test's.
LEASE = 0.6
NEW, TAKEOVER, BUSY, DONE = (
    ClaimVerdict.NEW,
    ClaimVerdict.TAKEOVER,
    ClaimVerdict.BUSY,
    ClaimVerdict.DONE,
)
CONFLICT, OVER_LIMIT = ClaimVerdict.CONFLICT, ClaimVerdict.OVER_LIMIT
S = JournalState


def _entry(claim: Claim) -> JournalEntry:
    assert claim.entry is not None
    return claim.entry


def _claim_together(journal: Journal, refunds: list[NewRefund]) -> list[Claim]:
    """Claim each refund from its own thread, all released at the same moment."""
    barrier = threading.Barrier(len(refunds))

    def claim(index: int) -> Claim:
        barrier.wait()
        return journal.claim(refunds[index], owner=f"thread-{index}")

    with ThreadPoolExecutor(len(refunds)) as pool:
        return list(pool.map(claim, range(len(refunds))))


# -- claim ----------------------------------------------------------------------------


# Without original_amount a claim is one INSERT; with it, the payment's total is read first.
@pytest.mark.parametrize("original_amount", [None, "50.00"])
def test_new_claim_records_the_refund_before_sending(
    backend: Any, make_refund: MakeRefund, original_amount: str | None
) -> None:
    journal = backend.open()
    new = make_refund(
        reason="damaged", notify_url="https://shop.example/cb", original_amount=original_amount
    )

    before = journal.now()
    claim = journal.claim(new, owner="A", lease_seconds=30)
    after = journal.now()

    assert claim.outcome is NEW
    entry = _entry(claim)
    assert entry == journal.get("testpay", "R-1")
    assert attrs.asdict(new).items() <= attrs.asdict(entry).items()
    assert (entry.state, entry.owner, entry.attempt, entry.decided_by) == (
        S.SUBMITTING,
        "A",
        1,
        None,
    )
    assert entry.created_at == entry.updated_at and before <= entry.created_at <= after
    assert entry.lease_until == entry.created_at + timedelta(seconds=30)
    assert entry.created_at.tzinfo is not None and entry.created_at.utcoffset() == timedelta(0)
    assert (entry.provider_refund_id, entry.message, entry.raw) == (None, None, {})


def test_abandon_gives_back_an_unsent_claim_only(backend: Any, make_refund: MakeRefund) -> None:
    """A refund whose request never left is given back by its own attempt, if that
    attempt began as a claim: forgotten if it is nothing but that claim, else marked
    NOT_SENT; anything that may have been sent stays."""
    journal = backend.open()
    new = make_refund()
    journal.claim(new, owner="A", lease_seconds=30)
    assert journal.abandon("testpay", "R-1", owner="B") is False
    assert journal.abandon("testpay", "R-1", owner="A") is True
    assert journal.get("testpay", "R-1") is None
    assert journal.history("testpay", "R-1") == []
    assert journal.claim(make_refund(amount="11.00"), owner="X").outcome is NEW, "free"
    journal.abandon("testpay", "R-1", owner="X")

    journal.claim(new, owner="C")
    journal.record("testpay", "R-1", owner="C", attempt=1, state=S.NOT_SENT, sent=False)
    again = journal.claim(new, owner="D")
    assert (again.outcome, _entry(again).attempt) == (NEW, 2)
    assert journal.abandon("testpay", "R-1", owner="D") is True, "attempt 2 began as a claim"
    unsent = journal.get("testpay", "R-1")
    assert unsent is not None
    assert (unsent.state, unsent.owner, unsent.lease_until) == (S.NOT_SENT, None, None)
    assert journal.claim(make_refund(amount="11.00"), owner="X").outcome is CONFLICT

    journal.claim(new, owner="E")
    journal.record("testpay", "R-1", owner="E", attempt=3, state=S.UNKNOWN)
    taken = journal.claim(new, owner="F")
    assert taken.outcome is TAKEOVER
    assert journal.abandon("testpay", "R-1", owner="F") is False, "a taken-over row may be sent"
    assert _entry(taken) == journal.get("testpay", "R-1")
    kinds = [(e.kind.value, e.attempt) for e in journal.history("testpay", "R-1")]
    assert kinds == [
        ("claim", 1),
        ("answer", 1),
        ("claim", 2),
        ("answer", 2),
        ("claim", 3),
        ("send", 3),
        ("answer", 3),
        ("takeover", 4),
    ]


def test_final_result_is_returned_to_a_repeated_claim(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    new = make_refund()
    journal.claim(new, owner="A")
    journal.record(
        "testpay",
        "R-1",
        owner="A",
        attempt=1,
        state=S.SUCCEEDED,
        provider_refund_id="GW-9",
        message="Refunded",
        http_status=200,
        raw={"status": "ok", "nested": {"ids": [1, 2]}},
    )

    claim = journal.claim(new, owner="B")

    assert claim.outcome is DONE
    entry = _entry(claim)
    assert (entry.state, entry.provider_refund_id, entry.message) == (
        S.SUCCEEDED,
        "GW-9",
        "Refunded",
    )
    assert (entry.http_status, entry.raw) == (200, {"status": "ok", "nested": {"ids": [1, 2]}})
    assert (entry.owner, entry.lease_until, entry.attempt) == (None, None, 1)


@pytest.mark.parametrize("state", [S.PENDING, S.FAILED])
def test_pending_and_failed_rows_are_done(
    backend: Any, make_refund: MakeRefund, state: JournalState
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=state, error_code="E1")

    claim = journal.claim(make_refund(), owner="B")

    assert (claim.outcome, _entry(claim).state, _entry(claim).error_code) == (DONE, state, "E1")


@pytest.mark.parametrize(
    "change",
    [{"amount": "11.00"}, {"payment_id": "PAY-2", "payment_key": "payment_id=PAY-2"}],
)
def test_same_refund_id_with_other_parameters_conflicts(
    backend: Any, make_refund: MakeRefund, change: dict[str, str]
) -> None:
    journal = backend.open()
    first = _entry(journal.claim(make_refund(), owner="A"))

    claim = journal.claim(make_refund(**change), owner="B")

    assert claim.outcome is CONFLICT
    assert claim.entry == first == journal.get("testpay", "R-1")


def test_refund_ids_are_per_provider(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    assert journal.claim(make_refund(), owner="A").outcome is NEW
    assert journal.claim(make_refund(provider="otherpay"), owner="A").outcome is NEW


def test_live_lease_makes_every_other_claim_busy(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    first = _entry(journal.claim(make_refund(), owner="A", lease_seconds=60))

    busy = [journal.claim(make_refund(), owner=owner) for owner in ("B", "A")]

    assert [claim.outcome for claim in busy] == [BUSY, BUSY]
    assert all(claim.entry == first for claim in busy)


def test_expired_lease_is_taken_over_by_exactly_one_caller(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    crashed = _entry(journal.claim(make_refund(), owner="crashed", lease_seconds=LEASE))
    assert journal.claim(make_refund(), owner="B").outcome is BUSY
    time.sleep(LEASE)

    claims = [journal.claim(make_refund(), owner=o, lease_seconds=30) for o in "BC"]

    assert [claim.outcome for claim in claims] == [TAKEOVER, BUSY]
    taken = _entry(claims[0])
    assert (taken.state, taken.owner, taken.attempt) == (S.SUBMITTING, "B", 2)
    assert taken.lease_until == taken.updated_at + timedelta(seconds=30)
    assert crashed.lease_until is not None and taken.updated_at >= crashed.lease_until
    assert taken.created_at == crashed.created_at
    assert claims[1].entry == taken == journal.get("testpay", "R-1")
    takeover = journal.history("testpay", "R-1")[-1]
    assert (takeover.kind, takeover.attempt, takeover.actor) == (EventKind.TAKEOVER, 2, "B")
    assert takeover.data["previous_owner"] == "crashed"


def test_unknown_row_is_taken_over_once_then_settled(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.UNKNOWN, message="read timeout")

    takeover = journal.claim(make_refund(), owner="B")
    again = journal.claim(make_refund(), owner="C")
    journal.record(
        "testpay",
        "R-1",
        owner="B",
        attempt=2,
        state=S.SUCCEEDED,
        provider_refund_id="GW-1",
        sent=False,
    )
    done = journal.claim(make_refund(), owner="C")

    assert (takeover.outcome, _entry(takeover).state, _entry(takeover).owner) == (
        TAKEOVER,
        S.UNKNOWN,
        "B",
    )
    assert _entry(takeover).attempt == 2
    assert again.outcome is BUSY
    assert (done.outcome, _entry(done).state, _entry(done).message) == (DONE, S.SUCCEEDED, None)


def test_sixteen_threads_claiming_one_refund_id_get_one_new(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()

    claims = _claim_together(journal, [make_refund()] * 16)

    assert Counter(claim.outcome for claim in claims) == {NEW: 1, BUSY: 15}
    winner = next(claim for claim in claims if claim.outcome is NEW)
    assert journal.get("testpay", "R-1") == winner.entry


def test_sixteen_threads_claiming_their_own_refunds_each_get_their_claim(
    backend: Any, make_refund: MakeRefund
) -> None:
    """Claims made at the same moment may share a commit; each is still its own."""
    journal = backend.open()
    refunds = [make_refund(refund_id=f"R-{index}") for index in range(16)]

    claims = _claim_together(journal, refunds)

    for index, claim in enumerate(claims):
        entry = _entry(claim)
        assert claim.outcome is NEW and entry.refund_id == f"R-{index}"
        assert (entry.owner, entry.attempt) == (f"thread-{index}", 1)
        assert entry.lease_until == entry.created_at + timedelta(seconds=60)
        assert journal.get("testpay", f"R-{index}") == entry
        history = journal.history("testpay", f"R-{index}")
        assert [(e.kind, e.actor, e.at) for e in history] == [
            (EventKind.CLAIM, f"thread-{index}", entry.created_at)
        ]


def test_claim_many_gives_each_refund_the_verdict_a_claim_of_it_would(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    done = make_refund(refund_id="DONE")
    claim = journal.claim(done, owner="earlier")
    journal.record(
        "testpay", "DONE", owner="earlier", attempt=_entry(claim).attempt, state="FAILED"
    )
    fresh = make_refund(refund_id="NEW")
    other = make_refund(refund_id="DONE", reason="another refund")
    limited = make_refund(refund_id="BIG", amount="60.00", original_amount="50.00")

    claims = journal.claim_many(
        [(fresh, "A"), (done, "B"), (other, "C"), (fresh, "D"), (limited, "E")],
        lease_seconds=30,
    )

    assert [claim.outcome for claim in claims] == [NEW, DONE, CONFLICT, BUSY, OVER_LIMIT]
    entry = _entry(claims[0])
    assert entry == journal.get("testpay", "NEW") and entry.owner == "A"
    assert entry.lease_until == entry.created_at + timedelta(seconds=30)
    assert [e.detail for e in journal.history("testpay", "NEW")] == ["claimed by A, lease 30 s"]
    assert journal.get("testpay", "BIG") is None
    assert journal.claim_many([], lease_seconds=30) == []
    with pytest.raises(ValueError, match="lease_seconds"):
        journal.claim_many([(fresh, "A")], lease_seconds=0)


def test_sixteen_threads_taking_over_one_stale_row_get_one_takeover(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="crashed", lease_seconds=LEASE)
    time.sleep(LEASE)

    claims = _claim_together(journal, [make_refund()] * 16)

    assert Counter(claim.outcome for claim in claims) == {TAKEOVER: 1, BUSY: 15}
    assert _entry(journal.claim(make_refund(), owner="late")).attempt == 2


def _json_fields(new: NewRefund) -> dict[str, Any]:
    """``new`` as JSON for a child process, its amount as ``[text, currency]``."""
    fields = attrs.asdict(new, recurse=False)
    assert new.amount is not None and new.original_amount is None
    fields["amount"] = [new.amount.to_wire(), new.amount.currency]
    return fields


_CHILD = """
import json, sys
from refundcore.journal import NewRefund, open_journal
from refundcore.money import Money

url, owner, refunds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
for r in refunds:
    r["amount"] = Money(*r["amount"])
with open_journal(url) as journal:
    print("ready", flush=True)
    sys.stdin.readline()
    outcomes = [journal.claim(NewRefund(**r), owner=owner).outcome.value for r in refunds]
    print(json.dumps(outcomes), flush=True)
"""


def test_two_processes_claiming_the_same_refunds_get_one_new_each(
    backend: Any, make_refund: MakeRefund
) -> None:
    # Separate interpreters, each opening (and migrating) the journal itself; they claim
    # the same ten refund ids in the same order, released together.
    refunds = [_json_fields(make_refund(refund_id=f"R-{i}")) for i in range(10)]
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, backend.url, f"process-{n}", json.dumps(refunds)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready", child.stderr
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results = [child.communicate(timeout=60) for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()

    assert [child.returncode for child in children] == [0, 0], [err for _, err in results]
    outcomes = [json.loads(out.splitlines()[-1]) for out, _ in results]
    for first, second in zip(*outcomes, strict=True):
        assert sorted([first, second]) == ["BUSY", "NEW"]
    assert len(backend.open().entries()) == 10


_SKEWED_CHILD = """
import datetime, json, sys, time

# This process's clock runs SKEW seconds off: every Python clock it could read.
url, skew, refunds = sys.argv[1], float(sys.argv[2]), json.loads(sys.argv[3])
real_time, real_ns = time.time, time.time_ns
time.time = lambda: real_time() + skew
time.time_ns = lambda: real_ns() + int(skew * 1e9)


class Skewed(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.fromtimestamp(time.time(), tz)

    @classmethod
    def utcnow(cls):
        return cls.now(datetime.timezone.utc).replace(tzinfo=None)


datetime.datetime = Skewed

from refundcore.journal import NewRefund, open_journal
from refundcore.money import Money

with open_journal(url) as journal:
    out = []
    for refund in refunds:
        refund["amount"] = Money(*refund["amount"])
        claim = journal.claim(NewRefund(**refund), owner=f"skewed{skew:+g}", lease_seconds=60)
        lease = claim.entry.lease_until.isoformat() if claim.entry.lease_until else None
        out.append([claim.outcome.value, lease])
    print(json.dumps(out))
"""


@pytest.mark.parametrize("skew", [600.0, -600.0])
def test_leases_follow_the_journals_clock_not_a_workers(
    backend: Any, make_refund: MakeRefund, skew: float
) -> None:
    """A worker whose clock is ten minutes off neither takes over a live lease (+10 min)
    nor sets a lease that is over before it begins or lasts ten minutes too long."""
    journal = backend.open()
    live = _entry(journal.claim(make_refund(), owner="A", lease_seconds=60))
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    refunds = [_json_fields(make_refund()), _json_fields(make_refund(refund_id="R-2"))]

    child = subprocess.run(
        [sys.executable, "-c", _SKEWED_CHILD, backend.url, str(skew), json.dumps(refunds)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )

    assert child.returncode == 0, child.stderr
    (busy, _), (new, lease) = json.loads(child.stdout)
    assert (busy, new) == ("BUSY", "NEW")
    assert _entry(journal.claim(make_refund(), owner="B")) == live
    assert journal.claim(make_refund(refund_id="R-2"), owner="B").outcome is BUSY
    expected = journal.now() + timedelta(seconds=60)
    assert abs(datetime.fromisoformat(lease) - expected) < timedelta(seconds=10)


# -- the per-payment limit ----------------------------------------------------------


def test_refunds_of_a_payment_never_exceed_its_original_amount(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal: Journal = backend.open()

    def claim(refund_id: str, amount: str) -> Claim:
        new = make_refund(refund_id=refund_id, amount=amount, original_amount="100.00")
        return journal.claim(new, owner="A")

    assert claim("R-1", "60.00").outcome is NEW
    over = claim("R-2", "50.00")
    assert (over.outcome, over.entry, over.refunded) == (OVER_LIMIT, None, "60.00")
    assert journal.get("testpay", "R-2") is None
    assert claim("R-3", "40.00").outcome is NEW
    assert claim("R-4", "0.01").refunded == "100.00"


def test_limit_sums_exact_decimals(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    # 0.1 + 0.2 > 0.3 in floating point: an amount summed as float would refuse R-2.
    for refund_id, amount, expected in [("R-1", "0.10", NEW), ("R-2", "0.20", NEW)]:
        new = make_refund(refund_id=refund_id, amount=amount, original_amount="0.30")
        assert journal.claim(new, owner="A").outcome is expected
    last = make_refund(refund_id="R-3", amount="0.01", original_amount="0.30")
    assert journal.claim(last, owner="A").refunded == "0.30"


def test_a_single_refund_above_the_original_amount_is_refused(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    claim = journal.claim(make_refund(amount="100.01", original_amount="100.00"), owner="A")
    assert (claim.outcome, claim.refunded) == (OVER_LIMIT, "0.00")


@pytest.mark.parametrize("state", [None, S.PENDING, S.SUCCEEDED, S.UNKNOWN])
def test_sent_or_possibly_sent_refunds_count_toward_the_limit(
    backend: Any, make_refund: MakeRefund, state: JournalState | None
) -> None:
    journal = backend.open()
    journal.claim(make_refund(amount="70.00", original_amount="100.00"), owner="A")
    if state is not None:
        journal.record("testpay", "R-1", owner="A", attempt=1, state=state)

    claim = journal.claim(
        make_refund(refund_id="R-2", amount="40.00", original_amount="100.00"), owner="B"
    )

    assert (claim.outcome, claim.refunded) == (OVER_LIMIT, "70.00")


def test_failed_refunds_do_not_count_toward_the_limit(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(amount="70.00", original_amount="100.00"), owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.FAILED)

    claim = journal.claim(
        make_refund(refund_id="R-2", amount="100.00", original_amount="100.00"), owner="B"
    )

    assert claim.outcome is NEW


@pytest.mark.parametrize(
    "other",
    [
        {"payment_id": "PAY-2", "payment_key": "payment_id=PAY-2"},
        {"currency": "USD"},
        {"provider": "otherpay"},
    ],
)
def test_limit_is_per_provider_payment_and_currency(
    backend: Any, make_refund: MakeRefund, other: dict[str, str]
) -> None:
    journal = backend.open()
    journal.claim(make_refund(amount="90.00", original_amount="100.00", **other), owner="A")

    claim = journal.claim(
        make_refund(refund_id="R-2", amount="90.00", original_amount="100.00"), owner="A"
    )

    assert claim.outcome is NEW


def test_without_original_amount_there_is_no_limit(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(amount="90.00", original_amount="100.00"), owner="A")
    assert journal.claim(make_refund(refund_id="R-2", amount="90.00"), owner="A").outcome is NEW


def test_a_void_without_amount_counts_as_the_whole_payment(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(amount="0.01", original_amount="100.00"), owner="A")
    void = make_refund(refund_id="V-1", operation="void", amount=None, original_amount="100.00")
    assert journal.claim(void, owner="A").outcome is OVER_LIMIT

    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.FAILED)
    assert journal.claim(void, owner="A").outcome is NEW
    refund = make_refund(refund_id="R-2", amount="0.01", original_amount="100.00")
    assert journal.claim(refund, owner="A").refunded == "100.00"


def test_committed_refunds_are_a_payments_rows_that_took_or_may_take_money(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal: Journal = backend.open()
    for refund_id in ("R-1", "R-2", "R-3", "R-4", "R-7"):
        journal.claim(make_refund(refund_id=refund_id), owner="A")
    journal.record("testpay", "R-2", owner="A", attempt=1, state=S.FAILED)
    journal.record("testpay", "R-3", owner="A", attempt=1, state=S.SUCCEEDED)
    # Proven never sent: no money left, whatever a later resend does.
    journal.record("testpay", "R-7", owner="A", attempt=1, state=S.NOT_SENT, sent=False)
    journal.claim(make_refund(refund_id="R-5", payment_id="PAY-2", payment_key="pk2"), owner="A")
    journal.claim(make_refund(refund_id="R-6", provider="otherpay"), owner="A")

    found = journal.committed_refunds("testpay", "payment_id=PAY-1")

    assert [(e.refund_id, e.state) for e in found] == [
        ("R-1", S.SUBMITTING),
        ("R-3", S.SUCCEEDED),
        ("R-4", S.SUBMITTING),
    ]
    assert journal.committed_refunds("testpay", "payment_id=PAY-9") == []


def test_concurrent_refunds_of_one_payment_never_exceed_it(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    refunds = [
        make_refund(refund_id=f"R-{i}", amount="10.00", original_amount="100.00") for i in range(16)
    ]

    claims = _claim_together(journal, refunds)

    assert Counter(claim.outcome for claim in claims) == {NEW: 10, OVER_LIMIT: 6}
    committed = sum(entry.amount.amount for entry in journal.entries() if entry.amount)
    assert committed == Decimal("100.00")


# -- recording outcomes -------------------------------------------------------------


def test_record_refuses_another_owner_of_the_current_attempt(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")

    with pytest.raises(JournalError, match=r"attempt 1 .* belongs to 'A'; 'B' may not record"):
        journal.record("testpay", "R-1", owner="B", attempt=1, state=S.FAILED)
    with pytest.raises(JournalError, match=r"has had 1 attempt\(s\); 'A' reports attempt 2"):
        journal.record("testpay", "R-1", owner="A", attempt=2, state=S.FAILED)
    assert _entry(journal.claim(make_refund(), owner="C")).state is S.SUBMITTING


@pytest.mark.parametrize("raw", [None, {"status": "ok", "amount": "1.00", "n": [1, 2]}])
def test_record_of_the_claimants_own_send_stores_and_returns_the_row(
    backend: Any, make_refund: MakeRefund, raw: dict[str, Any] | None
) -> None:
    journal = backend.open()
    claimed = _entry(journal.claim(make_refund(), owner="A"))

    entry = journal.record(
        "testpay",
        "R-1",
        owner="A",
        attempt=1,
        state=S.SUCCEEDED,
        provider_refund_id="GW-1",
        message="done",
        error_code="E0",
        http_status=200,
        raw=raw,
    )

    assert entry == journal.get("testpay", "R-1")
    assert (entry.state, entry.provider_refund_id, entry.message) == (S.SUCCEEDED, "GW-1", "done")
    assert (entry.error_code, entry.http_status, entry.raw) == ("E0", 200, raw or {})
    assert (entry.owner, entry.lease_until, entry.attempt) == (None, None, 1)
    assert entry.created_at == claimed.created_at <= entry.updated_at
    claim, send, answer = journal.history("testpay", "R-1")
    assert [(e.kind, e.attempt, e.state, e.actor) for e in (claim, send, answer)] == [
        (EventKind.CLAIM, 1, S.SUBMITTING, "A"),
        (EventKind.SEND, 1, None, "A"),
        (EventKind.ANSWER, 1, S.SUCCEEDED, "A"),
    ]
    assert claim.at == claimed.created_at and answer.at == entry.updated_at
    assert answer.data == {
        "provider_refund_id": "GW-1",
        "message": "done",
        "error_code": "E0",
        "http_status": 200,
        **({"raw": raw} if raw else {}),
    }
    assert answer.detail == "answer: SUCCEEDED (E0), gateway id GW-1: done"
    assert claim.detail == "claimed by A, lease 60 s"


# One outcome at a time is how a client records what it has just sent.
@pytest.mark.parametrize("together", [True, False], ids=["together", "one-by-one"])
def test_record_many_stores_each_outcome_as_record_would(
    backend: Any, make_refund: MakeRefund, together: bool
) -> None:
    journal = backend.open()
    outcomes = [
        ResultRecord("testpay", "1", "A1", 1, S.SUCCEEDED, "GW-1", "ok", None, 200, {"n": 1}),
        ResultRecord("testpay", "2", "A2", 1, "FAILED", None, "refused", "E7", 402),
        ResultRecord("testpay", "3", "A3", 1, S.UNKNOWN, message="read timeout"),
        ResultRecord("testpay", "4", "A4", 1, S.PENDING, "GW-4", raw={"queued": True}),
        ResultRecord("testpay", "5", "A5", 1, S.NOT_SENT, message="refused locally", sent=False),
    ]
    for outcome in outcomes:
        for prefix in ("M-", "R-"):
            refund = make_refund(refund_id=prefix + outcome.refund_id)
            journal.claim(refund, owner=outcome.owner)

    many = [attrs.evolve(outcome, refund_id=f"M-{outcome.refund_id}") for outcome in outcomes]
    for part in [many] if together else [[outcome] for outcome in many]:
        journal.record_many(part)
    for outcome in outcomes:
        fields = attrs.asdict(outcome, recurse=False)
        journal.record(**{**fields, "refund_id": f"R-{outcome.refund_id}"})

    rows = {entry.refund_id: entry for entry in journal.entries()}
    for outcome in outcomes:
        many_row, one = rows[f"M-{outcome.refund_id}"], rows[f"R-{outcome.refund_id}"]
        stamps = {"created_at": one.created_at, "updated_at": one.updated_at}
        assert attrs.evolve(many_row, refund_id=one.refund_id, **stamps) == one
        assert many_row.state is outcome.state
        history = [
            [
                (e.kind, e.state, e.data)
                for e in journal.history("testpay", prefix + outcome.refund_id)[1:]
            ]
            for prefix in ("M-", "R-")
        ]
        assert history[0] == history[1]
        assert [kind for kind, _, _ in history[0]] == (
            [EventKind.SEND, EventKind.ANSWER] if outcome.sent else [EventKind.ANSWER]
        )


def test_record_many_leaves_rows_it_does_not_own_to_records_rules(
    backend: Any, make_refund: MakeRefund
) -> None:
    """A callback that came first, an owner whose lease was taken over: each is decided
    as :meth:`record` decides it, the rest still stored; a row that is not there stores
    nothing."""
    journal = backend.open()
    for n in (1, 2, 3):
        journal.claim(make_refund(refund_id=f"R-{n}"), owner="A", lease_seconds=LEASE)
    journal.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-1")
    time.sleep(LEASE)
    assert journal.claim(make_refund(refund_id="R-2"), owner="B").outcome is TAKEOVER

    journal.record_many(
        [
            ResultRecord("testpay", "R-1", "A", 1, S.FAILED, message="late"),
            ResultRecord("testpay", "R-2", "A", 1, S.UNKNOWN),
            ResultRecord("testpay", "R-3", "A", 1, S.SUCCEEDED, "GW-3"),
        ]
    )
    with pytest.raises(JournalError, match="has no refund 'R-404'"):
        journal.record_many(
            [
                ResultRecord("testpay", "R-2", "B", 2, S.SUCCEEDED),
                ResultRecord("testpay", "R-404", "A", 1, S.FAILED),
            ]
        )

    states = {entry.refund_id: entry.state for entry in journal.entries()}
    assert states == {"R-1": S.SUCCEEDED, "R-2": S.SUBMITTING, "R-3": S.SUCCEEDED}
    assert journal.history("testpay", "R-2")[-1].kind is EventKind.LATE_ANSWER


def test_record_many_takes_outcomes_only(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    with pytest.raises(ValueError, match="record takes"):
        journal.record_many(
            [
                ResultRecord("testpay", "R-1", "A", 1, S.SUCCEEDED),
                ResultRecord("testpay", "R-1", "A", 1, S.SUBMITTING),
            ]
        )
    assert _entry(journal.claim(make_refund(), owner="B")).state is S.SUBMITTING
    journal.record_many([])


def test_record_never_changes_a_final_row(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    final = journal.record("testpay", "R-1", owner="A", attempt=1, state=S.SUCCEEDED, message="ok")

    for state in (S.PENDING, S.UNKNOWN, S.SUCCEEDED, S.NOT_SENT):
        again = journal.record("testpay", "R-1", owner="Z", attempt=1, state=state, message="late")
        assert again == final
    assert not [e for e in journal.history("testpay", "R-1") if e.kind is EventKind.CONTRADICTION]

    contradicted = journal.record("testpay", "R-1", owner="Z", attempt=1, state=S.FAILED)
    assert contradicted == final
    last = journal.history("testpay", "R-1")[-1]
    assert (last.kind, last.state, last.data["held"]) == (
        EventKind.CONTRADICTION,
        S.FAILED,
        "SUCCEEDED",
    )


def test_record_keeps_pending_when_a_reconcile_learns_nothing(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=S.PENDING, provider_refund_id="GW-1"
    )
    journal.claim(make_refund(), owner="A")  # DONE: PENDING is not re-sent

    entry = journal.record(
        "testpay", "R-1", owner="B", attempt=1, state=S.UNKNOWN, message="HTTP 503"
    )

    assert (entry.state, entry.provider_refund_id, entry.message) == (S.PENDING, "GW-1", None)


def test_record_needs_an_existing_row_and_an_outcome(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    with pytest.raises(JournalError, match="has no refund 'R-404'"):
        journal.record("testpay", "R-404", owner="A", attempt=1, state=S.FAILED)
    journal.claim(make_refund(), owner="A")
    with pytest.raises(ValueError, match="record takes"):
        journal.record("testpay", "R-1", owner="A", attempt=1, state=S.SUBMITTING)


# -- fencing: the attempt number ------------------------------------------------------


@pytest.fixture
def taken_over(backend: Any, make_refund: MakeRefund) -> Journal:
    """A journal holding R-1: A's attempt 1 ran out of lease and B took it over."""
    journal: Journal = backend.open()
    journal.claim(make_refund(), owner="A", lease_seconds=LEASE)
    time.sleep(LEASE)
    assert journal.claim(make_refund(), owner="B").outcome is TAKEOVER
    return journal


def test_the_original_senders_late_answer_never_overwrites_the_taker(
    taken_over: Journal,
) -> None:
    journal = taken_over
    mine = journal.record("testpay", "R-1", owner="B", attempt=2, state=S.UNKNOWN, sent=False)

    late = journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=S.FAILED, error_code="E9", message="late"
    )

    # FAILED outranks UNKNOWN, so it is applied, as a callback would be; but it is kept
    # as what it is: the answer to attempt 1.
    assert (late.state, late.error_code, late.attempt) == (S.FAILED, "E9", 2)
    assert mine.state is S.UNKNOWN
    events = journal.history("testpay", "R-1")
    assert [(e.kind, e.attempt, e.actor) for e in events[-3:]] == [
        (EventKind.ANSWER, 2, "B"),
        (EventKind.SEND, 1, "A"),
        (EventKind.LATE_ANSWER, 1, "A"),
    ]
    assert events[-1].data == {"error_code": "E9", "message": "late", "applied": True}


def test_a_late_answer_is_kept_but_never_undoes_the_takers_outcome(taken_over: Journal) -> None:
    journal = taken_over
    settled = journal.record(
        "testpay", "R-1", owner="B", attempt=2, state=S.SUCCEEDED, provider_refund_id="GW-1"
    )
    live = _entry(journal.claim(make_refund_like(settled), owner="C"))
    assert live == settled

    late = journal.record("testpay", "R-1", owner="A", attempt=1, state=S.SUCCEEDED)
    assert late == settled
    event = journal.history("testpay", "R-1")[-1]
    assert (event.kind, event.state, event.data) == (
        EventKind.LATE_ANSWER,
        S.SUCCEEDED,
        {"applied": False},
    )


def test_a_late_answer_under_a_live_lease_leaves_the_lease_alone(taken_over: Journal) -> None:
    journal = taken_over
    before = journal.get("testpay", "R-1")
    assert before is not None and before.owner == "B"

    late = journal.record("testpay", "R-1", owner="A", attempt=1, state=S.PENDING)

    assert (late.state, late.owner, late.lease_until) == (S.PENDING, "B", before.lease_until)
    final = journal.record("testpay", "R-1", owner="B", attempt=2, state=S.SUCCEEDED)
    assert (final.state, final.owner) == (S.SUCCEEDED, None)


def test_a_late_answer_after_not_sent_is_a_contradiction(
    taken_over: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    journal = taken_over
    journal.record("testpay", "R-1", owner="B", attempt=2, state=S.NOT_SENT, sent=False)

    late = journal.record("testpay", "R-1", owner="A", attempt=1, state=S.SUCCEEDED)

    # Money moved: the row says so, and the history says the conclusion was wrong.
    assert late.state is S.SUCCEEDED
    kinds = [e.kind for e in journal.history("testpay", "R-1")[-3:]]
    assert kinds == [EventKind.SEND, EventKind.LATE_ANSWER, EventKind.CONTRADICTION]
    assert "late_answer says SUCCEEDED, against NOT_SENT" in caplog.text


def make_refund_like(entry: JournalEntry) -> NewRefund:
    fields = attrs.fields_dict(NewRefund)
    return NewRefund(**{name: getattr(entry, name) for name in fields})


# -- NOT_SENT ----------------------------------------------------------------------


def test_not_sent_counts_nothing_toward_the_limit_until_sent_again(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    first = make_refund(amount="70.00", original_amount="100.00")
    journal.claim(first, owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.NOT_SENT, sent=False)

    other = make_refund(refund_id="R-2", amount="40.00", original_amount="100.00")
    assert journal.claim(other, owner="B").outcome is NEW

    again = journal.claim(first, owner="C")
    assert (again.outcome, again.refunded) == (OVER_LIMIT, "40.00")
    assert _entry(again).state is S.NOT_SENT
    journal.record("testpay", "R-2", owner="B", attempt=1, state=S.FAILED)
    resent = journal.claim(first, owner="C")
    assert (resent.outcome, _entry(resent).attempt, _entry(resent).owner) == (NEW, 2, "C")


def test_a_not_sent_row_claimed_again_is_fresh(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=S.NOT_SENT, message="x", sent=False
    )

    claim = journal.claim(make_refund(), owner="B", lease_seconds=30)

    entry = _entry(claim)
    assert claim.outcome is NEW
    assert (entry.state, entry.attempt, entry.owner, entry.message) == (
        S.SUBMITTING,
        2,
        "B",
        None,
    )
    assert entry == journal.get("testpay", "R-1")
    assert entry.lease_until == entry.updated_at + timedelta(seconds=30)
    last = journal.history("testpay", "R-1")[-1]
    assert (last.kind, last.attempt, last.actor) == (EventKind.CLAIM, 2, "B")


# -- callbacks ------------------------------------------------------------------------


@pytest.fixture
def pending(backend: Any, make_refund: MakeRefund) -> Journal:
    """A journal holding R-1, PENDING at the gateway as GW-1."""
    journal: Journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=S.PENDING, provider_refund_id="GW-1"
    )
    return journal


def _applied(applied: Applied | None) -> Applied:
    assert applied is not None
    return applied


def test_callback_settles_a_pending_refund(pending: Journal) -> None:
    applied = _applied(
        pending.apply_notification(
            "testpay", state=S.SUCCEEDED, refund_id="R-1", raw={"event": "refund.succeeded"}
        )
    )
    entry = applied.entry
    assert (applied.changed, applied.duplicate, applied.contradiction) == (True, False, False)
    assert (entry.state, entry.raw) == (S.SUCCEEDED, {"event": "refund.succeeded"})
    assert pending.get("testpay", "R-1") == entry
    event = pending.history("testpay", "R-1")[-1]
    assert (event.kind, event.state, event.detail) == (
        EventKind.CALLBACK,
        S.SUCCEEDED,
        "callback said SUCCEEDED; applied",
    )
    assert event.data == {"raw": {"event": "refund.succeeded"}, "applied": True}


def test_callback_finds_the_row_by_provider_refund_id(pending: Journal) -> None:
    entry = _applied(
        pending.apply_notification("testpay", state=S.FAILED, provider_refund_id="GW-1")
    ).entry
    assert (entry.refund_id, entry.state) == ("R-1", S.FAILED)
    unknown_id = _applied(
        pending.apply_notification(
            "testpay", state=S.FAILED, refund_id="R-404", provider_refund_id="GW-1"
        )
    )
    assert unknown_id.entry == entry and unknown_id.duplicate


def test_callback_for_no_known_refund_returns_none(pending: Journal) -> None:
    assert pending.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-404") is None
    assert pending.apply_notification("otherpay", state=S.SUCCEEDED, refund_id="R-1") is None
    assert pending.apply_notification("testpay", state=S.SUCCEEDED) is None


def test_repeated_callback_changes_nothing_and_says_it_is_a_duplicate(pending: Journal) -> None:
    first = _applied(pending.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-1"))
    again = _applied(
        pending.apply_notification(
            "testpay", state=S.SUCCEEDED, refund_id="R-1", raw={"delivery": 2}
        )
    )
    assert again.entry == first.entry
    assert (first.duplicate, again.duplicate, again.changed) == (False, True, False)
    assert pending.history("testpay", "R-1")[-1].detail == "callback said SUCCEEDED; a duplicate"


@pytest.mark.parametrize(
    ("settled", "late", "contradiction"),
    [
        (S.SUCCEEDED, S.PENDING, False),
        (S.FAILED, S.SUCCEEDED, True),
        (S.SUCCEEDED, S.FAILED, True),
        (S.SUCCEEDED, S.UNKNOWN, False),
    ],
)
def test_late_callback_never_overwrites_a_final_state(
    pending: Journal, settled: JournalState, late: JournalState, contradiction: bool
) -> None:
    final = _applied(pending.apply_notification("testpay", state=settled, refund_id="R-1"))
    after = _applied(
        pending.apply_notification("testpay", state=late, refund_id="R-1", raw={"x": 1})
    )
    assert after.entry == final.entry and after.entry.state is settled
    assert (after.changed, after.contradiction) == (False, contradiction)
    kinds = [e.kind for e in pending.history("testpay", "R-1")]
    assert (kinds[-1] is EventKind.CONTRADICTION) is contradiction


def test_a_callback_says_whether_it_changed_the_row(pending: Journal) -> None:
    settles = _applied(pending.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-1"))
    repeat = _applied(pending.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-1"))
    late = _applied(pending.apply_notification("testpay", state=S.PENDING, refund_id="R-1"))
    assert [a.changed for a in (settles, repeat, late)] == [True, False, False]
    assert [a.duplicate for a in (settles, repeat, late)] == [False, True, False]
    # A row left as it was keeps its time of the change that made it so.
    assert repeat.entry.updated_at == late.entry.updated_at == settles.entry.updated_at


def test_a_callback_that_only_fills_the_provider_id_changes_the_row(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    pending = journal.record("testpay", "R-1", owner="A", attempt=1, state=S.PENDING)
    applied = _applied(
        journal.apply_notification(
            "testpay", state=S.PENDING, refund_id="R-1", provider_refund_id="GW-9"
        )
    )
    assert applied.changed and applied.entry.provider_refund_id == "GW-9"
    assert applied.entry.updated_at >= pending.updated_at


def test_repeated_pending_callback_changes_nothing(pending: Journal) -> None:
    before = pending.get("testpay", "R-1")
    applied = _applied(pending.apply_notification("testpay", state=S.PENDING, refund_id="R-1"))
    assert applied.entry == before and not applied.changed


def test_backlog_counts_unsettled_refunds_per_provider_and_state(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal: Journal = backend.open()
    assert journal.backlog() == []
    plan = [
        ("testpay", "R-1", S.UNKNOWN),
        ("otherpay", "R-1", S.PENDING),
        ("testpay", "R-2", S.UNKNOWN),
        ("testpay", "R-3", S.PENDING),
        ("otherpay", "R-2", S.SUBMITTING),
        ("testpay", "R-4", S.SUCCEEDED),  # settled: not part of the backlog
        ("testpay", "R-5", S.NOT_SENT),  # nothing left to settle either
    ]
    created = {}
    for provider, refund_id, state in plan:
        time.sleep(0.002)  # the journal's clock counts milliseconds on SQLite
        claim = journal.claim(
            make_refund(provider=provider, refund_id=refund_id, payment_key=refund_id),
            owner="A",
        )
        created[provider, refund_id] = _entry(claim).created_at
        if state is not S.SUBMITTING:
            journal.record(provider, refund_id, owner="A", attempt=1, state=state, sent=False)
    backlog = journal.backlog()
    assert [(b.provider, b.state, b.count, b.oldest) for b in backlog] == [
        ("otherpay", S.PENDING, 1, created["otherpay", "R-1"]),
        ("otherpay", S.SUBMITTING, 1, created["otherpay", "R-2"]),
        ("testpay", S.PENDING, 1, created["testpay", "R-3"]),
        ("testpay", S.UNKNOWN, 2, created["testpay", "R-1"]),
    ]
    assert all(b.oldest.tzinfo is not None for b in backlog)


def test_callback_can_arrive_before_the_reply(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")

    early = _applied(
        journal.apply_notification(
            "testpay", state=S.SUCCEEDED, refund_id="R-1", provider_refund_id="GW-7"
        )
    ).entry
    reply = journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=S.PENDING, provider_refund_id="GW-7"
    )

    assert (early.state, early.provider_refund_id, early.owner, early.lease_until) == (
        S.SUCCEEDED,
        "GW-7",
        None,
        None,
    )
    assert attrs.evolve(reply, updated_at=early.updated_at) == early


def test_pending_callback_on_a_submitting_row_keeps_the_senders_lease(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    sent = _entry(journal.claim(make_refund(), owner="A"))

    entry = _applied(
        journal.apply_notification(
            "testpay", state=S.PENDING, refund_id="R-1", provider_refund_id="GW-1"
        )
    ).entry

    assert (entry.state, entry.provider_refund_id) == (S.PENDING, "GW-1")
    assert (entry.owner, entry.lease_until) == (sent.owner, sent.lease_until)
    final = journal.record("testpay", "R-1", owner="A", attempt=1, state=S.SUCCEEDED)
    assert (final.state, final.owner, final.provider_refund_id) == (S.SUCCEEDED, None, "GW-1")


def test_callback_fills_a_missing_provider_refund_id(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.SUCCEEDED)

    filled = _applied(
        journal.apply_notification(
            "testpay", state=S.SUCCEEDED, refund_id="R-1", provider_refund_id="GW-3"
        )
    )
    overwrite = _applied(
        journal.apply_notification(
            "testpay", state=S.SUCCEEDED, refund_id="R-1", provider_refund_id="GW-other"
        )
    )

    entry = filled.entry
    assert filled.changed and (entry.state, entry.provider_refund_id) == (S.SUCCEEDED, "GW-3")
    assert overwrite.entry == entry and not overwrite.changed
    assert journal.find_by_provider_refund_id("testpay", "GW-3") == entry
    assert journal.find_by_provider_refund_id("testpay", "GW-other") is None


def test_a_callback_about_another_gateway_refund_never_settles_a_row(pending: Journal) -> None:
    """A refund id can reach a callback from a place the gateway does not sign; the
    gateway's own refund id (signed) must then agree with the row's, or the callback
    is kept as evidence only: a genuine SUCCEEDED about GW-2 cannot settle R-1 (GW-1)."""
    foreign = _applied(
        pending.apply_notification(
            "testpay", state=S.SUCCEEDED, refund_id="R-1", provider_refund_id="GW-2"
        )
    )
    entry = pending.get("testpay", "R-1")
    assert entry is not None and (entry.state, entry.provider_refund_id) == (S.PENDING, "GW-1")
    assert (foreign.changed, foreign.duplicate, foreign.contradiction) == (False, False, True)
    assert foreign.misdirected
    heard, contradiction = pending.history("testpay", "R-1")[-2:]
    assert (heard.kind, heard.data["applied"], heard.data["settles"]) == (
        EventKind.CALLBACK,
        False,
        False,
    )
    assert heard.detail.endswith("(the refund is gateway id GW-1)")
    assert contradiction.kind is EventKind.CONTRADICTION
    # The genuine word about GW-1 still settles it.
    own = _applied(
        pending.apply_notification(
            "testpay", state=S.FAILED, refund_id="R-1", provider_refund_id="GW-1"
        )
    )
    assert (own.changed, own.entry.state, own.misdirected) == (True, S.FAILED, False)


def test_a_callback_never_takes_another_rows_gateway_id(
    backend: Any, make_refund: MakeRefund
) -> None:
    """R-2's reply was lost (no gateway id yet); a callback naming R-2 with R-1's
    gateway id is R-1's word moved to R-2's name: it neither settles R-2 nor gives it
    that id."""
    journal: Journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=S.SUCCEEDED, provider_refund_id="GW-1"
    )
    journal.claim(make_refund(refund_id="R-2", payment_key="P-2"), owner="A")
    journal.record("testpay", "R-2", owner="A", attempt=1, state=S.UNKNOWN)

    moved = _applied(
        journal.apply_notification(
            "testpay", state=S.SUCCEEDED, refund_id="R-2", provider_refund_id="GW-1"
        )
    )

    entry = journal.get("testpay", "R-2")
    assert entry is not None and (entry.state, entry.provider_refund_id) == (S.UNKNOWN, None)
    assert (moved.changed, moved.contradiction) == (False, True)
    assert journal.history("testpay", "R-2")[-1].detail.endswith(
        "(that gateway id is refund R-1's)"
    )


# -- queries -------------------------------------------------------------------------


def test_a_query_is_kept_as_evidence_and_settles_only_when_trusted(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.UNKNOWN)

    doubt = journal.record_query(
        "testpay",
        "R-1",
        state=S.FAILED,
        settles=False,
        error_code="not_found",
        message="no such refund",
        actor="cron",
        note="absence proves nothing here",
    )
    trusted = journal.record_query(
        "testpay", "R-1", state=S.SUCCEEDED, settles=True, provider_refund_id="GW-2"
    )

    assert (doubt.changed, doubt.entry.state, doubt.contradiction) == (False, S.UNKNOWN, False)
    assert (trusted.changed, trusted.entry.state) == (True, S.SUCCEEDED)
    first, second = journal.history("testpay", "R-1")[-2:]
    assert (first.kind, first.state, first.actor) == (EventKind.QUERY, S.FAILED, "cron")
    assert first.detail == (
        "query said FAILED (not_found): no such refund; kept as evidence only "
        "(absence proves nothing here)"
    )
    assert first.data == {
        "error_code": "not_found",
        "message": "no such refund",
        "applied": False,
        "settles": False,
        "note": "absence proves nothing here",
    }
    assert (second.kind, second.data["applied"]) == (EventKind.QUERY, True)
    with pytest.raises(JournalError, match="has no refund 'R-404'"):
        journal.record_query("testpay", "R-404", state=S.UNKNOWN, settles=False)


# -- operators' decisions -------------------------------------------------------------


@pytest.fixture
def unknown(backend: Any, make_refund: MakeRefund) -> Journal:
    """A journal holding R-1, UNKNOWN after its send."""
    journal: Journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.UNKNOWN, message="timeout")
    return journal


def test_an_unsigned_tie_settles_no_refund_without_a_known_gateway_id(
    unknown: Journal,
) -> None:
    """R-1's reply was lost: no gateway id held. A callback naming R-1 only by unsigned
    data (``unsigned_tie``) is kept and recorded, never applied, however often it comes."""
    first, again = (
        _applied(
            unknown.apply_notification(
                "testpay",
                state=S.FAILED,
                refund_id="R-1",
                provider_refund_id="GW-9",
                unsigned_tie=True,
            )
        )
        for _ in range(2)
    )

    for applied in (first, again):
        assert (applied.changed, applied.unconfirmed, applied.misdirected) == (False, True, False)
        assert applied.contradiction and not applied.agrees(S.FAILED)
        assert (applied.entry.state, applied.entry.provider_refund_id) == (S.UNKNOWN, None)
    assert again.duplicate
    entry = unknown.get("testpay", "R-1")
    assert entry is not None and (entry.state, entry.provider_refund_id) == (S.UNKNOWN, None)
    heard = [e for e in unknown.history("testpay", "R-1") if e.kind is EventKind.CALLBACK]
    assert [e.data["unsigned_tie"] for e in heard] == [True, True]
    assert not any(e.data["applied"] for e in heard)
    kinds = [e.kind for e in unknown.history("testpay", "R-1")]
    # Recorded with its first delivery; the repeat is counted on its callback.
    assert kinds.count(EventKind.CONTRADICTION) == 1
    assert unknown.find_by_provider_refund_id("testpay", "GW-9") is None


@pytest.mark.parametrize(
    ("decided", "word", "reopened"),
    [
        (S.NOT_SENT, S.FAILED, True),
        (S.FAILED, S.SUCCEEDED, True),
        (S.FAILED, S.FAILED, False),
        (S.SUCCEEDED, S.FAILED, False),
    ],
)
def test_an_unsigned_tie_reopens_a_decision_it_would_overrule_and_settles_nothing(
    unknown: Journal, decided: JournalState, word: JournalState, reopened: bool
) -> None:
    """Where a confirmed word would overrule the decision (it could refund the money a
    second time), one tied only by unsigned data puts the refund back to UNKNOWN for
    the operator; it never settles it, and any other decision stands."""
    unknown.resolve("testpay", "R-1", state=decided, reason="seen", by="bob")

    applied = _applied(
        unknown.apply_notification(
            "testpay", state=word, refund_id="R-1", provider_refund_id="GW-9", unsigned_tie=True
        )
    )

    entry = unknown.get("testpay", "R-1")
    assert entry is not None and applied.entry == entry
    held = (S.UNKNOWN, None, None) if reopened else (decided, "bob", None)
    assert (entry.state, entry.decided_by, entry.provider_refund_id) == held
    assert (applied.changed, applied.unconfirmed, applied.contradiction) == (reopened, True, True)
    (heard,) = [e for e in unknown.history("testpay", "R-1") if e.kind is EventKind.CALLBACK]
    assert heard.data.get("reopened", False) is reopened and heard.data["applied"] is False


def test_an_unsigned_tie_settles_the_refund_holding_its_gateway_id(pending: Journal) -> None:
    applied = _applied(
        pending.apply_notification(
            "testpay",
            state=S.SUCCEEDED,
            refund_id="R-1",
            provider_refund_id="GW-1",
            unsigned_tie=True,
        )
    )

    assert applied.changed and applied.agrees(S.SUCCEEDED) and not applied.unconfirmed
    assert applied.entry.state is S.SUCCEEDED


def test_an_unsigned_tie_without_a_gateway_id_settles_nothing(pending: Journal) -> None:
    applied = _applied(
        pending.apply_notification("testpay", state=S.FAILED, refund_id="R-1", unsigned_tie=True)
    )

    assert applied.unconfirmed and not applied.changed
    assert applied.entry.state is S.PENDING


def test_an_unsigned_tie_overtaking_the_reply_waits_for_it(
    backend: Any, make_refund: MakeRefund
) -> None:
    """A callback that came before the reply, tied by unsigned data: kept, not applied,
    and no contradiction (the reply brings the gateway's own word); the reply settles."""
    journal = backend.open()
    journal.claim(make_refund(), owner="A")

    early = _applied(
        journal.apply_notification(
            "testpay",
            state=S.SUCCEEDED,
            refund_id="R-1",
            provider_refund_id="GW-7",
            unsigned_tie=True,
        )
    )
    reply = journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=S.SUCCEEDED, provider_refund_id="GW-7"
    )

    assert (early.unconfirmed, early.contradiction, early.changed) == (True, False, False)
    assert early.entry.state is S.SUBMITTING
    assert (reply.state, reply.provider_refund_id) == (S.SUCCEEDED, "GW-7")
    kinds = [e.kind for e in journal.history("testpay", "R-1")]
    assert EventKind.CALLBACK in kinds and EventKind.CONTRADICTION not in kinds


@pytest.mark.parametrize("decided", [S.SUCCEEDED, S.FAILED, S.NOT_SENT])
def test_a_decision_is_recorded_beside_the_evidence(
    unknown: Journal, decided: JournalState
) -> None:
    entry = unknown.resolve(
        "testpay", "R-1", state=decided, reason="checked the bank statement", by="alice"
    )

    assert (entry.state, entry.decided_by, entry.owner) == (decided, "alice", None)
    assert entry.message == f"decided {decided.value} by alice: checked the bank statement"
    assert unknown.get("testpay", "R-1") == entry
    event = unknown.history("testpay", "R-1")[-1]
    assert (event.kind, event.state, event.actor, event.attempt) == (
        EventKind.DECISION,
        decided,
        "alice",
        1,
    )
    assert event.data == {
        "reason": "checked the bank statement",
        "by": "alice",
        "previous_state": "UNKNOWN",
    }
    assert event.at == entry.updated_at
    json.dumps([e.as_dict() for e in unknown.history("testpay", "R-1")])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reason": ""}, "reason"),
        ({"reason": "   "}, "reason"),
        ({"by": ""}, "by"),
        ({"by": None}, "by"),
        ({"state": S.UNKNOWN}, "state"),
        ({"state": S.PENDING}, "state"),
        ({"state": "MAYBE"}, "state"),
    ],
)
def test_a_decision_needs_a_reason_an_operator_and_a_settled_state(
    unknown: Journal, changes: dict[str, Any], field: str
) -> None:
    decision: dict[str, Any] = {"state": S.FAILED, "reason": "why", "by": "alice", **changes}
    with pytest.raises(ValidationError) as caught:
        unknown.resolve("testpay", "R-1", **decision)
    assert caught.value.field == field
    assert _entry_state(unknown, "R-1") is S.UNKNOWN


def test_a_decision_waits_for_a_live_sender_and_never_overrides_the_gateway(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    with pytest.raises(JournalError, match="has no refund 'R-1'"):
        journal.resolve("testpay", "R-1", state=S.FAILED, reason="r", by="b")
    journal.claim(make_refund(), owner="A")
    with pytest.raises(JournalError, match="being sent or reconciled by A until"):
        journal.resolve("testpay", "R-1", state=S.FAILED, reason="r", by="b")
    journal.record("testpay", "R-1", owner="A", attempt=1, state=S.PENDING)
    with pytest.raises(ValidationError, match="PENDING at the gateway, so it was sent"):
        journal.resolve("testpay", "R-1", state=S.NOT_SENT, reason="r", by="b")
    journal.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-1")
    with pytest.raises(ValidationError, match="SUCCEEDED by the gateway's own answer"):
        journal.resolve("testpay", "R-1", state=S.FAILED, reason="r", by="b")


def test_a_decision_may_be_corrected_by_another(unknown: Journal) -> None:
    unknown.resolve("testpay", "R-1", state=S.FAILED, reason="looked absent", by="alice")
    entry = unknown.resolve("testpay", "R-1", state=S.SUCCEEDED, reason="found it", by="bob")
    assert (entry.state, entry.decided_by) == (S.SUCCEEDED, "bob")
    decisions = [e for e in unknown.history("testpay", "R-1") if e.kind is EventKind.DECISION]
    assert [(e.actor, e.data["previous_state"]) for e in decisions] == [
        ("alice", "UNKNOWN"),
        ("bob", "FAILED"),
    ]


@pytest.mark.parametrize("source", ["callback", "query", "late record"])
@pytest.mark.parametrize(("decided", "word"), [(S.SUCCEEDED, S.FAILED), (S.FAILED, S.PENDING)])
def test_a_gateway_answer_against_a_decision_is_recorded_never_applied(
    unknown: Journal,
    make_refund: MakeRefund,
    source: str,
    decided: JournalState,
    word: JournalState,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A word that does not show the money left where the decision says it did not
    (FAILED against SUCCEEDED: the money may still be owed, an operator's call; PENDING
    against FAILED) leaves the decision standing, and is reported."""
    journal = unknown
    held = journal.resolve("testpay", "R-1", state=decided, reason="the report", by="ann")

    if source == "callback":
        applied = _applied(journal.apply_notification("testpay", state=word, refund_id="R-1"))
        assert (applied.changed, applied.contradiction) == (False, True)
        entry = applied.entry
    elif source == "query":
        applied = journal.record_query("testpay", "R-1", state=word, settles=True)
        assert (applied.changed, applied.contradiction) == (False, True)
        entry = applied.entry
    else:
        entry = journal.record("testpay", "R-1", owner="A", attempt=1, state=word)

    assert entry == held == journal.get("testpay", "R-1")
    contradiction = journal.history("testpay", "R-1")[-1]
    assert (contradiction.kind, contradiction.state) == (EventKind.CONTRADICTION, word)
    assert contradiction.data["held"] == decided.value
    assert f"against ann's decision {decided.value}" in contradiction.detail
    assert contradiction.detail in caplog.text
    # An answer that agrees is kept, and is no contradiction.
    journal.apply_notification("testpay", state=decided, refund_id="R-1")
    assert journal.history("testpay", "R-1")[-1].kind is EventKind.CALLBACK


@pytest.mark.parametrize("source", ["callback", "query", "late record"])
@pytest.mark.parametrize(
    ("decided", "word"),
    [
        (S.NOT_SENT, S.PENDING),
        (S.NOT_SENT, S.SUCCEEDED),
        (S.NOT_SENT, S.FAILED),
        (S.FAILED, S.SUCCEEDED),
    ],
)
def test_the_gateway_showing_the_money_left_settles_a_decision(
    unknown: Journal,
    make_refund: MakeRefund,
    source: str,
    decided: JournalState,
    word: JournalState,
) -> None:
    """The decisions the gateway's word disproves where the money left: any answer to
    "never sent" (left standing, the next claim would send the refund again), SUCCEEDED
    to FAILED (left standing, the payment's limit would let it be refunded again)."""
    journal = unknown
    journal.resolve("testpay", "R-1", state=decided, reason="not in portal", by="ann")

    if source == "callback":
        applied = _applied(journal.apply_notification("testpay", state=word, refund_id="R-1"))
        assert (applied.changed, applied.contradiction) == (True, True)
    elif source == "query":
        applied = journal.record_query("testpay", "R-1", state=word, settles=True)
        assert (applied.changed, applied.contradiction) == (True, True)
    else:
        journal.record("testpay", "R-1", owner="A", attempt=1, state=word)

    entry = journal.get("testpay", "R-1")
    assert entry is not None and (entry.state, entry.decided_by) == (word, None)
    kinds = [e.kind for e in journal.history("testpay", "R-1")]
    assert EventKind.DECISION in kinds and kinds[-1] is EventKind.CONTRADICTION
    assert journal.history("testpay", "R-1")[-1].data["held"] == decided.value
    claim = journal.claim(make_refund(), owner="B")
    assert claim.outcome is not NEW


def test_a_refund_decided_not_sent_can_be_sent_again(
    unknown: Journal, make_refund: MakeRefund
) -> None:
    unknown.resolve("testpay", "R-1", state=S.NOT_SENT, reason="gateway support", by="ann")
    claim = unknown.claim(make_refund(), owner="B")
    assert (claim.outcome, _entry(claim).attempt, _entry(claim).decided_by) == (NEW, 2, None)


_REPORTS = st.lists(
    st.tuples(
        st.sampled_from(["callback", "record", "query"]), st.sampled_from(list(JournalState))
    ),
    max_size=6,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(reports=_REPORTS)
def test_reports_in_any_order_only_move_a_row_forward(
    backend: Any, make_refund: MakeRefund, reports: list[tuple[str, JournalState]]
) -> None:
    journal = backend.open()
    refund_id = f"R-{len(journal.entries())}"
    journal.claim(make_refund(refund_id=refund_id), owner="A")
    rank = {
        S.SUBMITTING: 0,
        S.UNKNOWN: 1,
        S.NOT_SENT: 1,
        S.PENDING: 2,
        S.SUCCEEDED: 3,
        S.FAILED: 3,
    }
    previous = S.SUBMITTING
    for kind, state in reports:
        if kind == "callback":
            journal.apply_notification("testpay", state=state, refund_id=refund_id)
        elif kind == "query":
            journal.record_query("testpay", refund_id, state=state, settles=True)
        elif state is not S.SUBMITTING:
            journal.record("testpay", refund_id, owner="A", attempt=1, state=state)
        current = _entry_state(journal, refund_id)
        assert rank[current] >= rank[previous]
        assert current is previous or not previous.is_final
        previous = current
    journal.close()


_NAMED_CALLBACKS = st.lists(
    st.tuples(st.sampled_from(list(JournalState)), st.sampled_from([None, "GW-A", "GW-B", "GW-C"])),
    max_size=6,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(callbacks=_NAMED_CALLBACKS)
def test_only_callbacks_with_the_rows_own_gateway_id_settle_it(
    backend: Any, make_refund: MakeRefund, callbacks: list[tuple[JournalState, str | None]]
) -> None:
    """Callbacks naming a refund whose reply was lost, each with some gateway id (none,
    another row's GW-B, or a new one): the first new id is taken as the row's; after
    that, a callback with any other id, or with GW-B at any time, changes nothing."""
    journal = backend.open()
    n = len(journal.entries())
    other, mine = f"O-{n}", f"R-{n}"
    journal.claim(make_refund(refund_id=other, payment_key=other), owner="A")
    journal.record(
        "testpay", other, owner="A", attempt=1, state=S.PENDING, provider_refund_id=f"GW-B-{n}"
    )
    journal.claim(make_refund(refund_id=mine, payment_key=mine), owner="A")
    journal.record("testpay", mine, owner="A", attempt=1, state=S.UNKNOWN)
    for state, name in callbacks:
        gateway_id = None if name is None else f"{name}-{n}"
        before = journal.get("testpay", mine)
        assert before is not None
        applied = _applied(
            journal.apply_notification(
                "testpay", state=state, refund_id=mine, provider_refund_id=gateway_id
            )
        )
        after = journal.get("testpay", mine)
        foreign = gateway_id is not None and (
            gateway_id == f"GW-B-{n}" or before.provider_refund_id not in (None, gateway_id)
        )
        if foreign:
            assert after == before and applied.contradiction and not applied.changed
        assert after is not None and after.provider_refund_id != f"GW-B-{n}"
    journal.close()


def _entry_state(journal: Journal, refund_id: str) -> JournalState:
    entry = journal.get("testpay", refund_id)
    assert entry is not None
    return entry.state


# -- reading ------------------------------------------------------------------------


def test_entries_lists_rows_in_creation_order(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    states = {"R-a": S.SUCCEEDED, "R-b": S.PENDING, "R-c": None, "R-d": S.UNKNOWN, "R-e": S.FAILED}
    journal.claim(make_refund(provider="otherpay"), owner="A")
    for refund_id, state in states.items():
        time.sleep(0.002)  # the journal's clock counts milliseconds on SQLite
        journal.claim(make_refund(refund_id=refund_id), owner="A")
        if state is not None:
            journal.record("testpay", refund_id, owner="A", attempt=1, state=state)

    def ids(entries: list[JournalEntry]) -> list[str]:
        return [entry.refund_id for entry in entries]

    assert ids(journal.entries()) == ["R-1", "R-a", "R-b", "R-c", "R-d", "R-e"]
    assert ids(journal.entries(unsettled=True)) == ["R-1", "R-b", "R-c", "R-d"]
    assert ids(journal.entries(unsettled=True, provider="testpay")) == ["R-b", "R-c", "R-d"]
    assert ids(journal.entries(provider="testpay", limit=2)) == ["R-a", "R-b"]
    assert journal.entries(provider="nopay") == []


def test_raw_is_stored_as_json(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    raw = {"amount": Decimal("10.00"), "list": [1, "two", None], "ok": True, "name": "日本"}

    entry = journal.record("testpay", "R-1", owner="A", attempt=1, state=S.SUCCEEDED, raw=raw)

    assert entry.raw == {"amount": "10.00", "list": [1, "two", None], "ok": True, "name": "日本"}


def test_timestamps_are_utc_from_the_journals_clock(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    mine = datetime.now(timezone.utc)

    entry = _entry(journal.claim(make_refund(), owner="A"))
    event = journal.history("testpay", "R-1")[0]
    now = journal.now()

    for stamp in (entry.created_at, event.at, now):
        assert stamp.utcoffset() == timedelta(0)
    assert event.at == entry.created_at <= now
    # The journal's clock is this machine's here; it need not be anywhere else.
    assert abs(entry.created_at - mine) < timedelta(seconds=5)


# -- lifecycle and schema -----------------------------------------------------------


def test_journal_survives_reopening(backend: Any, make_refund: MakeRefund) -> None:
    with backend.open() as journal:
        journal.claim(make_refund(), owner="A")
        journal.record(
            "testpay", "R-1", owner="A", attempt=1, state=S.PENDING, provider_refund_id="GW-1"
        )

    with backend.open() as reopened:
        claim = reopened.claim(make_refund(), owner="B")
        assert (claim.outcome, _entry(claim).provider_refund_id) == (DONE, "GW-1")
        assert [entry.refund_id for entry in reopened.entries(unsettled=True)] == ["R-1"]


def test_closed_journal_refuses_use(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.close()
    with pytest.raises(JournalError, match="is closed"):
        journal.claim(make_refund(), owner="A")
    journal.close()


def test_schema_version_is_recorded(backend: Any) -> None:
    backend.open().close()
    backend.open().close()
    assert backend.sql("SELECT version FROM refundcore_schema") == [(6,)]


def test_newer_schema_is_refused(backend: Any, make_refund: MakeRefund) -> None:
    with backend.open() as journal:
        journal.claim(make_refund(), owner="A")
    backend.sql("UPDATE refundcore_schema SET version = 99")

    with pytest.raises(JournalError, match=r"schema version 99.*upgrade refundcore") as caught:
        backend.open()
    assert backend.url.split("@")[-1] in str(caught.value)


def test_url_and_repr_name_the_journal(backend: Any) -> None:
    journal = backend.open()
    assert journal.url.split("@")[-1] == backend.url.split("@")[-1]
    assert repr(journal) == f"{type(journal).__name__}({journal.url!r})"
