"""The journal's batch rows (schema v2), run against every backend: opening a batch,
claiming chunks under leases, finishing, releasing, reopening what an earlier run left
unsettled, and workers that claim at the same moment never getting the same row; then
two `refundcore batch` processes splitting one file on a PostgreSQL journal."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from refundcore import Money
from refundcore.errors import JournalError
from refundcore.journal import (
    BatchCounts,
    BatchDone,
    BatchItem,
    BatchItemState,
    EventKind,
    Journal,
    JournalState,
    NewRefund,
)
from refundcore.sandbox import Fault, SandboxRun

MakeRefund = Callable[..., NewRefund]

#: A lease short enough to wait out: leases run on the journal's clock, not a test's.
LEASE = 0.6
#: A renewed lease no test outlasts, however loaded the machine.
RENEWED = 120.0
OPEN, CLAIMED, DONE = BatchItemState.OPEN, BatchItemState.CLAIMED, BatchItemState.DONE


def items(count: int, provider: str = "testpay") -> list[BatchItem]:
    return [
        BatchItem(line=line, provider=provider, refund_id=f"R-{line}")
        for line in range(2, count + 2)
    ]


def wait_for_the_journal_clock(journal: Journal, moment: datetime, timeout: float = 60) -> None:
    """Return once the journal's clock, which leases run on, is past ``moment``."""
    deadline = time.monotonic() + timeout
    while journal.now() <= moment:
        assert time.monotonic() < deadline, f"the journal's clock never passed {moment}"
        time.sleep(0.02)


def states(journal: Journal, batch_id: str = "B") -> dict[int, BatchItemState]:
    return {entry.line: entry.state for entry in journal.batch_entries(batch_id)}


def test_opening_a_batch_offers_its_rows_once(backend: Any) -> None:
    journal = backend.open()
    before = journal.now()
    journal.open_batch("B", items(3))
    journal.open_batch("B", items(3))

    entries = journal.batch_entries("B")

    assert [(e.line, e.provider, e.refund_id, e.state) for e in entries] == [
        (2, "testpay", "R-2", OPEN),
        (3, "testpay", "R-3", OPEN),
        (4, "testpay", "R-4", OPEN),
    ]
    assert entries[0].owner is None and entries[0].lease_until is None
    assert before <= entries[0].updated_at <= journal.now() and entries[0].refund is None
    assert journal.count_batch("B") == BatchCounts(open=3, claimed=0, done=0)
    assert journal.batch_entries("other") == []


def test_a_large_batch_opens_from_a_stream_and_is_read_a_page_at_a_time(backend: Any) -> None:
    journal = backend.open()
    stream = (BatchItem(line, "testpay", f"R-{line}") for line in range(1, 1002))
    journal.open_batch("B", stream)

    first = journal.batch_entries("B", limit=400)
    rest = journal.batch_entries("B", after_line=first[-1].line)

    assert [e.line for e in first] == list(range(1, 401))
    assert [e.line for e in rest] == list(range(401, 1002))
    assert journal.batch_entries("B", after_line=1001) == []
    assert journal.count_batch("B") == BatchCounts(open=1001, claimed=0, done=0)
    with pytest.raises(ValueError, match="limit"):
        journal.batch_entries("B", limit=0)


def test_rows_added_later_join_the_batch(backend: Any) -> None:
    journal = backend.open()
    journal.open_batch("B", items(2))
    journal.claim_batch("B", owner="A", limit=1)
    journal.open_batch("B", items(4))
    assert states(journal) == {2: CLAIMED, 3: OPEN, 4: OPEN, 5: OPEN}
    # Another worker that found other rows valid: as many rows, not the same ones.
    journal.open_batch("B", [BatchItem(line=9, provider="testpay", refund_id="R-9")])
    assert sorted(states(journal)) == [2, 3, 4, 5, 9]


