"""Synthetic hard negatives: straight non-crack lines drawn on real training crops.

On real structures the shipped model's false cracks are straight linear features that
are not cracks: joints between formwork boards, slab and panel joints, sealed joints, the
edges of lane markings and of surfacing patches (issue 27). The training sets hold few of
them, so the model never learnt that "long, straight, uniform" means "not a crack". Here
such features are drawn onto real crops, on their own texture and lighting, and marked as
hard negatives: the loss weighs their pixels ``negative_weight`` times as background
(`segment.mask_loss`), the same way a user's `not_crack` annotations count.

A drawn feature never hides a crack: joints darken multiplicatively (a crack under them
stays darker than its surroundings and keeps its label), and opaque paint is only laid
where the crop has no crack pixel under it.
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("joint", "sealed_joint", "board_joints", "paint_edge", "patch_edge")
EDGE_HALF_WIDTH = 2.5  # px either side of a marking's or patch's edge marked as hard negative


def _distance(shape: tuple[int, int], rng: np.random.Generator, offset: float = 0.0) -> np.ndarray:
    """Signed distance (px) of every pixel from a random straight line, mostly near an image axis.

    Joints and markings follow the structure's grid, which surveys align more often than
    not; a third of the lines take any angle.
    """
    h, w = shape
    if rng.random() < 0.67:
        angle = float(rng.integers(2)) * np.pi / 2 + rng.normal(0.0, np.deg2rad(4))
    else:
        angle = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.15 * h, 0.85 * h), rng.uniform(0.15 * w, 0.85 * w)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    return (cols - cx) * np.float32(np.sin(angle)) - (rows - cy) * np.float32(np.cos(angle)) - np.float32(offset)


def _groove(distance: np.ndarray, width: float, depth: float) -> np.ndarray:
    """Darkening factor (1 = unchanged) of a joint: flat-bottomed, soft-edged, uniform along its length."""
    return 1.0 - depth * np.exp(-((np.abs(distance) / (width / 2)) ** 4))


def draw_straight_negatives(rgb: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One straight look-alike drawn on ``rgb`` (H, W, 3 uint8); returns the new image and its hard-negative mask.

    ``target`` (H, W, 1 = crack) is only read: crack pixels stay cracks in the label, and
    paint is not laid over them.
    """
    out = rgb.astype(np.float32)
    shape = target.shape
    kind = KINDS[int(rng.integers(len(KINDS)))]
    texture = 1.0 + rng.normal(0.0, 0.04, shape).astype(np.float32)  # the feature is not perfectly uniform
    if kind in ("paint_edge", "patch_edge"):
        distance = _distance(shape, rng)
        band = distance > 0
        if kind == "paint_edge":
            band &= distance < rng.uniform(15, 90)  # a line or a marking's edge
        if target[band].any():
            kind = "joint"  # never paint over a crack: draw a joint instead
        else:
            soft = cv2.GaussianBlur(band.astype(np.float32), (0, 0), rng.uniform(0.6, 1.5))[..., None]
            if kind == "paint_edge":
                colour = np.array([rng.uniform(215, 255)] * 3 if rng.random() < 0.6
                                  else [rng.uniform(200, 240), rng.uniform(170, 210), rng.uniform(20, 70)], np.float32)
                paint = colour * texture[..., None]
                out = out * (1 - soft * rng.uniform(0.6, 0.95)) + paint * soft * rng.uniform(0.6, 0.95)
            else:  # a patch of other surfacing: its own tone, same texture
                out = out * (1 + soft * rng.uniform(-0.35, 0.35)) + soft * rng.uniform(-20, 20)
            edges = np.abs(distance) < EDGE_HALF_WIDTH
            if kind == "paint_edge":
                edges |= np.abs(distance - distance[band].max()) < EDGE_HALF_WIDTH if band.any() else False
            return np.clip(out, 0, 255).astype(np.uint8), edges
    if kind == "board_joints":  # formwork: parallel joints at a regular spacing, boards of slightly different tone
        spacing = rng.uniform(30, 110)
        base = _distance(shape, rng)
        width, depth = rng.uniform(1.5, 4.0), rng.uniform(0.15, 0.45)
        board = np.floor(base / spacing)
        tone = 1.0 + rng.normal(0.0, 0.06, int(board.max() - board.min()) + 1).astype(np.float32)
        out *= tone[(board - board.min()).astype(int)][..., None]
        local = base - np.round(base / spacing) * spacing  # signed distance to the nearest joint
        factor = _groove(local, width, depth)
        negative = np.abs(local) < width / 2 + 1.5
    else:
        distance = _distance(shape, rng)
        width = rng.uniform(2.0, 10.0)
        factor = _groove(distance, width, rng.uniform(0.25, 0.7))
        if kind == "sealed_joint":  # sealant between lighter chamfered arrises
            factor = factor + 0.25 * np.exp(-(((np.abs(distance) - width / 2 - 1.5) / 1.2) ** 2))
        negative = np.abs(distance) < width / 2 + 2.0
    out *= (factor * texture)[..., None] if kind != "board_joints" else factor[..., None]
    return np.clip(out, 0, 255).astype(np.uint8), negative
