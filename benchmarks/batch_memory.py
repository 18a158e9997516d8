"""Batch memory: peak RSS, open file descriptors and threads of one batch of 10,000,
100,000 and 1,000,000 rows, each size in a fresh process.

    python -m benchmarks.batch_memory 10000 100000     # print each size's measurements

What the measured process does for every row, as ``refundcore batch FILE --report
out.csv`` does: the CSV file read and checked (:func:`~refundcore.batch.read_batch_file`:
the row parsed, its refund id derived, the checks across rows against the batch's store
on disk), the client's checks (capabilities, the plugin's build stage), the rows of each
payment against the refunds the journal holds (every row gives its payment's original
amount), the journal's work queue (claimed 100 rows at a time under a lease renewed
every second, each row marked done),
the refund built, signed, answered by the gateway emulator and parsed, its result stored,
and the report written.

Two things it leaves out, so that a million rows take minutes rather than an hour on two
cores:

* the network: the PayWizard emulator's handler answers in the same process (an app
  plugin stands in for the transport: zero latency, no socket). Every row refunds a
  payment the emulator does not know, which it authenticates and declines (FAILED): its
  ledger stays empty, so none of its memory is counted against the batch;
* the journalling of each refund (the claim before sending, the record after): the
  refunds go through a client without a journal, like ``--no-journal``, while the batch's
  work queue stays in a SQLite journal file. What the journal keeps of a refund is rows
  on disk, which is not what is measured here; its cost per refund is in the client CPU
  figures.

Peak RSS is the process's high-water mark at the end of the run: ``VmHWM`` in
``/proc/self/status``, which starts afresh with the process. ``resource.getrusage``'s
``ru_maxrss`` is recorded beside it, but Linux carries the larger of it across ``fork``
and ``exec``, so a child started by a grown benchmark process reports its parent's size
(68 MiB at every size, in the run that showed it). File descriptors (``/proc/self/fd``)
and threads (``/proc/self/task``) are counted at each progress report while the batch
runs (their most) and once the report is written; the journal's connections are counted
apart, since how many its pool opens depends on when its users meet (the lease renewal
and the calling thread), not on the rows. The figures: the growth of peak RSS per row
from the smallest size to the largest against the budget of 0.5 KiB a row (target:
flat), and the most descriptors (the journal's apart) plus threads open at once at the
largest size against the smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from refundcore import Money, RefundClient, RefundResult, hookimpl
from refundcore.batch import BatchProgress, read_batch_file, run_batch
from refundcore.journal import Journal, ResultRecord, open_journal
from refundcore.models import HttpRequest, HttpResponse, Operation
from refundcore.sandbox import Incoming, emulator_factory

from .common import REPO, BenchmarkError, Figure

PROVIDER = "paywizard"
SIZES = (10_000, 100_000, 1_000_000)
#: Growth of peak RSS allowed per row, in KiB (issue 18: at most 0.5, target flat).
BUDGET_KIB = 0.5
WORKERS = 4
#: Rows claimed from the work queue at a time (``--chunk``): few transactions a row.
CHUNK = 100
#: The lease on claimed rows (``--lease``): short, so that its renewal, a thread of its
#: own with a journal connection of its own, runs at every size, not only in long runs.
LEASE_SECONDS = 1.0
_BASE_URL = "https://gateway.invalid"
# The work queue's journal syncs its commits to disk; on a memory file system that
# costs nothing, so the run measures the batch rather than the disk.
_MEMORY_FS = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - mkdtemp in it


class InProcessGateway:
    """An app plugin that hands every request to ``emulator`` in this process instead
    of sending it: the gateway at zero latency, without a socket."""

    def __init__(self, emulator: Any) -> None:
        self.emulator = emulator

    @hookimpl
    def refundcore_send_request(self, request: HttpRequest) -> HttpResponse:
        parts = urlsplit(request.url)
        reply = self.emulator.handle(
            Incoming(request.method, parts.path, parts.query, request.headers, request.body)
        )
        return HttpResponse(reply.status, {"Content-Type": reply.content_type}, reply.body)


def write_rows(path: Path, rows: int) -> None:
    """A CSV batch of ``rows`` refunds, each of a payment of its own that the gateway
    does not know."""
    with path.open("w", encoding="utf-8") as out:
        out.write("provider,payment_id,amount,currency,original_amount\n")
        for index in range(rows):
            out.write(f"{PROVIDER},9{index:09d},1.00,HKD,5.00\n")


class UnjournalledRefunds:
    """What the batch sees of a client (a :class:`~refundcore.batch.BatchClient`):
    ``client``'s checks and stages, which refunds without a journal, and ``queue``, the
    journal that holds the batch's work queue."""

    def __init__(self, client: RefundClient, queue: Journal) -> None:
        self._client = client
        self.journal = queue
        self.redactor = client.redactor
        self.pool_size = client.pool_size
        self.provider = client.provider
        self.config_for = client.config_for
        self.check = client.check

    def execute(
        self,
        provider: str,
        operation: Operation,
        *,
        original_amount: Money | None = None,
        defer_record: Callable[[ResultRecord], None] | None = None,
    ) -> RefundResult:
        return self._client.execute(provider, operation, original_amount=original_amount)


