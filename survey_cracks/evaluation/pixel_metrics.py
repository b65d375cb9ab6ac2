"""Pixel and centreline agreement between a predicted and an annotated crack mask.

Shared by training (validation, held-out tables) and the survey report, so a figure
means the same thing wherever it is printed.

- **pixel@N px**: precision = predicted crack pixels within N px (Euclidean, pixel
  centres) of an annotated crack pixel / predicted crack pixels; recall = annotated
  crack pixels within N px of a predicted one / annotated crack pixels. N = 0 is exact
  pixel overlap.
- **centreline@N px** (Wiedemann et al.'s measures on one-pixel skeletons):
  completeness = annotated centreline pixels within N px of a predicted centreline /
  annotated centreline pixels; correctness = predicted centreline pixels within N px
  of an annotated one / predicted centreline pixels; quality = matched annotated /
  (annotated + unmatched predicted) centreline pixels, i.e. TP / (TP + FP + FN) in
  centreline length.

Counts are returned as ``(tp, fp, fn, tp_truth)``: ``tp``/``fp`` split the predicted
pixels, ``tp_truth``/``fn`` the annotated ones, so counts of many images add up.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.morphology import skeletonize


def disc(radius: int) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` px (Euclidean) of the centre one."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (xx * xx + yy * yy <= radius * radius).astype(np.uint8)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0 or not mask.any():
        return mask.astype(bool)
    return cv2.dilate(mask.astype(np.uint8), disc(radius)).astype(bool)


def tolerant_counts(
    predicted: np.ndarray, truth: np.ndarray, tolerance: int, counted: np.ndarray | None = None
) -> np.ndarray:
    """(tp, fp, fn, tp_truth) of two boolean masks at ``tolerance`` px.

    ``counted`` limits which pixels are counted (e.g. a block's core without its halo);
    the neighbourhood search still sees the whole arrays.
    """
    near_truth = dilate(truth, tolerance)
    near_pred = dilate(predicted, tolerance)
    pred, true = predicted.astype(bool), truth.astype(bool)
    if counted is not None:
        pred, true = pred & counted, true & counted
    tp = int(np.count_nonzero(pred & near_truth))
    tp_truth = int(np.count_nonzero(true & near_pred))
    return np.array([tp, int(pred.sum()) - tp, int(true.sum()) - tp_truth, tp_truth], dtype=np.int64)


def centreline(mask: np.ndarray) -> np.ndarray:
    """One-pixel skeleton of a boolean mask."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=bool)
    return skeletonize(mask.astype(bool))


def centreline_counts(
    predicted: np.ndarray, truth: np.ndarray, tolerance: int, counted: np.ndarray | None = None
) -> np.ndarray:
    """(tp, fp, fn, tp_truth) of the two masks' skeletons at ``tolerance`` px."""
    return tolerant_counts(centreline(predicted), centreline(truth), tolerance, counted)


def centreline_scores(counts: np.ndarray) -> dict[str, float | None]:
    """Completeness, correctness and quality from summed centreline counts."""
    tp, fp, fn, tp_truth = (int(v) for v in counts)
    completeness = tp_truth / (tp_truth + fn) if tp_truth + fn else None
    correctness = tp / (tp + fp) if tp + fp else None
    quality = tp_truth / (tp_truth + fn + fp) if tp_truth + fn + fp else None
    return {"completeness": _rounded(completeness), "correctness": _rounded(correctness), "quality": _rounded(quality),
            "predicted_px": tp + fp, "annotated_px": tp_truth + fn}


def pixel_scores(counts: np.ndarray) -> dict[str, float | int | None]:
    """Precision, recall and F1 from summed (tp, fp, fn, tp_truth)."""
    tp, fp, fn, tp_truth = (int(v) for v in counts)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp_truth / (tp_truth + fn) if tp_truth + fn else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": _rounded(precision), "recall": _rounded(recall), "f1": _rounded(f1),
            "predicted_px": tp + fp, "annotated_px": tp_truth + fn}


def _rounded(score: float | None) -> float | None:
    """A score as reports carry it: four decimals, None where it is undefined (nothing predicted or annotated)."""
    return None if score is None else round(score, 4)
