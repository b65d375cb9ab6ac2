"""What a run leaves for people and jobs: report.json, summary.csv, run.json.

Names and columns are stable: nightly jobs and QGIS projects rely on them.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

SUMMARY_COLUMNS = [
    "survey", "raster", "status", "error", "georeferenced", "crs", "width", "height", "mode", "patches", "patches_scored",
    "polygons", "centrelines", "crack_length", "unit", "threshold", "cell_precision", "cell_recall", "cell_f1",
    "object_precision", "object_recall", "object_f1", "pixel_0px_f1", "pixel_2px_f1", "pixel_5px_f1",
    "centreline_completeness", "centreline_correctness", "centreline_quality", "seconds", "action", "reason",
]
# What the run that wrote the summary did with a raster (column "action"); "reason" says why.
COMPUTED, UP_TO_DATE, NOT_IN_INPUTS, RUNNING = "computed", "up to date", "not in this run's inputs", "running"
PACKAGES = ["survey_cracks", "torch", "torchvision", "rasterio", "geopandas", "shapely", "dask", "distributed", "numpy", "opencv-python-headless"]


@dataclass
class RasterOutcome:
    """One raster's result (or error) as the reports see it."""

    survey: str
    raster: str
    source: str
    status: str = "ok"
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    measured: Any = None  # evaluate.RasterMetrics with raw counts, for survey totals
    action: str = COMPUTED
    reason: str = ""

    @classmethod
    def from_report(cls, report: dict[str, Any], action: str, reason: str = "") -> "RasterOutcome":
        """A finished raster as its folder's report.json tells it (how later runs report rasters they skip)."""
        from survey_cracks.evaluate import RasterMetrics

        metrics = report.get("metrics")
        return cls(survey=report["survey"], raster=report["raster"], source=report["source"], status=report["status"],
                   error=report.get("error"), info=report.get("raster_info") or {}, counts=report.get("counts") or {},
                   metrics=metrics, seconds=report.get("seconds") or {},
                   measured=RasterMetrics.from_dict(metrics) if metrics else None, action=action, reason=reason)

    def summary_row(self) -> dict[str, Any]:
        m = self.metrics or {}

        def pick(level: str, key: str) -> Any:
            return (m.get(level) or {}).get(key)

        line = next((key for key in m if key.startswith("centreline_")), "centreline")

        return {
            "survey": self.survey, "raster": self.raster, "status": self.status, "error": self.error or "",
            "georeferenced": self.info.get("georeferenced"), "crs": self.info.get("crs") or "",
            "width": self.info.get("width"), "height": self.info.get("height"),
            "patches": self.counts.get("patches"), "patches_scored": self.counts.get("patches_scored"),
            "mode": self.counts.get("mode"), "polygons": self.counts.get("polygons"),
            "centrelines": self.counts.get("centrelines"), "crack_length": self.counts.get("crack_length"),
            "unit": self.counts.get("unit"), "threshold": self.counts.get("threshold"),
            "cell_precision": pick("cell", "precision"), "cell_recall": pick("cell", "recall"), "cell_f1": pick("cell", "f1"),
            "object_precision": pick("object", "precision"), "object_recall": pick("object", "recall"),
            "object_f1": pick("object", "f1"), "pixel_0px_f1": pick("pixel_0px", "f1"),
            "pixel_2px_f1": pick("pixel_2px", "f1"), "pixel_5px_f1": pick("pixel_5px", "f1"),
            "centreline_completeness": pick(line, "completeness"), "centreline_correctness": pick(line, "correctness"),
            "centreline_quality": pick(line, "quality"),
            "seconds": round(sum(self.seconds.values()), 2), "action": self.action, "reason": self.reason,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "survey": self.survey, "raster": self.raster, "source": self.source, "status": self.status,
            "error": self.error, "raster_info": self.info, "counts": self.counts, "metrics": self.metrics,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }


def write_json(path: Path, data: Any) -> None:
    """Atomic: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_summary(path: Path, outcomes: list[RasterOutcome]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for outcome in outcomes:
            writer.writerow(outcome.summary_row())
    os.replace(tmp, path)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
