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


def comparison_model_name(name: str) -> str:
    """How a model of a `bench/mask_retrain.py` result is named in print: the current one is "before"."""
    return "before" if name == "current" else name


def model_comparison_tables(comparison: dict) -> list[tuple[list[str], list[list[object]]]]:
    """`bench/mask_retrain.py`'s result as tables: each test set under every model, pixel, by map, then patch level.

    ``comparison["models"]`` holds ``current`` first, then one or more candidates by name.
    The model card and the documentation both print it; one function keeps them the same.
    The per-map rows of the new source are many (a few tiles each), so they get one compact
    table of F1@2, a column per model, rather than a row per model.
    """
    models = comparison["models"]
    labels = {name: comparison_model_name(name) if name == "current" else f"**{name}**" for name in models}
    current = models["current"]
    maps = [name for name in current["rows"] if " map " in name]

    def cells(row: dict) -> list[object]:
        p2, p5, line = row["pixel@2px"], row["pixel@5px"], row["centreline@2px"]
        return [p2["precision"], p2["recall"], p2["f1"], p5["f1"], line["quality"]]

    pixel = [[name, model["rows"][name]["images"], labels[key], *cells(model["rows"][name])]
             for name in current["rows"] if name not in maps for key, model in models.items() if name in model["rows"]]
    tables = [(["test set", "images", "model", "P@2", "R@2", "F1@2", "F1@5", "centreline quality"], pixel)]
    if maps:
        by_map = [[name.split(" map ", 1)[1], current["rows"][name]["images"],
                   *(model["rows"].get(name, {}).get("pixel@2px", {}).get("f1") for model in models.values())]
                  for name in maps]
        tables.append((["map (test tiles)", "tiles", *(f"F1@2 {labels[k]}" for k in models)], by_map))
    if all(model.get("patch") for model in models.values()):
        patch = [[name, r["patches"], labels[key], r["precision"], r["recall"], r["f1"], r["ap"]]
                 for name in current["patch"] for key, model in models.items()
                 if name in model["patch"] for r in [model["patch"][name]]]
        tables.append((["test set", "patches", "model", "precision", "recall", "F1", "AP"], patch))
    return tables


__all__ = ["MISSING", "comparison_model_name", "format_cell", "markdown_table", "model_comparison_tables"]
