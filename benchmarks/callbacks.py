"""Callbacks verified per second: ``RefundClient.verify_callback`` against two baselines,
on the same genuine callback.

For each provider a refund is made through the provider's emulator (in this process,
with a notify URL, so the callback is the one the gateway would really send, to the
URL refundcore gave it), then the emulator signs the callback about it. refundcore's
side verifies and parses it. Two figures compare it with:

* the raw cryptography alone: HMAC for PayWizard, the HMAC chain and RSA verification
  for Wonder, RSA verification for BBMSL, SHA-256 for PayWiser, on bytes prepared
  beforehand (:func:`benchmarks.baselines.raw_callback_check`): the floor;
* a hand-written verifier, what a merchant's own endpoint does from the gateway's
  specification: parse, rebuild the signed string, verify, read the refund ids, status
  and amount (:func:`benchmarks.baselines.handwritten_callback_check`, whose docstring
  says what it does and leaves out). It gets the same callback, except that PayWiser's
  postback arrives at the URL a hand-written refund gives (carrying its own
  ``refund_id``, where refundcore puts its tagged id): PayWiser signs no part of the URL,
  so the body and headers are the same bytes.

The three sides take turns in rounds (the order reversed every other round); each
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

from .baselines import handwritten_callback_check, paywiser_postback_url, raw_callback_check
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


#: The hand-written BBMSL verifier reads string values (as BBMSL's notification example
#: shows them), so its emulator sends those; its default numbers would need the PHP
#: reading as well.
_EMULATOR_OPTIONS: dict[str, dict[str, str]] = {"directgw": {"notification_values": "strings"}}


def measure(provider: str, *, rounds: int = 9, seconds: float = 0.05) -> list[Figure]:
    """One provider's verification-rate ratios (refundcore / raw cryptography, then
    refundcore / a hand-written verifier); each round runs each side for about
    ``seconds`` of CPU."""
    options = {"send_callbacks": False, **_EMULATOR_OPTIONS.get(provider, {})}
    with SandboxRun(provider, emulator_options=options) as run:
        emulator = run.emulator
        payment = emulator.seed_payment(Money("100.00", emulator.currency))
        amount = Money("10.00", emulator.currency)
        refunded = run.client.refund(
            provider,
            payment=payment,
            amount=amount,
            # Where the refund request cannot carry it, the sandbox set it at the emulator.
            notify_url=run.notify_url if run.info.capabilities.notify_url else None,
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
        theirs = callback
        if provider == "paywiser":
            theirs = emulator.signed_callback(
                refunded.refund_id, path=paywiser_postback_url(target.path, refunded.refund_id)
            )
            if (theirs.body, dict(theirs.headers)) != (callback.body, headers):
                raise BenchmarkError("paywiser: the postback differs with the URL it goes to")
        hand = handwritten_callback_check(
            provider, config, path=theirs.path, headers=headers, body=theirs.body
        )
        # Both verifiers must read the same refund out of it, or their rates compare
        # unequal work (the hand-written one has no refund id where the callback cannot
        # carry its own).
        wanted = {
            "provider_refund_id": getattr(note, "provider_refund_id", None),
            "status": "succeeded",
            "amount": amount.amount,
        }
        read = hand()
        if not (
            isinstance(read, dict)
            and read.get("refund_id") in (None, refunded.refund_id)
            and all(read.get(key) == value for key, value in wanted.items())
        ):
            raise BenchmarkError(f"{provider}: the hand-written verifier reads {read}")
        sides = (ours, raw, hand)
        # Sized once, so every round of a side repeats the same number of calls.
        calls = {check: _calls_for(check, seconds) for check in sides}
        rates: dict[Callable[[], object], list[float]] = {check: [] for check in sides}
        for index in range(rounds):
            for check in sides if index % 2 == 0 else reversed(sides):
                rates[check].append(_rate(check, calls[check]))
    ours_rate = statistics.median(rates[ours])

    def figure(name: str, baseline: Callable[[], object], note: str = "") -> Figure:
        return Figure(
            name=name,
            ours=ours_rate,
            baseline=statistics.median(rates[baseline]),
            unit="per CPU second",
            target=TARGET,
            higher_is_better=True,
            detail=f"{rounds} rounds per side ({calls[ours]} and {calls[baseline]} calls), "
            f"medians of CPU-time rates{note}",
        )

    # How far the target is from any verifier at all, framework or not.
    unaided = statistics.median(rates[hand]) / statistics.median(rates[raw])
    return [
        figure(
            f"callbacks verified per second: {provider}",
            raw,
            f"; the hand-written verifier, without refundcore, reaches {unaided:.2f} of it",
        ),
        figure(f"callbacks verified per second vs a hand-written verifier: {provider}", hand),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("providers", nargs="*", default=list(PROVIDERS))
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.05, help="CPU seconds per round")
    args = parser.parse_args(argv)
    loopback_only()
    figures = [
        figure
        for provider in args.providers
        for figure in measure(provider, rounds=args.rounds, seconds=args.seconds)
    ]
    print(text_table(figures, {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
