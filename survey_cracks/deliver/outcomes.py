"""What a run leaves for people and jobs: report.json, summary.csv, run.json.

Names and columns are stable: nightly jobs and QGIS projects rely on them.
"""

from __future__ import annotations

import csv
import platform
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from survey_cracks.outputs import atomic_write, write_json  # noqa: F401 — write_json: imported from here too

SUMMARY_COLUMNS = [
    "survey", "raster", "status", "error", "georeferenced", "crs", "width", "height", "mode", "patches", "patches_scored",
    "polygons", "centrelines", "crack_length", "unit", "threshold", "cell_precision", "cell_recall", "cell_f1",
    "object_precision", "object_recall", "object_f1", "pixel_0px_f1", "pixel_2px_f1", "pixel_5px_f1",
    "centreline_completeness", "centreline_correctness", "centreline_quality", "seconds", "action", "reason",
    "annotation_error", "warnings",
]
# What the run that wrote the summary did with a raster (column "action"); "reason" says why.
COMPUTED, UP_TO_DATE, NOT_IN_INPUTS, RUNNING = "computed", "up to date", "not in this run's inputs", "running"
if TYPE_CHECKING:
    from survey_cracks.evaluation.evaluate import RasterMetrics

PACKAGES = ["survey_cracks", "torch", "torchvision", "rasterio", "geopandas", "shapely", "dask", "distributed", "numpy", "opencv-python-headless"]


