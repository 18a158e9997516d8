"""The commands about provider plugins and their configuration: ``providers``,
``config check`` and ``new-plugin``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, RefundError
from ..table import format_table
from .context import config_file, searched
from .exits import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from .output import emit

if TYPE_CHECKING:
    from ..models import ProviderInfo
    from ..plugins import LoadFailure

__all__ = ["cmd_config", "cmd_new_plugin", "cmd_providers"]


def cmd_providers(args: argparse.Namespace) -> int:
    from ..config import read_toml

    # The plugin registry alone: listing providers needs no client (no journal, no
    # transport), and `refundcore providers` starts the faster for not importing one.
    from ..plugins import PluginRegistry

    path = config_file(args)
    configured = set() if path is None else set(read_toml(path))
    registry = PluginRegistry()
    infos = registry.load_all()
    failures = registry.failures
    data = {
        "config_file": None if path is None else str(path),
        "providers": [{**info.as_dict(), "configured": info.id in configured} for info in infos],
        "load_errors": [
            {"name": f.name, "distribution": f.distribution, "version": f.version, "error": f.error}
            for f in failures
        ],
    }
    emit(args, data, _providers_text(infos, configured, failures, path))
    return EXIT_OK if not failures else EXIT_ERROR


def _providers_text(
    infos: Sequence[ProviderInfo],
    configured: set[str],
    failures: Sequence[LoadFailure],
    path: Path | None,
) -> str:
    rows = [_provider_row(info, info.id in configured) for info in infos]
    if rows:
        human = format_table(rows, ["id", "name", "distribution", "capabilities", "configured"])
        human += "\n" + (f"config: {path}" if path is not None else searched())
    elif failures:
        human = f"No provider plugin could be loaded ({len(failures)} failed):"
    else:
        human = (
            "No provider plugin is installed. They are not on PyPI yet: in a clone of the "
            "refundcore repository, `make setup` installs every bundled one, or "
            "pip install -e plugins/<provider> one of them."
        )
    for failure in failures:
        origin = f" ({failure.distribution} {failure.version})" if failure.distribution else ""
        human += f"\nfailed to load {failure.name}{origin}: {failure.error}"
    return human


def _provider_row(info: ProviderInfo, configured: bool) -> list[str]:
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
    return [
        info.id,
        info.name,
        f"{info.distribution or '-'} {info.version or ''}".strip(),
        f"{', '.join(flags)}; refunds: {once}",
        "yes" if configured else "no",
    ]


def cmd_config(args: argparse.Namespace) -> int:
    """``config check``: every provider's table, each problem with its table and key."""
    from ..config import read_toml

    path = config_file(args)
    if path is None:
        if args.json:
            print(json.dumps({"file": None, "ok": False, "problem": searched()}, indent=2))
        print(f"refundcore: {searched()}", file=sys.stderr)
        return EXIT_USAGE
    tables = read_toml(path)
    problems, unconfigured = _config_problems(path, tables)
    data = {
        "file": str(path.resolve()),
        "ok": not problems,
        "providers": {
            provider: {"ok": provider not in problems, "problem": problems.get(provider)}
            for provider in tables
        },
        "unconfigured": unconfigured,
    }
    emit(args, data, _config_text(path, tables, problems, unconfigured))
    return EXIT_USAGE if problems else EXIT_OK


def _config_problems(path: Path, tables: Mapping[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Each provider table's problem, and the installed providers without a table."""
    from ..client import RefundClient

    problems: dict[str, str] = {}
    with RefundClient.from_file(path, journal=None) as client:
        for provider in tables:
            try:
                client.config_for(provider)
            except ConfigError as exc:
                problems[provider] = f"{exc.field}: {exc.problem}" if exc.field else exc.problem
            except RefundError as exc:  # not installed, or its plugin is broken
                problems[provider] = str(exc)
        unconfigured = sorted({info.id for info in client.providers()} - set(tables))
    return problems, unconfigured


def _config_text(
    path: Path, tables: Mapping[str, Any], problems: dict[str, str], unconfigured: list[str]
) -> str:
    lines = [f"config: {path.resolve()}"]
    lines += [f"  [providers.{provider}] {problems.get(provider, 'ok')}" for provider in tables]
    if not tables:
        lines.append("  no [providers.<id>] table")
    if unconfigured:
        lines.append(f"installed but not configured: {', '.join(unconfigured)}")
    lines.append(
        f"{len(problems)} of {len(tables)} provider table(s) have problems"
        if problems
        else "every provider table is usable"
    )
    return "\n".join(lines)


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from ..scaffold import create_plugin

    target = create_plugin(args.name, args.dir)
    emit(
        args,
        {"path": str(target), "provider": args.name},
        f"created {target}/ — next:\n  pip install -e {target}\n  pytest {target}/tests\n"
        f"  refundcore providers",
    )
    return EXIT_OK
