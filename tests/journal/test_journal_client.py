"""Exactly-once refunds through a client with a journal, over real sockets against the
testpay emulator: retries, crashes, threads, processes and callbacks. Every test runs
with RefundClient and with AsyncRefundClient (the ``make_client`` fixture)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import attrs
import pytest

from refundcore import (
    Capabilities,
    IdempotencyConflict,
    Money,
    PaymentRef,
    RefundClient,
    RefundStatus,
    TransportError,
    ValidationError,
)
from refundcore.errors import JournalError
from refundcore.journal import JournalState, open_journal
from refundcore.sandbox import Fault, SandboxRun

HKD = "HKD"
PermissionsEnforced = Callable[[], AbstractContextManager[None]]
MakeClient = Callable[..., Any]


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'journal.db'}"


@pytest.fixture
def run(installed: Path, journal_url: str, make_client: MakeClient) -> Iterator[SandboxRun]:
    client = make_client(journal=journal_url, lease_seconds=7.0)
    with SandboxRun("testpay", client=client) as run:
        yield run


def refunds_sent(run: SandboxRun) -> int:
    return sum(1 for r in run.server.requests if r.method == "POST" and r.target == "/v1/refunds")


def queries_sent(run: SandboxRun) -> int:
    return sum(1 for r in run.server.requests if r.method == "GET")


def seed(run: SandboxRun, amount: str = "100.00", **kw: Any) -> PaymentRef:
    return run.emulator.seed_payment(Money(amount, HKD), **kw)


def test_a_repeated_refund_id_returns_the_stored_result_without_network(run: SandboxRun) -> None:
    payment = seed(run)
    first = run.client.refund("testpay", payment=payment, amount=Money("10", HKD), refund_id="r-1")
    again = run.client.refund("testpay", payment=payment, amount=Money("10", HKD), refund_id="r-1")
    assert first.status is again.status is RefundStatus.SUCCEEDED
    assert again.provider_refund_id == first.provider_refund_id
    assert refunds_sent(run) == 1
    entry = run.client.journal.get("testpay", "r-1")  # type: ignore[union-attr]
    assert entry is not None and entry.state is JournalState.SUCCEEDED
    assert (entry.amount, entry.payment_id) == (Money("10.00", HKD), payment.payment_id)


def test_same_refund_id_with_other_parameters_is_a_conflict(run: SandboxRun) -> None:
    payment = seed(run)
    run.client.refund("testpay", payment=payment, amount=Money("10", HKD), refund_id="r-1")
    with pytest.raises(IdempotencyConflict, match=r"r-1.*different refund") as error:
        run.client.refund("testpay", payment=payment, amount=Money("11", HKD), refund_id="r-1")
    assert error.value.field == "refund_id"
    assert refunds_sent(run) == 1


def test_refunds_never_exceed_the_original_amount(run: SandboxRun) -> None:
    payment = seed(run)
    original = Money("100", HKD)
    ok = run.client.refund(
        "testpay", payment=payment, amount=Money("60", HKD), original_amount=original
    )
    assert ok.succeeded
    with pytest.raises(ValidationError, match="exceed its original amount") as error:
        run.client.refund(
            "testpay", payment=payment, amount=Money("50", HKD), original_amount=original
        )
    assert error.value.field == "amount"
    assert refunds_sent(run) == 1
    rest = run.client.refund(
        "testpay", payment=payment, amount=Money("40", HKD), original_amount=original
    )
    assert rest.succeeded
    with pytest.raises(ValidationError, match="original_amount"):
        run.client.refund(
            "testpay", payment=payment, amount=Money("5", HKD), original_amount=Money("4", HKD)
        )


def test_a_declined_refund_does_not_count_toward_the_limit(run: SandboxRun) -> None:
    payment = seed(run, "50.00")
    original = Money("100", HKD)  # the caller believes more was paid than the gateway knows
    declined = run.client.refund(
        "testpay", payment=payment, amount=Money("80", HKD), original_amount=original
    )
    assert declined.status is RefundStatus.FAILED
    ok = run.client.refund(
        "testpay", payment=payment, amount=Money("50", HKD), original_amount=original
    )
    assert ok.succeeded


def _variant_client(
    run: SandboxRun, journal_url: str, testpay_variant: Callable[..., object], **caps: Any
) -> RefundClient:
    client = RefundClient(entry_points=False, journal=journal_url)
    client.register_plugin(testpay_variant("limited", **caps))
    client.configure("limited", run.emulator.client_config(run.server.base_url))
    return client


def test_a_refund_once_provider_gets_one_refund_of_a_payment(
    run: SandboxRun, journal_url: str, testpay_variant: Callable[..., object]
) -> None:
    client = _variant_client(run, journal_url, testpay_variant, refunds_per_payment=1)
    payment, other = seed(run), seed(run)
    first = client.refund("limited", payment=payment, amount=Money("10", HKD), refund_id="r-1")
    assert first.succeeded

    with pytest.raises(
        ValidationError, match="refunds a payment once: the journal has refund 'r-1'"
    ) as error:
        client.refund("limited", payment=payment, amount=Money("5", HKD), refund_id="r-2")

    assert error.value.field == "payment" and refunds_sent(run) == 1
    again = client.refund("limited", payment=payment, amount=Money("10", HKD), refund_id="r-1")
    assert again.provider_refund_id == first.provider_refund_id and refunds_sent(run) == 1
    assert client.refund("limited", payment=other, amount=Money("5", HKD)).succeeded
    client.close()


def test_a_declined_refund_leaves_room_for_another(
    run: SandboxRun, journal_url: str, testpay_variant: Callable[..., object]
) -> None:
    client = _variant_client(run, journal_url, testpay_variant, refunds_per_payment=2)
    payment = seed(run, "20.00")
    refund = functools.partial(client.refund, "limited", payment=payment)
    assert refund(amount=Money("30", HKD)).status is RefundStatus.FAILED  # over the payment
    assert refund(amount=Money("5", HKD)).succeeded
    assert refund(amount=Money("5", HKD)).succeeded
    with pytest.raises(ValidationError, match="refunds a payment 2 times"):
        refund(amount=Money("5", HKD))
    assert refunds_sent(run) == 3
    client.close()


def test_a_provider_without_partial_refunds_takes_whole_payments_only(
    run: SandboxRun, journal_url: str, testpay_variant: Callable[..., object]
) -> None:
    client = _variant_client(run, journal_url, testpay_variant, partial_refunds=False)
    payment = seed(run, "20.00")
    with pytest.raises(ValidationError, match="refunds only whole payments") as error:
        client.refund(
            "limited", payment=payment, amount=Money("5", HKD), original_amount=Money("20", HKD)
        )
    assert error.value.field == "amount" and refunds_sent(run) == 0
    whole = client.refund(
        "limited", payment=payment, amount=Money("20", HKD), original_amount=Money("20", HKD)
    )
    assert whole.succeeded and refunds_sent(run) == 1
    client.close()


def test_nothing_sent_frees_the_refund_id(
    installed: Path, tmp_path: Path, make_client: MakeClient
) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(
        {"testpay": {"api_key": "k", "secret": "s", "base_url": f"http://127.0.0.1:{port}"}},
        journal=_sqlite(tmp_path),
    )
    with pytest.raises(TransportError, match="nothing was sent"):
        client.refund(
            "testpay", payment=PaymentRef(payment_id="1"), amount=Money("1", HKD), refund_id="r-9"
        )
    assert client.journal.get("testpay", "r-9") is None  # type: ignore[union-attr]
    client.close()


def test_after_unknown_a_retry_queries_instead_of_refunding_again(run: SandboxRun) -> None:
    payment = seed(run)
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    lost = run.client.refund("testpay", payment=payment, amount=Money("10", HKD), refund_id="r-u")
    assert lost.status is RefundStatus.UNKNOWN
    assert run.client.journal.get("testpay", "r-u").state is JournalState.UNKNOWN  # type: ignore[union-attr]
    settled = run.client.refund(
        "testpay", payment=payment, amount=Money("10", HKD), refund_id="r-u"
    )
    assert settled.status is RefundStatus.SUCCEEDED
    assert "settled by a query" in (settled.message or "")
    assert (refunds_sent(run), queries_sent(run)) == (1, 1)
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None and len(found.refunds) == 1


@pytest.mark.parametrize(("query", "idempotent"), [(False, False), (False, True)])
def test_without_a_query_only_a_deduplicating_gateway_gets_a_resend(
    run: SandboxRun,
    tmp_path: Path,
    testpay_variant: Callable[..., object],
    query: bool,
    idempotent: bool,
    make_client: MakeClient,
) -> None:
    client = make_client(entry_points=False, journal=_sqlite(tmp_path))
    client.register_plugin(
        testpay_variant(
            "limited",
            query=query,
            idempotent_refund_id=idempotent,
            idempotency_window=86_400.0 if idempotent else None,
        )
    )
    client.configure(
        "limited", run.emulator.client_config(run.server.base_url) | {"read_timeout": 0.5}
    )
    payment = seed(run)
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    lost = client.refund("limited", payment=payment, amount=Money("10", HKD), refund_id="r-x")
    assert lost.status is RefundStatus.UNKNOWN
    again = client.refund("limited", payment=payment, amount=Money("10", HKD), refund_id="r-x")
    if idempotent:
        assert again.status is RefundStatus.SUCCEEDED and refunds_sent(run) == 2
        found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
        assert found is not None and len(found.refunds) == 1, "the gateway deduplicated"
    else:
        assert again.status is RefundStatus.UNKNOWN and refunds_sent(run) == 1
        assert "offers no query to confirm it" in (again.message or "")


@pytest.mark.parametrize(("window", "resent"), [(3600.0, True), (1.0, False)])
def test_a_resend_relies_on_deduplication_only_inside_its_window(
    run: SandboxRun,
    tmp_path: Path,
    testpay_variant: Callable[..., object],
    window: float,
    resent: bool,
    make_client: MakeClient,
) -> None:
    # A one-second window is already gone by the time a resend could arrive (connect
    # and read timeouts alone exceed it): the refund stays UNKNOWN, sent once.
    client = make_client(entry_points=False, journal=_sqlite(tmp_path))
    client.register_plugin(
        testpay_variant(
            "windowed", query=False, idempotent_refund_id=True, idempotency_window=window
        )
    )
    client.configure(
        "windowed", run.emulator.client_config(run.server.base_url) | {"read_timeout": 0.5}
    )
    payment = seed(run)
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    lost = client.refund("windowed", payment=payment, amount=Money("10", HKD), refund_id="r-w")
    assert lost.status is RefundStatus.UNKNOWN
    again = client.refund("windowed", payment=payment, amount=Money("10", HKD), refund_id="r-w")
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None and len(found.refunds) == 1
    if resent:
        assert again.status is RefundStatus.SUCCEEDED and refunds_sent(run) == 2
    else:
        assert again.status is RefundStatus.UNKNOWN and refunds_sent(run) == 1
        assert "remembers a refund id for 1 s" in (again.message or "")
    client.close()


def test_an_idempotency_window_needs_a_deduplicating_gateway() -> None:
    with pytest.raises(ValidationError) as raised:
        Capabilities(idempotency_window=60.0)
    assert raised.value.field == "idempotency_window"
    for bad in (0, -1.0, float("nan"), "60", True):
        with pytest.raises(ValidationError, match=r"seconds"):
            Capabilities(idempotent_refund_id=True, idempotency_window=bad)  # type: ignore[arg-type]


def test_sixteen_threads_one_refund_id_one_request(run: SandboxRun) -> None:
    payment = seed(run)
    run.server.inject("/v1/refunds", Fault(delay=0.3))
    barrier = threading.Barrier(16)
    results = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        result = run.client.refund(
            "testpay", payment=payment, amount=Money("10", HKD), refund_id="r-16"
        )
        with lock:
            results.append(result)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refunds_sent(run) == 1
    assert {r.status for r in results} == {RefundStatus.SUCCEEDED}
    assert len({r.provider_refund_id for r in results}) == 1


_CHILD = """
import asyncio, json, sys
from refundcore import AsyncRefundClient, Money, PaymentRef, RefundClient
args = json.loads(sys.argv[1])
kind = AsyncRefundClient if args["kind"] == "async" else RefundClient
client = kind({"testpay": args["config"]}, journal=args["journal"], lease_seconds=args["lease"])
print("ready", flush=True)
sys.stdin.readline()
result = client.refund("testpay", payment=PaymentRef(**args["payment"]),
                       amount=Money(args["amount"], "HKD"), refund_id=args["refund_id"])
