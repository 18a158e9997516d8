"""Exactly-once when the outcome is ambiguous (issue 15), measured from outside as an
attacker would: the bundled paywizard and wonder emulators over real sockets, the
public API and the CLI, on SQLite and on PostgreSQL.

In every scenario the emulator's ledger ends with exactly one refund, and nothing
advises a new refund id for a refund that may exist.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
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
    RefundResult,
    RefundStatus,
    ResultSource,
    hookimpl,
)
from refundcore.cli import main
from refundcore.journal import EventKind, JournalEvent, JournalState, open_journal
from refundcore.sandbox import Fault, SandboxRun
from refundcore.sandbox.emulator import Incoming, Reply
from refundcore.testing import AsyncAsSync

#: Short enough to wait out in a test; longer than the timeouts below plus the margin.
LEASE = 2.0
READ_TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.2
#: The settle delay the providers' variants declare here (theirs is a minute).
SETTLE = 0.5
#: A settle delay for a test that must ask inside it: wide enough for a loaded machine.
WIDE_SETTLE = 5.0


def quick_settling(provider: str, settle: float = SETTLE) -> object:
    """The bundled provider's plugin, declaring a settle delay (``settle``) a test can
    wait out: what its lookup proves is unchanged."""
    module = __import__(f"refundcore_{provider}")
    hooks: dict[str, Any] = {
        name: staticmethod(getattr(module, name))
        for name in dir(module)
        if name.startswith("refundcore_") and name != "refundcore_register_providers"
    }

    @hookimpl
    def refundcore_register_providers(register: Callable[[Any], None]) -> None:
        captured: list[Any] = []
        module.refundcore_register_providers(captured.append)
        info = captured[0]
        lookup = attrs.evolve(info.capabilities.lookup, settle_delay=settle)
        register(attrs.evolve(info, capabilities=attrs.evolve(info.capabilities, lookup=lookup)))

    hooks["refundcore_register_providers"] = staticmethod(refundcore_register_providers)
    return type(f"QuickSettling{provider.title()}", (), hooks)()


@contextmanager
def gateway(
    provider: str, journal: str, kind: str = "sync", settle: float = SETTLE, **client_options: Any
) -> Iterator[SandboxRun]:
    """The provider's emulator and a journalled client of ``kind`` (``client_kind``:
    the protocol's rules hold on both clients), the provider declaring ``settle``."""
    options = {"lease_seconds": LEASE, "journal_wait": 0.3, **client_options}
    client: Any = (
        RefundClient(entry_points=False, journal=journal, **options)
        if kind == "sync"
        else AsyncAsSync(AsyncRefundClient(entry_points=False, journal=journal, **options))
    )
    with SandboxRun(
        provider,
        plugin=quick_settling(provider, settle),
        client=client,
        read_timeout=READ_TIMEOUT,
        connect_timeout=CONNECT_TIMEOUT,
    ) as run:
        yield run


def refund(run: SandboxRun, payment: PaymentRef, refund_id: str) -> RefundResult:
    return run.client.refund(
        run.provider,
        payment=payment,
        amount=Money("10.00", run.emulator.currency),
        refund_id=refund_id,
    )


def seed(run: SandboxRun) -> PaymentRef:
    return run.emulator.seed_payment(Money("100.00", run.emulator.currency))


def refunds_at_the_gateway(run: SandboxRun, payment: PaymentRef) -> int:
    found = run.emulator.ledger.find_payment(payment_id=payment.payment_id)
    assert found is not None
    return len(found.refunds)


# The end of a refund request's path on each emulated gateway (paywiser's names the
# payment before it).
_REFUND_PATH_ENDS = ("/refundOrder", "/orders/refund", "/refund")


def is_refund_request(path: str) -> bool:
    return path.split("?")[0].endswith(_REFUND_PATH_ENDS)


def refund_path(run: SandboxRun, payment: PaymentRef) -> str:
    if run.provider == "paywiser":
        return f"/api/v1/index.php/{payment.payment_id}/refund"
    path: str = sys.modules[type(run.emulator).__module__].REFUND_PATH  # type: ignore[attr-defined]
    return path


