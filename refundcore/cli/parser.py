"""The command line's grammar: the global options, taken before or after the command,
and each command's arguments, with bounds on every number."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .batch_args import BATCH_HELP, add_executor_options
from .exits import BATCH_EXIT_HELP, EXIT_CODES_HELP, EXIT_USAGE

__all__ = ["build_parser", "check_globals"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# The options every command that uses them takes before or after its name, with their
# values when not given. Commands declare which they use (``uses``); the top-level
# parser takes them all and refuses, after parsing, one the command does not use.
_GLOBALS: dict[str, tuple[str, object]] = {
    "config": ("--config", None),
    "journal": ("--journal", None),
    "no_journal": ("--no-journal", False),
    "json": ("--json", False),
}

_GLOBAL_ARGUMENTS: dict[str, dict[str, Any]] = {
    "config": {
        "type": Path,
        "metavar": "FILE",
        "help": "TOML file with [providers.<id>] tables (default: $REFUNDCORE_CONFIG, "
        "else ./refundcore.toml)",
    },
    "journal": {
        "metavar": "URL",
        "help": "refund journal: a file path, sqlite:////path.db or postgresql://… "
        "(default: $REFUNDCORE_JOURNAL, else a SQLite file in your data directory)",
    },
    "no_journal": {"action": "store_true", "help": "do not journal (no exactly-once guard)"},
    "json": {"action": "store_true", "help": "machine-readable output"},
}


def _global_parent(name: str, *, top: bool) -> _Parser:
    """A parent parser for one global option. Below the top level its default is
    SUPPRESS, so an option given before the command is not reset by the command's
    own parser."""
    flag, unset = _GLOBALS[name]
    parent = _Parser(add_help=False)
    parent.add_argument(
        flag, default=unset if top else argparse.SUPPRESS, **_GLOBAL_ARGUMENTS[name]
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; :func:`check_globals` checks what it parsed."""
    parser = _Parser(
        prog="refundcore",
        description="Issue refunds through payment gateways (one plugin per gateway). "
        "--config, --journal, --no-journal and --json go before or after the command.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_parent(name, top=True) for name in _GLOBALS],
    )
    parser.add_argument("--version", action="version", version=f"refundcore {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _command(
        commands,
        "providers",
        "List installed providers, their capabilities and load errors.",
        ("config", "json"),
    )
    _add_refund(_command(commands, "refund", "Refund (part of) a payment.", _SENDING))
    _add_query(_command(commands, "query", "Ask the gateway where a refund stands.", _SENDING))
    _add_void(
        _command(
            commands,
            "void",
            "Reverse a whole unsettled payment, where the gateway offers it.",
            _SENDING,
        )
    )
    _add_verify(
        _command(commands, "verify-callback", "Verify a callback a gateway delivered.", _SENDING)
    )
    _add_journal(commands)
    _add_config(commands)
    demo = _command(
        commands,
        "demo",
        "Refund through every installed provider against its emulator.",
        ("json",),
    )
    demo.add_argument("--provider", action="append", help="only these providers (repeatable)")
    _add_sandbox(commands)
    _add_batch(commands)
    _add_console(commands)
    new_plugin = _command(commands, "new-plugin", "Scaffold a provider plugin package.", ("json",))
    new_plugin.add_argument("name", help="the provider id, e.g. acme")
    new_plugin.add_argument("--dir", type=Path, help="target folder (default ./refundcore-NAME)")
    return parser


# What add_subparsers returns; argparse names the type privately.
_Commands = argparse._SubParsersAction

# The global options of the commands that send (or would send) a refund.
_SENDING = ("config", "journal", "no_journal", "json")
# Those of the journal's commands: not --no-journal, as the journal is what they read.
_JOURNALLED = ("config", "journal", "json")
_DECISIONS = ("succeeded", "failed", "not-sent")
_RESOLVE_HELP = (
    "record an operator's decision about a refund the gateway's word cannot settle "
    "(not-sent: it never reached the gateway, and may be sent again)"
)


