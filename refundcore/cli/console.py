"""``refundcore console``: the operator console served on its own (loopback by default).

Jinja2 (``refundcore[console]``) is imported only when the command runs."""

from __future__ import annotations

import argparse

from ..errors import ConfigError, ValidationError
from .context import client_for

__all__ = ["cmd_console"]


def cmd_console(args: argparse.Namespace) -> int:
    try:
        from ..web.serve import serve_console
    except ImportError as exc:
        if exc.name != "jinja2":
            raise
        raise ConfigError(
            "the console needs Jinja2: pip install 'refundcore[console]'", field="console"
        ) from None
    import getpass

    operator = args.operator
    if operator is None:
        try:
            operator = getpass.getuser()
        except (KeyError, OSError):
            operator = ""
    if not operator.strip():
        raise ValidationError("give a name", field="operator")
    client = client_for(args)
    journal = client.journal
    assert journal is not None
    return serve_console(
        journal,
        client,
        host=args.host,
        port=args.port,
        read_only=args.read_only,
        operator=operator.strip(),
    )
