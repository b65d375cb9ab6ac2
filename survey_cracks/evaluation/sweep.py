"""Which threshold the annotations favour: pixel@N px counts at every threshold, summed over a survey.

The run's threshold is the model's calibration on its own validation data; a survey with
annotations is better evidence for that survey's imagery. Each annotated raster keeps the
counts of `evaluate.pixel_pr_curve` (predicted, correct and reached pixels at thresholds
0, 0.01, ... 1) in its report.json; summed over a survey's rasters (counts, not per-raster
F1s, so a large raster weighs as much as its pixels) they give the survey's F1 at every
threshold and the best one (`ThresholdSweep.advice`), which the console, the survey's
report.json and report.html name beside the threshold in use, with the command that applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

F1_TIE = 1e-9  # F1 values this close are a tie: the one nearest the threshold in use wins


@dataclass(frozen=True)
class ThresholdAdvice:
    """The best threshold on the annotations and the one in use, with their pixel@N px F1."""

    best: float
    best_f1: float
    in_use: float
    in_use_f1: float | None
    tolerance_px: int

    @property
    def better(self) -> bool:
        """The best threshold differs from the one in use (by a step of the sweep or more)."""
        return abs(self.best - self.in_use) >= 0.005 and (self.in_use_f1 is None or self.best_f1 > self.in_use_f1 + F1_TIE)

    def command(self, out: str) -> str:
        """The command that recomputes OUT's polygons, centrelines and metrics at the best threshold."""
        return f"survey-cracks evaluate {out} --threshold {self.best:.2f}"

    def as_dict(self, out: str) -> dict[str, Any]:
        return {"metric": f"pixel_{self.tolerance_px}px f1", "in_use": round(self.in_use, 4),
                "in_use_f1": None if self.in_use_f1 is None else round(self.in_use_f1, 4),
                "best": round(self.best, 4), "best_f1": round(self.best_f1, 4), "command": self.command(out) if self.better else None}


@dataclass(frozen=True)
class ThresholdSweep:
    """pixel@``tolerance_px`` counts at each of ``thresholds`` (predict crack where probability >= t)."""

    thresholds: tuple[float, ...]
    predicted: tuple[int, ...]
    correct: tuple[int, ...]
    reached: tuple[int, ...]
    annotated: int
    tolerance_px: int

    def __add__(self, other: ThresholdSweep) -> ThresholdSweep:
        if self.thresholds != other.thresholds or self.tolerance_px != other.tolerance_px:
            raise ValueError("cannot add threshold sweeps of different thresholds or tolerances")
        return ThresholdSweep(self.thresholds, *(tuple(int(a + b) for a, b in zip(x, y)) for x, y in
                                                 ((self.predicted, other.predicted), (self.correct, other.correct),
                                                  (self.reached, other.reached))),
                              self.annotated + other.annotated, self.tolerance_px)

    def f1(self) -> np.ndarray:
        """F1 at each threshold (NaN where nothing is predicted or nothing annotated)."""
        predicted, correct, reached = (np.asarray(v, dtype=np.float64) for v in (self.predicted, self.correct, self.reached))
        with np.errstate(invalid="ignore", divide="ignore"):
            precision = np.where(predicted > 0, correct / predicted, np.nan)
            recall = reached / self.annotated if self.annotated else np.full(len(predicted), np.nan)
            return np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0 * precision)

    def advice(self, in_use: float) -> ThresholdAdvice | None:
        """The threshold of the highest F1 (ties: the one nearest ``in_use``); None without annotated pixels."""
        f1 = self.f1()
        if not self.annotated or not np.isfinite(f1).any():
            return None
        thresholds = np.asarray(self.thresholds)
        top = np.nanmax(f1)
        tied = np.flatnonzero(f1 >= top - F1_TIE)
        best = int(tied[np.argmin(np.abs(thresholds[tied] - in_use))])
        # the sweep's step below the threshold in use: a threshold t predicts every level >= t
        at = int(np.clip(np.searchsorted(thresholds, in_use - 1e-9), 0, len(thresholds) - 1))
        in_use_f1 = float(f1[at]) if np.isfinite(f1[at]) else None
        return ThresholdAdvice(float(thresholds[best]), float(top), in_use, in_use_f1, self.tolerance_px)

    def as_dict(self) -> dict[str, Any]:
        return {"tolerance_px": self.tolerance_px, "thresholds": [round(t, 4) for t in self.thresholds],
                "predicted": list(self.predicted), "correct": list(self.correct), "reached": list(self.reached),
                "annotated": self.annotated}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThresholdSweep:
        return cls(tuple(float(t) for t in data["thresholds"]), tuple(data["predicted"]), tuple(data["correct"]),
                   tuple(data["reached"]), int(data["annotated"]), int(data["tolerance_px"]))


def survey_sweep(sweeps: list[ThresholdSweep | None]) -> ThresholdSweep | None:
    """The sum of the rasters' sweeps (those of one tolerance and thresholds as the first); None without any."""
    present = [s for s in sweeps if s is not None]
    if not present:
        return None
    total = present[0]
    for sweep in present[1:]:
        if sweep.thresholds == total.thresholds and sweep.tolerance_px == total.tolerance_px:
            total = total + sweep
    return total
