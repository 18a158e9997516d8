"""What only AsyncRefundClient has: cancellation and timeouts around a journalled refund,
no thread held while waiting on the network, and what it refuses. Everything the two
clients share is proved by the client and journal tests, which run against both."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from refundcore import (
    AsyncRefundClient,
    ConfigError,
    Money,
    PaymentRef,
    RefundClient,
    RefundStatus,
    hookimpl,
)
from refundcore.journal import JournalState
from refundcore.models import Headers, HttpRequest, Refund
from refundcore.sandbox import Fault, SandboxRun

HKD = "HKD"


@pytest.fixture
def run(installed: Path) -> Iterator[SandboxRun]:
    with SandboxRun("testpay", client=RefundClient(journal=None), read_timeout=5) as run:
        yield run


def _client(run: SandboxRun, **kwargs: Any) -> AsyncRefundClient:
    client = AsyncRefundClient(**kwargs)
    client.configure("testpay", run.emulator.client_config(run.server.base_url))
    return client


def _refunds_sent(run: SandboxRun) -> int:
    return sum(1 for r in run.server.requests if r.method == "POST")


def _queries_sent(run: SandboxRun) -> int:
    return sum(1 for r in run.server.requests if r.method == "GET")


async def _reached_gateway(run: SandboxRun, refund_id: str) -> None:
    deadline = time.monotonic() + 10
    while run.emulator.ledger.find_refund(refund_id) is None:
        assert time.monotonic() < deadline, "the refund never reached the gateway"
        await asyncio.sleep(0.01)


def test_a_task_cancelled_after_sending_is_recorded_unknown_and_never_resent(
    run: SandboxRun, tmp_path: Path
) -> None:
    payment = run.emulator.seed_payment(Money("100", HKD))
    # The gateway refunds at once and answers late: time to cancel the task.
    run.server.inject("/v1/refunds", Fault(delay=5, times=1))

    async def scenario() -> None:
        async with _client(run, journal=f"sqlite:///{tmp_path / 'j.db'}") as client:
            task = asyncio.create_task(
                client.refund("testpay", payment=payment, amount=Money("10", HKD), refund_id="r-c")
            )
            await _reached_gateway(run, "r-c")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            entry = client.journal.get("testpay", "r-c")  # type: ignore[union-attr]
            assert entry is not None and entry.state is JournalState.UNKNOWN
            assert entry.error_code == "cancelled"
            run.server.clear_faults()
            again = await client.refund(
                "testpay", payment=payment, amount=Money("10", HKD), refund_id="r-c"
            )
            assert again.status is RefundStatus.SUCCEEDED
            assert "settled by a query" in (again.message or "")

    asyncio.run(scenario())
    assert (_refunds_sent(run), _queries_sent(run)) == (1, 1)
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None and len(found.refunds) == 1


def test_a_timeout_is_a_cancellation_and_reconcile_settles_it(
    run: SandboxRun, tmp_path: Path
) -> None:
    payment = run.emulator.seed_payment(Money("100", HKD))
    run.server.inject("/v1/refunds", Fault(delay=5, times=1))

    async def scenario() -> None:
        async with _client(run, journal=f"sqlite:///{tmp_path / 'j.db'}") as client:
            # Long enough for the request to have left (the journal's claim first) on a
            # loaded machine, and over well before the 5 s reply.
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(
                    client.refund(
                        "testpay", payment=payment, amount=Money("10", HKD), refund_id="r-t"
                    ),
                    timeout=2.0,
                )
            run.server.clear_faults()
            (settled,) = await client.reconcile()
            assert (settled.refund_id, settled.status) == ("r-t", RefundStatus.SUCCEEDED)
            entry = client.journal.get("testpay", "r-t")  # type: ignore[union-attr]
            assert entry is not None and entry.state is JournalState.SUCCEEDED

    asyncio.run(scenario())
    assert _refunds_sent(run) == 1


def test_a_task_cancelled_while_another_sends_the_refund_sends_nothing(
    run: SandboxRun, tmp_path: Path
) -> None:
    payment = run.emulator.seed_payment(Money("100", HKD))
    # Answered inside the 5 s read timeout, late enough for the second task to be
    # waiting on the first when it is cancelled, on a loaded machine too.
    run.server.inject("/v1/refunds", Fault(delay=3.0, times=1))
    url = f"sqlite:///{tmp_path / 'j.db'}"

    async def scenario() -> None:
        async with _client(run, journal=url) as first, _client(run, journal=url) as second:
            amount = Money("10", HKD)
            sending = asyncio.create_task(
                first.refund("testpay", payment=payment, amount=amount, refund_id="r-b")
            )
            await _reached_gateway(run, "r-b")
            waiting = asyncio.create_task(
                second.refund("testpay", payment=payment, amount=amount, refund_id="r-b")
            )
            await asyncio.sleep(0.2)  # it waits for the first sender
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert (await sending).status is RefundStatus.SUCCEEDED

    asyncio.run(scenario())
    assert _refunds_sent(run) == 1


def test_the_network_wait_holds_no_thread(run: SandboxRun) -> None:
    payments = [run.emulator.seed_payment(Money("100", HKD)) for _ in range(40)]
    run.server.inject("/v1/refunds", Fault(delay=0.5))

    def client_threads() -> int:
        # The emulator serves in this process with a thread per connection: not ours.
        return sum(1 for t in threading.enumerate() if not t.name.startswith("refundcore-sandbox"))

    async def scenario() -> tuple[float, int]:
        async with _client(run, journal=None, pool_size=40) as client:
            before = client_threads()
            peak = before
            work = asyncio.gather(
                *(
                    client.refund("testpay", payment=payment, amount=Money("1", HKD))
                    for payment in payments
                )
            )
            started = time.monotonic()
            while not work.done():
                peak = max(peak, client_threads())
                await asyncio.sleep(0.02)
            results = await work
            assert {r.status for r in results} == {RefundStatus.SUCCEEDED}
            return time.monotonic() - started, peak - before

    took, extra_threads = asyncio.run(scenario())
    assert extra_threads == 0
    assert took < 0.5 * 4, "40 refunds wait together, not one after another"


class _WrapsSend:
    """Wraps the send as an app plugin does on the sync client: sees each request
    before it leaves and each reply, and stamps the reply it hands on."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    @hookimpl(wrapper=True)
    def refundcore_send_request(self, request: HttpRequest) -> Any:
        response = yield
        self.seen.append((request.url.partition("?")[0], response.status))
        return attrs.evolve(response, headers=Headers([*response.headers.items(), ("X-Seen", "1")]))


