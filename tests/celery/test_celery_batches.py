"""Batches on Celery, with the real thing: two or more `celery worker` processes on a
Redis broker, the journal on PostgreSQL, the testpay emulator over loopback. Each
scenario ends with exactly one refund per row in the emulator's ledger, none
over-refunded, and a complete report."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from refundcore.celery import batch_report, submit_batch
from refundcore.celery.names import RECONCILE
from refundcore.cli import main
from refundcore.errors import ConfigError
from refundcore.journal import BatchItemState
from refundcore.sandbox import Fault

from .conftest import Rig, app_of

pytestmark = [pytest.mark.celery, pytest.mark.slow]


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_a_batch_submitted_from_the_cli_is_refunded_by_two_workers(
    rig: Rig, capsys: pytest.CaptureFixture[str], pool: str
) -> None:
    """With threads, and with prefork's child processes: each makes its own client
    (journal connections included) after the fork, on its first task."""
    payments = rig.payments(24)
    file = rig.write_csv(payments)
    rig.run.server.inject("/v1/refunds", Fault(delay=0.05))
    rig.start_worker("w1", pool=pool)
    rig.start_worker("w2", pool=pool)
    base = ["--config", str(rig.folder / "refundcore.toml"), "--journal", rig.journal]

    code = main(
        [
            "batch",
            str(file),
            *base,
            "--executor",
            "celery",
            "--celery-app",
            "refunds_app:app",
            "--lease",
            "4",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    submitted = json.loads(out)
    assert (submitted["rows"], submitted["enqueued"], submitted["invalid"]) == (24, 24, 0)
    batch_id = submitted["batch_id"]

    report_file = rig.folder / "report.csv"
    code = main(
        ["batch", "status", batch_id, *base, "--wait", "--json", "--report", str(report_file)]
    )
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert (code, summary["finished"], summary["total"]) == (0, True, 24), err
    assert summary["counts"]["SUCCEEDED"] == 24
    lines = report_file.read_text().splitlines()
    assert len(lines) == 25 and all(",SUCCEEDED," in line for line in lines[1:])
    rig.assert_refunded_once(payments)
    posts = [r for r in rig.run.server.requests if r.method == "POST"]
    assert len(posts) == 24
    # Which processes sent the refunds: a client's journal owner names the process
    # that made it. Prefork's children made their own (none inherited the main
    # process's); with threads the main processes did the work.
    journal = rig.client.journal
    assert journal is not None
    senders = {
        int(str(event.actor).split(":")[1])
        for entry in journal.batch_entries(batch_id)
        for event in journal.history("testpay", entry.refund_id)
        if event.actor is not None
    }
    main_processes = {worker.pid for worker in rig.workers.values()}
    if pool == "prefork":
        assert len(senders) >= 2 and not senders & main_processes, (senders, main_processes)
    else:
        assert senders <= main_processes, (senders, main_processes)


def test_the_same_batch_enqueued_twice_refunds_each_row_once(rig: Rig) -> None:
    payments = rig.payments(20)
    rows = rig.rows(payments)
    app = app_of(rig)
    rig.run.server.inject("/v1/refunds", Fault(delay=0.05))

    first = submit_batch(app, rig.client, rows, lease_seconds=4)
    again = submit_batch(app, rig.client, rows, lease_seconds=4)
    assert first.batch_id == again.batch_id and first.enqueued == again.enqueued == 20
    rig.start_worker("w1")
    rig.start_worker("w2")

    with rig.settled_report(first.batch_id) as report:
        assert report.total == 20
    rig.assert_refunded_once(payments)
    # Once finished, a third submission finds nothing left to do.
    assert submit_batch(app, rig.client, rows, lease_seconds=4).enqueued == 0


def test_a_worker_killed_mid_batch_leaves_its_rows_to_the_others(rig: Rig) -> None:
    app, payments, batch_id = rig.batch_under_way(24, delay=0.4)
    killed = rig.workers["w1"].pid
    rig.kill_worker("w1")  # SIGKILL: no goodbye, its rows claimed and its messages unacked
    journal = rig.client.journal
    assert journal is not None
    held = [
        entry.line
        for entry in journal.batch_entries(batch_id)
        if entry.state is BatchItemState.CLAIMED
        and str(entry.owner).split(":")[1:2] == [str(killed)]
    ]

    # Its messages come back once the broker's visibility timeout is over, and its rows
    # are taken over once its leases are: the sweep is not needed for those.
    deadline = time.monotonic() + 60
    while any(entry.line in held for entry in journal.batch_entries(batch_id) if not entry.outcome):
        assert time.monotonic() < deadline, rig.worker_logs()
        time.sleep(0.2)
    # The message it was taking off the queue as it died, if any, died with it: Celery's
    # Redis transport records a message as unacknowledged only once it has it. That
    # row is still OPEN, and the sweep enqueues it again (docs/celery.md, Brokers).
    app.send_task(RECONCILE, kwargs={"stale_open_seconds": 1})
    with rig.settled_report(batch_id) as report:
        assert report.total == 24
    rig.assert_refunded_once(payments)


def test_the_broker_restarted_mid_batch(rig: Rig) -> None:
    app, payments, batch_id = rig.batch_under_way(24, delay=0.3)
    rig.redis.stop()
    time.sleep(1)
    rig.redis.start()

    # A restart can lose a message: kombu's Redis transport takes one with BRPOP and
    # only then records it as unacknowledged, and a BRPOP that redis-server serves as
    # it shuts down is written to its log but its reply never reaches the worker.
    # Neither acks_late nor persistence can bring that one back; Celery beat's sweep
    # does: it enqueues again the rows nobody touched (as the next test shows for a
    # message known to be lost).
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(5):
            app.send_task(RECONCILE, kwargs={"stale_open_seconds": 10})

    sweeper = threading.Thread(target=beat, daemon=True)
    sweeper.start()
    try:
        with rig.settled_report(batch_id) as report:
            assert report.total == 24
    finally:
        stop.set()
        sweeper.join()
    rig.assert_refunded_once(payments)


def test_a_message_the_broker_lost_is_enqueued_again_by_the_sweep(rig: Rig) -> None:
    """One row's message taken off the queue before any worker saw it, as a broker
    restart can: the row stays OPEN, and the sweep (``stale_open_seconds``) enqueues
    it again; every row is refunded once."""
    import redis

    payments = rig.payments(6)
    app = app_of(rig)
    submitted = submit_batch(app, rig.client, rig.rows(payments), lease_seconds=4)
    broker = redis.Redis.from_url(rig.redis.url)
    try:
        assert broker.rpop("celery") is not None  # the next message a worker would take
    finally:
        broker.close()
    rig.start_worker("w1")
    rig.start_worker("w2")

    rig.wait_for_rows(submitted.batch_id, 5)
    time.sleep(2)
    assert rig.done(submitted.batch_id) == 5  # nothing else brings the lost row back
    app.send_task(RECONCILE, kwargs={"stale_open_seconds": 1})

    with rig.settled_report(submitted.batch_id) as report:
        assert report.total == 6
    rig.assert_refunded_once(payments)


def test_a_journal_outage_mid_batch_finishes_once_it_is_back(rig: Rig) -> None:
    _, payments, batch_id = rig.batch_under_way(24, delay=0.3)
    rig.postgres.stop()
    time.sleep(3)
    rig.postgres.start()

    with rig.settled_report(batch_id) as report:
        assert report.total == 24
    rig.assert_refunded_once(payments)


def test_the_rate_limit_holds_across_all_workers_together(rig: Rig) -> None:
    """Three workers of two threads each, a batch limited to 8 requests a second: by
    any moment, no more requests have reached the gateway than the limit allows since
    the batch was submitted, and all of them were sent.

    Only that bound is asserted: a request reaches the gateway at its slot or later,
    so a loaded machine can delay requests (and bunch them up once their slots have
    passed) but never bring one forward. Arrival spacing or an achieved rate measured
    first request to last would race the machine's load."""
    rows, rate = 40, 8.0
    app = app_of(rig)
    for name in ("w1", "w2", "w3"):
        rig.start_worker(name)
    # Warm workers (plugins loaded, connections open), as in a long-running shop.
    warm_up = submit_batch(app, rig.client, rig.rows(rig.payments(12)), lease_seconds=4)
    rig.settled_report(warm_up.batch_id).close()
    payments = rig.payments(rows)
    seen: list[float] = []
    stop = threading.Event()

    def posts() -> int:
        return len([r for r in rig.run.server.requests if r.method == "POST"])

    def sample() -> None:
        count = posts()
        while not stop.is_set():
            now = posts()
            seen.extend([time.monotonic()] * (now - count))
            count = now
            time.sleep(0.002)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        # No slot of this batch's limit can start before it exists.
        submitted_at = time.monotonic()
        submitted = submit_batch(app, rig.client, rig.rows(payments), rate=rate, lease_seconds=4)
        with rig.settled_report(submitted.batch_id) as report:
            assert report.total == rows
    finally:
        stop.set()
        sampler.join()
    rig.assert_refunded_once(payments)
    assert len(seen) >= rows
    # Slots are 1/rate apart across all workers, the first one no earlier than the
    # submission, and each request is sent once its own slot has come: so the k-th
    # request to arrive (from 0) arrives k/rate or more after submission. The sampler
    # notes an arrival after it happened, which only adds to the margin; 5 ms allow
    # for the journal's clock and the sleep being different clocks. Without the shared
    # limit, six threads send all 40 within a second and the 9th is already too early.
    early = [
        (k, round(at - submitted_at, 3))
        for k, at in enumerate(sorted(seen))
        if at - submitted_at < k / rate - 0.005
    ]
    assert not early, early


