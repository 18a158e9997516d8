"""Callbacks verified per second: ``RefundClient.verify_callback`` against the raw
cryptographic operations alone, on the same genuine callback.

For each provider a refund is made through the provider's emulator (in this process,
with a notify URL, so the callback is the one the gateway would really send, to the
URL refundcore gave it), then the emulator signs the callback about it. refundcore's
side verifies and parses it; the baseline does only the cryptography (HMAC for
PayWizard, the HMAC chain and RSA verification for Wonder, RSA verification for
BBMSL, SHA-256 for PayWiser) on bytes prepared beforehand
(:func:`benchmarks.baselines.raw_callback_check`). The sides take turns in rounds; the
figure is the ratio of the median rates (CPU time of this process).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from refundcore import Money, RefundStatus
from refundcore.sandbox import SandboxRun

from .baselines import raw_callback_check
from .common import PROVIDERS, BenchmarkError, Figure, loopback_only
from .report import text_table

TARGET = 0.8


def _rate(check: Callable[[], object], n: int) -> float:
    """Calls per CPU second over ``n`` calls."""
    started = time.process_time()
    for _ in range(n):
        check()
    return n / (time.process_time() - started)


def _calls_for(check: Callable[[], object], seconds: float) -> int:
    """How many calls of ``check`` take about ``seconds`` of CPU (at least 3)."""
    n = 3
    while True:
        started = time.process_time()
        for _ in range(n):
            check()
        spent = time.process_time() - started
        if spent >= seconds / 4 or n >= 1_000_000:
            return max(3, int(n * seconds / max(spent, 1e-9)))
        n *= 4


def measure(provider: str, *, rounds: int = 9, seconds: float = 0.05) -> Figure:
    """One provider's verification-rate ratio (refundcore / raw cryptography); each
    round runs each side for about ``seconds`` of CPU."""
    with SandboxRun(provider, emulator_options={"send_callbacks": False}) as run:
        emulator = run.emulator
        payment = emulator.seed_payment(Money("100.00", emulator.currency))
        refunded = run.client.refund(
            provider,
            payment=payment,
            amount=Money("10.00", emulator.currency),
            notify_url=run.notify_url,
        )
        if refunded.status is not RefundStatus.SUCCEEDED:
            raise BenchmarkError(f"{provider}: refund {refunded.status}: {refunded.message}")
        record = emulator.ledger.find_refund(refunded.refund_id)
        if record is None or record.notify_url is None:
            raise BenchmarkError(f"{provider}: the emulator has no callback URL for the refund")
        target = urlsplit(record.notify_url)
        path = target.path + (f"?{target.query}" if target.query else "")
        callback = emulator.signed_callback(refunded.refund_id, path=path)
        headers = dict(callback.headers)
        config = emulator.client_config(run.server.base_url)
        client = run.client

        def ours() -> object:
            return client.verify_callback(
                provider,
                method=callback.method,
                path=callback.path,
                headers=headers,
                body=callback.body,
            )

        note = ours()
        if getattr(note, "status", None) is not RefundStatus.SUCCEEDED:
            raise BenchmarkError(f"{provider}: the callback does not verify as a refund: {note}")
        raw = raw_callback_check(
            provider, config, path=callback.path, headers=headers, body=callback.body
        )
        # Sized once, so every round of a side repeats the same number of calls.
        calls = {ours: _calls_for(ours, seconds), raw: _calls_for(raw, seconds)}
        ours_rates: list[float] = []
        raw_rates: list[float] = []
        for index in range(rounds):
            turns = [(ours, ours_rates), (raw, raw_rates)]
            for check, rates in turns if index % 2 == 0 else reversed(turns):
                rates.append(_rate(check, calls[check]))
    return Figure(
        name=f"callbacks verified per second: {provider}",
        ours=statistics.median(ours_rates),
        baseline=statistics.median(raw_rates),
        unit="per CPU second",
        target=TARGET,
        higher_is_better=True,
        detail=f"{rounds} rounds per side ({calls[ours]} and {calls[raw]} calls), "
        "medians of CPU-time rates",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("providers", nargs="*", default=list(PROVIDERS))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.05, help="CPU seconds per round")
    args = parser.parse_args(argv)
    loopback_only()
    figures = [
        measure(provider, rounds=args.rounds, seconds=args.seconds) for provider in args.providers
    ]
    print(text_table(figures, {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
