"""Async throughput: refunds per second with 200 in flight through a gateway that takes
200 ms to answer, and the memory each refund in flight costs.

refundcore's side is ``AsyncRefundClient.refund`` (no journal); the baseline is a
hand-written ``httpx.AsyncClient`` + ``asyncio.Semaphore`` integration that builds and
signs PayWizard's request inline (:class:`benchmarks.baselines.Paywizard`, whose
requests the emulator verifies). Both keep up to ``in_flight`` refunds in flight over
as many keep-alive connections.

Each side runs in a process of its own (so that its peak RSS is its own), A-B-B-A: a
few refunds first to load code and open a connection, then the RSS is read, then the
timed run. The figure is refunds over wall time; the detail reports each side's peak
RSS above that starting point divided by the refunds in flight.

    python -m benchmarks.async_refunds [--refunds 2000] [--in-flight 200] [--delay 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from .client_cpu import refund_ids
from .common import REPO, BenchmarkError, Figure, Gateway, loopback_only
from .report import text_table

TARGET = 0.9
PROVIDER = "paywizard"
AMOUNT = "1.00"
PAYMENTS = 64
PAYMENT_AMOUNT = "100000.00"
WARMUP = 4


def _rss_kib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchmarkError("no VmRSS in /proc/self/status")


async def _ours(job: Mapping[str, Any]) -> Callable[[Mapping[str, Any], str], Awaitable[None]]:
    from refundcore import AsyncRefundClient, Money, PaymentRef, RefundStatus

    client = AsyncRefundClient(
        {PROVIDER: job["config"]}, journal=None, pool_size=int(job["in_flight"])
    )
    amount = Money(AMOUNT, job["currency"])

    async def refund(payment: Mapping[str, Any], refund_id: str) -> None:
        result = await client.refund(
            PROVIDER,
            payment=PaymentRef(payment_id=payment["payment_id"]),
            amount=amount,
            refund_id=refund_id,
        )
        if result.status is not RefundStatus.SUCCEEDED:
            raise BenchmarkError(f"refundcore refund {result.status}: {result.message}")

    return refund


async def _theirs(job: Mapping[str, Any]) -> Callable[[Mapping[str, Any], str], Awaitable[None]]:
    import httpx

    from .baselines import TIMEOUT, Paywizard

    baseline = Paywizard(job["config"])
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=job["in_flight"]),
        timeout=httpx.Timeout(TIMEOUT[1], connect=TIMEOUT[0]),
    )

    async def refund(payment: Mapping[str, Any], refund_id: str) -> None:
        body, headers = baseline.signed(payment, refund_id, AMOUNT)
        reply = await client.post(baseline.url, content=body, headers=headers)
        baseline.check(reply.content)

    return refund


async def _side(job: Mapping[str, Any]) -> dict[str, float]:
    """One side's run, in this process: its wall time and RSS figures."""
    refund = await (_ours(job) if job["side"] == "ours" else _theirs(job))
    payments: Sequence[Mapping[str, Any]] = job["payments"]
    ids = iter(job["refund_ids"])
    await asyncio.gather(*(refund(payments[i], next(ids)) for i in range(WARMUP)))
    start_kib = _rss_kib()
    gate = asyncio.Semaphore(int(job["in_flight"]))

    async def bounded(payment: Mapping[str, Any], refund_id: str) -> None:
        async with gate:
            await refund(payment, refund_id)

    work = [(payments[i % len(payments)], next(ids)) for i in range(int(job["refunds"]))]
    started = time.perf_counter()
    await asyncio.gather(*(bounded(payment, refund_id) for payment, refund_id in work))
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"elapsed": elapsed, "start_kib": start_kib, "peak_kib": peak_kib}


def _run_side(job: Mapping[str, Any]) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.async_refunds", "--side"],
        cwd=REPO,
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode:
        raise BenchmarkError(f"async {job['side']} side failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def measure(
    *, refunds: int = 2000, in_flight: int = 200, delay: float = 0.2, rounds: int = 2
) -> Figure:
    """Throughput ratio (refundcore / baseline) over ``rounds`` runs per side."""
    with Gateway(PROVIDER, payments=PAYMENTS, amount=PAYMENT_AMOUNT, delay=delay) as gateway:
        ids = refund_ids()
        elapsed = {"ours": 0.0, "theirs": 0.0}
        per_refund: dict[str, list[float]] = {"ours": [], "theirs": []}
        try:
            for index in range(rounds):
                sides = ["ours", "theirs"] if index % 2 == 0 else ["theirs", "ours"]
                for side in sides:
                    job = {
                        "side": side,
                        "config": gateway.config,
                        "currency": gateway.currency,
                        "payments": gateway.payments,
                        "refund_ids": [next(ids) for _ in range(refunds + WARMUP)],
                        "refunds": refunds,
                        "in_flight": in_flight,
                    }
                    result = _run_side(job)
                    elapsed[side] += result["elapsed"]
                    grown = max(0.0, result["peak_kib"] - result["start_kib"])
                    per_refund[side].append(grown / in_flight)
        except BenchmarkError as exc:
            raise BenchmarkError(f"{exc}\ngateway: {gateway.errors()}") from exc
    total = refunds * rounds
    ours_kib, theirs_kib = max(per_refund["ours"]), max(per_refund["theirs"])
    return Figure(
        name=f"async: {refunds} refunds, {in_flight} in flight, {delay * 1000:g} ms latency: "
        f"{PROVIDER}",
        ours=total / elapsed["ours"],
        baseline=total / elapsed["theirs"],
        unit="refunds/s",
        target=TARGET,
        higher_is_better=True,
        detail=f"{rounds} runs per side, A-B-B-A, each in its own process; refundcore via "
        "AsyncRefundClient.refund (no journal), the baseline on httpx.AsyncClient + "
        f"asyncio.Semaphore; peak RSS per refund in flight: refundcore {ours_kib:.1f} KiB, "
        f"baseline {theirs_kib:.1f} KiB",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--refunds", type=int, default=2000)
    parser.add_argument("--in-flight", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    loopback_only()
    if args.side:
        print(json.dumps(asyncio.run(_side(json.loads(sys.stdin.read())))))
        return 0
    figure = measure(
        refunds=args.refunds, in_flight=args.in_flight, delay=args.delay, rounds=args.rounds
    )
    print(text_table([figure], {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
