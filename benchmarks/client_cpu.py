"""Per-refund client CPU: ``RefundClient.refund`` against a hand-written integration on
the same HTTP stack (``requests.Session``), so the ratio is refundcore's own cost.

For each provider one gateway process serves both sides, with the same credentials. The
two sides take turns in short rounds (ours, baseline, baseline, ours, …), each round
refunding ``per_round`` fresh payments, so that both see the same load from the rest of
the machine; a round's CPU time (``time.process_time()`` of this
process only: the gateway runs elsewhere) divided by its refunds is one sample, and the
figure is the ratio of the two sides' median samples. Every refund must succeed, so
both sides always do the same work.

With ``journal=True`` refundcore records every refund in a SQLite journal first, and
the baseline in a SQLite table of its own (:class:`~benchmarks.baselines.JournalledBaseline`:
a row committed with an ``fsync`` before sending, the reply recorded after), each in a
file of its own in the same directory.
"""

from __future__ import annotations

import argparse
import itertools
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from refundcore import Money, PaymentRef, RefundClient, RefundStatus

from .baselines import BASELINES, Baseline, JournalledBaseline
from .common import PROVIDERS, BenchmarkError, Figure, Gateway, loopback_only
from .report import text_table

TARGET = 1.05
TARGET_WITH_JOURNAL = 1.20
AMOUNT = "1.00"  # refunded of each seeded payment of 10.00

Refunder = Callable[[Mapping[str, Any], str], None]


def _refundcore(client: RefundClient, provider: str, currency: str) -> Refunder:
    def refund(payment: Mapping[str, Any], refund_id: str) -> None:
        # The merchant's side of the call is part of the cost: its Money and PaymentRef.
        result = client.refund(
            provider,
            payment=PaymentRef(
                payment_id=payment["payment_id"], transaction_id=payment["transaction_id"]
            ),
            amount=Money(AMOUNT, currency),
            refund_id=refund_id,
        )
        if result.status is not RefundStatus.SUCCEEDED:
            raise BenchmarkError(f"{provider}: refundcore refund {result.status}: {result.message}")

    return refund


def refund_ids() -> Iterator[str]:
    """Fresh refund ids every gateway takes (letters, digits and '-', 1-64 long)."""
    prefix = secrets.token_hex(4)
    return (f"bench-{prefix}-{n:07d}" for n in itertools.count())


def _round(
    refund: Refunder, payments: Iterator[Mapping[str, Any]], ids: Iterator[str], n: int
) -> float:
    """CPU seconds per refund over ``n`` refunds."""
    work = [(next(payments), next(ids)) for _ in range(n)]
    started = time.process_time()
    for payment, refund_id in work:
        refund(payment, refund_id)
    return (time.process_time() - started) / n


def measure(
    provider: str,
    *,
    journal: bool = False,
    rounds: int = 40,
    per_round: int = 10,
    warmup: int = 10,
) -> Figure:
    """One provider's per-refund CPU ratio (refundcore / baseline)."""
    needed = 2 * (warmup + rounds * per_round)
    with Gateway(provider, payments=needed) as gateway, tempfile.TemporaryDirectory() as tmp:
        journal_url = f"sqlite:///{Path(tmp) / 'journal.db'}" if journal else None
        client = RefundClient({provider: gateway.config}, journal=journal_url)
        baseline: Baseline | JournalledBaseline = BASELINES[provider](gateway.config)
        if journal:
            baseline = JournalledBaseline(baseline, Path(tmp) / "handwritten.db")
        ours = _refundcore(client, provider, gateway.currency)

        def theirs(payment: Mapping[str, Any], refund_id: str) -> None:
            baseline.refund(payment, refund_id, AMOUNT)

        payments = iter(gateway.payments)
        ids = refund_ids()
        try:
            # Connections, lazy imports, plugin loading, key parsing: not per refund.
            _round(ours, payments, ids, warmup)
            _round(theirs, payments, ids, warmup)
            ours_cpu: list[float] = []
            theirs_cpu: list[float] = []
            for index in range(rounds):
                turns = [(ours, ours_cpu), (theirs, theirs_cpu)]
                for refund, samples in turns if index % 2 == 0 else reversed(turns):
                    samples.append(_round(refund, payments, ids, per_round))
        except Exception as exc:
            raise BenchmarkError(f"{provider}: {exc}\ngateway: {gateway.errors()}") from exc
        finally:
            client.close()
            baseline.close()
    return Figure(
        name=f"client CPU per refund{' + SQLite journal' if journal else ''}: {provider}",
        ours=statistics.median(ours_cpu) * 1e6,
        baseline=statistics.median(theirs_cpu) * 1e6,
        unit="µs CPU",
        target=TARGET_WITH_JOURNAL if journal else TARGET,
        higher_is_better=False,
        detail=f"{rounds} rounds x {per_round} refunds per side, medians",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("providers", nargs="*", default=list(PROVIDERS))
    parser.add_argument("--journal", action="store_true")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--per-round", type=int, default=10)
    args = parser.parse_args(argv)
    loopback_only()
    figures = [
        measure(provider, journal=args.journal, rounds=args.rounds, per_round=args.per_round)
        for provider in args.providers
    ]
    print(text_table(figures, {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
