"""The refundcore command, run in-process against the testpay emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refundcore import Money, RefundStatus
from refundcore.cli import main
from refundcore.sandbox import Fault, SandboxRun


@pytest.fixture
def only_testpay(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "testpay")


@pytest.fixture
def gateway(only_testpay: None, tmp_path: Path) -> Iterator[tuple[SandboxRun, Path]]:
    with SandboxRun("testpay") as run:
        config = run.emulator.client_config(run.server.base_url)
        lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
        file = tmp_path / "refundcore.toml"
        file.write_text(f"[providers.testpay]\n{lines}")
        yield run, file


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        data = json.loads(out)
    except ValueError:
        data = out
    return code, data, err


def refund_args(run: SandboxRun, file: Path, amount: str, **extra: str) -> list[str]:
    payment = run.emulator.seed_payment(Money("100.00", "HKD"), **extra)  # type: ignore[arg-type]
    return [
        "refund",
        "testpay",
        "--amount",
        amount,
        "--currency",
        "HKD",
        "--payment-id",
        str(payment.payment_id),
        "--config",
        str(file),
        "--json",
    ]


def test_providers_lists_and_reports_load_errors(
    installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data, _ = cli(capsys, "providers", "--json")
    assert code == 5
    assert "testpay" in [p["id"] for p in data["providers"]]
    testpay = next(p for p in data["providers"] if p["id"] == "testpay")
    assert testpay["distribution"] == "refundcore-testpay" and testpay["version"] == "0.1.0"
    assert testpay["capabilities"]["query"] is True
    errors = {e["name"]: e for e in data["load_errors"]}
    assert errors["brokenimport"]["distribution"] == "refundcore-brokenimport"
    assert "needs libfoo" in errors["brokenimport"]["error"]


def test_providers_table(only_testpay: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "providers")
    assert code == 0
    header = ["id", "name", "distribution", "capabilities", "configured"]
    assert out.splitlines()[0].split() == header
    assert "testpay" in out and "refundcore-testpay 0.1.0" in out


def test_refund_exit_codes(
    gateway: tuple[SandboxRun, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, file = gateway
    code, data, _ = cli(
        capsys, *refund_args(run, file, "10.00"), "--refund-id", "cli-1", "--reason", "dented"
    )
    assert (code, data["status"], data["refund_id"]) == (0, "SUCCEEDED", "cli-1")
    assert data["amount"] == {"value": "10.00", "currency": "HKD"}
    code, data, _ = cli(capsys, *refund_args(run, file, "100.01"))
    assert (code, data["status"]) == (1, "FAILED")
    code, data, _ = cli(capsys, *refund_args(run, file, "5", refund_outcome=RefundStatus.PENDING))
    assert (code, data["status"]) == (3, "PENDING")
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    code, data, _ = cli(capsys, *refund_args(run, file, "5"))
    assert (code, data["status"]) == (4, "UNKNOWN")
    code, data, _ = cli(
        capsys, "query", "testpay", "--refund-id", "cli-1", "--config", str(file), "--json"
    )
    assert (code, data["status"], data["operation"]) == (0, "SUCCEEDED", "query")


def test_human_output(gateway: tuple[SandboxRun, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run, file = gateway
    args = [a for a in refund_args(run, file, "10.00") if a != "--json"]
    code, out, _ = cli(capsys, *args)
    assert code == 0
    assert out.startswith("SUCCEEDED: refund ") and "10.00 HKD" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amount", "10,00"], "amount: '10,00' is not a plain decimal"),
        (["--amount", "1.001"], "more decimals than HKD"),
        (["--currency", "XYZ"], "currency: 'XYZ' is not an ISO 4217"),
        (["--refund-id", "a b"], "refund_id"),
    ],
)
def test_bad_input_exits_2_and_sends_nothing(
    gateway: tuple[SandboxRun, Path],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    run, file = gateway
    base = refund_args(run, file, "10.00")
    code, _, err = cli(capsys, *base, *args)
    assert code == 2 and message in err
    assert run.server.requests == []


def test_usage_errors_exit_2(only_testpay: None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["refund", "testpay", "--currency", "HKD"])
    assert stop.value.code == 2
    code, _, err = cli(capsys, "refund", "testpay", "--amount", "1", "--currency", "HKD")
    assert code == 2 and "payment: give at least one" in err


def test_unconfigured_and_missing_providers(
    only_testpay: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(
        capsys, "refund", "testpay", "--amount", "1", "--currency", "HKD", "--payment-id", "1"
    )
    assert code == 2 and "testpay: no configuration" in err
    code, _, err = cli(
        capsys, "refund", "acme", "--amount", "1", "--currency", "HKD", "--payment-id", "1"
    )
    assert code == 5 and "pip install -e plugins/acme" in err


def test_verify_callback(
    gateway: tuple[SandboxRun, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, file = gateway
    code, data, _ = cli(capsys, *refund_args(run, file, "10.00"))
    callback = run.emulator.signed_callback(data["refund_id"], path="/hooks/testpay?a=1")
    body = tmp_path / "body.json"
    body.write_bytes(callback.body)
    headers = [
        arg for name, value in callback.headers.items() for arg in ("--header", f"{name}: {value}")
    ]
    base = [
        "verify-callback",
        "testpay",
        "--path",
        "/hooks/testpay?a=1",
        "--body-file",
        str(body),
        "--config",
        str(file),
    ]
    code, out, _ = cli(capsys, *base, *headers)
    # The reply already said SUCCEEDED: the callback tells the journal nothing new.
    assert code == 0 and out.startswith("duplicate: refund.updated SUCCEEDED")
    assert out.rstrip().endswith("(the journal already had it)")
    body.write_bytes(callback.body.replace(b"10.00", b"99.00"))
    code, _, err = cli(capsys, *base, *headers)
    assert code == 1 and "callback rejected: signature does not match" in err
    # The gateway then says FAILED: the journal keeps SUCCEEDED, and the word names no refund.
    run.emulator.ledger.settle(data["refund_id"], RefundStatus.FAILED)
    failed = run.emulator.signed_callback(data["refund_id"], path="/hooks/testpay?a=1")
    body.write_bytes(failed.body)
    headers = [
        arg for name, value in failed.headers.items() for arg in ("--header", f"{name}: {value}")
    ]
    code, out, _ = cli(capsys, *base, *headers)
    assert code == 0 and out.startswith("contradiction: refund.updated FAILED")
    assert out.rstrip().endswith("(not applied: the journal keeps SUCCEEDED)")
    code, note, _ = cli(capsys, *base, *headers, "--json")
    assert (note["status"], note["refund_id"]) == ("FAILED", None)
    assert (note["duplicate"], note["contradicts"]) == (False, "SUCCEEDED")
    assert note["verdict"] == "contradiction"


def test_demo_runs_every_provider(only_testpay: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "demo")
    assert code == 0, out
    header, _rule, row = out.splitlines()[:3]
    assert header.split()[:3] == ["provider", "refund", "id"]
    assert row.startswith("testpay") and "SUCCEEDED" in row and "yes (SUCCEEDED)" in row
    code, data, _ = cli(capsys, "demo", "--json")
    assert code == 0 and data["providers"][0]["ok"] is True


def test_demo_without_providers_says_so(
    installed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "")
    code, _, err = cli(capsys, "demo")
    assert code == 1 and "No provider plugin is installed" in err


def test_sandbox_prints_urls_and_credentials(
    only_testpay: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data, _ = cli(capsys, "sandbox", "--duration", "0.1", "--json", "--seed", "2")
    assert code == 0
    entry = data["providers"]["testpay"]
    assert entry["base_url"].startswith("http://127.0.0.1:")
    assert set(entry["config"]) >= {"api_key", "secret", "base_url"}
    assert len(entry["payments"]) == 2
    code, out, _ = cli(capsys, "sandbox", "--duration", "0.1")
    assert "[providers.testpay]" in out and "base_url = " in out


def test_new_plugin_refuses_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "new-plugin", "Bad-Name", "--dir", str(tmp_path / "x"))
    assert code == 2 and "name: must be" in err
    code, _, _ = cli(capsys, "new-plugin", "acme", "--dir", str(tmp_path / "acme"), "--json")
    assert code == 0 and (tmp_path / "acme" / "refundcore_acme" / "__init__.py").is_file()
    code, _, err = cli(capsys, "new-plugin", "acme", "--dir", str(tmp_path / "acme"))
    assert code == 2 and "not empty" in err


def test_journal_commands(
    gateway: tuple[SandboxRun, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, file = gateway
    code, _, _ = cli(capsys, *refund_args(run, file, "10.00"), "--refund-id", "j-1")
    assert code == 0
    code, _, _ = cli(capsys, *refund_args(run, file, "10.00"), "--refund-id", "j-1")
    assert code == 2, "same id, other payment: an idempotency conflict"
    run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    code, lost, _ = cli(capsys, *refund_args(run, file, "5"), "--refund-id", "j-2")
    assert (code, lost["status"]) == (4, "UNKNOWN")
    code, listed, _ = cli(capsys, "journal", "list", "--json", "--config", str(file))
    assert [(e["refund_id"], e["state"]) for e in listed] == [
        ("j-1", "SUCCEEDED"),
        ("j-2", "UNKNOWN"),
    ]
    code, out, _ = cli(capsys, "journal", "list", "--unsettled", "--config", str(file))
    assert "j-2" in out and "j-1" not in out
    code, shown, _ = cli(capsys, "journal", "show", "j-1", "--json", "--config", str(file))
    assert (code, shown["state"], shown["amount"]) == (0, "SUCCEEDED", "10.00")
    assert "fingerprint" not in shown
    code, settled, _ = cli(capsys, "journal", "reconcile", "--json", "--config", str(file))
    assert code == 0 and [(r["refund_id"], r["status"]) for r in settled] == [("j-2", "SUCCEEDED")]
    code, out, _ = cli(capsys, "journal", "reconcile", "--config", str(file))
    assert (code, out.strip()) == (0, "Nothing to reconcile.")
    code, _, err = cli(capsys, "journal", "show", "nope", "--config", str(file))
    assert code == 2 and "no journalled refund 'nope'" in err
    refunds = [r for r in run.server.requests if r.method == "POST"]
    assert len(refunds) == 2


def test_no_journal_flag(
    gateway: tuple[SandboxRun, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    run, file = gateway
    args = refund_args(run, file, "1.00")
    for _ in range(2):
        code, _, _ = cli(capsys, *args, "--refund-id", "nj-1", "--no-journal")
        assert code == 0
    assert len([r for r in run.server.requests if r.method == "POST"]) == 2