def refund_posts(run: SandboxRun) -> int:
    return sum(1 for r in run.server.requests if is_refund_request(r.target))


def no_new_id_advice(*texts: str | None) -> None:
    for text in texts:
        lowered = (text or "").lower()
        assert "new refund" not in lowered and "new_refund" not in lowered, text


def applies_when(
    run: SandboxRun, release: threading.Event
) -> tuple[threading.Event, threading.Event]:
    """Make the emulator sit on the next refund request until ``release`` is set
    before it applies it (a gateway slow to process): the events set once the request
    has arrived, and once it has been applied."""
    arrived, applied = threading.Event(), threading.Event()
    handle = run.emulator.handle

    def slow(request: Incoming) -> Reply:
        if is_refund_request(request.path) and not arrived.is_set():
            arrived.set()
            release.wait(120)
            try:
                return handle(request)
            finally:
                applied.set()
        return handle(request)

    run.emulator.handle = slow  # type: ignore[method-assign]
    return arrived, applied


def toml_for(run: SandboxRun, folder: Path) -> Path:
    settings = {
        **run.emulator.client_config(run.server.base_url),
        "read_timeout": READ_TIMEOUT,
        "connect_timeout": CONNECT_TIMEOUT,
    }
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())
    path = folder / "refundcore.toml"
    path.write_text(f"[providers.{run.provider}]\n{lines}", encoding="utf-8")
    return path


def _cli_env() -> dict[str, str]:
    # Every bundled plugin, whatever a test before this one allowed.
    return {k: v for k, v in os.environ.items() if not k.startswith("REFUNDCORE_PLUGINS")}


def cli_process(*argv: str) -> subprocess.CompletedProcess[str]:
    """The command line in a process of its own (as cron runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "refundcore", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=_cli_env(),
    )


_PRIMED_CLI = """
import sys

from refundcore.cli import main

print("ready", flush=True)
sys.stdin.readline()
sys.exit(main(sys.argv[1:]))
"""


class PrimedCli:
    """The command line in a process of its own (as cron runs it), started and past its
    imports when made, but run only when :meth:`run` says: the seconds a loaded machine
    takes to start Python and import refundcore come before the moment a test means."""

    def __init__(self, *argv: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _PRIMED_CLI, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_cli_env(),
        )
        assert self._process.stdout is not None
        if self._process.stdout.readline() != "ready\n":
            self._process.kill()
            _, err = self._process.communicate()
            raise AssertionError(f"the command never got ready: {err}")

    def run(self) -> subprocess.CompletedProcess[str]:
        try:
            out, err = self._process.communicate("run\n", timeout=60)
        finally:
            self.close()
        return subprocess.CompletedProcess(self._process.args, self._process.returncode, out, err)

    def close(self) -> None:
        """Stop it if it has not run: never later, against a journal a test left."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def history(journal: str, provider: str, refund_id: str) -> list[JournalEvent]:
    with open_journal(journal) as opened:
        return opened.history(provider, refund_id)


def kinds(journal: str, provider: str, refund_id: str) -> list[str]:
    return [event.kind.value for event in history(journal, provider, refund_id)]


def wait_for_the_journal_clock(journal: str, moment: datetime, timeout: float = 60) -> None:
    """Return once the journal's clock, which leases and settle delays run on, has
    reached ``moment``."""
    deadline = time.monotonic() + timeout
    with open_journal(journal) as opened:
        while opened.now() < moment:
            assert time.monotonic() < deadline, f"the journal's clock never reached {moment}"
            time.sleep(0.02)


# -- one clock: a worker's wrong clock never takes over a live send ---------------------

