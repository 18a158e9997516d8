"""Batch refunds: `refundcore batch FILE` and `RefundClient.refund_many`, over real
loopback sockets against the testpay emulator, with the journal on SQLite. Two
processes splitting one batch on PostgreSQL: tests/journal/test_journal_batch.py."""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from refundcore import (
    ConfigError,
    JournalError,
    Money,
    PaymentRef,
    RefundClient,
    RefundStatus,
    ValidationError,
    hookimpl,
)
from refundcore.batch import (
    COLUMNS,
    BatchInvalid,
    BatchProgress,
    BatchRow,
    BatchStatus,
    ProgressPrinter,
    RowError,
    check_rows,
    derive_refund_ids,
    group_errors,
    read_batch_file,
)
from refundcore.batch.earlier import Forgotten, forgotten_rows
from refundcore.cli import main
from refundcore.journal import JournalState, open_journal
from refundcore.sandbox import Fault, SandboxRun

HKD = "HKD"
MakeClient = Callable[..., Any]


@attrs.define
class Gateway:
    """The testpay emulator, a config file for it, and the journal the CLI uses."""

    run: SandboxRun
    config: Path
    journal: str
    folder: Path
    site: Path

    def payments(self, count: int, **kw: Any) -> list[PaymentRef]:
        return [self.run.emulator.seed_payment(Money("100.00", HKD), **kw) for _ in range(count)]

    def refunds_sent(self) -> int:
        return sum(
            1 for r in self.run.server.requests if r.method == "POST" and r.target == "/v1/refunds"
        )

    def refunds_per_payment(self, payments: list[PaymentRef]) -> list[int]:
        ledger = self.run.emulator.ledger
        found = [ledger.find_payment(payment_id=p.payment_id) for p in payments]
        return [len(p.refunds) if p is not None else -1 for p in found]

    def args(self, *extra: str) -> list[str]:
        return ["--config", str(self.config), "--journal", self.journal, *extra]


def _gateway(provider: str, site: Path, folder: Path) -> Iterator[Gateway]:
    with SandboxRun(provider, read_timeout=2) as run:
        config = run.emulator.client_config(run.server.base_url)
        lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in config.items())
        file = folder / "refundcore.toml"
        # Timeouts short enough for a short lease (--lease must outlast them).
        file.write_text(f"[providers.{provider}]\nread_timeout = 2\nconnect_timeout = 0.5\n{lines}")
        yield Gateway(run, file, f"sqlite:///{folder / 'journal.db'}", folder, site)


@pytest.fixture
def gateway(installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "testpay")
    yield from _gateway("testpay", installed, tmp_path)


@pytest.fixture
def refund_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gateway]:
    """BBMSL (directgw), which refunds a payment once, and its emulator."""
    monkeypatch.setenv("REFUNDCORE_PLUGINS", "directgw")
    yield from _gateway("directgw", tmp_path, tmp_path)


def rows_for(
    payments: list[PaymentRef], amount: str = "10.00", **extra: str
) -> list[dict[str, str]]:
    return [
        {"provider": "testpay", "payment_id": str(p.payment_id), "amount": amount, "currency": HKD}
        | extra
        for p in payments
    ]


