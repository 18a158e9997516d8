"""``refundcore console``: the console served alone, behind a printed access token."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from refundcore.cli import main
from refundcore.journal import Journal
from refundcore.web.security import token_gate
from refundcore.web.serve import is_loopback

TOKEN = "t0ken-" + "x" * 40


def _hello(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hello {environ.get('PATH_INFO')}?{environ.get('QUERY_STRING')}".encode()]


def test_the_token_gate(wsgi: Any) -> None:
    browser = wsgi(token_gate(_hello, TOKEN))

    for params in ({}, {"token": "guess"}, {"token": TOKEN[:-1]}, {"token": TOKEN + "x"}):
        refused = browser.get("/refunds", params)
        assert refused.status == 401
        assert "Access token needed" in refused.text
        assert (
            refused.header(
                "Content-Security-Policy",
            )
            is not None
        )
        assert refused.header("Set-Cookie") is None
    assert browser.post("/refund/query", {"token": TOKEN}).status == 401, "never from a form"

    first = browser.get("/refunds", {"status": "UNKNOWN", "token": TOKEN})
    assert first.status == 303
    assert first.header("Location") == "/refunds?status=UNKNOWN", "the token leaves the address"
    assert first.header("Set-Cookie") == (
        f"refundcore_console_token={TOKEN}; Path=/; HttpOnly; SameSite=Strict"
    )
    assert first.header("Referrer-Policy") == "no-referrer"
    later = browser.get("/refunds", {"status": "UNKNOWN"})
    assert (later.status, later.text) == (200, "hello /refunds?status=UNKNOWN")

    browser.cookies["refundcore_console_token"] = "forged"
    assert browser.get("/").status == 401


def test_a_token_must_be_long(wsgi: Any) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        token_gate(_hello, "short")


def test_loopback_hosts() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.0.2.1", "example.com"))  # noqa: S104


@pytest.fixture
def served(journal: Journal, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``refundcore console`` over the filled journal, as a process; its printed URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "refundcore",
            "console",
            "--port",
            "0",
            "--journal",
            journal.url,
            "--operator",
            "ops-team",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        opening = process.stdout.readline()
        assert banner.startswith("refundcore console (acting as ops-team) on http://127.0.0.1:")
        assert opening.startswith("open: http://127.0.0.1:")
        yield process, opening.removeprefix("open: ").strip()
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _get(url: str, cookie: str | None = None) -> http.client.HTTPResponse:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection.request("GET", target, headers={"Cookie": cookie} if cookie else {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_refundcore_console_serves_behind_its_token(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = served
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1" and parts.path == "/"
    token = parts.query.removeprefix("token=")
    assert len(token) >= 40
    base = f"{parts.scheme}://{parts.netloc}"

    assert _get(base + "/").status == 401
    assert _get(base + "/?token=wrong").status == 401
    first = _get(url)
    assert first.status == 303 and first.getheader("Location") == "/"
    cookie = (first.getheader("Set-Cookie") or "").split(";")[0]
    assert cookie == f"refundcore_console_token={token}"
    page = _get(base + "/attention", cookie)
    assert page.status == 200
    assert page.getheader("Content-Security-Policy", "").endswith("frame-ancestors 'none'")

    process.send_signal(signal.SIGINT)
    assert process.wait(10) == 0
    assert process.stderr is not None
    logged = process.stderr.read()
    assert token not in logged, "the token is never logged"


def test_refundcore_console_read_only(journal: Journal, tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "refundcore",
            "console",
            "--port",
            "0",
            "--read-only",
            "--journal",
            journal.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("refundcore console (read-only) on ")
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0


def test_refundcore_console_needs_jinja2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], journal: Journal
) -> None:
    for name in [name for name in sys.modules if name.startswith("refundcore.web")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "jinja2", None)
    assert main(["console", "--journal", journal.url]) == 2
    assert "pip install 'refundcore[console]'" in capsys.readouterr().err


def test_refundcore_console_refuses_a_bad_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["console", "--port", "70000"])
    assert exited.value.code == 2
    assert "must be 0 to 65535" in capsys.readouterr().err
