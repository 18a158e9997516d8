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

from refundcore.errors import JournalError
from refundcore.journal import (
    Claim,
    ClaimVerdict,
    Journal,
    JournalEntry,
    JournalState,
    NewRefund,
    ResultRecord,
)

MakeRefund = Callable[..., NewRefund]

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
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


def _claim_together(
    journal: Journal, refunds: list[NewRefund], *, now: datetime | None = None
) -> list[Claim]:
    """Claim each refund from its own thread, all released at the same moment."""
    barrier = threading.Barrier(len(refunds))

    def claim(index: int) -> Claim:
        barrier.wait()
        return journal.claim(refunds[index], owner=f"thread-{index}", now=now)

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

    claim = journal.claim(new, owner="A", lease_seconds=30, now=T0)

    assert claim.outcome is NEW
    entry = _entry(claim)
    assert entry == journal.get("testpay", "R-1")
    assert attrs.asdict(new).items() <= attrs.asdict(entry).items()
    assert (entry.state, entry.owner, entry.attempts) == (S.SUBMITTING, "A", 1)
    assert entry.lease_until == T0 + timedelta(seconds=30)
    assert entry.created_at == entry.updated_at == T0
    assert entry.created_at.tzinfo is not None and entry.created_at.utcoffset() == timedelta(0)
    assert (entry.provider_refund_id, entry.message, entry.raw) == (None, None, {})


def test_abandon_frees_an_unsent_refund_id_only(backend: Any, make_refund: MakeRefund) -> None:
    """A refund whose request never left may be forgotten by its own first attempt;
    anything that may have been sent stays."""
    journal = backend.open()
    new = make_refund()
    journal.claim(new, owner="A", lease_seconds=30, now=T0)
    assert journal.abandon("testpay", "R-1", owner="B") is False
    assert journal.abandon("testpay", "R-1", owner="A") is True
    assert journal.get("testpay", "R-1") is None
    assert journal.claim(new, owner="C", now=T0).outcome is NEW

    journal.record("testpay", "R-1", owner="C", state=S.UNKNOWN, now=T0)
    taken = journal.claim(new, owner="D", now=T0)
    assert taken.outcome is TAKEOVER
    assert journal.abandon("testpay", "R-1", owner="D") is False, "a taken-over row may be sent"
    assert _entry(taken) == journal.get("testpay", "R-1")


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
    assert (entry.owner, entry.lease_until, entry.attempts) == (None, None, 1)


