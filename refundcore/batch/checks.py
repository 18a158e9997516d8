"""What a client refuses before a batch sends anything, for every row: the provider
not installed or not configured, what it cannot do, the original amount, the provider
plugin's build stage (:meth:`~refundcore.RefundClient.check`). Rows are read from the
batch's store a page at a time; what is found is stored there.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from ..errors import (
    ConfigError,
    PluginLoadError,
    ProviderNotInstalled,
    RefundError,
    ValidationError,
)
from .intake import Intake
from .parsing import column, problem
from .protocol import BatchClient
from .rows import BatchRow, RowError
from .store import PAGE, RowStore

__all__ = ["check_batch", "check_rows", "row_error"]


def check_rows(client: BatchClient, rows: Iterable[BatchRow]) -> list[RowError]:
    """Every problem of ``rows`` that can be known without sending anything, by line
    (rows without a line are numbered by position): what :func:`read_batch_file`
    checks across rows, and what ``client`` would refuse (provider not installed or not
    configured, capabilities, original amount, the provider plugin's build stage).
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
    """Store in ``store`` every problem ``client`` finds in its valid rows."""
    _check_each_row(client, store)


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
