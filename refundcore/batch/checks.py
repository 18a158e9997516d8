"""What a client and its journal refuse before a batch sends anything, for every row.

Each row as a single refund would be refused: the provider not installed or not
configured, what it cannot do (currencies, partial refunds), its original amount, the
provider plugin's build stage (:meth:`~refundcore.RefundClient.check`). Then the rows of
each payment together with the refunds the journal already holds for it: the
provider's refunds per payment (a refund-once gateway takes one), the payment's
original amount, and a refund id the journal has for another refund. Rows are read from
the batch's store a page at a time; what is found is stored there.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from decimal import Decimal

from ..errors import (
    ConfigError,
    PluginLoadError,
    ProviderNotInstalled,
    RefundError,
    ValidationError,
)
from ..journal import Journal, JournalEntry
from ..journal.records import fingerprint
from ..models import ProviderInfo
from .intake import Intake
from .parsing import column, problem
from .protocol import BatchClient
from .rows import BatchRow, RowError
from .store import PAGE, RowStore

__all__ = ["check_batch", "check_rows", "row_error"]


def check_rows(client: BatchClient, rows: Iterable[BatchRow]) -> list[RowError]:
    """Every problem of ``rows`` that can be known without sending anything, by line
    (rows without a line are numbered by position): what :func:`read_batch_file`
    checks across rows, what ``client`` would refuse (provider not installed or not
    configured, capabilities, original amount, the provider plugin's build stage), and
    what the rows of each payment and the refunds its journal holds break together
    (refunds per payment, the original amount, a refund id used for another refund).
    Nothing is signed, sent or journalled."""
    store = RowStore()
    try:
        intake = Intake(store)
        for row in rows:
            intake.add(row)
        check_batch(client, store)
        return list(store.errors())
    finally:
        store.close()


def check_batch(client: BatchClient, store: RowStore) -> None:
    """Store in ``store`` every problem ``client`` and its journal find in its valid
    rows (see the module's doc)."""
    _check_each_row(client, store)
    journal = client.journal
    if journal is not None:
        _check_refund_ids(journal, store)
    _Payments(client, store).check()


def row_error(line: int, exc: RefundError) -> RowError:
    """``exc``, which refuses the row on ``line``, as a row error naming the column."""
    if isinstance(exc, ValidationError) and exc.field:
        return RowError(line, column(exc.field), problem(exc))
    if isinstance(exc, (ConfigError, ProviderNotInstalled, PluginLoadError)):
        return RowError(line, "provider", str(exc))
    return RowError(line, None, str(exc))


def _check_each_row(client: BatchClient, store: RowStore) -> None:
    """Each row as :meth:`~refundcore.RefundClient.check` refuses it."""

    # A file names few providers; a hostile one may name a million.
    @functools.lru_cache(maxsize=64)
    def unusable(provider: str) -> RefundError | None:
        try:
            client.provider(provider)
            client.config_for(provider)
        except RefundError as exc:
            return exc
        return None

    found: list[RowError] = []
    for row in store.rows():
        refused = unusable(row.provider)
        if refused is None:
            try:
                client.check(row.provider, row.operation(), original_amount=row.original_amount)
            except RefundError as exc:
                refused = exc
        if refused is not None:
            found.append(row_error(row.line or 0, refused))
        if len(found) >= PAGE:
            store.add_errors(found)
            found = []
    store.add_errors(found)


def _check_refund_ids(journal: Journal, store: RowStore) -> None:
    """A refund id a row gives that the journal has for a different refund: sending
    it would be refused (a derived id is the row's content, so it cannot differ)."""
    found: list[RowError] = []
    for row in store.rows(explicit_ids=True):
        refund = row.operation()
        entry = journal.get(row.provider, refund.refund_id)
        if entry is not None and entry.fingerprint != fingerprint(refund):
            found.append(
                RowError(
                    row.line or 0,
                    "refund_id",
                    f"{refund.refund_id!r} was used for a different refund via "
                    f"{row.provider} (the journal has it); use a new refund_id",
                )
            )
    store.add_errors(found)


class _Payments:
    """The rows of each payment, in line order, with the refunds the journal holds for
    it (not those of the batch's own rows: a re-run finds them there)."""

    def __init__(self, client: BatchClient, store: RowStore) -> None:
        self._client = client
        self._store = store

    def check(self) -> None:
        found: list[RowError] = []
        for provider, key, _, has_original in self._store.payments():
            info = self._client.provider(provider)
            if info.capabilities.refunds_per_payment is None and not has_original:
                continue
            found += self._check_payment(info, key)
            if len(found) >= PAGE:
                self._store.add_errors(found)
                found = []
        self._store.add_errors(found)

    def _journalled(self, provider: str, key: str) -> list[JournalEntry]:
        journal = self._client.journal
        if journal is None:
            return []
        return [
            entry
            for entry in journal.committed_refunds(provider, key)
            if not self._store.has_refund_id(entry.refund_id)
        ]

    def _check_payment(self, info: ProviderInfo, key: str) -> list[RowError]:
        prior = self._journalled(info.id, key)
        limit = info.capabilities.refunds_per_payment
        # How many refunds the payment has by now, and the first few, to name them.
        earlier = [
            f"refund {e.refund_id!r} in the journal" for e in prior if e.operation == "refund"
        ]
        count = len(earlier)
        refunded: dict[str, Decimal] = {}
        found = []
        for row in self._store.payment_rows(info.id, key):
            line = row.line or 0
            if limit is not None and count >= limit:
                times = "once" if limit == 1 else f"{limit} times"
                why = f"{info.name} refunds a payment {times}: it has {', '.join(earlier[:3])}"
                found.append(RowError(line, key.partition(":")[0], why))
                continue
            over = _over_original(row, prior, refunded)
            if over is not None:
                found.append(RowError(line, "amount", over))
                continue
            count += 1
            if len(earlier) < 3:
                earlier.append(f"line {line}")
            currency = row.amount.currency
            refunded[currency] = refunded.get(currency, Decimal(0)) + row.amount.amount
        return found


def _over_original(
    row: BatchRow, prior: list[JournalEntry], refunded: dict[str, Decimal]
) -> str | None:
    """Why ``row`` takes its payment past its original amount once the journal's
    refunds are counted; ``None`` if it does not (or the journal has none: then the
    rows alone decide, and :class:`~refundcore.batch.intake.Intake` checked them)."""
    limit = row.original_amount
    if limit is None or limit.currency != row.amount.currency:
        return None
    journalled = Decimal(0)
    for entry in prior:
        # A void without an amount reversed the whole payment.
        if entry.amount is None:
            journalled += limit.amount
        elif entry.amount.currency == limit.currency:
            journalled += entry.amount.amount
    if not journalled:
        return None
    total = journalled + refunded.get(limit.currency, Decimal(0)) + row.amount.amount
    if total <= limit.amount:
        return None
    return (
        f"{journalled:f} {limit.currency} of this payment is refunded already (the "
        f"journal has it): with this payment's rows up to here that makes {total:f} "
        f"{limit.currency}, more than its original_amount {limit}"
    )
