"""``refundcore journal list`` filters and ``refundcore journal stats``, over a journal
filled with refunds of known ages."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from refundcore.cli import main
from refundcore.journal import JournalState, NewRefund, open_journal
from refundcore.money import Money

S = JournalState


def _refund(provider: str, refund_id: str) -> NewRefund:
    return NewRefund(
        provider=provider,
        refund_id=refund_id,
        operation="refund",
        payment_id=f"PAY-{refund_id}",
        merchant_reference=None,
        transaction_id=None,
        amount=Money("10.00", "HKD"),
        reason=None,
        notify_url=None,
        original_amount=None,
        fingerprint=f"fp-{refund_id}",
        payment_key=f"payment_id=PAY-{refund_id}",
    )


@pytest.fixture
def filled_at() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def journal_url(tmp_path: Path, filled_at: datetime) -> str:
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    rows = [
        # provider, refund id, state (None: still SUBMITTING), age
        ("wonder", "w-old-unknown", S.UNKNOWN, timedelta(days=3)),
        ("wonder", "w-pending", S.PENDING, timedelta(hours=5)),
        ("wonder", "w-ok", S.SUCCEEDED, timedelta(hours=2)),
        ("paywizard", "p-unknown", S.UNKNOWN, timedelta(minutes=30)),
        ("paywizard", "p-failed", S.FAILED, timedelta(minutes=10)),
        ("paywizard", "p-sending", None, timedelta(minutes=1)),
    ]
    with open_journal(url) as journal:
        for provider, refund_id, state, _ in rows:
            journal.claim(_refund(provider, refund_id), owner="t")
            if state is not None:
                journal.record(provider, refund_id, owner="t", attempt=1, state=state)
    # The journal stamps rows with its own clock: the ages are set in the table.
    with closing(sqlite3.connect(tmp_path / "ops.db")) as conn, conn:
        for provider, refund_id, _, age in rows:
            stamp = (filled_at - age).isoformat(timespec="microseconds")
            conn.execute(
                "UPDATE refundcore_journal SET created_at = ? WHERE provider = ? AND refund_id = ?",
                (stamp, provider, refund_id),
            )
    return url


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


def _listed(capsys: pytest.CaptureFixture[str], url: str, *filters: str) -> list[str]:
    code, data, err = _run(capsys, "journal", "list", "--json", "--journal", url, *filters)
    assert code == 0, err
    return [entry["refund_id"] for entry in data]


def test_list_filters(
    journal_url: str, filled_at: datetime, capsys: pytest.CaptureFixture[str]
) -> None:
    def listed(*filters: str) -> list[str]:
        return _listed(capsys, journal_url, *filters)

    assert listed("--status", "unknown") == ["w-old-unknown", "p-unknown"]
    assert listed("--status", "UNKNOWN,pending") == ["w-old-unknown", "w-pending", "p-unknown"]
    assert listed("--status", "UNKNOWN", "--status", "FAILED") == [
        "w-old-unknown",
        "p-unknown",
        "p-failed",
    ]
    assert listed("--provider", "paywizard") == ["p-unknown", "p-failed", "p-sending"]
    assert listed("--older-than", "1h") == ["w-old-unknown", "w-pending", "w-ok"]
    assert listed("--older-than", "1d") == ["w-old-unknown"]
    assert listed("--since", "45m") == ["p-unknown", "p-failed", "p-sending"]
    since = (filled_at - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%S")
    assert listed("--since", since) == ["w-ok", "p-unknown", "p-failed", "p-sending"]
    assert listed("--since", "6h", "--older-than", "20m", "--unsettled") == [
        "w-pending",
        "p-unknown",
    ]
    assert listed("--limit", "2") == ["w-old-unknown", "w-pending"]
    assert listed("--provider", "nopay") == []
    code, out, _ = _run(capsys, "journal", "list", "--journal", journal_url, "--provider", "nopay")
    assert (code, out.strip()) == (0, "No journalled refunds match.")
    code, out, _ = _run(capsys, "journal", "list", "--journal", journal_url, "--status", "PENDING")
    assert code == 0 and "w-pending" in out and "w-ok" not in out


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--status", "LOST", "status"),
        ("--status", "UNKNOWN,", "status"),
        ("--older-than", "an hour", "older-than"),
        ("--older-than", "0m", "older-than"),
        ("--since", "2026-13-01", "since"),
        ("--since", "yesterday", "since"),
    ],
)
def test_list_refuses_bad_filters_naming_them(
    journal_url: str, capsys: pytest.CaptureFixture[str], flag: str, value: str, field: str
) -> None:
    code, _, err = _run(capsys, "journal", "list", "--journal", journal_url, flag, value)
    assert code == 2
    assert f"refundcore: {field}: " in err and repr(value) in err


def test_list_refuses_a_bad_limit(journal_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["journal", "list", "--journal", journal_url, "--limit", "0"])
    assert exited.value.code == 2
    assert "--limit: must be 1 or more" in capsys.readouterr().err


def test_stats(journal_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, data, _ = _run(capsys, "journal", "stats", "--json", "--journal", journal_url)
    assert code == 0
    assert data["total"] == 6
    counts = {(c["provider"], c["state"]): c for c in data["counts"]}
    assert {key: c["count"] for key, c in counts.items()} == {
        ("paywizard", "SUBMITTING"): 1,
        ("paywizard", "FAILED"): 1,
        ("paywizard", "UNKNOWN"): 1,
        ("wonder", "PENDING"): 1,
        ("wonder", "SUCCEEDED"): 1,
        ("wonder", "UNKNOWN"): 1,
    }
    oldest = counts["wonder", "UNKNOWN"]["oldest"]
    assert oldest["refund_id"] == "w-old-unknown"
    assert 3 * 86400 - 60 < oldest["age_seconds"] < 3 * 86400 + 60
    assert counts["wonder", "SUCCEEDED"]["oldest"] is None

    code, out, _ = _run(
        capsys, "journal", "stats", "--journal", journal_url, "--provider", "wonder"
    )
    lines = out.splitlines()
    assert lines[0].split() == ["provider", "state", "refunds", "oldest", "unsettled", "age"]
    assert lines[2].split() == ["wonder", "PENDING", "1", "w-pending", "5h", "00m"]
    assert lines[-1] == "3 refunds"
    assert "paywizard" not in out


def test_stats_of_an_empty_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    code, out, _ = _run(capsys, "journal", "stats", "--journal", url)
    assert (code, out.strip()) == (0, "No journalled refunds.")
    code, data, _ = _run(capsys, "journal", "stats", "--journal", url, "--json")
    assert data == {"total": 0, "counts": []}
