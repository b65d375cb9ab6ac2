"""Patch labelling rules: how a mask or a set of boxes says crack / no crack.

A patch is a *crack* patch when its central region holds crack evidence, and a
*no-crack* patch when the whole patch is free of it. Anything in between (a crack
only in the margin, a few stray pixels in the centre) is ambiguous and dropped:
with half-patch stride the neighbouring patch is centred on that crack, so the
model is never taught to be unsure about borders. Returns 1, 0 or None.
"""

from __future__ import annotations

import numpy as np

from survey_cracks.config import LabelRule


def center_slice(size: int, fraction: float) -> slice:
    side = max(1, int(round(size * fraction)))
    start = (size - side) // 2
    return slice(start, start + side)


def label_from_mask(mask: np.ndarray, rule: LabelRule) -> int | None:
    """``mask``: bool (H, W) crack pixels of one patch."""
    rows = center_slice(mask.shape[0], rule.center_fraction)
    cols = center_slice(mask.shape[1], rule.center_fraction)
    if int(mask[rows, cols].sum()) >= rule.min_center_crack_px:
        return 1
    if not mask.any():
        return 0
    return None


def label_from_boxes(window: tuple[float, float, float, float], boxes: np.ndarray, rule: LabelRule) -> int | None:
    """``window`` and ``boxes`` as (x0, y0, x1, y1) in the same pixel space.

    Boxes around cracks are loose (a thin diagonal crack fills a fraction of its box),
    so overlap is measured against the smaller of the box and the centre region.
    """
    x0, y0, x1, y1 = window
    if boxes.size == 0:
        return 0
    size = x1 - x0
    side = size * rule.center_fraction
    cx0, cy0 = x0 + (size - side) / 2, y0 + (y1 - y0 - side) / 2
    cx1, cy1 = cx0 + side, cy0 + side
    bx0, by0, bx1, by1 = boxes.T
    overlap = _overlap(cx0, cy0, cx1, cy1, bx0, by0, bx1, by1)
    smaller = np.minimum(side * side, (bx1 - bx0) * (by1 - by0))
    if np.any(overlap >= rule.box_center_overlap * np.maximum(smaller, 1e-9)):
        return 1
    if not np.any(_overlap(x0, y0, x1, y1, bx0, by0, bx1, by1) > 0):
        return 0
    return None


def _overlap(ax0, ay0, ax1, ay1, bx0, by0, bx1, by1) -> np.ndarray:  # type: ignore[no-untyped-def]
    w = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    h = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    return w * h