def test_claims_take_the_lowest_open_lines_and_lease_them(backend: Any) -> None:
    journal = backend.open()
    journal.open_batch("B", items(5))

    before = journal.now()
    first = journal.claim_batch("B", owner="A", limit=2, lease_seconds=30)
    second = journal.claim_batch("B", owner="B", limit=2, lease_seconds=30)
    third = journal.claim_batch("B", owner="C", limit=9, lease_seconds=30)

    assert (first, second, third) == ([2, 3], [4, 5], [6])
    assert journal.claim_batch("B", owner="D", limit=9) == []
    entry = journal.batch_entries("B")[0]
    assert (entry.state, entry.owner) == (CLAIMED, "A")
    assert entry.lease_until is not None
    lease = entry.lease_until - before
    assert timedelta(seconds=30) <= lease <= timedelta(seconds=30) + (journal.now() - before)
    assert journal.count_batch("B") == BatchCounts(open=0, claimed=5, done=0)


def test_an_expired_lease_lets_another_worker_take_the_row_first(backend: Any) -> None:
    journal = backend.open()
    journal.open_batch("B", items(4))
    journal.claim_batch("B", owner="dead", limit=2, lease_seconds=LEASE)

    assert journal.claim_batch("B", owner="A", limit=1) == [4]
    time.sleep(LEASE)
    taken = journal.claim_batch("B", owner="A", limit=3)

    assert taken == [2, 3, 5]
    assert {e.owner for e in journal.batch_entries("B")} == {"A"}


def test_renewing_keeps_the_rows_of_a_live_worker(backend: Any) -> None:
    journal = backend.open()
    journal.open_batch("B", items(3))
    journal.claim_batch("B", owner="A", limit=2, lease_seconds=LEASE)
    first_lease = {e.line: e.lease_until for e in journal.batch_entries("B")}

    # Renewed for far longer than the first lease: however slowly a loaded machine
    # gets to the claim below, it comes past the first lease and within this one.
    held = journal.renew_batch("B", owner="A", lease_seconds=RENEWED)
    wait_for_the_journal_clock(journal, max(t for t in first_lease.values() if t))

    assert held == 2
    assert journal.claim_batch("B", owner="B", limit=5) == [4]
    assert journal.renew_batch("B", owner="nobody") == 0


