"""`refundcore sandbox` as a developer runs it: the command itself in subprocesses, the
bundled plugins' emulators on loopback, and the README's "Developing against the
sandbox" commands as printed."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from refundcore import RefundClient, RefundNotification, RefundStatus
from refundcore.sandbox import CallbackReceiver, SandboxServer
from refundcore.wsgi import callback_app

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BUNDLED = ["directgw", "paywiser", "paywizard", "wonder"]


def environ(**extra: str) -> dict[str, str]:
    """The environment of a developer's shell: the bundled plugins, the test's journal."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REFUNDCORE_PLUGINS", "REFUNDCORE_DISABLE", "REFUNDCORE_CONFIG"))
    }
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **extra}


def refundcore(*argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "refundcore"), *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environ(),
        timeout=timeout,
    )


def free_ports(count: int) -> int:
    """A first port with ``count`` free ports from it on."""
    import socket

    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65000:
            continue
        held = []
        try:
            for port in range(base, base + count):
                taken = socket.socket()
                held.append(taken)
                taken.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for taken in held:
                taken.close()
    raise RuntimeError("no run of free ports")


class Sandbox:
    """`refundcore sandbox …` in the background, as `… &` in a shell."""

    def __init__(self, cwd: Path, *argv: str) -> None:
        self.cwd = cwd
        self.process = subprocess.Popen(
            [str(BIN / "refundcore"), "sandbox", *argv],
            cwd=cwd,
            env=environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_up(self, state_dir: str) -> None:
        done = refundcore(
            "sandbox", "status", "--state-dir", state_dir, "--wait", "30", cwd=self.cwd
        )
        assert done.returncode == 0, done.stderr + self.stop()[1]

    def stop(self) -> tuple[str, str]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=30)
        return out, err


@pytest.fixture
def sandboxes() -> Iterator[list[Sandbox]]:
    started: list[Sandbox] = []
    yield started
    for sandbox in started:
        if sandbox.process.poll() is None:
            sandbox.stop()