_SKEWED_WORKER = """
import datetime, json, sys, time

args = json.loads(sys.argv[1])
real_time, real_ns = time.time, time.time_ns
time.time = lambda: real_time() + args["skew"]
time.time_ns = lambda: real_ns() + int(args["skew"] * 1e9)


class Skewed(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.fromtimestamp(time.time(), tz)

    @classmethod
    def utcnow(cls):
        return cls.now(datetime.timezone.utc).replace(tzinfo=None)


datetime.datetime = Skewed

from refundcore import Money, PaymentRef, RefundClient

client = RefundClient(
    {args["provider"]: args["config"]},
    journal=args["journal"],
    lease_seconds=args["lease"],
    journal_wait=0.3,
)
print("ready", flush=True)
sys.stdin.readline()  # asks when the test says
result = client.refund(
    args["provider"],
    payment=PaymentRef(**args["payment"]),
    amount=Money("10.00", args["currency"]),
    refund_id=args["refund_id"],
)
print(json.dumps([result.status.value, result.error_code, result.message]))
"""


@pytest.mark.parametrize("skew", [600.0, -600.0])
@pytest.mark.parametrize("provider", ["paywizard", "wonder"])
def test_a_worker_whose_clock_is_ten_minutes_off_never_takes_over_a_live_send(
    journal_url: str, provider: str, skew: float, client_kind: str
) -> None:
    lease = 9.0  # outlasts the slow reply below (read timeout 8 s)
    with gateway(provider, journal_url, kind=client_kind, lease_seconds=lease) as run:
        config = {
            **run.emulator.client_config(run.server.base_url),
            "read_timeout": 8.0,
            "connect_timeout": CONNECT_TIMEOUT,
        }
        run.client.configure(provider, config)
        payment = seed(run)
        args = {
            "skew": skew,
            "provider": provider,
            "config": config,
            "journal": journal_url,
            "lease": lease,
            "payment": attrs.asdict(payment),
            "currency": run.emulator.currency,
            "refund_id": "r-skew",
        }
        # Started now, so that the seconds a loaded machine takes to start it come
        # before the sender's request, not during the slow reply it must ask within.
        worker = subprocess.Popen(
            [sys.executable, "-c", _SKEWED_WORKER, json.dumps(args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
            run.server.inject(refund_path(run, payment), Fault(delay=5.0, times=1))
            results: list[RefundResult] = []
            sender = threading.Thread(target=lambda: results.append(refund(run, payment, "r-skew")))
            sender.start()
            deadline = time.monotonic() + 30
            while not run.emulator.ledger.find_refund("r-skew") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert run.emulator.ledger.find_refund("r-skew"), "the refund never reached it"
            out, err = worker.communicate("ask\n", timeout=60)
            sender.join(timeout=20)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()

    assert worker.returncode == 0, err
    status, code, message = json.loads(out)
    # The sender's lease is live on the journal's clock, whatever the worker's says.
    assert (status, code) == ("UNKNOWN", "in_progress")
    no_new_id_advice(message)
    assert [r.status for r in results] == [RefundStatus.SUCCEEDED]
    assert refunds_at_the_gateway(run, payment) == 1
    assert refund_posts(run) == 1
    assert "takeover" not in kinds(journal_url, run.provider, "r-skew")


# -- a lease shorter than the timeouts is refused ----------------------------------------


def test_a_lease_shorter_than_the_read_timeout_is_refused_before_anything_is_sent(
    journal_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], client_kind: str
) -> None:
    with gateway("paywizard", journal_url, kind=client_kind, lease_seconds=3.0) as run:
        run.client.configure(
            "paywizard",
            {
                **run.emulator.client_config(run.server.base_url),
                "read_timeout": 5,
                "connect_timeout": CONNECT_TIMEOUT,
            },
        )
        payment = seed(run)
        with pytest.raises(ConfigError) as caught:
            refund(run, payment, "r-short")
        message = str(caught.value)
        assert caught.value.field == "lease_seconds" and caught.value.provider == "paywizard"
        for part in ("lease_seconds 3", "connect_timeout 0.2 s", "read_timeout 5 s"):
            assert part in message, message
        assert run.server.requests == []
        journal = run.client.journal
        assert journal is not None and journal.get("paywizard", "r-short") is None

        # The CLI refuses such a --lease the same way.
        toml = toml_for(run, tmp_path)
        batch = tmp_path / "b.csv"
        batch.write_text(
            "provider,payment_id,refund_id,amount,currency\n"
            f"paywizard,{payment.payment_id},r-cli,10.00,{run.emulator.currency}\n"
        )
        done = cli_process(
            "batch", str(batch), "--config", str(toml), "--journal", journal_url, "--lease", "1"
        )
        assert done.returncode == 2, done.stderr
        assert "lease_seconds 1 is not longer than" in done.stderr, done.stderr
        assert "nothing was sent" in done.stderr
        assert run.server.requests == []


# -- a gateway that applies the refund but answers late -----------------------------------


def test_a_refund_applied_but_answered_late_is_settled_by_the_retry(
    journal_url: str, client_kind: str
) -> None:
    """paywizard finds the refund by its refund id: the retry's query settles it."""
    with gateway("paywizard", journal_url, kind=client_kind) as run:
        payment = seed(run)
        run.server.inject(refund_path(run, payment), Fault(delay=3, times=1))

        lost = refund(run, payment, "r-late")
        again = refund(run, payment, "r-late")

    assert lost.status is RefundStatus.UNKNOWN
    assert again.status is RefundStatus.SUCCEEDED
    assert "settled by a query" in (again.message or "")
    no_new_id_advice(lost.message, again.message)
    assert refunds_at_the_gateway(run, payment) == 1
    assert refund_posts(run) == 1
    assert kinds(journal_url, "paywizard", "r-late") == [
        "claim",
        "send",
        "answer",  # UNKNOWN: no reply within the read timeout
        "takeover",
        "query",
        "answer",  # SUCCEEDED
    ]


def test_a_refund_applied_but_answered_late_where_lookup_proves_nothing(
    journal_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], client_kind: str
) -> None:
    """wonder finds a refund again only by the uuid its lost reply carried: the retry
    cannot tell, so it stays UNKNOWN (never FAILED, never resent) until the operator,
    having looked in Wonder's portal, records it."""
    with gateway("wonder", journal_url, kind=client_kind) as run:
        run.emulator.send_callbacks = False
        payment = seed(run)
        run.server.inject(refund_path(run, payment), Fault(delay=3, times=1))
        lost = refund(run, payment, "r-late")
        again = refund(run, payment, "r-late")
        options = ("--config", str(toml_for(run, tmp_path)), "--journal", journal_url)
        code, out, err = cli(
            capsys,
            "journal",
            "resolve",
            "r-late",
            "--as",
            "succeeded",
            "--reason",
            "Wonder portal lists the refund",
            "--by",
            "carol",
            *options,
        )
        done = refund(run, payment, "r-late")

    assert lost.status is RefundStatus.UNKNOWN and again.status is RefundStatus.UNKNOWN
    assert "refund_not_identified" in (again.message or "")
    assert code == 0, err
    assert done.status is RefundStatus.SUCCEEDED
    assert "decided SUCCEEDED by carol" in (done.message or "")
    no_new_id_advice(lost.message, again.message, out)
    assert refunds_at_the_gateway(run, payment) == 1
    assert refund_posts(run) == 1


# -- cron reconcile beside a live sender with a slow gateway ------------------------------


@pytest.mark.parametrize("provider", ["paywizard", "wonder"])
def test_cron_reconcile_beside_a_live_sender_never_decides_absence_early(
    journal_url: str, provider: str, tmp_path: Path, client_kind: str
) -> None:
    # Each cron run is a process of its own, seconds to start on a loaded machine: the
    # sender waits long enough for one to run beside it, and its lease leaves room for
    # another to ask after it gave up and still inside the lease and settle delay.
    read_timeout, lease = 8.0, 30.0
    with gateway(provider, journal_url, kind=client_kind, lease_seconds=lease) as run:
        toml = toml_for(run, tmp_path)
        cron = ("journal", "reconcile", "--config", str(toml), "--journal", journal_url, "--json")
        run.client.configure(
            provider,
            {
                **run.emulator.client_config(run.server.base_url),
                "read_timeout": read_timeout,
                "connect_timeout": CONNECT_TIMEOUT,
            },
        )
        payment = seed(run)
        # The gateway sits on the refund until cron has asked twice: the sender gives
        # up first (its read timeout), and cron then asks before the gateway has it.
        release = threading.Event()
        arrived, applied = applies_when(run, release)
        results: list[RefundResult] = []
        sender = threading.Thread(target=lambda: results.append(refund(run, payment, "r-cron")))
        primed = PrimedCli(*cron), PrimedCli(*cron)
        sender.start()
        try:
            assert arrived.wait(60)
            beside = primed[0].run()  # while the sender waits for its reply
            waited_beside = sender.is_alive()
            sender.join(timeout=60)
            early = primed[1].run()  # the sender gave up; the gateway has not applied it
        finally:
            release.set()
            for waiting in primed:
                waiting.close()
        assert applied.wait(60)
        later = cli_process(*cron)

    assert waited_beside, "the sender gave up before cron ran beside it"
    assert beside.returncode == 0, beside.stderr
    assert json.loads(beside.stdout) == [], "the live sender's refund was left to it"
    assert [r.status for r in results] == [RefundStatus.UNKNOWN]
    (first,) = json.loads(early.stdout)
    assert early.returncode == 4 and first["status"] == "UNKNOWN", early.stdout
    (second,) = json.loads(later.stdout)
    no_new_id_advice(results[0].message, first["message"], second["message"])
    assert refunds_at_the_gateway(run, payment) == 1
    assert refund_posts(run) == 1
    queries = [e for e in history(journal_url, provider, "r-cron") if e.kind is EventKind.QUERY]
    assert all(not q.data["applied"] for q in queries[:1])
    if provider == "paywizard":
        # Not found, too early to mean anything; then found.
        assert later.returncode == 0 and second["status"] == "SUCCEEDED", later.stdout
        assert [q.state for q in queries] == [JournalState.UNKNOWN, JournalState.SUCCEEDED]
        assert "proves nothing before" in queries[0].detail
    else:
        # Wonder cannot find it without the uuid the lost reply carried: UNKNOWN stays.
        assert later.returncode == 4 and second["status"] == "UNKNOWN", later.stdout
        assert [q.state for q in queries] == [JournalState.UNKNOWN] * 2


# -- SIGKILL between claim and send ----------------------------------------------------

_KILLED_SENDER = """
import json, os, signal, sys

from refundcore import Money, PaymentRef, RefundClient, hookimpl

args = json.loads(sys.argv[1])


class KillBeforeSending:
    @hookimpl(wrapper=True)
    def refundcore_send_request(self):
        os.kill(os.getpid(), signal.SIGKILL)
        return (yield)


client = RefundClient(
    {args["provider"]: args["config"]}, journal=args["journal"], lease_seconds=args["lease"]
)
client.register_plugin(KillBeforeSending())
client.refund(
    args["provider"],
    payment=PaymentRef(**args["payment"]),
    amount=Money("10.00", args["currency"]),
    refund_id=args["refund_id"],
)
"""


def killed_between_claim_and_send(run: SandboxRun, journal: str, payment: PaymentRef) -> None:
    args = {
        "provider": run.provider,
        "config": {
            **run.emulator.client_config(run.server.base_url),
            "read_timeout": READ_TIMEOUT,
            "connect_timeout": CONNECT_TIMEOUT,
        },
        "journal": journal,
        "lease": LEASE,
        "payment": attrs.asdict(payment),
        "currency": run.emulator.currency,
        "refund_id": "r-kill",
    }
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_SENDER, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    with open_journal(journal) as inspect:
        entry = inspect.get(run.provider, "r-kill")
        assert entry is not None and entry.state is JournalState.SUBMITTING
        assert [e.kind for e in inspect.history(run.provider, "r-kill")] == [EventKind.CLAIM]
    assert run.server.requests == []


def test_sigkill_between_claim_and_send_is_resent_with_its_refund_id_once_proven(
    journal_url: str,
    client_kind: str,
) -> None:
    """paywizard finds a refund by its refund id and its "not found" is authoritative:
    once the killed sender's lease and the settle delay are over, absence proves the
    refund never left, and the retry sends it, with the same refund id."""
    # The first retry must ask inside the settle delay, however long a loaded machine
    # takes between the lease's end and its query.
    with gateway("paywizard", journal_url, kind=client_kind, settle=WIDE_SETTLE) as run:
        payment = seed(run)
        killed_between_claim_and_send(run, journal_url, payment)
        (claim,) = history(journal_url, run.provider, "r-kill")
        lease_over = claim.at + timedelta(seconds=LEASE)
        wait_for_the_journal_clock(journal_url, lease_over)
        too_early = refund(run, payment, "r-kill")  # lease over, settle delay not
        wait_for_the_journal_clock(journal_url, lease_over + timedelta(seconds=WIDE_SETTLE))
        sent = refund(run, payment, "r-kill")

    assert too_early.status is RefundStatus.UNKNOWN
    assert "proves nothing before" in (too_early.message or "")
    assert sent.status is RefundStatus.SUCCEEDED and sent.refund_id == "r-kill"
    no_new_id_advice(too_early.message, sent.message)
    assert refunds_at_the_gateway(run, payment) == 1
    assert refund_posts(run) == 1
    assert run.emulator.ledger.find_refund("r-kill") is not None
    assert kinds(journal_url, run.provider, "r-kill") == [
        "claim",  # the killed sender, attempt 1
        "takeover",
        "query",  # not found, too early
        "answer",  # UNKNOWN
        "takeover",
        "query",  # not found, proven
        "answer",  # NOT_SENT
        "claim",  # sent again, same refund id
        "send",
        "answer",  # SUCCEEDED
    ]


def test_sigkill_where_absence_proves_nothing_waits_for_the_operator(
    journal_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], client_kind: str
) -> None:
    """wonder finds a refund again only by the uuid of its reply, which a refund never
    sent has not got: the refund stays UNKNOWN however long one waits, until an
    operator decides."""
    with gateway("wonder", journal_url, kind=client_kind) as run:
        payment = seed(run)
        killed_between_claim_and_send(run, journal_url, payment)
        time.sleep(LEASE + SETTLE)
        waiting = refund(run, payment, "r-kill")
        toml = toml_for(run, tmp_path)
        options = ("--config", str(toml), "--journal", journal_url)
        code, out, err = cli(
            capsys,
            "journal",
            "resolve",
            "r-kill",
            "--as",
            "not-sent",
            "--reason",
            "Wonder support: no refund under this order",
            "--by",
            "alice",
            *options,
        )
        assert code == 0, err
        sent = refund(run, payment, "r-kill")
        shown, history, _ = cli(capsys, "journal", "show", "r-kill", *options)
        _, as_json, _ = cli(capsys, "journal", "show", "r-kill", *options, "--json")
        unexplained = cli(
            capsys,
            "journal",
            "resolve",
            "r-kill",
            "--as",
            "failed",
            "--reason",
            " ",
            "--by",
            "x",
            *options,
        )

    assert waiting.status is RefundStatus.UNKNOWN
    assert "refund_not_identified" in (waiting.message or "")
    assert "refundcore journal resolve r-kill" in (waiting.message or "")
    assert "NOT_SENT, decided NOT_SENT by alice" in out
    assert sent.status is RefundStatus.SUCCEEDED
    no_new_id_advice(waiting.message, sent.message, out, history)
    assert refunds_at_the_gateway(run, payment) == 1
    assert refund_posts(run) == 1
    assert shown == 0
    assert "decision      decided NOT_SENT by alice: Wonder support" in history
    data = json.loads(as_json)
    assert data["state"] == "SUCCEEDED" and data["attempt"] == 3
    assert [event["kind"] for event in data["history"]] == [
        "claim",
        "takeover",
        "query",
        "answer",
        "decision",
        "claim",
        "send",
        "answer",
    ]
    decision = data["history"][4]
    assert (decision["actor"], decision["state"]) == ("alice", "NOT_SENT")
    assert decision["data"]["reason"] == "Wonder support: no refund under this order"
    assert unexplained[0] == 2 and "reason: must be a non-empty string" in unexplained[2]


