"""Fixtures for the Celery tests: a PostgreSQL server of their own (a test stops it to
make a journal outage), a Redis broker per test (Debian's ``redis-server`` on a free
loopback port, appending to a file so that a restart keeps its queues), the testpay
emulator, and real ``celery worker`` processes running an app that installs
refundcore's tasks.

``REFUNDCORE_SKIP_CELERY=1`` skips them; without ``redis-server`` they error (``make``
installs it), never skip silently.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from refundcore import Money, PaymentRef, RefundClient
from refundcore.batch import BatchReport, BatchRow
from refundcore.celery import batch_report, submit_batch, wait_for_batch
from refundcore.sandbox import Fault, SandboxRun
from tests.journal.conftest import SKIP_ENV as SKIP_POSTGRES
from tests.journal.conftest import _free_port, _pg_bindir, _run

SKIP_ENV = "REFUNDCORE_SKIP_CELERY"
#: The lease of rows and refunds: longer than testpay's timeouts (2 s + 0.5 s + margin),
#: short enough to wait out when a worker dies.
LEASE = 4.0
HKD = "HKD"

APP = """
    import json
    import logging
    import os

    from celery import Celery

    import refundcore.celery
    from refundcore import RefundClient
    from refundcore.logs import record_fields


    class Events(logging.Handler):
        \"\"\"The tasks' log records as JSON lines, in one file every process appends to.\"\"\"

        def emit(self, record):
            file = os.environ.get("TEST_EVENTS")  # unset between tests in the test process
            if file is None:
                return
            fields = {"event": record.getMessage(), "pid": os.getpid(), **record_fields(record)}
            with open(file, "a") as events:
                events.write(json.dumps(fields, default=str) + "\\n")


    # Once per process: the tests import this module again for every test.
    logger = logging.getLogger("refundcore.celery")
    if not any(handler.name == "test-events" for handler in logger.handlers):
        handler = Events()
        handler.name = "test-events"
        logger.addHandler(handler)

    app = Celery("refundcore_tests", broker=os.environ["TEST_BROKER"])
    app.conf.update(
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": 8,
            "unacked_restore_interval": 1,
            "unacked_restore_throttle": 1,
            # Every worker takes the transport's restore lock about once a second; one
            # killed while holding it (likelier under load) blocks every restore until
            # the lock expires: 300 s by default, longer than any test waits.
            "unacked_mutex_expire": 3,
        },
        worker_hijack_root_logger=False,
    )
    tasks = refundcore.celery.install(
        app,
        lambda: RefundClient.from_file(
            os.environ["TEST_CONFIG"],
            journal=os.environ["TEST_JOURNAL"],
            lease_seconds=float(os.environ["TEST_LEASE"]),
            journal_wait=1,
        ),
        settings=refundcore.celery.TaskSettings(
            transient_retries=int(os.environ.get("TEST_RETRIES", "5")),
            backoff_max=float(os.environ.get("TEST_BACKOFF_MAX", "2")),
            reconcile_after=1,
        ),
    )
