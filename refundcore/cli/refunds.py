"""The commands that talk to a gateway about one refund: ``refund``, ``query``,
``void``, and ``verify-callback`` for what a gateway sent."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ValidationError
from .context import client_for
from .exits import EXIT_OK, STATUS_EXIT
from .output import emit, result_data, result_text

if TYPE_CHECKING:
    from ..models import RefundNotification, RefundResult

__all__ = ["cmd_query", "cmd_refund", "cmd_verify", "cmd_void"]


def _payment(args: argparse.Namespace) -> Any:
    """The payment the identifiers given name (none given: ``None``, where optional)."""
    from ..models import PaymentRef

    ids = (args.payment_id, args.merchant_reference, args.transaction_id)
    if not args.payment_required and all(value is None for value in ids):
        return None
    return PaymentRef(*ids)


def _finish(args: argparse.Namespace, result: RefundResult) -> int:
    """Print ``result``; its status is the exit status."""
    emit(args, result_data(result), result_text(result))
    return STATUS_EXIT[result.status]


def cmd_refund(args: argparse.Namespace) -> int:
    from ..money import Money

    # The input is checked before the config, as it was when the config was read lazily.
    payment, amount = _payment(args), Money(args.amount, args.currency)
    original = None if args.original_amount is None else Money(args.original_amount, args.currency)
    client = client_for(args, provider=args.provider)
    result = client.refund(
        args.provider,
        payment=payment,
        amount=amount,
        refund_id=args.refund_id,
        reason=args.reason,
        notify_url=args.notify_url,
        original_amount=original,
    )
    return _finish(args, result)


def cmd_query(args: argparse.Namespace) -> int:
    client = client_for(args, provider=args.provider)
    result = client.query(
        args.provider,
        refund_id=args.refund_id,
        payment=_payment(args),
        provider_refund_id=args.provider_refund_id,
    )
    return _finish(args, result)


def cmd_void(args: argparse.Namespace) -> int:
    from ..money import Money

    if (args.amount is None) != (args.currency is None):
        raise ValidationError("give --amount and --currency together", field="amount")
    payment = _payment(args)
    amount = Money(args.amount, args.currency) if args.amount is not None else None
    client = client_for(args, provider=args.provider)
    result = client.void(
        args.provider,
        payment=payment,
        refund_id=args.refund_id,
        amount=amount,
        reason=args.reason,
        notify_url=args.notify_url,
    )
    return _finish(args, result)


def cmd_verify(args: argparse.Namespace) -> int:
    from ..models import Headers

    headers = _headers(args.header)
    body = _callback_body(args.body_file)
    note = client_for(args, provider=args.provider).verify_callback(
        args.provider, method=args.method, path=args.path, headers=Headers(headers), body=body
    )
    said = (
        f"{note.verdict.value}: {note.event} {note.status.value} "
        f"refund {note.refund_id or note.provider_refund_id or '?'} via {note.provider}"
    )
    emit(args, _note_data(note), said + _verdict_note(note))
    return EXIT_OK


#: What the text output adds to a callback's verdict (the JSON gives it as ``verdict``).
_VERDICT_NOTES = {
    "verified": "",
    "duplicate": " (the journal already had it)",
    "misdirected": " (not applied: its gateway refund id is not the journalled refund's)",
    "unconfirmed": " (not applied: only unsigned data ties it to the refund)",
    "unmatched": " (not applied: the journal holds no such refund)",
    "unjournalled": " (no journal: checked against nothing)",
}


def _verdict_note(note: RefundNotification) -> str:
    if note.contradicts is not None:
        return f" (not applied: the journal keeps {note.contradicts.value})"
    return _VERDICT_NOTES.get(note.verdict.value, "")


def _headers(given: list[str]) -> list[tuple[str, str]]:
    headers = []
    for header in given:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise ValidationError(f"{header!r} is not 'Name: value'", field="header")
        headers.append((name.strip(), value.strip()))
    return headers


def _callback_body(path: Path) -> bytes:
    """The body in ``path`` (``-``: stdin). Bounded: a callback is never larger than the
    WSGI app accepts (/dev/zero is not read to the end)."""
    from ..wsgi import MAX_BODY

    try:
        if str(path) == "-":
            body = sys.stdin.buffer.read(MAX_BODY + 1)
        else:
            with path.open("rb") as handle:
                body = handle.read(MAX_BODY + 1)
    except OSError as exc:
        raise ValidationError(
            f"cannot read {str(path)!r}: {exc.strerror or exc}", field="body-file"
        ) from None
    if len(body) > MAX_BODY:
        raise ValidationError(
            f"more than {MAX_BODY} bytes: larger than any callback is accepted", field="body-file"
        )
    return body


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
        "duplicate": note.duplicate,
        "contradicts": None if note.contradicts is None else note.contradicts.value,
        "verdict": note.verdict.value,
    }
