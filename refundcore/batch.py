"""Batch refunds: many rows, from a file or from code, refunded concurrently through one
client and its journal.

    parsed = read_batch_file("refunds.csv")   # every row checked, errors by line
    report = client.refund_many(parsed, workers=8, rate=20)
    report.write("refunds-report.csv")

A batch runs in three steps:

1. **Validation**, before anything is sent: each row is parsed (columns
   :data:`COLUMNS`), then checked by the client the way a refund would be, up to the
   provider plugin's build stage (:meth:`RefundClient.check`), without signing,
   sending or journalling. Every bad row is reported as ``line N: field: problem``;
   nothing is sent unless the caller skips invalid rows.
2. **Claiming**: the rows are put in the journal as a work queue keyed by the batch id
   (a hash of the file, or of the rows). Each worker process claims chunks of rows in
   one transaction and leases them while it works, so processes sharing a journal —
   on several machines, with PostgreSQL — split a batch without doing a row twice.
3. **Refunding**: a thread pool sends the claimed rows through the client, at most
   ``rate`` requests a second per provider. Each refund goes through the journal as
   usual, which is what makes a batch safe to run again: a row already refunded
   returns its recorded outcome without network, an interrupted one is reconciled.

Running a batch again retries the rows without a settled outcome (UNKNOWN ones are
reconciled, rows that could not be sent are sent) and reports the rest from the
journal. A row without ``refund_id`` gets one derived from its own content (see
:func:`derive_refund_ids`), so the same row keeps its id across runs and edits of
other rows.
"""

from __future__ import annotations

import csv
import enum
import hashlib
import io
import json
import os
import queue
import socket
import stat
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol

import attrs

from .errors import (
    ConfigError,
    JournalError,
    PluginLoadError,
    ProviderNotInstalled,
    RefundError,
    ValidationError,
)
from .journal import (
    BatchDone,
    BatchEntry,
    BatchItem,
    BatchItemState,
    Journal,
    ResultRecord,
)
from .journal.records import payment_key
from .logs import EventLogger, batch_line
from .models import (
    REASON_MAX,
    Operation,
    PaymentRef,
    ProviderInfo,
    Refund,
    RefundResult,
    check_refund_id,
    check_text,
)
from .money import Money
from .redaction import Redactor
from .status import RefundStatus

__all__ = [
    "COLUMNS",
    "REPORT_COLUMNS",
    "SEVERITY",
    "BatchClient",
    "BatchFile",
    "BatchInterrupted",
    "BatchInvalid",
    "BatchOutcome",
    "BatchProgress",
    "BatchReport",
    "BatchRow",
    "BatchStatus",
    "ProgressPrinter",
    "RowError",
    "check_rows",
    "derive_refund_ids",
    "format_progress",
    "group_errors",
    "read_batch_file",
    "report_format",
]

log = EventLogger("refundcore.batch")

#: The columns of a batch file (a CSV header may list them in any order).
COLUMNS = (
    "provider",
    "payment_id",
    "merchant_reference",
    "transaction_id",
    "amount",
    "currency",
    "refund_id",
    "reason",
    "original_amount",
)
_REQUIRED = ("provider", "amount", "currency")
_PAYMENT_COLUMNS = ("payment_id", "merchant_reference", "transaction_id")
# Ids may come as JSON integers (exact); free text may not.
_ID_COLUMNS = (*_PAYMENT_COLUMNS, "refund_id")

DEFAULT_WORKERS = 8
DEFAULT_LEASE_SECONDS = 120.0
# Bounds one claim transaction (and its IN list) whatever the caller asks for.
_MAX_CHUNK = 500


class BatchClient(Protocol):
    """What a batch needs of a client (:class:`~refundcore.RefundClient` is one): its
    checks, its journalled refunds, its journal, its redactor and its pool size."""

    @property
    def journal(self) -> Journal | None:
        """The journal refunds are recorded in, if any."""

    @property
    def redactor(self) -> Redactor:
        """What masks configured secrets in reported messages."""

    @property
    def pool_size(self) -> int:
        """Pooled connections per gateway."""

    def provider(self, provider_id: str) -> ProviderInfo:
        """The provider's info (``ProviderNotInstalled`` if it is not)."""

    def config_for(self, provider_id: str) -> Any:
        """The provider's loaded config (``ConfigError`` if there is none)."""

    def check(
        self, provider: str, operation: Operation, *, original_amount: Money | None = None
    ) -> None:
        """Raise what sending ``operation`` would refuse, without sending it."""

    def execute(
        self,
        provider: str,
        operation: Operation,
        *,
        original_amount: Money | None = None,
        defer_record: Callable[[ResultRecord], None] | None = None,
    ) -> RefundResult:
        """Refund through the journal, handing the outcome to ``defer_record``."""


class BatchStatus(str, enum.Enum):
    """A batch row's outcome: a refund status, or why the row was not sent.

    ``ERROR``: nothing could be sent (unreachable gateway, unusable journal, broken
    plugin); a re-run sends it. ``INVALID``: refused before sending (validation, a
    refund id reused for another refund, a payment's original amount exceeded).
    ``SKIPPED``: not attempted because the batch was interrupted.
    """

    SUCCEEDED = RefundStatus.SUCCEEDED.value
    FAILED = RefundStatus.FAILED.value
    PENDING = RefundStatus.PENDING.value
    UNKNOWN = RefundStatus.UNKNOWN.value
    ERROR = "ERROR"
    INVALID = "INVALID"
    SKIPPED = "SKIPPED"

    @classmethod
    def of(cls, status: RefundStatus) -> BatchStatus:
        """The outcome of a row whose refund stands at ``status``."""
        return cls[status.name]

    def __str__(self) -> str:
        return self.value


#: Most serious first: what a report's :attr:`BatchReport.worst` picks.
SEVERITY = (
    BatchStatus.UNKNOWN,
    BatchStatus.ERROR,
    BatchStatus.FAILED,
    BatchStatus.INVALID,
    BatchStatus.SKIPPED,
    BatchStatus.PENDING,
    BatchStatus.SUCCEEDED,
)
# Outcomes recorded for a row whose refund is in the journal (the others were not sent).
_REFUND_OUTCOMES = frozenset(map(BatchStatus.of, RefundStatus))


