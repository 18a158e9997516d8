"""Every code and shell example in the documentation runs as printed, against a sandbox.

The examples are the fenced ``python``, ``sh``, ``bash`` and ``console`` blocks of
README.md, docs/*.md and plugins/*/README.md. Each one runs in a fresh folder holding the
``refundcore.toml`` of one sandbox (started once for the module, with ``refundcore
sandbox --config-out``), with ``HOME`` and the journal in that folder: Python blocks in a
new interpreter, shell blocks through ``bash -e -o pipefail`` with ``.venv/bin`` first
on ``PATH``. A shell command ending in ``# exit N`` must exit with status ``N``.

A block that cannot run as printed says so, and why, in an HTML comment on the line
before it: ``<!-- example: not run (serves forever) -->``. Commands are never left in
indented blocks, where no one would know to run them: those are refused too.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RUN_LANGUAGES = {"python", "sh", "bash", "console"}
NOT_RUN = re.compile(r"<!--\s*example:\s*not run\s*\((?P<why>[^)]*)\)\s*-->")
FENCE = re.compile(r"^(?P<fence>```+)(?P<lang>[A-Za-z0-9_+-]*)\s*$")
EXPECTED_EXIT = re.compile(r"\s+#\s*exit\s+(?P<code>[0-9]+)\s*$")
BLOCK_TIMEOUT = 120


@attrs.frozen
class Block:
    """One fenced block of a Markdown file."""

    path: Path
    line: int
    lang: str
    text: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "plugins").glob("*/README.md")),
    ]


def parse(path: Path) -> tuple[list[Block], list[int]]:
    """The fenced blocks of ``path``, and the lines that start indented code blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    indented: list[int] = []
    index = 0
    previous = ""
    in_list = False
    while index < len(lines):
        line = lines[index]
        opening = FENCE.match(line)
        if opening:
            end = index + 1
            while end < len(lines) and lines[end].rstrip() != opening["fence"]:
                end += 1
            marker = NOT_RUN.search(previous)
            blocks.append(
                Block(
                    path=path,
                    line=index + 1,
                    lang=opening["lang"].lower(),
                    text="\n".join(lines[index + 1 : end]) + "\n",
                    not_run=marker["why"].strip() if marker else None,
                )
            )
            index, previous = end + 1, ""
            continue
        if re.match(r"\s*([*+-]|[0-9]+\.)\s", line):
            in_list = True
        elif line.strip() and not line.startswith(" "):
            in_list = False
        if line.startswith("    ") and not previous.strip() and not in_list:
            indented.append(index + 1)
        if line.strip():
            previous = line
        elif not previous.startswith("<!--"):
            previous = ""
        index += 1
    return blocks, indented


ALL_BLOCKS = [block for path in documents() for block in parse(path)[0]]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.lang in RUN_LANGUAGES and b.not_run is None]
MARKED_BLOCKS = [b for b in ALL_BLOCKS if b.not_run is not None]


def test_the_documents_have_runnable_examples() -> None:
    assert len(RUN_BLOCKS) >= 10, [b.name for b in RUN_BLOCKS]


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_commands_hide_in_indented_blocks(path: Path) -> None:
    assert parse(path)[1] == [], f"{path.name}: fence these blocks, with a language"


@pytest.mark.parametrize("block", MARKED_BLOCKS, ids=lambda b: b.name)
def test_a_block_not_run_says_why(block: Block) -> None:
    assert len(block.not_run or "") >= 10, f"{block.name}: say why it is not run"
    assert block.lang in RUN_LANGUAGES, f"{block.name}: only code and shell blocks are run"


@pytest.fixture(scope="module")
def sandbox_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``refundcore.toml`` of one sandbox, served for the whole module."""
    home = tmp_path_factory.mktemp("docs-sandbox")
    config = home / "refundcore.toml"
    env = _environment(home)
    state = str(home / "state")
    with open(home / "sandbox.log", "wb") as log:
        server = subprocess.Popen(
            [str(BIN / "refundcore"), "sandbox", "--state-dir", state, "--config-out", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=home,
        )
    try:
        subprocess.run(
            [str(BIN / "refundcore"), "sandbox", "status", "--state-dir", state, "--wait", "30"],
            check=True,
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert config.is_file(), (home / "sandbox.log").read_text()
        yield config
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _environment(folder: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("REFUNDCORE_") or key == "REFUNDCORE_SKIP_POSTGRES"
    }
    env.update(
        HOME=str(folder),
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        REFUNDCORE_JOURNAL=str(folder / "journal.db"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


def shell_script(block: Block) -> str:
    """The block as a bash script; ``cmd  # exit N`` must end with status N."""
    if block.lang == "console":
        commands = [line[2:] for line in block.text.splitlines() if line.startswith("$ ")]
    else:
        commands = block.text.splitlines()
    script = []
    for command in commands:
        expected = EXPECTED_EXIT.search(command)
        if expected and not command.lstrip().startswith("#"):
            code = expected["code"]
            complaint = f'echo "exit $rc, not {code}: {command}" >&2'
            script.append(
                f"rc=0; {command[: expected.start()]} || rc=$?; "
                f'[ "$rc" -eq {code} ] || {{ {complaint}; exit 1; }}'
            )
        else:
            script.append(command)
    return "\n".join(script) + "\n"


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda b: b.name)
def test_example_runs_as_printed(block: Block, sandbox_config: Path, tmp_path: Path) -> None:
    shutil.copy(sandbox_config, tmp_path / "refundcore.toml")
    if block.lang == "python":
        (tmp_path / "example.py").write_text(block.text, encoding="utf-8")
        command = [sys.executable, "example.py"]
    else:
        (tmp_path / "example.sh").write_text(shell_script(block), encoding="utf-8")
        command = ["bash", "-e", "-o", "pipefail", "example.sh"]
    process = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=_environment(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=BLOCK_TIMEOUT)
    finally:
        # Whatever the block left running in the background (a sandbox) ends with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, f"{block.name}:\n{output.decode(errors='replace')}"