def write_csv(path: Path, rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    try:
        data = json.loads(out)
    except ValueError:
        data = out
    return code, data, err


def read_report(path: Path) -> dict[int, dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return {int(row["line"]): row for row in csv.DictReader(handle)}


# -- validation -----------------------------------------------------------------------------


def test_every_bad_row_is_listed_by_line_and_nothing_is_sent(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    good = rows_for(gateway.payments(3))
    bad = [
        good[0] | {"refund_id": "dup-1"},  # line 2
        good[1] | {"amount": "10,00"},  # line 3
        good[1] | {"currency": "XYZ"},  # line 4
        good[1] | {"provider": ""},  # line 5
        good[1] | {"refund_id": "a b"},  # line 6
        good[1] | {"refund_id": "dup-1"},  # line 7
        good[1] | {"provider": "acme"},  # line 8
        good[1] | {"amount": "60.00", "original_amount": "50.00"},  # line 9
        good[1] | {"payment_id": "", "amount": "1.001"},  # line 10
        good[2] | {"amount": "10", "original_amount": "15"},  # line 11: fine alone
        good[2] | {"amount": "10", "original_amount": "15", "refund_id": "r-12"},  # line 12
    ]
    file = write_csv(gateway.folder / "bad.csv", bad)

    code, out, err = cli(
        capsys, "batch", str(file), *gateway.args("--report", str(gateway.folder / "r.csv"))
    )

    assert code == 2
    # The installed list depends on the test site: keep the line up to it.
    listed = [
        line.partition(" (installed")[0] for line in err.splitlines() if line.startswith("line ")
    ]
    assert listed == [
        "line 3: amount: '10,00' is not a plain decimal like '10.00'",
        "line 4: currency: 'XYZ' is not an ISO 4217 currency code",
        "line 5: provider: missing",
        "line 6: refund_id: must be printable ASCII without spaces (letters, digits, punctuation)",
        "line 7: refund_id: 'dup-1' is also on line 2",
        "line 8: provider: provider 'acme' is not installed",
        "line 9: original_amount: 50.00 HKD cannot cover a refund of 60.00 HKD",
        "line 10: amount: 1.001 has more decimals than HKD allows (2)",
        "line 10: payment_id: give at least one of payment_id, merchant_reference, transaction_id",
        "line 12: amount: this payment's rows up to here refund 20.00 HKD, more than its "
        "original_amount 15.00 HKD",
    ]
    assert out == "" and "refundcore: 9 invalid rows in" in err and "nothing was sent" in err
    code, data, _ = cli(capsys, "batch", str(file), *gateway.args("--json"))
    assert (code, data["sent"], data["exit_status"]) == (2, False, 2)
    assert {"line": 9, "field": "original_amount", "problem": listed[6][25:]} in data["errors"]
    assert gateway.run.server.requests == []
    report = read_report(gateway.folder / "r.csv")
    assert report[2]["status"] == report[11]["status"] == "SKIPPED"
    assert report[3]["status"] == "INVALID" and "10,00" in report[3]["message"]
    with open_journal(gateway.journal) as journal:
        assert journal.entries() == []


def test_a_problem_of_many_rows_is_one_line(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    good = rows_for(gateway.payments(2))
    missing = [good[0] | {"provider": "paywizard", "refund_id": f"m-{n}"} for n in range(150)]
    bad = [good[0], *missing[:100], good[1] | {"amount": "0"}, *missing[100:]]
    file = write_csv(gateway.folder / "many.csv", bad)

    code, out, err = cli(capsys, "batch", str(file), *gateway.args())

    assert code == 2 and out == ""
    lines = err.splitlines()
    problem = (
        "provider: provider 'paywizard' is not installed (installed: testpay); install its "
        "plugin from a clone of the refundcore repository: pip install -e plugins/paywizard "
        "(refundcore-paywizard is not on PyPI yet)"
    )
    assert lines[0] == f"150 rows (lines 3-102, 104-153): {problem}"
    assert lines[1] == "line 103: amount: must be positive, got 0"
    assert lines[2].startswith("refundcore: 151 invalid rows in ")
    with pytest.raises(BatchInvalid) as refused:
        gateway_client = RefundClient.from_file(gateway.config, journal=gateway.journal)
        gateway_client.refund_many(read_batch_file(file))
    assert str(refused.value).startswith(
        "151 invalid rows, nothing was sent: 150 rows (lines 3-102, 104-153): provider: "
    )

    code, out, err = cli(capsys, "batch", str(file), "--skip-invalid", *gateway.args())
    assert code == 2
    skipped = [line for line in err.splitlines() if line.startswith("skipped")]
    assert skipped == [
        f"skipped 150 rows (lines 3-102, 104-153): {problem}",
        "skipped line 103: amount: must be positive, got 0",
    ]
    listed = [line for line in out.splitlines() if line.startswith("3 ")]
    assert listed[0].endswith(f"  {problem[:99]}…"), "a cut cell ends with an ellipsis"


def test_scattered_lines_are_named_up_to_a_few_ranges() -> None:
    lines = (2, 4, 6, 8, 10, 12, 13, 20, 20)  # one row may have a problem twice
    errors = [RowError(line, "provider", "same") for line in lines]
    errors.append(RowError(5, None, "other"))
    assert group_errors(errors) == [
        "8 rows (lines 2, 4, 6, 8, 10, 12-13, …): provider: same",
        "line 5: other",
    ]


def test_header_problems_name_the_column(tmp_path: Path) -> None:
    file = write_csv(tmp_path / "h.csv", [], columns=("provider", "amount", "colour"))
    parsed = read_batch_file(file)
    assert [str(e) for e in parsed.errors] == [
        "line 1: colour: unknown column; use " + ", ".join(COLUMNS),
        "line 1: currency: missing column",
        "line 1: payment_id: missing column: give payment_id, merchant_reference or transaction_id",
    ]
    assert list(parsed.rows) == []
    (tmp_path / "short.csv").write_text("provider,payment_id,amount,currency\ntestpay,P1,10\n")
    assert [str(e) for e in read_batch_file(tmp_path / "short.csv").errors] == [
        "line 2: has 3 fields, the header has 4"
    ]
    with pytest.raises(ValidationError, match="cannot read"):
        read_batch_file(tmp_path / "missing.csv")


def test_json_lines_take_strings_and_integers_and_refuse_floats(tmp_path: Path) -> None:
    lines = [
        {"provider": "testpay", "payment_id": 1001, "amount": "10.50", "currency": HKD},
        {"provider": "testpay", "payment_id": "P2", "amount": 1500, "currency": "JPY"},
        {"provider": "testpay", "payment_id": "P3", "amount": 10.5, "currency": HKD},
        {"provider": "testpay", "payment_id": "P4", "amount": "1", "currency": HKD, "colour": 1},
        {"provider": "testpay", "payment_id": True, "amount": "1", "currency": HKD},
    ]
    text = "\n".join(json.dumps(line) for line in lines)
    text += '\n\n{"provider": "testpay",\n[1, 2]\n{"amount": "1", "amount": "2"}\n'
    file = tmp_path / "rows.jsonl"
    file.write_text(text)

    parsed = read_batch_file(file)

    assert [(r.line, r.payment_id, r.amount) for r in parsed.rows] == [
        (1, "1001", Money("10.50", HKD)),
        (2, "P2", Money(1500, "JPY")),
    ]
    # json's own wording of a syntax error varies between Python versions.
    errors = [str(e).partition(": Expecting")[0] for e in parsed.errors]
    assert errors == [
        "line 3: amount: 10.5 is a JSON number with a fraction or exponent, which cannot "
        'hold money exactly; write it as a string: "10.5"',
        "line 4: colour: unknown field; use " + ", ".join(COLUMNS),
        "line 5: payment_id: must be a string, got true",
        "line 7: not JSON",
        "line 8: expected a JSON object, got an array (JSON Lines: one object per line)",
        "line 9: amount: appears twice in the object",
    ]


def test_check_runs_the_provider_plugins_build_stage(
    tmp_path: Path, testpay_variant: Callable[..., object]
) -> None:
    """A plugin whose build stage refuses payment ids that are not digits: refund_many
    lists the row before anything is sent; check() alone raises."""
    with SandboxRun("testpay") as run:
        client = RefundClient(journal=f"sqlite:///{tmp_path / 'j.db'}")
        client.register_plugin(testpay_variant("digits", build=_digits_only), name="digits")
        client.configure("digits", run.emulator.client_config(run.server.base_url))
        paid = run.emulator.seed_payment(Money("100", HKD))
        rows = [
            BatchRow(provider="digits", payment_id="12345", amount=Money("1", HKD)),
            BatchRow(provider="digits", payment_id=paid.payment_id, amount=Money("1", HKD)),
        ]
        assert [str(e) for e in check_rows(client, rows)] == [
            "line 2: payment_id: must be digits for this gateway"
        ]
        with pytest.raises(BatchInvalid) as refused:
            client.refund_many(rows)
        assert [e.line for e in refused.value.errors] == [2]
        assert run.server.requests == []
        with pytest.raises(ValidationError, match="must be digits"):
            client.check("digits", attrs.evolve(rows[1], refund_id="r-2").operation())
        client.check("digits", attrs.evolve(rows[0], refund_id="r-1").operation())
        assert run.server.requests == [] and client.journal.entries() == []  # type: ignore[union-attr]
        client.close()


@hookimpl
def _digits_only(config: Any, operation: Any) -> Any:
    """A build stage for a gateway whose payment ids are digits only."""
    import refundcore_testpay

    if not str(operation.payment.payment_id).isdigit():
        raise ValidationError("must be digits for this gateway", field="payment_id")
    return refundcore_testpay.refundcore_build_request(config=config, operation=operation)


def test_skip_invalid_sends_the_valid_rows(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    payments = gateway.payments(3)
    rows = rows_for(payments)
    rows[1]["currency"] = "XYZ"
    file = write_csv(gateway.folder / "b.csv", rows)
    report = gateway.folder / "r.json"

    code, _, err = cli(
        capsys, "batch", str(file), *gateway.args("--skip-invalid", "--report", str(report))
    )

    assert code == 2, "an invalid row means not everything succeeded"
    assert "skipped line 3: currency: 'XYZ' is not an ISO 4217 currency code" in err
    data = json.loads(report.read_text())
    assert [(r["line"], r["status"]) for r in data["rows"]] == [
        (2, "SUCCEEDED"),
        (3, "INVALID"),
        (4, "SUCCEEDED"),
    ]
    assert gateway.refunds_per_payment(payments) == [1, 0, 1]


# -- ids, resuming, reports, exit codes -----------------------------------------------------


def test_derived_refund_ids_depend_on_the_row_alone(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    payments = gateway.payments(3)
    rows = rows_for(payments)
    rows.append(dict(rows[2]))  # the same refund twice: two refunds
    file = write_csv(gateway.folder / "b.csv", rows)
    first = read_batch_file(file)
    ids = [row.refund_id for row in first.rows]
    assert ids == [row.refund_id for row in read_batch_file(file).rows]
    assert ids[2] is not None and ids[2].endswith("-1") and ids[3] == ids[2][:-1] + "2"
    assert all(i is not None and len(i) <= 64 and i.startswith("b-") for i in ids)
    anonymous = [attrs.evolve(row, refund_id=None) for row in first.rows]
    assert [row.refund_id for row in derive_refund_ids(anonymous)] == ids

    code, _, _ = cli(capsys, "batch", str(file), *gateway.args())
    assert code == 0 and gateway.refunds_per_payment(payments) == [1, 1, 2]

    # Fix a typo in another row, add one: the rows already refunded keep their ids.
    edited = [rows[0] | {"reason": "dented"}, *rows[1:], *rows_for(gateway.payments(1))]
    write_csv(file, edited)
    again = read_batch_file(file)
    assert again.batch_id != first.batch_id
    assert [row.refund_id for row in again.rows][1:4] == ids[1:]
    report = gateway.folder / "r.csv"
    code, _, _ = cli(capsys, "batch", str(file), *gateway.args("--report", str(report)))
    assert code == 0
    assert gateway.refunds_sent() == 6, "only the edited and the new row were sent"
    ran_here = {line: row["ran_here"] for line, row in read_report(report).items()}
    assert ran_here == {2: "True", 3: "True", 4: "True", 5: "True", 6: "True"}


def test_running_the_same_file_again_sends_nothing(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write_csv(gateway.folder / "b.csv", rows_for(gateway.payments(4)))
    code, first, _ = cli(capsys, "batch", str(file), *gateway.args("--json"))
    assert (code, first["counts"]["SUCCEEDED"]) == (0, 4)
    report = gateway.folder / "r.json"

    code, second, _ = cli(
        capsys, "batch", str(file), *gateway.args("--json", "--report", str(report))
    )

    assert (code, second["counts"]["SUCCEEDED"], second["batch_id"]) == (0, 4, first["batch_id"])
    assert gateway.refunds_sent() == 4 and len(gateway.run.server.requests) == 4
    rows = json.loads(report.read_text())["rows"]
    assert {row["ran_here"] for row in rows} == {False}
    assert all(row["provider_refund_id"] for row in rows)


def test_a_report_of_rows_the_journal_does_not_know_refuses_the_batch(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report of an earlier run (CSV here; JSON in tests/journal/test_exactly_once.py)
    says rows were sent; a journal without them is not the one that ran the batch."""
    file = write_csv(gateway.folder / "b.csv", rows_for(gateway.payments(5)))
    report = gateway.folder / "r.csv"
    assert cli(capsys, "batch", str(file), *gateway.args("--report", str(report)))[0] == 0
    other = f"sqlite:///{gateway.folder / 'other.db'}"
    elsewhere = ["--config", str(gateway.config), "--journal", other, "--report", str(report)]

    code, out, err = cli(capsys, "batch", str(file), *elsewhere)

    assert code == 2 and out == "" and gateway.refunds_sent() == 5
    assert f"the report {report} says 5 row(s) of {file} were sent (line 2 (b-" in err
    assert ": SUCCEEDED) and 2 more), but the journal" in err and "Nothing was sent" in err
    # Against the journal that ran it: every row from the journal, nothing sent again.
    assert cli(capsys, "batch", str(file), *gateway.args("--report", str(report)))[0] == 0
    assert gateway.refunds_sent() == 5


def test_an_earlier_report_is_read_a_row_at_a_time(tmp_path: Path) -> None:
    """Only rows of this batch that the report says went out count; a JSON report is
    read a line at a time as BatchReport.write lays it out (any other layout whole),
    and what cannot be read says nothing was sent."""
    row = {"provider": "acme", "amount": "1.00", "currency": HKD}
    rows = [row | {"payment_id": f"P{n}", "refund_id": f"r-{n}"} for n in range(1, 4)]
    said = [
        {"line": 2, "provider": "acme", "refund_id": "r-1", "status": "SUCCEEDED"},
        {"line": 3, "provider": "acme", "refund_id": "r-2", "status": "UNKNOWN"},
        {"line": 4, "provider": "acme", "refund_id": "r-3", "status": "ERROR"},
        {"line": 5, "provider": "other", "refund_id": "r-1", "status": "SUCCEEDED"},
        {"line": 6, "provider": "acme", "refund_id": "r-9", "status": "FAILED"},
    ]
    written = tmp_path / "written.json"
    entries = ",\n".join(f"    {json.dumps(row)}" for row in said)
    written.write_text(f'{{\n  "batch_id": "x",\n  "rows": [\n{entries}\n  ]\n}}\n')
    damaged = tmp_path / "damaged.json"
    damaged.write_text(written.read_text().replace('"UNKNOWN"}', '"UNKNOWN"'))
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps({"rows": said}))
    table = tmp_path / "table.csv"
    with table.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(said[0]))
        writer.writeheader()
        writer.writerows(said)
    both = ((2, "r-1", "SUCCEEDED"), (3, "r-2", "UNKNOWN"))

    with (
        read_batch_file(write_csv(tmp_path / "b.csv", rows)) as batch,
        open_journal(f"sqlite:///{tmp_path / 'j.db'}") as journal,
    ):
        found = {
            path.name: forgotten_rows(path, batch, journal)
            for path in (written, compact, table, damaged, tmp_path / "missing.json")
        }

    assert found == {
        "written.json": Forgotten(2, both),
        "compact.json": Forgotten(2, both),
        "table.csv": Forgotten(2, both),
        "damaged.json": Forgotten(1, both[:1]),
        "missing.json": Forgotten(),
    }


def test_report_contents_and_exit_status_precedence(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    ok = rows_for(gateway.payments(1), refund_id="ok")
    pending = rows_for(gateway.payments(1, refund_outcome=RefundStatus.PENDING), refund_id="pend")
    declined = rows_for(gateway.payments(1), amount="150.00", refund_id="no")
    lost = rows_for(gateway.payments(1), refund_id="lost")
    report = gateway.folder / "r.csv"
    batch = ["batch", "--workers", "1", "--report", str(report)]

    def run(rows: list[dict[str, str]], name: str) -> int:
        file = write_csv(gateway.folder / f"{name}.csv", rows)
        code, _, _ = cli(capsys, *batch, str(file), *gateway.args())
        return code

    assert run(ok, "ok") == 0
    assert run(ok + pending, "pending") == 3
    assert run(ok + pending + declined, "declined") == 1
    gateway.run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    assert run(lost + ok + pending + declined, "lost") == 4

    rows = read_report(report)
    assert list(next(iter(rows.values()))) == [
        "line", "provider", "refund_id", "status", "provider_refund_id", "amount", "currency",
        "error_code", "message", "ran_here",
    ]  # fmt: skip
    assert {line: (r["refund_id"], r["status"]) for line, r in rows.items()} == {
        2: ("lost", "UNKNOWN"),
        3: ("ok", "SUCCEEDED"),
        4: ("pend", "PENDING"),
        5: ("no", "FAILED"),
    }
    assert gateway.refunds_sent() == 4, "rows in several files were sent once"
    assert rows[5]["error_code"] == "over_refund" and rows[5]["amount"] == "150.00"
    assert rows[3]["provider_refund_id"] and rows[3]["currency"] == HKD
    secret = gateway.run.emulator.credentials["secret"]
    assert secret not in report.read_text()


def test_nothing_could_be_sent_exits_5_and_a_rerun_sends_it(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    payments = gateway.payments(2)
    file = write_csv(tmp_path / "b.csv", rows_for(payments))
    closed = gateway.config.read_text().replace(gateway.run.server.base_url, "http://127.0.0.1:9")
    (tmp_path / "down.toml").write_text(closed)

    code, out, _ = cli(capsys, "batch", str(file), "--config", str(tmp_path / "down.toml"))
    assert code == 5
    assert "ERROR rows were not sent: run this batch again" in out

    code, _, _ = cli(capsys, "batch", str(file), "--config", str(gateway.config))
    assert code == 0 and gateway.refunds_per_payment(payments) == [1, 1]


def test_usage_errors(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    file = write_csv(gateway.folder / "b.csv", rows_for(gateway.payments(1)))
    code, _, err = cli(capsys, "batch", str(file), "--no-journal", "--config", str(gateway.config))
    assert code == 2 and "batch needs a journal" in err
    code, _, err = cli(capsys, "batch", str(file), *gateway.args("--report", "out.txt"))
    assert code == 2 and "report: 'out.txt': give a .csv or .json" in err
    code, _, err = cli(capsys, "batch", str(file), *gateway.args("--rate", "fast"))
    assert code == 2 and "rate: 'fast'" in err
    with pytest.raises(SystemExit) as stop:
        main(["batch", str(file), "--workers", "0"])
    assert stop.value.code == 2
    assert gateway.run.server.requests == []


# Each exit status as the README defines it ("the most serious row decides") and what it
# promises about what was sent: rows of each kind, options, the status, the rows'
# statuses, refund requests sent. 130 (interrupted): the Ctrl-C test below.
EXIT_CASES = {
    "0-every-row-succeeded": (["ok", "ok"], [], 0, ["SUCCEEDED"] * 2, 2),
    "1-a-row-declined": (["ok", "declined"], [], 1, ["SUCCEEDED", "FAILED"], 2),
    "2-invalid-rows-nothing-sent": (["ok", "bad"], [], 2, ["SKIPPED", "INVALID"], 0),
    "2-invalid-rows-skipped": (["ok", "bad"], ["--skip-invalid"], 2, ["SUCCEEDED", "INVALID"], 1),
    "3-a-row-pending": (["ok", "pending"], [], 3, ["SUCCEEDED", "PENDING"], 2),
    "4-a-row-unknown": (["lost", "ok"], ["--workers", "1"], 4, ["UNKNOWN", "SUCCEEDED"], 2),
    "5-rows-not-sent": (["ok", "ok"], ["--down"], 5, ["ERROR"] * 2, 0),
}


@pytest.mark.parametrize("case", list(EXIT_CASES))
def test_each_exit_status_means_what_the_readme_says(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    kinds, options, expected, statuses, sent = EXIT_CASES[case]
    rows = []
    for kind in kinds:
        outcome = RefundStatus.PENDING if kind == "pending" else RefundStatus.SUCCEEDED
        row = rows_for(gateway.payments(1, refund_outcome=outcome))[0]
        rows.append(
            row | {"declined": {"amount": "150.00"}, "bad": {"currency": "XYZ"}}.get(kind, {})
        )
    if "lost" in kinds:
        gateway.run.server.inject("/v1/refunds", Fault(drop=True, times=1))
    config = gateway.config
    if "--down" in options:
        config = gateway.folder / "down.toml"
        config.write_text(
            gateway.config.read_text().replace(gateway.run.server.base_url, "http://127.0.0.1:9")
        )
    file = write_csv(gateway.folder / "b.csv", rows)
    report = gateway.folder / "r.json"
    extra = [option for option in options if option != "--down"]

    code, _, err = cli(
        capsys,
        *("batch", str(file), "--config", str(config), "--journal", gateway.journal),
        *("--report", str(report), *extra),
    )

    assert code == expected, err
    assert [row["status"] for row in json.loads(report.read_text())["rows"]] == statuses
    assert gateway.refunds_sent() == sent
    if sent == 0 and expected == 2:
        assert "nothing was sent" in err


# -- rules of the provider and the journal, checked before anything is sent --------------


def test_a_second_refund_of_a_payment_to_a_refund_once_gateway_is_refused_first(
    refund_once: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = refund_once
    payments = gateway.payments(2)
    rows = rows_for(payments, provider="directgw")
    file = write_csv(gateway.folder / "b.csv", [rows[0], rows[0] | {"amount": "5.00"}, rows[1]])

    code, _, err = cli(capsys, "batch", str(file), *gateway.args())

    assert code == 2 and "nothing was sent" in err
    assert (
        "line 3: payment_id: BBMSL PayAPI (Online Direct) refunds a payment once: it has line 2"
        in err
    )
    assert gateway.refunds_per_payment(payments) == [0, 0]
    code, _, _ = cli(capsys, "batch", str(file), *gateway.args("--skip-invalid"))
    assert code == 2 and gateway.refunds_per_payment(payments) == [1, 1]

    # A later file: the journal has the payment's refund, so a new one is refused first.
    later = write_csv(gateway.folder / "later.csv", [rows[0] | {"amount": "7.00"}])
    code, _, err = cli(capsys, "batch", str(later), *gateway.args())
    assert code == 2 and "refunds a payment once: it has refund 'b-" in err
    assert "in the journal" in err and gateway.refunds_per_payment(payments) == [1, 1]


def test_refunds_in_the_journal_count_toward_a_payments_original_amount(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    payments = gateway.payments(2)
    first = write_csv(
        gateway.folder / "first.csv", rows_for(payments[:1], "60.00", original_amount="100.00")
    )
    assert cli(capsys, "batch", str(first), *gateway.args())[0] == 0
    rows = [
        *rows_for(payments[:1], "50.00", original_amount="100.00"),
        *rows_for(payments[1:], "10.00"),
    ]
    file = write_csv(gateway.folder / "b.csv", rows)

    code, _, err = cli(capsys, "batch", str(file), *gateway.args())

    assert code == 2 and "nothing was sent" in err
    assert (
        "line 2: amount: 60.00 HKD of this payment is refunded already (the journal has "
        "it): with this payment's rows up to here that makes 110.00 HKD, more than its "
        "original_amount 100.00 HKD"
    ) in err
    assert gateway.refunds_sent() == 1
    # Running the first file again is not refused: its own refund is its row's.
    assert cli(capsys, "batch", str(first), *gateway.args())[0] == 0
    assert gateway.refunds_sent() == 1


def test_a_refund_id_the_journal_has_for_another_refund_is_refused_first(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    payments = gateway.payments(2)
    first = write_csv(gateway.folder / "first.csv", rows_for(payments[:1], refund_id="r-1"))
    assert cli(capsys, "batch", str(first), *gateway.args())[0] == 0
    rows = [*rows_for(payments[1:], refund_id="r-1"), *rows_for(payments[1:], refund_id="r-2")]
    file = write_csv(gateway.folder / "b.csv", rows)

    code, _, err = cli(capsys, "batch", str(file), *gateway.args())

    assert code == 2 and "nothing was sent" in err
    assert "line 2: refund_id: 'r-1' was used for a different refund via testpay" in err
    assert gateway.refunds_sent() == 1


def test_check_rows_applies_each_providers_rules(
    installed: Path, tmp_path: Path, testpay_variant: Callable[..., object]
) -> None:
    with SandboxRun("testpay") as run:
        client = RefundClient(journal=f"sqlite:///{tmp_path / 'j.db'}")
        config = run.emulator.client_config(run.server.base_url)
        for name, caps in {
            "once": {"refunds_per_payment": 1},
            "whole": {"partial_refunds": False},
            "hkd": {"currencies": {"HKD"}},
        }.items():
            client.register_plugin(testpay_variant(name, **caps), name=name)
            client.configure(name, config)
        row = functools.partial(BatchRow, payment_id="P1", amount=Money("5", HKD))
        rows = [
            row(provider="once"),
            row(provider="once", reason="again"),  # 2: a second refund of P1
            row(provider="once", payment_id="P2"),
            row(provider="whole", original_amount=Money("5", HKD)),
            row(provider="whole", payment_id="P2", original_amount=Money("9", HKD)),  # 5
            row(provider="hkd", amount=Money("5", "USD")),  # 6
        ]

        problems = [str(error) for error in check_rows(client, rows)]

        assert problems == [
            "line 2: payment_id: Testpay refunds a payment once: it has line 1",
            "line 5: amount: Testpay refunds only whole payments: 5.00 HKD is less than "
            "the payment's original amount 9.00 HKD",
            "line 6: currency: Testpay does not take USD (takes HKD)",
        ]
        assert run.server.requests == []
        client.close()


# -- concurrency and rate ---------------------------------------------------------------


def test_workers_overlap(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    payments = gateway.payments(8)
    file = write_csv(gateway.folder / "b.csv", rows_for(payments))
    # Counted at the gateway rather than timed from outside: a loaded machine slows
    # the whole run, never makes requests that were one after another overlap.
    lock, in_flight, most = threading.Lock(), [0], [0]
    handle = gateway.run.emulator.handle

    def slow(request: Any) -> Any:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        try:
            time.sleep(0.6)
            return handle(request)
        finally:
            with lock:
                in_flight[0] -= 1

    gateway.run.emulator.handle = slow  # type: ignore[method-assign]
    code, _, _ = cli(capsys, "batch", str(file), *gateway.args("--workers", "8"))

    assert code == 0 and gateway.refunds_per_payment(payments) == [1] * 8
    assert most[0] >= 2, "8 workers sent their refunds one after another"


def test_rate_limit_per_provider(gateway: Gateway, capsys: pytest.CaptureFixture[str]) -> None:
    file = write_csv(gateway.folder / "b.csv", rows_for(gateway.payments(20)))

    started = time.monotonic()
    code, _, _ = cli(
        capsys, "batch", str(file), *gateway.args("--workers", "8", "--rate", "testpay=10/s")
    )
    elapsed = time.monotonic() - started

    assert code == 0 and gateway.refunds_sent() == 20
    assert elapsed >= 1.85, f"20 refunds at 10/s took only {elapsed:.2f} s"


# -- progress --------------------------------------------------------------------------------


def test_progress_on_a_pipe_is_plain_lines(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    file = write_csv(gateway.folder / "b.csv", rows_for(gateway.payments(6)))
    gateway.run.server.inject("/v1/refunds", Fault(delay=0.25))

    code, data, err = cli(
        capsys,
        "batch",
        str(file),
        *gateway.args("--workers", "1", "--progress-interval", "0.3", "--json"),
    )

    assert code == 0 and data["counts"]["SUCCEEDED"] == 6, "stdout holds only the JSON"
    lines = err.splitlines()
    assert len(lines) >= 3 and "\r" not in err and "\x1b" not in err
    assert all(line.startswith("batch: ") for line in lines)
    assert any("ETA " in line and "/s" in line for line in lines[:-1])
    assert lines[-1].startswith("batch: 6/6 SUCCEEDED 6 FAILED 0 PENDING 0 UNKNOWN 0 · ")
    assert "done in 0:0" in lines[-1]


def test_progress_on_a_terminal_is_one_redrawn_line(
    gateway: Gateway, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = write_csv(gateway.folder / "b.csv", rows_for(gateway.payments(4)))
    gateway.run.server.inject("/v1/refunds", Fault(delay=0.2))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)

    code, out, err = cli(capsys, "batch", str(file), *gateway.args("--workers", "1"))

    assert code == 0 and out.startswith("batch ")
    frames = err.split("\r")[1:]
    assert len(frames) >= 3 and err.count("\n") == 1 and err.endswith("\n")
    assert frames[0].startswith("[") and frames[0].endswith("\x1b[K")
    assert frames[-1].startswith("[####################] 4/4 SUCCEEDED 4 FAILED 0")
    assert any("ETA" in frame for frame in frames[:-1])


def test_progress_printer_throttles_plain_lines() -> None:
    stream = io.StringIO()
    printer = ProgressPrinter(stream, interval=60)
    counts = {status.value: 0 for status in BatchStatus}
    for done in range(5):
        printer(BatchProgress(10, counts | {"SUCCEEDED": done}, 0, 1, 1.0, 5.0, 1.0))
    printer(BatchProgress(10, counts | {"SUCCEEDED": 9, "ERROR": 1}, 0, 0, 2.0, 5.0, 0, True))
    assert stream.getvalue().splitlines() == [
        "batch: 0/10 SUCCEEDED 0 FAILED 0 PENDING 0 UNKNOWN 0 · 5.0/s · ETA 0:01",
        "batch: 10/10 SUCCEEDED 9 FAILED 0 PENDING 0 UNKNOWN 0 ERROR 1 · 5.0/s · done in 0:02",
    ]


# -- the Python API --------------------------------------------------------------------------


def test_refund_many_from_code(installed: Path, tmp_path: Path, make_client: MakeClient) -> None:
    journal = f"sqlite:///{tmp_path / 'j.db'}"
    with SandboxRun("testpay", client=make_client(journal=journal)) as run:
        payments = [run.emulator.seed_payment(Money("100", HKD)) for _ in range(5)]
        rows = [
            BatchRow(provider="testpay", payment_id=p.payment_id, amount=Money("10", HKD))
            for p in payments
        ]
        rows[0] = attrs.evolve(rows[0], refund_id="mine-1")
        seen: list[BatchProgress] = []

        report = run.client.refund_many(rows, workers=3, on_progress=seen.append)

        assert (
            report.succeeded
            and report.counts["SUCCEEDED"] == 5
            and report.worst is BatchStatus.SUCCEEDED
        )
        assert [o.line for o in report.outcomes] == [1, 2, 3, 4, 5]
        assert report.outcomes[0].refund_id == "mine-1"
        assert all(o.ran_here and o.status is BatchStatus.SUCCEEDED for o in report.outcomes)
        assert seen[-1].finished and seen[-1].done == 5
        again = run.client.refund_many(rows)
        assert again.batch_id == report.batch_id
        assert [o.provider_refund_id for o in again.outcomes] == [
            o.provider_refund_id for o in report.outcomes
        ]
        assert not any(o.ran_here for o in again.outcomes)
        sent = [r for r in run.server.requests if r.method == "POST"]
        assert len(sent) == 5


def test_a_batch_journals_the_outcomes_of_its_rows_together(
    installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_client: MakeClient
) -> None:
    with SandboxRun("testpay", client=make_client(journal=f"sqlite:///{tmp_path / 'j.db'}")) as run:
        journal = run.client.journal
        assert journal is not None
        one_by_one: list[str] = []
        together: list[int] = []
        record, record_many = journal.record, journal.record_many
        monkeypatch.setattr(
            journal, "record", lambda *a, **kw: one_by_one.append(a[1]) or record(*a, **kw)
        )
        monkeypatch.setattr(
            journal,
            "record_many",
            lambda outcomes, **kw: together.append(len(outcomes)) or record_many(outcomes, **kw),
        )
        payments = [run.emulator.seed_payment(Money("100", HKD)) for _ in range(12)]
        rows = [
            BatchRow(provider="testpay", payment_id=p.payment_id, amount=Money("10", HKD))
            for p in payments
        ]

        report = run.client.refund_many(rows, workers=4)

        assert report.succeeded and one_by_one == [] and sum(together) == 12
        assert len(together) < 12
        stored = {entry.refund_id: entry for entry in journal.entries()}
        for outcome in report.outcomes:
            entry = stored[str(outcome.refund_id)]
            assert entry.state is JournalState.SUCCEEDED and entry.owner is None
            assert entry.provider_refund_id == outcome.provider_refund_id


def test_outcomes_the_journal_cannot_take_are_settled_by_a_reconcile(
    installed: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    make_client: MakeClient,
) -> None:
    # The lease must outlast a send (connect + read timeout + 0.5 s); loopback connects
    # at once, so the read timeout gets the rest: room for a loaded machine's replies.
    client = make_client(journal=f"sqlite:///{tmp_path / 'j.db'}", lease_seconds=2.5)
    with SandboxRun("testpay", client=client, read_timeout=1.7, connect_timeout=0.2) as run:
        journal = run.client.journal
        assert journal is not None

        def unavailable(*args: Any, **kwargs: Any) -> None:
            raise JournalError("journal sqlite:///j.db is full: database or disk is full")

        monkeypatch.setattr(journal, "record_many", unavailable)
        payments = [run.emulator.seed_payment(Money("100", HKD)) for _ in range(3)]
        rows = [
            BatchRow(provider="testpay", payment_id=p.payment_id, amount=Money("10", HKD))
            for p in payments
        ]

        report = run.client.refund_many(rows, workers=2)

        # The refunds went out and the report says so; the journal still says SUBMITTING.
        assert report.succeeded
        assert "outcomes of" in caplog.text and "not journalled" in caplog.text
        assert {entry.state for entry in journal.entries()} == {JournalState.SUBMITTING}
        monkeypatch.undo()
        time.sleep(2.5)  # the senders' leases run out: nobody is sending them any more
        settled = run.client.reconcile()
        assert [result.status for result in settled] == [RefundStatus.SUCCEEDED] * 3
        assert {entry.state for entry in journal.entries()} == {JournalState.SUCCEEDED}
        assert len([r for r in run.server.requests if r.method == "POST"]) == 3


def test_refund_many_needs_a_journal_and_sane_arguments(
    installed: Path, make_client: MakeClient
) -> None:
    row = BatchRow(provider="testpay", payment_id="P1", amount=Money("1", HKD))
    with pytest.raises(ConfigError, match="a batch needs a journal"):
        make_client(journal=None).refund_many([row])
    client = make_client(journal="sqlite://:memory:")
    with pytest.raises(ValidationError, match="workers"):
        client.refund_many([row], workers=0)
    with pytest.raises(ValidationError, match="rate: testpay: must be a positive"):
        client.refund_many([row], rate={"testpay": 0})
    with pytest.raises(ValidationError, match="line 3 is given to more than one row"):
        client.refund_many([attrs.evolve(row, line=3), attrs.evolve(row, line=3)])
    with pytest.raises(ValidationError, match=r"amount: must be refundcore\.Money"):
        BatchRow(provider="testpay", payment_id="P1", amount="1")  # type: ignore[arg-type]
    client.close()


def test_a_stop_event_finishes_rows_in_flight_and_reports_the_rest_skipped(
    installed: Path, tmp_path: Path, make_client: MakeClient
) -> None:
    journal = f"sqlite:///{tmp_path / 'j.db'}"
    with SandboxRun("testpay", client=make_client(journal=journal)) as run:
        payments = [run.emulator.seed_payment(Money("100", HKD)) for _ in range(6)]
        rows = [
            BatchRow(provider="testpay", payment_id=p.payment_id, amount=Money("10", HKD))
            for p in payments
        ]
        # Rows 1-2 finish at 0.5 s, rows 3-4 start then and finish at 1 s; the stop
        # comes between, so rows 5-6 never start.
        run.server.inject("/v1/refunds", Fault(delay=0.5))
        stop = threading.Event()
        threading.Timer(0.75, stop.set).start()

        report = run.client.refund_many(rows, workers=2, stop=stop)

        assert report.interrupted and not report.succeeded
        statuses = [o.status for o in report.outcomes]
        assert statuses.count(BatchStatus.SUCCEEDED) == 4
        assert statuses.count(BatchStatus.SKIPPED) == 2
        run.server.clear_faults()
        rest = run.client.refund_many(rows)
        assert rest.succeeded and [o.ran_here for o in rest.outcomes] == [False] * 4 + [True] * 2
        assert [
            len(run.emulator.ledger.find_payment(payment_id=p.payment_id).refunds) for p in payments
        ] == [1] * 6  # type: ignore[union-attr]


def test_a_row_invalid_for_one_worker_is_left_to_a_worker_that_can_send_it(
    installed: Path, tmp_path: Path, make_client: MakeClient
) -> None:
    journal = f"sqlite:///{tmp_path / 'j.db'}"
    with SandboxRun("testpay", client=make_client(journal=journal)) as run:
        payments = [run.emulator.seed_payment(Money("100", HKD)) for _ in range(3)]
        everything = read_batch_file(write_csv(tmp_path / "b.csv", rows_for(payments, "10")))
        # Another worker on the same journal, whose configuration refuses line 4.
        elsewhere = RefundClient(journal=journal)
        elsewhere.configure("testpay", run.emulator.client_config(run.server.base_url))
        elsewhere.register_plugin(_Refusing(str(payments[2].payment_id)))
        stopped = threading.Event()
        stopped.set()
        assert run.client.refund_many(everything, stop=stopped).interrupted

        other = elsewhere.refund_many(everything, skip_invalid=True)

        assert [o.status for o in other.outcomes] == [
            BatchStatus.SUCCEEDED,
            BatchStatus.SUCCEEDED,
            BatchStatus.INVALID,
        ]
        held = run.client.journal.batch_entries(everything.batch_id)[2]  # type: ignore[union-attr]
        assert (held.line, held.outcome, held.error_code) == (4, "INVALID", "invalid_elsewhere")
        again = run.client.refund_many(everything)
        assert again.succeeded and [o.ran_here for o in again.outcomes] == [False, False, True]
        assert len([r for r in run.server.requests if r.method == "POST"]) == 3
        elsewhere.close()


class _Refusing:
    """An app plugin whose build stage refuses one payment (a worker configured so)."""

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id

    @hookimpl(wrapper=True)
    def refundcore_build_request(self, operation: Any) -> Any:
        if operation.payment.payment_id == self.payment_id:
            raise ValidationError("not for this worker", field="provider")
        return (yield)


def test_a_batch_file_and_a_report_close_with_with(installed: Path, tmp_path: Path) -> None:
    rows = [{"provider": "acme", "payment_id": "P1", "amount": "1.00", "currency": HKD}]
    file = write_csv(tmp_path / "b.csv", rows * 2)
    with read_batch_file(file) as parsed:
        assert [row.line for row in parsed.rows] == [2, 3]
    client = RefundClient(journal=f"sqlite:///{tmp_path / 'j.db'}")
    with pytest.raises(BatchInvalid) as refused:
        client.refund_many(read_batch_file(file))
    with refused.value.report as report:
        assert report.counts["INVALID"] == 2 == report.total
        report.write(tmp_path / "r.json")
    statuses = [row["status"] for row in json.loads((tmp_path / "r.json").read_text())["rows"]]
    assert statuses == ["INVALID", "INVALID"]
    client.close()


_SPILLING_STORE = """
import sys
from refundcore import Money
from refundcore.batch.rows import BatchRow
from refundcore.batch.store import RowStore
store = RowStore()
for line in range(1, 30_001):
    row = BatchRow(provider="p", payment_id=str(line), amount=Money("1", "HKD"), line=line,
                   refund_id=f"b-{line:024x}-1", reason="x" * 100)
    store.add_row(row, payment_key=f"payment_id:{line}", explicit_id=False)
store.commit()
print("stored", flush=True)
sys.stdin.read()
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc/PID/fd")
def test_a_batchs_scratch_data_leaves_nothing_on_disk_even_when_killed(tmp_path: Path) -> None:
    """The store outgrows its page cache and spills to a file in the temporary
    directory, which SQLite unlinks as soon as it creates it: a process killed with
    its store open leaves nothing behind."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "SQLITE_TMPDIR": str(scratch)}
    child = subprocess.Popen(
        [sys.executable, "-c", _SPILLING_STORE],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stdout.readline() == "stored\n"
    opened = [os.readlink(fd) for fd in Path(f"/proc/{child.pid}/fd").iterdir()]
    spilled = [name for name in opened if name.startswith(str(scratch))]

    assert spilled and all(name.endswith(" (deleted)") for name in spilled), opened
    assert list(scratch.iterdir()) == []
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    child.stdout.close()
    assert list(scratch.iterdir()) == []


# -- processes: killed, interrupted (two sharing PostgreSQL: tests/journal/) ------------


def _batch_child(gateway: Gateway, *argv: str) -> subprocess.Popen[str]:
    """`refundcore batch` in a process of its own (testpay installed as in this one)."""
    env = {**os.environ, "PYTHONPATH": str(gateway.site), "REFUNDCORE_PLUGINS": "testpay"}
    return subprocess.Popen(
        [sys.executable, "-m", "refundcore", "batch", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for_refunds(gateway: Gateway, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while sum(len(p.refunds) for p in gateway.run.emulator.ledger.payments()) < count:
        assert time.monotonic() < deadline, f"fewer than {count} refunds reached the gateway"
        time.sleep(0.02)


def test_a_killed_batch_run_again_refunds_every_row_once(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    payments = gateway.payments(12)
    file = write_csv(gateway.folder / "b.csv", rows_for(payments))
    gateway.run.server.inject("/v1/refunds", Fault(delay=0.3))
    child = _batch_child(gateway, str(file), *gateway.args("--workers", "2", "--lease", "3"))
    _wait_for_refunds(gateway, 5)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    gateway.run.server.clear_faults()
    assert sum(gateway.refunds_per_payment(payments)) < 12, "the first run was not cut short"

    report = gateway.folder / "r.json"
    code, _, _ = cli(
        capsys, "batch", str(file), *gateway.args("--lease", "3", "--report", str(report))
    )

    assert code == 0
    assert gateway.refunds_per_payment(payments) == [1] * 12
    assert gateway.refunds_sent() == 12, "no refund request was sent twice"
    rows = json.loads(report.read_text())["rows"]
    assert [(r["line"], r["status"]) for r in rows] == [
        (line, "SUCCEEDED") for line in range(2, 14)
    ]


def test_ctrl_c_finishes_rows_in_flight_writes_the_report_and_exits_130(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    payments = gateway.payments(10)
    file = write_csv(gateway.folder / "b.csv", rows_for(payments))
    report = gateway.folder / "r.csv"
    gateway.run.server.inject("/v1/refunds", Fault(delay=0.3))
    child = _batch_child(
        gateway, str(file), *gateway.args("--workers", "2", "--report", str(report))
    )
    _wait_for_refunds(gateway, 3)
    child.send_signal(signal.SIGINT)
    out, _ = child.communicate(timeout=20)

    assert child.returncode == 130, out
    assert "interrupted: run the same command again" in out
    rows = read_report(report)
    statuses = [row["status"] for row in rows.values()]
    done = statuses.count("SUCCEEDED")
    assert done == sum(gateway.refunds_per_payment(payments)), "rows in flight were finished"
    assert set(statuses) == {"SUCCEEDED", "SKIPPED"} and 3 <= done < 10

    gateway.run.server.clear_faults()
    code, _, _ = cli(capsys, "batch", str(file), *gateway.args())
    assert code == 0 and gateway.refunds_per_payment(payments) == [1] * 10
