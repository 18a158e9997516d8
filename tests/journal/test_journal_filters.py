"""What an operator reads from the journal, on every backend: rows filtered by state,
age and id, paged; the counts per provider and state with the oldest unsettled refund;
and the list of batches."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from refundcore.journal import (
    BatchCounts,
    BatchDone,
    BatchItem,
    JournalEntry,
    JournalState,
    NewRefund,
    OldestRefund,
    StateCount,
)

MakeRefund = Callable[..., NewRefund]
S = JournalState
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


def _ids(entries: list[JournalEntry]) -> list[str]:
    return [entry.refund_id for entry in entries]


def _backdate(backend: Any, provider: str, refund_id: str, when: datetime) -> None:
    """Give a row the creation time of a refund recorded ``when``: the journal stamps
    rows with its own clock, so a test of ages sets them in the table."""
    stamp = when.astimezone(timezone.utc).isoformat(timespec="microseconds")
    backend.sql(
        f"UPDATE refundcore_journal SET created_at = '{stamp}' "  # noqa: S608 - test constants
        f"WHERE provider = '{provider}' AND refund_id = '{refund_id}'"
    )


def _fill(backend: Any, journal: Any, make_refund: MakeRefund) -> None:
    """Six refunds a minute apart (R-0 first), one of another provider a day earlier."""
    states = [S.SUCCEEDED, S.PENDING, None, S.UNKNOWN, S.FAILED, S.UNKNOWN]
    for minute, state in enumerate(states):
        refund_id = f"R-{minute}"
        journal.claim(
            make_refund(
                refund_id=refund_id,
                payment_id=f"PAY-{minute}",
                payment_key=f"payment_id=PAY-{minute}",
                merchant_reference=f"ORDER-{minute}",
            ),
            owner="A",
        )
        if state is not None:
            journal.record(
                "testpay",
                refund_id,
                owner="A",
                attempt=1,
                state=state,
                provider_refund_id=f"GW-{minute}",
            )
        _backdate(backend, "testpay", refund_id, T0 + timedelta(minutes=minute))
    journal.claim(make_refund(provider="otherpay", refund_id="O-1"), owner="A")
    journal.record("otherpay", "O-1", owner="A", attempt=1, state=S.UNKNOWN)
    _backdate(backend, "otherpay", "O-1", T0 - timedelta(days=1))


def test_entries_filter_by_states(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    _fill(backend, journal, make_refund)

    assert _ids(journal.entries(states={S.UNKNOWN})) == ["O-1", "R-3", "R-5"]
    assert _ids(journal.entries(states=[S.UNKNOWN, S.PENDING], provider="testpay")) == [
        "R-1",
        "R-3",
        "R-5",
    ]
    assert _ids(journal.entries(states={S.SUBMITTING})) == ["R-2"]
    assert journal.entries(states=()) == []
    # States combine with unsettled: both must hold.
    assert _ids(journal.entries(unsettled=True, states={S.FAILED, S.PENDING})) == ["R-1"]
    with pytest.raises(ValueError):
        journal.entries(states={"DROP TABLE"})


def test_entries_filter_by_creation_time(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    _fill(backend, journal, make_refund)

    assert _ids(journal.entries(created_before=T0 + timedelta(minutes=2))) == ["O-1", "R-0", "R-1"]
    assert _ids(journal.entries(created_since=T0 + timedelta(minutes=4))) == ["R-4", "R-5"]
    assert _ids(
        journal.entries(
            created_since=T0,
            created_before=T0 + timedelta(minutes=1, seconds=30),
            provider="testpay",
        )
    ) == ["R-0", "R-1"]
    # Any timezone names the same instant.
    hong_kong = timezone(timedelta(hours=8))
    assert _ids(
        journal.entries(created_since=(T0 + timedelta(minutes=5)).astimezone(hong_kong))
    ) == ["R-5"]
    with pytest.raises(ValueError, match="created_before"):
        journal.entries(created_before=datetime(2030, 1, 1))


def test_entries_search_every_id_an_operator_may_have(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    _fill(backend, journal, make_refund)

    for text in ("R-3", "PAY-3", "ORDER-3", "GW-3"):
        assert _ids(journal.entries(search=text)) == ["R-3"], text
    assert journal.entries(search="R-") == []  # exact, not a prefix
    assert journal.entries(search="R-3", provider="otherpay") == []
    assert journal.entries(search="' OR '1'='1") == []


def test_entries_page_newest_first(backend: Any, make_refund: MakeRefund) -> None:
    journal = backend.open()
    _fill(backend, journal, make_refund)

    assert _ids(journal.entries(newest_first=True)) == [
        "R-5",
        "R-4",
        "R-3",
        "R-2",
        "R-1",
        "R-0",
        "O-1",
    ]
    assert _ids(journal.entries(newest_first=True, limit=3)) == ["R-5", "R-4", "R-3"]
    assert _ids(journal.entries(newest_first=True, limit=3, offset=3)) == ["R-2", "R-1", "R-0"]
    assert _ids(journal.entries(limit=2, offset=6)) == ["R-5"]
    assert _ids(journal.entries(offset=5)) == ["R-4", "R-5"]
    assert journal.entries(offset=100) == []
    with pytest.raises(ValueError, match="offset"):
        journal.entries(offset=-1)


def test_stats_count_per_provider_and_state_with_the_oldest_unsettled(
    backend: Any, make_refund: MakeRefund
) -> None:
    journal = backend.open()
    assert journal.stats().groups == ()
    _fill(backend, journal, make_refund)

    stats = journal.stats()

    minute = timedelta(minutes=1)
    assert stats.groups == (
        StateCount("otherpay", S.UNKNOWN, 1, OldestRefund("O-1", T0 - timedelta(days=1))),
        StateCount("testpay", S.SUBMITTING, 1, OldestRefund("R-2", T0 + 2 * minute)),
        StateCount("testpay", S.PENDING, 1, OldestRefund("R-1", T0 + minute)),
        StateCount("testpay", S.SUCCEEDED, 1, None),
        StateCount("testpay", S.FAILED, 1, None),
        StateCount("testpay", S.UNKNOWN, 2, OldestRefund("R-3", T0 + 3 * minute)),
    )
    assert stats.providers == ("otherpay", "testpay")
    assert stats.count() == 7
    assert stats.count(provider="testpay") == 6
    assert stats.count(states={S.UNKNOWN}) == 3
    assert stats.count(provider="testpay", states={S.UNKNOWN, S.PENDING}) == 3


def test_batches_list_each_batch_with_its_progress(backend: Any) -> None:
    journal = backend.open()
    assert journal.batches() == []
    items = [BatchItem(line, "testpay", f"R-{line}") for line in range(1, 6)]
    before = journal.now()
    journal.open_batch("older", items[:2])
    time.sleep(0.002)  # the journal's clock counts milliseconds on SQLite
    journal.open_batch("newer", items)
    journal.claim_batch("newer", owner="w", limit=4)
    journal.finish_batch(
        "newer",
        owner="w",
        done=[
            BatchDone(1, "SUCCEEDED"),
            BatchDone(2, "SUCCEEDED"),
            BatchDone(3, "UNKNOWN", "no_reply", "timed out"),
        ],
    )
    after = journal.now()

    newer, older = journal.batches()

    assert newer.batch_id == "newer"
    assert newer.counts == BatchCounts(open=1, claimed=1, done=3)
    assert newer.rows == 5
    assert newer.outcomes == {"SUCCEEDED": 2, "UNKNOWN": 1}
    assert older.batch_id == "older"
    assert older.counts == BatchCounts(open=2, claimed=0, done=0)
    assert older.outcomes == {}
    assert before <= older.updated_at < newer.updated_at <= after
    assert [summary.batch_id for summary in journal.batches(limit=1)] == ["newer"]
