"""Each plugin's PROTOCOL.md lists every ASSUMPTION its code makes, under the name of
the function or constant it lives in, and names nothing the code no longer has; the
plugin's README leaves the protocol to PROTOCOL.md and links to it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
CODE = re.compile(r"`([^`]+)`")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def assumptions_section(plugin: Path) -> str:
    notes = (plugin / "PROTOCOL.md").read_text(encoding="utf-8")
    start = notes.index("\n## Assumptions\n")
    end = notes.find("\n## ", start + 1)
    return notes[start : end if end != -1 else len(notes)]


def sources(plugin: Path) -> list[Path]:
    return sorted(plugin.glob("refundcore_*/*.py"))


def assumption_sites(path: Path) -> list[str]:
    """Names of the functions, classes and module constants marked ASSUMPTION in ``path``
    (in their body, or in the comment right above a constant)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    names = []
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            if "ASSUMPTION" in "\n".join(lines[node.lineno - 1 : node.end_lineno]):
                names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            above = node.lineno - 2
            comment = []
            while above >= 0 and lines[above].lstrip().startswith("#"):
                comment.append(lines[above])
                above -= 1
            if isinstance(target, ast.Name) and "ASSUMPTION" in "\n".join(comment):
                names.append(target.id)
    return names


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_every_assumption_in_the_code_is_in_the_notes(plugin: Path) -> None:
    section = assumptions_section(plugin)
    named = {name for code in CODE.findall(section) for name in NAME.findall(code)}
    missing = [
        f"{path.name}: {name}"
        for path in sources(plugin)
        for name in assumption_sites(path)
        if name not in named
    ]
    assert missing == [], f"{plugin.name}/PROTOCOL.md does not list these ASSUMPTIONs"


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_the_notes_name_only_what_the_code_has(plugin: Path) -> None:
    code = "\n".join(path.read_text(encoding="utf-8") for path in sources(plugin))
    words = set(NAME.findall(code))
    rows = [line for line in assumptions_section(plugin).splitlines() if line.startswith("| ")]
    stale = [
        name
        for row in rows[2:]  # after the header and its rule
        for cell in [row.split(" | ")[0]]
        for snippet in CODE.findall(cell)
        for name in NAME.findall(snippet)
        if name not in words
    ]
    assert stale == [], f"{plugin.name}/PROTOCOL.md names what its code does not have"


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_every_assumption_row_gives_its_source(plugin: Path) -> None:
    rows = [line for line in assumptions_section(plugin).splitlines() if line.startswith("| ")]
    assert rows, f"{plugin.name}/PROTOCOL.md has no assumptions table"
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    if header[-1] == "source":
        for row in rows[2:]:
            assert row.rstrip().rstrip("|").rsplit("|", 1)[-1].strip(), row


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_the_readme_links_to_the_notes_and_keeps_no_protocol_of_its_own(plugin: Path) -> None:
    readme = (plugin / "README.md").read_text(encoding="utf-8")
    assert "(PROTOCOL.md)" in readme
    assert "## Assumptions" not in readme
