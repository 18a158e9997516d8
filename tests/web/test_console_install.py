"""``pip install 'refundcore[console]'`` into a fresh environment: the wheel carries the
console's templates and static files, and the console serves from the installed copy.
Slow (pip), so marked; `make test` runs it."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow

_PROBE = """
import io, json, sys
from wsgiref.util import setup_testing_defaults

import refundcore.web
from refundcore.journal import open_journal
from refundcore.web import console_app

assert "site-packages" in refundcore.web.__file__, refundcore.web.__file__
app = console_app(open_journal("sqlite://:memory:"))
seen = {}
for path in ("/", "/batches", "/static/console.css", "/static/console.js"):
    environ = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    started = {}
    body = b"".join(app(environ, lambda status, headers: started.update(status=status)))
    seen[path] = [started["status"], len(body), body[:15].decode()]
print(json.dumps(seen))
"""


def test_the_console_extra_installs_with_its_templates(tmp_path: Path) -> None:
    venv.EnvBuilder(with_pip=True).create(tmp_path / "venv")
    python = tmp_path / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REFUNDCORE_", "PYTHONPATH"))}

    def run(*argv: str) -> str:
        done = subprocess.run(
            [str(python), *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900
        )
        assert done.returncode == 0, f"{argv}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run("-m", "pip", "install", "-q", f"{ROOT}[console]")
    seen = json.loads(run("-c", _PROBE).strip().splitlines()[-1])
    assert seen["/"][0] == "200 OK" and seen["/"][2] == "<!doctype html>"
    assert seen["/batches"][0] == "200 OK"
    assert seen["/static/console.css"][0] == "200 OK" and seen["/static/console.css"][1] > 1000
    assert seen["/static/console.js"][0] == "200 OK"
