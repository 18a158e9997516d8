"""Rows entering a batch's store, one at a time, each checked against the rows before it
without a client: its refund id (derived, when the row has none), the same refund id on
an earlier row, and a payment's rows adding up to more than its original amount.

What the checks need to remember of earlier rows is in the store, not in memory."""

from __future__ import annotations

import hashlib
import json

import attrs

from ..errors import ValidationError
from ..journal.records import payment_key
from .rows import BatchRow, RowError, derived_id, row_content
from .store import RowStore

__all__ = ["Intake"]

_COMMIT_EVERY = 1000


class Intake:
    """Puts rows into ``store`` in the order given, with their problems.

    A row without a line takes its position (counted from 1). ``digest`` also hashes
    the rows as they are stored, for :attr:`batch_id`: the same rows, the same batch.
    """

    def __init__(self, store: RowStore, *, digest: bool = False) -> None:
        self._store = store
        self._position = 0
        self._hash = hashlib.sha256(b"[") if digest else None

    def add(self, row: BatchRow) -> None:
        """Store ``row`` and whatever is wrong with it next to the rows before it;
        ``ValidationError`` when its line is another row's."""
        self._position += 1
        if self._position % _COMMIT_EVERY == 0:
            self._store.commit()
        line = self._position if row.line is None else row.line
        explicit = row.refund_id is not None
        refund_id = row.refund_id if row.refund_id is not None else derived_id(row, self._count)
        row = attrs.evolve(row, line=line, refund_id=refund_id)
        earlier = self._store.first_line_of(refund_id)
        key = payment_key(row.payment)
        if not self._store.add_row(row, payment_key=key, explicit_id=explicit):
            raise ValidationError(f"line {line} is given to more than one row", field="line")
        if self._hash is not None:
            separator = b", " if self._position > 1 else b""
            self._hash.update(separator + json.dumps([line, refund_id, *row_content(row)]).encode())
        if earlier is not None:
            # Never sent, so it takes nothing from the payment either.
            problem = f"{refund_id!r} is also on line {earlier}"
            self._store.add_errors([RowError(line, "refund_id", problem)])
            return
        self._check_total(row, line, key)

    @property
    def batch_id(self) -> str:
        """A name for the rows added so far (with ``digest``)."""
        if self._hash is None:
            raise ValueError("this intake keeps no digest")
        final = self._hash.copy()
        final.update(b"]")
        return final.hexdigest()[:32]

    def _count(self, digest: str) -> int:
        return self._store.count(f"id\0{digest}")

    def _check_total(self, row: BatchRow, line: int, key: str) -> None:
        """The payment's rows up to this one against its original amount."""
        amount = row.amount
        total = self._store.add_to_total(f"{row.provider}\0{key}\0{amount.currency}", amount.amount)
        limit = row.original_amount
        # A row too large on its own is the client check's to report, not this one's.
        if (
            limit is not None
            and limit.currency == amount.currency
            and amount.amount <= limit.amount < total
        ):
            why = (
                f"this payment's rows up to here refund {total} {limit.currency}, "
                f"more than its original_amount {limit}"
            )
            self._store.add_errors([RowError(line, "amount", why)])
