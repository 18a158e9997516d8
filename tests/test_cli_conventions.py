"""The command line's conventions and the messages a newcomer meets first (issue 21):
global options anywhere, `config check`, where the config was looked for, `python -m
refundcore`, a plain journal path, and each message the issue lists. Mostly the
installed command in subprocesses, with the bundled plugins; in-process where the test
plugins are needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refundcore.cli import main

BIN = Path(sys.executable).parent


def run(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``refundcore ARGV`` (or ``python -m refundcore`` for argv[0] == "-m") from ``cwd``,
    with no config in the environment unless given."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("REFUNDCORE_CONFIG")}
    base = {k: v for k, v in base.items() if k not in ("REFUNDCORE_PLUGINS",)}
    command = [str(BIN / "refundcore"), *argv]
    if argv[:1] == ("-m",):
        command = [sys.executable, "-m", "refundcore", *argv[1:]]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, env={**base, **env}, timeout=60
    )


@pytest.fixture
def sandbox_config(tmp_path: Path) -> Path:
    """A valid config for every bundled provider (the sandbox's)."""
    done = run("sandbox", "--duration", "0", "--seed", "0", "--config-out", "rc.toml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return tmp_path / "rc.toml"


def test_python_m_refundcore(tmp_path: Path) -> None:
    done = run("-m", "--version", cwd=tmp_path)
    assert (done.returncode, done.stdout.split()[0]) == (0, "refundcore")
    done = run("-m", "providers", "--json", cwd=tmp_path)
    assert done.returncode == 0
    assert [p["id"] for p in json.loads(done.stdout)["providers"]] == [
        "directgw",
        "paywiser",
        "paywizard",
        "wonder",
    ]


def test_the_command_starts_without_the_sandbox_or_the_client() -> None:
    """Parsing (even the sandbox's own subcommands) loads neither: every command would
    pay for them at start-up."""
    probe = (
        "import sys\n"
        "from refundcore.cli import main\n"
        "try:\n"
        "    main(['sandbox', 'scenario', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(done.stderr.split())
    assert "refundcore.sandbox.scenarios" in loaded
    heavy = {
        "refundcore.client",
        "refundcore.journal",
        "refundcore.sandbox.emulator",
        "refundcore.sandbox.server",
        "refundcore.sandbox.service",
    }
    assert heavy & loaded == set()


def test_providers_imports_only_its_own_command(tmp_path: Path) -> None:
    """``refundcore providers`` is the start-up figure's command: the other commands'
    modules (the journal's, the batch's, Celery's, the console's) stay unloaded."""
    probe = (
        "import sys\n"
        "from refundcore.cli import main\n"
        "main(['providers', '--json'])\n"
        "print(' '.join(sys.modules), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=tmp_path,
    )
    loaded = set(done.stderr.split())
    assert "refundcore.cli.providers" in loaded
    others = {
        f"refundcore.cli.{name}"
        for name in ("batch", "batch_celery", "console", "journal", "refunds", "sandbox")
    }
    assert others & loaded == set()


def test_global_options_go_before_or_after_the_command(
    tmp_path: Path, sandbox_config: Path
) -> None:
    config = str(sandbox_config)
    before = run("--config", config, "--json", "providers", cwd=tmp_path)
    after = run("providers", "--json", "--config", config, cwd=tmp_path)
    assert before.returncode == after.returncode == 0, before.stderr
    assert before.stdout == after.stdout
    data = json.loads(before.stdout)
    assert data["config_file"] == config
    assert all(p["configured"] for p in data["providers"])
    human = run("providers", cwd=tmp_path)
    assert human.stdout.splitlines()[2].split()[-1] == "no"
    assert "no config file was found (searched: --config: not given;" in human.stdout

    journal = tmp_path / "journals" / "j.db"
    for argv in (
        ["--journal", str(journal), "journal", "list"],
        ["journal", "--journal", str(journal), "list"],
        ["journal", "list", "--journal", str(journal)],
    ):
        done = run(*argv, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, "No journalled refunds.\n"), done.stderr
    assert journal.is_file(), "a plain path is a SQLite journal"

    done = run("--journal", str(journal), "providers", cwd=tmp_path)
    assert done.returncode == 2
    assert "--journal does not apply to `refundcore providers`" in done.stderr
    done = run("--no-journal", "journal", "list", cwd=tmp_path)
    assert done.returncode == 2
    assert "--no-journal does not apply to `refundcore journal list`" in done.stderr
    refund = ["refund", "wonder", "--amount", "1", "--currency", "HKD", "--payment-id", "p"]
    done = run("--journal", str(journal), *refund, "--no-journal", cwd=tmp_path)
    assert done.returncode == 2 and "--journal and --no-journal exclude each other" in done.stderr


def test_the_journal_may_be_a_plain_path_in_the_environment(tmp_path: Path) -> None:
    journal = tmp_path / "data" / "j.db"
    done = run("journal", "list", cwd=tmp_path, REFUNDCORE_JOURNAL=str(journal))
    assert (done.returncode, done.stdout) == (0, "No journalled refunds.\n"), done.stderr
    assert journal.is_file()
    done = run("journal", "list", cwd=tmp_path, REFUNDCORE_JOURNAL="j.db")
    assert done.returncode == 2 and "use a file path (/absolute/path.db" in done.stderr


def test_without_a_config_file_the_error_says_where_it_looked(tmp_path: Path) -> None:
    refund = ["refund", "wonder", "--amount", "1.00", "--currency", "HKD"]
    done = run(*refund, "--payment-id", "W1", "--transaction-id", "t", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "refundcore: wonder: no configuration for this provider: no config file was found "
        "(searched: --config: not given; $REFUNDCORE_CONFIG: not set; "
        f"{tmp_path.resolve() / 'refundcore.toml'}: no such file)\n",
    )
    done = run(*refund, "--payment-id", "W1", cwd=tmp_path.parent, REFUNDCORE_CONFIG="")
    assert "searched" in done.stderr
    done = run(
        "refund", "acme", "--amount", "1", "--currency", "HKD", "--payment-id", "1", cwd=tmp_path
    )
    assert done.returncode == 5 and "provider 'acme' is not installed" in done.stderr


def test_config_check(tmp_path: Path, sandbox_config: Path) -> None:
    done = run("config", "check", "--config", str(sandbox_config), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"config: {sandbox_config.resolve()}"
    assert done.stdout.splitlines()[-1] == "every provider table is usable"

    text = sandbox_config.read_text()
    text = text.replace("[providers.paywiser]\n", '[providers.paywiser]\nsidd = "22"\n')
    text = "\n".join(line for line in text.splitlines() if not line.startswith("app_id = "))
    text += '\n[providers.acme]\nkey = "x"\n'
    (tmp_path / "refundcore.toml").write_text(text)
    done = run("--json", "config", "check", cwd=tmp_path)
    assert done.returncode == 2
    data = json.loads(done.stdout)
    assert data["file"] == str((tmp_path / "refundcore.toml").resolve())
    assert data["ok"] is False
    problems = {p: entry["problem"] for p, entry in data["providers"].items()}
    assert problems["directgw"] is None and problems["paywizard"] is None
    assert problems["paywiser"].startswith("unknown key 'sidd' (did you mean 'sid'?); known keys: ")
    assert problems["wonder"] == "app_id: missing required field"
    assert problems["acme"].startswith("provider 'acme' is not installed")
    human = run("config", "check", cwd=tmp_path).stdout.splitlines()
    assert "  [providers.wonder] app_id: missing required field" in human
    assert "  [providers.directgw] ok" in human
    assert human[-1] == "3 of 5 provider table(s) have problems"

    elsewhere = tmp_path / "empty"
    elsewhere.mkdir()
    done = run("config", "check", cwd=elsewhere)
    assert done.returncode == 2
    assert done.stderr == (
        "refundcore: no config file was found (searched: --config: not given; "
        f"$REFUNDCORE_CONFIG: not set; {elsewhere.resolve() / 'refundcore.toml'}: "
        "no such file)\n"
    )
    done = run("config", "check", cwd=elsewhere, REFUNDCORE_CONFIG=str(sandbox_config))
    assert done.returncode == 0 and str(sandbox_config) in done.stdout


def test_a_negative_amount_must_be_positive(tmp_path: Path) -> None:
    done = run(
        "refund", "wonder", "--amount", "-5.00", "--currency", "HKD", "--payment-id", "W1",
        cwd=tmp_path,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (
        2,
        "refundcore: amount: must be positive, got -5.00\n",
    )


def test_an_unsupported_currency_is_labelled_currency(tmp_path: Path, sandbox_config: Path) -> None:
    done = run(
        "refund", "directgw", "--amount", "5", "--currency", "JPY", "--payment-id", "1000001",
        "--config", str(sandbox_config), "--no-journal", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("refundcore: currency: BBMSL PayAPI (Online Direct) does not ")


def test_when_the_only_plugin_fails_providers_says_why(
    installed: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "brokenimport")
    monkeypatch.chdir(installed)
    code = main(["providers"])
    out = capsys.readouterr().out
    assert code == 5
    assert out == (
        "No provider plugin could be loaded (1 failed):\n"
        "failed to load brokenimport (refundcore-brokenimport 9.9): "
        "import failed: ImportError: needs libfoo 2.0\n"
    )
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "")
    assert main(["providers"]) == 0
    assert "No provider plugin is installed. They are not on PyPI yet" in capsys.readouterr().out
