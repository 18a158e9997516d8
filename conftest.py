"""Every test, the core's and each bundled plugin's, journals into its own folder:
never into the user's data directory, where RefundClient journals by default.

Tests write only under their tmp dirs: a run that leaves a new untracked file in the
git checkout fails, naming the file. Files that were already untracked when the run
started (work in progress) are not counted; outside a git checkout nothing is checked.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

_UNTRACKED_AT_START = pytest.StashKey[frozenset[str]]()


@pytest.fixture(autouse=True)
def private_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDCORE_JOURNAL", f"sqlite:///{tmp_path / 'journal.db'}")


def _untracked(root: Path) -> frozenset[str] | None:
    """Untracked, non-ignored files under ``root``; None when it is not in a git checkout."""
    git = shutil.which("git")
    if git is None:
        return None
    listed = subprocess.run(  # noqa: S603 - git, found on PATH, with fixed arguments
        [git, "-C", str(root), "ls-files", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        timeout=60,
    )
    if listed.returncode != 0:
        return None
    return frozenset(name for name in listed.stdout.decode("utf-8", "replace").split("\0") if name)


def pytest_sessionstart(session: pytest.Session) -> None:
    untracked = _untracked(session.config.rootpath)
    if untracked is not None:
        session.config.stash[_UNTRACKED_AT_START] = untracked


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.config.stash.get(_UNTRACKED_AT_START, None)
    if before is None:
        return
    left = sorted((_untracked(session.config.rootpath) or frozenset()) - before)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")  # ends the progress line
        reporter.write_sep("=", "tests left files in the working tree", red=True)
        for name in left:
            reporter.write_line(f"    {name}")
        reporter.write_line("Write them under tmp_path (or tmp_path_factory) instead.")
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
