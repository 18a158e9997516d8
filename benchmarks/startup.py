"""Start-up cost of `refundcore providers` against `python -c "import requests"`.

Both are timed in the same run, interleaved, and the ratio of medians is reported:
absolute times depend on the machine, the ratio does not (much). Target: <= 1.2.

Both commands run from compiled bytecode, as installed packages do (pip compiles every
module it installs): the children get a private bytecode cache
(``PYTHONPYCACHEPREFIX``), filled by the warm-up run. Without it, an environment with
``PYTHONDONTWRITEBYTECODE=1`` and an editable install would compile refundcore and its
plugins from source on every start while ``requests`` loads the ``.pyc`` files pip wrote,
and the figure would measure the compiler, not refundcore.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

TARGET = 1.2


def _time(argv: list[str], env: Mapping[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - started


def measure(rounds: int = 15) -> dict[str, float]:
    """Median seconds of each command and their ratio."""
    cli = shutil.which("refundcore", path=str(Path(sys.executable).parent)) or "refundcore"
    ours = [cli, "providers"]
    baseline = [sys.executable, "-c", "import requests"]
    with tempfile.TemporaryDirectory(prefix="refundcore-bench-pyc-") as cache:
        # Every installed plugin is listed, whatever the caller's environment selects.
        dropped = ("PYTHONDONTWRITEBYTECODE", "REFUNDCORE_PLUGINS", "REFUNDCORE_DISABLE_PLUGINS")
        env = {k: v for k, v in os.environ.items() if k not in dropped}
        env["PYTHONPYCACHEPREFIX"] = cache
        for argv in (ours, baseline):  # warm the OS file cache and the bytecode cache
            _time(argv, env)
        ours_times, base_times = [], []
        for _ in range(rounds):
            ours_times.append(_time(ours, env))
            base_times.append(_time(baseline, env))
    ours_median = statistics.median(ours_times)
    base_median = statistics.median(base_times)
    return {
        "refundcore providers": ours_median,
        "import requests": base_median,
        "ratio": ours_median / base_median,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    os.environ.pop("REFUNDCORE_PLUGINS", None)
    result = measure(args.rounds)
    verdict = "ok" if result["ratio"] <= TARGET else "MISSED"
    print(f"{'benchmark':<44}{'ratio':>8}  target")
    print(
        f"{'refundcore providers / import requests':<44}{result['ratio']:>8.2f}  "
        f"<= {TARGET} {verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