# -- a provider whose lookup is not authoritative, settled by the operator ----------------


def test_a_refund_decided_failed_is_reopened_by_the_gateways_succeeded_and_reported(
    journal_url: str, caplog: pytest.LogCaptureFixture, client_kind: str
) -> None:
    """paywiser applies the refund but the reply is lost; its query sees a refund only
    by the txid the lost reply carried, so it proves nothing and the refund stays
    UNKNOWN. The operator, misled, decides it failed; the gateway's postback then says
    it succeeded. Only its unsigned parent_txid ties it to this refund, and the journal
    holds no txid to confirm it (another refund's postback, moved, would read the
    same), so it cannot settle it SUCCEEDED as a confirmed word would (see
    test_journal_callbacks); but left FAILED, the payment's limit would let it be
    refunded again: the refund goes back to UNKNOWN, and the contradiction is recorded
    and reported for the operator to decide again."""
    with gateway("paywiser", journal_url, kind=client_kind) as run:
        run.emulator.send_callbacks = False  # the postback comes later, by hand
        payment = seed(run)
        run.server.inject(refund_path(run, payment), Fault(drop=True, times=1))
        lost = refund(run, payment, "r-op")
        time.sleep(LEASE)
        still = refund(run, payment, "r-op")
        decided = run.client.resolve(
            "paywiser", "r-op", as_="failed", reason="not on the statement yet", by="bob"
        )
        repeat = refund(run, payment, "r-op")
        record = run.emulator.ledger.find_refund("r-op")
        assert record is not None and record.notify_url
        target = record.notify_url.split("/", 3)[3]
        callback = run.emulator.signed_callback("r-op", path=f"/{target}")
        note = run.client.verify_callback(
            "paywiser",
            method=callback.method,
            path=callback.path,
            headers=callback.headers,
            body=callback.body,
        )

    assert lost.status is RefundStatus.UNKNOWN and still.status is RefundStatus.UNKNOWN
    assert "refundcore journal resolve r-op" in (still.message or "")
    assert (decided.state, decided.decided_by) == (JournalState.FAILED, "bob")
    assert (repeat.status, repeat.source) == (RefundStatus.FAILED, ResultSource.DECIDED)
    assert "decided FAILED by bob: not on the statement yet" in (repeat.message or "")
    assert note.status is RefundStatus.SUCCEEDED and note.refund_id is None
    assert note.provider_refund_id == record.provider_refund_id and note.unsigned_tie
    with open_journal(journal_url) as journal:
        entry = journal.get("paywiser", "r-op")
    assert entry is not None and (entry.state, entry.decided_by) == (JournalState.UNKNOWN, None)
    assert kinds(journal_url, run.provider, "r-op")[-3:] == [
        "decision",
        "callback",
        "contradiction",
    ]
    assert "callback says SUCCEEDED, against bob's decision FAILED (only unsigned" in (caplog.text)
    no_new_id_advice(lost.message, still.message, repeat.message)
    assert refunds_at_the_gateway(run, payment) == 1
    assert refund_posts(run) == 1


