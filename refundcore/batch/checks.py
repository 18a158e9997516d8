"""What is checked before a batch sends anything: the rows together (a refund id used
twice, a payment's rows adding up to more than its original amount), and each row as
the client would refuse it (the provider, its capabilities, its plugin's build stage)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal

from ..errors import (
    ConfigError,
    PluginLoadError,
    ProviderNotInstalled,
    RefundError,
    ValidationError,
)
from ..journal.records import payment_key
from .parsing import column, problem
from .protocol import BatchClient
from .rows import BatchRow, RowError, derive_refund_ids, numbered

__all__ = ["check_rows", "client_errors", "row_error", "set_errors"]


def set_errors(rows: Sequence[BatchRow]) -> list[RowError]:
    """What is wrong with rows together: a refund id used twice, refunds of a payment
    adding up to more than its original amount."""
    errors = []
    first: dict[str, int] = {}
    refunded: dict[tuple[str, str, str], Decimal] = {}
    for row in rows:
        line = row.line or 0
        if row.refund_id is not None:
            if row.refund_id in first:
                errors.append(
                    RowError(
                        line,
                        "refund_id",
                        f"{row.refund_id!r} is also on line {first[row.refund_id]}",
                    )
                )
                continue  # never sent, so it takes nothing from the payment
            first[row.refund_id] = line
        # The payment as the journal counts its refunds.
        key = (row.provider, payment_key(row.payment), row.amount.currency)
        total = refunded[key] = refunded.get(key, Decimal(0)) + row.amount.amount
        limit = row.original_amount
        # A row too large on its own is the client check's to report, not this one's.
        if (
            limit is not None
            and limit.currency == row.amount.currency
            and row.amount.amount <= limit.amount < total
        ):
            errors.append(
                RowError(
                    line,
                    "amount",
                    f"this payment's rows up to here refund {total} {limit.currency}, "
                    f"more than its original_amount {limit}",
                )
            )
    return errors


def client_errors(client: BatchClient, rows: Sequence[BatchRow]) -> list[RowError]:
    """What the client refuses without sending: provider missing or unconfigured,
    capabilities, the original amount, the provider's build stage."""
    errors = []
    providers: dict[str, RefundError | None] = {}
    for row in rows:
        if row.provider not in providers:
            try:
                client.provider(row.provider)
                client.config_for(row.provider)
                providers[row.provider] = None
            except RefundError as exc:
                providers[row.provider] = exc
        problem = providers[row.provider]
        if problem is None:
            try:
                client.check(row.provider, row.operation(), original_amount=row.original_amount)
            except RefundError as exc:
                problem = exc
        if problem is not None:
            errors.append(row_error(row.line or 0, problem))
    return errors


def row_error(line: int, exc: RefundError) -> RowError:
    """``exc``, which refuses the row on ``line``, as a row error naming the column."""
    if isinstance(exc, ValidationError) and exc.field:
        return RowError(line, column(exc.field), problem(exc))
    if isinstance(exc, (ConfigError, ProviderNotInstalled, PluginLoadError)):
        return RowError(line, "provider", str(exc))
    return RowError(line, None, str(exc))


def check_rows(client: BatchClient, rows: Iterable[BatchRow]) -> list[RowError]:
    """Every problem of ``rows`` that can be known without sending anything, by line
    (rows without a line are numbered by position): what :func:`read_batch_file`
    checks across rows, and what ``client`` would refuse (provider not installed or
    not configured, capabilities, original amount, the provider plugin's build
    stage). Nothing is signed, sent or journalled."""
    prepared = derive_refund_ids(numbered(rows))
    errors = set_errors(prepared) + client_errors(client, prepared)
    return sorted(errors, key=lambda error: error.line)