def _check_provider(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValidationError("give the provider id, e.g. wonder", field=attribute.name)


def _check_line(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValidationError(f"must be a line number (1 or more), got {value!r}", field="line")


@attrs.frozen(kw_only=True)
class BatchRow:
    """One refund of a batch: the columns of a batch file, amounts as :class:`Money`.

    ``refund_id`` may be ``None``: the batch then derives one from the row's content
    (:func:`derive_refund_ids`). ``line`` is the row's line in its file; rows built in
    code may leave it ``None`` and are numbered by position.
    """

    provider: str = attrs.field(validator=_check_provider)
    payment_id: str | None = None
    merchant_reference: str | None = None
    transaction_id: str | None = None
    amount: Money
    refund_id: str | None = None
    reason: str | None = None
    original_amount: Money | None = None
    line: int | None = attrs.field(default=None, validator=_check_line)

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.amount, Money):
            raise ValidationError(
                f"must be refundcore.Money, got {type(self.amount).__name__}", field="amount"
            )
        if self.original_amount is not None and not isinstance(self.original_amount, Money):
            raise ValidationError(
                f"must be refundcore.Money, got {type(self.original_amount).__name__}",
                field="original_amount",
            )
        if self.refund_id is not None:
            check_refund_id(self.refund_id)
        check_text(self.reason, "reason", REASON_MAX)
        self.payment  # noqa: B018 - refuses a row without a usable payment id now

    @property
    def payment(self) -> PaymentRef:
        """The payment the row refunds."""
        return PaymentRef(self.payment_id, self.merchant_reference, self.transaction_id)

    def operation(self) -> Refund:
        """The row as a refund operation (its refund id must be known by now)."""
        if self.refund_id is None:
            raise ValidationError("has no refund id yet (see derive_refund_ids)", field="refund_id")
        return Refund(
            refund_id=self.refund_id, payment=self.payment, amount=self.amount, reason=self.reason
        )


@attrs.frozen
class RowError:
    """Why a row (``line``) cannot be sent; ``field`` names the column, if one is to blame."""

    line: int
    field: str | None
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}: "
        return where + (f"{self.field}: {self.problem}" if self.field else self.problem)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"line": self.line, "field": self.field, "problem": self.problem}


# Line ranges named in one grouped message; the report lists every row.
_RANGES_SHOWN = 6


def _line_ranges(lines: Sequence[int]) -> str:
    ranges: list[list[int]] = []
    for line in lines:
        if ranges and line == ranges[-1][1] + 1:
            ranges[-1][1] = line
        else:
            ranges.append([line, line])
    shown = [f"{a}" if a == b else f"{a}-{b}" for a, b in ranges[:_RANGES_SHOWN]]
    return ", ".join(shown) + (", …" if len(ranges) > _RANGES_SHOWN else "")


def group_errors(errors: Iterable[RowError]) -> list[str]:
    """The errors as lines for people, in order of first appearance: a problem shared
    by several rows is one line saying how many and which
    (``150 rows (lines 2-151): provider: …``), any other as ``line 7: amount: …``."""
    lines_of: dict[tuple[str | None, str], list[int]] = {}
    for error in errors:
        lines_of.setdefault((error.field, error.problem), []).append(error.line)
    grouped = []
    for (field, problem), lines in lines_of.items():
        what = f"{field}: {problem}" if field else problem
        rows = sorted(set(lines))
        if len(rows) == 1:
            grouped.append(f"line {rows[0]}: {what}")
        else:
            grouped.append(f"{len(rows)} rows (lines {_line_ranges(rows)}): {what}")
    return grouped


@attrs.frozen
class BatchFile:
    """A parsed batch file: its valid ``rows`` (refund ids filled in), the ``errors`` of
    the others, and ``batch_id``, a hash of the file's bytes that names the batch in
    the journal (the same file is the same batch, on every machine)."""

    path: Path
    batch_id: str
    rows: tuple[BatchRow, ...]
    errors: tuple[RowError, ...]


