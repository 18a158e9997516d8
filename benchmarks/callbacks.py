"""Callbacks verified per second: ``RefundClient.verify_callback`` against a hand-written
verifier, on the same genuine callback.

For each provider a refund is made through the provider's emulator (in this process,
with a notify URL, so the callback is the one the gateway would really send, to the
URL refundcore gave it), then the emulator signs the callback about it
(:func:`genuine_callbacks`). refundcore's side verifies and parses it. The baseline is
what a merchant's own endpoint does from the gateway's specification: parse, rebuild
the signed string, verify, read the refund ids, status and amount
(:func:`benchmarks.baselines.handwritten_callback_check`, whose docstring says what it
does and leaves out). It gets the same callback, except that PayWiser's postback
arrives at the URL a hand-written refund gives (carrying its own ``refund_id``, where
refundcore puts its tagged id): PayWiser signs no part of the URL, so the body and
headers are the same bytes.

The two sides take turns in rounds (the order reversed every other round); the figure
is the ratio of the median rates (CPU time of this process).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from refundcore import Money, RefundClient, RefundStatus
from refundcore.models import Callback
from refundcore.sandbox import SandboxRun

from .baselines import handwritten_callback_check, paywiser_postback_url
from .common import PROVIDERS, BenchmarkError, Figure, loopback_only
from .report import text_table

TARGET = 0.5

#: The hand-written BBMSL verifier reads string values (as BBMSL's notification example
#: shows them), so its emulator sends those; its default numbers would need the PHP
#: reading as well.
_EMULATOR_OPTIONS: dict[str, dict[str, str]] = {"directgw": {"notification_values": "strings"}}


@dataclass(frozen=True)
class GenuineCallbacks:
    """One genuine callback about a succeeded refund, as each side receives it."""

    provider: str
    #: The merchant's config for the emulator that signed it (keys and secrets).
    config: dict[str, Any]
    #: As sent to refundcore's endpoint, at ``/<provider>`` (plus refundcore's query on
    #: PayWiser's postback URL).
    ours: Callback
    #: As sent to a hand-written endpoint: the same, except PayWiser's postback URL.
    theirs: Callback
    #: What both verifiers must read from it.
    refund_id: str
    provider_refund_id: str | None
    amount: Decimal


def genuine_callbacks(provider: str) -> GenuineCallbacks:
    """Refund through the provider's emulator and have it sign the callback about it."""
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
        ours = emulator.signed_callback(refunded.refund_id, path=path)
        theirs = ours
        if provider == "paywiser":
            theirs = emulator.signed_callback(
                refunded.refund_id, path=paywiser_postback_url(target.path, refunded.refund_id)
            )
            if (theirs.body, dict(theirs.headers)) != (ours.body, dict(ours.headers)):
                raise BenchmarkError("paywiser: the postback differs with the URL it goes to")
        note = run.client.verify_callback(
            provider,
            method=ours.method,
            path=ours.path,
            headers=dict(ours.headers),
            body=ours.body,
        )
        if note.status is not RefundStatus.SUCCEEDED:
            raise BenchmarkError(f"{provider}: the callback does not verify as a refund: {note}")
        return GenuineCallbacks(
            provider=provider,
            config=emulator.client_config(run.server.base_url),
            ours=ours,
            theirs=theirs,
            refund_id=refunded.refund_id,
            provider_refund_id=note.provider_refund_id,
            amount=amount.amount,
        )


def check_handwritten_reading(callbacks: GenuineCallbacks, read: object) -> None:
    """``BenchmarkError`` unless the hand-written verifier read the same refund as
    refundcore (it has no refund id where the callback cannot carry its own), so that
    both sides do the same work."""
    if not (
        isinstance(read, dict)
        and read.get("refund_id") in (None, callbacks.refund_id)
        and read.get("provider_refund_id") == callbacks.provider_refund_id
        and read.get("status") == "succeeded"
        and read.get("amount") == callbacks.amount
    ):
        raise BenchmarkError(f"{callbacks.provider}: the hand-written verifier reads {read}")


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
    """One provider's verification-rate ratio (refundcore / a hand-written verifier);
    each round runs each side for about ``seconds`` of CPU."""
    callbacks = genuine_callbacks(provider)
    client = RefundClient({provider: callbacks.config}, journal=None)
    mine = callbacks.ours
    headers = dict(mine.headers)

    def ours() -> object:
        return client.verify_callback(
            provider, method=mine.method, path=mine.path, headers=headers, body=mine.body
        )

    try:
        # The first call loads the plugin and reads the keys: not per callback.
        note = ours()
        if getattr(note, "status", None) is not RefundStatus.SUCCEEDED:
            raise BenchmarkError(f"{provider}: the client does not verify the callback: {note}")
        theirs = handwritten_callback_check(
            provider,
            callbacks.config,
            path=callbacks.theirs.path,
            headers=dict(callbacks.theirs.headers),
            body=callbacks.theirs.body,
        )
        check_handwritten_reading(callbacks, theirs())
        sides = (ours, theirs)
        # Sized once, so every round of a side repeats the same number of calls.
        calls = {check: _calls_for(check, seconds) for check in sides}
        rates: dict[Callable[[], object], list[float]] = {check: [] for check in sides}
        for index in range(rounds):
            for check in sides if index % 2 == 0 else reversed(sides):
                rates[check].append(_rate(check, calls[check]))
    finally:
        client.close()
    return Figure(
        name=f"callbacks verified per second: {provider}",
        ours=statistics.median(rates[ours]),
        baseline=statistics.median(rates[theirs]),
        unit="per CPU second",
        target=TARGET,
        higher_is_better=True,
        detail=f"{rounds} rounds per side ({calls[ours]} and {calls[theirs]} calls), "
        "medians of CPU-time rates; baseline: a hand-written verifier",
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
