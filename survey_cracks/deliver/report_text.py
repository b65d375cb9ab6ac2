"""The words report.html needs beside its figures: the colour legend, what each metric level means, the best threshold.

Kept apart from the page's layout (report_html) so that the text can be read, tested and
reused (the console names the same threshold) without the plotting, and so a change of
the page's layout does not touch what it says.
"""

from __future__ import annotations

from survey_cracks.deliver.console import survey_totals, threshold_line
from survey_cracks.deliver.outcomes import RasterOutcome

# The colours the page draws with, in the order a reader meets them.
LEGEND: list[tuple[str, str]] = [
    ("linear-gradient(90deg,#000004,#57106e,#bc3754,#f98e09,#fcffa4)",
     "heatmap: crack probability from 0.05 (dark purple) to 1 (pale yellow), inferno colour map; below 0.05 not drawn"),
    ("#00e5ff", "crack outlines at the run's threshold (overview) and false positives: polygons on no annotated crack (gallery)"),
    ("#39ff14", "false negatives: annotated cracks not found (gallery)"),
    ("#d8f0d8", "condition state 1 (good) in the asset table"),
    ("#fbf0c0", "condition state 2 (fair)"),
    ("#f8d0b8", "condition state 3 (poor)"),
    ("#f0a8a8", "condition state 4 (severe)"),
    ("#e4e4e4", "unresolved: no class can be given (no ground scale, or the GSD too coarse for the width limit)"),
]

# One sentence per metric level: what is counted as a hit, so a reader knows which figure answers their question.
METRIC_LEVELS: dict[str, str] = {
    "cell": "Cells of the evaluation grid (evaluate.cell_size_px) with a crack, found or not: the figure for "
            "\"which parts of the surface are cracked\", blind to where exactly in a cell.",
    "object": "Whole cracks: a predicted polygon is correct and an annotated crack found when they overlap by "
              "majority (after growing both by object_tolerance_px): the figure for counting cracks.",
    "pixel": "Crack pixels within N px of an annotated crack pixel (pixel@0px is exact): the figure for the crack's "
             "extent and shape, strict on thin cracks at 0 px.",
    "centreline": "The centrelines' completeness (share of annotated centreline found), correctness (share of predicted "
                  "centreline on a crack) and quality (both together), within N px: the figure for crack length.",
}


def threshold_advice(survey: str, outcomes: list[RasterOutcome], out: str) -> str | None:
    """The threshold the survey's annotations favour, beside the one in use, and the command; None when not annotated."""
    totals = survey_totals(outcomes)
    advice = totals[0].advice() if totals else None
    return None if advice is None else threshold_line(survey, advice, out)
