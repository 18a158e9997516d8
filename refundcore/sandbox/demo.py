"""``refundcore demo``: every installed provider against its own gateway emulator on
loopback. No credentials, no network beyond 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time

import attrs

from ..client import RefundClient
from ..errors import RefundError
from ..models import PaymentRef, ProviderInfo, RefundStatus
from ..money import Money
from ..table import format_table
from .run import SandboxRun

__all__ = ["DemoRow", "run_demo"]


@attrs.frozen
class DemoRow:
    """One provider's demo outcome."""

    provider: str
    refund_id: str
    status: str
    callback: str
    query: str
    millis: int
    ok: bool
    detail: str = ""


def _selected(client: RefundClient, only: list[str] | None) -> list[ProviderInfo]:
    infos = client.providers()
    return [info for info in infos if not only or info.id in only]


def demo_provider(info: ProviderInfo) -> DemoRow:
    """Seed a payment in the provider's emulator, refund part of it with a callback URL,
    verify the callback, query the refund."""
    started = time.perf_counter()
    caps = info.capabilities
    refund_id, status, callback, queried, detail = "-", "-", "n/a", "n/a", ""
    try:
        with SandboxRun(info.id) as run:
            currency = run.emulator.currency
            payment: PaymentRef = run.emulator.seed_payment(Money(100, currency))
            result = run.client.refund(
                info.id,
                payment=payment,
                amount=Money(40, currency),
                reason="refundcore demo",
                # Where the wire has no notify URL, the sandbox set it at the emulator.
                notify_url=run.notify_url if caps.callbacks and caps.notify_url else None,
            )
            refund_id, status = result.refund_id, result.status.value
            detail = result.message or ""
            if caps.callbacks:
                try:
                    notes = run.wait_for_notifications(1, timeout=10)
                    callback = f"yes ({notes[0].status.value})"
                except TimeoutError as exc:
                    callback, detail = "no", str(exc)
            if caps.query:
                answer = run.client.query(
                    info.id,
                    refund_id=result.refund_id,
                    payment=payment,
                    provider_refund_id=result.provider_refund_id,
                )
                queried = answer.status.value
    except (RefundError, OSError, TimeoutError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
    ok = (
        status == RefundStatus.SUCCEEDED.value
        and callback in ("n/a", "yes (SUCCEEDED)")
        and queried in ("n/a", RefundStatus.SUCCEEDED.value)
    )
    millis = round((time.perf_counter() - started) * 1000)
    return DemoRow(info.id, refund_id, status, callback, queried, millis, ok, "" if ok else detail)


def run_demo(only: list[str] | None = None, *, as_json: bool = False) -> int:
    """Run the demo for every installed provider (or ``only`` these); 0 if all succeeded."""
    client = RefundClient()
    infos = _selected(client, only)
    failures = client.plugin_failures
    if not infos and not failures:
        print(
            "No provider plugin is installed, so there is nothing to demonstrate.\n"
            "The plugins are not on PyPI yet: in a clone of the refundcore repository, "
            "run `make demo`, which installs every bundled plugin, or install one with "
            "pip install -e plugins/<provider>.",
            file=sys.stderr,
        )
        return 1
    rows = [demo_provider(info) for info in infos]
    if as_json:
        print(
            json.dumps(
                {
                    "providers": [attrs.asdict(row) for row in rows],
                    "load_errors": [attrs.asdict(failure) for failure in failures],
                },
                indent=2,
            )
        )
    else:
        print(
            format_table(
                [
                    [r.provider, r.refund_id, r.status, r.callback, r.query, f"{r.millis} ms"]
                    for r in rows
                ],
                ["provider", "refund id", "status", "callback verified", "query", "time"],
            )
        )
        for row in rows:
            if not row.ok:
                print(f"{row.provider}: {row.detail or 'did not succeed'}")
        for failure in failures:
            print(f"failed to load {failure.name} ({failure.distribution}): {failure.error}")
    return 0 if rows and all(row.ok for row in rows) and not failures else 1
