"""The repository stays clean: a test run that leaves a file in the git checkout fails
(the check is in the root conftest.py), and what it proves is tried here on a throwaway
checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


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


def test_a_file_left_in_the_checkout_fails_the_run(tmp_path: Path) -> None:
    run = _pytest(_project(tmp_path / "p", _LEAVES_A_FILE))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "tests left files in the working tree" in run.stdout
    assert "stray.txt" in run.stdout
    assert "1 passed" in run.stdout


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
