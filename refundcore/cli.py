"""The ``refundcore`` command."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .errors import (
    ConfigError,
    PluginError,
    PluginLoadError,
    ProviderNotInstalled,
    RefundError,
    SignatureError,
    TransportError,
    ValidationError,
)
from .status import RefundStatus
from .table import format_table

if TYPE_CHECKING:
    from .batch import BatchInvalid, BatchReport
    from .client import RefundClient
    from .models import RefundNotification, RefundResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_UNKNOWN = 4
EXIT_ERROR = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\
exit status:
  0  succeeded (or the command did what it was asked)
  1  the gateway declined (FAILED), or a callback failed verification
  2  usage, configuration or input error: nothing was sent
  3  PENDING: the gateway accepted the refund and will settle it later
  4  UNKNOWN: the request may have reached the gateway but the outcome is not
     known; run `refundcore query` before trying again
  5  nothing could be sent (connection refused, DNS), a plugin is missing or broken
"""

BATCH_HELP = """\
Refund every row of a CSV (with a header) or JSON Lines file, concurrently.

Columns: provider, payment_id, merchant_reference, transaction_id, amount,
currency, refund_id, reason, original_amount (provider, amount, currency and one
payment identifier are required). The whole file is checked first: every bad row
is listed by line and nothing is sent, unless --skip-invalid. A row without
refund_id gets one derived from its own content.

Running the same file again never refunds a row twice: rows already done are
reported from the journal, the rest are sent or reconciled. Processes running the
same file against one journal (PostgreSQL, for several machines) split its rows.
"""

BATCH_EXIT_HELP = """\
exit status: the most serious row decides, in this order
  130  interrupted (Ctrl-C): rows in flight were finished and recorded; run the
       same command again to finish the batch (nothing is sent twice)
  4    some row is UNKNOWN: run `refundcore journal reconcile`, then the batch again
  5    some row could not be sent (ERROR: gateway unreachable, journal unusable);
       run the batch again to send it; also: a plugin is missing or broken
  1    some row FAILED (the gateway declined it)
  2    invalid rows: nothing was sent (or, with --skip-invalid, they were skipped);
       also usage and configuration errors
  3    some row is PENDING: the gateway will settle it later
  0    every row SUCCEEDED
"""

