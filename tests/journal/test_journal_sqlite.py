"""SQLite-only behaviour: URL forms, the file on disk, and how failures are reported."""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, closing
from pathlib import Path

import pytest

import refundcore.journal.sqlite as sqlite_backend
from refundcore.errors import ConfigError, JournalError
from refundcore.journal import (
    ClaimVerdict,
    JournalState,
    NewRefund,
    SqliteJournal,
    open_journal,
    reading,
)
from refundcore.journal.schema import SELECT, UNSETTLED

MakeRefund = Callable[..., NewRefund]
PermissionsEnforced = Callable[[], AbstractContextManager[None]]


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


# -- URLs and files -------------------------------------------------------------------


def test_relative_path_has_three_slashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_refund: MakeRefund
) -> None:
    monkeypatch.chdir(tmp_path)
    with open_journal("sqlite:///var/refunds/journal.db") as journal:
        assert journal.url == "sqlite:///var/refunds/journal.db"
        journal.claim(make_refund(), owner="A")
    assert (tmp_path / "var" / "refunds" / "journal.db").is_file()


def test_absolute_path_has_four_slashes_and_parents_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "journal.db"
    with open_journal(f"sqlite:///{path}") as journal:
        assert journal.url == f"sqlite:///{path}" and str(path).startswith("/")
    assert path.is_file()


@pytest.mark.parametrize("url", ["sqlite://:memory:", "sqlite:///:memory:"])
def test_memory_journal_is_shared_by_threads(url: str, make_refund: MakeRefund) -> None:
    with open_journal(url) as journal:
        assert journal.url == "sqlite://:memory:"
        journal.claim(make_refund(), owner="A")
        assert journal.get("testpay", "R-1") is not None


@pytest.mark.parametrize(
    ("given", "where"),
    [
        ("{tmp}/plain/journal.db", "plain/journal.db"),
        ("./here/journal.db", "here/journal.db"),
        ("../up/journal.db", "up/journal.db"),
        ("~/home.db", "home/home.db"),
    ],
)
def test_a_plain_path_is_a_sqlite_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_refund: MakeRefund,
    given: str,
    where: str,
) -> None:
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with open_journal(given.format(tmp=tmp_path)) as journal:
        journal.claim(make_refund(), owner="A")
    file = (tmp_path / "cwd" / where) if given.startswith("./") else tmp_path / where
    assert file.is_file()
    with open_journal(f"sqlite:///{file}") as journal:
        assert len(journal.entries()) == 1


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite://host/journal.db",
        "sqlite:///journal.db?mode=ro",
        "sqlite:journal.db",
        "mysql://user:hunter2@db/journal",
        "journal.db",
        "",
    ],
)
def test_other_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_journal(url)
    assert caught.value.field == "journal"
    assert str(caught.value).startswith("journal: ")
    assert "hunter2" not in str(caught.value)


def test_opening_sqlite_never_imports_psycopg() -> None:
    code = (
        "import sys, refundcore.journal as j; j.open_journal('sqlite://:memory:').close(); "
        "print(any(name.startswith('psycopg') for name in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_claims_sync_fully_and_own_outcomes_on_the_next_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_refund: MakeRefund
) -> None:
    """A claim is on disk before its request leaves: once committed, its write-ahead log
    is synced, as synchronous=FULL would. The claimant's own outcome only needs to
    survive the process (a power cut leaves the row SUBMITTING, which a reconcile
    settles), so it rides on the next sync instead of paying its own."""
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path)
    synced: list[tuple[bool, list[tuple[str, ...]]]] = []
    real_sync = sqlite_backend._sync

    def sync(fd: int) -> None:
        log = os.fstat(fd)
        wal = os.stat(f"{path}-wal")
        # What another connection reads at that moment: the claim is committed already.
        with closing(sqlite3.connect(path)) as reader:
            rows = reader.execute("SELECT refund_id, state FROM refundcore_journal").fetchall()
        synced.append(((log.st_dev, log.st_ino) == (wal.st_dev, wal.st_ino), rows))
        real_sync(fd)

    monkeypatch.setattr(sqlite_backend, "_sync", sync)
    with journal._transaction(write=False) as tx:
        assert dict(tx.one("PRAGMA journal_mode")) == {"journal_mode": "wal"}
        # Both kinds of write share connections (and their page caches) at one level.
        assert dict(tx.one("PRAGMA synchronous")) == {"synchronous": 1}  # NORMAL

    claim = journal.claim(make_refund(), owner="A")
    assert synced == [(True, [("R-1", "SUBMITTING")])]
    assert claim.entry is not None
    journal.record(
        "testpay", "R-1", owner="A", attempt=claim.entry.attempt, state=JournalState.SUCCEEDED
    )
    assert len(synced) == 1
    journal.close()