def test_a_batch_needs_a_postgresql_journal(rig: Rig, tmp_path: Path) -> None:
    from refundcore import RefundClient

    with (
        RefundClient.from_file(
            rig.folder / "refundcore.toml", journal=f"sqlite:///{tmp_path / 'j.db'}"
        ) as client,
        pytest.raises(ConfigError, match="needs a PostgreSQL journal") as refused,
    ):
        submit_batch(app_of(rig), client, rig.rows(rig.payments(1)))
    assert refused.value.field == "journal"
    assert rig.run.server.requests == []


def test_status_of_an_unknown_batch_is_refused(
    rig: Rig, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--config", str(rig.folder / "refundcore.toml"), "--journal", rig.journal]
    assert main(["batch", "status", "nope", *base]) == 2
    assert "has no batch 'nope'" in capsys.readouterr().err
    with pytest.raises(Exception, match="has no batch"):
        batch_report(rig.client, "nope")


def test_an_unknown_outcome_is_never_sent_again_but_reconciled(rig: Rig) -> None:
    """The gateway applies three refunds but the replies are lost: those rows end
    UNKNOWN, their tasks schedule a reconcile instead of sending again, and the
    reconcile's query settles them."""
    payments = rig.payments(10)
    app = app_of(rig)
    rig.run.server.inject("/v1/refunds", Fault(drop=True, times=3))
    rig.start_worker("w1")
    rig.start_worker("w2")
    submitted = submit_batch(app, rig.client, rig.rows(payments), lease_seconds=4)

    with rig.settled_report(submitted.batch_id) as report:
        assert report.total == 10
    rig.assert_refunded_once(payments)
    posts = [r for r in rig.run.server.requests if r.method == "POST"]
    assert len(posts) == 10
    journal = rig.client.journal
    assert journal is not None
    entries = journal.batch_entries(submitted.batch_id)
    reconciled = [entry for entry in entries if entry.outcome == "UNKNOWN"]
    assert len(reconciled) == 3
    assert all(entry.refund and entry.refund.state.value == "SUCCEEDED" for entry in reconciled)
