"""One provider's gateway emulator on a loopback port, in a process of its own.

    python -m benchmarks.gateway PROVIDER [--payments N] [--amount 10.00] [--delay 0.02]

Seeds ``N`` completed payments, prints one JSON line (``base_url``, the merchant
``config`` that matches the emulator's throwaway credentials, the ``currency`` and the
``payments``), then serves until its standard input closes. The benchmarks run the
gateway apart from the client so that the client's CPU time is measured alone.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from refundcore import Money, RefundClient
from refundcore.sandbox import Fault, SandboxServer, emulator_factory

from .common import serve_until_stdin_closes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("provider")
    parser.add_argument("--payments", type=int, default=100, help="payments to seed")
    parser.add_argument("--amount", default="10.00", help="amount of each seeded payment")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds every reply is held back (latency)"
    )
    args = parser.parse_args(argv)

    info = RefundClient().provider(args.provider)
    # Callbacks would make the gateway post to the merchant in the background, which is
    # work neither side of a benchmark asked for.
    emulator = emulator_factory(info)(None, send_callbacks=False)
    server = SandboxServer(emulator)
    if args.delay > 0:
        server.inject("*", Fault(delay=args.delay))
    server.start()
    try:
        currency = emulator.currency
        payments = [
            emulator.seed_payment(Money(args.amount, currency)) for _ in range(args.payments)
        ]
        ready: dict[str, Any] = {
            "provider": args.provider,
            "base_url": server.base_url,
            "config": emulator.client_config(server.base_url),
            "currency": currency,
            "payments": [
                {
                    "payment_id": ref.payment_id,
                    "merchant_reference": ref.merchant_reference,
                    "transaction_id": ref.transaction_id,
                }
                for ref in payments
            ],
        }
        serve_until_stdin_closes(ready)
    finally:
        emulator.close()
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
