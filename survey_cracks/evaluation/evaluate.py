"""Per-raster metrics at three levels, and survey totals.

Inputs: the crack heatmap (one band, the raster's size and transform, read as crack
probability 0..1 by `heatmap.read_probability`, NaN outside the footprint), the predicted
crack polygons, the operating ``threshold`` and the annotation (:class:`Truth`).
The *footprint* is the set of heatmap pixels that are not nodata and not in an
area the annotation labels ``ignore`` (nobody scores those); *annotated
crack pixels* are the annotation's crack pixels (lines buffered to their width,
rasterized with all-touched) **inside the footprint** — annotation outside it
cannot be detected and is not counted. A pixel is *predicted crack* when its
heatmap value ≥ threshold.

**cell** — the raster is divided into a fixed grid of ``cell_size_px`` ×
``cell_size_px`` cells anchored at the top-left pixel (cells on the right and
bottom edges may be smaller). Only cells holding at least one footprint pixel
count. A cell is a *true crack cell* when it holds ≥ ``min_cell_crack_px``
annotated crack pixels, a *predicted crack cell* when the maximum heatmap value
over its footprint pixels is ≥ threshold. TP = cells that are both, FP =
predicted but not true, FN = true but not predicted; precision = TP / (TP + FP),
recall = TP / (TP + FN), F1 their harmonic mean. ``cells`` reports how many
cells counted.

**object** — annotated crack objects are groups of annotation features (or of
8-connected mask pixels) that touch or overlap; predicted objects are the
predicted polygons. Annotated objects are clipped to the raster's extent (not to
the footprint). Both are grown by ``object_tolerance_px`` (a thin crack traced a
pixel or two off its annotation still overlaps it). A predicted polygon is
*correct* when at least ``object_overlap`` of its area lies on one single grown
annotated object; an annotated object is *found* when at least
``object_overlap`` of its area lies on one single grown predicted polygon. So one
big polygon spread over two cracks (or over a crack and its surroundings) is not
correct, and a crack only grazed by a polygon is not found. precision = correct
polygons / predicted polygons; recall = found objects / annotated objects; F1 =
their harmonic mean. Reported: ``tp`` = correct polygons, ``fp`` = the other
polygons, ``tp_truth`` = found objects, ``fn`` = the other annotated objects, and
the counts ``annotated_objects`` and ``predicted_objects``.

**pixel@Npx** (one per N in ``pixel_tolerances_px``) — distances are Euclidean
between pixel centres. precision = predicted crack pixels within N px of an
annotated crack pixel / predicted crack pixels; recall = annotated crack pixels
within N px of a predicted crack pixel / annotated crack pixels. Reported:
``tp`` = predicted pixels within N px, ``fp`` = the other predicted pixels,
``tp_truth`` = annotated pixels within N px, ``fn`` = the other annotated pixels,
with ``predicted_px`` and ``annotated_px``. Computed block by block with an N px
halo (each pixel counted once, in its own block), so the figures do not depend on
the block size. N = 0 is exact pixel overlap.

**centreline@Npx** (N = ``centreline_tolerance_px``) — Wiedemann's measures on the
one-pixel skeletons of the predicted and the annotated crack pixels (see
`metrics_pixels`): completeness = annotated centreline pixels within N px of a
predicted centreline, correctness = predicted centreline pixels within N px of an
annotated one, quality = matched annotated / (annotated + unmatched predicted)
centreline pixels. Skeletons are taken per block with a 16 px halo (they can
differ from a whole-raster skeleton by a pixel where a crack crosses a block edge).

Survey totals (:func:`combine`) add the counts of all rasters and recompute the
ratios from the sums (micro-average), so large rasters weigh more than small ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from pyproj import CRS
from rasterio.windows import Window
from scipy import ndimage

from survey_cracks.config import EvaluateConfig
from survey_cracks.io.annotations import Truth

SKELETON_HALO = 16  # px of context around a block for its skeleton to match the whole raster's
from survey_cracks.errors import RasterError
from survey_cracks.evaluation.metrics import Scores
from survey_cracks.evaluation.pixel_metrics import centreline_counts, centreline_scores, tolerant_counts
from survey_cracks.evaluation.sweep import ThresholdSweep, survey_sweep
from survey_cracks.io.raster import RasterInfo, open_raster
from survey_cracks.tiling import block_windows
from survey_cracks.vectors.heatmap import read_probability


@dataclass(frozen=True)
class MatchScores(Scores):
    """Scores whose prediction side and annotation side are matched separately.

    With a tolerance (pixels) or many-to-many overlaps (objects) the number of
    predictions that match differs from the number of annotations that are
    matched: ``tp``/``fp`` count predictions, ``tp_truth``/``fn`` count annotations.
    """

    tp_truth: int = 0

    @property
    def recall(self) -> float | None:
        total = self.tp_truth + self.fn
        return self.tp_truth / total if total else None

    def __add__(self, other: Scores) -> "MatchScores":
        other_truth = other.tp_truth if isinstance(other, MatchScores) else other.tp
        return MatchScores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tp_truth + other_truth)


@dataclass
class RasterMetrics:
    """Cell, object and pixel scores of one raster (or of a survey, after combine)."""

    cell: Scores
    object: Scores
    object_counts: dict[str, int]
    pixel: dict[int, Scores]
    cell_counts: dict[str, int] = field(default_factory=dict)
    centreline: MatchScores | None = None
    centreline_tolerance: int = 2
    # pixel counts at every threshold (report.json ``threshold_sweep``, beside ``metrics``): the best threshold on the annotations
    sweep: ThresholdSweep | None = None

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """``{"cell": ..., "object": ..., "pixel_2px": ..., ...}`` for JSON/CSV reports."""
        out: dict[str, dict[str, Any]] = {
            "cell": {**self.cell.as_dict(), **self.cell_counts},
            "object": {**self.object.as_dict(), **self.object_counts},
        }
        for tolerance in sorted(self.pixel):
            scores = self.pixel[tolerance]
            annotated = scores.tp_truth + scores.fn if isinstance(scores, MatchScores) else scores.tp + scores.fn
            out[f"pixel_{tolerance}px"] = {
                **scores.as_dict(),
                "tolerance_px": tolerance,
                "predicted_px": scores.tp + scores.fp,
                "annotated_px": annotated,
            }
        if self.centreline is not None:
            c = self.centreline
            out[f"centreline_{self.centreline_tolerance}px"] = {
                **centreline_scores(np.array([c.tp, c.fp, c.fn, c.tp_truth])),
                "tolerance_px": self.centreline_tolerance,
                "tp": c.tp, "fp": c.fp, "fn": c.fn, "tp_truth": c.tp_truth,  # raw counts: survey totals are rebuilt from them
            }
        return out

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> "RasterMetrics":
        """The inverse of `as_dict` (counts only): survey totals of rasters a later run skipped."""
        def scores(entry: dict[str, Any]) -> Scores:
            if "tp_truth" in entry:
                return MatchScores(entry["tp"], entry["fp"], entry["fn"], entry["tp_truth"])
            return Scores(entry["tp"], entry["fp"], entry["fn"])

        pixel = {int(v["tolerance_px"]): scores(v) for k, v in data.items() if k.startswith("pixel_")}
        line = next((v for k, v in data.items() if k.startswith("centreline_") and "tp" in v), None)
        return cls(
            cell=scores(data["cell"]), object=scores(data["object"]),
            object_counts={k: data["object"][k] for k in ("annotated_objects", "predicted_objects") if k in data["object"]},
            pixel=pixel, cell_counts={"cells": data["cell"]["cells"]} if "cells" in data["cell"] else {},
            centreline=scores(line) if line else None,  # type: ignore[arg-type]
            centreline_tolerance=int(line["tolerance_px"]) if line else 2,
        )


def evaluate_raster(
    heatmap_path: Path,
    truth: Truth,
    predicted: gpd.GeoDataFrame,
    threshold: float,
    info: RasterInfo,
    config: EvaluateConfig,
    block: int = 1024,
) -> RasterMetrics:
    """Score one raster's heatmap and polygons against its annotation (see module docstring)."""
    tolerances = sorted(set(int(n) for n in config.pixel_tolerances_px))
    if any(n < 0 for n in tolerances):
        raise ValueError(f"pixel tolerances must be >= 0, got {config.pixel_tolerances_px}")
    cell = config.cell_size_px
    # Blocks hold whole cells, so a cell is never split between two blocks.
    step = max(cell, (block // cell) * cell)
    line_tolerance = config.centreline_tolerance_px
    halo = max(max(tolerances, default=0), line_tolerance + SKELETON_HALO)
    cell_tp = cell_fp = cell_fn = cells = 0
    pixel_counts = {n: np.zeros(4, dtype=np.int64) for n in tolerances}  # tp, fp, fn, tp_truth
    line_counts = np.zeros(4, dtype=np.int64)
    with open_raster(heatmap_path) as src:
        if (src.width, src.height) != (info.width, info.height):
            raise RasterError(
                heatmap_path,
                f"heatmap is {src.width}x{src.height} px but the raster is {info.width}x{info.height} px",
                "recompute the heatmap for this raster",
            )
        for core in block_windows(info.width, info.height, step):
            outer = Window(core.col_off - halo, core.row_off - halo, core.width + 2 * halo, core.height + 2 * halo)
            heat = _read_padded(src, outer, info)
            valid = np.isfinite(heat) & ~truth.ignore_mask(outer)  # `ignore` areas are scored by nobody
            core_slice = (slice(halo, halo + int(core.height)), slice(halo, halo + int(core.width)))
            if not valid[core_slice].any():
                continue
            predicted_px = valid & (heat >= threshold)
            annotated_px = truth.mask(outer) & valid

            c = _cell_counts(heat[core_slice], valid[core_slice], annotated_px[core_slice], threshold, config)
            cell_tp, cell_fp, cell_fn, cells = cell_tp + c[0], cell_fp + c[1], cell_fn + c[2], cells + c[3]

            counted = np.zeros(heat.shape, dtype=bool)
            counted[core_slice] = True
            for n in tolerances:
                pixel_counts[n] += tolerant_counts(predicted_px, annotated_px, n, counted)
            if predicted_px.any() or annotated_px.any():
                line_counts += centreline_counts(predicted_px, annotated_px, line_tolerance, counted)

    object_scores, object_counts = object_match(truth.objects(), predicted, info, config)
    return RasterMetrics(
        cell=Scores(cell_tp, cell_fp, cell_fn),
        object=object_scores,
        object_counts=object_counts,
        pixel={n: MatchScores(int(v[0]), int(v[1]), int(v[2]), int(v[3])) for n, v in pixel_counts.items()},
        cell_counts={"cells": cells},
        centreline=MatchScores(*(int(v) for v in line_counts)),
        centreline_tolerance=line_tolerance,
        sweep=threshold_sweep(heatmap_path, truth, info, SWEEP_TOLERANCE if SWEEP_TOLERANCE in tolerances else max(tolerances, default=0),
                              block),
    )


SWEEP_TOLERANCE = 2  # the pixel@2px F1 the best threshold is chosen by (the report's PR curve's)


def threshold_sweep(heatmap_path: Path, truth: Truth, info: RasterInfo, tolerance: int = SWEEP_TOLERANCE,
                    block: int = 1024) -> ThresholdSweep:
    """pixel@``tolerance`` px counts at thresholds 0, 0.01, ... 1 (`pixel_pr_curve`), for `sweep.ThresholdSweep.advice`."""
    curve = pixel_pr_curve(heatmap_path, truth, info, tolerance, block)
    assert curve.predicted is not None and curve.correct is not None and curve.reached is not None
    return ThresholdSweep(tuple(float(t) for t in curve.thresholds), tuple(int(v) for v in curve.predicted),
                          tuple(int(v) for v in curve.correct), tuple(int(v) for v in curve.reached), curve.annotated, tolerance)


def object_match(
    annotated: gpd.GeoDataFrame, predicted: gpd.GeoDataFrame, info: RasterInfo, config: EvaluateConfig | None = None
) -> tuple[MatchScores, dict[str, int]]:
    """Correct polygons and found objects by majority overlap (see the module docstring)."""
    flags = object_flags(annotated, predicted, info, config)
    pred_ok, truth_ok = flags.correct, flags.found
    scores = MatchScores(
        tp=int(pred_ok.sum()),
        fp=int((~pred_ok).sum()),
        fn=int((~truth_ok).sum()),
        tp_truth=int(truth_ok.sum()),
    )
    return scores, {"annotated_objects": len(flags.annotated), "predicted_objects": len(flags.predicted)}


@dataclass
class ObjectFlags:
    """Each predicted polygon: correct or not; each annotated object: found or not (raster coordinates)."""

    predicted: np.ndarray
    correct: np.ndarray
    annotated: np.ndarray
    found: np.ndarray


def object_flags(
    annotated: gpd.GeoDataFrame, predicted: gpd.GeoDataFrame, info: RasterInfo, config: EvaluateConfig | None = None
) -> ObjectFlags:
    """The object-level decisions behind `object_match`: what the report's false-positive/negative gallery shows."""
    config = config or EvaluateConfig()
    truth_geoms = _geometries(annotated, info)
    pred_geoms = _geometries(predicted, info)
    grow = config.object_tolerance_px * (abs(info.transform.a) if info.georeferenced else 1.0)
    return ObjectFlags(pred_geoms, _majority_on_one(pred_geoms, truth_geoms, grow, config.object_overlap),
                       truth_geoms, _majority_on_one(truth_geoms, pred_geoms, grow, config.object_overlap))


def _majority_on_one(subjects: np.ndarray, others: np.ndarray, grow: float, share: float) -> np.ndarray:
    """For each subject: does at least ``share`` of its area lie on one single ``other`` grown by ``grow``?

    Lines and points count by length and count; areas by area.
    """
    ok = np.zeros(len(subjects), dtype=bool)
    if not len(subjects) or not len(others):
        return ok
    grown = shapely.buffer(others, grow) if grow > 0 else others
    subject_idx, other_idx = shapely.STRtree(grown).query(subjects, predicate="intersects")
    if not len(subject_idx):
        return ok
    overlap = shapely.intersection(subjects[subject_idx], grown[other_idx])
    measure = _size(subjects)
    fraction = _size(overlap) / np.maximum(measure[subject_idx], 1e-12)
    np.logical_or.at(ok, subject_idx, fraction >= share - 1e-9)
    return ok


def _size(geoms: np.ndarray) -> np.ndarray:
    """Area of areal geometries, length of lines, 1 for points: what 'a share of it' means for each."""
    area, length = shapely.area(geoms), shapely.length(geoms)
    return np.where(area > 0, area, np.where(length > 0, length, 1.0))


def combine(metrics: list[RasterMetrics]) -> RasterMetrics:
    """Survey totals: counts summed over rasters (micro-average)."""
    zero = MatchScores(0, 0, 0, 0)
    cell: Scores = Scores(0, 0, 0)
    obj: Scores = zero
    object_counts: dict[str, int] = {"annotated_objects": 0, "predicted_objects": 0}
    cell_counts: dict[str, int] = {"cells": 0}
    tolerances = sorted({n for m in metrics for n in m.pixel})
    pixel: dict[int, Scores] = {n: zero for n in tolerances}
    line_tolerances = {m.centreline_tolerance for m in metrics if m.centreline is not None}
    if len(line_tolerances) > 1:
        raise ValueError(f"cannot combine centreline metrics computed with different tolerances ({sorted(line_tolerances)})")
    centreline: MatchScores | None = zero if line_tolerances else None
    for m in metrics:
        missing = set(tolerances) - set(m.pixel)
        if missing:
            raise ValueError(f"cannot combine metrics computed with different pixel tolerances ({sorted(missing)})")
        cell = cell + m.cell
        obj = obj + m.object
        object_counts = _add_counts(object_counts, m.object_counts)
        cell_counts = _add_counts(cell_counts, m.cell_counts)
        pixel = {n: pixel[n] + m.pixel[n] for n in tolerances}
        if centreline is not None and m.centreline is not None:
            centreline = centreline + m.centreline
    return RasterMetrics(cell=cell, object=obj, object_counts=object_counts, pixel=pixel, cell_counts=cell_counts,
                         centreline=centreline, centreline_tolerance=line_tolerances.pop() if line_tolerances else 2,
                         sweep=survey_sweep([m.sweep for m in metrics]))


@dataclass
class PRCurve:
    """pixel@N px precision and recall at each threshold of ``thresholds`` (the pixel metric's definition)."""

    thresholds: np.ndarray
    precision: np.ndarray  # NaN where nothing is predicted
    recall: np.ndarray
    tolerance_px: int
    # the counts behind them, at each threshold: summed over rasters they give a survey's curve (sweep.ThresholdSweep)
    predicted: np.ndarray | None = None  # predicted pixels
    correct: np.ndarray | None = None  # predicted pixels within the tolerance of an annotated one
    reached: np.ndarray | None = None  # annotated pixels with a prediction within the tolerance
    annotated: int = 0


def pixel_pr_curve(heatmap_path: Path, truth: Truth, info: RasterInfo, tolerance: int = 2, block: int = 1024,
                   steps: int = 100) -> PRCurve:
    """Precision/recall of pixel@``tolerance`` px at thresholds 0, 1/steps, ... 1, in one pass over the heatmap.

    Per block (with a halo): a histogram of the heatmap values of predicted-candidate
    pixels near an annotated pixel and of all of them (precision), and of the highest
    value within ``tolerance`` px of each annotated pixel (recall): a threshold ``t``
    predicts every value >= t, so cumulative sums give every threshold at once.
    """
    edges = np.linspace(0, 1, steps + 1)
    near_hist, all_hist, truth_hist = (np.zeros(steps + 1, np.int64) for _ in range(3))
    annotated_total = 0
    r = tolerance
    disk = (np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r + 1e-9)

    def bins(values: np.ndarray) -> np.ndarray:
        return np.bincount(np.clip(np.floor(values * steps + 1e-9).astype(np.int64), 0, steps), minlength=steps + 1)

    with open_raster(heatmap_path) as src:
        for core in block_windows(info.width, info.height, block):
            outer = Window(core.col_off - r, core.row_off - r, core.width + 2 * r, core.height + 2 * r)
            heat = _read_padded(src, outer, info)
            valid = np.isfinite(heat) & (heat >= 0) & ~truth.ignore_mask(outer)
            inner = (slice(r, r + int(core.height)), slice(r, r + int(core.width)))
            if not valid[inner].any():
                continue
            annotated = truth.mask(outer) & valid
            near = ndimage.binary_dilation(annotated, structure=disk) if r else annotated
            values, ok = heat[inner], valid[inner]
            all_hist += bins(values[ok])
            near_hist += bins(values[ok & near[inner]])
            best = ndimage.maximum_filter(np.where(valid, heat, -1.0), footprint=disk, mode="constant", cval=-1.0)
            marked = annotated[inner]
            annotated_total += int(marked.sum())
            reached = best[inner][marked]
            truth_hist += bins(reached[reached >= 0])
    predicted = np.cumsum(all_hist[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        correct = np.cumsum(near_hist[::-1])[::-1]
        reached = np.cumsum(truth_hist[::-1])[::-1]
        precision, recall = correct / predicted, reached / max(annotated_total, 1)
    return PRCurve(edges, np.where(predicted > 0, precision, np.nan), recall, tolerance, predicted, correct, reached,
                   annotated_total)


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in dict.fromkeys([*a, *b])}


def _geometries(frame: gpd.GeoDataFrame, info: RasterInfo) -> np.ndarray:
    """Non-empty geometries in the raster's coordinates."""
    if frame is None or len(frame) == 0:
        return np.empty(0, dtype=object)
    if info.georeferenced and info.crs and frame.crs is not None:
        if CRS.from_user_input(frame.crs) != CRS.from_user_input(info.crs):
            frame = frame.to_crs(info.crs)
    geoms = np.asarray(frame.geometry.values, dtype=object)
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    return geoms[keep]


def _cell_counts(
    heat: np.ndarray, valid: np.ndarray, annotated: np.ndarray, threshold: float, config: EvaluateConfig
) -> tuple[int, int, int, int]:
    """(tp, fp, fn, cells counted) over the grid cells of one block that starts on a cell corner."""
    size = config.cell_size_px
    h, w = heat.shape
    ch, cw = -(-h // size), -(-w // size)
    pad = ((0, ch * size - h), (0, cw * size - w))
    score = np.where(valid, heat, -np.inf)
    score = np.pad(score, pad, constant_values=-np.inf).reshape(ch, size, cw, size)
    valid_c = np.pad(valid, pad).reshape(ch, size, cw, size).any(axis=(1, 3))
    truth_px = np.pad(annotated, pad).reshape(ch, size, cw, size).sum(axis=(1, 3))
    is_true = (truth_px >= config.min_cell_crack_px) & valid_c
    is_pred = (score.max(axis=(1, 3)) >= threshold) & valid_c
    return (
        int(np.count_nonzero(is_true & is_pred)),
        int(np.count_nonzero(~is_true & is_pred)),
        int(np.count_nonzero(is_true & ~is_pred)),
        int(np.count_nonzero(valid_c)),
    )


def _read_padded(src: rasterio.io.DatasetReader, window: Window, info: RasterInfo) -> np.ndarray:
    """Band 1 of ``window``; parts outside the raster read as NaN (not footprint)."""
    out = np.full((int(window.height), int(window.width)), np.nan, dtype=np.float32)
    col0, row0 = max(0, int(window.col_off)), max(0, int(window.row_off))
    col1 = min(info.width, int(window.col_off + window.width))
    row1 = min(info.height, int(window.row_off + window.height))
    if col1 > col0 and row1 > row0:
        data = read_probability(src, Window(col0, row0, col1 - col0, row1 - row0))
        r, c = row0 - int(window.row_off), col0 - int(window.col_off)
        out[r : r + data.shape[0], c : c + data.shape[1]] = data
    return out
