"""The ``refundcore`` command: :func:`main` parses the command line, runs the command
and turns what went wrong into a message and an exit status.

The commands live by topic: :mod:`.refunds` (refund, query, void, verify-callback),
:mod:`.providers` (providers, config check, new-plugin), :mod:`.journal`,
:mod:`.batch` and :mod:`.sandbox` (demo, sandbox and its control subcommands); the
grammar is :mod:`.parser`'s.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from ..errors import (
    ConfigError,
    PluginError,
    PluginLoadError,
    ProviderNotInstalled,
    RefundError,
    SignatureError,
    TransportError,
    ValidationError,
)
from .exits import EXIT_ERROR, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from .parser import build_parser, check_globals

__all__ = ["main"]

#: Each command's module and function. A run imports only its own command's module:
#: ``refundcore providers`` is what shell completion and health checks call, and the
#: journal, batch and Celery commands' imports would double its start-up.
_COMMANDS: dict[str, tuple[str, str]] = {
    "providers": ("providers", "cmd_providers"),
    "refund": ("refunds", "cmd_refund"),
    "query": ("refunds", "cmd_query"),
    "void": ("refunds", "cmd_void"),
    "verify-callback": ("refunds", "cmd_verify"),
    "demo": ("sandbox", "cmd_demo"),
    "sandbox": ("sandbox", "cmd_sandbox"),
    "config": ("providers", "cmd_config"),
    "new-plugin": ("providers", "cmd_new_plugin"),
    "journal": ("journal", "cmd_journal"),
    "batch": ("batch_celery", "cmd_batch_any"),
    "console": ("console", "cmd_console"),
}


def _command(name: str) -> Callable[[argparse.Namespace], int]:
    module, function = _COMMANDS[name]
    command: Callable[[argparse.Namespace], int] = getattr(
        importlib.import_module(f".{module}", __name__), function
    )
    return command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    check_globals(parser, args)
    try:
        return _command(args.command)(args)
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
