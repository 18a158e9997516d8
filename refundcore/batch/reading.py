"""Batch files: CSV with a header line, or JSON Lines; every row read, parsed and
checked, every problem reported by line."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
from pathlib import Path

import attrs

from ..errors import ValidationError
from .checks import set_errors
from .parsing import DuplicateKey, json_type, json_value, parse_row, shown, undecodable
from .rows import COLUMNS, PAYMENT_COLUMNS, REQUIRED_COLUMNS, BatchRow, RowError, derive_refund_ids

__all__ = ["BatchFile", "read_batch_file"]


@attrs.frozen
class BatchFile:
    """A parsed batch file: its valid ``rows`` (refund ids filled in), the ``errors`` of
    the others, and ``batch_id``, a hash of the file's bytes that names the batch in
    the journal (the same file is the same batch, on every machine)."""

    path: Path
    batch_id: str
    rows: tuple[BatchRow, ...]
    errors: tuple[RowError, ...]


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
        row, problems = parse_row(line, raw)
        errors += problems
        if row is not None:
            parsed.append(row)
    rows = derive_refund_ids(parsed)
    errors += set_errors(rows)
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
            problem = undecodable("".join(cells))
            if problem is not None:
                errors.append(RowError(line, None, problem))
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
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    errors += [RowError(line, name, "missing column") for name in missing]
    if not any(name in names for name in PAYMENT_COLUMNS):
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
        problem = undecodable(source)
        if problem is not None:
            errors.append(RowError(line, None, problem))
            continue
        try:
            value = json_value(source)
        except DuplicateKey as exc:
            errors.append(RowError(line, shown(exc.key), "appears twice in the object"))
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
                RowError(line, None, f"expected a JSON object, got {json_type(value)}{hint}")
            )
            continue
        errors += [
            RowError(line, shown(key), f"unknown field; use {_COLUMN_LIST}")
            for key in value
            if key not in COLUMNS
        ]
        records.append((line, {k: v for k, v in value.items() if k in COLUMNS and v is not None}))
    return records, errors
