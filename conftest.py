"""Every test, the core's and each bundled plugin's, journals into its own folder:
never into the user's data directory, where RefundClient journals by default."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def private_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFUNDCORE_JOURNAL", f"sqlite:///{tmp_path / 'journal.db'}")
