"""The callback endpoint under uvicorn: requests per second served by
:func:`refundcore.asgi.callback_app` against a hand-written ASGI endpoint on the same
server, both answering the same genuine PayWizard callback.

The hand-written endpoint reads the body, verifies it with the hand-written verifier
(:func:`benchmarks.baselines.handwritten_verifier`: what a merchant writes from the
gateway's specification) and answers PayWizard's acknowledgement; refundcore's app is
given an ``AsyncRefundClient`` (no journal) and a coroutine ``on_notification`` that
does nothing. Each side is served by uvicorn (h11, one worker, no access log) in a
process of its own; a load generator in this process keeps ``connections`` keep-alive
connections busy for ``seconds`` and counts the answers (every one must be 200 with the
acknowledgement). The sides run A-B-B-A; the figure is answers per wall second.

    python -m benchmarks.asgi_endpoint [--seconds 3] [--connections 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .common import REPO, BenchmarkError, Figure, loopback_only
from .report import text_table

TARGET = 0.9
PROVIDER = "paywizard"


def _callback() -> dict[str, Any]:
    """A genuine callback about a refund made through the emulator, with the config
    that verifies it and the answer PayWizard expects."""
    from refundcore import Money, RefundClient, RefundStatus
    from refundcore.sandbox import SandboxRun

    with SandboxRun(
        PROVIDER, client=RefundClient(journal=None), emulator_options={"send_callbacks": False}
    ) as run:
        emulator = run.emulator
        payment = emulator.seed_payment(Money("100.00", emulator.currency))
        refunded = run.client.refund(
            PROVIDER, payment=payment, amount=Money("10.00", emulator.currency)
        )
        if refunded.status is not RefundStatus.SUCCEEDED:
            raise BenchmarkError(f"refund {refunded.status}: {refunded.message}")
        callback = emulator.signed_callback(refunded.refund_id, path=f"/{PROVIDER}")
        return {
            "config": emulator.client_config(run.server.base_url),
            "path": callback.path,
            "headers": dict(callback.headers),
            "body": callback.body.decode(),
            "ack": run.info.callback_ack.body.decode(),
            "ack_type": run.info.callback_ack.content_type,
        }


def _ours(job: Mapping[str, Any]) -> Any:
    from refundcore import AsyncRefundClient
    from refundcore.asgi import callback_app

    async def handled(note: object) -> None:
        pass

    client = AsyncRefundClient({PROVIDER: job["config"]}, journal=None)
    return callback_app(client, handled)


def _theirs(job: Mapping[str, Any]) -> Any:
    from .baselines import handwritten_verifier

    verify = handwritten_verifier(PROVIDER, job["config"])
    ack = job["ack"].encode()
    ok_headers = [
        (b"content-type", job["ack_type"].encode()),
        (b"content-length", str(len(ack)).encode()),
    ]
    refused_headers = [(b"content-type", b"text/plain"), (b"content-length", b"9")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]
        }
        query = scope["query_string"].decode("latin-1")
        path = scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
        if verify(path, headers, body) is None:
            await send({"type": "http.response.start", "status": 400, "headers": refused_headers})
            await send({"type": "http.response.body", "body": b"rejected\n"})
            return
        await send({"type": "http.response.start", "status": 200, "headers": ok_headers})
        await send({"type": "http.response.body", "body": ack})

    return app


def _serve(job: Mapping[str, Any]) -> None:
    """Serve one side with uvicorn until stdin closes; print the port first."""
    import socket
    import threading

    import uvicorn

    app = _ours(job) if job["side"] == "ours" else _theirs(job)
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, http="h11", lifespan="off", access_log=False, log_level="warning")
    )

    def stop_on_eof() -> None:
        sys.stdin.read()
        server.should_exit = True

    threading.Thread(target=stop_on_eof, daemon=True).start()
    print(sock.getsockname()[1], flush=True)
    server.run(sockets=[sock])


async def _load(port: int, request: bytes, expect: bytes, connections: int, seconds: float) -> int:
    """Answers received over ``seconds`` from ``connections`` keep-alive connections,
    each sending ``request`` again as soon as the last answer is in."""
    stop = time.perf_counter() + seconds

    async def one() -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        count = 0
        try:
            while time.perf_counter() < stop:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200") or body != expect:
                    raise BenchmarkError(f"the endpoint answered {head[:40]!r} {body[:40]!r}")
                count += 1
        finally:
            writer.close()
        return count

    return sum(await asyncio.gather(*(one() for _ in range(connections))))


def _request_bytes(callback: Mapping[str, Any]) -> bytes:
    body = callback["body"].encode()
    lines = [f"POST {callback['path']} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [
        f"{name}: {value}"
        for name, value in callback["headers"].items()
        if name.lower() not in ("host", "content-length")
    ]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _rate(side: str, callback: Mapping[str, Any], connections: int, seconds: float) -> float:
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.asgi_endpoint", "--serve"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    try:
        server.stdin.write(json.dumps({**callback, "side": side}) + "\n")
        server.stdin.flush()
        ready, _, _ = select.select([server.stdout], [], [], 60)
        line = server.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            raise BenchmarkError(f"uvicorn ({side}) did not start: {server.stderr.read()[-2000:]}")
        port = int(line)
        request = _request_bytes(callback)
        expect = callback["ack"].encode()
        asyncio.run(_load(port, request, expect, connections, min(0.5, seconds)))  # warm-up
        started = time.perf_counter()
        answered = asyncio.run(_load(port, request, expect, connections, seconds))
        return answered / (time.perf_counter() - started)
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def measure(*, seconds: float = 3.0, connections: int = 8, rounds: int = 2) -> Figure:
    """Requests-per-second ratio (refundcore's app / a hand-written endpoint)."""
    callback = _callback()
    if urlsplit(callback["path"]).path != f"/{PROVIDER}":
        raise BenchmarkError(f"unexpected callback path {callback['path']!r}")
    rates: dict[str, list[float]] = {"ours": [], "theirs": []}
    for index in range(rounds):
        for side in ("ours", "theirs") if index % 2 == 0 else ("theirs", "ours"):
            rates[side].append(_rate(side, callback, connections, seconds))
    return Figure(
        name=f"callback endpoint under uvicorn (ASGI) vs a hand-written endpoint: {PROVIDER}",
        ours=sum(rates["ours"]) / rounds,
        baseline=sum(rates["theirs"]) / rounds,
        unit="requests/s",
        target=TARGET,
        higher_is_better=True,
        detail=f"{rounds} runs per side, A-B-B-A, {seconds:g} s each over {connections} "
        "keep-alive connections; uvicorn (h11) in its own process; refundcore's app with an "
        "AsyncRefundClient, no journal",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    loopback_only()
    if args.serve:
        job = json.loads(sys.stdin.readline())
        _serve(job)
        return 0
    figure = measure(seconds=args.seconds, connections=args.connections, rounds=args.rounds)
    print(text_table([figure], {}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
