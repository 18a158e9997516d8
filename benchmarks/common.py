"""What the benchmarks share: the figure they report, and the servers they run in child
processes (the gateways, the callback endpoints)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
PROVIDERS = ("paywizard", "wonder", "directgw", "paywiser")


@dataclass(frozen=True)
class Figure:
    """One line of the results table: refundcore against its baseline, as a ratio.

    ``higher_is_better`` says which way the target points: CPU and start-up time are
    ratios of costs (ours / baseline, at most ``target``), throughput and verification
    rates ratios of rates (ours / baseline, at least ``target``).
    """

    name: str
    ours: float
    baseline: float
    unit: str
    target: float
    higher_is_better: bool
    detail: str = ""

    @property
    def ratio(self) -> float:
        return self.ours / self.baseline if self.baseline else float("inf")

    @property
    def ok(self) -> bool:
        if self.higher_is_better:
            return self.ratio >= self.target
        return self.ratio <= self.target

    @property
    def target_text(self) -> str:
        return f"{'≥' if self.higher_is_better else '≤'} {self.target:.2f}"


class BenchmarkError(RuntimeError):
    """A benchmark could not do its work (a refund failed, a gateway did not start):
    its figures would compare unequal work, so none is reported."""


def loopback_only() -> None:
    """Keep every request of this process on 127.0.0.1: ``requests`` would otherwise
    send the baselines' traffic through a proxy named in the environment."""
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del os.environ[name]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


_Server = TypeVar("_Server", bound="ChildServer")


class ChildServer:
    """A benchmark server in a child process, ``python -m <module> <args>``; a context
    manager. The child prints one JSON line when it is ready (``info``) and serves until
    its standard input closes, so it never outlives the benchmark."""

    def __init__(
        self, module: str, args: list[str], *, name: str, start_timeout: float = 60.0
    ) -> None:
        self.name = name
        self._argv = [sys.executable, "-m", module, *args]
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[str] | None = None
        # Closed in __exit__; errors() reads it until then.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.info: dict[str, Any] = {}

    def __enter__(self: _Server) -> _Server:
        self._process = subprocess.Popen(
            self._argv,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], self._start_timeout)
        line = self._process.stdout.readline() if ready else ""
        if not line:
            errors = self.errors()
            self.__exit__(None, None, None)
            raise BenchmarkError(f"{self.name} did not start: {errors}")
        self.info = json.loads(line)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        process = self._process
        if process is None:
            return
        self._process = None
        if process.stdin is not None:
            process.stdin.close()  # the child serves until its stdin closes
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._stderr.close()

    def errors(self) -> str:
        """What the child wrote to stderr (its last lines)."""
        self._stderr.seek(0)
        return "".join(self._stderr.readlines()[-20:]).strip() or "(nothing on stderr)"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid


def serve_until_stdin_closes(info: Mapping[str, Any]) -> None:
    """The child's side of :class:`ChildServer`: say it is ready, then wait."""
    sys.stdout.write(json.dumps(info) + "\n")
    sys.stdout.flush()
    # Serve until the benchmark closes our stdin (or dies, which closes it too).
    sys.stdin.read()


class Gateway(ChildServer):
    """``benchmarks.gateway`` for one provider in a child process; a context manager.

    ``info`` is the JSON line it printed: ``base_url``, ``config``, ``currency`` and the
    seeded ``payments``.
    """

    def __init__(
        self,
        provider: str,
        *,
        payments: int,
        amount: str = "10.00",
        delay: float = 0.0,
        start_timeout: float = 60.0,
    ) -> None:
        args = [provider, "--payments", str(payments), "--amount", amount, "--delay", str(delay)]
        super().__init__(
            "benchmarks.gateway", args, name=f"{provider} gateway", start_timeout=start_timeout
        )
        self.provider = provider

    @property
    def base_url(self) -> str:
        return str(self.info["base_url"])

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.info["config"])

    @property
    def currency(self) -> str:
        return str(self.info["currency"])

    @property
    def payments(self) -> list[dict[str, Any]]:
        return list(self.info["payments"])