class _ReplacesSend:
    @hookimpl
    def refundcore_send_request(self, request: HttpRequest) -> Any:
        raise AssertionError("a sync transport must not run on the event loop")


def test_an_app_plugin_wrapping_the_send_runs_around_the_awaited_send(
    run: SandboxRun, tmp_path: Path
) -> None:
    wrapper = _WrapsSend()

    class SeesReply:
        @hookimpl(wrapper=True)
        def refundcore_parse_response(self, response: Any) -> Any:
            result = yield
            assert response.headers.get("X-Seen") == "1"
            return result

    async def scenario() -> None:
        async with _client(run, journal=f"sqlite:///{tmp_path / 'j.db'}") as client:
            client.register_plugin(wrapper, name="timing")
            client.register_plugin(SeesReply(), name="reader")
            payment = run.emulator.seed_payment(Money("100", HKD))
            result = await client.refund("testpay", payment=payment, amount=Money("1", HKD))
            assert result.status is RefundStatus.SUCCEEDED

    asyncio.run(scenario())
    assert [status for url, status in wrapper.seen] == [200]
    assert wrapper.seen[0][0].endswith("/v1/refunds")


def test_an_app_plugin_replacing_the_send_is_refused_before_anything_is_sent(
    run: SandboxRun, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with _client(run, journal=f"sqlite:///{tmp_path / 'j.db'}") as client:
            client.register_plugin(_ReplacesSend(), name="own-transport")
            payment, one = PaymentRef(payment_id="1"), Money("1", HKD)
            with pytest.raises(ConfigError, match=r"own-transport implement refundcore_send"):
                await client.refund("testpay", payment=payment, amount=one)
            with pytest.raises(ConfigError, match="a transport on http_client"):
                client.check("testpay", Refund(refund_id="r-1", payment=payment, amount=one))
            assert client.journal.entries() == []  # type: ignore[union-attr]

    asyncio.run(scenario())
    assert run.server.requests == []


def test_from_file_as_an_async_context_manager(run: SandboxRun, tmp_path: Path) -> None:
    settings = run.emulator.client_config(run.server.base_url)
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path = tmp_path / "refundcore.toml"
    path.write_text("[providers.testpay]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    payment = run.emulator.seed_payment(Money("100", HKD))

    async def scenario() -> str:
        async with AsyncRefundClient.from_file(path, journal=None) as client:
            assert "testpay" in [info.id for info in client.providers()]
            assert repr(client) == "AsyncRefundClient(configured=['testpay'])"
            result = await client.refund("testpay", payment=payment, amount=Money("1", HKD))
            return result.status.value

    assert asyncio.run(scenario()) == "SUCCEEDED"


def test_batches_in_flight_together_do_not_starve_the_journal(
    run: SandboxRun, tmp_path: Path
) -> None:
    """More batches at once than the event loop's default executor has threads: each
    batch runner has a thread of its own, so the journal calls they wait for still run."""
    from refundcore.batch import BatchRow

    payments = [run.emulator.seed_payment(Money("100", HKD)) for _ in range(10)]

    async def scenario() -> list[bool]:
        async with _client(run, journal=f"sqlite:///{tmp_path / 'j.db'}") as client:
            batches = [
                client.refund_many(
                    [BatchRow(provider="testpay", payment_id=p.payment_id, amount=Money("1", HKD))],
                    workers=1,
                )
                for p in payments
            ]
            reports = await asyncio.wait_for(asyncio.gather(*batches), timeout=60)
            return [report.succeeded for report in reports]

    assert asyncio.run(scenario()) == [True] * 10
    assert _refunds_sent(run) == 10
