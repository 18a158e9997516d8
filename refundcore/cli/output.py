"""What a command prints: JSON with --json, else text for people; a refund's result in
either form."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models import RefundResult

__all__ = ["emit", "result_data", "result_text"]


def emit(args: argparse.Namespace, data: Any, human: str) -> None:
    """Print ``data`` as JSON with --json, else ``human``."""
    if args.json:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    else:
        print(human)


def result_data(result: RefundResult) -> dict[str, Any]:
    """A result as JSON-ready data (its ``raw`` has no secrets: the client masked them)."""
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


def result_text(result: RefundResult) -> str:
    """A result for people: its status line, then every field it has."""
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
