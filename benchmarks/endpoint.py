"""The callback endpoint under load: refundcore's WSGI app against a hand-written WSGI
endpoint, both served by waitress, in requests per second.

    python -m benchmarks.endpoint [PROVIDER ...]

Each provider's genuine callback (:func:`benchmarks.callbacks.genuine_callbacks`) is
POSTed over and over to two servers, each in a process of its own with the same
waitress settings (``threads`` worker threads):

* refundcore: :func:`refundcore.wsgi.callback_app` over a ``RefundClient`` configured for
  the provider, without a journal (a hand-written endpoint records nothing either);
* the baseline: :func:`benchmarks.baselines.handwritten_callback_app`, a merchant's own
  WSGI app around the hand-written verifier the ``callbacks`` benchmark uses.

Both hand a genuine notification to a function that does nothing and answer the
gateway's acknowledgement. The load is bounded and comes from this process over
loopback: ``connections`` keep-alive connections, each sending the next request when
the answer to the last has arrived. The sides take turns (A-B-B-A…) for ``seconds`` of
wall time each; the figure is the ratio of the median rates. The servers' own CPU time
per request (from ``/proc``) is reported beside it, being less sensitive to the load of
other processes on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .baselines import CALLBACK_ACKS, handwritten_callback_app
from .callbacks import genuine_callbacks
from .common import (
    PROVIDERS,
    BenchmarkError,
    ChildServer,
    Figure,
    loopback_only,
    serve_until_stdin_closes,
)
from .report import text_table

TARGET = 0.9
SIDES = ("refundcore", "handwritten")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)", re.IGNORECASE)
_SKIPPED_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


def _ignore(notification: object) -> None:
    """What both endpoints hand a genuine notification to."""


def serve(side: str, provider: str, config_file: Path, threads: int) -> None:
    """The child process: serve one side's app on a loopback port until stdin closes."""
    from waitress.server import create_server

    config = json.loads(config_file.read_text(encoding="utf-8"))
    if side == "refundcore":
        from refundcore import RefundClient
        from refundcore.wsgi import callback_app

        client = RefundClient({provider: config}, journal=None)
        client.config_for(provider)  # the plugin loaded and the keys read before any load
        app: Any = callback_app(client, _ignore)
    else:
        app = handwritten_callback_app(provider, config, _ignore)
    server: Any = create_server(app, host="127.0.0.1", port=0, threads=threads)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    try:
        serve_until_stdin_closes({"port": server.effective_port})
    finally:
        server.close()


def _request(port: int, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() not in _SKIPPED_HEADERS]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _exchange(sock: socket.socket, request: bytes, buffer: bytearray) -> bytes:
    """Send ``request`` and read one answer; its status line and body."""
    sock.sendall(request)
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end])
            match = _CONTENT_LENGTH.search(head)
            size = end + 4 + (int(match.group(1)) if match else 0)
            if len(buffer) >= size:
                answer = head.partition(b"\r\n")[0] + b"\n" + bytes(buffer[end + 4 : size])
                del buffer[:size]
                return answer
        chunk = sock.recv(65536)
        if not chunk:
            raise BenchmarkError("the server closed the connection")
        buffer += chunk


def _load(port: int, request: bytes, expected: bytes, connections: int, seconds: float) -> float:
    """Requests answered per second over ``connections`` closed-loop connections."""
    counts = [0] * connections
    failures: list[str] = []
    start = threading.Barrier(connections + 1)
    stop_at = [0.0]

    def connection(index: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = bytearray()
            start.wait()
            try:
                while time.perf_counter() < stop_at[0]:
                    answer = _exchange(sock, request, buffer)
                    if answer != expected:
                        failures.append(answer[:200].decode("latin-1"))
                        return
                    counts[index] += 1
            except (OSError, BenchmarkError) as exc:
                failures.append(str(exc))

    threads = [threading.Thread(target=connection, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise BenchmarkError(f"unexpected answer: {failures[0]!r}")
    return sum(counts) / elapsed


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (None where /proc is not there)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    provider: str,
    *,
    rounds: int = 5,
    seconds: float = 1.0,
    connections: int = 4,
    threads: int = 4,
) -> Figure:
    """One provider's endpoint throughput ratio (refundcore / hand-written)."""
    callbacks = genuine_callbacks(provider)
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(json.dumps(callbacks.config), encoding="utf-8")
        servers = {
            side: ChildServer(
                "benchmarks.endpoint",
                ["--serve", side, provider, str(config_file), "--threads", str(threads)],
                name=f"{side} endpoint for {provider}",
            )
            for side in SIDES
        }
        with servers["refundcore"], servers["handwritten"]:
            load: dict[str, tuple[int, bytes, bytes]] = {}
            for side, callback in zip(SIDES, (callbacks.ours, callbacks.theirs), strict=True):
                port = int(servers[side].info["port"])
                request = _request(port, callback.path, callback.headers, callback.body)
                load[side] = (port, request, _expected(provider))
            rates: dict[str, list[float]] = {side: [] for side in SIDES}
            cpu: dict[str, list[float]] = {side: [] for side in SIDES}
            try:
                for side in SIDES:  # warm-up, and a check that every answer is the ack
                    _load(*load[side], connections, min(seconds, 0.2))
                for index in range(rounds):
                    for side in SIDES if index % 2 == 0 else reversed(SIDES):
                        before = _cpu_seconds(servers[side].pid)
                        rate = _load(*load[side], connections, seconds)
                        after = _cpu_seconds(servers[side].pid)
                        rates[side].append(rate)
                        if before is not None and after is not None:
                            cpu[side].append((after - before) / (rate * seconds))
            except BenchmarkError as exc:
                problems = "; ".join(f"{s}: {servers[s].errors()}" for s in SIDES)
                raise BenchmarkError(f"{provider} endpoint: {exc} ({problems})") from exc
    server_cpu = ""
    if all(cpu.values()):
        ours_cpu, theirs_cpu = (statistics.median(cpu[side]) * 1e6 for side in SIDES)
        server_cpu = f"; server CPU per request {ours_cpu:.0f} and {theirs_cpu:.0f} µs"
    return Figure(
        name=f"callback endpoint on waitress (WSGI), requests per second: {provider}",
        ours=statistics.median(rates["refundcore"]),
        baseline=statistics.median(rates["handwritten"]),
        unit="requests/s",
        target=TARGET,
        higher_is_better=True,
        detail=f"{rounds} rounds of {seconds:g} s per side, A-B-B-A, {connections} keep-alive "
        f"connections, waitress with {threads} threads; medians{server_cpu}",
    )


def _expected(provider: str) -> bytes:
    """The answer both endpoints give a genuine callback: status line and body."""
    status, _, body = CALLBACK_ACKS[provider]
    return f"HTTP/1.1 {status}".encode() + b"\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("providers", nargs="*", default=list(PROVIDERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="wall seconds per round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4, help="waitress worker threads")
    parser.add_argument("--serve", nargs=3, metavar=("SIDE", "PROVIDER", "CONFIG"), help="child")
    args = parser.parse_args(argv)
    loopback_only()
    if args.serve:
        side, provider, config_file = args.serve
        serve(side, provider, Path(config_file), args.threads)
        return 0
    figures = [
        measure(
            provider,
            rounds=args.rounds,
            seconds=args.seconds,
            connections=args.connections,
            threads=args.threads,
        )
        for provider in args.providers
    ]
    print(text_table(figures, {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