_STATUS_EXIT = {
    RefundStatus.SUCCEEDED: EXIT_OK,
    RefundStatus.FAILED: EXIT_FAILED,
    RefundStatus.PENDING: EXIT_PENDING,
    RefundStatus.UNKNOWN: EXIT_UNKNOWN,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="refundcore",
        description="Issue refunds through payment gateways (one plugin per gateway).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"refundcore {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _command(commands, "providers", "List installed providers, their capabilities and load errors.")
    _add_refund(_command(commands, "refund", "Refund (part of) a payment."))
    _add_query(_command(commands, "query", "Ask the gateway where a refund stands."))
    _add_void(
        _command(
            commands, "void", "Reverse a whole unsettled payment, where the gateway offers it."
        )
    )
    _add_verify(_command(commands, "verify-callback", "Verify a callback a gateway delivered."))
    _add_journal(commands)
    demo = _command(
        commands, "demo", "Refund through every installed provider against its emulator."
    )
    demo.add_argument("--provider", action="append", help="only these providers (repeatable)")
    _add_sandbox(
        _command(
            commands, "sandbox", "Serve every installed provider's emulator until interrupted."
        )
    )
    _add_batch(commands)
    new_plugin = _command(commands, "new-plugin", "Scaffold a provider plugin package.")
    new_plugin.add_argument("name", help="the provider id, e.g. acme")
    new_plugin.add_argument("--dir", type=Path, help="target folder (default ./refundcore-NAME)")
    return parser


# What add_subparsers returns; argparse names the type privately.
_Commands = argparse._SubParsersAction


def _command(commands: _Commands[_Parser], name: str, help_text: str) -> argparse.ArgumentParser:
    sub = commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub.add_argument("--json", action="store_true", help="machine-readable output")
    return sub


def _with_config(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--config",
        type=Path,
        help="TOML file with [providers.<id>] tables (default: $REFUNDCORE_CONFIG, "
        "else ./refundcore.toml)",
    )


def _with_journal(sub: argparse.ArgumentParser) -> None:
    group = sub.add_mutually_exclusive_group()
    group.add_argument(
        "--journal",
        metavar="URL",
        help="refund journal: sqlite:////path.db or postgresql://… (default: "
        "$REFUNDCORE_JOURNAL, else a SQLite file in your data directory)",
    )
    group.add_argument(
        "--no-journal", action="store_true", help="do not journal (no exactly-once guard)"
    )


def _with_payment(sub: argparse.ArgumentParser, required: bool) -> None:
    sub.add_argument("--payment-id", help="the gateway's id of the payment")
    sub.add_argument("--merchant-reference", help="your reference of the payment")
    sub.add_argument("--transaction-id", help="the gateway's id of the sale transaction")
    sub.set_defaults(payment_required=required)


def _add_refund(refund: argparse.ArgumentParser) -> None:
    refund.add_argument("provider")
    refund.add_argument("--amount", required=True, help="decimal amount, e.g. 10.00")
    refund.add_argument("--currency", required=True, help="ISO 4217 code, e.g. HKD")
    _with_payment(refund, required=True)
    refund.add_argument("--refund-id", help="idempotency key (generated when omitted)")
    refund.add_argument("--reason")
    refund.add_argument("--notify-url", help="where the gateway should send its callback")
    refund.add_argument(
        "--original-amount", help="the payment's total: refunds of it never add up to more"
    )
    _with_config(refund)
    _with_journal(refund)


def _add_query(query: argparse.ArgumentParser) -> None:
    query.add_argument("provider")
    query.add_argument("--refund-id", required=True)
    query.add_argument("--provider-refund-id", help="the gateway's id of the refund, if known")
    _with_payment(query, required=False)
    _with_config(query)
    _with_journal(query)


def _add_void(void: argparse.ArgumentParser) -> None:
    void.add_argument("provider")
    _with_payment(void, required=True)
    void.add_argument("--refund-id", help="idempotency key (generated when omitted)")
    void.add_argument("--amount", help="the payment's amount, where the gateway wants it")
    void.add_argument("--currency")
    void.add_argument("--reason")
    void.add_argument("--notify-url")
    _with_config(void)
    _with_journal(void)


def _add_verify(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("provider")
    verify.add_argument("--path", required=True, help="path and query exactly as received")
    verify.add_argument("--method", default="POST")
    verify.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable"
    )
    verify.add_argument("--body-file", required=True, type=Path, help="raw body ('-' = stdin)")
    _with_config(verify)
    _with_journal(verify)


def _add_journal(commands: _Commands[_Parser]) -> None:
    journal = commands.add_parser(
        "journal",
        help="Inspect and settle the refund journal.",
        description="Inspect and settle the refund journal.",
    )
    journal_commands = journal.add_subparsers(
        dest="journal_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    listing = journal_commands.add_parser("list", help="journalled refunds, oldest first")
    listing.add_argument(
        "--unsettled", action="store_true", help="only SUBMITTING, PENDING, UNKNOWN"
    )
    listing.add_argument("--provider")
    show = journal_commands.add_parser("show", help="one journalled refund")
    show.add_argument("refund_id")
    show.add_argument("--provider", help="needed when several providers used the id")
    settle = journal_commands.add_parser(
        "reconcile", help="query every unsettled refund and settle what can be settled"
    )
    settle.add_argument("--provider")
    for sub in (listing, show, settle):
        sub.add_argument("--json", action="store_true", help="machine-readable output")
        _with_config(sub)
        sub.add_argument("--journal", metavar="URL", help="default: as for `refund`")


def _add_sandbox(sandbox: argparse.ArgumentParser) -> None:
    sandbox.add_argument("--provider", action="append", help="only these providers (repeatable)")
    sandbox.add_argument(
        "--seed", type=_count(1000, minimum=0), default=3, help="payments to seed per provider"
    )
    sandbox.add_argument(
        "--duration", type=_seconds(_MAX_DURATION), help="stop after this many seconds"
    )


def _add_batch(commands: _Commands[_Parser]) -> None:
    batch = commands.add_parser(
        "batch",
        help="Refund every row of a CSV or JSON Lines file.",
        description=BATCH_HELP,
        epilog=BATCH_EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch.add_argument("file", type=Path, help="CSV with a header, or JSON Lines (.jsonl)")
    batch.add_argument(
        "--workers",
        type=_count(_MAX_WORKERS),
        default=8,
        metavar="N",
        help="refunds in flight at once (default 8)",
    )
    batch.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="[PROVIDER=]N/s",
        help="at most N requests a second per provider (N/m: a minute); "
        "PROVIDER=N/s for one provider; repeatable",
    )
    batch.add_argument(
        "--skip-invalid", action="store_true", help="send the valid rows, report the others"
    )
    batch.add_argument(
        "--report", type=Path, metavar="FILE.csv|FILE.json", help="write each row's outcome"
    )
    batch.add_argument(
        "--chunk",
        type=_count(_MAX_CHUNK),
        metavar="N",
        help="rows claimed from the journal at a time (default: twice --workers, at least 8)",
    )
    _add_batch_timing(batch)
    batch.add_argument("--json", action="store_true", help="print the summary as JSON")
    _with_config(batch)
    batch.add_argument(
        "--journal",
        metavar="URL",
        help="refund journal, shared by every process running the batch: "
        "postgresql://… for several machines (default: as for `refund`)",
    )
    batch.add_argument(
        "--no-journal", action="store_true", help="refused: a batch needs the journal"
    )


def _add_batch_timing(batch: argparse.ArgumentParser) -> None:
    batch.add_argument(
        "--lease",
        type=_seconds(_MAX_LEASE),
        default=120.0,
        metavar="SECONDS",
        help="how long the rows and refunds of a process that died stay reserved before "
        "another run takes them over; longer than a refund can take (default 120)",
    )
    batch.add_argument(
        "--progress-interval",
        type=_seconds(_MAX_PROGRESS_INTERVAL),
        default=5.0,
        metavar="SECONDS",
        help="when stderr is not a terminal: a progress line this often (default 5)",
    )


# Bounds of the numeric options: past them a value is a typo, not a wish.
_MAX_WORKERS = 256
_MAX_CHUNK = 500
_MAX_LEASE = 86_400.0
_MAX_PROGRESS_INTERVAL = 3_600.0
_MAX_DURATION = 7 * 86_400.0


def _count(maximum: int, minimum: int = 1) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be {minimum} to {maximum}, got {value}")
        return value

    return parse


def _seconds(maximum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
        if not (math.isfinite(value) and 0 < value <= maximum):
            raise argparse.ArgumentTypeError(
                f"must be more than 0 and at most {maximum:g} seconds, got {text[:40]}"
            )
        return value

    return parse


def _version() -> str:
    from . import __version__

    return __version__


# -- output -----------------------------------------------------------------------------


def _emit(args: argparse.Namespace, data: Any, human: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    else:
        print(human)


def _result_data(result: RefundResult) -> dict[str, Any]:
    return {
        "provider": result.provider,
        "operation": result.operation,
        "refund_id": result.refund_id,
        "status": result.status.value,
        "amount": None
        if result.amount is None
        else {"value": result.amount.to_wire(), "currency": result.amount.currency},
        "provider_refund_id": result.provider_refund_id,
        "message": result.message,
        "error_code": result.error_code,
        "http_status": result.http_status,
        "raw": dict(result.raw),
    }


def _result_text(result: RefundResult) -> str:
    lines = [f"{result.status.value}: {result.operation} {result.refund_id} via {result.provider}"]
    for label, value in (
        ("amount", result.amount),
        ("provider refund id", result.provider_refund_id),
        ("error code", result.error_code),
        ("message", result.message),
        ("http status", result.http_status),
    ):
        if value is not None:
            lines.append(f"  {label:<19}{value}")
    return "\n".join(lines)


def _note_data(note: RefundNotification) -> dict[str, Any]:
    return {
        "provider": note.provider,
        "event": note.event,
        "status": note.status.value,
        "refund_id": note.refund_id,
        "provider_refund_id": note.provider_refund_id,
        "amount": None
        if note.amount is None
        else {"value": note.amount.to_wire(), "currency": note.amount.currency},
        "raw": dict(note.raw),
    }


# -- commands -----------------------------------------------------------------------------


def _client(args: argparse.Namespace, **options: Any) -> RefundClient:
    from .client import RefundClient

    path = args.config
    if path is None and os.environ.get("REFUNDCORE_CONFIG"):
        path = Path(os.environ["REFUNDCORE_CONFIG"])
    if path is None and Path("refundcore.toml").is_file():
        path = Path("refundcore.toml")
    from .journal import DEFAULT_JOURNAL

    journal: str | None = None
    if not getattr(args, "no_journal", False):
        journal = getattr(args, "journal", None) or DEFAULT_JOURNAL
    if path is not None:
        return RefundClient.from_file(path, journal=journal, **options)
    return RefundClient(journal=journal, **options)


def _payment(args: argparse.Namespace) -> Any:
    from .models import PaymentRef

    ids = (args.payment_id, args.merchant_reference, args.transaction_id)
    if not args.payment_required and all(value is None for value in ids):
        return None
    return PaymentRef(*ids)


def _cmd_providers(args: argparse.Namespace) -> int:
    # The plugin registry alone: listing providers needs no client (no journal, no
    # transport), and `refundcore providers` starts the faster for not importing one.
    from .plugins import PluginRegistry

    registry = PluginRegistry()
    infos = registry.load_all()
    failures = registry.failures
    data = {
        "providers": [info.as_dict() for info in infos],
        "load_errors": [
            {"name": f.name, "distribution": f.distribution, "version": f.version, "error": f.error}
            for f in failures
        ],
    }
    rows = []
    for info in infos:
        caps = info.capabilities
        flags = [
            name
            for name, on in (
                ("partial", caps.partial_refunds),
                ("query", caps.query),
                ("void", caps.void),
                ("callbacks", caps.callbacks),
            )
            if on
        ]
        once = "once" if caps.refunds_per_payment == 1 else "many"
        rows.append(
            [
                info.id,
                info.name,
                f"{info.distribution or '-'} {info.version or ''}".strip(),
                f"{', '.join(flags)}; refunds: {once}",
            ]
        )
    human = (
        format_table(rows, ["id", "name", "distribution", "capabilities"])
        if rows
        else ("No provider plugin is installed. Install one, e.g.: pip install refundcore-wonder")
    )
    for failure in failures:
        origin = f" ({failure.distribution} {failure.version})" if failure.distribution else ""
        human += f"\nfailed to load {failure.name}{origin}: {failure.error}"
    _emit(args, data, human)
    return EXIT_OK if not failures else EXIT_ERROR


def _finish(args: argparse.Namespace, result: RefundResult) -> int:
    _emit(args, _result_data(result), _result_text(result))
    return _STATUS_EXIT[result.status]


def _cmd_refund(args: argparse.Namespace) -> int:
    from .money import Money

    client = _client(args)
    result = client.refund(
        args.provider,
        payment=_payment(args),
        amount=Money(args.amount, args.currency),
        refund_id=args.refund_id,
        reason=args.reason,
        notify_url=args.notify_url,
        original_amount=None
        if args.original_amount is None
        else Money(args.original_amount, args.currency),
    )
    return _finish(args, result)


def _cmd_query(args: argparse.Namespace) -> int:
    client = _client(args)
    result = client.query(
        args.provider,
        refund_id=args.refund_id,
        payment=_payment(args),
        provider_refund_id=args.provider_refund_id,
    )
    return _finish(args, result)


def _cmd_void(args: argparse.Namespace) -> int:
    from .money import Money

    if (args.amount is None) != (args.currency is None):
        raise ValidationError("give --amount and --currency together", field="amount")
    client = _client(args)
    result = client.void(
        args.provider,
        payment=_payment(args),
        refund_id=args.refund_id,
        amount=Money(args.amount, args.currency) if args.amount is not None else None,
        reason=args.reason,
        notify_url=args.notify_url,
    )
    return _finish(args, result)


def _cmd_verify(args: argparse.Namespace) -> int:
    headers = []
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise ValidationError(f"{header!r} is not 'Name: value'", field="header")
        headers.append((name.strip(), value.strip()))
    from .wsgi import MAX_BODY

    # Bounded: a callback is never larger than the WSGI app accepts (/dev/zero is not
    # read to the end).
    try:
        if str(args.body_file) == "-":
            body = sys.stdin.buffer.read(MAX_BODY + 1)
        else:
            with args.body_file.open("rb") as handle:
                body = handle.read(MAX_BODY + 1)
    except OSError as exc:
        raise ValidationError(
            f"cannot read {str(args.body_file)!r}: {exc.strerror or exc}", field="body-file"
        ) from None
    if len(body) > MAX_BODY:
        raise ValidationError(
            f"more than {MAX_BODY} bytes: larger than any callback is accepted", field="body-file"
        )
    from .models import Headers

    note = _client(args).verify_callback(
        args.provider, method=args.method, path=args.path, headers=Headers(headers), body=body
    )
    _emit(
        args,
        _note_data(note),
        f"verified: {note.event} {note.status.value} "
        f"refund {note.refund_id or note.provider_refund_id or '?'} via {note.provider}",
    )
    return EXIT_OK


def _entry_data(entry: Any) -> dict[str, Any]:
    import attrs

    data = attrs.asdict(entry)
    for key, value in data.items():
        if hasattr(value, "isoformat"):
            data[key] = value.isoformat()
        elif hasattr(value, "value"):
            data[key] = value.value
    data.pop("fingerprint", None)
    data.pop("owner", None)
    return data


def _cmd_journal(args: argparse.Namespace) -> int:
    client = _client(args)
    journal = client.journal
    assert journal is not None
    if args.journal_command == "list":
        entries = journal.entries(unsettled=args.unsettled, provider=args.provider)
        rows = [
            [
                e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                e.provider,
                e.refund_id,
                e.operation,
                f"{e.amount or ''} {e.currency or ''}".strip(),
                e.state.value,
                e.provider_refund_id or "",
            ]
            for e in entries
        ]
        human = (
            format_table(
                rows,
                ["created (UTC)", "provider", "refund id", "op", "amount", "state", "provider id"],
            )
            if rows
            else "No journalled refunds" + (" left unsettled." if args.unsettled else ".")
        )
        _emit(args, [_entry_data(e) for e in entries], human)
        return EXIT_OK
    if args.journal_command == "show":
        matches = [
            e for e in journal.entries(provider=args.provider) if e.refund_id == args.refund_id
        ]
        if not matches:
            raise ValidationError(f"no journalled refund {args.refund_id!r}", field="refund_id")
        if len(matches) > 1:
            raise ValidationError(
                f"{args.refund_id!r} was used with {', '.join(e.provider for e in matches)}: "
                "give --provider",
                field="provider",
            )
        entry = matches[0]
        data = _entry_data(entry)
        human = "\n".join(f"{key:<20}{value}" for key, value in data.items() if key != "raw")
        _emit(args, data, human)
        return _STATUS_EXIT[entry.state.status or RefundStatus.UNKNOWN]
    results = client.reconcile(args.provider)
    _emit(
        args,
        [_result_data(r) for r in results],
        "\n".join(_result_text(r) for r in results) or "Nothing to reconcile.",
    )
    unsettled = [r for r in results if not r.status.is_final]
    return EXIT_OK if not unsettled else EXIT_UNKNOWN


_PER = {"s": 1.0, "m": 60.0, "min": 60.0}


def _rates(specs: list[str]) -> dict[str, float] | None:
    """``--rate`` values as refund_many takes them: ``"*"`` for every provider."""
    rates: dict[str, float] = {}
    for spec in specs:
        provider, sep, value = spec.rpartition("=")
        number, _, unit = value.partition("/")
        try:
            per_second = float(number) / _PER[unit or "s"]
        except (ValueError, KeyError):
            per_second = 0.0
        if not sep:
            provider = "*"
        if not provider or not 0 < per_second < float("inf"):
            raise ValidationError(
                f"{spec!r}: give N/s or N/m (e.g. 20/s), optionally PROVIDER=N/s", field="rate"
            )
        rates[provider] = per_second
    return rates or None


def _batch_exit(report: BatchReport) -> int:
    from .batch import BatchStatus

    worst = report.worst
    return {
        None: EXIT_OK,
        BatchStatus.SUCCEEDED: EXIT_OK,
        BatchStatus.PENDING: EXIT_PENDING,
        BatchStatus.INVALID: EXIT_USAGE,
        BatchStatus.FAILED: EXIT_FAILED,
        BatchStatus.ERROR: EXIT_ERROR,
        BatchStatus.UNKNOWN: EXIT_UNKNOWN,
        BatchStatus.SKIPPED: EXIT_INTERRUPTED,
    }[worst]


# Rows that did not succeed, listed under the summary; the report has them all.
_LISTED = 20


def _batch_text(report: BatchReport, args: argparse.Namespace) -> str:
    from .batch import BatchStatus

    rows = [[status, str(count)] for status, count in report.counts.items() if count]
    lines = [
        f"batch {report.batch_id[:12]}: {len(report.outcomes)} rows in {report.elapsed:.1f} s",
        format_table(rows, ["status", "rows"]) if rows else "no rows",
    ]
    trouble = [o for o in report.outcomes if o.status is not BatchStatus.SUCCEEDED]
    if trouble:
        lines.append("")
        lines.append(
            format_table(
                [
                    [
                        str(o.line),
                        o.status.value,
                        o.refund_id or "",
                        o.error_code or "",
                        (o.message or "")[:100],
                    ]
                    for o in trouble[:_LISTED]
                ],
                ["line", "status", "refund id", "code", "message"],
            )
        )
        if len(trouble) > _LISTED:
            lines.append(
                f"… and {len(trouble) - _LISTED} more"
                + ("" if args.report else " (--report FILE lists every row)")
            )
    counts = report.counts
    if report.interrupted:
        lines.append("interrupted: run the same command again to finish (nothing is sent twice)")
    if counts["UNKNOWN"]:
        lines.append(
            "UNKNOWN rows may have been refunded: run `refundcore journal reconcile`, "
            "then this batch again"
        )
    if counts["ERROR"]:
        lines.append("ERROR rows were not sent: run this batch again to send them")
    if args.report:
        lines.append(f"report: {args.report}")
    return "\n".join(lines)


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batch import (
        BatchInterrupted,
        BatchInvalid,
        BatchStatus,
        ProgressPrinter,
        read_batch_file,
        report_format,
    )

    if args.no_journal:
        print(
            "refundcore: batch needs a journal: it is what makes running a batch again "
            "safe (drop --no-journal; --journal URL chooses one)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    rates = _rates(args.rate)
    if args.report is not None:
        report_format(args.report)  # refuse a bad name before anything is sent
    parsed = read_batch_file(args.file)
    client = _client(args, pool_size=max(10, args.workers), lease_seconds=args.lease)
    try:
        report = client.refund_many(
            parsed,
            workers=args.workers,
            rate=rates,
            on_progress=ProgressPrinter(sys.stderr, interval=args.progress_interval),
            skip_invalid=args.skip_invalid,
            chunk_size=args.chunk,
        )
        status = _batch_exit(report)
    except BatchInvalid as refused:
        return _batch_refused(refused, args)
    except BatchInterrupted as stopped:
        report, status = stopped.report, EXIT_INTERRUPTED
    for outcome in report.outcomes:
        if outcome.status is BatchStatus.INVALID and outcome.error_code == "invalid":
            print(f"skipped line {outcome.line}: {outcome.message}", file=sys.stderr)
    if args.report is not None:
        report.write(args.report)
    _emit(
        args,
        {
            **report.summary(),
            "file": str(args.file),
            "sent": True,
            "report": None if args.report is None else str(args.report),
            "exit_status": status,
        },
        _batch_text(report, args),
    )
    return status


def _batch_refused(refused: BatchInvalid, args: argparse.Namespace) -> int:
    """Say which rows are invalid (nothing was sent) and write the report."""
    for error in refused.errors:
        print(error, file=sys.stderr)
    if args.report is not None:
        refused.report.write(args.report)
    lines = len({error.line for error in refused.errors})
    print(
        f"refundcore: {lines} invalid row{'s' if lines != 1 else ''} in {args.file}: "
        "nothing was sent; fix them, or pass --skip-invalid to send the valid rows",
        file=sys.stderr,
    )
    if args.json:
        summary = {
            **refused.report.summary(),
            "file": str(args.file),
            "sent": False,
            "errors": [error.as_dict() for error in refused.errors],
            "report": None if args.report is None else str(args.report),
            "exit_status": EXIT_USAGE,
        }
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    return EXIT_USAGE


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    from .scaffold import create_plugin

    target = create_plugin(args.name, args.dir)
    _emit(
        args,
        {"path": str(target), "provider": args.name},
        f"created {target}/ — next:\n  pip install -e {target}\n  pytest {target}/tests\n"
        f"  refundcore providers",
    )
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from .sandbox.demo import run_demo

    return run_demo(args.provider, as_json=args.json)


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from .sandbox.demo import serve_sandboxes

    return serve_sandboxes(args.provider, seed=args.seed, duration=args.duration, as_json=args.json)


_COMMANDS = {
    "providers": _cmd_providers,
    "refund": _cmd_refund,
    "query": _cmd_query,
    "void": _cmd_void,
    "verify-callback": _cmd_verify,
    "demo": _cmd_demo,
    "sandbox": _cmd_sandbox,
    "new-plugin": _cmd_new_plugin,
    "journal": _cmd_journal,
    "batch": _cmd_batch,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except (ValidationError, ConfigError) as exc:
        print(f"refundcore: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SignatureError as exc:
        print(f"refundcore: callback rejected: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (TransportError, ProviderNotInstalled, PluginLoadError, PluginError) as exc:
        print(f"refundcore: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except RefundError as exc:
        print(f"refundcore: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
