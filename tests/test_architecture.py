"""The core's shape, kept in CI: no import cycle, modules and functions of a size a
reader takes in at once, and every module importable on its own.

The import graph is read from the source (``ast``), not from a running interpreter:
an import inside a function counts as much as one at the top of the module (the cycles
this check was written for were such deferred imports), and only imports under
``if TYPE_CHECKING:`` are left out, since they never run.
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "refundcore"

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60

#: Modules allowed over MAX_MODULE_LINES, and why. An entry that no longer applies
#: fails the test, so the list only shrinks.
LONG_MODULES = {
    "refundcore/sandbox/server.py": "one idea, the loopback HTTP/1.1 server emulators run "
    "on: request parsing, fault injection and the record of what arrived",
}

#: Functions allowed over MAX_FUNCTION_LINES (``path:qualified name``), and why.
LONG_FUNCTIONS: dict[str, str] = {}

#: Modules that need an optional extra, and the distribution that provides it.
OPTIONAL = {
    "refundcore.async_client": "httpx",
    "refundcore.async_transport": "httpx",
    "refundcore.journal.postgres": "psycopg",
    "refundcore.testing": "hypothesis",
    "refundcore.testing.clients": "pytest",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(CORE.rglob("*.py"))}


def _relative(path: Path) -> str:
    return path.relative_to(CORE.parent).as_posix()


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], type_checking: bool) -> Iterator[ast.stmt]:
    """Every statement, at any depth; those under ``if TYPE_CHECKING:`` only if
    ``type_checking``."""
    for node in body:
        if isinstance(node, ast.If) and _type_checking_only(node) and not type_checking:
            yield from _statements(node.orelse, type_checking)
            continue
        yield node
        for field in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(node, field, None) or [], type_checking)
        for handler in getattr(node, "handlers", None) or []:
            yield from _statements(handler.body, type_checking)


def _imports(name: str, path: Path, *, type_checking: bool = False) -> set[str]:
    """The core modules ``name`` imports (when it runs, or also for type checking)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in _statements(tree.body, type_checking):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                found.add(submodule if submodule in MODULES else target)
    return {module for module in found if module in MODULES and module != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles = []
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycles.append([*stack[stack.index(target) :], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_the_graph_counts_deferred_imports_and_skips_type_checking(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import money\n"
        "if TYPE_CHECKING:\n"
        "    from .client import RefundClient\n"
        "def later():\n"
        "    from .journal import records\n"
        "    import refundcore.table\n",
        encoding="utf-8",
    )
    assert _imports("refundcore.probe", probe) == {
        "refundcore.money",
        "refundcore.journal.records",
        "refundcore.table",
    }
    assert "refundcore.client" in _imports("refundcore.probe", probe, type_checking=True)
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert {"refundcore.pipeline", "refundcore.exactly_once"} <= graph["refundcore.client_base"]


def test_no_import_cycle_in_the_core() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_the_batch_reaches_the_client_only_through_its_protocol() -> None:
    """Not even for type checking: the batch declares what it needs of a client."""
    batch = {
        name: _imports(name, path, type_checking=True)
        for name, path in MODULES.items()
        if name == "refundcore.batch" or name.startswith("refundcore.batch.")
    }
    assert batch
    assert {name: "refundcore.client" in imported for name, imported in batch.items()} == {
        name: False for name in batch
    }


def test_no_core_module_is_too_long() -> None:
    sizes = {
        _relative(path): len(path.read_text(encoding="utf-8").splitlines())
        for path in MODULES.values()
    }
    too_long = {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert set(too_long) <= set(LONG_MODULES), f"over {MAX_MODULE_LINES} lines: {too_long}"
    stale = sorted(set(LONG_MODULES) - set(too_long))
    assert not stale, f"no longer over {MAX_MODULE_LINES} lines: drop {stale} from LONG_MODULES"


def _functions(
    body: list[ast.stmt], prefix: str = ""
) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from _functions(node.body, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node.body, f"{prefix}{node.name}.")
        else:
            for field in ("body", "orelse", "finalbody"):
                yield from _functions(getattr(node, field, None) or [], prefix)


def test_no_core_function_is_too_long() -> None:
    lengths = {}
    for path in MODULES.values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, node in _functions(tree.body):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            lengths[f"{_relative(path)}:{name}"] = lines
    too_long = {name: lines for name, lines in lengths.items() if lines > MAX_FUNCTION_LINES}
    assert set(too_long) <= set(LONG_FUNCTIONS), f"over {MAX_FUNCTION_LINES} lines: {too_long}"
    stale = sorted(set(LONG_FUNCTIONS) - set(too_long))
    assert not stale, f"no longer over {MAX_FUNCTION_LINES} lines: drop {stale}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_on_its_own(module: str) -> None:
    extra = OPTIONAL.get(module)
    if extra is not None and importlib.util.find_spec(extra) is None:
        pytest.skip(f"{module} needs {extra}, which is not installed")
    probe = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
    )
    assert probe.returncode == 0, probe.stderr
