"""The README's "Observability" section runs as shown: its code blocks, in order, with
the ``client`` of its Embedding section (here a sandbox client with a journal), then a
refund and its callback produce the JSON log lines, the spans and metrics, and the
outcomes it promises."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

import refundcore
from refundcore import Money, RefundClient, RefundStatus
from refundcore.sandbox import SandboxRun

README = Path(__file__).resolve().parent.parent / "README.md"


def section_blocks(title: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else None]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_observability_section_runs_as_shown(
    installed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = section_blocks("Observability")
    assert len(blocks) == 3
    logger = logging.getLogger("refundcore")
    handlers, level = list(logger.handlers), logger.level
    client = RefundClient(journal=f"sqlite:///{tmp_path / 'journal.db'}")
    namespace: dict[str, Any] = {"refundcore": refundcore, "client": client}
    try:
        with SandboxRun("testpay", client=client) as run:
            for number, code in enumerate(blocks, 1):
                exec(compile(code, f"README.md Observability block {number}", "exec"), namespace)  # noqa: S102
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
    finally:
        logger.handlers[:] = handlers
        logger.setLevel(level)
    assert result.status is RefundStatus.SUCCEEDED

    seen = namespace["outcomes"].seen
    assert seen[("testpay", "refund", "sent", "SUCCEEDED")] == 1
    # Duplicate or not depends on whether the callback overtook the reply it confirms.
    assert seen[("testpay", "callback", False)] + seen[("testpay", "callback", True)] == 1
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.err.splitlines() if line.startswith("{")]
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
    assert '"name": "refundcore refund"' in captured.out
    assert '"name": "refundcore send"' in captured.out
    assert '"name": "refundcore.results"' in captured.out
    assert '"name": "refundcore.stage.duration"' in captured.out