def test_finishing_records_outcomes_only_for_rows_the_owner_holds(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    journal.open_batch("B", items(3))
    journal.claim_batch("B", owner="A", limit=2)
    journal.claim(make_refund(refund_id="R-2"), owner="send-1")
    journal.record("testpay", "R-2", owner="send-1", attempt=1, state=JournalState.SUCCEEDED)

    recorded = journal.finish_batch(
        "B",
        owner="A",
        done=[
            BatchDone(2, "SUCCEEDED"),
            BatchDone(3, "ERROR", error_code="TransportError", message="connection refused"),
            BatchDone(4, "SUCCEEDED"),  # never claimed by A
        ],
    )

    assert recorded == 2
    two, three, four = journal.batch_entries("B")
    assert (two.state, two.outcome, two.owner, two.lease_until) == (DONE, "SUCCEEDED", None, None)
    assert two.refund is not None and two.refund.state is JournalState.SUCCEEDED
    assert (three.outcome, three.error_code, three.message) == (
        "ERROR",
        "TransportError",
        "connection refused",
    )
    assert three.refund is None
    assert (four.state, four.outcome) == (OPEN, None)
    assert journal.finish_batch("B", owner="B", done=[BatchDone(2, "FAILED")]) == 0
    assert journal.count_batch("B") == BatchCounts(open=1, claimed=0, done=2)


def test_a_row_taken_over_is_finished_by_its_new_owner_only(backend: Any) -> None:
    journal = backend.open()
    journal.open_batch("B", items(1))
    journal.claim_batch("B", owner="slow", limit=1, lease_seconds=LEASE)
    time.sleep(LEASE)
    assert journal.claim_batch("B", owner="fast", limit=1) == [2]

    assert journal.finish_batch("B", owner="slow", done=[BatchDone(2, "UNKNOWN")]) == 0
    assert journal.finish_batch("B", owner="fast", done=[BatchDone(2, "SUCCEEDED")]) == 1
    assert journal.batch_entries("B")[0].outcome == "SUCCEEDED"


def test_releasing_gives_the_owners_rows_back(backend: Any) -> None:
    journal = backend.open()
    journal.open_batch("B", items(4))
    journal.claim_batch("B", owner="A", limit=2)
    journal.claim_batch("B", owner="B", limit=1)

    assert journal.release_batch("B", owner="A") == 2

    assert states(journal) == {2: OPEN, 3: OPEN, 4: CLAIMED, 5: OPEN}
    assert journal.claim_batch("B", owner="C", limit=9) == [2, 3, 5]


def test_a_new_run_reopens_only_rows_left_unsettled_before_it(backend: Any) -> None:
    journal = backend.open()
    outcomes = ["SUCCEEDED", "FAILED", "PENDING", "UNKNOWN", "ERROR", "INVALID"]
    journal.open_batch("B", items(len(outcomes) + 1))
    journal.claim_batch("B", owner="A", limit=99)
    journal.finish_batch(
        "B",
        owner="A",
        done=[BatchDone(line, outcome) for line, outcome in enumerate(outcomes, start=2)],
    )
    assert journal.count_batch("B") == BatchCounts(open=0, claimed=1, done=6)
    time.sleep(0.01)  # the journal's clock moves on between the runs

    journal.open_batch("B", items(len(outcomes) + 1))

    after = {e.line: (e.state, e.outcome) for e in journal.batch_entries("B")}
    assert after == {
        2: (DONE, "SUCCEEDED"),
        3: (DONE, "FAILED"),
        4: (DONE, "PENDING"),
        5: (OPEN, None),
        6: (OPEN, None),
        7: (OPEN, None),
        8: (CLAIMED, None),
    }


def test_batches_are_independent(backend: Any) -> None:
    journal = backend.open()
    journal.open_batch("B1", items(2))
    journal.open_batch("B2", items(2))
    assert journal.claim_batch("B1", owner="A", limit=9) == [2, 3]
    assert journal.claim_batch("B2", owner="A", limit=9) == [2, 3]
    assert journal.release_batch("B1", owner="A") == 2
    assert journal.count_batch("B2") == BatchCounts(open=0, claimed=2, done=0)


def test_arguments_are_checked(backend: Any) -> None:
    journal = backend.open()
    with pytest.raises(ValueError, match="limit"):
        journal.claim_batch("B", owner="A", limit=0)
    with pytest.raises(ValueError, match="lease_seconds"):
        journal.claim_batch("B", owner="A", limit=1, lease_seconds=0)
    with pytest.raises(ValueError, match="lease_seconds"):
        journal.renew_batch("B", owner="A", lease_seconds=-1)


def test_a_large_batch_opens_in_one_go(backend: Any) -> None:
    journal = backend.open()
    journal.open_batch("B", items(1000))
    assert journal.count_batch("B") == BatchCounts(open=1000, claimed=0, done=0)
    assert journal.claim_batch("B", owner="A", limit=1000)[-1] == 1001


def test_workers_claiming_together_split_the_rows_without_overlap(backend: Any) -> None:
    """Eight workers, each with its own journal connection pool (as separate processes
    would have), claim chunks at once until nothing is left."""
    rows = 120
    opener = backend.open()
    opener.open_batch("B", items(rows))
    journals = [backend.open() for _ in range(8)]
    barrier = threading.Barrier(len(journals))

    def work(index: int) -> list[int]:
        journal = journals[index]
        barrier.wait()
        mine: list[int] = []
        while lines := journal.claim_batch("B", owner=f"w{index}", limit=3):
            mine += lines
            journal.finish_batch(
                "B", owner=f"w{index}", done=[BatchDone(line, "SUCCEEDED") for line in lines]
            )
        return mine

    with ThreadPoolExecutor(len(journals)) as pool:
        taken = list(pool.map(work, range(len(journals))))

    counted = Counter(line for lines in taken for line in lines)
    assert sorted(counted) == list(range(2, rows + 2))
    assert set(counted.values()) == {1}
    assert opener.count_batch("B") == BatchCounts(open=0, claimed=0, done=rows)


_OLD_ROW = (
    "INSERT INTO refundcore_journal (provider, refund_id, operation, payment_id, amount, "
    "currency, fingerprint, payment_key, state, raw, attempts, owner, lease_until, "
    "created_at, updated_at) VALUES ('testpay', '{refund_id}', 'refund', 'PAY-1', '10.00', "
    "'HKD', 'fp', 'payment_id=PAY-1', '{state}', '{{}}', {attempts}, NULL, NULL, "
    "'2030-01-01T12:00:00.000000+00:00', '2030-01-01T12:00:00.000000+00:00')"
)


@pytest.mark.parametrize("version", [1, 3])
def test_an_older_journal_is_upgraded_in_place(
    backend: Any, make_refund: MakeRefund, version: int
) -> None:
    journal_class = _journal_class(backend.name)
    _at_version(journal_class, backend.url, version).close()
    backend.sql(_OLD_ROW.format(refund_id="R-1", state="UNKNOWN", attempts=2))
    assert backend.sql("SELECT version FROM refundcore_schema") == [(version,)]

    upgraded = backend.open()

    assert backend.sql("SELECT version FROM refundcore_schema") == [(6,)]
    entry = upgraded.get("testpay", "R-1")
    assert entry is not None
    assert (entry.state, entry.attempt, entry.decided_by, entry.amount) == (
        JournalState.UNKNOWN,
        2,
        None,
        Money("10.00", "HKD"),
    )
    assert upgraded.history("testpay", "R-1") == []  # kept from before histories
    upgraded.open_batch("B", items(1))
    assert upgraded.batch_entries("B")[0].refund is None
    # What v4 brings works on the upgraded rows: decisions, NOT_SENT, histories.
    decided = upgraded.resolve(
        "testpay", "R-1", state=JournalState.NOT_SENT, reason="bank statement", by="ops"
    )
    assert (decided.state, decided.decided_by) == (JournalState.NOT_SENT, "ops")
    assert [event.kind.value for event in upgraded.history("testpay", "R-1")] == ["decision"]
    with pytest.raises(JournalError, match=r"schema version 6.*upgrade refundcore"):
        _at_version(journal_class, backend.url, version)


_V4_ROW = (
    "INSERT INTO refundcore_journal (provider, refund_id, operation, payment_id, amount, "
    "currency, fingerprint, payment_key, state, raw, attempt, owner, lease_until, "
    "created_at, updated_at) VALUES ('testpay', '{refund_id}', 'refund', 'PAY-1', '1.00', "
    "'HKD', 'fp', 'payment_id=PAY-1', '{state}', '{{}}', 1, NULL, NULL, "
    "'2030-01-01T12:00:00.000000+00:00', '2030-01-01T12:00:01.000000+00:00')"
)
_V4_EVENT = (
    "INSERT INTO refundcore_events (id, provider, refund_id, at, kind, attempt, state, "
    "actor, data) VALUES ({id}, 'testpay', '{refund_id}', '2030-01-01T12:00:0{id}.000000+00:00', "
    "'{kind}', 1, '{state}', 'A', '{{}}')"
)


def test_a_v4_sqlite_journal_keeps_its_rows_and_histories_when_upgraded(tmp_path: Path) -> None:
    """v5 rebuilds the SQLite tables with their checks and the partial index on unsettled
    refunds written as comparisons: the rows and their histories (whose events of
    several refunds interleave) are kept, in order, and every rule still holds."""
    from refundcore.journal.sqlite import SqliteJournal

    path = tmp_path / "journal.db"
    _at_version(SqliteJournal, f"sqlite:///{path}", 4).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        for refund_id, state in [("R-1", "UNKNOWN"), ("R-2", "SUCCEEDED")]:
            conn.execute(_V4_ROW.format(refund_id=refund_id, state=state))
        for event_id, refund_id, kind, state in [
            (1, "R-2", "claim", "SUBMITTING"),
            (2, "R-1", "claim", "SUBMITTING"),
            (3, "R-2", "answer", "SUCCEEDED"),
            (4, "R-1", "answer", "UNKNOWN"),
        ]:
            conn.execute(_V4_EVENT.format(id=event_id, refund_id=refund_id, kind=kind, state=state))

    with SqliteJournal(path) as upgraded:
        assert [entry.refund_id for entry in upgraded.entries(unsettled=True)] == ["R-1"]
        assert [event.at.second for event in upgraded.history("testpay", "R-2")] == [1, 3]
        upgraded.resolve(
            "testpay", "R-1", state=JournalState.FAILED, reason="bank statement", by="ops"
        )
        assert [event.kind.value for event in upgraded.history("testpay", "R-1")] == [
            "claim",
            "answer",
            "decision",
        ]
        assert upgraded.entries(unsettled=True) == []

    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM refundcore_schema").fetchall() == [(6,)]
        schema = [sql for (sql,) in conn.execute("SELECT sql FROM sqlite_master") if sql]
        for refused in (
            "UPDATE refundcore_journal SET state = 'SETTLED'",
            "INSERT INTO refundcore_events (provider, refund_id, at, kind, attempt, data) "
            "VALUES ('testpay', 'R-1', 'now', 'rumour', 1, '{}')",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint failed"):
                conn.execute(refused)
    journal_tables = [sql for sql in schema if "refundcore_journal" in sql or "events" in sql]
    assert journal_tables and not any(" IN (" in sql for sql in journal_tables)


_V5_ROW = (
    "INSERT INTO refundcore_journal (provider, refund_id, operation, payment_id, amount, "
    "currency, fingerprint, payment_key, state, provider_refund_id, raw, attempt, owner, "
    "lease_until, created_at, updated_at) VALUES ('testpay', '{refund_id}', 'refund', "
    "'PAY-1', '1.00', 'HKD', 'fp', 'payment_id=PAY-1', 'SUCCEEDED', {provider_refund_id}, "
    "'{{}}', 1, NULL, NULL, '2030-01-01T12:00:00.000000+00:00', "
    "'2030-01-01T12:00:01.000000+00:00')"
)
_V5_EVENT = (
    "INSERT INTO refundcore_events (provider, refund_id, at, kind, attempt, state, actor, "
    "data) VALUES ('testpay', '{refund_id}', '2030-01-01T12:00:{second:02d}.000000+00:00', "
    "'{kind}', 1, '{state}', NULL, '{data}')"
)
# A v5 history, two refunds' events interleaved: R-1's callback about GW-1 delivered
# three times (each kept whole, as v5 kept them), then a FAILED contradicting it; R-2's
# callback without a gateway refund id.
_V5_HISTORY = [
    ("R-1", "claim", "SUBMITTING", {"lease_seconds": 30}),
    ("R-2", "claim", "SUBMITTING", {"lease_seconds": 30}),
    ("R-1", "answer", "SUCCEEDED", {"provider_refund_id": "GW-1", "sent": True}),
    ("R-1", "callback", "SUCCEEDED", {"provider_refund_id": "GW-1", "applied": False}),
    ("R-2", "callback", "SUCCEEDED", {"applied": True}),
    ("R-1", "callback", "SUCCEEDED", {"provider_refund_id": "GW-1", "duplicate": True}),
    ("R-1", "callback", "SUCCEEDED", {"provider_refund_id": "GW-1", "duplicate": True}),
    ("R-1", "callback", "FAILED", {"provider_refund_id": "GW-1", "applied": False}),
    ("R-1", "contradiction", "FAILED", {"provider_refund_id": "GW-1", "held": "SUCCEEDED"}),
]


def test_a_v5_journal_knows_the_callbacks_it_kept_once_upgraded(backend: Any) -> None:
    """v6 gives the callbacks a journal already keeps the keys their repeats are found
    by: a callback received before the upgrade is still a duplicate after it (never
    contradicting a second time), is kept once more, and from then on only counted;
    the histories are kept as they were."""
    _at_version(_journal_class(backend.name), backend.url, 5).close()
    backend.sql(_V5_ROW.format(refund_id="R-1", provider_refund_id="'GW-1'"))
    backend.sql(_V5_ROW.format(refund_id="R-2", provider_refund_id="NULL"))
    for second, (refund_id, kind, state, data) in enumerate(_V5_HISTORY, start=1):
        event = {"refund_id": refund_id, "kind": kind, "state": state, "data": json.dumps(data)}
        backend.sql(_V5_EVENT.format(second=second, **event))

    upgraded = backend.open()
    assert backend.sql("SELECT version FROM refundcore_schema") == [(6,)]
    kept = upgraded.history("testpay", "R-1")
    assert [(e.kind.value, e.state and e.state.value, e.at.second, e.times) for e in kept] == [
        ("claim", "SUBMITTING", 1, 1),
        ("send", None, 3, 1),
        ("answer", "SUCCEEDED", 3, 1),
        ("callback", "SUCCEEDED", 4, 1),
        ("callback", "SUCCEEDED", 6, 1),
        ("callback", "SUCCEEDED", 7, 1),
        ("callback", "FAILED", 8, 1),
        ("contradiction", "FAILED", 9, 1),
    ]

    def heard(refund_id: str, state: JournalState, provider_refund_id: str | None) -> Any:
        applied = upgraded.apply_notification(
            "testpay", state=state, refund_id=refund_id, provider_refund_id=provider_refund_id
        )
        assert applied is not None
        return (applied.duplicate, applied.changed, applied.contradiction)

    S = JournalState
    assert heard("R-1", S.SUCCEEDED, "GW-1") == (True, False, False)
    assert heard("R-1", S.SUCCEEDED, "GW-1") == (True, False, False)
    assert heard("R-1", S.FAILED, "GW-1") == (True, False, True)
    assert heard("R-1", S.FAILED, "GW-1") == (True, False, True)
    assert heard("R-2", S.SUCCEEDED, None) == (True, False, False)
    assert heard("R-2", S.PENDING, None) == (False, False, False)

    after = upgraded.history("testpay", "R-1")
    assert after[: len(kept)] == kept
    assert [(e.kind, e.state, e.data.get("duplicate"), e.times) for e in after[len(kept) :]] == [
        (EventKind.CALLBACK, S.SUCCEEDED, True, 2),
        (EventKind.CALLBACK, S.FAILED, True, 2),
    ]
    assert [(e.state, e.times) for e in upgraded.history("testpay", "R-2")[1:]] == [
        (S.SUCCEEDED, 1),
        (S.SUCCEEDED, 1),
        (S.PENDING, 1),
    ]


def _journal_class(name: str) -> type[Journal]:
    if name == "sqlite":
        from refundcore.journal.sqlite import SqliteJournal

        return SqliteJournal
    from refundcore.journal.postgres import PostgresJournal

    return PostgresJournal


def _at_version(journal_class: type[Any], url: str, version: int) -> Journal:
    """The journal as a refundcore that knows only schema ``version`` opens it."""

    class Older(journal_class):  # type: ignore[misc,valid-type]
        _migrations = journal_class._migrations[:version]

    if url.startswith("sqlite:///"):
        return Older(url[len("sqlite:///") :])  # type: ignore[no-any-return]
    return Older(url)  # type: ignore[no-any-return]


# -- two `refundcore batch` processes on one PostgreSQL journal ---------------------------


def test_two_batch_processes_on_one_postgres_journal_split_the_rows(
    installed: Path, tmp_path: Path, postgres_url: str
) -> None:
    """The same file, two processes started together, a slow gateway: every row is done
    by exactly one of them, and each one's report still covers every row."""
    rows = 16
    with SandboxRun("testpay", read_timeout=5) as run:
        payments = [run.emulator.seed_payment(Money("100", "HKD")) for _ in range(rows)]
        config = run.emulator.client_config(run.server.base_url)
        toml = tmp_path / "refundcore.toml"
        toml.write_text(
            "[providers.testpay]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items())
        )
        batch = tmp_path / "refunds.csv"
        batch.write_text(
            "provider,payment_id,amount,currency\n"
            + "".join(f"testpay,{p.payment_id},10.00,HKD\n" for p in payments)
        )
        run.server.inject("/v1/refunds", Fault(delay=0.4))
        env = {**os.environ, "PYTHONPATH": str(installed), "REFUNDCORE_PLUGINS": "testpay"}
        reports = [tmp_path / f"report-{index}.json" for index in range(2)]
        children = [
            subprocess.Popen(
                [
                    sys.executable,
                    *("-m", "refundcore", "batch", str(batch)),
                    *("--config", str(toml), "--journal", postgres_url),
                    *("--workers", "2", "--chunk", "2", "--report", str(report)),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for report in reports
        ]
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, (out, err)

        every_line = set(range(2, rows + 2))
        ran = []
        for report in reports:
            outcomes = json.loads(report.read_text())["rows"]
            assert {(o["line"], o["status"]) for o in outcomes} == {
                (line, "SUCCEEDED") for line in every_line
            }
            ran.append({o["line"] for o in outcomes if o["ran_here"]})
        assert ran[0] | ran[1] == every_line
        assert ran[0] & ran[1] == set()
        assert ran[0] and ran[1], "one process did every row"
        ledger = run.emulator.ledger
        assert [len(ledger.find_payment(payment_id=p.payment_id).refunds) for p in payments] == [  # type: ignore[union-attr]
            1
        ] * rows
        posts = [r for r in run.server.requests if r.method == "POST"]
        assert len(posts) == rows