"""


def _skip_unless_wanted() -> None:
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: Celery tests skipped on request")
    if os.environ.get(SKIP_POSTGRES) == "1":
        pytest.skip(f"{SKIP_POSTGRES}=1: the Celery tests need PostgreSQL")
    if shutil.which("redis-server") is None:
        pytest.fail(
            "redis-server not found: install the Debian package `redis-server` (make does), "
            f"or set {SKIP_ENV}=1 to skip the Celery tests"
        )


class PostgresServer:
    """A throwaway PostgreSQL server on loopback that a test may stop and start again."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: make installs them")
        self._bindir = bindir
        self._base = Path(tempfile.mkdtemp(prefix="refundcore-celery-pg-"))
        self._as: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self._base, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._data = self._base / "data"
        self.port = _free_port()
        _run(
            [
                *self._as,
                str(bindir / "initdb"),
                *("-D", str(self._data), "-U", "postgres", "--auth=trust", "--no-sync"),
            ]
        )
        self.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *command: str) -> None:
        _run([*self._as, str(self._bindir / "pg_ctl"), "-D", str(self._data), *command])

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self._base} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._ctl("-l", str(self._base / "log"), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def database(self) -> str:
        """A fresh, empty database's URL."""
        import psycopg

        name = f"celery_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def close(self) -> None:
        subprocess.run(
            [
                *self._as,
                str(self._bindir / "pg_ctl"),
                "-D",
                str(self._data),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self._base, ignore_errors=True)


@pytest.fixture(scope="session")
def celery_postgres() -> Iterator[PostgresServer]:
    _skip_unless_wanted()
    server = PostgresServer()
    yield server
    server.close()


class RedisServer:
    """``redis-server`` on a free loopback port, appending every write to a file in
    ``folder`` so that a restart keeps the queues (as a broker in production must)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "redis-server",
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self._folder)),
                *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
                *("--protected-mode", "no", "--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(timeout=20)
            self._process = None


@attrs.define
class Rig:
    """The emulator, the journal, the broker, the app module and the workers of a test."""

    run: SandboxRun
    folder: Path
    journal: str
    redis: RedisServer
    postgres: PostgresServer
    env: dict[str, str]
    client: RefundClient
    workers: dict[str, subprocess.Popen[bytes]] = attrs.Factory(dict)

    def payments(self, count: int) -> list[PaymentRef]:
        return [self.run.emulator.seed_payment(Money("100.00", HKD)) for _ in range(count)]

    def rows(self, payments: list[PaymentRef]) -> list[BatchRow]:
        return [
            BatchRow(provider="testpay", payment_id=str(p.payment_id), amount=Money("10.00", HKD))
            for p in payments
        ]

    def write_csv(self, payments: list[PaymentRef]) -> Path:
        file = self.folder / "refunds.csv"
        file.write_text(
            "provider,payment_id,amount,currency\n"
            + "".join(f"testpay,{p.payment_id},10.00,{HKD}\n" for p in payments)
        )
        return file

    def start_worker(self, name: str, concurrency: int = 2, pool: str = "threads") -> None:
        log = (self.folder / f"{name}.log").open("wb")
        self.workers[name] = subprocess.Popen(
            [
                sys.executable,
                *("-m", "celery", "-A", "refunds_app", "worker", "--pool", pool),
                *("-c", str(concurrency), "-n", f"{name}@%h", "-l", "WARNING"),
                *("--without-gossip", "--without-mingle", "--without-heartbeat"),
            ],
            cwd=self.folder,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill_worker(self, name: str) -> None:
        worker = self.workers.pop(name)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

    def stop_workers(self) -> None:
        for worker in self.workers.values():
            worker.send_signal(signal.SIGTERM)
        for worker in self.workers.values():
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        self.workers.clear()

    def worker_logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in self.folder.glob("*.log")
        )

    def events(self, event: str) -> list[dict[str, Any]]:
        """The workers' log records of ``event`` so far, in the order they were written."""
        file = self.folder / "events.jsonl"
        lines = file.read_text().splitlines() if file.exists() else []
        # A line being written as this reads it is complete on the next read.
        found = [json.loads(line) for line in lines if line.endswith("}")]
        return [record for record in found if record["event"] == event]

    def done(self, batch_id: str) -> int:
        """Rows with an outcome (0 while the journal is unreachable)."""
        from refundcore.celery import batch_progress
        from refundcore.errors import JournalError

        try:
            progress = batch_progress(self.client, batch_id)
        except JournalError:
            return 0
        return progress.done

    def wait_for_rows(self, batch_id: str, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.done(batch_id) < count:
            assert time.monotonic() < deadline, self.worker_logs()
            time.sleep(0.05)

    def batch_under_way(self, count: int, delay: float) -> tuple[Any, list[PaymentRef], str]:
        """``count`` rows submitted to two workers, the gateway answering in ``delay``
        seconds; returned once 4 rows are done, the moment a test breaks something:
        the app, the payments and the batch's id."""
        payments = self.payments(count)
        app = app_of(self)
        self.run.server.inject("/v1/refunds", Fault(delay=delay))
        self.start_worker("w1")
        self.start_worker("w2")
        submitted = submit_batch(app, self.client, self.rows(payments), lease_seconds=4)
        self.wait_for_rows(submitted.batch_id, 4)
        return app, payments, submitted.batch_id

    def settled_report(self, batch_id: str, timeout: float = 90) -> BatchReport:
        """The batch's report once every row is done and every refund settled."""
        deadline = time.monotonic() + timeout
        report = wait_for_batch(self.client, batch_id, poll=0.2, timeout=timeout)
        while report.counts["SUCCEEDED"] != report.total:
            if time.monotonic() > deadline:
                pytest.fail(f"not settled: {report.counts}\n{self.worker_logs()}")
            report.close()
            time.sleep(0.3)
            report = batch_report(self.client, batch_id)
        return report

    def assert_refunded_once(self, payments: list[PaymentRef]) -> None:
        ledger = self.run.emulator.ledger
        found = [ledger.find_payment(payment_id=p.payment_id) for p in payments]
        refunds = [[] if p is None else p.refunds for p in found]
        assert [len(r) for r in refunds] == [1] * len(payments), self.worker_logs()
        assert {str(r[0].amount.amount) for r in refunds} == {"10.00"}


@pytest.fixture
def rig(
    celery_postgres: PostgresServer,
    installed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Rig]:
    """Everything but the workers (``rig.start_worker``): they are stopped afterwards."""
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "testpay")
    journal = celery_postgres.database()
    redis = RedisServer(tmp_path)
    (tmp_path / "refunds_app.py").write_text(textwrap.dedent(APP))
    # A port of its own, so that a test can stop the emulator and start it again there.
    with SandboxRun("testpay", read_timeout=2, port=_free_port()) as run:
        config = run.emulator.client_config(run.server.base_url)
        toml = tmp_path / "refundcore.toml"
        toml.write_text(
            "[providers.testpay]\nread_timeout = 2\nconnect_timeout = 0.5\n"
            + "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(installed), str(tmp_path)]),
            "REFUNDCORE_PLUGINS": "testpay",
            "TEST_BROKER": redis.url,
            "TEST_CONFIG": str(toml),
            "TEST_JOURNAL": journal,
            "TEST_LEASE": str(LEASE),
            "TEST_EVENTS": str(tmp_path / "events.jsonl"),
        }
        for name in ("TEST_BROKER", "TEST_CONFIG", "TEST_JOURNAL", "TEST_LEASE", "TEST_EVENTS"):
            monkeypatch.setenv(name, env[name])
        monkeypatch.syspath_prepend(str(tmp_path))
        client = RefundClient.from_file(toml, journal=journal, lease_seconds=LEASE)
        rig = Rig(run, tmp_path, journal, redis, celery_postgres, env, client)
        try:
            yield rig
        finally:
            rig.stop_workers()
            client.close()
            redis.stop()
            sys.modules.pop("refunds_app", None)


def app_of(rig: Rig) -> Any:
    """The test's Celery app, as the submitting side imports it."""
    import importlib

    return importlib.import_module("refunds_app").app