def _command(
    group: _Commands[_Parser],
    name: str,
    help_text: str,
    uses: tuple[str, ...],
    *,
    description: str | None = None,
    epilog: str | None = EXIT_CODES_HELP,
) -> argparse.ArgumentParser:
    """A command (or action) of ``group`` taking the global options it ``uses``."""
    sub = group.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_parent(option, top=False) for option in uses],
    )
    sub.set_defaults(uses=frozenset(uses))
    return sub


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


def _add_query(query: argparse.ArgumentParser) -> None:
    query.add_argument("provider")
    query.add_argument("--refund-id", required=True)
    query.add_argument("--provider-refund-id", help="the gateway's id of the refund, if known")
    _with_payment(query, required=False)


def _add_void(void: argparse.ArgumentParser) -> None:
    void.add_argument("provider")
    _with_payment(void, required=False)
    void.add_argument("--refund-id", help="idempotency key; a journalled void needs no payment")
    void.add_argument("--amount", help="the payment's amount, where the gateway wants it")
    void.add_argument("--currency")
    void.add_argument("--reason")
    void.add_argument("--notify-url")


def _add_verify(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("provider")
    verify.add_argument("--path", required=True, help="path and query exactly as received")
    verify.add_argument("--method", default="POST")
    verify.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="repeatable"
    )
    verify.add_argument("--body-file", required=True, type=Path, help="raw body ('-' = stdin)")


def _add_journal(commands: _Commands[_Parser]) -> None:
    journal = _command(
        commands, "journal", "Inspect and settle the refund journal.", _JOURNALLED, epilog=None
    )
    actions = journal.add_subparsers(
        dest="journal_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    listing = _command(
        actions, "list", "journalled refunds, oldest first", _JOURNALLED, epilog=None
    )
    listing.add_argument(
        "--unsettled", action="store_true", help="only SUBMITTING, PENDING, UNKNOWN"
    )
    listing.add_argument("--provider")
    _add_journal_filters(listing)
    stats = _command(
        actions,
        "stats",
        "refunds per provider and state, and the oldest unsettled",
        _JOURNALLED,
        epilog=None,
    )
    stats.add_argument("--provider")
    show = _command(
        actions, "show", "one journalled refund and its whole history", _JOURNALLED, epilog=None
    )
    show.add_argument("refund_id")
    show.add_argument("--provider", help="needed when several providers used the id")
    settle = _command(
        actions,
        "reconcile",
        "settle every unsettled refund (beside live senders too)",
        _JOURNALLED,
        epilog=None,
    )
    settle.add_argument("--provider")
    resolve = _command(actions, "resolve", _RESOLVE_HELP, _JOURNALLED, epilog=None)
    resolve.add_argument("refund_id")
    resolve.add_argument("--as", dest="decision", required=True, choices=_DECISIONS)
    resolve.add_argument("--reason", required=True, help="why: the evidence you relied on")
    resolve.add_argument("--by", required=True, metavar="NAME", help="who decides")
    resolve.add_argument("--provider", help="needed when several providers used the id")


def _add_journal_filters(listing: argparse.ArgumentParser) -> None:
    listing.add_argument(
        "--status",
        action="append",
        metavar="STATE[,STATE]",
        help="only these states: SUBMITTING, PENDING, SUCCEEDED, FAILED, UNKNOWN, NOT_SENT "
        "(repeatable)",
    )
    listing.add_argument(
        "--older-than", metavar="SPAN", help="only refunds recorded longer ago (90m, 1h, 2d)"
    )
    listing.add_argument(
        "--since",
        metavar="WHEN",
        help="only refunds recorded since a date (2026-03-01), a UTC time (2026-03-01T14:30) "
        "or a span ago (2h)",
    )
    listing.add_argument("--limit", type=_positive, metavar="N", help="at most N refunds")


