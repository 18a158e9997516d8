"""Run every benchmark, print the table and write ``docs/performance.md``.

    python -m benchmarks                 # what ``make bench`` runs (about 15 minutes,
                                         # most of it the batch of a million rows)
    python -m benchmarks --quick --output -    # tiny sizes: proves the harness works

Exit status: 0 when every benchmark ran (a missed target is reported, not an error;
``--strict`` makes it one), 1 when a benchmark could not do its work.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import (
    asgi_endpoint,
    async_refunds,
    batch_memory,
    callbacks,
    celery_batch,
    client_cpu,
    endpoint,
    report,
    startup,
    telemetry,
    throughput,
)
from .common import PROVIDERS, REPO, BenchmarkError, Figure, loopback_only

DEFAULT_OUTPUT = REPO / "docs" / "performance.md"


@dataclass(frozen=True)
class Sizes:
    """How much work each benchmark does."""

    cpu_rounds: int
    cpu_per_round: int
    cpu_warmup: int
    batch_refunds: int
    batch_workers: int
    batch_delay: float
    batch_rounds: int
    startup_rounds: int
    callback_rounds: int
    callback_seconds: float
    memory_rows: tuple[int, ...]
    async_refunds: int
    async_in_flight: int
    async_delay: float
    asgi_seconds: float
    endpoint_rounds: int
    endpoint_seconds: float
    celery_rate: float


FULL = Sizes(
    cpu_rounds=40,
    cpu_per_round=10,
    cpu_warmup=10,
    batch_refunds=5000,
    batch_workers=16,
    batch_delay=0.02,
    batch_rounds=2,
    startup_rounds=15,
    callback_rounds=9,
    callback_seconds=0.05,
    memory_rows=batch_memory.SIZES,
    async_refunds=2000,
    async_in_flight=200,
    async_delay=0.2,
    asgi_seconds=3.0,
    endpoint_rounds=6,
    endpoint_seconds=1.0,
    celery_rate=50.0,
)
QUICK = Sizes(
    cpu_rounds=2,
    cpu_per_round=2,
    cpu_warmup=1,
    batch_refunds=20,
    batch_workers=4,
    batch_delay=0.002,
    batch_rounds=2,
    startup_rounds=1,
    callback_rounds=2,
    callback_seconds=0.002,
    memory_rows=(200, 1000),
    async_refunds=20,
    async_in_flight=10,
    async_delay=0.01,
    asgi_seconds=0.2,
    endpoint_rounds=2,
    endpoint_seconds=0.05,
    celery_rate=10.0,
)

KINDS = (
    "cpu",
    "journal",
    "telemetry",
    "batch",
    "celery",
    "memory",
    "async",
    "startup",
    "callbacks",
    "endpoint",
    "asgi",
)
#: The telemetry plugin's cost is measured with every trace sampled for each provider,
#: and with a production-style share for the cheapest refund (where it weighs most).
TELEMETRY_SAMPLED = ((1.0, PROVIDERS), (0.1, ("paywizard",)))


def _startup_figure(rounds: int) -> Figure:
    result = startup.measure(rounds)
    return Figure(
        name="start-up: `refundcore providers` vs `import requests`",
        ours=result["refundcore providers"] * 1000,
        baseline=result["import requests"] * 1000,
        unit="ms wall",
        target=startup.TARGET,
        higher_is_better=False,
        detail=f"{rounds} interleaved runs per side, medians of wall time",
    )


def plan(
    kinds: list[str], providers: list[str], sizes: Sizes
) -> list[tuple[str, Callable[[], Figure | list[Figure]]]]:
    """(label, benchmark) pairs in the order they run; a benchmark gives one figure or
    several."""
    jobs: list[tuple[str, Callable[[], Figure | list[Figure]]]] = []
    for kind, journal in (("cpu", False), ("journal", True)):
        if kind in kinds:
            for provider in providers:
                cpu = functools.partial(
                    client_cpu.measure,
                    provider,
                    journal=journal,
                    rounds=sizes.cpu_rounds,
                    per_round=sizes.cpu_per_round,
                    warmup=sizes.cpu_warmup,
                )
                jobs.append((f"{kind}: {provider}", cpu))
    if "telemetry" in kinds:
        for sampled, sampled_providers in TELEMETRY_SAMPLED:
            for provider in providers:
                if provider not in sampled_providers:
                    continue
                overhead = functools.partial(
                    telemetry.measure,
                    provider,
                    sampled=sampled,
                    rounds=sizes.cpu_rounds,
                    per_round=sizes.cpu_per_round,
                    warmup=sizes.cpu_warmup,
                )
                jobs.append((f"telemetry ({sampled:.0%} sampled): {provider}", overhead))
    if "batch" in kinds:
        batch = functools.partial(
            throughput.measure,
            refunds=sizes.batch_refunds,
            workers=sizes.batch_workers,
            delay=sizes.batch_delay,
            rounds=sizes.batch_rounds,
        )
        jobs.append(("batch", batch))
    if "celery" in kinds:
        on_celery = functools.partial(
            celery_batch.measure,
            refunds=sizes.batch_refunds,
            threads=sizes.batch_workers,
            delay=sizes.batch_delay,
            rate=sizes.celery_rate,
        )
        jobs.append(("batch on Celery", on_celery))
    if "memory" in kinds:
        memory = functools.partial(batch_memory.measure, sizes.memory_rows)
        jobs.append((f"memory: batches of {', '.join(map(str, sizes.memory_rows))} rows", memory))
    if "async" in kinds:
        concurrent = functools.partial(
            async_refunds.measure,
            refunds=sizes.async_refunds,
            in_flight=sizes.async_in_flight,
            delay=sizes.async_delay,
        )
        jobs.append(("async", concurrent))
    if "startup" in kinds:
        jobs.append(("startup", functools.partial(_startup_figure, sizes.startup_rounds)))
    if "callbacks" in kinds:
        for provider in providers:
            verify = functools.partial(
                callbacks.measure,
                provider,
                rounds=sizes.callback_rounds,
                seconds=sizes.callback_seconds,
            )
            jobs.append((f"callbacks: {provider}", verify))
    if "endpoint" in kinds:
        for provider in providers:
            serve = functools.partial(
                endpoint.measure,
                provider,
                rounds=sizes.endpoint_rounds,
                seconds=sizes.endpoint_seconds,
            )
            jobs.append((f"endpoint: {provider}", serve))
    if "asgi" in kinds:
        jobs.append(("asgi", functools.partial(asgi_endpoint.measure, seconds=sizes.asgi_seconds)))
    return jobs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument(
        "--only", action="append", choices=KINDS, help="run only these (repeatable)"
    )
    parser.add_argument(
        "--provider", action="append", choices=PROVIDERS, help="only these providers"
    )
    parser.add_argument(
        "--output",
        default=str(DEFAULT_OUTPUT),
        help="where to write the Markdown report ('-' for nowhere)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    loopback_only()
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    figures: list[Figure] = []
    errors: dict[str, str] = {}
    for label, job in plan(args.only or list(KINDS), args.provider or list(PROVIDERS), sizes):
        print(f"running {label} …", file=sys.stderr, flush=True)
        try:
            result = job()
        except BenchmarkError as exc:
            errors[label] = str(exc)
            print(f"  failed: {exc}", file=sys.stderr)
        else:
            figures.extend(result if isinstance(result, list) else [result])
    elapsed = time.perf_counter() - started
    print(report.text_table(figures, errors))
    if args.output != "-":
        command = report.COMMAND if not args.quick else "python -m benchmarks --quick"
        report.write(
            Path(args.output),
            report.markdown(figures, errors, command=command, elapsed=elapsed),
        )
    if errors:
        return 1
    if args.strict and not all(figure.ok for figure in figures):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
