"""Markdown tables from rows of values, for reports and the documentation site.

One renderer, so that a figure reads the same wherever it is printed: a missing value
(``None``) is an em dash rather than ``None`` or an empty cell that Markdown would
collapse, a bool is yes/no, a float is written as Python (and JSON) write it, so a
figure keeps the digits it was recorded with, and numeric columns are right-aligned so
their digits line up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from numbers import Real

MISSING = "—"
_RULES = {"l": ":---", "r": "---:", "c": ":---:"}


def format_cell(value: object) -> str:
    """One cell's text: None as an em dash, bools as yes/no, anything else as ``str`` gives it; ``|`` escaped."""
    if value is None:
        text = MISSING
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    else:
        text = str(value)
    return " ".join(text.split("\n")).replace("|", "\\|")


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str | None = None) -> str:
    """A GitHub/Python-Markdown pipe table of ``rows`` under ``headers``.

    ``align`` is one letter per column, ``l``, ``r`` or ``c``. Without it a column whose
    values are all numbers (missing ones aside) is right-aligned and any other left-aligned.
    Every row must have one value per header: a short row would shift its figures under
    the wrong heading, so it is refused rather than padded.
    """
    rows = [list(row) for row in rows]
    for number, row in enumerate(rows, 1):
        if len(row) != len(headers):
            raise ValueError(f"row {number} has {len(row)} values for {len(headers)} columns: {row!r}")
    if align is None:
        align = "".join(
            "r" if any(_is_number(v) for v in column) and all(v is None or _is_number(v) for v in column) else "l"
            for column in zip(*rows, strict=True)) if rows else "l" * len(headers)
    if len(align) != len(headers) or set(align) - set(_RULES):
        raise ValueError(f"align {align!r}: one of l, r, c per column ({len(headers)} columns)")
    lines = ["| " + " | ".join(format_cell(h) for h in headers) + " |",
             "|" + "|".join(_RULES[a] for a in align) + "|"]
    lines += ["| " + " | ".join(format_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


__all__ = ["MISSING", "format_cell", "markdown_table"]
