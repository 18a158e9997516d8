"""Mutation testing of the conformance kit (``tools/mutate_kit.py``): some five
dozen realistic money bugs, each put alone into a fresh copy of a scaffolded plugin or of a
bundled one, and the kit must fail every one naming a rule the bug breaks. Slow: one kit
run per mutant, two at a time; a mutant with a focus runs only the checks it names (the
tool without ``--focused`` runs the whole kit on every one)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutate_kit", ROOT / "tools" / "mutate_kit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses looks its module up in sys.modules while the module runs.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(1800)
def test_the_kit_kills_every_mutant_naming_the_rule_it_breaks() -> None:
    tool = _tool()
    assert len(tool.MUTANTS) >= 60
    assert {m.target for m in tool.MUTANTS} == {
        "scaffold",
        "paywizard",
        "directgw",
        "paywiser",
        "wonder",
    }
    outcomes = tool.run_all(tool.MUTANTS, jobs=2, focused=True)
    survivors = [
        f"{o.mutant.key} ({o.mutant.bug}): kit named {o.rule}, expected one of "
        f"{o.mutant.rules}\n{o.tail}"
        for o in outcomes
        if not o.killed
    ]
    assert not survivors, "\n\n".join(survivors)