def _add_console(commands: _Commands[_Parser]) -> None:
    console = _command(
        commands,
        "console",
        "Serve the operator console (needs refundcore[console]).",
        ("config", "journal"),
        description="Serve the operator console in a browser: what is stuck, why, and "
        "query or settle it. Prints the address with a fresh access token.",
        epilog=None,
    )
    console.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback)")
    console.add_argument(
        "--port",
        type=_count(65535, minimum=0),
        default=8765,
        metavar="N",
        help="default 8765; 0: any free port",
    )
    console.add_argument("--read-only", action="store_true", help="show, never act")
    console.add_argument(
        "--operator",
        metavar="NAME",
        help="who acts, as recorded with every decision (default: your login name)",
    )


def _add_config(commands: _Commands[_Parser]) -> None:
    config = _command(
        commands, "config", "Check the configuration file.", ("config", "json"), epilog=None
    )
    actions = config.add_subparsers(
        dest="config_command", metavar="ACTION", parser_class=_Parser, required=True
    )
    _command(
        actions,
        "check",
        "Validate every provider's table: unknown keys, missing or bad values "
        "(exit 0 when all are usable, 2 otherwise).",
        ("config", "json"),
        epilog=None,
    )


SANDBOX_HELP = """\
Serve every installed provider's gateway emulator on loopback until interrupted.

Standard output gets only the config for it (a refundcore.toml: TOML, with the
emulators' URLs and the payments you can refund as comments), or nothing with
--config-out FILE; everything else goes to standard error.

With --port PORT the control API listens on PORT and each installed provider on
PORT+1, PORT+2, … in alphabetical order of id. With --state-dir DIR the ports, the
test keys (made once, files 0600) and each emulator's ledger (saved after every
request) are kept in DIR: restarted, the sandbox has the same config and payments and
knows the refunds made before.

`refundcore sandbox scenario` sets what the next refunds get, and
`refundcore sandbox settle` settles PENDING ones, through the control API.
"""


def _add_sandbox(commands: _Commands[_Parser]) -> None:
    sandbox = _command(
        commands,
        "sandbox",
        "Serve every installed provider's emulator; its config goes to stdout.",
        ("json",),
        description=SANDBOX_HELP,
        epilog=None,
    )
    sandbox.add_argument("--provider", action="append", help="only these providers (repeatable)")
    sandbox.add_argument(
        "--seed",
        type=_count(_MAX_SEED, minimum=0),
        default=3,
        metavar="N",
        help="payments without refunds each provider has at start (seeded as needed; default 3)",
    )
    sandbox.add_argument(
        "--duration",
        type=_seconds(_MAX_DURATION, zero=True),
        help="stop after this many seconds",
    )
    sandbox.add_argument(
        "--port",
        type=_port,
        help="the control API's port; providers on the ports after it (default: the ports "
        "--state-dir recorded, else free ones)",
    )
    sandbox.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="keep ports, keys and ledgers here"
    )
    sandbox.add_argument(
        "--notify-url",
        metavar="URL",
        help="your app's callback endpoint (refundcore.wsgi.callback_app): callbacks of "
        "gateways that take the URL from the payment or the merchant settings go to "
        "URL/<provider>",
    )
    sandbox.add_argument(
        "--config-out", type=Path, metavar="FILE", help="write the config to FILE, not stdout"
    )
    actions = sandbox.add_subparsers(dest="sandbox_command", metavar="ACTION", parser_class=_Parser)
    _add_sandbox_scenario(actions)
    _add_sandbox_settle(actions)
    _add_sandbox_status(actions)


def _where(sub: argparse.ArgumentParser) -> None:
    """How a control subcommand finds the running sandbox."""
    found = sub.add_mutually_exclusive_group()
    found.add_argument("--url", help="the sandbox's control URL, http://127.0.0.1:PORT")
    found.add_argument(
        "--state-dir", type=Path, metavar="DIR", help="the running sandbox's --state-dir"
    )


