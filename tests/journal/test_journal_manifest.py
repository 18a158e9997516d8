"""The journal's batch manifests and shared rate slots (PostgreSQL only): a manifest
written once, rows claimed by line under a lease, stale rows found for a sweep, and
slots spaced evenly across every caller."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from refundcore.errors import ConfigError
from refundcore.journal import BatchDone, BatchItem, open_journal
from refundcore.journal.manifest import BatchManifests, ManifestRow, RowVerdict, postgres_journal
from refundcore.journal.rate_slots import RateSlots

#: A row's lease in the claim test: short to wait out, long beside a claim's round trip.
LEASE = 2.0


def test_a_manifest_is_written_once_and_its_rows_claimed_by_line(postgres_url: str) -> None:
    with open_journal(postgres_url) as journal:
        manifests = BatchManifests(postgres_journal(journal, "this test"))
        rows = [ManifestRow(line, {"row": {"n": line}}) for line in (2, 3, 4)]
        assert manifests.write("B", {"rows": 3}, rows)
        assert not manifests.write("B", {"rows": 99}, [])
        assert manifests.header("B") == {"rows": 3} and manifests.header("C") is None
        assert manifests.row("B", 3) == ManifestRow(3, {"row": {"n": 3}})
        assert [[r.line for r in page] for page in manifests.rows("B", page=2)] == [[2, 3], [4]]
        journal.open_batch("B", [BatchItem(line, "testpay", f"R-{line}") for line in (2, 3, 4)])

        # A lease the second claim comes well within, however loaded the machine.
        first = manifests.claim_row("B", 2, owner="a", lease_seconds=LEASE)
        second = manifests.claim_row("B", 2, owner="b", lease_seconds=LEASE)
        assert (first.verdict, first.refund_id) == (RowVerdict.CLAIMED, "R-2")
        assert second.verdict is RowVerdict.BUSY and 0 < second.wait <= LEASE
        assert manifests.claim_row("B", 9, owner="b", lease_seconds=1).verdict is RowVerdict.MISSING
        assert manifests.stale_rows(open_for=None) == []
        (held,) = [e for e in journal.batch_entries("B") if e.line == 2]
        assert held.lease_until is not None
        while journal.now() <= held.lease_until:  # leases run on the journal's clock
            time.sleep(0.02)
        assert manifests.stale_rows(open_for=None) == [("B", 2)]
        taken = manifests.claim_row("B", 2, owner="b", lease_seconds=5)
        assert taken.verdict is RowVerdict.CLAIMED
        # The first owner's lease ran out: its late outcome changes nothing.
        assert journal.finish_batch("B", owner="a", done=[BatchDone(2, "SUCCEEDED")]) == 0
        assert journal.finish_batch("B", owner="b", done=[BatchDone(2, "SUCCEEDED")]) == 1
        done = manifests.claim_row("B", 2, owner="c", lease_seconds=1)
        assert (done.verdict, done.outcome) == (RowVerdict.DONE, "SUCCEEDED")
        assert manifests.claim_row("B", 3, owner="c", lease_seconds=5).verdict is RowVerdict.CLAIMED
        assert manifests.release_row("B", 3, owner="c")
        assert manifests.outcomes("B") == {"OPEN": 2, "SUCCEEDED": 1}
        assert [lines for lines in manifests.unfinished_lines("B")] == [[3, 4]]
        assert manifests.stale_rows(open_for=0) == [("B", 3), ("B", 4)]


def test_rate_slots_space_every_caller_evenly(postgres_url: str) -> None:
    with open_journal(postgres_url) as journal:
        slots = RateSlots(postgres_journal(journal, "this test"))

        def take(_: int) -> tuple[float, float, float]:
            # Each wait counts from the moment the journal's clock (this machine's)
            # was read, somewhere inside the call: the slot starts between these two.
            before = time.time()
            wait = slots.take("k", 1.0)
            return before + wait, time.time() + wait, wait

        # One slot a second: the eight calls come well within that of each other
        # however loaded the machine, so each slot follows the one before at once.
        with ThreadPoolExecutor(4) as pool:
            starts = sorted(pool.map(take, range(8)))
        assert min(wait for _, _, wait in starts) == 0.0
        for (early, late, _), (next_early, next_late, _) in itertools.pairwise(starts):
            assert next_early - late <= 1.0 + 0.03, starts  # no further apart
            assert next_late - early >= 1.0 - 0.03, starts  # no closer
        assert slots.take("other", 10.0) == pytest.approx(0.0, abs=0.05)
        with pytest.raises(ValueError, match="rate"):
            slots.take("k", 0)


def test_a_sqlite_journal_has_no_manifests(tmp_path: object) -> None:
    with (
        open_journal(f"sqlite:///{tmp_path}/j.db") as journal,
        pytest.raises(ConfigError, match="needs a PostgreSQL journal"),
    ):
        postgres_journal(journal, "a batch on Celery")
