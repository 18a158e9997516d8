"""The callback app under slow, lying and oversized clients, over raw sockets.

Under gunicorn (sync worker: the app reads the body off the socket) a body that does
not arrive is answered 408 within ``body_timeout`` and the worker is free again; under
waitress (which reads the whole body before calling the app) slow clients never hold
a worker thread at all. Either way: 413 for a body over the cap, 400 for a malformed
or unmatched Content-Length, never a 5xx.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from refundcore import ConfigError, RefundClient
from refundcore.wsgi import MAX_BODY, callback_app
from tests.raw_http import send_raw

pytestmark = pytest.mark.timeout(120)

BODY_TIMEOUT = 1.0
# Room for a loaded machine: answers must come well before a server's own timeouts.
SLACK = 2.5

APP_MODULE = """
from refundcore import RefundClient
from refundcore.wsgi import callback_app

app = callback_app(RefundClient(journal=None), lambda note: None, body_timeout={timeout})
"""


def _head(length: str | int, path: str = "/paywizard") -> str:
    return textwrap.dedent(
        f"""\
        POST {path} HTTP/1.1
        Host: 127.0.0.1
        Content-Type: application/json
        Content-Length: {length}
        """
    )


# -- gunicorn ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("gunicorn")
    (folder / "callbacks_app.py").write_text(APP_MODULE.format(timeout=BODY_TIMEOUT))
    server = subprocess.Popen(
        [
            *(str(Path(sys.executable).with_name("gunicorn")), "--chdir", str(folder)),
            *("--bind", "127.0.0.1:0", "--workers", "1", "--worker-class", "sync"),
            *("--timeout", "60", "--log-level", "info", "callbacks_app:app"),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "REFUNDCORE_PLUGINS": "paywizard"},
    )
    assert server.stderr is not None
    port = None
    deadline = time.monotonic() + 60
    while port is None and time.monotonic() < deadline:
        line = server.stderr.readline()
        found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
        port = int(found.group(1)) if found else None
        if not line and server.poll() is not None:
            break
    assert port is not None, "gunicorn did not start"
    # Keep draining its log so it never blocks on a full pipe.
    threading.Thread(target=server.stderr.read, daemon=True).start()
    # The worker boots after the arbiter listens: wait until it answers.
    while send_raw(port, "GET /paywizard HTTP/1.1\nHost: x\n")[0] == "":
        time.sleep(0.1)
    yield port
    server.terminate()
    server.wait(30)


def test_gunicorn_lying_content_length_is_408_within_the_deadline(gunicorn_port: int) -> None:
    status, took = send_raw(gunicorn_port, _head(1000), b'{"partial":')
    assert status == "HTTP/1.1 408 Request Timeout"
    assert BODY_TIMEOUT * 0.9 <= took < BODY_TIMEOUT + SLACK


def test_gunicorn_slow_drip_is_cut_at_the_deadline(gunicorn_port: int) -> None:
    # A byte every 0.1 s: each read makes progress, the whole body never arrives in time.
    status, took = send_raw(gunicorn_port, _head(40), b"x" * 40, drip=0.1)
    assert status == "HTTP/1.1 408 Request Timeout"
    assert took < BODY_TIMEOUT + SLACK


def test_gunicorn_worker_is_free_again_after_a_slow_client(gunicorn_port: int) -> None:
    slow = threading.Thread(target=send_raw, args=(gunicorn_port, _head(1000), b"{"))
    slow.start()
    time.sleep(0.2)
    # One sync worker: this waits for the slow client's deadline, never longer.
    status, took = send_raw(gunicorn_port, _head(2), b"{}")
    slow.join()
    assert status == "HTTP/1.1 400 Bad Request"
    assert took < BODY_TIMEOUT + SLACK


def test_gunicorn_body_ending_early_is_400(gunicorn_port: int) -> None:
    status, took = send_raw(gunicorn_port, _head(100), b"{}", half_close=True)
    assert status == "HTTP/1.1 400 Bad Request"
    assert took < BODY_TIMEOUT


def test_gunicorn_oversized_body_is_413_before_it_is_read(gunicorn_port: int) -> None:
    status, took = send_raw(gunicorn_port, _head(MAX_BODY + 1))
    assert status == "HTTP/1.1 413 Content Too Large"
    assert took < BODY_TIMEOUT


@pytest.mark.parametrize("length", ["12abc", "-1", "1, 2", "99999999999999999999"])
def test_gunicorn_malformed_content_length_is_a_4xx(gunicorn_port: int, length: str) -> None:
    status, _ = send_raw(gunicorn_port, _head(length), b"{}")
    assert re.fullmatch(r"HTTP/1\.[01] 4\d\d .*", status), status


# -- waitress ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def waitress_port() -> Iterator[int]:
    from waitress.server import create_server

    app = callback_app(RefundClient(journal=None), lambda note: None, body_timeout=BODY_TIMEOUT)
    # channel_timeout: how long a connection may stay silent; cleanup_interval: how often
    # waitress looks (30 s by default).
    server = create_server(
        app, host="127.0.0.1", port=0, threads=2, channel_timeout=2, cleanup_interval=1
    )
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
        for channel in list(server._map.values()):
            channel.close()
        server.task_dispatcher.shutdown()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.effective_port
    stop.set()
    thread.join(10)


def test_waitress_slow_clients_hold_no_worker_thread(waitress_port: int) -> None:
    # More stalled bodies than waitress has threads: it buffers bodies before calling
    # the app, so none of them takes a thread and a genuine request is answered at once.
    stalled = [
        threading.Thread(target=send_raw, args=(waitress_port, _head(1000), b"{")) for _ in range(4)
    ]
    for thread in stalled:
        thread.start()
    time.sleep(0.3)
    status, took = send_raw(waitress_port, _head(2), b"{}")
    assert status == "HTTP/1.1 400 Bad Request" and took < 1.0
    for thread in stalled:
        thread.join(30)


def test_waitress_closes_a_stalled_body_after_channel_timeout(waitress_port: int) -> None:
    status, took = send_raw(waitress_port, _head(1000), b'{"partial":')
    assert status == "" or status.startswith("HTTP/1.1 4"), status
    assert took < 2 + 2 * SLACK


def test_waitress_oversized_body_is_413(waitress_port: int) -> None:
    status, _ = send_raw(waitress_port, _head(MAX_BODY + 1), b"x" * (MAX_BODY + 1))
    assert status == "HTTP/1.1 413 Content Too Large"


def test_waitress_chunked_body_over_the_cap_is_413(waitress_port: int) -> None:
    head = "POST /paywizard HTTP/1.1\nHost: x\nTransfer-Encoding: chunked\n"
    chunk = b"x" * 65536
    body = (b"10000\r\n" + chunk + b"\r\n") * 17 + b"0\r\n\r\n"
    status, _ = send_raw(waitress_port, head, body)
    assert status == "HTTP/1.1 413 Content Too Large"


# -- the app's own arguments -------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("body_timeout", float("inf")),
        ("body_timeout", float("nan")),
        ("body_timeout", 0),
        ("body_timeout", 301),
        ("max_body", 0),
        ("max_body", 1.5),
    ],
)
def test_callback_app_refuses_insane_limits(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option):
        callback_app(RefundClient(journal=None), lambda note: None, **{option: value})  # type: ignore[arg-type]


# -- the project's loopback server (tests and demos) ----------------------------------------


@pytest.fixture(scope="module")
def sandbox_port() -> Iterator[int]:
    from refundcore.sandbox import SandboxServer

    app = callback_app(RefundClient(journal=None), lambda note: None, body_timeout=BODY_TIMEOUT)
    with SandboxServer(app) as server:
        yield int(server.base_url.rsplit(":", 1)[1])


def test_sandbox_server_answers_others_while_a_body_stalls(sandbox_port: int) -> None:
    # It reads each body on the connection's own thread before calling the app: a stalled
    # body holds that thread only, never the app or other clients.
    with socket.create_connection(("127.0.0.1", sandbox_port), timeout=10) as stalled:
        stalled.sendall(_head(1000).replace("\n", "\r\n").encode() + b"\r\n{")
        time.sleep(0.2)
        status, took = send_raw(sandbox_port, _head(2), b"{}")
    assert status == "HTTP/1.1 400 Bad Request" and took < 1.0


def test_sandbox_server_oversized_body_is_413(sandbox_port: int) -> None:
    status, _ = send_raw(sandbox_port, _head(MAX_BODY + 1), b"x" * (MAX_BODY + 1))
    assert status == "HTTP/1.1 413 Content Too Large"


@pytest.mark.parametrize("length", ["12abc", "-1", "+5"])
def test_sandbox_server_malformed_content_length_is_400(sandbox_port: int, length: str) -> None:
    status, _ = send_raw(sandbox_port, _head(length), b"{}")
    assert status.startswith("HTTP/1.1 400 "), status
