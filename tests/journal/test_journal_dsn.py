"""A journal's password is never shown: not in the API's errors, logs or the CLI's output,
whichever way the connection string spells it."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from refundcore import RefundError
from refundcore.journal import open_journal

SECRET = "s3cr3t-Pw"
CLI = str(Path(sys.executable).with_name("refundcore"))


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _spellings(port: int) -> list[str]:
    return [
        f"host=127.0.0.1 port={port} password='{SECRET}' dbname=x",
        f"host=127.0.0.1 password={SECRET} port={port}",
        f"host=127.0.0.1 password = '{SECRET} with \\' quote'",
        f"postgresql://u:{SECRET}@127.0.0.1:{port}/db",
        f"postgres://u@127.0.0.1:{port}/db?sslmode=disable&password={SECRET}",
        f"postgresql://u:{SECRET}/with#odd?chars@127.0.0.1:{port}/db",
        f"postgresql://u:{SECRET}@[::1/db",
        f"postgresql://u:{SECRET}@127.0.0.1:{port}/db?sslpassword={SECRET}",
    ]


def test_open_journal_errors_and_logs_never_show_the_password(
    closed_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("psycopg")
    caplog.set_level(logging.DEBUG)
    for dsn in _spellings(closed_port):
        with pytest.raises(RefundError) as caught:
            open_journal(dsn).close()
        shown = f"{caught.value} {caught.value!r}"
        assert SECRET not in shown, dsn
        assert "***" in shown, shown
    assert SECRET not in caplog.text


@pytest.mark.parametrize("index", range(8))
def test_cli_never_prints_the_password(closed_port: int, index: int, tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    dsn = _spellings(closed_port)[index]
    done = subprocess.run(
        [CLI, "journal", "list", "--journal", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode in (2, 5), done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stdout + done.stderr
    assert "***" in done.stderr
