"""Real installs into fresh virtual environments: what a merchant or a plugin author
does. Slow (pip), so marked; `make test` runs them."""

from __future__ import annotations

import json
import os
import re
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


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("REFUNDCORE_", "PYTHONPATH", "VIRTUAL_ENV"))
    }


def _run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = _clean_env()
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


@pytest.mark.timeout(1800)
def test_the_plugin_guide_install_steps_work_as_written(tmp_path: Path) -> None:
    """docs/writing-a-plugin.md, section 1, run as written in an empty folder (the clone's
    path put in for /path/to/refundcore): a fresh venv, the core editable from the
    clone, a scaffolded plugin that passes the conformance kit, is listed, and refunds."""
    guide = (ROOT / "docs" / "writing-a-plugin.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)```", guide, flags=re.S)
    assert blocks, "the guide has no ```sh block"
    script = blocks[0].replace("/path/to/refundcore", str(ROOT))
    assert "pip install -e" in script and "pytest tests" in script
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=1500,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert re.search(r"\b\d+ passed\b", done.stdout) and " failed" not in done.stdout, out[-4000:]
    assert "acme" in done.stdout and "SUCCEEDED" in done.stdout, out[-4000:]
