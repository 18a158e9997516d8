"""PostgreSQL-only behaviour: connecting, failures, secrets in URLs, column types."""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from refundcore.errors import ConfigError, JournalError
from refundcore.journal import JournalState, NewRefund, open_journal
from refundcore.journal.dsn import mask_dsn

MakeRefund = Callable[..., NewRefund]
PASSWORD = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def _postgres_wanted() -> None:
    # Same switch as the server fixture: these tests need psycopg even without a server.
    if os.environ.get("REFUNDCORE_SKIP_POSTGRES") == "1":
        pytest.skip("REFUNDCORE_SKIP_POSTGRES=1: PostgreSQL journal tests skipped on request")


@pytest.fixture
def listening_socket() -> Iterator[int]:
    """A port whose connections are accepted by the kernel but never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


def _with_password(url: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}"))


def test_refused_connection_is_reported_at_once() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://refunds:{PASSWORD}@127.0.0.1:{port}/journal"

    started = time.monotonic()
    with pytest.raises(JournalError) as caught:
        open_journal(url)

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert message.startswith(
        f"journal postgresql://refunds:***@127.0.0.1:{port}/journal is unreachable: "
    )
    assert "Connection refused" in message and PASSWORD not in message


def test_silent_server_times_out(listening_socket: int) -> None:
    from refundcore.journal.postgres import PostgresJournal

    url = f"postgresql://refunds:{PASSWORD}@127.0.0.1:{listening_socket}/journal"
    started = time.monotonic()
    with pytest.raises(JournalError, match=r"is unreachable: .*timeout") as caught:
        PostgresJournal(url, connect_timeout=2)
    assert time.monotonic() - started < 10
    assert PASSWORD not in str(caught.value)


def test_connect_timeout_in_the_url_wins(listening_socket: int) -> None:
    from refundcore.journal.postgres import PostgresJournal

    url = f"postgresql://refunds@127.0.0.1:{listening_socket}/journal?connect_timeout=2"
    started = time.monotonic()
    with pytest.raises(JournalError, match="timeout"):
        PostgresJournal(url, connect_timeout=600)
    assert time.monotonic() - started < 10


def test_password_never_shows(postgres_url: str, make_refund: MakeRefund) -> None:
    url = _with_password(postgres_url)  # the test server trusts 127.0.0.1: any password
    with open_journal(url) as journal:
        journal.claim(make_refund(), owner="A")
        shown = [journal.url, repr(journal), str(journal.entries())]
        with pytest.raises(JournalError) as caught:
            journal.record("testpay", "R-404", owner="A", attempt=1, state=JournalState.FAILED)
    shown.append(str(caught.value))
    assert all(PASSWORD not in text for text in shown)
    assert journal.url == mask_dsn(url) and ":***@" in journal.url


def test_mask_dsn_masks_every_password_spelling() -> None:
    assert mask_dsn("postgresql://u:p%40ss@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert (
        mask_dsn("postgres://h/db?sslmode=require&password=pw&user=u")
        == "postgres://h/db?sslmode=require&password=***&user=u"
    )
    assert mask_dsn("postgresql://u@h/db") == "postgresql://u@h/db"
    assert mask_dsn("postgresql://u:pw@[::1/db") == "postgresql://u:***@[::1/db"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{PASSWORD}@[::1/db",
        f"postgresql://u:{PASSWORD}@h/db?bogus=1",
        f"postgresql://u:{PASSWORD}@h/db?sslmode",
    ],
)
def test_malformed_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="is not a valid PostgreSQL URL") as caught:
        open_journal(url)
    assert caught.value.field == "journal" and PASSWORD not in str(caught.value)


def test_postgres_scheme_is_an_alias(postgres_url: str) -> None:
    alias = "postgres://" + postgres_url.split("://", 1)[1]
    with open_journal(alias) as journal:
        assert journal.entries() == []


def test_missing_psycopg_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "refundcore.journal.postgres", raising=False)
    hint = (
        "pip install 'psycopg[binary]>=3.1' "
        "(in a clone of refundcore: pip install -e '.[postgres]')"
    )
    with pytest.raises(ConfigError, match=re.escape(hint)) as caught:
        open_journal(f"postgresql://u:{PASSWORD}@h/db")
    assert caught.value.field == "journal" and PASSWORD not in str(caught.value)


def test_read_only_database_refuses_claims(postgres_url: str, make_refund: MakeRefund) -> None:
    import psycopg

    open_journal(postgres_url).close()
    name = urlsplit(postgres_url).path.lstrip("/")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')

    with open_journal(postgres_url) as journal:
        assert journal.entries() == []  # still readable
        with pytest.raises(JournalError) as caught:
            journal.claim(make_refund(), owner="A")
        assert journal.entries() == []

    assert str(caught.value) == (
        f"journal {postgres_url} is read-only: cannot execute INSERT in a read-only transaction"
    )


def test_amounts_are_numeric_and_raw_is_jsonb(postgres_url: str, make_refund: MakeRefund) -> None:
    import psycopg

    with open_journal(postgres_url) as journal:
        journal.claim(
            make_refund(amount="1.250", currency="KWD", original_amount="3.000"), owner="A"
        )
        journal.record(
            "testpay", "R-1", owner="A", attempt=1, state=JournalState.FAILED, raw={"a": [1]}
        )
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT pg_typeof(amount)::text, amount::text, original_amount::text, "
            "raw -> 'a' ->> 0 FROM refundcore_journal"
        ).fetchone()
    assert row == ("numeric", "1.250", "3.000", "1")


def test_the_sweep_and_the_backlog_can_read_the_unsettled_index(
    postgres_url: str, make_refund: MakeRefund
) -> None:
    """The queries name the unsettled refunds with comparisons joined by OR, as the
    SQLite index needs; PostgreSQL's partial index, on an IN list, still serves them."""
    import psycopg

    from refundcore.journal import reading
    from refundcore.journal.schema import SELECT, UNSETTLED

    with open_journal(postgres_url) as journal:
        journal.claim(make_refund(), owner="A")
        assert [entry.refund_id for entry in journal.entries(unsettled=True)] == ["R-1"]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        # A table this small is read whole whatever its indexes: ask whether one serves.
        conn.execute("SET enable_seqscan = off")
        for query in (f"{SELECT} WHERE {UNSETTLED} ORDER BY created_at", reading._BACKLOG):
            plan = " ".join(str(row[0]) for row in conn.execute(f"EXPLAIN {query}"))
            assert "refundcore_journal_unsettled" in plan, plan
