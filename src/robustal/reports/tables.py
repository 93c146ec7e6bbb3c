"""Markdown tables, the one shape every command and report prints its numbers in."""

from __future__ import annotations

from collections.abc import Sequence


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], floatfmt: str = ".3f") -> str:
    """A Markdown table; floats formatted with ``floatfmt``, None as ``-``."""

    def cell(v: object) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in body)])


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 run``, ``2 runs``: a number with its noun in the right number (``plural``: when not ``noun + "s"``)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


__all__ = ["count", "format_table"]