# -- journal files that existed are never re-created --------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "foreign"])
def test_a_finished_batch_run_again_on_a_damaged_journal_sends_nothing(
    tmp_path: Path, damage: str
) -> None:
    journal_path = tmp_path / "journal.db"
    journal = f"sqlite:///{journal_path}"
    with gateway("paywiser", journal) as run:
        toml = toml_for(run, tmp_path)
        payments = [seed(run) for _ in range(4)]
        batch = tmp_path / "b.csv"
        batch.write_text(
            "provider,payment_id,amount,currency\n"
            + "".join(f"paywiser,{p.payment_id},10.00,{run.emulator.currency}\n" for p in payments)
        )
        command = ("batch", str(batch), "--config", str(toml), "--journal", journal)
        first = cli_process(*command)
        run.client.close()
        if damage == "empty":
            journal_path.write_bytes(b"")
        elif damage == "truncated":
            journal_path.write_bytes(journal_path.read_bytes()[:1000])
        else:
            journal_path.unlink()
            import sqlite3

            with sqlite3.connect(journal_path) as other:
                other.execute("CREATE TABLE invoices (id INTEGER)")
        damaged = journal_path.read_bytes()
        again = cli_process(*command)
        listing = cli_process("journal", "list", "--journal", journal)

    assert first.returncode == 0, first.stderr
    assert again.returncode == 5, again.stderr
    assert f"journal {journal} is" in again.stderr
    assert listing.returncode == 5 and f"journal {journal} is" in listing.stderr
    assert journal_path.read_bytes() == damaged, "the damaged journal is left as it was"
    assert [refunds_at_the_gateway(run, p) for p in payments] == [1] * 4
    no_new_id_advice(again.stderr)


