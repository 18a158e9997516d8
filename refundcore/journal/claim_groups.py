"""Group commit of claims: the claims of concurrent threads share one transaction.

A claim's commit waits for its ``fsync``, and a journal with one writer at a time
(SQLite) makes every other claimer wait behind it. Threads that claim while another
claim is being written queue here; the next one in makes every claim waiting by then
in one :meth:`~refundcore.journal.Journal.claim_many` (each claim its own, as if
alone), and each caller returns once the commit that holds its claim is on disk: no
request leaves before its claim is durable, as with a claim of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from ..errors import JournalError
from .values import Claim, NewRefund

__all__ = ["ClaimGroups"]

ClaimMany = Callable[[Sequence[tuple[NewRefund, str]], float], list[Claim]]


class _Waiting:
    """A claim waiting for the next group's transaction."""

    __slots__ = ("claim", "error", "lease_seconds", "new", "owner")

    def __init__(self, new: NewRefund, owner: str, lease_seconds: float) -> None:
        self.new = new
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.claim: Claim | None = None
        self.error: JournalError | None = None

    @property
    def done(self) -> bool:
        """Whether its group's transaction gave it its claim or its error."""
        return self.claim is not None or self.error is not None


class ClaimGroups:
    """Claims through ``claim_many`` (``(claims, lease_seconds)``), grouped with those
    of other threads waiting at the same time. ``locked`` is the error for a caller
    that waited ``patience`` seconds for its turn."""

    def __init__(
        self,
        claim_many: ClaimMany,
        *,
        url: str,
        patience: float,
        locked: Callable[[], JournalError],
    ) -> None:
        self._claim_many = claim_many
        self._url = url
        self._patience = patience
        self._locked = locked
        self._turn = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._waiting_lock = threading.Lock()

    def claim(self, new: NewRefund, owner: str, lease_seconds: float) -> Claim:
        """The verdict of one claim, made alone or with others waiting with it."""
        mine = _Waiting(new, owner, lease_seconds)
        with self._waiting_lock:
            self._waiting.append(mine)
        if not self._turn.acquire(timeout=self._patience):
            raise self._locked()
        try:
            if not mine.done:
                with self._waiting_lock:
                    group, self._waiting = self._waiting, []
                self._claim_group(group)
        finally:
            self._turn.release()
        if mine.claim is None:
            # A new exception in each thread; the cause is the one the group met.
            raise JournalError(str(mine.error)) from mine.error
        return mine.claim

    def _claim_group(self, group: list[_Waiting]) -> None:
        """Claim ``group`` (one transaction per lease length, usually one); every
        member is done after, with its claim or the error that stopped it."""
        by_lease: dict[float, list[_Waiting]] = {}
        for waiting in group:
            by_lease.setdefault(waiting.lease_seconds, []).append(waiting)
        try:
            for lease_seconds, members in by_lease.items():
                try:
                    claims = self._claim_many(
                        [(member.new, member.owner) for member in members], lease_seconds
                    )
                except JournalError as exc:
                    for member in members:
                        member.error = exc
                else:
                    for member, claim in zip(members, claims, strict=True):
                        member.claim = claim
        finally:
            # Interrupted (Ctrl-C in the thread doing the group's work): the rest were
            # not claimed, and nothing of theirs was sent.
            for waiting in group:
                if not waiting.done:
                    waiting.error = JournalError(
                        f"journal {self._url}: the claim was not made (the thread making "
                        "it for this one was interrupted); nothing was sent"
                    )
