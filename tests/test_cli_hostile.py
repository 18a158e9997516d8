"""The command's numeric options and input files, given values out of any sane range:
a usage error naming the option, never a traceback, a hang or unbounded memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("refundcore"))
pytestmark = pytest.mark.timeout(60)


def _run(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--lease", "inf"),
        ("--lease", "nan"),
        ("--lease", "-1"),
        ("--lease", "1e300"),
        ("--progress-interval", "nan"),
        ("--progress-interval", "0"),
        ("--workers", "0"),
        ("--workers", "100000000"),
        ("--chunk", "9" * 5000),
    ],
)
def test_batch_options_out_of_range_are_usage_errors(
    tmp_path: Path, option: str, value: str
) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text("provider,payment_id,amount,currency\npaywizard,123,1.00,HKD\n")
    done = _run(tmp_path, "batch", str(rows), option, value)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"argument {option}" in done.stderr and len(done.stderr) < 2000


@pytest.mark.parametrize("value", ["inf", "nan", "-5"])
def test_sandbox_duration_must_be_finite(tmp_path: Path, value: str) -> None:
    done = _run(tmp_path, "sandbox", "--duration", value)
    assert done.returncode == 2 and "argument --duration" in done.stderr


def test_verify_callback_reads_a_bounded_body(tmp_path: Path) -> None:
    done = _run(tmp_path, "verify-callback", "paywizard", "--path", "/", "--body-file", "/dev/zero")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "body-file: more than 1048576 bytes" in done.stderr
