"""A batch takes the same memory whatever its size: peak RSS grows by at most 0.5 KiB a
row from 10,000 rows to 100,000, and no file descriptor or thread is left behind.

Each size runs in a process of its own, as ``make bench`` runs it (with a million rows
too): see benchmarks/batch_memory.py for what the measured process does."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.batch_memory import BUDGET_KIB, growth_kib_per_row, measure_size  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds in /proc"),
]


def test_peak_memory_grows_by_at_most_half_a_kib_a_row() -> None:
    small = measure_size(10_000)
    large = measure_size(100_000)

    growth = growth_kib_per_row(small, large)

    assert growth <= BUDGET_KIB, f"{growth:.3f} KiB a row: {small} then {large}"
    for count in ("peak_fds", "peak_threads", "fds", "threads"):
        assert large[count] <= small[count], (count, small, large)
    # Two threads use the work queue's journal: the calling one and the lease renewal.
    assert large["peak_journal_connections"] <= 2
    assert large["failed"] == large["rows"] == 100_000