def run_child(file: Path, folder: Path, journal: Path, workers: int) -> dict[str, Any]:
    """The batch, in this process, with its work queue in ``journal``; what it
    measured."""
    client = RefundClient(journal=None, pool_size=workers)
    emulator = emulator_factory(client.provider(PROVIDER))(None, send_callbacks=False)
    client.configure(PROVIDER, emulator.client_config(_BASE_URL))
    client.register_plugin(InProcessGateway(emulator), name="in-process-gateway")
    queue = open_journal(f"sqlite:///{journal}")
    batch = UnjournalledRefunds(client, queue)
    peaks = {"fds": 0, "journal_connections": 0, "threads": 0}

    def watch(_: BatchProgress) -> None:
        fds, connections = _descriptors(journal)
        peaks["fds"] = max(peaks["fds"], fds)
        peaks["journal_connections"] = max(peaks["journal_connections"], connections)
        peaks["threads"] = max(peaks["threads"], _count("/proc/self/task"))

    before = _peak_rss_kib()
    started = time.perf_counter()
    with (
        read_batch_file(file) as parsed,
        run_batch(
            batch,
            parsed,
            workers=workers,
            chunk_size=CHUNK,
            lease_seconds=LEASE_SECONDS,
            on_progress=watch,
        ) as report,
    ):
        report.write(folder / "report.csv")
        counts = report.counts
    elapsed = time.perf_counter() - started
    measured = {
        "rows": report.total,
        "failed": counts["FAILED"],
        "rss_before_kib": before,
        "peak_rss_kib": _peak_rss_kib(),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "fds": _descriptors(journal)[0],
        "threads": _count("/proc/self/task"),
        "peak_fds": peaks["fds"],
        "peak_journal_connections": peaks["journal_connections"],
        "peak_threads": peaks["threads"],
        "seconds": round(elapsed, 1),
    }
    queue.close()
    client.close()
    emulator.close()
    return measured


def _peak_rss_kib() -> int:
    """This process's peak resident set size, in KiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchmarkError("no VmHWM in /proc/self/status")


def _count(folder: str) -> int:
    return len(os.listdir(folder))


def _descriptors(journal: Path) -> tuple[int, int]:
    """Open file descriptors other than the journal's, and the journal's connections
    (each has the database open once): how many the journal's pool opens depends on
    when its users meet (the lease renewal and the calling thread), not on the rows."""
    others = connections = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed since
            continue
        if target == str(journal):
            connections += 1
        elif not target.startswith(f"{journal}-"):
            others += 1
    return others, connections


def measure_size(rows: int, *, workers: int = WORKERS, timeout: float = 3600) -> dict[str, Any]:
    """Run a batch of ``rows`` in a process of its own; its measurements."""
    with (
        tempfile.TemporaryDirectory(prefix="refundcore-bench-") as tmp,
        tempfile.TemporaryDirectory(prefix="refundcore-bench-", dir=_MEMORY_FS) as journal,
    ):
        folder = Path(tmp)
        file = folder / "refunds.csv"
        write_rows(file, rows)
        argv = [sys.executable, "-m", "benchmarks.batch_memory", "--child", str(file)]
        argv += ["--dir", str(folder), "--journal", str(Path(journal) / "journal.db")]
        argv += ["--workers", str(workers)]
        done = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
        )
    if done.returncode != 0:
        raise BenchmarkError(f"batch of {rows} rows failed: {done.stderr.strip()[-2000:]}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if measured["failed"] != rows:
        raise BenchmarkError(f"batch of {rows} rows: {measured}")
    return measured


def growth_kib_per_row(small: dict[str, Any], large: dict[str, Any]) -> float:
    """Peak RSS growth per row between two sizes, in KiB."""
    grown = int(large["peak_rss_kib"]) - int(small["peak_rss_kib"])
    return grown / (int(large["rows"]) - int(small["rows"]))


def _size(rows: int) -> str:
    return f"{rows:,}"


def measure(sizes: tuple[int, ...] = SIZES, *, workers: int = WORKERS) -> list[Figure]:
    """Each size in turn; the RSS figure and the descriptors-and-threads figure."""
    runs = [measure_size(rows, workers=workers) for rows in sizes]
    small, large = runs[0], runs[-1]
    span = f"{_size(small['rows'])}→{_size(large['rows'])} rows"
    detail = "; ".join(
        f"{_size(run['rows'])}: peak {run['peak_rss_kib'] / 1024:.1f} MiB, at most "
        f"{run['peak_fds']} fds, {run['peak_journal_connections']} journal connection(s) "
        f"and {run['peak_threads']} threads, {run['seconds']:g} s"
        for run in runs
    )
    detail += (
        f"; baseline: the budget of {BUDGET_KIB} KiB a row; {workers} workers, work queue in "
        "a SQLite journal, refunds unjournalled, the PayWizard emulator answering in-process"
    )
    return [
        Figure(
            name=f"batch peak RSS growth per row, {span}",
            ours=max(growth_kib_per_row(small, large), 0.0),
            baseline=BUDGET_KIB,
            unit="KiB/row",
            target=1.0,
            higher_is_better=False,
            detail=detail,
        ),
        Figure(
            name=f"batch fds + threads, {span}",
            ours=large["peak_fds"] + large["peak_threads"],
            baseline=small["peak_fds"] + small["peak_threads"],
            unit="fds + threads",
            target=1.0,
            higher_is_better=False,
            detail="the most open at once while the batch ran, largest size vs smallest, "
            "leaving out the journal's own connections (its pool opens a second one when "
            "the lease renewal meets another call; counted beside the RSS figure); after the "
            f"report was written: {large['fds']} fds and {large['threads']} thread(s)",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=list(SIZES))
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--journal", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_child(args.child, args.dir, args.journal, args.workers)))
        return 0
    for rows in args.sizes:
        print(json.dumps(measure_size(rows, workers=args.workers)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
