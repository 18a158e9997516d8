"""The ``refundcore`` command: :func:`main` parses the command line, runs the command
and turns what went wrong into a message and an exit status.

The commands live by topic: :mod:`.refunds` (refund, query, void, verify-callback),
:mod:`.providers` (providers, config check, new-plugin), :mod:`.journal`,
:mod:`.batch` and :mod:`.sandbox` (demo, sandbox and its control subcommands); the
grammar is :mod:`.parser`'s.
"""

from __future__ import annotations

import argparse
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
from .batch_celery import cmd_batch_any
from .console import cmd_console
from .exits import EXIT_ERROR, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE
from .journal import cmd_journal
from .parser import build_parser, check_globals
from .providers import cmd_config, cmd_new_plugin, cmd_providers
from .refunds import cmd_query, cmd_refund, cmd_verify, cmd_void
from .sandbox import cmd_demo, cmd_sandbox

__all__ = ["main"]

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "providers": cmd_providers,
    "refund": cmd_refund,
    "query": cmd_query,
    "void": cmd_void,
    "verify-callback": cmd_verify,
    "demo": cmd_demo,
    "sandbox": cmd_sandbox,
    "config": cmd_config,
    "new-plugin": cmd_new_plugin,
    "journal": cmd_journal,
    "batch": cmd_batch_any,
    "console": cmd_console,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    check_globals(parser, args)
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