def _add_sandbox_scenario(actions: _Commands[_Parser]) -> None:
    # Not refundcore.sandbox itself: the command line starts without the sandbox.
    from ..sandbox.scenarios import MAX_DELAY, SCENARIOS, TIMEOUT_DELAY

    scenario = _command(
        actions,
        "scenario",
        "Set what the next refunds get.",
        ("json",),
        description="Set what the next refunds of a running sandbox get:\n"
        + "".join(f"  {name:<8} {what}\n" for name, what in SCENARIOS.items()),
        epilog=None,
    )
    scenario.add_argument("scenario", choices=list(SCENARIOS))
    scenario.add_argument("--provider", help="only this provider (default: every one served)")
    scenario.add_argument(
        "--count",
        type=_count(_MAX_SCENARIO_COUNT, minimum=0),
        default=1,
        metavar="N",
        help="how many refunds get it (default 1; 0: every one until `scenario succeed`)",
    )
    scenario.add_argument(
        "--delay",
        type=_seconds(MAX_DELAY),
        default=TIMEOUT_DELAY,
        metavar="SECONDS",
        help=f"timeout: how long replies are held (default {TIMEOUT_DELAY:g}, past the "
        "read_timeout in the sandbox's config)",
    )
    _where(scenario)


def _add_sandbox_settle(actions: _Commands[_Parser]) -> None:
    settle = _command(
        actions,
        "settle",
        "Settle PENDING refunds: SUCCEEDED, or FAILED with --fail; their callbacks go out.",
        ("json",),
        epilog=None,
    )
    settle.add_argument("--provider", help="only this provider's")
    settle.add_argument("--refund-id", help="only this refund")
    settle.add_argument("--fail", action="store_true", help="settle as FAILED")
    _where(settle)


def _add_sandbox_status(actions: _Commands[_Parser]) -> None:
    status = _command(
        actions,
        "status",
        "Show what a running sandbox serves (--wait: until it answers).",
        ("json",),
        epilog=None,
    )
    status.add_argument(
        "--wait",
        type=_seconds(_MAX_WAIT, zero=True),
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the sandbox to answer (default: ask once)",
    )
    _where(status)


def _add_batch(commands: _Commands[_Parser]) -> None:
    batch = _command(
        commands,
        "batch",
        "Refund every row of a CSV or JSON Lines file.",
        _SENDING,
        description=BATCH_HELP,
        epilog=BATCH_EXIT_HELP,
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
    add_executor_options(batch)


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


def check_globals(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a global option the command does not use, and --journal with --no-journal."""
    uses: frozenset[str] = getattr(args, "uses", frozenset())
    for name, (flag, unset) in _GLOBALS.items():
        if getattr(args, name, unset) != unset and name not in uses:
            parser.error(f"{flag} does not apply to `refundcore {_command_name(args)}`")
    if getattr(args, "journal", None) is not None and getattr(args, "no_journal", False):
        parser.error("--journal and --no-journal exclude each other")


def _command_name(args: argparse.Namespace) -> str:
    words = [args.command]
    for sub in ("journal_command", "config_command", "sandbox_command"):
        if getattr(args, sub, None):
            words.append(getattr(args, sub))
    return " ".join(words)


# Bounds of the numeric options: past them a value is a typo, not a wish.
_MAX_WORKERS = 256
_MAX_CHUNK = 500
_MAX_LEASE = 86_400.0
_MAX_PROGRESS_INTERVAL = 3_600.0
_MAX_DURATION = 7 * 86_400.0
_MAX_SEED = 1000
_MAX_SCENARIO_COUNT = 1000
_MAX_WAIT = 3_600.0


def _positive(text: str) -> int:
    """A whole number of 1 or more: a bound above would mean nothing for a limit."""
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number")
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


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


def _seconds(maximum: float, *, zero: bool = False) -> Callable[[str], float]:
    """A number of seconds up to ``maximum``; above 0, or 0 too with ``zero``."""
    least = "at least 0" if zero else "more than 0"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds") from None
        in_range = 0 <= value <= maximum and (zero or value > 0)
        if not (math.isfinite(value) and in_range):
            raise argparse.ArgumentTypeError(
                f"must be {least} and at most {maximum:g} seconds, got {text[:40]}"
            )
        return value

    return parse


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a port number") from None
    # The providers take the ports after it.
    if not 1 <= value <= 65000:
        raise argparse.ArgumentTypeError(f"must be from 1 to 65000, got {value}")
    return value


def _version() -> str:
    from .. import __version__

    return __version__
