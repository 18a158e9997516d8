"""Batch files: CSV with a header line, or JSON Lines; read one record at a time, every
row parsed and checked, every problem reported by line.

A file is read once, as a stream: each row goes into a :class:`RowStore` on disk with
its problems, and the file's bytes are hashed on the way (the hash names the batch), so
a file of a million rows takes the memory of a file of ten."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import ValidationError
from .intake import Intake
from .parsing import DuplicateKey, json_type, json_value, parse_row, shown, undecodable
from .rows import COLUMNS, PAYMENT_COLUMNS, REQUIRED_COLUMNS, BatchRow, RowError
from .store import OnDisk, RowStore, Stored

__all__ = ["BatchFile", "read_batch_file"]

# A record, or a problem that stands in for one.
_Record = tuple[int, dict[str, object]] | RowError
_COLUMN_LIST = ", ".join(COLUMNS)
# No batch row is anywhere near this long; a longer line is refused without being held.
_MAX_LINE = 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class BatchFile(OnDisk):
    """A batch file as :func:`read_batch_file` read and checked it.

    ``batch_id`` is a hash of the file's bytes that names the batch in the journal
    (the same file is the same batch, on every machine). ``rows`` are its valid rows
    (refund ids filled in) and ``errors`` the problems of the others, both in line
    order and kept on disk (``store``), not in memory: :meth:`close` (or ``with``)
    removes them, as garbage collection does.
    """

    def __init__(self, path: Path, batch_id: str, store: RowStore) -> None:
        super().__init__(store)
        self.path = path
        self.batch_id = batch_id

    @property
    def rows(self) -> Stored[BatchRow]:
        """The valid rows, in line order."""
        return self.store.rows()

    @property
    def errors(self) -> Stored[RowError]:
        """Every problem of the other rows, by line."""
        return self.store.errors()

    def __repr__(self) -> str:
        return f"BatchFile({str(self.path)!r}, batch_id={self.batch_id!r})"


def read_batch_file(path: str | os.PathLike[str]) -> BatchFile:
    """Read and check a batch file without a client: CSV with a header line, or JSON
    Lines (one object per line; chosen by the extension ``.jsonl``, ``.ndjson`` or
    ``.json``, else by a first character ``{``).

    Every problem of every row is collected (the row's line number, the column, what is
    wrong): unknown or missing columns, malformed amounts and currencies (a JSON
    number with a fraction is refused: give amounts as strings or integers), payment
    identifiers, refund ids and reasons, refund ids used twice, and rows of one payment
    adding up to more than its ``original_amount``, lines that are not UTF-8, nested too
    deeply, longer than a MiB or hold numbers too long to be amounts. Rows without
    ``refund_id`` get a derived one (:func:`derive_refund_ids`). ``ValidationError``
    only when the file cannot be read at all, or is not a regular file (a pipe or a
    device: a batch is named by its file's hash and run again from the same file).
    """
    source = Path(path)
    store = RowStore()
    try:
        with _open(source) as raw:
            hashing = _Hashing(raw)
            reader = io.BufferedReader(hashing)
            json_lines = _is_json_lines(source, reader.peek(4096))
            records = _json_records(reader) if json_lines else _csv_records(reader)
            _store_records(records, store)
            # The hash covers the whole file, also past a CSV error that ended the reading.
            while reader.read(1024 * 1024):
                pass
    except OSError as exc:
        store.close()
        raise ValidationError(
            f"cannot read {str(source)!r}: {exc.strerror or exc}", field="file"
        ) from None
    except BaseException:
        store.close()
        raise
    store.commit(idle=True)
    return BatchFile(source, hashing.digest.hexdigest()[:32], store)


def _open(source: Path) -> io.FileIO:
    try:
        # Without blocking: opening a FIFO would wait for a writer.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValidationError(f"cannot read {str(source)!r}: {reason}", field="file") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValidationError(
            f"{str(source)!r} is not a regular file (a batch is run again from the "
            "same file: save it first)",
            field="file",
        )
    return io.FileIO(fd, "rb")


class _Hashing(io.RawIOBase):
    """A file whose bytes are hashed as they are read."""

    def __init__(self, raw: io.FileIO) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer) or 0
        self.digest.update(memoryview(buffer)[:count])
        return count


def _store_records(records: Iterator[_Record], store: RowStore) -> None:
    intake = Intake(store)
    for record in records:
        if isinstance(record, RowError):
            store.add_errors([record])
            continue
        line, raw = record
        row, problems = parse_row(line, raw)
        store.add_errors(problems)
        if row is not None:
            intake.add(row)


def _is_json_lines(path: Path, start: bytes) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return True
    if suffix == ".csv":
        return False
    return start.removeprefix(_BOM).lstrip().startswith(b"{")


def _csv_records(binary: BinaryIO) -> Iterator[_Record]:
    # Lines that are not UTF-8 are reported one by one, like any other bad row.
    text = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")
    try:
        yield from _csv_rows(csv.reader(text))
    finally:
        text.detach()  # the caller reads on, to hash the rest of the file


def _csv_rows(reader: Iterator[list[str]]) -> Iterator[_Record]:
    header: list[str | None] | None = None
    last = 0
    try:
        for cells in reader:
            # A record starts on the line after the previous one ended (a quoted cell
            # may span lines); line_num is where this one ended.
            line, last = last + 1, reader.line_num  # type: ignore[attr-defined]
            if not any(cell.strip() for cell in cells):
                continue
            problem = undecodable("".join(cells))
            if problem is not None:
                yield RowError(line, None, problem)
                if header is None:
                    return
                continue
            if header is None:
                header, problems = _header(line, cells)
                yield from problems
                if header is None:
                    return
                continue
            if len(cells) != len(header):
                yield RowError(line, None, f"has {len(cells)} fields, the header has {len(header)}")
                continue
            values = zip(header, cells, strict=True)
            yield line, {name: cell for name, cell in values if name and cell}
    except csv.Error as exc:
        # Where the next record starts is unknown (the bad one may be a quoted cell
        # spanning lines): say so rather than guess, and read no further.
        yield RowError(
            last + 1, None, f"not readable as CSV: {exc}; the rest of the file was not read"
        )
        return
    if header is None:
        yield RowError(1, None, "no header line: the file is empty")


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


def _lines(binary: BinaryIO) -> Iterator[tuple[int, str | None]]:
    """Each line (split on "\\n" only: U+2028 and friends may stand inside strings),
    decoded with surrogateescape; ``None`` for a line too long to be a row, which is
    skipped without being held."""
    number = 0
    while chunk := binary.readline(_MAX_LINE + 1):
        number += 1
        if number == 1:
            chunk = chunk.removeprefix(_BOM)
        if len(chunk) > _MAX_LINE and not chunk.endswith(b"\n"):
            while (rest := binary.readline(_MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            yield number, None
            continue
        yield number, chunk.removesuffix(b"\n").decode("utf-8", errors="surrogateescape")


def _json_records(binary: BinaryIO) -> Iterator[_Record]:
    for line, source in _lines(binary):
        if source is None:
            yield RowError(line, None, f"longer than {_MAX_LINE} bytes: no batch row is")
        elif source.strip():
            yield from _json_record(line, source)


def _json_record(line: int, source: str) -> list[_Record]:
    problem = undecodable(source)
    if problem is not None:
        return [RowError(line, None, problem)]
    try:
        value = json_value(source)
    except DuplicateKey as exc:
        return [RowError(line, shown(exc.key), "appears twice in the object")]
    except json.JSONDecodeError as exc:
        return [RowError(line, None, f"not JSON: {exc.msg} (column {exc.colno})")]
    except RecursionError:
        return [RowError(line, None, "not a batch row: nested too deeply")]
    if not isinstance(value, dict):
        hint = " (JSON Lines: one object per line)" if isinstance(value, list) else ""
        return [RowError(line, None, f"expected a JSON object, got {json_type(value)}{hint}")]
    found: list[_Record] = [
        RowError(line, shown(key), f"unknown field; use {_COLUMN_LIST}")
        for key in value
        if key not in COLUMNS
    ]
    found.append((line, {k: v for k, v in value.items() if k in COLUMNS and v is not None}))
    return found
