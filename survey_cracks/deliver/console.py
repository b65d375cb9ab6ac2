"""What the console says a run found: one line per raster, then the survey totals.

A person at the terminal (or reading run.log the next morning) should not need to open
report.json to learn whether a raster had cracks: each finished raster gets its crack
count, total length, widest crack and, when annotated, its F1 figures; the run ends with
each survey's totals and, where annotations exist, the threshold they favour with the
exact command that applies it. Numbers go through `units`, as in report.html.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from survey_cracks.deliver.outcomes import RasterOutcome
from survey_cracks.deliver.units import format_length, format_width
from survey_cracks.evaluation.evaluate import RasterMetrics, combine
from survey_cracks.evaluation.sweep import ThresholdAdvice


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 raster``, ``0 rasters``, ``2 rasters``: a count with its noun in agreement (``plural`` where it is not
    the noun and an s). For "k of n", count the total: ``f"{k} of {counted(n, 'raster')}"``."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def f1_figures(metrics: RasterMetrics) -> str:
    """``F1 pixel@2px 0.71, object 0.65, centreline quality 0.52``: the figures a reader compares runs by."""
    parts = []
    pixel = metrics.pixel.get(2) or next(iter(metrics.pixel.values()), None)
    if pixel is not None and pixel.f1 is not None:
        tolerance = 2 if 2 in metrics.pixel else next(iter(metrics.pixel))
        parts.append(f"pixel@{tolerance}px {pixel.f1:.2f}")
    if metrics.object.f1 is not None:
        parts.append(f"object {metrics.object.f1:.2f}")
    if metrics.cell.f1 is not None:
        parts.append(f"cell {metrics.cell.f1:.2f}")
    return "F1 " + ", ".join(parts) if parts else "F1 -"


def _found(cracks: int, length: float | None, max_width: float | None, unit: str | None) -> str:
    text = counted(cracks, "crack")
    if length is not None:
        text += f", {format_length(length, unit)} in total"
    if max_width is not None:
        text += f", widest {format_width(max_width, unit)}"
    return text


def raster_found(outcome: RasterOutcome) -> str:
    """``bridge/ortho: 12 cracks, 14.37 m in total, widest 3.1 mm; F1 pixel@2px 0.71, object 0.65``."""
    counts = outcome.counts
    line = f"{outcome.survey}/{outcome.raster}: {_found(counts.polygons or 0, counts.crack_length, counts.max_width, counts.unit)}"
    if outcome.measured is not None:
        line += f"; {f1_figures(outcome.measured)} (on {counts.annotation or 'the annotation'})"
    return line


@dataclass
class SurveyTotals:
    """One survey's rasters added up (lengths per unit: a survey may mix metres and pixel scans)."""

    survey: str
    rasters: int = 0
    photos: int = 0  # in collections
    collections: int = 0
    annotated: int = 0  # rasters and photos scored against an annotation
    cracks: int = 0
    length: dict[str, float] = field(default_factory=dict)
    max_width: dict[str, float] = field(default_factory=dict)
    measured: list[RasterMetrics] = field(default_factory=list)
    threshold: float | None = None

    def add(self, outcome: RasterOutcome) -> None:
        c = outcome.counts
        if c.photos is not None:  # a collection
            self.collections, self.photos = self.collections + 1, self.photos + c.photos
            self.annotated += c.photos_annotated or 0
        else:
            self.rasters += 1
            self.annotated += outcome.measured is not None
        self.cracks += c.polygons or 0
        if c.unit and c.crack_length is not None:
            self.length[c.unit] = self.length.get(c.unit, 0.0) + c.crack_length
        if c.unit and c.max_width is not None:
            self.max_width[c.unit] = max(self.max_width.get(c.unit, 0.0), c.max_width)
        if outcome.measured is not None:
            self.measured.append(outcome.measured)
        if self.threshold is None and c.threshold is not None:
            self.threshold = c.threshold

    def advice(self) -> ThresholdAdvice | None:
        """The threshold the survey's annotations favour (None: no annotation, or no threshold sweep recorded)."""
        if not self.measured or self.threshold is None:
            return None
        sweep = combine(self.measured).sweep
        return sweep.advice(self.threshold) if sweep is not None else None

    def what(self) -> list[str]:
        return rasters_and_photos(self.rasters, self.photos, self.collections)

    def lines(self, out: str) -> list[str]:
        found = [counted(self.cracks, "crack")]
        for unit in dict.fromkeys([*self.length, *self.max_width]):
            if unit in self.length:
                found.append(f"{format_length(self.length[unit], unit)} in total")
            if unit in self.max_width:
                found.append(f"widest {format_width(self.max_width[unit], unit)}")
        line = f"{self.survey}: {', '.join(self.what())}, {', '.join(found)}"
        if self.measured:
            line += f"; {f1_figures(combine(self.measured))} over {self.annotated} annotated"
        lines = [line]
        advice = self.advice()
        if advice is not None:
            lines.append(threshold_line(self.survey, advice, out))
        return lines


def rasters_and_photos(rasters: int, photos: int, collections: int) -> list[str]:
    """``["2 rasters", "6 photos in 1 collection"]``: what a count of outcomes stands for (none: ``["0 rasters"]``)."""
    parts = [counted(rasters, "raster")] if rasters or not collections else []
    if collections:
        parts.append(f"{counted(photos, 'photo')} in {counted(collections, 'collection')}")
    return parts


def threshold_line(survey: str, advice: ThresholdAdvice, out: str) -> str:
    """The best threshold on the annotations beside the one in use, and how to apply it."""
    in_use = f"{advice.in_use:.2f}" + (f" (F1 {advice.in_use_f1:.2f})" if advice.in_use_f1 is not None else "")
    line = (f"{survey}: best pixel@{advice.tolerance_px}px F1 on the annotations {advice.best_f1:.2f} at threshold "
            f"{advice.best:.2f}; in use {in_use}")
    return line + (f"; to apply it: {advice.command(out)}" if advice.better else ": already the best")


def survey_totals(outcomes: list[RasterOutcome]) -> list[SurveyTotals]:
    """The finished rasters of ``outcomes`` added up per survey, in order of first appearance."""
    totals: dict[str, SurveyTotals] = {}
    for outcome in outcomes:
        if outcome.status == "ok" and outcome.survey:
            totals.setdefault(outcome.survey, SurveyTotals(outcome.survey)).add(outcome)
    return list(totals.values())


def totals_lines(outcomes: list[RasterOutcome], out: str) -> list[str]:
    """The console's closing lines: each survey's totals and, where annotated, its best threshold."""
    totals = survey_totals(outcomes)
    lines = [line for survey in totals for line in survey.lines(out)]
    advised = [survey for survey in totals if (advice := survey.advice()) is not None and advice.better]
    if len(totals) > 1 and advised:
        lines.append(f"(evaluate re-thresholds every survey in {out}: to apply one survey's best threshold alone, "
                     "run that survey into an OUT of its own)")
    return lines


def survey_threshold(outcomes: list[RasterOutcome]) -> dict | None:
    """The survey report.json's ``threshold``: best on the annotations, in use, the command (None: not annotated).

    The command names the output folder ``OUT`` (the folder holding the survey's): report.json lives
    inside it, so it stays true when OUT is moved or renamed, and equals a fresh run's into another
    folder (the console and report.html name the folder itself).
    """
    totals = survey_totals(outcomes)
    advice = totals[0].advice() if totals else None
    return advice.as_dict("OUT") if advice is not None else None
