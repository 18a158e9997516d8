"""Hostile batch files: numbers of thousands of digits, nesting thousands deep, huge CSV
fields, bytes that are not UTF-8. Each is a bad row listed with its line number, never a
traceback; a file that is not a regular file is refused before it is read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refundcore import ValidationError
from refundcore.batch import read_batch_file

CLI = str(Path(sys.executable).with_name("refundcore"))
pytestmark = pytest.mark.timeout(120)

GOOD = {"provider": "paywizard", "payment_id": "123", "amount": "1.00", "currency": "HKD"}


def _row(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def _jsonl(tmp_path: Path) -> Path:
    digits = "7" * 5000
    deep = "[" * 100_000 + "]" * 100_000
    lines = [
        _row(refund_id="ok-1"),  # 1
        _row(refund_id="r2").replace(b'"1.00"', digits.encode()),  # 2: 5,000-digit amount
        _row(refund_id="r3", amount=digits),  # 3: 5,000-digit string
        _row(refund_id="r4").replace(b'"1.00"', b"1." + digits.encode()),  # 4: long fraction
        _row(refund_id="r5").replace(b'"123"', digits.encode()),  # 5: 5,000-digit id
        _row(refund_id="r6")[:-1] + b', "reason": ' + deep.encode() + b"}",  # 6: deep array
        b'{"a": ' * 50_000 + b"1" + b"}" * 50_000,  # 7: deep objects
        deep.encode(),  # 8: deep top-level array
        _row(refund_id="r9", reason="caf\u00e9").replace(b"\\u00e9", b"\xe9"),  # 9: Latin-1
        _row(refund_id="r10", **{"k" * 100_000: 1}),  # 10: an enormous key
        _row(refund_id="ok-11"),  # 11
    ]
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


_JSONL_ERRORS = {
    2: "amount: a number of 5000 digits is no amount",
    3: "amount: ",
    4: "amount: 1.77777777777777777777777777777777777777… is a JSON number",
    5: "payment_id: must be a string, got a number of 5000 digits",
    6: "nested too deeply",
    7: "nested too deeply",
    8: "nested too deeply",
    9: "not UTF-8 text (byte 0xe9)",
    10: "kkkkkkkk…: unknown field",
}


def test_jsonl_problems_are_rows_with_line_numbers(tmp_path: Path) -> None:
    parsed = read_batch_file(_jsonl(tmp_path))
    assert [row.line for row in parsed.rows] == [1, 11]
    by_line = {error.line: str(error) for error in parsed.errors}
    assert set(by_line) == set(_JSONL_ERRORS)
    for line, expected in _JSONL_ERRORS.items():
        assert expected in by_line[line], by_line[line]
        assert len(by_line[line]) < 400


def _csv(tmp_path: Path) -> Path:
    header = b"provider,payment_id,amount,currency,refund_id,reason\n"
    rows = [
        b"paywizard,123,1.00,HKD,ok-2,\n",
        b"paywizard,123,1.00,HKD,r3,caf\xe9\n",  # 3: Latin-1
        b"paywizard,123," + b"9" * 5000 + b",HKD,r4,\n",  # 4: 5,000-digit amount
        b"paywizard,123,1.00,HKD,ok-5,\n",
        b"paywizard,123,1.00,HKD,r6," + b"x" * 300_000 + b"\n",  # 6: field over the limit
        b"paywizard,123,1.00,HKD,after,\n",
    ]
    path = tmp_path / "hostile.csv"
    path.write_bytes(header + b"".join(rows))
    return path


def test_csv_problems_are_rows_with_line_numbers(tmp_path: Path) -> None:
    parsed = read_batch_file(_csv(tmp_path))
    assert [row.line for row in parsed.rows] == [2, 5]
    by_line = {error.line: str(error) for error in parsed.errors}
    assert set(by_line) == {3, 4, 6}
    assert "not UTF-8 text (byte 0xe9)" in by_line[3]
    assert "amount: '9999" in by_line[4] and "not a plain decimal" in by_line[4]
    assert "field larger than field limit" in by_line[6]
    assert "the rest of the file was not read" in by_line[6]


def test_a_non_utf8_header_is_a_line_one_error(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"provider,payment_id,amount,currency,r\xe9ason\npaywizard,123,1,HKD,x\n")
    parsed = read_batch_file(path)
    assert parsed.rows == ()
    assert [str(error) for error in parsed.errors] == [
        "line 1: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    ]


def test_files_that_never_end_are_refused_before_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "rows.jsonl"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(ValidationError, match=r"file: .* is not a regular file"):
            read_batch_file(path)


def _batch(tmp_path: Path, file: Path) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "refundcore.toml"
    config.write_text(
        '[providers.paywizard]\nbase_url = "http://127.0.0.1:9"\n'
        'client_id = "C1"\nclient_secret = "s"\ntoken = "t"\n'
    )
    return subprocess.run(
        [
            *(CLI, "batch", str(file), "--config", str(config)),
            *("--journal", f"sqlite:///{tmp_path / 'journal.db'}"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "REFUNDCORE_PLUGINS": "paywizard"},
        check=False,
    )


def test_cli_lists_hostile_jsonl_lines_without_a_traceback(tmp_path: Path) -> None:
    done = _batch(tmp_path, _jsonl(tmp_path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    # Rows sharing a problem are one line naming them all.
    assert "3 rows (lines 6-8): not a batch row: nested too deeply\n" in done.stderr
    for line, expected in _JSONL_ERRORS.items():
        named = f"line {line}: " in done.stderr or line in (6, 7, 8)
        assert named and expected in done.stderr
    assert "9 invalid rows" in done.stderr and "nothing was sent" in done.stderr
    assert len(done.stderr) < 10_000


def test_cli_lists_hostile_csv_lines_without_a_traceback(tmp_path: Path) -> None:
    done = _batch(tmp_path, _csv(tmp_path))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "line 3: not UTF-8 text" in done.stderr
    assert "line 6: not readable as CSV" in done.stderr
    assert "3 invalid rows" in done.stderr


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_cli_refuses_a_batch_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = {"device": Path("/dev/urandom"), "directory": tmp_path}.get(kind)
    if path is None:
        path = tmp_path / "rows.csv"
        os.mkfifo(path)
    done = _batch(tmp_path, path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "is not a regular file" in done.stderr
