"""Real installs into fresh virtual environments: what a merchant or a plugin author
does. Slow (pip), so marked; `make test` runs them."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

from refundcore.scaffold import create_plugin

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())

pytestmark = pytest.mark.slow


def _venv(where: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(where)
    return where / "bin"


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUNDCORE_", "PYTHONPATH"))}
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=900
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_scaffolded_plugin_installs_passes_its_tests_and_is_listed(tmp_path: Path) -> None:
    plugin = create_plugin("acme", tmp_path / "refundcore-acme")
    bin_dir = _venv(tmp_path / "venv")
    _run(bin_dir / "python", "-m", "pip", "install", "-q", f"{ROOT}[testing]", plugin)
    tests = _run(
        bin_dir / "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        plugin / "tests",
        cwd=tmp_path,
    )
    assert " passed" in tests.stdout and "failed" not in tests.stdout
    listed = json.loads(_run(bin_dir / "refundcore", "providers", "--json").stdout)
    assert [p["id"] for p in listed["providers"]] == ["acme"]
    assert listed["providers"][0]["distribution"] == "refundcore-acme"
    demo = _run(bin_dir / "refundcore", "demo")
    assert "acme" in demo.stdout and "SUCCEEDED" in demo.stdout


@pytest.mark.parametrize("plugin", BUNDLED)
def test_each_bundled_plugin_installs_alone(tmp_path: Path, plugin: str) -> None:
    bin_dir = _venv(tmp_path / "venv")
    _run(bin_dir / "python", "-m", "pip", "install", "-q", ROOT, ROOT / "plugins" / plugin)
    listed = json.loads(_run(bin_dir / "refundcore", "providers", "--json").stdout)
    assert [p["id"] for p in listed["providers"]] == [plugin]
    assert listed["load_errors"] == []
    demo = _run(bin_dir / "refundcore", "demo")
    assert plugin in demo.stdout
