"""``refundcore journal``: list, show (with its history), reconcile and resolve the
refunds the journal holds."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ..durations import format_age, parse_duration, parse_since
from ..errors import ValidationError
from ..money import Money
from ..status import JournalState, RefundStatus
from ..table import format_table
from .context import client_for
from .exits import EXIT_OK, EXIT_UNKNOWN, STATUS_EXIT
from .output import emit, result_data, result_text

if TYPE_CHECKING:
    from ..client import RefundClient
    from ..journal import Journal, JournalEntry, JournalEvent, JournalStats

__all__ = ["cmd_journal"]


def cmd_journal(args: argparse.Namespace) -> int:
    client = client_for(args)
    journal = client.journal
    assert journal is not None
    if args.journal_command == "list":
        return _list(args, journal)
    if args.journal_command == "stats":
        _emit_stats(args, journal.stats())
        return EXIT_OK
    if args.journal_command == "show":
        return _show(args, journal)
    if args.journal_command == "resolve":
        return _resolve(args, client, journal)
    return _reconcile(args, client)


def _list(args: argparse.Namespace, journal: Journal) -> int:
    now = datetime.now(timezone.utc)
    entries = journal.entries(
        unsettled=args.unsettled,
        provider=args.provider,
        states=_states(args.status),
        created_before=None
        if args.older_than is None
        else now - parse_duration(args.older_than, field="older-than"),
        created_since=None
        if args.since is None
        else parse_since(args.since, field="since", now=now),
        limit=args.limit,
    )
    rows = [
        [
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            e.provider,
            e.refund_id,
            e.operation,
            "" if e.amount is None else str(e.amount),
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
        else "No journalled refunds"
        + (" left unsettled" if args.unsettled else "")
        + (" match." if _filtered(args) else ".")
    )
    emit(args, [_entry_data(e) for e in entries], human)
    return EXIT_OK


def _find(args: argparse.Namespace, journal: Journal) -> JournalEntry:
    """The refund ``args.refund_id`` names (of ``args.provider``, when given)."""
    matches = [e for e in journal.entries(provider=args.provider) if e.refund_id == args.refund_id]
    if not matches:
        raise ValidationError(f"no journalled refund {args.refund_id!r}", field="refund_id")
    if len(matches) > 1:
        raise ValidationError(
            f"{args.refund_id!r} was used with {', '.join(e.provider for e in matches)}: "
            "give --provider",
            field="provider",
        )
    return matches[0]


def _show(args: argparse.Namespace, journal: Journal) -> int:
    entry = _find(args, journal)
    history = journal.history(entry.provider, entry.refund_id)
    data = _entry_data(entry)
    fields = "\n".join(
        f"{key:<20}{'-' if value is None else value}" for key, value in data.items() if key != "raw"
    )
    human = f"{fields}\n\nhistory ({len(history)} events):\n{_history_text(history)}"
    emit(args, {**data, "history": [event.as_dict() for event in history]}, human)
    return STATUS_EXIT[_shown_status(entry)]


def _shown_status(entry: JournalEntry) -> RefundStatus:
    # NOT_SENT refunded nothing but is not final: it may be sent again.
    if entry.state is JournalState.NOT_SENT or entry.state.status is None:
        return RefundStatus.UNKNOWN
    return entry.state.status


def _history_text(history: list[JournalEvent]) -> str:
    if not history:
        return "  (none: recorded before refundcore kept histories)"
    return "\n".join(
        f"  {event.at.strftime('%Y-%m-%d %H:%M:%S.%f')[:-3]}  #{event.attempt}  "
        f"{event.kind.value:<13} {event.detail}"
        for event in history
    )


def _resolve(args: argparse.Namespace, client: RefundClient, journal: Journal) -> int:
    entry = _find(args, journal)
    decided = client.resolve(
        entry.provider, entry.refund_id, as_=args.decision, reason=args.reason, by=args.by
    )
    data = _entry_data(decided)
    human = f"{decided.refund_id} via {decided.provider}: {decided.state.value}, {decided.message}"
    if decided.state is JournalState.NOT_SENT:
        human += "\n(the same refund id may be sent again: nothing was refunded under it)"
    emit(args, data, human)
    return EXIT_OK


def _reconcile(args: argparse.Namespace, client: RefundClient) -> int:
    results = client.reconcile(args.provider)
    emit(
        args,
        [result_data(r) for r in results],
        "\n".join(result_text(r) for r in results) or "Nothing to reconcile.",
    )
    unsettled = [r for r in results if not r.status.is_final]
    return EXIT_OK if not unsettled else EXIT_UNKNOWN


def _entry_data(entry: JournalEntry) -> dict[str, Any]:
    """An entry as JSON-ready data, without what only the journal's own rules need;
    amounts as wire text, the amount's currency beside it."""
    import attrs

    data: dict[str, Any] = {}
    for key, value in attrs.asdict(entry, recurse=False).items():
        data[key] = value
        if isinstance(value, Money):
            data[key] = value.to_wire()
        elif hasattr(value, "isoformat"):
            data[key] = value.isoformat()
        elif hasattr(value, "value"):
            data[key] = value.value
        if key == "amount":
            data["currency"] = None if value is None else value.currency
    data.pop("fingerprint", None)
    data.pop("owner", None)
    return data


def _states(specs: list[str] | None) -> set[JournalState] | None:
    if not specs:
        return None
    states = set()
    for spec in specs:
        for word in spec.split(","):
            try:
                states.add(JournalState(word.strip().upper()))
            except ValueError:
                known = ", ".join(state.value for state in JournalState)
                raise ValidationError(
                    f"{spec!r}: {word.strip()!r} is not one of {known}", field="status"
                ) from None
    return states


def _filtered(args: argparse.Namespace) -> bool:
    return any(
        value is not None
        for value in (args.provider, args.status, args.older_than, args.since, args.limit)
    )


def _emit_stats(args: argparse.Namespace, stats: JournalStats) -> None:
    now = datetime.now(timezone.utc)
    groups = [g for g in stats.groups if args.provider in (None, g.provider)]
    total = sum(group.count for group in groups)
    data = {
        "total": total,
        "counts": [
            {
                "provider": group.provider,
                "state": group.state.value,
                "count": group.count,
                "oldest": None
                if group.oldest is None
                else {
                    "refund_id": group.oldest.refund_id,
                    "created_at": group.oldest.created_at.isoformat(),
                    "age_seconds": int((now - group.oldest.created_at).total_seconds()),
                },
            }
            for group in groups
        ],
    }
    rows = [
        [
            group.provider,
            group.state.value,
            str(group.count),
            "" if group.oldest is None else group.oldest.refund_id,
            "" if group.oldest is None else format_age(now - group.oldest.created_at),
        ]
        for group in groups
    ]
    human = (
        format_table(rows, ["provider", "state", "refunds", "oldest unsettled", "age"])
        + f"\n{total} refund{'s' if total != 1 else ''}"
        if rows
        else "No journalled refunds."
    )
    emit(args, data, human)
