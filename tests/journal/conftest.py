"""Fixtures for the journal tests: a fresh, empty journal per test, on each backend.

PostgreSQL: by default a throwaway server is started once per session on 127.0.0.1
(binaries from ``PATH`` or ``/usr/lib/postgresql/*/bin``: the Debian package
``postgresql``). ``REFUNDCORE_TEST_POSTGRES_URL`` points the tests at an existing
server instead (its user needs CREATEDB); ``REFUNDCORE_SKIP_POSTGRES=1`` skips them.
Without either and without the binaries, the PostgreSQL tests error: they are never
skipped silently.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from glob import glob
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import pytest

from refundcore.journal import Journal, NewRefund, open_journal
from refundcore.money import Money

SKIP_ENV = "REFUNDCORE_SKIP_POSTGRES"
URL_ENV = "REFUNDCORE_TEST_POSTGRES_URL"
_INSTALL_HINT = (
    "install the Debian package `postgresql` (apt-get install postgresql), point "
    f"{URL_ENV} at a server, or set {SKIP_ENV}=1 to skip the PostgreSQL tests"
)


def _pg_bindir() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    # Debian keeps the server binaries off PATH, one directory per major version.
    candidates = glob("/usr/lib/postgresql/*/bin")
    for bindir in sorted(candidates, key=lambda p: int(p.split("/")[-2]), reverse=True):
        if Path(bindir, "initdb").exists() and Path(bindir, "pg_ctl").exists():
            return Path(bindir)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if done.returncode:
        pytest.fail(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)


@contextlib.contextmanager
def _throwaway_server() -> Iterator[str]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.fail(f"PostgreSQL server binaries (initdb, pg_ctl) not found: {_INSTALL_HINT}")
    base = Path(tempfile.mkdtemp(prefix="refundcore-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root; the Debian package creates this user.
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail(f"running as root and there is no `postgres` user: {_INSTALL_HINT}")
        os.chown(base, account.pw_uid, account.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data = base / "data"
    port = _free_port()
    options = " ".join(
        [
            "-c listen_addresses=127.0.0.1",
            f"-p {port}",
            f"-k {base}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ]
    )
    try:
        _run(
            [
                *as_postgres,
                str(bindir / "initdb"),
                *("-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8"),
                "--no-sync",
            ]
        )
        _run(
            [
                *as_postgres,
                str(bindir / "pg_ctl"),
                *("-D", str(data), "-l", str(base / "log"), "-o", options, "-w", "-t", "60"),
                "start",
            ]
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(
                [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The URL of a PostgreSQL server's maintenance database, for creating databases."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: PostgreSQL journal tests skipped on request")
    try:
        import psycopg  # noqa: F401 - fail early with a clear message
    except ImportError:
        pytest.fail(
            "psycopg is not installed: pip install 'psycopg[binary]>=3.1' "
            f"(or set {SKIP_ENV}=1 to skip the PostgreSQL tests)"
        )
    external = os.environ.get(URL_ENV)
    if external:
        yield external
        return
    with _throwaway_server() as url:
        yield url


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the test server."""
    import psycopg

    name = f"journal_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(postgres_server, name)
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@attrs.define
class Backend:
    """One backend under test: the URL of a fresh journal, and raw SQL access to it."""

    name: str
    url: str
    _opened: list[Journal] = attrs.field(factory=list)

    def open(self) -> Journal:
        """Open the journal (closed again at the end of the test)."""
        journal = open_journal(self.url)
        self._opened.append(journal)
        return journal

    def sql(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one statement outside the journal, committed; its rows, if any."""
        if self.name == "sqlite":
            path = self.url[len("sqlite:///") :]
            with contextlib.closing(sqlite3.connect(path)) as conn, conn:
                return conn.execute(statement).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as pg:
            cursor = pg.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def close_all(self) -> None:
        for journal in self._opened:
            journal.close()


@pytest.fixture(params=["sqlite", "postgres"])
def journal_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A journal URL for a test that opens the journal itself: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'journal.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, with a fresh journal URL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'journal.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    chosen = Backend(request.param, url)
    yield chosen
    chosen.close_all()


@pytest.fixture
def make_refund() -> Callable[..., NewRefund]:
    """A factory of :class:`NewRefund`: sensible defaults, any field overridable;
    amounts given as text in ``currency``.

    The fingerprint follows the parameters, as the client computes it.
    """

    def make(**changes: Any) -> NewRefund:
        fields: dict[str, Any] = {
            "provider": "testpay",
            "refund_id": "R-1",
            "operation": "refund",
            "payment_id": "PAY-1",
            "merchant_reference": None,
            "transaction_id": None,
            "amount": "10.00",
            "currency": "HKD",
            "reason": None,
            "notify_url": None,
            "original_amount": None,
            "payment_key": "payment_id=PAY-1",
        }
        fields.update(changes)
        if "fingerprint" not in fields:
            identity = {k: v for k, v in fields.items() if k != "refund_id"}
            fields["fingerprint"] = uuid.uuid5(
                uuid.NAMESPACE_OID, repr(sorted(identity.items()))
            ).hex
        currency = fields.pop("currency")
        for name in ("amount", "original_amount"):
            if fields[name] is not None:
                fields[name] = Money(fields[name], currency)
        return NewRefund(**fields)

    return make


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@contextmanager
def _enforce_file_permissions() -> Iterator[None]:
    """Make file modes bind this thread even when it runs as root (CI does).

    Root ignores ``chmod`` through CAP_DAC_OVERRIDE; dropping it from the thread's
    *effective* set (it stays *permitted*) lets the test see what an ordinary user
    sees, and restoring it afterwards leaves the rest of the session unchanged.
    """
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.fail(f"capget failed: {os.strerror(ctypes.get_errno())}")
    saved = data[0].effective
    data[0].effective &= ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.fail(f"capset failed: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


PermissionsEnforced = Callable[[], AbstractContextManager[None]]


@pytest.fixture
def file_permissions_enforced() -> PermissionsEnforced:
    """A context manager under which file modes bind this thread, even as root."""
    return _enforce_file_permissions
