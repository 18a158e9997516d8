"""A batch on two Celery workers against the same batch in one process, and the global
rate limit's accuracy.

Throughput: the same number of rows (PayWizard, a gateway holding every reply back
``delay`` seconds) refunded by ``RefundClient.refund_many`` in this process with
``threads`` worker threads (what one ``refundcore batch`` process does), and by two
``celery worker`` processes (``--pool threads``, half the threads each) on a Redis
broker, submitted with ``refundcore.celery.submit_batch`` and timed from the submit to
the last row's outcome. Both journal to the same throwaway PostgreSQL server (a
database each). The ratio is Celery's refunds per second over the local batch's, in
the same run.

Rate limit: a batch limited to ``rate`` requests a second on the same two workers;
the achieved rate is the rows over the time from the first row's outcome to the last
(plus one interval): the shared limit must hold across both workers together, so the
achieved rate is at most the requested one, and should not fall far below it.
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
from contextlib import contextmanager
from glob import glob
from pathlib import Path
from typing import Any

from refundcore import Money, RefundClient

from .common import BenchmarkError, Figure, Gateway

PROVIDER = "paywizard"
PAYMENTS = 64
PAYMENT_AMOUNT = "100000.00"
THROUGHPUT_TARGET = 0.5
RATE_TARGET = 0.9

_APP = """
    import os

    from celery import Celery

    import refundcore.celery
    from refundcore import RefundClient

    app = Celery("refundcore_bench", broker=os.environ["BENCH_BROKER"])
    app.conf.update(worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True)
    refundcore.celery.install(
        app,
        lambda: RefundClient.from_file(
            os.environ["BENCH_CONFIG"],
            journal=os.environ["BENCH_JOURNAL"],
            pool_size=int(os.environ["BENCH_THREADS"]),
        ),
    )
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server (Debian's binaries) on loopback; its URL."""
    found = sorted(glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    if not found:
        raise BenchmarkError("PostgreSQL is not installed (make bench installs it)")
    bindir = Path(found[-1]).parent
    # Its own folder: the server's account must reach it (a root-only parent would not do).
    base = Path(tempfile.mkdtemp(prefix="refundcore-bench-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(base, account.pw_uid, account.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c max_connections=200"
    ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    subprocess.run(
        [*ctl, "-l", str(base / "log"), "-o", options, "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def _redis(folder: Path) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        raise BenchmarkError("redis-server is not installed (make bench installs it)")
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                raise BenchmarkError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)


def _database(server: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.rsplit("/", 1)[0] + f"/{name}"


def _rows(gateway: Gateway, count: int, tag: str) -> list[Any]:
    from refundcore.batch import BatchRow

    payments = gateway.payments
    return [
        BatchRow(
            provider=PROVIDER,
            payment_id=payments[index % len(payments)]["payment_id"],
            amount=Money("1.00", gateway.currency),
            refund_id=f"{tag}-{index}",
        )
        for index in range(count)
    ]


def _check(counts: dict[str, int], total: int, what: str) -> None:
    if counts.get("SUCCEEDED") != total:
        raise BenchmarkError(f"{what}: not every row succeeded: {counts}")


def measure(
    *, refunds: int = 5000, threads: int = 16, delay: float = 0.02, rate: float = 50.0
) -> list[Figure]:
    """The throughput ratio (two Celery workers / one process) and the rate limit's
    accuracy (achieved / requested)."""
    from refundcore.celery import submit_batch, wait_for_batch

    with (
        tempfile.TemporaryDirectory() as tmp,
        Gateway(PROVIDER, payments=PAYMENTS, amount=PAYMENT_AMOUNT, delay=delay) as gateway,
    ):
        folder = Path(tmp)
        with _postgres() as server, _redis(folder) as broker:
            config = folder / "refundcore.toml"
            config.write_text(
                f"[providers.{PROVIDER}]\n"
                + "".join(f"{k} = {json.dumps(v)}\n" for k, v in gateway.config.items())
            )
            (folder / "bench_app.py").write_text(textwrap.dedent(_APP))
            local_journal, celery_journal = _database(server), _database(server)
            with RefundClient.from_file(config, journal=local_journal, pool_size=threads) as local:
                local.refund_many(
                    _rows(gateway, threads * 2, "warm-local"), workers=threads
                ).close()
                started = time.perf_counter()
                with local.refund_many(_rows(gateway, refunds, "local"), workers=threads) as report:
                    local_seconds = time.perf_counter() - started
                    _check(report.counts, refunds, "local batch")
            env = {
                **os.environ,
                "PYTHONPATH": str(folder),
                "BENCH_BROKER": broker,
                "BENCH_CONFIG": str(config),
                "BENCH_JOURNAL": celery_journal,
                "BENCH_THREADS": str(threads // 2),
            }
            os.environ.update({k: v for k, v in env.items() if k.startswith("BENCH_")})
            sys.path.insert(0, str(folder))
            workers = [
                subprocess.Popen(
                    [
                        sys.executable,
                        *("-m", "celery", "-A", "bench_app", "worker", "--pool", "threads"),
                        *("-c", str(threads // 2), "-n", f"bench{index}@%h", "-l", "ERROR"),
                        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
                    ],
                    cwd=folder,
                    env=env,
                    stdout=subprocess.DEVNULL,
                )
                for index in range(2)
            ]
            try:
                import bench_app  # type: ignore[import-not-found]

                app = bench_app.app
                with RefundClient.from_file(config, journal=celery_journal) as client:

                    def run(count: int, tag: str, limit: float | None) -> tuple[float, Any]:
                        begun = time.perf_counter()
                        submitted = submit_batch(
                            app, client, _rows(gateway, count, tag), rate=limit
                        )
                        done = wait_for_batch(client, submitted.batch_id, poll=0.05)
                        seconds = time.perf_counter() - begun
                        _check(done.counts, count, f"celery batch {tag}")
                        done.close()
                        return seconds, submitted

                    run(threads * 2, "warm-celery", None)
                    celery_seconds, _ = run(refunds, "celery", None)
                    limited = max(20, int(rate * 10))
                    rate_seconds, _ = run(limited, "rated", rate)
            finally:
                for worker in workers:
                    worker.send_signal(signal.SIGTERM)
                for worker in workers:
                    worker.wait(timeout=30)
                sys.modules.pop("bench_app", None)
                sys.path.remove(str(folder))
    # The first row starts at once and the last one 1/rate after the one before it.
    achieved = limited / (rate_seconds + 1.0 / rate)
    return [
        Figure(
            name=f"batch of {refunds}, {delay * 1000:g} ms latency: 2 Celery workers vs 1 process",
            ours=refunds / celery_seconds,
            baseline=refunds / local_seconds,
            unit="refunds/s",
            target=THROUGHPUT_TARGET,
            higher_is_better=True,
            detail=f"{threads} threads in all on each side, PostgreSQL journal, Redis broker; "
            "submit to last outcome",
        ),
        Figure(
            name=f"Celery global rate limit, {limited} rows at {rate:g}/s on 2 workers",
            ours=achieved,
            baseline=rate,
            unit="refunds/s",
            target=RATE_TARGET,
            higher_is_better=True,
            detail="achieved / requested, submit to last outcome (never above 1 by design)",
        ),
    ]
