"""Crack geometry: random branching polylines with widths, in map coordinates."""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter
from shapely.geometry import LineString


def crack_lines(
    bounds: tuple[float, float, float, float], n: int, rng: np.random.Generator, pixel_size: float
) -> list[tuple[LineString, float]]:
    """Random branching crack polylines inside ``bounds``, each with a width.

    A crack is a random walk whose turning rate is itself smoothed noise (so the
    direction drifts like a real crack following aggregate) with small jitter on
    top; branches split off at 20-65 degrees and are thinner, and are returned as
    entries of their own. A walk stops where it leaves ``bounds``. Widths are 1-6
    px times ``pixel_size``, in the units of ``bounds``, thin cracks being commoner.
    """
    xmin, ymin, xmax, ymax = bounds
    span_px = min(xmax - xmin, ymax - ymin) / pixel_size
    out: list[tuple[LineString, float]] = []
    for _ in range(n):
        for _attempt in range(10):
            length_px = rng.uniform(0.35, 1.1) * min(span_px, 1600.0)
            width_px = 1.0 + 5.0 * rng.beta(1.3, 2.6)
            start = rng.uniform((xmin, ymin), (xmax, ymax))
            found: list[tuple[LineString, float]] = []
            _walk(start, rng.uniform(0, 2 * np.pi), length_px, width_px, 0, bounds, pixel_size, rng, found)
            if found:
                out.extend(found)
                break
    return out


def _walk(
    start: np.ndarray,
    heading: float,
    length_px: float,
    width_px: float,
    level: int,
    bounds: tuple[float, float, float, float],
    pixel_size: float,
    rng: np.random.Generator,
    out: list[tuple[LineString, float]],
) -> None:
    """One crack or branch: vectorised walk, clipped at the first exit from bounds."""
    step = 5.0
    n = max(3, int(length_px / step))
    # slow drift of the overall direction, plus zigzag that does not accumulate
    turn = lfilter([1.0], [1.0, -0.97], rng.normal(0.0, 0.0035, n))
    headings = heading + np.cumsum(turn) + rng.normal(0.0, 0.32, n)
    steps = np.stack([np.cos(headings), np.sin(headings)], axis=1) * step
    pts_px = np.vstack([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    pts_px[1:] += rng.normal(0.0, 0.6, (n, 2))
    pts = start + pts_px * pixel_size
    xmin, ymin, xmax, ymax = bounds
    inside = (pts[:, 0] >= xmin) & (pts[:, 0] <= xmax) & (pts[:, 1] >= ymin) & (pts[:, 1] <= ymax)
    end = int(np.argmin(inside)) if not inside.all() else len(pts)
    if end < 3:
        return
    pts, headings = pts[:end], headings[: end - 1]
    out.append((LineString(pts), float(width_px * pixel_size)))
    if level >= 2:
        return
    branch_p = 0.008 if level == 0 else 0.004
    for k in np.flatnonzero(rng.random(len(headings)) < branch_p):
        if k < 2:
            continue
        side = rng.choice((-1.0, 1.0))
        _walk(
            pts[k],
            float(headings[k] + side * rng.uniform(0.35, 1.15)),
            length_px * rng.uniform(0.15, 0.5),
            max(1.0, width_px * rng.uniform(0.45, 0.8)),
            level + 1,
            bounds,
            pixel_size,
            rng,
            out,
        )