def test_stdout_is_only_the_config(tmp_path: Path) -> None:
    done = refundcore("sandbox", "--duration", "0.5", "--seed", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tomllib.loads(done.stdout)
    assert sorted(config["providers"]) == BUNDLED
    assert "Serving; press Ctrl-C to stop." in done.stderr
    assert "control API: http://127.0.0.1:" in done.stderr
    (tmp_path / "refundcore.toml").write_text(done.stdout)
    with RefundClient.from_file(tmp_path / "refundcore.toml", journal=None) as client:
        client.validate_config()

    done = refundcore("sandbox", "--duration", "0.5", "--config-out", "sandbox.toml", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == ""
    written = tmp_path / "sandbox.toml"
    assert stat.S_IMODE(written.stat().st_mode) == 0o600, "it holds test keys"
    assert sorted(tomllib.loads(written.read_text())["providers"]) == BUNDLED
    assert "config written to sandbox.toml" in done.stderr


def test_bad_sandbox_options(tmp_path: Path) -> None:
    done = refundcore("sandbox", "--provider", "acme", "--duration", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert "provider: not installed: acme (installed: directgw, paywiser" in done.stderr
    done = refundcore("sandbox", "--notify-url", "https://shop.example/h", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2,
        "refundcore: notify-url: the sandbox delivers callbacks over http://\n",
    )
    done = refundcore("sandbox", "scenario", "pending", "--state-dir", "none", cwd=tmp_path)
    assert done.returncode == 2 and "no sandbox has used 'none'" in done.stderr
    base = free_ports(1)
    done = refundcore("sandbox", "settle", "--url", f"http://127.0.0.1:{base}", cwd=tmp_path)
    assert done.returncode == 5
    assert f"no sandbox answers at http://127.0.0.1:{base}" in done.stderr


class App:
    """The developer's app: callback_app with a client configured from the sandbox."""

    def __init__(self) -> None:
        self.client: RefundClient | None = None
        self.notes: list[RefundNotification] = []
        self.arrived = threading.Condition()
        self.server = SandboxServer(CallbackReceiver(self._app)).start()

    def _app(self, environ: Any, start_response: Any) -> Any:
        assert self.client is not None
        return callback_app(self.client, self._note)(environ, start_response)

    def _note(self, note: RefundNotification) -> None:
        with self.arrived:
            self.notes.append(note)
            self.arrived.notify_all()

    def wait(self, count: int) -> list[RefundNotification]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.notes) >= count, 10), self.notes
            return list(self.notes)


def test_a_day_of_development(tmp_path: Path, sandboxes: list[Sandbox]) -> None:
    base = free_ports(len(BUNDLED) + 1)
    app = App()
    start = ["--port", str(base), "--state-dir", "state", "--config-out", "refundcore.toml"]
    sandboxes.append(Sandbox(tmp_path, *start, "--notify-url", app.server.base_url))
    try:
        sandboxes[0].wait_up("state")
        text = (tmp_path / "refundcore.toml").read_text()
        config = tomllib.loads(text)["providers"]
        assert [config[p]["base_url"] for p in BUNDLED] == [
            f"http://127.0.0.1:{base + n}" for n in range(1, 5)
        ]
        # The app journals where the CLI does: only a journalled txid lets a PayWiser
        # postback name its refund (PayWiser does not sign the tie).
        app.client = RefundClient.from_file(
            tmp_path / "refundcore.toml", journal=os.environ["REFUNDCORE_JOURNAL"]
        )

        def refund(provider: str, payment: str, refund_id: str, *extra: str) -> int:
            currency = "USD" if provider == "paywiser" else "HKD"
            done = refundcore(
                "refund", provider, "--amount", "10.00", "--currency", currency,
                "--payment-id", payment, "--refund-id", refund_id, *extra, cwd=tmp_path,
            )  # fmt: skip
            return done.returncode

        assert refund("directgw", "1000001", "d-1") == 0
        note = app.wait(1)[0]
        assert (note.provider, note.status) == ("directgw", RefundStatus.SUCCEEDED)

        control = ["--state-dir", "state"]
        done = refundcore(
            "sandbox", "scenario", "pending", "--provider", "paywiser", *control, cwd=tmp_path
        )
        assert (done.returncode, done.stdout) == (0, "paywiser: pending: the next 1 refund(s)\n")
        assert refund("paywiser", "7000001", "pw-1") == 3
        assert len(app.notes) == 1, "nothing is sent before the refund settles"
        done = refundcore("sandbox", "settle", *control, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert '"refund_id": "pw-1"' in done.stdout
        note = app.wait(2)[1]
        assert (note.provider, note.refund_id) == ("paywiser", "pw-1")
        assert note.status is RefundStatus.SUCCEEDED, "to the app, not the emulator's sink"

        done = refundcore("sandbox", "scenario", "decline", "--count", "0", *control, cwd=tmp_path)
        assert done.returncode == 0 and done.stdout.count("decline: every refund") == 4
        assert refund("wonder", "W000000000001", "w-1", "--transaction-id", wonder_sale(text)) == 1
        assert refund("directgw", "1000003", "d-2") == 1
        done = refundcore("sandbox", "scenario", "succeed", *control, cwd=tmp_path)
        assert refund("directgw", "1000003", "d-3") == 0

        shown = refundcore("journal", "show", "d-3", cwd=tmp_path)
        assert shown.returncode == 0 and "None" not in shown.stdout
        assert re.search(r"^reason +-$", shown.stdout, re.MULTILINE), shown.stdout

        done = refundcore("sandbox", "status", *control, cwd=tmp_path)
        assert (
            done.returncode == 0 and f"control API: http://127.0.0.1:{base}/_sandbox" in done.stdout
        )
    finally:
        out, err = sandboxes[0].stop()
        app.server.stop()
    assert out == "" and "Serving" in err

    # Restarted on the same state: the same config and ledger.
    sandboxes.append(Sandbox(tmp_path, "--state-dir", "state", "--config-out", "again.toml"))
    sandboxes[1].wait_up("state")
    again = tomllib.loads((tmp_path / "again.toml").read_text())["providers"]
    assert again == config, "same ports, same keys, same notify URL"
    done = refundcore(
        "query", "directgw", "--refund-id", "d-1", "--payment-id", "1000001", cwd=tmp_path
    )
    assert done.returncode == 0 and done.stdout.startswith("SUCCEEDED: query d-1")
    second = (
        "refund", "directgw", "--amount", "1.00", "--currency", "HKD", "--payment-id", "1000001",
        "--refund-id", "d-4",
    )  # fmt: skip
    # The journal knows the payment's refund: a refund-once gateway's second is refused.
    done = refundcore(*second, cwd=tmp_path)
    assert done.returncode == 2 and "refunds a payment once: the journal has refund 'd-1'" in (
        done.stderr
    )
    # Past the journal, the gateway's ledger (kept across the restart) declines it.
    done = refundcore(*second, "--no-journal", cwd=tmp_path)
    assert done.returncode == 1 and "Order has already been refunded" in done.stdout
    sandboxes[1].stop()


def wonder_sale(config: str) -> str:
    found = re.search(r"--payment-id W000000000001 .*--transaction-id (\S+)", config)
    assert found is not None
    return found.group(1)


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Developing against the sandbox", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_the_readme_sandbox_commands_run_as_printed(tmp_path: Path) -> None:
    """Each command of the README's section runs as printed and exits as its comment says
    (0 unless ``# exit N``); only the port is moved to a free one."""
    base = free_ports(len(BUNDLED) + 1)
    script = ["set -u"]
    for line in readme_commands():
        command = line.replace("8700", str(base))
        if command.endswith("&") or command.startswith("kill "):
            script.append(command)
            continue
        wanted = re.search(r"#\s*exit (\d+)\s*$", command)
        code = wanted.group(1) if wanted else "0"
        script.append(
            f"{command}\nrc=$?; if [ $rc -ne {code} ]; then "
            f"echo 'README command exited '$rc' not {code}: {command.replace(chr(39), '')}' >&2; "
            "kill %1; wait; exit 1; fi"
        )
    script.append("wait")
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environ(),
        timeout=180,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "SUCCEEDED: query dev-1 via directgw" in done.stdout
    assert "SUCCEEDED: query dev-4 via paywizard" in done.stdout
    assert "paywiser: dev-2 settled SUCCEEDED" in done.stdout