def test_a_claim_that_cannot_be_synced_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_refund: MakeRefund
) -> None:
    journal = SqliteJournal(tmp_path / "journal.db")

    def sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(sqlite_backend, "_sync", sync)
    with pytest.raises(JournalError, match=r"could not be synced to disk: Input/output error"):
        journal.claim(make_refund(), owner="A")
    journal.close()


# -- failures -------------------------------------------------------------------------


def test_path_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        JournalError, match=re.escape(f"journal sqlite:///{tmp_path} cannot be opened")
    ):
        open_journal(_url(tmp_path))


def test_parent_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    url = _url(tmp_path / "file" / "journal.db")
    with pytest.raises(
        JournalError, match=re.escape(f"journal {url} cannot be created: Not a directory: ")
    ):
        open_journal(url)


def test_corrupted_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"definitely not SQLite " * 500)
    with pytest.raises(JournalError, match=re.escape(f"journal {_url(path)} is corrupted")):
        open_journal(_url(path))


def test_read_only_file_refuses_claims_and_writes_nothing(
    tmp_path: Path, make_refund: MakeRefund, file_permissions_enforced: PermissionsEnforced
) -> None:
    path = tmp_path / "journal.db"
    open_journal(_url(path)).close()
    path.chmod(0o444)
    try:
        with file_permissions_enforced(), open_journal(_url(path)) as journal:
            assert journal.entries() == []  # still readable
            with pytest.raises(JournalError) as caught:
                journal.claim(make_refund(), owner="A")
    finally:
        path.chmod(0o644)
    assert str(caught.value) == (
        f"journal {_url(path)} is read-only: attempt to write a readonly database"
    )
    with open_journal(_url(path)) as journal:
        assert journal.entries() == []


def test_read_only_directory_refuses_a_new_journal(
    tmp_path: Path, file_permissions_enforced: PermissionsEnforced
) -> None:
    directory = tmp_path / "locked"
    directory.mkdir(mode=0o555)
    try:
        with file_permissions_enforced(), pytest.raises(JournalError) as caught:
            open_journal(_url(directory / "journal.db"))
    finally:
        directory.chmod(0o755)
    assert str(caught.value).startswith(f"journal {_url(directory / 'journal.db')} cannot be")


class _TinyJournal(SqliteJournal):
    """A journal that may not grow past its current size: a full disk, on demand."""

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        pages = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages['page_count']}")
        return conn


def test_full_disk_refuses_claims_and_leaves_no_half_written_row(
    tmp_path: Path, make_refund: MakeRefund
) -> None:
    path = tmp_path / "journal.db"
    open_journal(_url(path)).close()
    journal = _TinyJournal(path)

    with pytest.raises(JournalError) as caught:
        journal.claim(make_refund(reason="x" * 200, payment_key="k" * 20_000), owner="A")
    journal.close()

    assert str(caught.value).startswith(f"journal {_url(path)} is full: database or disk is full")
    with open_journal(_url(path)) as reopened:
        assert reopened.entries() == []
        assert reopened.claim(make_refund(), owner="A").outcome is ClaimVerdict.NEW


