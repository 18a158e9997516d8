"""The commands to develop against: ``demo``, ``sandbox`` (the gateways' emulators
served until interrupted) and its control subcommands ``scenario``, ``settle`` and
``status``, which talk to a running sandbox.

The sandbox is imported only when one of them runs: every other command starts
without it."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, NoReturn

from ..errors import ValidationError
from ..table import format_table
from .exits import EXIT_ERROR, EXIT_OK
from .output import emit

if TYPE_CHECKING:
    from ..models import ProviderInfo
    from ..sandbox.service import SandboxService

__all__ = ["cmd_demo", "cmd_sandbox"]


def cmd_demo(args: argparse.Namespace) -> int:
    from ..sandbox.demo import run_demo

    return run_demo(args.provider, as_json=args.json)


def cmd_sandbox(args: argparse.Namespace) -> int:
    if args.sandbox_command == "status":
        return _status(args)
    if args.sandbox_command == "scenario":
        return _scenario(args)
    if args.sandbox_command == "settle":
        return _settle(args)
    from ..models import check_url
    from ..sandbox.service import SandboxService

    if args.notify_url is not None:
        check_url(args.notify_url, "notify-url")
        if not args.notify_url.startswith("http://"):
            raise ValidationError("the sandbox delivers callbacks over http://", field="notify-url")
    chosen, installed = _providers(args.provider)
    if not chosen:
        print("refundcore: no provider plugin is installed", file=sys.stderr)
        return EXIT_ERROR
    service = SandboxService(
        chosen,
        installed=installed,
        port=args.port,
        state_dir=args.state_dir,
        notify_url=args.notify_url,
        seed=args.seed,
    ).start()
    # A sandbox in the background of a script ignores Ctrl-C's SIGINT: `kill` stops it.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        _announce(args, service)
        threading.Event().wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        service.stop()
    return EXIT_OK


def _providers(only: list[str] | None) -> tuple[list[ProviderInfo], list[str]]:
    """The installed providers to serve (``only`` these, if given), and every installed
    provider's id; a ``ValidationError`` for one asked for but not installed."""
    from ..client import RefundClient

    with RefundClient(journal=None) as client:
        infos = client.providers()
    installed = [info.id for info in infos]
    unknown = sorted(set(only or ()) - set(installed))
    if unknown:
        raise ValidationError(
            f"not installed: {', '.join(unknown)} (installed: {', '.join(installed) or 'none'})",
            field="provider",
        )
    return [info for info in infos if not only or info.id in only], installed


def _interrupt(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def _announce(args: argparse.Namespace, service: SandboxService) -> None:
    """The config to stdout (or --config-out), the rest to stderr."""
    from ..sandbox.service import write_private

    config = service.config_toml()
    if args.config_out is not None:
        write_private(args.config_out, config)
    if args.json:
        print(json.dumps(service.report(), indent=2, ensure_ascii=False), flush=True)
    elif args.config_out is None:
        print(config, end="", flush=True)
    report = service.report()
    rows = [
        [
            provider,
            entry["base_url"],
            str(len(entry["payments"])),
            entry["notify_url"] or "-",
        ]
        for provider, entry in report["providers"].items()
    ]
    notes = [
        format_table(rows, ["provider", "emulator", "payments", "payments' notify URL"]),
        f"control API: {service.control_url}/_sandbox "
        f"(refundcore sandbox scenario pending|decline|timeout|5xx|succeed "
        f"--url {service.control_url})",
    ]
    if report["state_dir"] is not None:
        notes.append(f"state (ports, keys, ledgers) kept in {report['state_dir']}")
    if args.config_out is not None:
        notes.append(f"config written to {args.config_out}")
    notes.append("Serving; press Ctrl-C to stop.")
    print("\n".join(notes), file=sys.stderr, flush=True)


def _status(args: argparse.Namespace) -> int:
    from ..sandbox.control import status

    report = status(args.url, args.state_dir, wait=args.wait)
    rows = [
        [provider, entry["base_url"], str(len(entry["payments"])), entry["scenario"]]
        for provider, entry in report["providers"].items()
    ]
    human = format_table(rows, ["provider", "emulator", "payments", "scenario"])
    emit(args, report, f"control API: {report['control_url']}/_sandbox\n{human}")
    return EXIT_OK


def _scenario(args: argparse.Namespace) -> int:
    from ..sandbox.control import control_url, send

    payload: dict[str, Any] = {
        "scenario": args.scenario,
        "provider": args.provider,
        "count": args.count,
        "delay": args.delay,
    }
    answer = send(control_url(args.url, args.state_dir), "scenario", payload)
    emit(args, answer, "\n".join(f"{provider}: {what}" for provider, what in answer.items()))
    return EXIT_OK


def _settle(args: argparse.Namespace) -> int:
    from ..sandbox.control import control_url, send

    payload = {
        "provider": args.provider,
        "refund_id": args.refund_id,
        "status": "FAILED" if args.fail else "SUCCEEDED",
    }
    answer = send(control_url(args.url, args.state_dir), "settle", payload)
    human = (
        "\n".join(
            f"{item['provider']}: {item['refund_id']} settled {item['status']}" for item in answer
        )
        or "No PENDING refund to settle."
    )
    emit(args, answer, human)
    return EXIT_OK
