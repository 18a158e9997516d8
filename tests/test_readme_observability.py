"""The README's "Observability" section runs as shown: its code blocks, in order, in a
fresh interpreter, with the ``client`` of its Embedding section (here a sandbox client
with a journal); then a refund and its callback produce the JSON log lines, the spans
and metrics on the console, and the outcomes the section promises."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"

# What the reader has before the section: refundcore imported and a client; what the
# reader does after it: a refund, its callback, and the end of the program.
HARNESS = """
import json, sys
import refundcore
from refundcore import Money, RefundClient
from refundcore.sandbox import SandboxRun

client = RefundClient(journal=sys.argv[2])
with SandboxRun("testpay", client=client) as run:
    namespace = {"refundcore": refundcore, "client": client}
    for number, code in enumerate(json.loads(open(sys.argv[1]).read()), 1):
        exec(compile(code, f"README.md Observability block {number}", "exec"), namespace)
    payment = run.emulator.seed_payment(Money("50.00", "HKD"))
    result = client.refund(
        "testpay",
        payment=payment,
        amount=Money("10.00", "HKD"),
        refund_id="r-readme",
        notify_url=run.notify_url,
    )
    run.wait_for_notifications(1)
    namespace["tracer_provider"].shutdown()
    namespace["meter_provider"].shutdown()
seen = [[list(key), count] for key, count in namespace["outcomes"].seen.items()]
print("OUTCOMES " + json.dumps(seen), file=sys.stderr)
"""


def section_blocks(title: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_observability_section_runs_as_shown(installed: Path, tmp_path: Path) -> None:
    blocks = section_blocks("Observability")
    assert len(blocks) == 3
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed), *sys.path])}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            HARNESS,
            str(tmp_path / "blocks.json"),
            f"sqlite:///{tmp_path / 'journal.db'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    (outcomes,) = [line for line in done.stderr.splitlines() if line.startswith("OUTCOMES ")]
    seen = {tuple(key): count for key, count in json.loads(outcomes.split(" ", 1)[1])}
    assert seen[("testpay", "refund", "sent", "SUCCEEDED")] == 1
    # Duplicate or not depends on whether the callback overtook the reply it confirms.
    assert (
        seen.get(("testpay", "callback", False), 0) + seen.get(("testpay", "callback", True), 0)
        == 1
    )

    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    # The gateway's callback may overtake its reply: one line each, in either order.
    finished = {
        line["operation"]: line for line in lines if line["message"] == "operation finished"
    }
    assert sorted(finished) == ["callback", "refund"]
    assert finished["callback"]["refund_id"] == "r-readme"
    refund_line = finished["refund"]
    assert (refund_line["refund_id"], refund_line["status"]) == ("r-readme", "SUCCEEDED")
    assert refund_line["attempt"] == 1 and refund_line["source"] == "sent"
    assert refund_line["duration_ms"] > 0

    for exported in (
        '"name": "refundcore refund"',
        '"name": "refundcore send"',
        '"name": "refundcore callback"',
        '"name": "refundcore.results"',
        '"name": "refundcore.stage.duration"',
    ):
        assert exported in done.stdout, exported