def test_write_lock_held_too_long_is_reported(tmp_path: Path, make_refund: MakeRefund) -> None:
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path, busy_timeout=0.2)
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(JournalError, match="is locked by another writer for too long"):
            journal.claim(make_refund(), owner="A")
        other.execute("ROLLBACK")
    assert journal.claim(make_refund(), owner="A").outcome is ClaimVerdict.NEW
    journal.close()


def test_threads_of_one_process_queue_for_the_write_lock(
    tmp_path: Path, make_refund: MakeRefund
) -> None:
    # Long enough that the waiting thread never gives up, however slowly a loaded
    # machine comes back to end the transaction it waits for.
    journal = SqliteJournal(tmp_path / "journal.db", busy_timeout=60)
    claims: list[ClaimVerdict] = []
    with journal._transaction(write=True):
        worker = threading.Thread(
            target=lambda: claims.append(journal.claim(make_refund(), owner="A").outcome)
        )
        worker.start()
        time.sleep(0.1)
        assert claims == []  # waiting for the writer before it
    worker.join()
    assert claims == [ClaimVerdict.NEW]
    journal.close()

    # Waiting longer than busy_timeout is the same error as waiting for another process.
    journal = SqliteJournal(tmp_path / "journal.db", busy_timeout=0.3)
    with (
        journal._transaction(write=True),
        pytest.raises(
            JournalError, match=r"is locked by another writer for too long: waited 0\.3 s"
        ),
    ):
        journal.claim(make_refund(refund_id="R-2"), owner="B")
    assert journal.get("testpay", "R-2") is None
    journal.close()


def test_lookups_by_the_providers_refund_id_use_its_partial_index(
    tmp_path: Path, make_refund: MakeRefund
) -> None:
    journal = SqliteJournal(tmp_path / "journal.db")
    journal.claim(make_refund(), owner="A")
    journal.record(
        "testpay", "R-1", owner="A", attempt=1, state=JournalState.PENDING, provider_refund_id="G"
    )
    with journal._transaction(write=False) as tx:
        plan = tx.all(
            "EXPLAIN QUERY PLAN SELECT refund_id FROM refundcore_journal "
            "WHERE provider = ? AND provider_refund_id = ?",
            ("testpay", "G"),
        )
    assert "refundcore_journal_provider_refund_id" in " ".join(str(row["detail"]) for row in plan)
    found = journal.find_by_provider_refund_id("testpay", "G")
    assert found is not None and found.refund_id == "R-1"
    journal.close()


def test_the_sweep_and_the_backlog_read_only_unsettled_rows(
    tmp_path: Path, make_refund: MakeRefund
) -> None:
    """The reconcile sweep's and the backlog's queries repeat the partial index's WHERE
    as it is written, so SQLite reads that index, not the whole table."""
    journal = SqliteJournal(tmp_path / "journal.db")
    journal.claim(make_refund(), owner="A")
    with journal._transaction(write=False) as tx:
        sweep = tx.all(f"EXPLAIN QUERY PLAN {SELECT} WHERE {UNSETTLED} ORDER BY created_at")
        backlog = tx.all(f"EXPLAIN QUERY PLAN {reading._BACKLOG}")
    for plan in (sweep, backlog):
        assert "refundcore_journal_unsettled" in " ".join(str(row["detail"]) for row in plan)
    assert [entry.refund_id for entry in journal.entries(unsettled=True)] == ["R-1"]
    assert [(b.state, b.count) for b in journal.backlog()] == [(JournalState.SUBMITTING, 1)]
    journal.close()


def test_amounts_are_stored_as_exact_text(tmp_path: Path, make_refund: MakeRefund) -> None:
    path = tmp_path / "journal.db"
    with open_journal(_url(path)) as journal:
        journal.claim(make_refund(amount="1500", currency="JPY", original_amount="3000"), owner="A")
        journal.record("testpay", "R-1", owner="A", attempt=1, state=JournalState.SUCCEEDED)
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT amount, typeof(amount), original_amount FROM refundcore_journal"
        ).fetchone()
    assert row == ("1500", "text", "3000")