if args["kind"] == "async":
    result = asyncio.run(result)
print(result.status.value, result.provider_refund_id, flush=True)
"""


def _child(
    run: SandboxRun,
    plugin_site: Path,
    journal: str,
    payment: PaymentRef,
    refund_id: str,
    lease: float = 30.0,
    read_timeout: float = 5.0,
    kind: str = "sync",
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(plugin_site), "REFUNDCORE_PLUGINS": "testpay"}
    args = {
        "config": run.emulator.client_config(run.server.base_url)
        | {"read_timeout": read_timeout, "connect_timeout": 0.2},
        "journal": journal,
        "lease": lease,
        "payment": attrs.asdict(payment),
        "amount": "10",
        "refund_id": refund_id,
        "kind": kind,
    }
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def test_two_processes_one_postgres_journal_one_request(
    installed: Path, postgres_url: str, make_client: MakeClient
) -> None:
    with SandboxRun("testpay", client=make_client(journal=postgres_url)) as run:
        payment = seed(run)
        run.server.inject("/v1/refunds", Fault(delay=0.5))
        children = [
            _child(run, installed, postgres_url, payment, "r-2p", kind=kind)
            for kind in ("sync", "async")
        ]
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=60)[0].split() for child in children]
        assert refunds_sent(run) == 1
        assert {out[0] for out in outputs} == {"SUCCEEDED"}
        assert len({out[1] for out in outputs}) == 1


@pytest.mark.parametrize("settle_by", ["query", "callback"])
def test_a_process_killed_after_sending_is_settled_not_resent(
    installed: Path, tmp_path: Path, settle_by: str, make_client: MakeClient, client_kind: str
) -> None:
    """SIGKILL after the request reached the gateway and before the journal heard back:
    running the same refund again sends no second refund and settles the first."""
    journal = _sqlite(tmp_path)
    with SandboxRun("testpay", client=make_client(journal=journal)) as run:
        payment = seed(run)
        # The gateway refunds at once but answers late: time to kill the sender.
        run.server.inject("/v1/refunds", Fault(delay=30, times=1))
        child = _child(
            run, installed, journal, payment, "r-kill", lease=1.7, read_timeout=1, kind=client_kind
        )
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        deadline = time.monotonic() + 20
        while not run.emulator.ledger.find_refund("r-kill") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert run.emulator.ledger.find_refund("r-kill"), "the refund never reached the gateway"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        run.server.clear_faults()
        with open_journal(journal) as inspect:
            assert inspect.get("testpay", "r-kill").state is JournalState.SUBMITTING  # type: ignore[union-attr]
        time.sleep(1.7)  # the killed sender's lease runs out
        if settle_by == "callback":
            callback = run.emulator.signed_callback("r-kill", path="/testpay")
            run.client.verify_callback(
                "testpay",
                method="POST",
                path="/testpay",
                headers=callback.headers,
                body=callback.body,
            )
        again = run.client.refund(
            "testpay", payment=payment, amount=Money("10", HKD), refund_id="r-kill"
        )
        assert again.status is RefundStatus.SUCCEEDED
        assert refunds_sent(run) == 1
        assert queries_sent(run) == (1 if settle_by == "query" else 0)
        found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
        assert found is not None and len(found.refunds) == 1


def test_duplicate_and_reordered_callbacks_leave_the_right_final_state(run: SandboxRun) -> None:
    payment = seed(run, refund_outcome=RefundStatus.PENDING)
    pending = run.client.refund(
        "testpay", payment=payment, amount=Money("10", HKD), refund_id="r-cb"
    )
    assert pending.status is RefundStatus.PENDING
    record = run.emulator.ledger.find_refund("r-cb")
    assert record is not None
    early = run.emulator.signed_callback("r-cb", path="/testpay")  # says pending
    run.emulator.ledger.settle("r-cb", RefundStatus.SUCCEEDED)
    final = run.emulator.signed_callback("r-cb", path="/testpay")  # says succeeded
    for callback in (final, final, early, final):  # duplicated, and the pending one late
        run.client.verify_callback(
            "testpay", method="POST", path="/testpay", headers=callback.headers, body=callback.body
        )
    entry = run.client.journal.get("testpay", "r-cb")  # type: ignore[union-attr]
    assert entry is not None and entry.state is JournalState.SUCCEEDED
    again = run.client.refund("testpay", payment=payment, amount=Money("10", HKD), refund_id="r-cb")
    assert again.status is RefundStatus.SUCCEEDED and refunds_sent(run) == 1


def test_reconcile_settles_pending_and_unknown(run: SandboxRun) -> None:
    pending_payment = seed(run, refund_outcome=RefundStatus.PENDING)
    run.client.refund("testpay", payment=pending_payment, amount=Money("10", HKD), refund_id="r-p")
    payment = seed(run)
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    run.client.refund("testpay", payment=payment, amount=Money("10", HKD), refund_id="r-u")
    run.emulator.ledger.settle("r-p", RefundStatus.SUCCEEDED)
    outcomes = {r.refund_id: r.status for r in run.client.reconcile()}
    assert outcomes == {"r-p": RefundStatus.SUCCEEDED, "r-u": RefundStatus.SUCCEEDED}
    assert run.client.journal.entries(unsettled=True) == []  # type: ignore[union-attr]
    assert refunds_sent(run) == 2


def test_read_only_journal_means_nothing_is_sent(
    installed: Path,
    tmp_path: Path,
    file_permissions_enforced: PermissionsEnforced,
    make_client: MakeClient,
) -> None:
    url = _sqlite(tmp_path)
    open_journal(url).close()
    path = tmp_path / "journal.db"
    path.chmod(0o444)
    try:
        with SandboxRun("testpay") as run, file_permissions_enforced():
            client = make_client(journal=url)
            client.configure("testpay", run.emulator.client_config(run.server.base_url))
            with pytest.raises(JournalError, match="read-only"):
                client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
            assert run.server.requests == []
    finally:
        path.chmod(0o644)


def test_unreachable_journal_means_nothing_is_sent(
    installed: Path, tmp_path: Path, make_client: MakeClient
) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    with SandboxRun("testpay") as run:
        with pytest.raises(JournalError):
            client = make_client(journal=f"sqlite:///{tmp_path / 'blocker' / 'j.db'}")
            client.configure("testpay", run.emulator.client_config(run.server.base_url))
            client.refund("testpay", payment=seed(run), amount=Money("1", HKD))
        assert run.server.requests == []


def test_the_journal_stores_no_secret(run: SandboxRun) -> None:
    secret = run.emulator.credentials["secret"]
    run.client.refund("testpay", payment=seed(run), amount=Money("1", HKD), reason="dented")
    for entry in run.client.journal.entries():  # type: ignore[union-attr]
        assert secret not in json.dumps(attrs.asdict(entry), default=str)


def test_a_caller_waits_only_so_long_for_another_sender(
    installed: Path, tmp_path: Path, make_client: MakeClient
) -> None:
    """While another worker holds the refund, a second caller waits up to journal_wait,
    then answers UNKNOWN (with the query-first advice) and sends nothing itself."""
    url = _sqlite(tmp_path)
    with SandboxRun("testpay", client=make_client(journal=url)) as run:
        payment = seed(run)
        # The first sender's reply comes late enough (inside its 5 s read timeout) for
        # the second caller to ask while it waits, on a loaded machine too.
        run.server.inject("/v1/refunds", Fault(delay=4, times=1))
        impatient = make_client(journal=url, journal_wait=0.3)
        impatient.configure("testpay", run.emulator.client_config(run.server.base_url))
        first = threading.Thread(
            target=run.client.refund,
            kwargs={
                "provider": "testpay",
                "payment": payment,
                "amount": Money("10", HKD),
                "refund_id": "r-wait",
            },
        )
        first.start()
        deadline = time.monotonic() + 30
        while not run.server.requests:
            assert time.monotonic() < deadline, "the first sender's request never arrived"
            time.sleep(0.01)
        waited = impatient.refund(
            "testpay", payment=payment, amount=Money("10", HKD), refund_id="r-wait"
        )
        first.join()
        assert waited.status is RefundStatus.UNKNOWN and waited.error_code == "in_progress"
        assert "query the refund" in (waited.message or "")
        assert refunds_sent(run) == 1
