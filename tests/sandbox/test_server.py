"""Tests for the sandbox HTTP server, over real loopback sockets."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.validate import validator

import pytest
import requests

from refundcore.sandbox.server import Fault, SandboxServer, buffer_app, serve

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


class EchoApp:
    """Answers with a JSON description of the request and counts the calls it handled."""

    def __init__(self) -> None:
        self.calls = 0
        self.called = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._lock:
            self.calls += 1
        self.called.set()
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        payload = {
            "method": environ["REQUEST_METHOD"],
            "path": environ["PATH_INFO"],
            "query": environ["QUERY_STRING"],
            "uri": environ["REQUEST_URI"],
            "raw_uri": environ["RAW_URI"],
            "content_length": environ.get("CONTENT_LENGTH"),
            "content_type": environ.get("CONTENT_TYPE"),
            "x_custom": environ.get("HTTP_X_CUSTOM"),
            "transfer_encoding": environ.get("HTTP_TRANSFER_ENCODING"),
            "body": body.decode("latin-1"),
        }
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(payload).encode()]


@pytest.fixture
def app() -> EchoApp:
    return EchoApp()


@pytest.fixture
def server(app: EchoApp) -> Iterator[SandboxServer]:
    with serve(app) as srv:
        yield srv


def raw_exchange(srv: SandboxServer, data: bytes) -> bytes:
    """Send raw bytes and read until the server closes the connection."""
    host, port = srv.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def sandbox_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("refundcore-sandbox-")]


# Filters are process-wide, so a WSGIWarning raised in the server thread fails the request.
@pytest.mark.filterwarnings("error::wsgiref.validate.WSGIWarning")
def test_serves_app_with_valid_environ(app: EchoApp) -> None:
    with serve(validator(app)) as srv:
        response = requests.post(
            srv.base_url + "/a%20b/caf%C3%A9?x=1&y=%20",
            data=b"hello",
            headers={"X-Custom": "yes", "Content-Type": "text/plain"},
            timeout=2,
        )
    assert response.status_code == 200
    assert response.headers["Content-Length"] == str(len(response.content))
    seen = response.json()
    assert seen["method"] == "POST"
    assert seen["path"] == "/a b/caf\xc3\xa9"
    assert seen["query"] == "x=1&y=%20"
    assert seen["uri"] == seen["raw_uri"] == "/a%20b/caf%C3%A9?x=1&y=%20"
    assert seen["content_length"] == "5"
    assert seen["content_type"] == "text/plain"
    assert seen["x_custom"] == "yes"
    assert seen["body"] == "hello"


def test_raw_target_is_kept_even_with_double_slash(server: SandboxServer) -> None:
    reply = raw_exchange(
        server, b"GET //cb/x?a=%2F HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert json.loads(body)["uri"] == "//cb/x?a=%2F"
    assert server.requests[0].target == "//cb/x?a=%2F"


def test_keep_alive_reuses_one_connection(server: SandboxServer) -> None:
    with requests.Session() as session:
        for _ in range(3):
            assert session.get(server.base_url + "/ping", timeout=2).status_code == 200
        response = session.post(server.base_url + "/ping", data=b"x", timeout=2)
        assert response.headers.get("Connection") != "close"
    assert server.connections_accepted == 1
    assert len(server.requests) == 4


def test_connection_close_is_honoured(server: SandboxServer) -> None:
    with requests.Session() as session:
        first = session.get(server.base_url + "/", headers={"Connection": "close"}, timeout=2)
        assert first.headers["Connection"] == "close"
        session.get(server.base_url + "/", timeout=2)
    assert server.connections_accepted == 2


def test_http_1_0_closes_after_response(server: SandboxServer) -> None:
    reply = raw_exchange(server, b"GET /old HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in reply


def test_chunked_request_body(server: SandboxServer) -> None:
    response = requests.post(
        server.base_url + "/chunked", data=iter([b"hel", b"lo ", b"world"]), timeout=2
    )
    seen = response.json()
    assert seen["body"] == "hello world"
    assert seen["content_length"] == "11"
    assert seen["transfer_encoding"] is None
    assert server.requests[-1].body == b"hello world"
    assert server.requests[-1].header("transfer-encoding") == "chunked"


def test_chunked_body_with_extensions_and_trailers(server: SandboxServer) -> None:
    reply = raw_exchange(
        server,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n",
    )
    assert json.loads(reply.partition(b"\r\n\r\n")[2])["body"] == "Wikipedia"


def test_malformed_chunked_body_is_rejected(server: SandboxServer, app: EchoApp) -> None:
    reply = raw_exchange(
        server,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 400")
    assert app.calls == 0
    assert server.requests == []


def test_head_sends_length_without_body(server: SandboxServer) -> None:
    with requests.Session() as session:
        get = session.get(server.base_url + "/same", timeout=2)
        head = session.head(server.base_url + "/same", timeout=2)
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["Content-Length"] == str(len(get.content.replace(b"GET", b"HEAD")))
        # A stray body after the HEAD reply would corrupt this next response.
        assert session.get(server.base_url + "/same", timeout=2).json() == get.json()
    assert server.connections_accepted == 1


def test_app_exception_gives_500_and_server_keeps_serving(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/boom":
            raise ValueError("kaboom")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"fine"]

    with caplog.at_level(logging.ERROR, logger="refundcore.sandbox"), serve(app) as srv:
        with requests.Session() as session:
            failed = session.get(srv.base_url + "/boom", timeout=2)
            assert failed.status_code == 500
            assert failed.text == "Internal Server Error\n"
            assert session.get(srv.base_url + "/ok", timeout=2).text == "fine"
        assert srv.connections_accepted == 1
    assert any(record.name == "refundcore.sandbox" and record.exc_info for record in caplog.records)
    assert "kaboom" in caplog.text
    assert capsys.readouterr().err == ""


def test_requests_are_recorded_in_order(server: SandboxServer) -> None:
    requests.get(server.base_url + "/one?a=1", timeout=2)
    requests.put(server.base_url + "/two", data=b"payload", headers={"X-Id": "7"}, timeout=2)
    recorded = server.requests
    assert [(r.method, r.target) for r in recorded] == [("GET", "/one?a=1"), ("PUT", "/two")]
    assert recorded[1].body == b"payload"
    assert recorded[1].header("x-id") == "7"
    assert recorded[1].header("missing") is None
    recorded.clear()
    assert len(server.requests) == 2
    server.clear_requests()
    assert server.requests == []


def test_delay_fault_causes_client_read_timeout(server: SandboxServer, app: EchoApp) -> None:
    server.inject("/slow", Fault(delay=0.5))
    with pytest.raises(requests.ReadTimeout):
        requests.get(server.base_url + "/slow", timeout=0.1)
    assert app.calls == 1
    started = time.monotonic()
    assert requests.get(server.base_url + "/fast", timeout=2).status_code == 200
    assert time.monotonic() - started < 0.4


def test_delay_fault_still_answers(server: SandboxServer) -> None:
    server.inject("/slow", Fault(delay=0.1))
    started = time.monotonic()
    assert requests.get(server.base_url + "/slow", timeout=2).status_code == 200
    assert time.monotonic() - started >= 0.1


def test_drop_fault_gives_connection_error(server: SandboxServer, app: EchoApp) -> None:
    server.inject("/refunds", Fault(drop=True))
    with pytest.raises(requests.ConnectionError):
        requests.post(server.base_url + "/refunds", data=b"{}", timeout=2)
    assert app.calls == 1
    assert [r.target for r in server.requests] == ["/refunds"]


def test_garbage_fault(server: SandboxServer) -> None:
    server.inject("/refunds", Fault(garbage=True))
    response = requests.get(server.base_url + "/refunds", timeout=2)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.content
    with pytest.raises(requests.JSONDecodeError):
        response.json()


def test_truncate_fault(server: SandboxServer) -> None:
    server.inject("/refunds", Fault(truncate=True))
    with pytest.raises((requests.exceptions.ChunkedEncodingError, requests.ConnectionError)):
        requests.get(server.base_url + "/refunds", timeout=2)
    reply = raw_exchange(server, b"GET /refunds HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    declared = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
    assert 0 < len(body) < declared


def test_truncate_fault_on_empty_body(server: SandboxServer) -> None:
    server.inject("/empty", Fault(status=204, truncate=True))
    reply = raw_exchange(server, b"GET /empty HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"Content-Length: 1" in head
    assert body == b""


def test_status_fault_replaces_reply_after_app_ran(server: SandboxServer, app: EchoApp) -> None:
    server.inject("/refunds", Fault(status=503, body=b'{"error": "busy"}'))
    response = requests.post(server.base_url + "/refunds", data=b"{}", timeout=2)
    assert response.status_code == 503
    assert response.json() == {"error": "busy"}
    assert response.headers["Content-Type"] == "application/json"
    assert app.calls == 1


def test_reach_app_false_keeps_request_from_app(server: SandboxServer, app: EchoApp) -> None:
    server.inject("/refunds", Fault(status=502, body=b"bad gateway", reach_app=False))
    response = requests.post(server.base_url + "/refunds", data=b"{}", timeout=2)
    assert response.status_code == 502
    assert response.text == "bad gateway"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert app.calls == 0
    assert [r.target for r in server.requests] == ["/refunds"]


def test_reach_app_false_without_reply_drops(server: SandboxServer, app: EchoApp) -> None:
    server.inject("/refunds", Fault(reach_app=False))
    with pytest.raises(requests.ConnectionError):
        requests.post(server.base_url + "/refunds", data=b"{}", timeout=2)
    assert app.calls == 0


def test_times_counts_down(server: SandboxServer) -> None:
    server.inject("/refunds", Fault(status=500, times=2))
    with requests.Session() as session:
        codes = [session.get(server.base_url + "/refunds", timeout=2).status_code for _ in range(3)]
    assert codes == [500, 500, 200]


def test_times_is_thread_safe(server: SandboxServer) -> None:
    server.inject("*", Fault(status=500, times=5))
    codes: list[int] = []
    lock = threading.Lock()

    def hit() -> None:
        code = requests.get(server.base_url + "/x", timeout=2).status_code
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=hit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(codes) == [200] * 7 + [500] * 5


def test_fault_matching_and_replacement(server: SandboxServer) -> None:
    server.inject("*", Fault(status=418))
    server.inject("/a", Fault(status=500))
    server.inject("/a", Fault(status=409))

    def status(target: str) -> int:
        return requests.get(server.base_url + target, timeout=2).status_code

    assert status("/a?x=1") == 409
    assert status("/b") == 418
    assert status("/a/b") == 418
    server.clear_faults()
    assert status("/a") == 200
    assert status("/b") == 200


def test_fault_patterns(server: SandboxServer) -> None:
    server.inject("*", Fault(status=418))
    server.inject("/api/*/refund", Fault(status=503, times=2))
    server.inject("/api/7/refund", Fault(status=409))

    def status(target: str) -> int:
        return requests.post(server.base_url + target, timeout=2).status_code

    assert status("/api/7/refund") == 409, "a path's own fault wins over a pattern's"
    assert status("/api/8/refund?x=1") == 503
    assert status("/api/8/status") == 418, "a pattern matches the whole path"
    assert status("/api/1/2/refund") == 503, "* matches / too"
    assert status("/api/9/refund") == 418, "times counts the pattern's uses"


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault(times=0)
    with pytest.raises(ValueError):
        Fault(delay=-1)
    with pytest.raises(ValueError):
        Fault(status=42)


def test_stop_is_fast_with_idle_keep_alive_connection(app: EchoApp) -> None:
    srv = serve(app).start()
    with requests.Session() as session:
        session.get(srv.base_url + "/", timeout=2)
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 1
    assert sandbox_threads() == []


def test_stop_is_fast_while_delay_fault_sleeps(app: EchoApp) -> None:
    srv = serve(app).start()
    srv.inject("/slow", Fault(delay=30))
    outcome: list[BaseException | int] = []

    def call() -> None:
        try:
            outcome.append(requests.get(srv.base_url + "/slow", timeout=10).status_code)
        except requests.RequestException as exc:
            outcome.append(exc)

    client = threading.Thread(target=call)
    client.start()
    assert app.called.wait(2)
    started = time.monotonic()
    srv.stop()
    assert time.monotonic() - started < 1
    client.join(2)
    assert len(outcome) == 1
    assert isinstance(outcome[0], requests.ConnectionError)
    assert sandbox_threads() == []


def test_stop_is_idempotent_and_base_url_needs_running_server(app: EchoApp) -> None:
    srv = SandboxServer(app)
    with pytest.raises(RuntimeError):
        _ = srv.base_url
    srv.stop()
    srv.start()
    with pytest.raises(RuntimeError):
        srv.start()
    srv.stop()
    srv.stop()
    with pytest.raises(RuntimeError):
        _ = srv.base_url


def test_restart_serves_again_and_port_can_be_reused(app: EchoApp) -> None:
    srv = serve(app).start()
    first_url = srv.base_url
    assert requests.get(first_url + "/", timeout=2).status_code == 200
    srv.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(first_url + "/", timeout=2)
    srv.start()
    assert requests.get(srv.base_url + "/", timeout=2).status_code == 200
    assert len(srv.requests) == 2
    srv.stop()
    port = int(first_url.rsplit(":", 1)[1])
    with SandboxServer(app, port=port) as again:
        assert again.base_url == first_url
        assert requests.get(again.base_url + "/", timeout=2).status_code == 200


def test_a_port_in_use_is_an_os_error(server: SandboxServer, app: EchoApp) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    with pytest.raises(OSError, match="in use"):
        SandboxServer(app, port=port).start()


def test_no_request_logging_on_stderr(
    server: SandboxServer, capsys: pytest.CaptureFixture[str]
) -> None:
    requests.get(server.base_url + "/quiet", timeout=2)
    raw_exchange(server, b"BROKEN\r\n\r\n")
    assert capsys.readouterr().err == ""


def test_app_headers_cannot_break_framing(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.errors"].write("something odd\n")
        start_response(
            "201 Created",
            [("Content-Length", "999"), ("Connection", "close"), ("X-App", "1")],
        )
        return iter([b"ab", b"", b"cd"])

    with caplog.at_level(logging.WARNING, logger="refundcore.sandbox"), serve(app) as srv:
        with requests.Session() as session:
            for _ in range(2):
                response = session.get(srv.base_url + "/", timeout=2)
                assert (response.status_code, response.reason) == (201, "Created")
                assert response.content == b"abcd"
                assert response.headers["Content-Length"] == "4"
                assert response.headers["X-App"] == "1"
                assert "Connection" not in response.headers
        assert srv.connections_accepted == 1
    assert [r.errors for r in caplog.records] == ["something odd"] * 2  # type: ignore[attr-defined]


def test_app_errors_after_start_response_and_protocol_misuse_give_500() -> None:
    closed = threading.Event()

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            yield b"partial"
            raise RuntimeError("mid-body failure")

        def close(self) -> None:
            closed.set()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/silent":
            return [b"no start_response"]
        start_response("200 OK", [])
        return Body()

    with serve(app) as srv:
        assert requests.get(srv.base_url + "/body", timeout=2).status_code == 500
        assert closed.is_set()
        assert requests.get(srv.base_url + "/silent", timeout=2).status_code == 500


def test_buffer_app_lets_exc_info_replace_the_status() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("X-Stage", "first")])
        try:
            raise KeyError("late failure")
        except KeyError:
            start_response("502 Bad Gateway", [("X-Stage", "error")], sys.exc_info())
        return [b"oops"]

    assert buffer_app(app, {}) == ("502 Bad Gateway", [("X-Stage", "error")], b"oops")