def test_a_batch_whose_journal_forgot_it_is_not_sent_again(tmp_path: Path) -> None:
    """The report says the rows were sent; the journal given does not know the batch
    (another journal, or one lost): nothing is sent, and the command says why."""
    with gateway("paywiser", f"sqlite:///{tmp_path / 'first.db'}") as run:
        toml = toml_for(run, tmp_path)
        payments = [seed(run) for _ in range(3)]
        batch = tmp_path / "b.csv"
        batch.write_text(
            "provider,payment_id,amount,currency\n"
            + "".join(f"paywiser,{p.payment_id},10.00,{run.emulator.currency}\n" for p in payments)
        )
        report = tmp_path / "report.json"
        base = ("batch", str(batch), "--config", str(toml), "--report", str(report))
        first = cli_process(*base, "--journal", f"sqlite:///{tmp_path / 'first.db'}")
        again = cli_process(*base, "--journal", f"sqlite:///{tmp_path / 'second.db'}")

    assert first.returncode == 0, first.stderr
    assert again.returncode == 2
    assert "says 3 row(s) of" in again.stderr and "has no record of them" in again.stderr
    assert "Nothing was sent" in again.stderr
    assert [refunds_at_the_gateway(run, p) for p in payments] == [1] * 3
    no_new_id_advice(again.stderr)


