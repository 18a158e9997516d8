"""A batch's problems as lines for people: a problem shared by many rows is one line
naming how many and which, so a file with a wrong column in every row is not a
million lines of the same message."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .rows import RowError

__all__ = ["group_errors"]

# Line ranges named in one grouped message; the report lists every row.
_RANGES_SHOWN = 6


@attrs.define
class _Group:
    """The rows sharing one problem: how many, and their first ranges of lines (one more
    than are shown, to know there are more)."""

    rows: int = 0
    last: int | None = None
    ranges: list[list[int]] = attrs.field(factory=list)

    def add(self, line: int) -> None:
        if line == self.last:
            return  # one row with the same problem twice
        self.rows += 1
        self.last = line
        if self.ranges and line == self.ranges[-1][1] + 1:
            self.ranges[-1][1] = line
        elif len(self.ranges) <= _RANGES_SHOWN:
            self.ranges.append([line, line])

    def lines(self) -> str:
        shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in self.ranges[:_RANGES_SHOWN]]
        return ", ".join(shown) + (", …" if len(self.ranges) > _RANGES_SHOWN else "")


def group_errors(errors: Iterable[RowError]) -> list[str]:
    """The errors (in line order, as a batch lists them) as lines for people, in order
    of first appearance: a problem shared by several rows is one line saying how many
    and which (``150 rows (lines 2-151): provider: …``), any other is
    ``line 7: amount: …``.

    Each distinct problem takes a few numbers of memory, not one per row: the errors
    of a batch read from disk are grouped as they are read."""
    groups: dict[tuple[str | None, str], _Group] = {}
    for error in errors:
        groups.setdefault((error.field, error.problem), _Group()).add(error.line)
    grouped = []
    for (field, problem), group in groups.items():
        what = f"{field}: {problem}" if field else problem
        if group.rows == 1:
            grouped.append(f"line {group.ranges[0][0]}: {what}")
        else:
            grouped.append(f"{group.rows} rows (lines {group.lines()}): {what}")
    return grouped