@dataclass
class RasterSummary:
    """The source raster as the reports describe it (report.json ``raster_info``)."""

    width: int
    height: int
    dtype: str
    crs: str | None
    georeferenced: bool
    pixel_size: float | None
    coordinates: str
    transform: list[float]
    has_mask: bool
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RasterSummary":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class RasterCounts:
    """What a raster's run counted (report.json ``counts``; a mode's fields only, the others None)."""

    mode: str | None = None
    # mask mode
    windows: int | None = None
    windows_processed: int | None = None
    window_px: int | None = None
    margin_px: int | None = None
    processing_scale: float | None = None
    # patch and dense modes
    patches: int | None = None
    patches_scored: int | None = None
    patch_window_px: int | None = None
    stride_px: int | None = None
    patches_above_threshold: int | None = None
    # at the run's threshold
    polygons: int | None = None
    threshold: float | None = None
    centrelines: int | None = None
    crack_length: float | None = None
    max_width: float | None = None  # of the widest crack, in ``unit`` (mask mode: centrelines)
    unit: str | None = None
    annotation: str | None = None
    photos: int | None = None  # a collection of photos (`deliver.collection`): how many,
    photos_annotated: int | None = None  # and how many of them were scored against an annotation

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}

    def with_vectors(self, threshold: float, polygons: Any, lines: Any | None, georeferenced: bool) -> "RasterCounts":
        """These counts with those of the vectors traced at ``threshold`` (frames; ``lines`` None: patch level)."""
        unit = str(lines["unit"].iloc[0]) if lines is not None and len(lines) else ("m" if georeferenced else "px")
        return replace(self, polygons=len(polygons), threshold=round(threshold, 4),
                       centrelines=len(lines) if lines is not None else None,
                       crack_length=round(float(lines["length"].sum()), 4) if lines is not None else None,
                       max_width=round(float(lines["max_width"].max()), 6) if lines is not None and len(lines) else None,
                       unit=unit if lines is not None else None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RasterCounts":
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


@dataclass
class RasterOutcome:
    """One raster's result (or error) as the reports see it."""

    survey: str
    raster: str
    source: str
    status: str = "ok"
    error: str | None = None
    info: RasterSummary | None = None  # None: the raster could not be inspected
    counts: RasterCounts = field(default_factory=RasterCounts)
    seconds: dict[str, float] = field(default_factory=dict)
    measured: RasterMetrics | None = None  # None: no annotation
    action: str = COMPUTED
    reason: str = ""
    traceback: str | None = None  # of an unexpected error
    # The annotation beside the raster could not be used: the maps are written, the metrics are not (exit code 4).
    annotation_error: str | None = None
    warnings: list[str] = field(default_factory=list)  # e.g. a threshold that makes most of the footprint a crack

    @property
    def metrics(self) -> dict[str, Any] | None:
        """The figures as report.json and the reports show them."""
        return self.measured.as_dict() if self.measured is not None else None

    @property
    def georeferenced(self) -> bool:
        """Georeferenced with a known CRS."""
        return self.info is not None and self.info.georeferenced and bool(self.info.crs)

    @classmethod
    def from_report(cls, report: dict[str, Any], action: str, reason: str = "") -> "RasterOutcome":
        """A finished raster as its folder's report.json tells it (how later runs report rasters they skip)."""
        from survey_cracks.evaluation.evaluate import RasterMetrics
        from survey_cracks.evaluation.sweep import ThresholdSweep

        metrics = report.get("metrics")
        info = report.get("raster_info")
        measured = RasterMetrics.from_dict(metrics) if metrics else None
        if measured is not None and report.get("threshold_sweep"):
            measured.sweep = ThresholdSweep.from_dict(report["threshold_sweep"])
        return cls(survey=report["survey"], raster=report["raster"], source=report["source"], status=report["status"],
                   error=report.get("error"), info=RasterSummary.from_dict(info) if info else None,
                   counts=RasterCounts.from_dict(report.get("counts") or {}),
                   seconds=report.get("seconds") or {}, measured=measured,
                   action=action, reason=reason, annotation_error=report.get("annotation_error"),
                   warnings=list(report.get("warnings") or []))

    def summary_row(self) -> dict[str, Any]:
        m, info, counts = self.metrics or {}, self.info, self.counts

        def pick(level: str, key: str) -> Any:
            return (m.get(level) or {}).get(key)

        line = next((key for key in m if key.startswith("centreline_")), "centreline")

        return {
            "survey": self.survey, "raster": self.raster, "status": self.status, "error": self.error or "",
            "georeferenced": info.georeferenced if info else None, "crs": (info.crs if info else None) or "",
            "width": info.width if info else None, "height": info.height if info else None,
            "patches": counts.patches, "patches_scored": counts.patches_scored, "mode": counts.mode,
            "polygons": counts.polygons, "centrelines": counts.centrelines, "crack_length": counts.crack_length,
            "unit": counts.unit, "threshold": counts.threshold,
            "cell_precision": pick("cell", "precision"), "cell_recall": pick("cell", "recall"), "cell_f1": pick("cell", "f1"),
            "object_precision": pick("object", "precision"), "object_recall": pick("object", "recall"),
            "object_f1": pick("object", "f1"), "pixel_0px_f1": pick("pixel_0px", "f1"),
            "pixel_2px_f1": pick("pixel_2px", "f1"), "pixel_5px_f1": pick("pixel_5px", "f1"),
            "centreline_completeness": pick(line, "completeness"), "centreline_correctness": pick(line, "correctness"),
            "centreline_quality": pick(line, "quality"),
            "seconds": round(sum(self.seconds.values()), 2), "action": self.action, "reason": self.reason,
            "annotation_error": self.annotation_error or "", "warnings": " | ".join(self.warnings),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "survey": self.survey, "raster": self.raster, "source": self.source, "status": self.status,
            "error": self.error, "raster_info": self.info.as_dict() if self.info else {},
            "counts": self.counts.as_dict(), "metrics": self.metrics,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "threshold_sweep": self.measured.sweep.as_dict() if self.measured is not None and self.measured.sweep else None,
            "annotation_error": self.annotation_error, "warnings": list(self.warnings),
        }


def write_summary(path: Path, outcomes: list[RasterOutcome]) -> None:
    with atomic_write(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=SUMMARY_COLUMNS)
        writer.writeheader()
        for outcome in outcomes:
            writer.writerow(outcome.summary_row())


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions
