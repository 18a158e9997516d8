"""Rows whose request could not be sent, with the real thing: the gateway's port
refuses every connection (its emulator stopped), so every try ends in a
``TransportError`` (nothing left the process). The rows are retried with growing
pauses and nothing is recorded while tries remain; once the emulator answers on that
port again, each row is refunded once. When the tries run out, the row is recorded
ERROR, "not sent", and no sweep sends it again."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest

from refundcore.celery import batch_progress, submit_batch, wait_for_batch
from refundcore.celery.names import RECONCILE

from .conftest import Rig, app_of

pytestmark = [pytest.mark.celery, pytest.mark.slow]

RETRIED = "nothing was sent, batch row retried"
GIVEN_UP = "nothing was sent, batch row recorded ERROR"
JOURNAL_DOWN = "journal unavailable, batch row retried"


def _by_line(records: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    lines: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        lines[int(record["batch_line"])].append(record)
    return dict(lines)


def _wait_until(rig: Rig, done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, rig.worker_logs()
        time.sleep(0.2)


def _posts(rig: Rig) -> int:
    return len([r for r in rig.run.server.requests if r.method == "POST"])


def test_rows_not_sent_are_retried_with_backoff_until_the_gateway_answers(rig: Rig) -> None:
    payments = rig.payments(6)
    app = app_of(rig)
    rig.run.server.stop()  # the client's port now refuses every connection
    rig.env["TEST_RETRIES"] = "30"
    rig.start_worker("w1")
    rig.start_worker("w2")
    submitted = submit_batch(app, rig.client, rig.rows(payments), lease_seconds=4)
    batch_id = submitted.batch_id

    def retried_thrice() -> bool:
        lines = _by_line(rig.events(RETRIED))
        return len(lines) == 6 and all(len(tries) >= 3 for tries in lines.values())

    _wait_until(rig, retried_thrice)

    # While tries remain, nothing is recorded: no outcome, no refund in the journal
    # (a claim whose request was not sent is given back).
    assert batch_progress(rig.client, batch_id).done == 0
    journal = rig.client.journal
    assert journal is not None
    entries = journal.batch_entries(batch_id)
    assert [entry.outcome for entry in entries] == [None] * 6
    assert all(
        entry.refund is None or entry.refund.state.value == "SUBMITTING" for entry in entries
    )
    for tries in _by_line(rig.events(RETRIED)).values():
        first = sorted(tries, key=lambda record: record["retry"])[:3]
        assert [record["retry"] for record in first] == [1, 2, 3]
        assert all("nothing was sent" in record["error"] for record in first)
        # Pauses double from half a second (±25 %), up to backoff_max (2 s here).
        pauses = [record["countdown"] for record in first]
        assert pauses == sorted(pauses) and len(set(pauses)) == 3, pauses
        assert 0.375 <= pauses[0] <= 0.625 and pauses[2] <= 2, pauses

    rig.run.server.start()  # the gateway is back, on the same port

    with rig.settled_report(batch_id) as report:
        assert report.total == 6 and report.counts["SUCCEEDED"] == 6
    rig.assert_refunded_once(payments)
    assert _posts(rig) == 6


def test_a_row_never_sent_is_recorded_error_and_not_sent_by_a_sweep(rig: Rig) -> None:
    """Two tries after the first, counted apart from the retries of a journal outage
    that came first: then the row is recorded ERROR, "not sent". The reconcile sweep
    leaves it (it settles refunds and enqueues rows still open, never a finished one);
    submitting the batch again sends it, as running a local batch again would."""
    payments = rig.payments(4)
    app = app_of(rig)
    rig.run.server.stop()
    rig.env.update(TEST_RETRIES="2", TEST_BACKOFF_MAX="1")
    submitted = submit_batch(app, rig.client, rig.rows(payments), lease_seconds=4)
    batch_id = submitted.batch_id

    def outage_retried_thrice() -> bool:
        lines = _by_line(rig.events(JOURNAL_DOWN))
        return len(lines) == 4 and all(len(tries) >= 3 for tries in lines.values())

    rig.postgres.stop()
    try:
        rig.start_worker("w1")
        rig.start_worker("w2")
        # More journal retries per row than transient tries: they must not count.
        _wait_until(rig, outage_retried_thrice)
    finally:
        rig.postgres.start()

    with wait_for_batch(rig.client, batch_id, poll=0.2, timeout=90) as report:
        assert report.counts["ERROR"] == 4, report.counts
        results = list(report.outcomes)
    for result in results:
        assert result.error_code == "TransportError"
        assert (result.message or "").startswith(
            "not sent in 3 tries: could not connect to testpay; nothing was sent"
        )
    retried = _by_line(rig.events(RETRIED))
    assert {line: sorted(r["retry"] for r in tries) for line, tries in retried.items()} == {
        line: [1, 2] for line in range(1, 5)
    }
    given_up = _by_line(rig.events(GIVEN_UP))
    assert {line: [r["tries"] for r in tries] for line, tries in given_up.items()} == {
        line: [3] for line in range(1, 5)
    }

    # The gateway is back: a sweep, even one enqueueing every row left open, sends none.
    rig.run.server.start()
    swept = app.tasks[RECONCILE].apply(kwargs={"stale_open_seconds": 0}).get()
    assert swept == {"reconciled": 0, "enqueued": 0}
    time.sleep(2)
    assert _posts(rig) == 0
    assert batch_progress(rig.client, batch_id).counts["ERROR"] == 4

    again = submit_batch(app, rig.client, rig.rows(payments), lease_seconds=4)
    assert (again.batch_id, again.enqueued) == (batch_id, 4)
    with rig.settled_report(batch_id) as report:
        assert report.counts["SUCCEEDED"] == 4
    rig.assert_refunded_once(payments)
    assert _posts(rig) == 4
