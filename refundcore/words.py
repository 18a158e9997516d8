"""The base of refundcore's enums whose members are words on the wire, in the journal
and in reports (statuses, states, verdicts, kinds).

A member is written as its word everywhere: ``str()``, f-strings and ``format()``
give ``"FAILED"``, not ``"RefundStatus.FAILED"``. What ``enum.StrEnum`` does from
Python 3.11, for 3.10 too.
"""

from __future__ import annotations

import enum

__all__ = ["WordEnum"]


class WordEnum(str, enum.Enum):
    """A ``str`` enum whose members print as their values."""

    def __str__(self) -> str:
        return str(self.value)
