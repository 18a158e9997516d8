"""The benchmark harness works: every benchmark runs with tiny sizes and reports a
figure. No assertion is made on the ratios themselves (that is what ``make bench`` and
docs/performance.md are for)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import Figure  # noqa: E402
from benchmarks.report import markdown, text_table  # noqa: E402


def test_a_figure_reads_its_target_the_right_way() -> None:
    cost = Figure("cpu", ours=11.0, baseline=10.0, unit="µs", target=1.10, higher_is_better=False)
    rate = Figure("rate", ours=8.0, baseline=10.0, unit="/s", target=0.8, higher_is_better=True)
    slow = Figure("slow", ours=12.0, baseline=10.0, unit="µs", target=1.1, higher_is_better=False)
    assert cost.ok and rate.ok and not slow.ok
    assert (cost.target_text, rate.target_text) == ("≤ 1.10", "≥ 0.80")
    table = text_table([cost, rate, slow], {"broken": "gateway did not start"})
    assert "MISSED" in table and "ERROR" in table
    report = markdown([slow], {}, elapsed=1.0)
    assert "| slow | µs | 12 | 10 | 1.20 | ≤ 1.10 | MISSED |" in report


@pytest.mark.slow
def test_every_benchmark_runs_with_tiny_sizes(tmp_path: Path) -> None:
    output = tmp_path / "performance.md"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    for figure in (
        "client CPU per refund: paywizard",
        "client CPU per refund: wonder",
        "client CPU per refund: directgw",
        "client CPU per refund: paywiser",
        "client CPU per refund + SQLite journal: directgw",
        "client CPU per refund, telemetry on / off + SQLite journal: paywizard",
        "client CPU per refund, telemetry on / off + SQLite journal: paywiser",
        "client CPU per refund, telemetry on / off + SQLite journal, 10% of traces sampled: "
        "paywizard",
        "batch of 20, 4 workers",
        "batch of 20, 4 workers, 2 ms latency, baseline recording each refund in SQLite",
        "batch of 20, 2 ms latency: 2 Celery workers vs 1 process",
        "Celery global rate limit, 100 rows at 10/s on 2 workers",
        "batch peak RSS growth per row, 200→1,000 rows",
        "batch fds + threads, 200→1,000 rows",
        "async: 20 refunds, 10 in flight",
        "callback endpoint under uvicorn (ASGI) vs a hand-written endpoint: paywizard",
        "start-up: `refundcore providers`",
        "callbacks verified per second: paywizard",
        "callbacks verified per second: wonder",
        "callbacks verified per second: directgw",
        "callbacks verified per second: paywiser",
        "callback endpoint on waitress (WSGI), requests per second: paywizard",
        "callback endpoint on waitress (WSGI), requests per second: paywiser",
    ):
        assert figure in run.stdout, run.stdout
    assert "ERROR" not in run.stdout
    report = output.read_text(encoding="utf-8")
    assert "python -m benchmarks --quick" in report
    verdicts = report.count(" | ok |\n") + report.count(" | MISSED |\n")
    assert verdicts == 30  # one table row per figure


@pytest.mark.slow
def test_the_telemetry_breakdown_and_each_side_alone_run() -> None:
    from benchmarks import telemetry

    costs = telemetry.breakdown(rounds=20)
    assert {"SDK: a stage span", "SDK: a duration, exemplar offered"} <= costs.keys()
    assert all(micros > 0 for micros in costs.values())
    command = [sys.executable, "-m", "benchmarks.telemetry", "paywizard", "--refunds", "1"]
    for side in telemetry.SIDES:
        run = subprocess.run(
            [*command, "--side", side, "--sampled", "0.5"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout + run.stderr