# -- a journal that existed is never re-created ---------------------------------------


def _a_journal(path: Path, make_refund: MakeRefund) -> None:
    with open_journal(_url(path)) as journal:
        journal.claim(make_refund(), owner="A")
        journal.record("testpay", "R-1", owner="A", attempt=1, state=JournalState.SUCCEEDED)


def test_only_a_path_where_nothing_exists_becomes_a_new_journal(
    tmp_path: Path, make_refund: MakeRefund
) -> None:
    path = tmp_path / "journal.db"
    _a_journal(path, make_refund)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.db"]  # no leftovers
    with open_journal(_url(path)) as journal:
        assert [e.refund_id for e in journal.entries()] == ["R-1"]


def test_an_empty_journal_file_is_refused_not_re_created(
    tmp_path: Path, make_refund: MakeRefund
) -> None:
    path = tmp_path / "journal.db"
    _a_journal(path, make_refund)
    path.write_bytes(b"")

    with pytest.raises(JournalError) as caught:
        open_journal(_url(path))

    message = str(caught.value)
    assert message.startswith(f"journal {_url(path)} is an empty file (0 bytes), not a journal")
    assert "restore the journal from a backup" in message and str(path) in message
    assert path.read_bytes() == b"", "the file is left as it was"


@pytest.mark.parametrize("keep", [1, 60, 4096, "half"])
def test_a_truncated_journal_file_is_refused(
    tmp_path: Path, make_refund: MakeRefund, keep: int | str
) -> None:
    path = tmp_path / "journal.db"
    _a_journal(path, make_refund)
    data = path.read_bytes()
    cut = data[: len(data) // 2] if keep == "half" else data[: int(keep)]
    path.write_bytes(cut)

    with pytest.raises(JournalError, match=r"is truncated: \d+ bytes") as caught:
        open_journal(_url(path))
    assert "restore the journal from a backup" in str(caught.value)
    assert path.read_bytes() == cut


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_text("provider,payment_id,amount\n")
    with pytest.raises(JournalError, match="is corrupted or not a SQLite database"):
        open_journal(_url(path))
    assert path.read_text() == "provider,payment_id,amount\n"


@pytest.mark.parametrize("tables", [["orders", "customers"], []])
def test_another_programs_sqlite_database_is_refused(tmp_path: Path, tables: list[str]) -> None:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("PRAGMA user_version = 7")  # a database, even without tables
        for table in tables:
            conn.execute(f"CREATE TABLE {table} (id INTEGER)")

    with pytest.raises(JournalError) as caught:
        open_journal(_url(path))

    found = "other tables (customers, orders)" if tables else "no tables"
    assert str(caught.value).startswith(
        f"journal {_url(path)} is a SQLite database with {found} and no refundcore journal"
    )
    with closing(sqlite3.connect(path)) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert names == set(tables), "nothing was added to it"


def test_a_journal_of_a_newer_schema_is_refused(tmp_path: Path, make_refund: MakeRefund) -> None:
    path = tmp_path / "journal.db"
    _a_journal(path, make_refund)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE refundcore_schema SET version = 99")
    with pytest.raises(JournalError, match=r"schema version 99, newer than .*upgrade refundcore"):
        open_journal(_url(path))


def test_processes_creating_one_journal_at_once_share_it(tmp_path: Path) -> None:
    path = tmp_path / "new" / "journal.db"
    code = (
        "import sys; from refundcore.journal import open_journal; "
        "open_journal(sys.argv[1]).close(); print('ok')"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, _url(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [child.communicate(timeout=60) for child in children]
    assert [out.strip() for out, _ in results] == ["ok"] * 4, results
    assert sorted(p.name for p in path.parent.iterdir()) == ["journal.db"]
