"""Per-raster metrics at three levels, and survey totals.

Inputs: the crack heatmap (float32, one band, the raster's size and transform,
values 0..1 = crack probability, nodata -1 outside the footprint), the predicted
crack polygons, the operating ``threshold`` and the annotation (:class:`Truth`).
The *footprint* is the set of heatmap pixels that are not nodata; *annotated
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
the footprint). An object *hits* another when their geometries intersect
(touching counts). recall = annotated objects hit by at least one predicted
polygon / annotated objects; precision = predicted polygons hitting at least one
annotated object / predicted polygons; F1 = harmonic mean of that precision and
recall. Reported: ``tp`` = predicted polygons that hit, ``fp`` = predicted
polygons that hit nothing, ``fn`` = annotated objects missed, ``tp_truth`` =
annotated objects hit, and the counts ``annotated_objects`` (= tp_truth + fn)
and ``predicted_objects`` (= tp + fp).

**pixel@Npx** (one per N in ``pixel_tolerances_px``) — distances are Euclidean
between pixel centres. precision = predicted crack pixels within N px of an
annotated crack pixel / predicted crack pixels; recall = annotated crack pixels
within N px of a predicted crack pixel / annotated crack pixels. Reported:
``tp`` = predicted pixels within N px, ``fp`` = the other predicted pixels,
``tp_truth`` = annotated pixels within N px, ``fn`` = the other annotated pixels,
with ``predicted_px`` and ``annotated_px``. Computed block by block with an N px
halo (each pixel counted once, in its own block), so the figures do not depend on
the block size.

Survey totals (:func:`combine`) add the counts of all rasters and recompute the
ratios from the sums (micro-average), so large rasters weigh more than small ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import geopandas as gpd
import numpy as np
import rasterio
import shapely
from pyproj import CRS
from rasterio.windows import Window

from survey_cracks.annotations import Truth
from survey_cracks.config import EvaluateConfig
from survey_cracks.errors import RasterError
from survey_cracks.metrics import Scores
from survey_cracks.raster import RasterInfo, open_raster
from survey_cracks.tiling import block_windows


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
        return out


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
    halo = max(tolerances, default=0)
    discs = {n: _disc(n) for n in tolerances}
    cell_tp = cell_fp = cell_fn = cells = 0
    pixel_counts = {n: np.zeros(4, dtype=np.int64) for n in tolerances}  # tp, fp, fn, tp_truth
    with open_raster(heatmap_path) as src:
        if (src.width, src.height) != (info.width, info.height):
            raise RasterError(
                heatmap_path,
                f"heatmap is {src.width}x{src.height} px but the raster is {info.width}x{info.height} px",
                "recompute the heatmap for this raster",
            )
        nodata = src.nodata
        for core in block_windows(info.width, info.height, step):
            outer = Window(core.col_off - halo, core.row_off - halo, core.width + 2 * halo, core.height + 2 * halo)
            heat = _read_padded(src, outer, info)
            valid = np.isfinite(heat) & (heat >= 0)
            if nodata is not None and np.isfinite(nodata):
                valid &= heat != nodata
            core_slice = (slice(halo, halo + int(core.height)), slice(halo, halo + int(core.width)))
            if not valid[core_slice].any():
                continue
            predicted_px = valid & (heat >= threshold)
            annotated_px = truth.mask(outer) & valid

            c = _cell_counts(heat[core_slice], valid[core_slice], annotated_px[core_slice], threshold, config)
            cell_tp, cell_fp, cell_fn, cells = cell_tp + c[0], cell_fp + c[1], cell_fn + c[2], cells + c[3]

            pred_core, truth_core = predicted_px[core_slice], annotated_px[core_slice]
            n_pred, n_truth = int(pred_core.sum()), int(truth_core.sum())
            for n in tolerances:
                near_truth = _dilate(annotated_px, discs[n])[core_slice]
                near_pred = _dilate(predicted_px, discs[n])[core_slice]
                tp = int(np.count_nonzero(pred_core & near_truth))
                tp_truth = int(np.count_nonzero(truth_core & near_pred))
                pixel_counts[n] += (tp, n_pred - tp, n_truth - tp_truth, tp_truth)

    object_scores, object_counts = object_match(truth.objects(), predicted, info)
    return RasterMetrics(
        cell=Scores(cell_tp, cell_fp, cell_fn),
        object=object_scores,
        object_counts=object_counts,
        pixel={n: MatchScores(int(v[0]), int(v[1]), int(v[2]), int(v[3])) for n, v in pixel_counts.items()},
        cell_counts={"cells": cells},
    )


def object_match(
    annotated: gpd.GeoDataFrame, predicted: gpd.GeoDataFrame, info: RasterInfo
) -> tuple[MatchScores, dict[str, int]]:
    """Object-level hits between annotated objects and predicted polygons (intersection)."""
    truth_geoms = _geometries(annotated, info)
    pred_geoms = _geometries(predicted, info)
    truth_hit = np.zeros(len(truth_geoms), dtype=bool)
    pred_hit = np.zeros(len(pred_geoms), dtype=bool)
    if len(truth_geoms) and len(pred_geoms):
        pairs = shapely.STRtree(pred_geoms).query(truth_geoms, predicate="intersects")
        truth_hit[pairs[0]] = True
        pred_hit[pairs[1]] = True
    scores = MatchScores(
        tp=int(pred_hit.sum()),
        fp=int((~pred_hit).sum()),
        fn=int((~truth_hit).sum()),
        tp_truth=int(truth_hit.sum()),
    )
    return scores, {"annotated_objects": len(truth_geoms), "predicted_objects": len(pred_geoms)}


def combine(metrics: list[RasterMetrics]) -> RasterMetrics:
    """Survey totals: counts summed over rasters (micro-average)."""
    zero = MatchScores(0, 0, 0, 0)
    cell: Scores = Scores(0, 0, 0)
    obj: Scores = zero
    object_counts: dict[str, int] = {"annotated_objects": 0, "predicted_objects": 0}
    cell_counts: dict[str, int] = {"cells": 0}
    tolerances = sorted({n for m in metrics for n in m.pixel})
    pixel: dict[int, Scores] = {n: zero for n in tolerances}
    for m in metrics:
        missing = set(tolerances) - set(m.pixel)
        if missing:
            raise ValueError(f"cannot combine metrics computed with different pixel tolerances ({sorted(missing)})")
        cell = cell + m.cell
        obj = obj + m.object
        object_counts = _add_counts(object_counts, m.object_counts)
        cell_counts = _add_counts(cell_counts, m.cell_counts)
        pixel = {n: pixel[n] + m.pixel[n] for n in tolerances}
    return RasterMetrics(cell=cell, object=obj, object_counts=object_counts, pixel=pixel, cell_counts=cell_counts)


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
        data = src.read(1, window=Window(col0, row0, col1 - col0, row1 - row0), out_dtype="float32")
        r, c = row0 - int(window.row_off), col0 - int(window.col_off)
        out[r : r + data.shape[0], c : c + data.shape[1]] = data
    return out


def _disc(radius: int) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` px (Euclidean) of the centre one."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8)


def _dilate(mask: np.ndarray, disc: np.ndarray) -> np.ndarray:
    if disc.shape == (1, 1) or not mask.any():
        return mask
    return cv2.dilate(mask.astype(np.uint8), disc).astype(bool)
