"""Faint-crack augmentation: a labelled crack faded toward its own surroundings.

Most of the shipped model's misses on real structures are faint 1–2 px hairlines (issue
27), while the training sets' cracks are mostly dark and wide. Here a crop's cracks are
blended toward an estimate of the surface under them (OpenCV's inpainting of the crack and
a 2 px rim, on the crop's own texture), by a random share of their contrast; the label is
kept, so the model is shown cracks as faint as the ones it misses. The blend never removes
more than the upper end of ``FADE`` (65 %) of the contrast: a crack that can no longer be
seen would teach the model to draw cracks where there are none.
"""

from __future__ import annotations

import cv2
import numpy as np

FADE = (0.3, 0.65)  # share of a crack's contrast taken away
RIM_PX = 2  # pixels around the label inpainted too: labels are often a pixel off the dark line


def fade_cracks(rgb: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                fade: tuple[float, float] = FADE) -> np.ndarray:
    """``rgb`` (H, W, 3 uint8) with the cracks of ``target`` (H, W, 1 = crack) faded; ``target`` is only read.

    One random draw per call (the fade), so a crop without cracks costs nothing but it.
    """
    amount = float(rng.uniform(*fade))
    crack = target.astype(np.uint8)
    if not crack.any():
        return rgb
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RIM_PX + 1, 2 * RIM_PX + 1))
    hole = cv2.dilate(crack, kernel)
    surface = cv2.inpaint(np.ascontiguousarray(rgb), hole, 3, cv2.INPAINT_TELEA).astype(np.float32)
    weight = cv2.GaussianBlur(cv2.dilate(crack, np.ones((3, 3), np.uint8)).astype(np.float32), (0, 0), 0.8)
    weight = (np.clip(weight * 1.5, 0.0, 1.0) * amount)[..., None]
    out = rgb.astype(np.float32) * (1.0 - weight) + surface * weight
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
