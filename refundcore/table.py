"""Plain-text tables, as the command line prints them (``refundcore providers``,
``journal list``, ``batch``, ``demo``)."""

from __future__ import annotations

__all__ = ["cut", "format_table"]


def format_table(rows: list[list[str]], header: list[str]) -> str:
    """``rows`` under ``header`` in left-aligned columns, the header underlined."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def cut(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, an ellipsis showing where it was cut."""
    return text if len(text) <= width else text[: width - 1] + "…"
