"""The repository's own rules: the version is written once, every distribution
declares the license it ships under, each plugin accepts one minor series of the core
and documents its protocol itself, nothing points at reference material outside the
repository, and a test run that leaves a file in the git checkout fails (the check is in
the root conftest.py; it is tried here on throwaway checkouts)."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import refundcore
from refundcore.scaffold import core_requirement, create_plugin

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _project_table(pyproject: Path) -> dict[str, Any]:
    table: dict[str, Any] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return table


# -- one version, one license, compatible plugins -----------------------------------------


def test_the_version_is_read_from_the_installed_metadata() -> None:
    written = _project_table(ROOT / "pyproject.toml")["version"]
    assert refundcore.__version__ == importlib.metadata.version("refundcore") == written


def test_the_license_file_is_the_one_pyproject_declares() -> None:
    assert _project_table(ROOT / "pyproject.toml")["license"] == "Apache-2.0"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "Copyright 2026 refundcore contributors" in text


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda path: path.name)
def test_each_plugin_declares_the_license_and_a_compatible_core(plugin: Path) -> None:
    project = _project_table(plugin / "pyproject.toml")
    assert project["license"] == "Apache-2.0"
    cores = [dep for dep in project["dependencies"] if dep.startswith("refundcore")]
    assert cores == [core_requirement(refundcore.__version__)] == ["refundcore>=0.1,<0.2"]
    assert project["version"] == importlib.metadata.version(project["name"])


def test_a_scaffolded_plugin_requires_the_generating_core_series(tmp_path: Path) -> None:
    project = _project_table(create_plugin("acme", tmp_path / "acme") / "pyproject.toml")
    assert project["dependencies"] == [core_requirement(refundcore.__version__)]


@pytest.mark.parametrize(
    ("version", "requirement"),
    [
        ("0.1.0", "refundcore>=0.1,<0.2"),
        ("0.2.0.dev1", "refundcore>=0.2,<0.3"),
        ("1.4.2", "refundcore>=1.4,<2"),
    ],
)
def test_core_requirement(version: str, requirement: str) -> None:
    assert core_requirement(version) == requirement


# -- self-contained: protocol notes and page examples live in the repository ------------

# The project's reference notes sit beside the repository, not in it: a clean clone has
# none of them, so no file may point there.
_OUTSIDE = re.compile(r"\.\./shared\b|\bshared/specs\b|\bGATEWAYS\.md\b")


@needs_git
def test_no_file_cites_or_reads_material_outside_the_repository() -> None:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
    )
    names = [name for name in listed.stdout.decode().split("\0") if name]
    this = Path(__file__).resolve().relative_to(ROOT).as_posix()
    offending = []
    for name in names:
        path = ROOT / name
        if name == this or not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        offending += [f"{name}: {match.group()}" for match in _OUTSIDE.finditer(text)]
    assert offending == []


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda path: path.name)
def test_each_plugin_documents_its_protocol_and_links_it(plugin: Path) -> None:
    protocol = (plugin / "PROTOCOL.md").read_text(encoding="utf-8")
    assert "## Assumptions" in protocol and "ASSUMPTION" in protocol
    assert "](PROTOCOL.md" in (plugin / "README.md").read_text(encoding="utf-8")


# -- a test run leaves the checkout as it found it ----------------------------------------


def _project(where: Path, test_source: str, *, git: bool = True) -> Path:
    """A tiny project with the repository's root conftest.py and one test file."""
    where.mkdir()
    shutil.copy(ROOT / "conftest.py", where / "conftest.py")
    (where / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (where / "test_it.py").write_text(textwrap.dedent(test_source), encoding="utf-8")
    if git:
        subprocess.run(["git", "init", "-q", str(where)], check=True)
    return where


def _pytest(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_it.py"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
    )


_LEAVES_A_FILE = """
    from pathlib import Path

    def test_writes_beside_itself():
        Path("stray.txt").write_text("left behind")
"""


@needs_git
def test_a_file_left_in_the_checkout_fails_the_run(tmp_path: Path) -> None:
    run = _pytest(_project(tmp_path / "p", _LEAVES_A_FILE))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "tests left files in the working tree" in run.stdout
    assert "stray.txt" in run.stdout
    assert "1 passed" in run.stdout


@needs_git
def test_tmp_dirs_ignored_files_and_earlier_work_are_not_counted(tmp_path: Path) -> None:
    project = _project(
        tmp_path / "p",
        """
        from pathlib import Path

        def test_writes_where_it_may(tmp_path):
            (tmp_path / "scratch.txt").write_text("fine")
            Path("journal.db").write_text("ignored by .gitignore")
        """,
    )
    (project / ".gitignore").write_text("*.db\n", encoding="utf-8")
    (project / "work_in_progress.py").write_text("", encoding="utf-8")
    run = _pytest(project)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "left files" not in run.stdout


def test_outside_a_git_checkout_nothing_is_checked(tmp_path: Path) -> None:
    run = _pytest(_project(tmp_path / "p", _LEAVES_A_FILE, git=False))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "left files" not in run.stdout