@pytest.mark.parametrize("state", [S.PENDING, S.FAILED])
def test_pending_and_failed_rows_are_done(
    backend: Any, make_refund: MakeRefund, state: JournalState
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", state=state, error_code="E1")

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
    first = _entry(journal.claim(make_refund(), owner="A", lease_seconds=60, now=T0))

    later = T0 + timedelta(seconds=59)
    busy = [journal.claim(make_refund(), owner=owner, now=later) for owner in ("B", "A")]

    assert [claim.outcome for claim in busy] == [BUSY, BUSY]
    assert all(claim.entry == first for claim in busy)


def test_expired_lease_is_taken_over_by_exactly_one_caller(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="crashed", lease_seconds=60, now=T0)

    after = T0 + timedelta(seconds=61)
    claims = [journal.claim(make_refund(), owner=o, lease_seconds=30, now=after) for o in "BC"]

    assert [claim.outcome for claim in claims] == [TAKEOVER, BUSY]
    taken = _entry(claims[0])
    assert (taken.state, taken.owner, taken.attempts) == (S.SUBMITTING, "B", 2)
    assert taken.lease_until == after + timedelta(seconds=30)
    assert taken.updated_at == after and taken.created_at == T0
    assert claims[1].entry == taken


def test_unknown_row_is_taken_over_once_then_settled(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", state=S.UNKNOWN, message="read timeout")

    takeover = journal.claim(make_refund(), owner="B")
    again = journal.claim(make_refund(), owner="C")
    journal.record("testpay", "R-1", owner="B", state=S.SUCCEEDED, provider_refund_id="GW-1")
    done = journal.claim(make_refund(), owner="C")

    assert (takeover.outcome, _entry(takeover).state, _entry(takeover).owner) == (
        TAKEOVER,
        S.UNKNOWN,
        "B",
    )
    assert _entry(takeover).attempts == 2
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


def test_sixteen_threads_taking_over_one_stale_row_get_one_takeover(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="crashed", now=T0)

    claims = _claim_together(journal, [make_refund()] * 16, now=T0 + timedelta(minutes=5))

    assert Counter(claim.outcome for claim in claims) == {TAKEOVER: 1, BUSY: 15}
    assert _entry(journal.claim(make_refund(), owner="late")).attempts == 2


_CHILD = """
import json, sys
from refundcore.journal import NewRefund, open_journal

url, owner, refunds = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
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
    refunds = [attrs.asdict(make_refund(refund_id=f"R-{i}")) for i in range(10)]
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
        journal.record("testpay", "R-1", owner="A", state=state)

    claim = journal.claim(
        make_refund(refund_id="R-2", amount="40.00", original_amount="100.00"), owner="B"
    )

    assert (claim.outcome, claim.refunded) == (OVER_LIMIT, "70.00")


def test_failed_refunds_do_not_count_toward_the_limit(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(amount="70.00", original_amount="100.00"), owner="A")
    journal.record("testpay", "R-1", owner="A", state=S.FAILED)

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
    void = make_refund(
        refund_id="V-1", operation="void", amount=None, currency=None, original_amount="100.00"
    )
    assert journal.claim(void, owner="A").outcome is OVER_LIMIT

    journal.record("testpay", "R-1", owner="A", state=S.FAILED)
    assert journal.claim(void, owner="A").outcome is NEW
    refund = make_refund(refund_id="R-2", amount="0.01", original_amount="100.00")
    assert journal.claim(refund, owner="A").refunded == "100.00"


def test_committed_refunds_are_a_payments_rows_that_took_or_may_take_money(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal: Journal = backend.open()
    for refund_id in ("R-1", "R-2", "R-3", "R-4"):
        journal.claim(make_refund(refund_id=refund_id), owner="A")
    journal.record("testpay", "R-2", owner="A", state=S.FAILED)
    journal.record("testpay", "R-3", owner="A", state=S.SUCCEEDED)
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
    committed = sum(Decimal(entry.amount or 0) for entry in journal.entries())
    assert committed == Decimal("100.00")


# -- recording outcomes -------------------------------------------------------------


def test_record_refuses_a_caller_without_the_live_lease(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A", now=T0)

    with pytest.raises(JournalError, match=r"leased by another owner.*'B' may not record"):
        journal.record("testpay", "R-1", owner="B", state=S.FAILED, now=T0)
    assert _entry(journal.claim(make_refund(), owner="C", now=T0)).state is S.SUBMITTING

    # Once the lease has expired (and nobody took over), a late owner may still report.
    late = journal.record("testpay", "R-1", owner="B", state=S.FAILED, now=T0 + timedelta(hours=1))
    assert late.state is S.FAILED


@pytest.mark.parametrize("raw", [None, {"status": "ok", "amount": "1.00", "n": [1, 2]}])
def test_record_of_the_claimants_own_send_stores_and_returns_the_row(
    backend: Any, make_refund: MakeRefund, raw: dict[str, Any] | None
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A", now=T0)

    entry = journal.record(
        "testpay",
        "R-1",
        owner="A",
        state=S.SUCCEEDED,
        provider_refund_id="GW-1",
        message="done",
        error_code="E0",
        http_status=200,
        raw=raw,
        now=T0 + timedelta(seconds=2),
    )

    assert entry == journal.get("testpay", "R-1")
    assert (entry.state, entry.provider_refund_id, entry.message) == (S.SUCCEEDED, "GW-1", "done")
    assert (entry.error_code, entry.http_status, entry.raw) == ("E0", 200, raw or {})
    assert (entry.owner, entry.lease_until, entry.attempts) == (None, None, 1)
    assert (entry.created_at, entry.updated_at) == (T0, T0 + timedelta(seconds=2))


# One outcome at a time is how a client records what it has just sent.
@pytest.mark.parametrize("together", [True, False], ids=["together", "one-by-one"])
def test_record_many_stores_each_outcome_as_record_would(
    backend: Any, make_refund: MakeRefund, together: bool
) -> None:
    journal = backend.open()
    outcomes = [
        ResultRecord("testpay", "1", "A1", S.SUCCEEDED, "GW-1", "ok", None, 200, {"n": 1}),
        ResultRecord("testpay", "2", "A2", "FAILED", None, "refused", "E7", 402),
        ResultRecord("testpay", "3", "A3", S.UNKNOWN, message="read timeout"),
        ResultRecord("testpay", "4", "A4", S.PENDING, "GW-4", raw={"queued": True}),
    ]
    for outcome in outcomes:
        for prefix in ("M-", "R-"):
            refund = make_refund(refund_id=prefix + outcome.refund_id)
            journal.claim(refund, owner=outcome.owner, now=T0)
    later = T0 + timedelta(seconds=3)

    many = [attrs.evolve(outcome, refund_id=f"M-{outcome.refund_id}") for outcome in outcomes]
    for part in [many] if together else [[outcome] for outcome in many]:
        journal.record_many(part, now=later)
    for outcome in outcomes:
        fields = attrs.asdict(outcome, recurse=False)
        journal.record(**{**fields, "refund_id": f"R-{outcome.refund_id}"}, now=later)

    rows = {entry.refund_id: entry for entry in journal.entries()}
    for outcome in outcomes:
        many, one = rows[f"M-{outcome.refund_id}"], rows[f"R-{outcome.refund_id}"]
        assert attrs.evolve(many, refund_id=one.refund_id) == one
        assert many.state is outcome.state and many.updated_at == later


def test_record_many_leaves_rows_it_does_not_own_to_records_rules(
    backend: Any, make_refund: MakeRefund
) -> None:
    """A callback that came first, an owner whose lease was taken over, a row that is
    not there: each is decided as :meth:`record` decides it, the rest still stored."""
    journal = backend.open()
    for n in (1, 2, 3):
        journal.claim(make_refund(refund_id=f"R-{n}"), owner="A", now=T0)
    journal.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-1", now=T0)
    taken = T0 + timedelta(hours=1)
    assert journal.claim(make_refund(refund_id="R-2"), owner="B", now=taken).outcome is TAKEOVER

    journal.record_many(
        [
            ResultRecord("testpay", "R-1", "A", S.FAILED, message="late"),
            ResultRecord("testpay", "R-3", "A", S.SUCCEEDED, "GW-3"),
        ],
        now=taken,
    )
    with pytest.raises(JournalError, match=r"leased by another owner.*'A' may not record"):
        journal.record_many([ResultRecord("testpay", "R-2", "A", S.FAILED)], now=taken)
    with pytest.raises(JournalError, match="has no refund 'R-404'"):
        journal.record_many([ResultRecord("testpay", "R-404", "A", S.FAILED)], now=taken)

    states = {entry.refund_id: entry.state for entry in journal.entries()}
    assert states == {"R-1": S.SUCCEEDED, "R-2": S.SUBMITTING, "R-3": S.SUCCEEDED}


def test_record_many_takes_outcomes_only(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    with pytest.raises(ValueError, match="record takes"):
        journal.record_many(
            [
                ResultRecord("testpay", "R-1", "A", S.SUCCEEDED),
                ResultRecord("testpay", "R-1", "A", S.SUBMITTING),
            ]
        )
    assert _entry(journal.claim(make_refund(), owner="B")).state is S.SUBMITTING
    journal.record_many([])


def test_record_never_changes_a_final_row(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    final = journal.record("testpay", "R-1", owner="A", state=S.SUCCEEDED, message="ok")

    for state in (S.FAILED, S.PENDING, S.UNKNOWN, S.SUCCEEDED):
        again = journal.record("testpay", "R-1", owner="Z", state=state, message="late")
        assert again == final


def test_record_keeps_pending_when_a_reconcile_learns_nothing(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", state=S.PENDING, provider_refund_id="GW-1")
    journal.claim(make_refund(), owner="A")  # DONE: PENDING is not re-sent

    entry = journal.record("testpay", "R-1", owner="B", state=S.UNKNOWN, message="HTTP 503")

    assert (entry.state, entry.provider_refund_id, entry.message) == (S.PENDING, "GW-1", None)


def test_record_needs_an_existing_row_and_an_outcome(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    with pytest.raises(JournalError, match="has no refund 'R-404'"):
        journal.record("testpay", "R-404", owner="A", state=S.FAILED)
    journal.claim(make_refund(), owner="A")
    with pytest.raises(ValueError, match="record takes"):
        journal.record("testpay", "R-1", owner="A", state=S.SUBMITTING)


# -- callbacks ------------------------------------------------------------------------


@pytest.fixture
def pending(backend: Any, make_refund: MakeRefund) -> Journal:
    """A journal holding R-1, PENDING at the gateway as GW-1."""
    journal: Journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", state=S.PENDING, provider_refund_id="GW-1")
    return journal


def test_callback_settles_a_pending_refund(pending: Journal) -> None:
    entry = pending.apply_notification(
        "testpay", state=S.SUCCEEDED, refund_id="R-1", raw={"event": "refund.succeeded"}
    )
    assert entry is not None
    assert (entry.state, entry.raw) == (S.SUCCEEDED, {"event": "refund.succeeded"})
    assert pending.get("testpay", "R-1") == entry


def test_callback_finds_the_row_by_provider_refund_id(pending: Journal) -> None:
    entry = pending.apply_notification("testpay", state=S.FAILED, provider_refund_id="GW-1")
    assert entry is not None and (entry.refund_id, entry.state) == ("R-1", S.FAILED)
    unknown_id = pending.apply_notification(
        "testpay", state=S.FAILED, refund_id="R-404", provider_refund_id="GW-1"
    )
    assert unknown_id == entry


def test_callback_for_no_known_refund_returns_none(pending: Journal) -> None:
    assert pending.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-404") is None
    assert pending.apply_notification("otherpay", state=S.SUCCEEDED, refund_id="R-1") is None
    assert pending.apply_notification("testpay", state=S.SUCCEEDED) is None


def test_repeated_callback_changes_nothing(pending: Journal) -> None:
    first = pending.apply_notification("testpay", state=S.SUCCEEDED, refund_id="R-1")
    again = pending.apply_notification(
        "testpay", state=S.SUCCEEDED, refund_id="R-1", raw={"delivery": 2}
    )
    assert again == first


@pytest.mark.parametrize(
    ("settled", "late"),
    [
        (S.SUCCEEDED, S.PENDING),
        (S.FAILED, S.SUCCEEDED),
        (S.SUCCEEDED, S.FAILED),
        (S.SUCCEEDED, S.UNKNOWN),
    ],
)
def test_late_callback_never_overwrites_a_final_state(
    pending: Journal, settled: JournalState, late: JournalState
) -> None:
    final = pending.apply_notification("testpay", state=settled, refund_id="R-1")
    after = pending.apply_notification("testpay", state=late, refund_id="R-1", raw={"x": 1})
    assert after == final
    assert after is not None and after.state is settled


def test_repeated_pending_callback_changes_nothing(pending: Journal) -> None:
    before = pending.get("testpay", "R-1")
    assert pending.apply_notification("testpay", state=S.PENDING, refund_id="R-1") == before


def test_callback_can_arrive_before_the_reply(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")

    early = journal.apply_notification(
        "testpay", state=S.SUCCEEDED, refund_id="R-1", provider_refund_id="GW-7"
    )
    reply = journal.record("testpay", "R-1", owner="A", state=S.PENDING, provider_refund_id="GW-7")

    assert early is not None
    assert (early.state, early.provider_refund_id, early.owner, early.lease_until) == (
        S.SUCCEEDED,
        "GW-7",
        None,
        None,
    )
    assert reply == early


def test_pending_callback_on_a_submitting_row_keeps_the_senders_lease(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    sent = _entry(journal.claim(make_refund(), owner="A"))

    entry = journal.apply_notification(
        "testpay", state=S.PENDING, refund_id="R-1", provider_refund_id="GW-1"
    )

    assert entry is not None
    assert (entry.state, entry.provider_refund_id) == (S.PENDING, "GW-1")
    assert (entry.owner, entry.lease_until) == (sent.owner, sent.lease_until)
    final = journal.record("testpay", "R-1", owner="A", state=S.SUCCEEDED)
    assert (final.state, final.owner, final.provider_refund_id) == (S.SUCCEEDED, None, "GW-1")


def test_callback_fills_a_missing_provider_refund_id(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    journal.claim(make_refund(), owner="A")
    journal.record("testpay", "R-1", owner="A", state=S.SUCCEEDED)

    entry = journal.apply_notification(
        "testpay", state=S.SUCCEEDED, refund_id="R-1", provider_refund_id="GW-3"
    )
    overwrite = journal.apply_notification(
        "testpay", state=S.SUCCEEDED, refund_id="R-1", provider_refund_id="GW-other"
    )

    assert entry is not None and (entry.state, entry.provider_refund_id) == (S.SUCCEEDED, "GW-3")
    assert overwrite == entry
    assert journal.find_by_provider_refund_id("testpay", "GW-3") == entry
    assert journal.find_by_provider_refund_id("testpay", "GW-other") is None


_REPORTS = st.lists(
    st.tuples(st.sampled_from(["callback", "record"]), st.sampled_from(list(JournalState))),
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
    rank = {S.SUBMITTING: 0, S.UNKNOWN: 1, S.PENDING: 2, S.SUCCEEDED: 3, S.FAILED: 3}
    previous = S.SUBMITTING
    for kind, state in reports:
        if kind == "callback":
            journal.apply_notification("testpay", state=state, refund_id=refund_id)
        elif state is not S.SUBMITTING:
            journal.record("testpay", refund_id, owner="A", state=state)
        current = _entry_state(journal, refund_id)
        assert rank[current] >= rank[previous]
        assert current is previous or not previous.is_final
        previous = current
    journal.close()


def _entry_state(journal: Journal, refund_id: str) -> JournalState:
    entry = journal.get("testpay", refund_id)
    assert entry is not None
    return entry.state


# -- reading ------------------------------------------------------------------------


def test_entries_lists_rows_in_creation_order(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    states = {"R-a": S.SUCCEEDED, "R-b": S.PENDING, "R-c": None, "R-d": S.UNKNOWN, "R-e": S.FAILED}
    for minute, (refund_id, state) in enumerate(states.items()):
        journal.claim(
            make_refund(refund_id=refund_id), owner="A", now=T0 + timedelta(minutes=minute)
        )
        if state is not None:
            journal.record("testpay", refund_id, owner="A", state=state)
    journal.claim(make_refund(provider="otherpay"), owner="A", now=T0 - timedelta(days=1))

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

    entry = journal.record("testpay", "R-1", owner="A", state=S.SUCCEEDED, raw=raw)

    assert entry.raw == {"amount": "10.00", "list": [1, "two", None], "ok": True, "name": "日本"}


def test_timestamps_are_utc(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    tokyo = T0.astimezone(timezone(timedelta(hours=9)))

    entry = _entry(journal.claim(make_refund(), owner="A", now=tokyo))

    assert entry.created_at == T0 and entry.created_at.utcoffset() == timedelta(0)
    with pytest.raises(ValueError, match="timezone-aware"):
        journal.claim(make_refund(), owner="A", now=datetime(2030, 1, 1))


# -- lifecycle and schema -----------------------------------------------------------


def test_journal_survives_reopening(backend: Any, make_refund: MakeRefund) -> None:
    with backend.open() as journal:
        journal.claim(make_refund(), owner="A")
        journal.record("testpay", "R-1", owner="A", state=S.PENDING, provider_refund_id="GW-1")

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
    assert backend.sql("SELECT version FROM refundcore_schema") == [(3,)]


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