@attrs.frozen
class BatchOutcome:
    """What became of one row.

    ``ran_here`` is true when this process claimed the row and ran its refund (for a
    refund the journal already has, that returns the recorded outcome without
    network); false when another process or an earlier run had finished the row and
    its outcome was read from the journal, or when it was never attempted (INVALID,
    SKIPPED). ``result`` is the refund's full result when this process has one.
    """

    line: int
    status: BatchStatus
    provider: str | None = None
    refund_id: str | None = None
    amount: Money | None = None
    provider_refund_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    ran_here: bool = False
    result: RefundResult | None = attrs.field(default=None, eq=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The row as a report entry (JSON-ready; nothing secret, no raw reply)."""
        return {
            "line": self.line,
            "provider": self.provider,
            "refund_id": self.refund_id,
            "status": self.status.value,
            "provider_refund_id": self.provider_refund_id,
            "amount": None if self.amount is None else self.amount.to_wire(),
            "currency": None if self.amount is None else self.amount.currency,
            "error_code": self.error_code,
            "message": self.message,
            "ran_here": self.ran_here,
        }


#: The report's columns, in order (CSV header and JSON keys).
REPORT_COLUMNS = (
    "line",
    "provider",
    "refund_id",
    "status",
    "provider_refund_id",
    "amount",
    "currency",
    "error_code",
    "message",
    "ran_here",
)


@attrs.frozen
class BatchReport:
    """Every row's outcome, in line order.

    ``interrupted`` says the run was stopped before every row was done (the rows it
    did not attempt are SKIPPED). ``elapsed`` is in seconds.
    """

    batch_id: str
    outcomes: tuple[BatchOutcome, ...]
    interrupted: bool = False
    elapsed: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status, every status listed (in :class:`BatchStatus` order)."""
        found = Counter(outcome.status for outcome in self.outcomes)
        return {status.value: found[status] for status in BatchStatus}

    @property
    def worst(self) -> BatchStatus | None:
        """The most serious status of any row (see :data:`SEVERITY`); ``None`` if empty."""
        present = {outcome.status for outcome in self.outcomes}
        return next((status for status in SEVERITY if status in present), None)

    @property
    def succeeded(self) -> bool:
        """True when every row SUCCEEDED."""
        return not self.interrupted and all(
            outcome.status is BatchStatus.SUCCEEDED for outcome in self.outcomes
        )

    def summary(self) -> dict[str, Any]:
        """Counts and totals, JSON-ready."""
        return {
            "batch_id": self.batch_id,
            "total": len(self.outcomes),
            "counts": self.counts,
            "interrupted": self.interrupted,
            "elapsed": round(self.elapsed, 3),
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the report to ``path``: CSV for ``.csv`` (columns
        :data:`REPORT_COLUMNS`), JSON for ``.json`` (:meth:`summary` plus one entry per
        row under ``"rows"``). The file is replaced whole."""
        target = Path(path)
        kind = report_format(target)
        if kind == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, lineterminator="\n")
            writer.writeheader()
            for outcome in self.outcomes:
                writer.writerow(outcome.as_dict())
            text = buffer.getvalue()
        else:
            data = {**self.summary(), "rows": [o.as_dict() for o in self.outcomes]}
            text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        # Written beside the target and renamed over it: a crash never leaves half a report.
        partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
        try:
            partial.write_text(text, encoding="utf-8")
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise ValidationError(
                f"cannot write {str(target)!r}: {exc.strerror or exc}", field="report"
            ) from None


def report_format(path: Path) -> str:
    """``"csv"`` or ``"json"`` from a report path's extension; ``ValidationError``
    for anything else."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "json"):
        raise ValidationError(f"{str(path)!r}: give a .csv or .json file name", field="report")
    return kind


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


class BatchInvalid(ValidationError):
    """Some rows are invalid and invalid rows were not to be skipped: nothing was sent.

    ``errors`` lists every problem by line; ``report`` has each row (INVALID, or
    SKIPPED for the valid ones), ready to write.
    """

    def __init__(self, errors: Sequence[RowError], report: BatchReport) -> None:
        self.errors = tuple(errors)
        self.report = report
        lines = len({error.line for error in errors})
        grouped = group_errors(errors)
        super().__init__(
            f"{lines} invalid row{'s' if lines != 1 else ''}, nothing was sent: "
            + "; ".join(grouped[:3])
            + ("; …" if len(grouped) > 3 else "")
        )


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a batch: rows in flight were finished and recorded, no new row
    was started. ``report`` has every row (the ones not attempted are SKIPPED); run
    the batch again to finish it."""

    def __init__(self, report: BatchReport) -> None:
        super().__init__("batch interrupted")
        self.report = report


# -- reading and checking rows ----------------------------------------------------------


class _JsonFloat:
    """A JSON number with a fraction or an exponent, kept as written: json would make it
    a float, which cannot hold money exactly."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _JsonLongInt:
    """A JSON integer too long to be an amount or an id, kept as written: converting
    thousands of digits costs time, and past 4,300 Python refuses (ValueError)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


# No amount or id has more digits than this (Money allows 18 before the point).
_MAX_INT_DIGITS = 40


def _json_int(text: str) -> int | _JsonLongInt:
    return int(text) if len(text) <= _MAX_INT_DIGITS else _JsonLongInt(text)


def _shown(text: str, limit: int = 40) -> str:
    """``text`` cut short for an error message: a hostile file may hold megabytes."""
    return text if len(text) <= limit else f"{text[:limit]}…"


def _undecodable(text: str) -> str | None:
    """Why ``text`` (decoded with surrogateescape) is not UTF-8, if it is not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00
        return f"not UTF-8 text (byte {byte:#04x}); save the file as UTF-8"
    return None


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise _DuplicateKey(key)
        found[key] = value
    return found


def _json_type(value: object) -> str:
    if isinstance(value, _JsonFloat):
        return f"the number {_shown(value.text)}"
    if isinstance(value, _JsonLongInt):
        return f"a number of {len(value.text)} digits"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return "a number" if isinstance(value, int) else "a string"
    return "an array" if isinstance(value, list) else "an object"


_Record = tuple[int, dict[str, object]]


def read_batch_file(path: str | os.PathLike[str]) -> BatchFile:
    """Read and check a batch file without a client: CSV with a header line, or JSON
    Lines (one object per line; chosen by the extension ``.jsonl``, ``.ndjson`` or
    ``.json``, else by a first character ``{``).

    Every problem of every row is collected (the row's line number, the column, what is
    wrong): unknown or missing columns, malformed amounts and currencies (a JSON
    number with a fraction is refused: give amounts as strings or integers), payment
    identifiers, refund ids and reasons, refund ids used twice, and rows of one payment
    adding up to more than its ``original_amount``, lines that are not UTF-8, nested too
    deeply or hold numbers too long to be amounts. Rows without ``refund_id`` get a
    derived one (:func:`derive_refund_ids`). ``ValidationError`` only when the file
    cannot be read at all, or is not a regular file (a pipe or a device: a batch is
    named by its file's hash and run again from the same file).
    """
    source = Path(path)
    try:
        if not stat.S_ISREG(os.stat(source).st_mode):
            raise ValidationError(
                f"{str(source)!r} is not a regular file (a batch is run again from the "
                "same file: save it first)",
                field="file",
            )
        data = source.read_bytes()
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValidationError(f"cannot read {str(source)!r}: {reason}", field="file") from None
    batch_id = hashlib.sha256(data).hexdigest()[:32]
    # Lines that are not UTF-8 are reported one by one, like any other bad row.
    text = data.decode("utf-8-sig", errors="surrogateescape")
    records, errors = (_json_records if _is_json_lines(source, text) else _csv_records)(text)
    parsed: list[BatchRow] = []
    for line, raw in records:
        row, problems = _parse_row(line, raw)
        errors += problems
        if row is not None:
            parsed.append(row)
    rows = derive_refund_ids(parsed)
    errors += _set_errors(rows)
    bad = {error.line for error in errors}
    return BatchFile(
        path=source,
        batch_id=batch_id,
        rows=tuple(row for row in rows if row.line not in bad),
        errors=tuple(sorted(errors, key=lambda error: error.line)),
    )


def _is_json_lines(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return True
    if suffix == ".csv":
        return False
    return text.lstrip().startswith("{")


def _csv_records(text: str) -> tuple[list[_Record], list[RowError]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str | None] | None = None
    records: list[_Record] = []
    errors: list[RowError] = []
    last = 0
    try:
        for cells in reader:
            # A record starts on the line after the previous one ended (a quoted cell
            # may span lines); line_num is where this one ended.
            line, last = last + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            undecodable = _undecodable("".join(cells))
            if undecodable is not None:
                errors.append(RowError(line, None, undecodable))
                if header is None:
                    return [], errors
                continue
            if header is None:
                header, problems = _header(line, cells)
                errors += problems
                if header is None:
                    return [], errors
                continue
            if len(cells) != len(header):
                errors.append(
                    RowError(line, None, f"has {len(cells)} fields, the header has {len(header)}")
                )
                continue
            values = zip(header, cells, strict=True)
            records.append((line, {name: cell for name, cell in values if name and cell}))
    except csv.Error as exc:
        # Where the next record starts is unknown (the bad one may be a quoted cell
        # spanning lines): say so rather than guess, and read no further.
        errors.append(
            RowError(
                last + 1,
                None,
                f"not readable as CSV: {exc}; the rest of the file was not read",
            )
        )
    if header is None and not errors:
        errors.append(RowError(1, None, "no header line: the file is empty"))
    return records, errors


def _header(line: int, cells: list[str]) -> tuple[list[str | None] | None, list[RowError]]:
    names = [cell.strip().lower() for cell in cells]
    errors = []
    usable: list[str | None] = []
    for name in names:
        if name not in COLUMNS:
            errors.append(RowError(line, name or "(empty)", f"unknown column; use {_COLUMN_LIST}"))
            usable.append(None)
        else:
            usable.append(name)
    repeated = sorted({name for name in names if name in COLUMNS and names.count(name) > 1})
    errors += [RowError(line, name, "column appears twice") for name in repeated]
    missing = [name for name in _REQUIRED if name not in names]
    errors += [RowError(line, name, "missing column") for name in missing]
    if not any(name in names for name in _PAYMENT_COLUMNS):
        errors.append(
            RowError(
                line,
                "payment_id",
                "missing column: give payment_id, merchant_reference or transaction_id",
            )
        )
        missing.append("payment_id")
    return (None if missing or repeated else usable), errors


_COLUMN_LIST = ", ".join(COLUMNS)


def _json_records(text: str) -> tuple[list[_Record], list[RowError]]:
    records: list[_Record] = []
    errors: list[RowError] = []
    # Split on "\n" only: str.splitlines would also split inside strings holding
    # U+2028 and friends, and shift every line number after them.
    for line, source in enumerate(text.split("\n"), start=1):
        if not source.strip():
            continue
        undecodable = _undecodable(source)
        if undecodable is not None:
            errors.append(RowError(line, None, undecodable))
            continue
        try:
            value = json.loads(
                source,
                parse_float=_JsonFloat,
                parse_int=_json_int,
                parse_constant=_JsonFloat,
                object_pairs_hook=_object,
            )
        except _DuplicateKey as exc:
            errors.append(RowError(line, _shown(exc.key), "appears twice in the object"))
            continue
        except json.JSONDecodeError as exc:
            errors.append(RowError(line, None, f"not JSON: {exc.msg} (column {exc.colno})"))
            continue
        except RecursionError:
            errors.append(RowError(line, None, "not a batch row: nested too deeply"))
            continue
        if not isinstance(value, dict):
            hint = " (JSON Lines: one object per line)" if isinstance(value, list) else ""
            errors.append(
                RowError(line, None, f"expected a JSON object, got {_json_type(value)}{hint}")
            )
            continue
        errors += [
            RowError(line, _shown(key), f"unknown field; use {_COLUMN_LIST}")
            for key in value
            if key not in COLUMNS
        ]
        records.append((line, {k: v for k, v in value.items() if k in COLUMNS and v is not None}))
    return records, errors


def _column(field: str | None) -> str | None:
    """The file column a ValidationError's field stands for."""
    if field is None:
        return None
    if field == "payment":
        return "payment_id"
    return field.removeprefix("payment.")


def _problem(exc: RefundError) -> str:
    """The message without the "field: " prefix the exception adds."""
    text = str(exc)
    field = getattr(exc, "field", None)
    if isinstance(exc, ValidationError) and field and text.startswith(f"{field}: "):
        return text[len(field) + 2 :]
    return text


def _parse_row(line: int, raw: Mapping[str, object]) -> tuple[BatchRow | None, list[RowError]]:
    errors: list[RowError] = []

    def refuse(field: str | None, problem: str) -> None:
        errors.append(RowError(line, field, problem))

    def text(name: str) -> str | None:
        value = raw.get(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and name in _ID_COLUMNS:
            return str(value)
        refuse(name, f"must be a string, got {_json_type(value)}")
        return None

    def money(name: str, currency: str | None) -> Money | None:
        value = raw.get(name)
        if value is None:
            return None
        if isinstance(value, _JsonFloat):
            refuse(
                name,
                f"{_shown(value.text)} is a JSON number with a fraction or exponent, which "
                f'cannot hold money exactly; write it as a string: "{_shown(value.text)}"',
            )
            return None
        if isinstance(value, _JsonLongInt):
            refuse(name, f"a number of {len(value.text)} digits is no amount")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            refuse(name, f'must be a string like "10.00" or an integer, got {_json_type(value)}')
            return None
        if currency is None:
            return None
        try:
            return Money(value, currency)
        except ValidationError as exc:
            refuse(name if exc.field == "amount" else _column(exc.field), _problem(exc))
            return None

    provider = text("provider")
    if provider is None and "provider" not in raw:
        refuse("provider", "missing")
    currency = text("currency")
    if currency is None and "currency" not in raw:
        refuse("currency", "missing")
    elif currency is not None:
        try:
            Money(1, currency)
        except ValidationError as exc:
            refuse("currency", _problem(exc))
            currency = None
    if "amount" not in raw:
        refuse("amount", "missing")
    amount = money("amount", currency)
    original_amount = money("original_amount", currency)
    ids = {name: text(name) for name in _ID_COLUMNS}
    reason = text("reason")
    checks: list[Callable[[], object]] = [
        lambda: ids["refund_id"] is None or check_refund_id(ids["refund_id"]),
        lambda: check_text(reason, "reason", REASON_MAX),
    ]
    # An identifier of the wrong type is reported already; "give at least one" would
    # only repeat it.
    if not any(error.field in _PAYMENT_COLUMNS for error in errors):
        checks.insert(
            0,
            lambda: PaymentRef(ids["payment_id"], ids["merchant_reference"], ids["transaction_id"]),
        )
    for check in checks:
        try:
            check()
        except ValidationError as exc:
            refuse(_column(exc.field), _problem(exc))
    if errors or provider is None or amount is None:
        return None, errors
    row = BatchRow(
        provider=provider,
        payment_id=ids["payment_id"],
        merchant_reference=ids["merchant_reference"],
        transaction_id=ids["transaction_id"],
        amount=amount,
        refund_id=ids["refund_id"],
        reason=reason,
        original_amount=original_amount,
        line=line,
    )
    return row, errors


def derive_refund_ids(rows: Iterable[BatchRow]) -> list[BatchRow]:
    """The rows, each without ``refund_id`` given one derived from its own content.

    The id is ``b-`` + 24 hex digits of a SHA-256 over the provider, the payment's
    identifiers, amount, currency, reason and original amount, + ``-N`` for the N-th
    row with that content (so two identical rows are two refunds). It depends on
    nothing else: not on the line, not on other rows, not on the file's name. Editing,
    adding or reordering other rows never changes a row's id, so a re-run after fixing
    a file never refunds the unchanged rows again. The flip side: the same row in a
    later file has the same id and is recognised as already refunded; give
    ``refund_id`` explicitly to refund a payment the same amount again.
    """
    seen: Counter[str] = Counter()
    derived = []
    for row in rows:
        if row.refund_id is None:
            identity = _row_content(row)
            digest = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:24]
            seen[digest] += 1
            row = attrs.evolve(row, refund_id=f"b-{digest}-{seen[digest]}")
        derived.append(row)
    return derived


def _set_errors(rows: Sequence[BatchRow]) -> list[RowError]:
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


def _client_errors(client: BatchClient, rows: Sequence[BatchRow]) -> list[RowError]:
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
            errors.append(_row_error(row.line or 0, problem))
    return errors


def _row_error(line: int, exc: RefundError) -> RowError:
    if isinstance(exc, ValidationError) and exc.field:
        return RowError(line, _column(exc.field), _problem(exc))
    if isinstance(exc, (ConfigError, ProviderNotInstalled, PluginLoadError)):
        return RowError(line, "provider", str(exc))
    return RowError(line, None, str(exc))


def _numbered(rows: Iterable[BatchRow]) -> list[BatchRow]:
    numbered = [
        row if row.line is not None else attrs.evolve(row, line=index)
        for index, row in enumerate(rows, start=1)
    ]
    lines = Counter(row.line for row in numbered)
    repeated = sorted(line for line, count in lines.items() if line is not None and count > 1)
    if repeated:
        raise ValidationError(f"line {repeated[0]} is given to more than one row", field="line")
    return numbered


def check_rows(client: BatchClient, rows: Iterable[BatchRow]) -> list[RowError]:
    """Every problem of ``rows`` that can be known without sending anything, by line
    (rows without a line are numbered by position): what :func:`read_batch_file`
    checks across rows, and what ``client`` would refuse (provider not installed or
    not configured, capabilities, original amount, the provider plugin's build
    stage). Nothing is signed, sent or journalled."""
    prepared = derive_refund_ids(_numbered(rows))
    errors = _set_errors(prepared) + _client_errors(client, prepared)
    return sorted(errors, key=lambda error: error.line)


def _invalid_outcomes(rows: Iterable[BatchRow], errors: Sequence[RowError]) -> list[BatchOutcome]:
    known = {row.line: row for row in rows}
    by_line: dict[int, list[RowError]] = {}
    for error in errors:
        by_line.setdefault(error.line, []).append(error)
    outcomes = []
    for line, problems in by_line.items():
        row = known.get(line)
        outcomes.append(
            BatchOutcome(
                line=line,
                status=BatchStatus.INVALID,
                provider=None if row is None else row.provider,
                refund_id=None if row is None else row.refund_id,
                amount=None if row is None else row.amount,
                error_code="invalid",
                message="; ".join(
                    f"{p.field}: {p.problem}" if p.field else p.problem for p in problems
                ),
            )
        )
    return outcomes


def _skipped(row: BatchRow, message: str | None = None) -> BatchOutcome:
    return BatchOutcome(
        line=row.line or 0,
        status=BatchStatus.SKIPPED,
        provider=row.provider,
        refund_id=row.refund_id,
        amount=row.amount,
        message=message,
    )


# -- running a batch ----------------------------------------------------------------------


class _Spacing:
    """At most ``rate`` starts a second, evenly spaced: no burst, so a gateway's limit
    per second holds over every window, not just on average."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self, halt: threading.Event) -> bool:
        """Block until this caller's turn; False if ``halt`` was set meanwhile."""
        with self._lock:
            now = time.monotonic()
            turn = max(now, self._next)
            self._next = turn + self._interval
        return turn <= now or not halt.wait(turn - now)


class _RateLimits:
    """One :class:`_Spacing` per provider: ``rate`` is a number for every provider, or
    a mapping of provider id to number where ``"*"`` stands for the others."""

    def __init__(self, rate: float | Mapping[str, float] | None) -> None:
        spec: dict[str, Any] = {}
        if isinstance(rate, Mapping):
            spec = dict(rate)
        elif rate is not None:
            spec = {"*": rate}
        for provider, value in spec.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValidationError(
                    f"{provider}: must be a positive number of requests per second, got {value!r}",
                    field="rate",
                )
            if value == float("inf"):
                raise ValidationError(f"{provider}: must be finite", field="rate")
        self._default: float | None = spec.pop("*", None)
        self._rates: dict[str, float] = spec
        self._spacings: dict[str, _Spacing] = {}
        self._lock = threading.Lock()

    def wait(self, provider: str, halt: threading.Event) -> bool:
        """Wait for ``provider``'s next slot; False if ``halt`` was set meanwhile."""
        with self._lock:
            spacing = self._spacings.get(provider)
            if spacing is None:
                rate = self._rates.get(provider, self._default)
                if rate is None:
                    return True
                spacing = self._spacings[provider] = _Spacing(rate)
        return spacing.wait(halt)


# How often a worker writes finished rows to the journal between chunk claims, and how
# often it counts what other workers finished (both for progress, not correctness).
_FLUSH_SECONDS = 1.0
_COUNT_SECONDS = 2.0
# How long a worker with nothing to do waits before looking again at rows other
# workers still hold.
_IDLE_SECONDS = 0.5
# How long the calling thread waits for a row to finish before it looks at stop
# requests and progress again; and the shortest time between two progress reports.
_POLL_SECONDS = 0.25
_PROGRESS_SECONDS = 0.1


class _Runner:
    """One process's share of a batch: claims chunks of rows, refunds them on a thread
    pool, records them done, and assembles the report. Journal calls all happen on the
    calling thread (plus a lease-renewing one); refunds on the pool."""

    def __init__(
        self,
        client: BatchClient,
        journal: Journal,
        batch_id: str,
        rows: Sequence[BatchRow],
        invalid: Sequence[BatchOutcome],
        *,
        workers: int,
        limits: _RateLimits,
        on_progress: Callable[[BatchProgress], None] | None,
        chunk_size: int,
        lease_seconds: float,
        stop: threading.Event | None,
    ) -> None:
        self._client = client
        self._journal = journal
        self._batch_id = batch_id
        self._rows = {row.line or 0: row for row in rows}
        self._invalid = list(invalid)
        self._workers = workers
        self._limits = limits
        self._on_progress = on_progress
        self._chunk = chunk_size
        self._lease = lease_seconds
        self._stop = stop
        self._owner = f"{socket.gethostname()}:{os.getpid()}:batch-{uuid.uuid4().hex[:8]}"
        self._halt = threading.Event()
        self._renewal_over = threading.Event()
        self._in_flight: dict[Future[BatchOutcome], int] = {}
        # Futures put themselves here when done: waiting on this costs the same however
        # many rows are in flight, where concurrent.futures.wait hooks into every one.
        self._finished: queue.SimpleQueue[Future[BatchOutcome]] = queue.SimpleQueue()
        # Outcomes of sent refunds, journalled together when the rows are marked done
        # rather than one commit each: a row's outcome is in here before its future
        # is done, so it is journalled no later than the row.
        self._sent: queue.SimpleQueue[ResultRecord] = queue.SimpleQueue()
        self._outcomes: dict[int, BatchOutcome] = {}
        self._unrecorded: list[BatchDone] = []
        self._counts: Counter[BatchStatus] = Counter()
        self._finished_here = 0
        self._done_before = 0
        self._recorded = 0
        self._elsewhere = 0
        self._waiting = 0
        self._started = time.monotonic()
        self._last_progress = float("-inf")

    def run(self) -> BatchReport:
        journal = self._journal
        journal.open_batch(
            self._batch_id,
            [
                BatchItem(line, row.provider, row.refund_id or "")
                for line, row in self._rows.items()
            ],
        )
        # Rows earlier runs finished are read only when there are any: a fresh batch of
        # thousands of rows need not decode them all.
        earlier = (
            journal.batch_entries(self._batch_id)
            if journal.count_batch(self._batch_id).done
            else []
        )
        for entry in earlier:
            if entry.state is BatchItemState.DONE:
                self._done_before += 1
                row = self._rows.get(entry.line)
                if row is not None:
                    self._counts[self._from_entry(entry, row).status] += 1
        renewer = threading.Thread(target=self._renew, name="refundcore-batch-lease", daemon=True)
        renewer.start()
        interrupted = False
        executor = ThreadPoolExecutor(self._workers, thread_name_prefix="refundcore-batch")
        try:
            self._loop(executor)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            self._halt.set()
            try:
                self._wind_down(executor)
            finally:
                self._renewal_over.set()
        report = self._report(interrupted)
        self._progress(finished=True)
        if interrupted:
            raise BatchInterrupted(report)
        return report

    def _halted(self) -> bool:
        """Whether to start no more rows (the caller's stop, Ctrl-C); any thread."""
        if self._stop is not None and self._stop.is_set():
            self._halt.set()
        return self._halt.is_set()

    def _loop(self, executor: ThreadPoolExecutor) -> None:
        queue: deque[int] = deque()
        exhausted = False
        recorded_at = counted_at = time.monotonic()
        while not self._halted():
            # Twice as many rows as threads: a thread that finishes one finds the next
            # already queued instead of waiting for this thread to hand it over. A
            # queued row not started when the batch stops is skipped, never sent.
            while len(self._in_flight) < 2 * self._workers and not self._halted():
                if not queue:
                    if exhausted:
                        break
                    self._record()
                    queue.extend(self._claim())
                    self._waiting = 0
                    recorded_at = time.monotonic()
                    if not queue:
                        exhausted = True
                        break
                line = queue.popleft()
                future = executor.submit(self._refund, self._rows[line])
                self._in_flight[future] = line
                future.add_done_callback(self._finished.put)
            now = time.monotonic()
            if self._in_flight:
                self._collect(timeout=_POLL_SECONDS)
                if now - recorded_at >= _FLUSH_SECONDS:
                    self._record()
                    recorded_at = now
                if self._on_progress is not None and now - counted_at >= _COUNT_SECONDS:
                    self._count_elsewhere()
                    counted_at = now
            else:
                # Nothing left to claim here: finished, unless rows are still held by
                # other workers (which may die and leave them to be taken over).
                self._record()
                self._waiting = self._count_elsewhere()
                if self._waiting == 0:
                    return
                self._progress()
                if self._halt.wait(_IDLE_SECONDS):
                    return
                exhausted = False
            self._progress()

    def _claim(self) -> list[int]:
        while True:
            lines = self._journal.claim_batch(
                self._batch_id, owner=self._owner, limit=self._chunk, lease_seconds=self._lease
            )
            if not lines:
                return []
            mine = [line for line in lines if line in self._rows]
            # Rows another worker offered that this one found invalid (its configuration
            # differs): say so; the next run of the batch, where they are valid, sends them.
            self._unrecorded += [
                BatchDone(
                    line,
                    BatchStatus.INVALID.value,
                    "invalid_elsewhere",
                    f"not sent: invalid for the worker {self._owner}; run the batch again",
                )
                for line in lines
                if line not in self._rows
            ]
            if mine:
                return mine

    def _count_elsewhere(self) -> int:
        """Refresh what other workers finished; returns the rows not done yet."""
        counts = self._journal.count_batch(self._batch_id)
        self._elsewhere = max(0, counts.done - self._done_before - self._recorded)
        return counts.open + counts.claimed

    def _refund(self, row: BatchRow) -> BatchOutcome:
        """One row, on a pool thread. Never raises for a refund's own reasons."""
        if not self._limits.wait(row.provider, self._halt) or self._halted():
            return _skipped(row)
        try:
            with batch_line(row.line):
                result = self._client.execute(
                    row.provider,
                    row.operation(),
                    original_amount=row.original_amount,
                    defer_record=self._sent.put,
                )
        except (ValidationError, ConfigError) as exc:
            return self._not_sent(row, BatchStatus.INVALID, exc)
        except RefundError as exc:
            return self._not_sent(row, BatchStatus.ERROR, exc)
        return BatchOutcome(
            line=row.line or 0,
            status=BatchStatus.of(result.status),
            provider=row.provider,
            refund_id=result.refund_id,
            amount=row.amount,
            provider_refund_id=result.provider_refund_id,
            error_code=result.error_code,
            message=self._redact(row.provider, result.message),
            ran_here=True,
            result=result,
        )

    def _not_sent(self, row: BatchRow, status: BatchStatus, exc: RefundError) -> BatchOutcome:
        return BatchOutcome(
            line=row.line or 0,
            status=status,
            provider=row.provider,
            refund_id=row.refund_id,
            amount=row.amount,
            error_code=type(exc).__name__,
            message=self._redact(row.provider, str(exc)),
            ran_here=True,
        )

    def _redact(self, provider: str, text: str | None) -> str | None:
        # Messages come from gateways and plugins: mask any credential one echoes.
        return self._client.redactor.text(provider, text)

    def _collect(self, timeout: float) -> None:
        """Take in the outcomes of rows finished by now, waiting up to ``timeout`` for
        the first."""
        finished: list[Future[BatchOutcome]] = []
        try:
            finished.append(self._finished.get(timeout=timeout))
            while True:
                finished.append(self._finished.get_nowait())
        except queue.Empty:
            if not finished:
                # One taken off the queue by a call that Ctrl-C cut short is found here.
                finished = [future for future in self._in_flight if future.done()]
        for future in finished:
            line = self._in_flight.get(future)
            if line is None:
                continue
            outcome = future.result()
            # Kept before the future is let go: a Ctrl-C between the two must not lose
            # the outcome of a refund that was sent (the wind-down collects it again).
            self._outcomes[line] = outcome
            del self._in_flight[future]
            if outcome.status is BatchStatus.SKIPPED:
                continue
            self._counts[outcome.status] += 1
            self._finished_here += 1
            self._unrecorded.append(
                BatchDone(line, outcome.status.value, outcome.error_code, outcome.message)
            )

    def _record(self) -> None:
        """Journal the outcomes of refunds sent, then mark finished rows done: one
        transaction for each."""
        sent = []
        with suppress(queue.Empty):
            while True:
                sent.append(self._sent.get_nowait())
        if sent:
            try:
                self._journal.record_many(sent)
            except JournalError as exc:
                # The refunds are out: their rows stay SUBMITTING, and a reconcile (or
                # the next run of the batch) settles them once the journal is back.
                log.error(
                    "outcomes of refunds not journalled",
                    batch_id=self._batch_id,
                    refunds=len(sent),
                    error_code=type(exc).__name__,
                    error=str(exc),
                )
        if self._unrecorded:
            self._recorded += self._journal.finish_batch(
                self._batch_id, owner=self._owner, done=self._unrecorded
            )
            self._unrecorded = []

    def _wind_down(self, executor: ThreadPoolExecutor) -> None:
        """Let rows in flight finish, record them, and give back unstarted rows."""
        try:
            while self._in_flight:
                self._collect(timeout=_POLL_SECONDS)
                self._progress()
        finally:
            executor.shutdown(wait=True)
            self._record()
            self._journal.release_batch(self._batch_id, owner=self._owner)

    def _renew(self) -> None:
        while not self._renewal_over.wait(self._lease / 3):
            try:
                self._journal.renew_batch(
                    self._batch_id, owner=self._owner, lease_seconds=self._lease
                )
            except RefundError as exc:
                log.warning(
                    "cannot renew the lease on claimed rows",
                    batch_id=self._batch_id,
                    error_code=type(exc).__name__,
                    error=str(exc),
                )

    def _from_entry(self, entry: BatchEntry, row: BatchRow) -> BatchOutcome:
        """A row another worker (or an earlier run) finished, as the journal has it now."""
        refund = entry.refund
        recorded = BatchStatus.__members__.get(entry.outcome or "", BatchStatus.ERROR)
        if refund is not None and recorded in _REFUND_OUTCOMES:
            # The journal's word, which callbacks and reconciles may have moved on since.
            return BatchOutcome(
                line=entry.line,
                status=BatchStatus.of(refund.state.status or RefundStatus.UNKNOWN),
                provider=row.provider,
                refund_id=row.refund_id,
                amount=row.amount,
                provider_refund_id=refund.provider_refund_id,
                error_code=refund.error_code,
                message=self._redact(row.provider, refund.message),
            )
        return BatchOutcome(
            line=entry.line,
            status=recorded,
            provider=row.provider,
            refund_id=row.refund_id,
            amount=row.amount,
            error_code=entry.error_code,
            message=self._redact(row.provider, entry.message),
        )

    def _report(self, interrupted: bool) -> BatchReport:
        ran_here = all(
            line in self._outcomes and self._outcomes[line].status is not BatchStatus.SKIPPED
            for line in self._rows
        )
        entries = (
            {}
            if ran_here
            else {entry.line: entry for entry in self._journal.batch_entries(self._batch_id)}
        )
        outcomes = list(self._invalid)
        for line, row in self._rows.items():
            mine = self._outcomes.get(line)
            entry = entries.get(line)
            if mine is not None and mine.status is not BatchStatus.SKIPPED:
                outcomes.append(mine)
            elif entry is not None and entry.state is BatchItemState.DONE:
                outcomes.append(self._from_entry(entry, row))
            else:
                outcomes.append(_skipped(row, "not attempted: the batch was stopped"))
        skipped = any(outcome.status is BatchStatus.SKIPPED for outcome in outcomes)
        return BatchReport(
            batch_id=self._batch_id,
            outcomes=tuple(sorted(outcomes, key=lambda outcome: outcome.line)),
            interrupted=interrupted or skipped,
            elapsed=time.monotonic() - self._started,
        )

    def _progress(self, *, finished: bool = False) -> None:
        if self._on_progress is None:
            return
        now = time.monotonic()
        if not finished and now - self._last_progress < _PROGRESS_SECONDS:
            return
        self._last_progress = now
        elapsed = now - self._started
        rate = self._finished_here / elapsed if self._finished_here and elapsed > 0 else None
        known = sum(self._counts.values())
        left = max(0, len(self._rows) - known - self._elsewhere)
        self._on_progress(
            BatchProgress(
                total=len(self._rows),
                counts={status.value: self._counts[status] for status in BatchStatus},
                elsewhere=self._elsewhere,
                in_flight=len(self._in_flight),
                elapsed=elapsed,
                rate=rate,
                eta=left / rate if rate else None,
                finished=finished,
                waiting=self._waiting,
            )
        )


def run_batch(
    client: BatchClient,
    rows: Iterable[BatchRow] | BatchFile,
    *,
    workers: int = DEFAULT_WORKERS,
    rate: float | Mapping[str, float] | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    skip_invalid: bool = False,
    chunk_size: int | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    stop: threading.Event | None = None,
) -> BatchReport:
    """What :meth:`RefundClient.refund_many` does; see there."""
    journal = client.journal
    if journal is None:
        raise ConfigError(
            "a batch needs a journal: it is what lets a batch be run again without "
            "refunding a row twice (RefundClient(journal=...))",
            field="journal",
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValidationError(
            f"must be a whole number of 1 or more, got {workers!r}", field="workers"
        )
    chunk = max(2 * workers, 8) if chunk_size is None else chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int) or not 1 <= chunk <= _MAX_CHUNK:
        raise ValidationError(f"must be 1 to {_MAX_CHUNK}, got {chunk!r}", field="chunk_size")
    if not lease_seconds > 0:
        raise ValidationError(f"must be positive, got {lease_seconds!r}", field="lease_seconds")
    limits = _RateLimits(rate)
    if isinstance(rows, BatchFile):
        batch_id = rows.batch_id
        # As read_batch_file made them, unless the caller built the BatchFile itself.
        prepared = derive_refund_ids(_numbered(rows.rows))
        errors = list(rows.errors) + _client_errors(client, prepared)
    else:
        prepared = derive_refund_ids(_numbered(rows))
        batch_id = _rows_digest(prepared)
        errors = _set_errors(prepared) + _client_errors(client, prepared)
    errors.sort(key=lambda error: error.line)
    invalid = _invalid_outcomes(prepared, errors)
    bad = {error.line for error in errors}
    runnable = [row for row in prepared if row.line not in bad]
    if errors and not skip_invalid:
        refused = invalid + [
            _skipped(row, "not sent: the batch has invalid rows") for row in runnable
        ]
        report = BatchReport(batch_id, tuple(sorted(refused, key=lambda o: o.line)))
        raise BatchInvalid(errors, report)
    if workers > client.pool_size:
        log.warning(
            "more workers than pooled connections per gateway: give the client a pool_size "
            "of at least workers",
            workers=workers,
            pool_size=client.pool_size,
        )
    return _Runner(
        client,
        journal,
        batch_id,
        runnable,
        invalid,
        workers=workers,
        limits=limits,
        on_progress=on_progress,
        chunk_size=chunk,
        lease_seconds=lease_seconds,
        stop=stop,
    ).run()


def _rows_digest(rows: Sequence[BatchRow]) -> str:
    """A batch id for rows built in code: the same rows, the same batch."""
    canonical = [[row.line, row.refund_id, *_row_content(row)] for row in rows]
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:32]


def _row_content(row: BatchRow) -> list[str | None]:
    """What a row asks for, apart from its line and refund id."""
    return [
        row.provider,
        row.payment_id,
        row.merchant_reference,
        row.transaction_id,
        row.amount.to_wire(),
        row.amount.currency,
        row.reason,
        None if row.original_amount is None else row.original_amount.to_wire(),
    ]


# -- progress ------------------------------------------------------------------------------


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
        every = _PROGRESS_SECONDS if self._tty else self._interval
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