# -- batch rows killed before they started -------------------------------------------


def test_batch_rows_killed_before_they_started_are_sent_with_their_refund_ids(
    journal_url: str, tmp_path: Path, client_kind: str
) -> None:
    """A batch process died holding rows: two only claimed in the batch queue, one
    claimed as a refund too (its request never left). Run again, every row is sent
    once, under the refund id it was given."""
    from refundcore.batch import read_batch_file
    from refundcore.journal import BatchItem
    from refundcore.journal.records import new_refund

    with gateway("paywizard", journal_url, kind=client_kind) as run:
        payments = [seed(run) for _ in range(3)]
        batch = tmp_path / "b.csv"
        batch.write_text(
            "provider,payment_id,refund_id,amount,currency\n"
            + "".join(
                f"paywizard,{p.payment_id},r-batch-{n},10.00,{run.emulator.currency}\n"
                for n, p in enumerate(payments)
            )
        )
        parsed = read_batch_file(batch)
        journal = run.client.journal
        assert journal is not None
        journal.open_batch(
            parsed.batch_id,
            [BatchItem(row.line or 0, row.provider, row.refund_id or "") for row in parsed.rows],
        )
        journal.claim_batch(parsed.batch_id, owner="dead", limit=3, lease_seconds=LEASE)
        dying = parsed.rows[2]
        journal.claim(
            new_refund("paywizard", dying.operation(), None), owner="dead", lease_seconds=LEASE
        )
        time.sleep(LEASE + SETTLE)

        report = run.client.refund_many(parsed, workers=2)

    assert report.succeeded, [(o.line, o.status, o.message) for o in report.outcomes]
    assert [o.refund_id for o in report.outcomes] == ["r-batch-0", "r-batch-1", "r-batch-2"]
    assert [refunds_at_the_gateway(run, p) for p in payments] == [1, 1, 1]
    assert refund_posts(run) == 3
    for n in range(3):
        assert run.emulator.ledger.find_refund(f"r-batch-{n}") is not None
