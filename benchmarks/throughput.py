"""Batch throughput: refunds per second through a gateway that takes 20 ms to answer.

Both sides refund the same number of payments with the same number of worker threads
against one gateway process whose every reply is held back by ``delay`` (a
:class:`~refundcore.sandbox.Fault` on every path). The baseline is a hand-written
``ThreadPoolExecutor`` over ``requests`` (:mod:`benchmarks.baselines`), which keeps no
record of what it sent, where ``refund_many`` journals every refund (it is what makes a
batch exactly-once and resumable). A second figure compares the same refundcore runs
with that baseline recording each refund in SQLite as the client-journal baseline does
(:class:`~benchmarks.baselines.JournalledBaseline`: committed with an ``fsync`` before
sending, the reply after). The sides take turns (A-B-C, then C-B-A), and each side's
figure is its refunds divided by its wall time.

The provider is PayWizard: its HMAC signature costs microseconds, so the figure shows the
framework's own overhead under concurrency rather than RSA signing.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from refundcore import Money, RefundClient

from .baselines import BASELINES, Baseline, JournalledBaseline
from .client_cpu import refund_ids
from .common import BenchmarkError, Figure, Gateway, loopback_only
from .report import text_table

TARGET = 0.95
PROVIDER = "paywizard"
AMOUNT = "1.00"
# Few payments, each refunded in part many times over: the emulator finds payments by
# scanning its ledger, so thousands of them would make the gateway the bottleneck.
PAYMENTS = 64
PAYMENT_AMOUNT = "100000.00"


def refundcore_batch(
    client: RefundClient, rows: Sequence[Mapping[str, Any]], workers: int
) -> list[str]:
    """Refund ``rows`` (``BatchRow`` fields: provider, payment_id, amount, refund_id)
    through refundcore's batch API; each row's outcome status."""
    from refundcore.batch import BatchRow

    report = client.refund_many([BatchRow(**row) for row in rows], workers=workers)
    return [str(outcome.status) for outcome in report.outcomes]


def _baseline_batch(
    baseline: Baseline | JournalledBaseline,
    jobs: Sequence[tuple[Mapping[str, Any], str]],
    workers: int,
) -> None:
    def one(job: tuple[Mapping[str, Any], str]) -> None:
        baseline.refund(job[0], job[1], AMOUNT)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, jobs))  # list() re-raises the first failure


def _jobs(
    payments: Sequence[Mapping[str, Any]], ids: Iterator[str], n: int
) -> list[tuple[Mapping[str, Any], str]]:
    return [(payments[i % len(payments)], next(ids)) for i in range(n)]


def _timed(run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def measure(
    *,
    refunds: int = 5000,
    workers: int = 16,
    delay: float = 0.02,
    rounds: int = 2,
    provider: str = PROVIDER,
) -> list[Figure]:
    """Throughput ratios (refundcore / baseline, refundcore / recording baseline) over
    ``rounds`` runs per side."""
    with (
        Gateway(provider, payments=PAYMENTS, amount=PAYMENT_AMOUNT, delay=delay) as gateway,
        tempfile.TemporaryDirectory() as tmp,
    ):
        currency = gateway.currency
        # Each side's connection pool holds one connection per worker, as a threaded
        # merchant would size it; refundcore's default is 10.
        # refund_many refunds through a journal (it is what makes a batch resumable).
        journal = f"sqlite:///{Path(tmp) / 'batch.db'}"
        client = RefundClient({provider: gateway.config}, pool_size=workers, journal=journal)
        baseline = BASELINES[provider](gateway.config, pool_size=workers)
        recording = JournalledBaseline(
            BASELINES[provider](gateway.config, pool_size=workers), Path(tmp) / "handwritten.db"
        )
        ids = refund_ids()

        def ours(jobs: list[tuple[Mapping[str, Any], str]]) -> None:
            rows = [
                {
                    "provider": provider,
                    "payment_id": payment["payment_id"],
                    "amount": Money(AMOUNT, currency),
                    "refund_id": refund_id,
                }
                for payment, refund_id in jobs
            ]
            statuses = refundcore_batch(client, rows, workers)
            failed = [status for status in statuses if status != "SUCCEEDED"]
            if failed:
                raise BenchmarkError(f"{len(failed)} refundcore refunds did not succeed")

        sides: dict[str, Callable[[list[tuple[Mapping[str, Any], str]]], None]] = {
            "ours": ours,
            "theirs": functools.partial(_baseline_batch, baseline, workers=workers),
            "recording": functools.partial(_baseline_batch, recording, workers=workers),
        }
        times = dict.fromkeys(sides, 0.0)
        try:
            # Warm-up: connections opened, plugin loaded, config parsed.
            for side in sides.values():
                side(_jobs(gateway.payments, ids, workers * 2))
            for index in range(rounds):
                order = list(sides) if index % 2 == 0 else list(reversed(sides))
                for name in order:
                    jobs = _jobs(gateway.payments, ids, refunds)
                    times[name] += _timed(functools.partial(sides[name], jobs))
        except Exception as exc:
            raise BenchmarkError(
                f"batch via {provider}: {exc}\ngateway: {gateway.errors()}"
            ) from exc
        finally:
            client.close()
            baseline.close()
            recording.close()
    total = refunds * rounds
    name = f"batch of {refunds}, {workers} workers, {delay * 1000:g} ms latency"
    detail = (
        f"{rounds} runs per side, A-B-C-C-B-A; refundcore via RefundClient.refund_many "
        "with a SQLite journal"
    )
    return [
        Figure(
            name=f"{name}: {provider}",
            ours=total / times["ours"],
            baseline=total / times["theirs"],
            unit="refunds/s",
            target=TARGET,
            higher_is_better=True,
            detail=f"{detail}; the baseline keeps no record",
        ),
        Figure(
            name=f"{name}, baseline recording each refund in SQLite: {provider}",
            ours=total / times["ours"],
            baseline=total / times["recording"],
            unit="refunds/s",
            target=TARGET,
            higher_is_better=True,
            detail=f"{detail}; the baseline commits each refund (fsync) before sending",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--refunds", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.02)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    loopback_only()
    figures = measure(
        refunds=args.refunds, workers=args.workers, delay=args.delay, rounds=args.rounds
    )
    print(text_table(figures, {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
