"""What the global options come to: the config file (and where it was searched for),
the journal, and the client made from them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..client import RefundClient

__all__ = ["CONFIG_ENV", "CONFIG_FILE", "client_for", "config_file", "searched"]

CONFIG_ENV = "REFUNDCORE_CONFIG"
CONFIG_FILE = "refundcore.toml"


def config_file(args: argparse.Namespace) -> Path | None:
    """--config, else $REFUNDCORE_CONFIG, else ./refundcore.toml if there is one."""
    if args.config is not None:
        return Path(args.config)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    default = Path(CONFIG_FILE)
    return default if default.is_file() else None


def searched() -> str:
    """Where a config file was looked for, when none was found."""
    return (
        f"no config file was found (searched: --config: not given; ${CONFIG_ENV}: not set; "
        f"{Path(CONFIG_FILE).resolve()}: no such file)"
    )


def client_for(
    args: argparse.Namespace, *, provider: str | None = None, **options: Any
) -> RefundClient:
    """A client for ``args``. With no config file at all, a ``provider`` that the command
    needs configured is refused now, saying where the file was looked for."""
    from ..client import RefundClient

    path = config_file(args)
    if path is None and provider is not None:
        with RefundClient(journal=None) as plain:
            plain.provider(provider)  # not installed or broken: that is the news
        raise ConfigError(f"no configuration for this provider: {searched()}", provider=provider)
    from ..journal import DEFAULT_JOURNAL

    journal: str | None = None
    if not getattr(args, "no_journal", False):
        journal = getattr(args, "journal", None) or DEFAULT_JOURNAL
    if path is not None:
        return RefundClient.from_file(path, journal=journal, **options)
    return RefundClient(journal=journal, **options)
