"""A running batch's progress: where it stands, as one line of text, drawn on a
terminal or printed now and then."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO

import attrs

__all__ = ["PROGRESS_SECONDS", "BatchProgress", "ProgressPrinter", "format_progress"]

#: The shortest time between two progress reports (and two redraws on a terminal).
PROGRESS_SECONDS = 0.1


@attrs.frozen
class BatchProgress:
    """Where a running batch stands, as this process sees it.

    ``counts`` has the rows whose outcome it knows, per status; ``elsewhere`` the rows
    other processes finished meanwhile (their outcomes are read at the end). ``rate``
    is rows per second finished by this process, ``eta`` the seconds left at that
    rate (``None`` until known). ``finished`` marks the last report of a run.
    ``waiting`` counts rows this process has nothing else to do but wait for: held by
    other workers, or by a worker that died until its lease runs out.
    """

    total: int
    counts: Mapping[str, int]
    elsewhere: int
    in_flight: int
    elapsed: float
    rate: float | None
    eta: float | None
    finished: bool = False
    waiting: int = 0

    @property
    def done(self) -> int:
        """Rows with an outcome, wherever they were done."""
        return min(self.total, sum(self.counts.values()) + self.elsewhere)


def _clock(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


_ALWAYS_SHOWN = ("SUCCEEDED", "FAILED", "PENDING", "UNKNOWN")


def format_progress(progress: BatchProgress, *, bar: bool = True) -> str:
    """One line: ``[#####.....] 1200/5000 SUCCEEDED 1180 FAILED 12 PENDING 3 UNKNOWN 5
    · 85/s · ETA 0:45`` (other statuses only when some row has them)."""
    total, done = progress.total, progress.done
    parts = []
    if bar:
        filled = 20 * done // total if total else 20
        parts.append(f"[{'#' * filled}{'.' * (20 - filled)}]")
    parts.append(f"{done}/{total}")
    for status in (*_ALWAYS_SHOWN, "ERROR", "INVALID", "SKIPPED"):
        count = progress.counts.get(status, 0)
        if count or status in _ALWAYS_SHOWN:
            parts.append(f"{status} {count}")
    pieces = [" ".join(parts)]
    if progress.elsewhere:
        pieces.append(f"{progress.elsewhere} by other workers")
    if progress.waiting and not progress.finished:
        pieces.append(f"waiting for {progress.waiting} held by other workers")
    if progress.rate is not None:
        pieces.append(f"{progress.rate:.1f}/s" if progress.rate < 10 else f"{progress.rate:.0f}/s")
    if progress.finished:
        pieces.append(f"done in {_clock(progress.elapsed)}")
    elif progress.eta is not None:
        pieces.append(f"ETA {_clock(progress.eta)}")
    return " · ".join(pieces)


class ProgressPrinter:
    """An ``on_progress`` callback that draws the batch's progress on ``stream``
    (stderr by default).

    On a terminal, one line redrawn in place (at most ten times a second); otherwise a
    plain line when the batch starts, every ``interval`` seconds and when it ends.
    ``tty`` overrides the terminal check.
    """

    def __init__(
        self, stream: IO[str] | None = None, *, interval: float = 5.0, tty: bool | None = None
    ) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._tty = self._stream.isatty() if tty is None else tty
        self._interval = interval
        self._last: float | None = None

    def __call__(self, progress: BatchProgress) -> None:
        now = time.monotonic()
        every = PROGRESS_SECONDS if self._tty else self._interval
        if not progress.finished and self._last is not None and now - self._last < every:
            return
        self._last = now
        if self._tty:
            end = "\n" if progress.finished else ""
            # \r back to the line's start, \x1b[K clears what a longer line left.
            self._stream.write(f"\r{format_progress(progress)}\x1b[K{end}")
        else:
            self._stream.write(f"batch: {format_progress(progress, bar=False)}\n")
        self._stream.flush()
