"""Procedural survey imagery: concrete and asphalt with cracks and look-alikes.

The project ships no third-party imagery, so sample surveys, test fixtures and
benchmark rasters are drawn here. Every random quantity comes from a seed, and the
texture is a function of *global* pixel coordinates (hashed lattices, value noise
and vector features rasterised into padded windows), so a raster drawn window by
window is identical to one drawn in a single piece: that is what lets
:func:`write_orthomosaic` make 400-megapixel rasters in bounded memory.

Cracks are dark, tortuous, branching and irregular. Confusers that a classifier
must learn to reject are drawn with the same machinery but never enter the crack
mask: straight joints and formwork lines, stains, soft shadows, tyre marks, paint
lines, moss specks and bugholes.

Annotation convention: crack lines carry a ``width`` column that is always in the
map units of the *raster* CRS (metres for a projected CRS), whatever CRS the
geometries themselves are written in, because a width in degrees is meaningless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import cv2
import numpy as np
import rasterio
import rasterio.features
import shapely
import shapely.ops
from affine import Affine
from rasterio.enums import MergeAlg
from rasterio.transform import from_origin
from rasterio.windows import Window
from scipy.signal import lfilter
from shapely.geometry import LineString, Polygon, box

Surface = Literal["concrete", "asphalt"]

# ----------------------------------------------------------------------------------
# Global-coordinate noise: a value depends only on (row, col, salt), never on the
# window it is computed in, so tiles drawn separately join seamlessly.
# ----------------------------------------------------------------------------------

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-mixed integer hash on uint64 arrays."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _salt(seed: int, stream: int) -> int:
    """Independent hash stream per (seed, purpose), as a 64-bit int."""
    return ((seed * 0x9E3779B97F4A7C15) ^ (stream * 0xD1B54A32D192ED03) ^ 0x5851F42D4C957F2D) & _MASK64


def _hash2d(rows: np.ndarray, cols: np.ndarray, salt: int) -> np.ndarray:
    """uint64 hash of every (row, col) pair; separable mixing keeps it cheap."""
    hr = _mix64(rows.astype(np.int64).astype(np.uint64) * _U64(0x9E3779B97F4A7C15) + _U64(salt))
    hc = _mix64(cols.astype(np.int64).astype(np.uint64) * _U64(0xC2B2AE3D27D4EB4F) + _U64(salt ^ 0x27D4EB2F165667C5))
    return _mix64(hr[:, None] ^ hc[None, :])


def _bits_uniform(h: np.ndarray, field_index: int) -> np.ndarray:
    """One of four independent 16-bit uniform [0, 1) fields packed in a 64-bit hash."""
    return ((h >> _U64(16 * field_index)) & _U64(0xFFFF)).astype(np.float32) * np.float32(1.0 / 65536.0)


def _bspline_weights(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline weights for nodes i-1..i+2: C2-smooth value noise, no ringing."""
    t2, t3 = t * t, t * t * t
    return np.stack(
        [(1 - t) ** 3 / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6], axis=1
    ).astype(np.float32)


def _interp_taps(pos: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """B-spline taps (indices into a local node range, weights) for pixel positions.

    ``pos`` are pixel-index coordinates on the global grid; node i sits at pixel
    ``i * cell + (cell - 1) / 2``, whatever window asks.
    """
    u = (pos + 0.5) / cell - 0.5
    i = np.floor(u).astype(np.int64)
    first = int(i[0]) - 1
    count = int(i[-1]) + 2 - first + 1
    idx = (i - 1 - first)[:, None] + np.arange(4)[None, :]
    return idx, _bspline_weights(u - i), first, count


def _bspline_std() -> float:
    """Std of B-spline-interpolated iid U(-1, 1) lattice values, to normalise noise to ~1."""
    t = (np.arange(256) + 0.5) / 256
    return float(np.sqrt((_bspline_weights(t) ** 2).sum(axis=1).mean() / 3.0))


_VALUE_NOISE_STD = _bspline_std()


class _WindowNoise:
    """Lazily computed, cached noise fields for one window of the global pixel grid."""

    def __init__(self, seed: int, row0: int, col0: int, h: int, w: int) -> None:
        self.seed, self.row0, self.col0, self.h, self.w = seed, row0, col0, h, w
        self._cache: dict[tuple[object, ...], np.ndarray] = {}

    def value(self, cell: int, stream: int) -> np.ndarray:
        """Smooth value noise, feature size ``cell`` px (>= 8), zero mean, std ~1.

        Evaluated exactly on a coarser grid aligned to the global one (every ``f``
        px, ``f`` ~ cell/4), then linearly upsampled: far cheaper than full
        resolution and indistinguishable for features this smooth. No BLAS, whose
        threads crawl when the cores are busy.
        """
        key = ("v", cell, stream)
        if key not in self._cache:
            f = 1
            while f * 2 <= cell // 4 and f < 16:
                f *= 2
            r0, c0 = self.row0 // f - 1, self.col0 // f - 1
            r1, c1 = -(-(self.row0 + self.h) // f) + 1, -(-(self.col0 + self.w) // f) + 1
            half = (f - 1) / 2
            iy, wy, ry, ny = _interp_taps(np.arange(r0, r1) * f + half, cell)
            ix, wx, rx, nx = _interp_taps(np.arange(c0, c1) * f + half, cell)
            lat = _hash2d(np.arange(ry, ry + ny), np.arange(rx, rx + nx), _salt(self.seed, 1000 + stream))
            vals = (lat >> _U64(40)).astype(np.float32) * np.float32(2.0 / (1 << 24)) - np.float32(1.0)
            rows = sum(wy[:, k, None] * vals[iy[:, k], :] for k in range(4))
            coarse = sum(wx[None, :, k] * rows[:, ix[:, k]] for k in range(4))
            coarse = np.ascontiguousarray(coarse * np.float32(1.0 / _VALUE_NOISE_STD), dtype=np.float32)
            if f > 1:
                coarse = cv2.resize(coarse, ((c1 - c0) * f, (r1 - r0) * f), interpolation=cv2.INTER_LINEAR)
            oy, ox = self.row0 - r0 * f, self.col0 - c0 * f
            self._cache[key] = coarse[oy : oy + self.h, ox : ox + self.w]
        return self._cache[key]

    _PAD = 16  # hash fields are made once per stream, this much larger than the window

    def hashed(self, stream: int, pad: int) -> np.ndarray:
        """Per-pixel uint64 hash over the window grown by ``pad`` (<= 16) px each side."""
        key = ("h", stream)
        if key not in self._cache:
            p = self._PAD
            rows = np.arange(self.row0 - p, self.row0 + self.h + p)
            cols = np.arange(self.col0 - p, self.col0 + self.w + p)
            self._cache[key] = _hash2d(rows, cols, _salt(self.seed, 2000 + stream))
        cut = self._PAD - pad
        full = self._cache[key]
        return full[cut : full.shape[0] - cut, cut : full.shape[1] - cut]

    def blurred(self, stream: int, field_index: int, sigma: float) -> np.ndarray:
        """White noise blurred with ``sigma`` (<= 5) px: granular texture, std ~1, seamless."""
        key = ("b", stream, field_index, sigma)
        if key not in self._cache:
            pad = int(math.ceil(3 * sigma))
            ksize = 2 * pad + 1
            u = _bits_uniform(self.hashed(stream, pad), field_index) - np.float32(0.5)
            out = cv2.GaussianBlur(u, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT)
            k = cv2.getGaussianKernel(ksize, sigma).ravel()
            norm = math.sqrt(1.0 / 12.0) * float((k**2).sum())
            self._cache[key] = out[pad : pad + self.h, pad : pad + self.w] * np.float32(1.0 / norm)
        return self._cache[key]

    def white(self, stream: int, field_index: int) -> np.ndarray:
        """Unblurred uniform [-1, 1) noise: sensor grain."""
        return _bits_uniform(self.hashed(stream, 0), field_index) * np.float32(2.0) - np.float32(1.0)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) * np.float32(1.0 / (e1 - e0)), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


# ----------------------------------------------------------------------------------
# Crack geometry
# ----------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------
# Scene: every vector feature of one image or orthomosaic, in map coordinates
# ----------------------------------------------------------------------------------


@dataclass
class _Layer:
    """Polygons of one feature kind, a strength per feature, and a spatial index."""

    geoms: list[Polygon] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    tree: shapely.STRtree | None = None
    array: np.ndarray | None = None

    def add(self, geom: shapely.Geometry, value: float) -> None:
        if not geom.is_empty:
            self.geoms.append(geom)
            self.values.append(float(value))

    def build(self) -> None:
        self.array = np.asarray(self.geoms, dtype=object)
        self.tree = shapely.STRtree(self.array) if self.geoms else None


# Blur of each confuser kind in px: sets how soft its edges are.
_SIGMA = {
    "stain_rust": 10.0,
    "stain_dark": 10.0,
    "shadow": 22.0,
    "tyre": 2.5,
    "paint_white": 0.7,
    "paint_yellow": 0.7,
    "joint_fill": 0.5,
    "joint_dark": 0.5,
    "joint_light": 0.6,
    "moss": 0.8,
    "bughole": 0.8,
}


@dataclass
class _Scene:
    """Everything needed to draw any window of the image deterministically."""

    seed: int
    surface: Surface
    transform: Affine
    pixel_size: float
    base: float
    tint: np.ndarray
    cracks: list[tuple[LineString, float]]
    crack_layer: _Layer
    layers: dict[str, _Layer]
    footprint: Polygon | None
    moss_colour: np.ndarray
    fill_grey: float
    grain: float  # size of aggregate in px: close-range photos see bigger stones


def _poisson(rng: np.random.Generator, per_mp: float, mp: float, floor: float) -> int:
    """Feature count: proportional to area, with a floor so small scenes still get some."""
    return int(rng.poisson(max(per_mp * mp, floor)))


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, irregular: float = 0.35) -> Polygon:
    """A smooth irregular blob: a circle with random low harmonics on its radius."""
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    radius = np.ones_like(theta)
    for k in range(2, 6):
        radius += rng.uniform(0, irregular / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    aspect = rng.uniform(0.5, 1.0)
    rot = rng.uniform(0, np.pi)
    x, y = r * radius * np.cos(theta), r * radius * aspect * np.sin(theta)
    return Polygon(np.stack([cx + x * np.cos(rot) - y * np.sin(rot), cy + x * np.sin(rot) + y * np.cos(rot)], 1))


def _long_line(bounds: tuple[float, float, float, float], p: np.ndarray, angle: float) -> LineString:
    """A straight line through ``p`` long enough to cross the whole extent."""
    xmin, ymin, xmax, ymax = bounds
    reach = math.hypot(xmax - xmin, ymax - ymin)
    d = np.array([math.cos(angle), math.sin(angle)]) * reach
    return LineString([p - d, p + d])


def _footprint(bounds: tuple[float, float, float, float], rng: np.random.Generator) -> Polygon:
    """Irregular survey footprint: a perturbed superellipse covering ~65-82% of the extent."""
    xmin, ymin, xmax, ymax = bounds
    a, b = (xmax - xmin) / 2, (ymax - ymin) / 2
    cx = (xmin + xmax) / 2 + rng.uniform(-0.04, 0.04) * a
    cy = (ymin + ymax) / 2 + rng.uniform(-0.04, 0.04) * b
    theta = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    p = rng.uniform(2.2, 3.4)
    c, s = np.cos(theta), np.sin(theta)
    ux, uy = np.sign(c) * np.abs(c) ** (2 / p), np.sign(s) * np.abs(s) ** (2 / p)
    pert = np.ones_like(theta)
    for k in range(2, 8):
        pert += rng.uniform(0, 0.09 / k**0.7) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    extent = box(*bounds)
    target = rng.uniform(0.65, 0.82)
    scale = 0.95
    poly = extent
    for _ in range(8):
        poly = Polygon(np.stack([cx + scale * pert * a * ux, cy + scale * pert * b * uy], 1)).buffer(0)
        poly = poly.intersection(extent)
        frac = poly.area / extent.area
        if abs(frac - target) < 0.005:
            break
        scale *= math.sqrt(target / max(frac, 1e-6))
    if poly.geom_type != "Polygon":  # keep the largest part if clipping split it
        poly = max(poly.geoms, key=lambda g: g.area)
    return poly


@dataclass(frozen=True)
class LaterDate:
    """A later survey of the same site: the longest cracks have grown and widened, new ones appeared, the grid moved."""

    seed: int = 1
    grow: int = 3  # how many of the longest cracks grow ...
    grow_px: float = 160.0  # ... by about this many pixels from their end
    widen: float = 1.5  # ... and widen by this factor
    new_cracks: int = 1
    shift_px: tuple[float, float] = (3.3, -1.7)  # the raster grid's offset (columns, rows) from the earlier one


def _grow(cracks: list[tuple[LineString, float]], later: LaterDate, rng: np.random.Generator,
          bounds: tuple[float, float, float, float], px: float) -> tuple[list[tuple[LineString, float]], list[tuple[LineString, float]]]:
    """The earlier cracks (the grown ones wider) and what is added: extensions from their ends and new cracks."""
    longest = sorted(range(len(cracks)), key=lambda i: -cracks[i][0].length)[: later.grow]
    grown, extra = list(cracks), []
    for i in longest:
        line, width = cracks[i]
        xy = np.asarray(line.coords)
        tail = xy[-1] - xy[max(0, len(xy) - 6)]
        found: list[tuple[LineString, float]] = []
        _walk(xy[-1], float(np.arctan2(tail[1], tail[0])), later.grow_px, width * later.widen / px, 2, bounds, px, rng, found)
        grown[i] = (line, width * later.widen)
        extra += found
    extra += crack_lines(bounds, later.new_cracks, rng, px)
    return grown, extra


def _build_scene(
    seed: int,
    bounds: tuple[float, float, float, float],
    pixel_size: float,
    transform: Affine,
    surface: Surface,
    n_cracks: int | None,
    confusers: bool,
    footprint: bool,
    grain: float = 1.0,
    later: LaterDate | None = None,
) -> _Scene:
    """Draw every vector feature once, for the whole extent, from one seeded generator."""
    rng = np.random.default_rng(seed)
    xmin, ymin, xmax, ymax = bounds
    mp = (xmax - xmin) * (ymax - ymin) / pixel_size**2 / 1e6
    px = pixel_size

    def rand_point() -> np.ndarray:
        return rng.uniform((xmin, ymin), (xmax, ymax))

    if surface == "concrete":
        base = rng.uniform(135, 180)
        warm = rng.uniform(-1, 1)
        tint = np.array([1.0 + 0.035 * warm, 1.0, 1.0 - 0.045 * warm + rng.uniform(-0.01, 0.02)], np.float32)
    else:
        base = rng.uniform(68, 108)
        tint = np.array([1.0, 1.0, 1.0 + rng.uniform(0.0, 0.05)], np.float32)

    fp = _footprint(bounds, rng) if footprint else None

    if n_cracks is None:
        n_cracks = int(rng.integers(1, 4)) if mp < 2 else max(1, int(round(1.2 * mp)))
    cracks = crack_lines(bounds, n_cracks, rng, pixel_size)
    if surface == "asphalt":  # ravelled edges: asphalt cracks open wider
        cracks = [(line, width * 1.5) for line, width in cracks]
    extra: list[tuple[LineString, float]] = []
    if later is not None:  # its own generator: the rest of the scene stays the earlier date's
        later_rng = np.random.default_rng([seed, later.seed])
        cracks, extra = _grow(cracks, later, later_rng, bounds, px)
    crack_layer = _Layer()
    for number, (line, width) in enumerate(cracks + extra):
        draw = rng if number < len(cracks) else later_rng
        radius = max(width / 2, 0.75 * px)
        depth = float(np.clip(0.6 + 0.06 * width / px + draw.normal(0, 0.08), 0.55, 0.95))
        # drawn in short overlapping pieces: a window then rasterises only what it touches
        coords = np.asarray(line.coords)
        for i in range(0, len(coords) - 1, 32):
            crack_layer.add(LineString(coords[i : i + 33]).buffer(radius, quad_segs=4), depth)
    crack_layer.build()
    cracks = cracks + extra

    layers = {k: _Layer() for k in _SIGMA}
    if confusers:
        _add_confusers(layers, rng, bounds, px, mp, surface, rand_point)
    else:
        n_holes = _poisson(rng, 60, mp, 10) if surface == "concrete" else 0
        for _ in range(n_holes):
            c = rand_point()
            layers["bughole"].add(shapely.Point(c).buffer(rng.uniform(1.2, 3.5) * px, quad_segs=4), rng.uniform(0.4, 0.8))
    for layer in layers.values():
        layer.build()

    moss = np.array([62, 82, 38], np.float32) * rng.uniform(0.8, 1.15)
    return _Scene(
        seed=seed,
        surface=surface,
        transform=transform,
        pixel_size=px,
        base=float(base),
        tint=tint,
        cracks=cracks,
        crack_layer=crack_layer,
        layers=layers,
        footprint=fp,
        moss_colour=moss,
        fill_grey=float(rng.uniform(35, 60)),
        grain=grain,
    )


def _add_confusers(
    layers: dict[str, _Layer],
    rng: np.random.Generator,
    bounds: tuple[float, float, float, float],
    px: float,
    mp: float,
    surface: Surface,
    rand_point: Callable[[], np.ndarray],
) -> None:
    """Look-alikes of cracks, placed at area-proportional densities."""
    xmin, ymin, xmax, ymax = bounds
    small = mp < 2

    # Joints and formwork lines: long, perfectly straight, constant width.
    joint_lines: list[LineString] = []
    if small:
        n_joint = int(rng.choice([0, 1, 1, 2, 2], p=[0.2, 0.25, 0.2, 0.2, 0.15])) if surface == "concrete" else int(rng.random() < 0.25)
        for _ in range(n_joint):
            axis = rng.choice([0.0, np.pi / 2]) if rng.random() < 0.75 else rng.uniform(0, np.pi)
            joint_lines.append(_long_line(bounds, rand_point(), float(axis + rng.normal(0, 0.02))))
    else:
        rot = rng.normal(0, 0.03)
        families = [(rot, rng.uniform(550, 1100) * px), (rot + np.pi / 2, rng.uniform(700, 1400) * px)]
        if surface == "asphalt":
            families = [(rot, rng.uniform(1200, 2000) * px)]
        centre = np.array([(xmin + xmax) / 2, (ymin + ymax) / 2])
        reach = math.hypot(xmax - xmin, ymax - ymin) / 2
        for angle, spacing in families:
            normal = np.array([-math.sin(angle), math.cos(angle)])
            offset0 = rng.uniform(0, spacing)
            for off in np.arange(-reach + offset0, reach, spacing):
                joint_lines.append(_long_line(bounds, centre + normal * off, float(angle + rng.normal(0, 0.004))))
    for line in joint_lines:
        kind = rng.choice(["sealed", "sawcut", "formwork"], p=[0.35, 0.3, 0.35])
        if kind == "sealed":
            w = rng.uniform(5, 12) * px
            layers["joint_fill"].add(line.buffer(w / 2, cap_style="flat"), rng.uniform(0.85, 1.0))
            for sgn in (-1, 1):
                edge = line.offset_curve(sgn * (w / 2 + 1.0 * px))
                layers["joint_light"].add(edge.buffer(rng.uniform(0.8, 1.4) * px, cap_style="flat"), rng.uniform(0.08, 0.2))
        elif kind == "sawcut":
            w = rng.uniform(2.0, 4.0) * px
            layers["joint_dark"].add(line.buffer(w / 2, cap_style="flat"), rng.uniform(0.35, 0.6))
        else:
            w = rng.uniform(2.0, 5.0) * px
            layers["joint_light"].add(line.buffer(w / 2, cap_style="flat"), rng.uniform(0.08, 0.2))
            edge = line.offset_curve(w / 2 + 0.8 * px)
            layers["joint_dark"].add(edge.buffer(0.9 * px, cap_style="flat"), rng.uniform(0.15, 0.3))
        # moss likes joints: specks strung along some of them
        if rng.random() < 0.35:
            t = rng.random(int(max(20, line.length / px / 25)))
            pts = shapely.line_interpolate_point(line, t * line.length, normalized=False)
            coords = shapely.get_coordinates(pts) + rng.normal(0, 3 * px, (len(t), 2))
            for c in coords[rng.random(len(coords)) < 0.7]:
                layers["moss"].add(shapely.Point(c).buffer(rng.uniform(0.8, 3.0) * px, quad_segs=3), rng.uniform(0.5, 0.9))

    # Stains: blotchy dark or rust-coloured patches with soft edges.
    for _ in range(_poisson(rng, 4.0, mp, 1.0)):
        r = rng.uniform(20, 140) * px
        kind = "stain_rust" if (surface == "concrete" and rng.random() < 0.45) else "stain_dark"
        c = rand_point()
        layers[kind].add(_blob(rng, c[0], c[1], r), rng.uniform(0.45, 1.0))
        for _ in range(int(rng.integers(0, 4))):  # satellite blotches
            d = rng.normal(0, r, 2)
            layers[kind].add(_blob(rng, c[0] + d[0], c[1] + d[1], r * rng.uniform(0.2, 0.5)), rng.uniform(0.4, 0.9))

    # Shadows: large soft dark bands (railings, poles) or corner patches.
    for _ in range(_poisson(rng, 0.25, mp, 0.5)):
        if rng.random() < 0.6:
            band = _long_line(bounds, rand_point(), rng.uniform(0, np.pi)).buffer(rng.uniform(25, 140) * px, cap_style="flat")
            layers["shadow"].add(band.intersection(box(*bounds).buffer(200 * px)), rng.uniform(0.2, 0.4))
        else:
            c = rand_point()
            layers["shadow"].add(_blob(rng, c[0], c[1], rng.uniform(120, 400) * px, 0.5), rng.uniform(0.2, 0.4))

    # Moss / vegetation specks in clusters.
    for _ in range(_poisson(rng, 2.0, mp, 0.6)):
        c = rand_point()
        spread = rng.uniform(10, 50) * px
        pts = c + rng.normal(0, spread, (int(rng.integers(15, 80)), 2))
        for p in pts:
            layers["moss"].add(shapely.Point(p).buffer(rng.uniform(0.8, 3.5) * px, quad_segs=3), rng.uniform(0.5, 0.95))

    if surface == "concrete":
        for _ in range(_poisson(rng, 60.0, mp, 15.0)):
            c = rand_point()
            r = rng.uniform(1.2, 5.0) * px
            layers["bughole"].add(_blob(rng, c[0], c[1], r, 0.3), rng.uniform(0.4, 0.85))
    else:
        # Road markings and wheel paths follow one traffic direction.
        road = float(rng.choice([0.0, np.pi / 2]) + rng.normal(0, 0.12))
        # Tyre / skid marks: pairs of wide, soft, streaky parallel bands.
        for _ in range(_poisson(rng, 0.25, mp, 0.6)):
            angle = road + rng.normal(0, 0.08)
            base_line = _long_line(bounds, rand_point(), angle)
            bend = rng.normal(0, 2e-5)  # gentle curvature, in 1/px
            coords = np.asarray(base_line.segmentize(base_line.length / 40).coords)
            s_px = np.linspace(-1, 1, len(coords)) * base_line.length / 2 / px
            normal = np.array([-math.sin(angle), math.cos(angle)])
            curve = LineString(coords + normal * (bend * s_px**2 * px)[:, None])
            track = rng.uniform(120, 320) * px
            tyre_w = rng.uniform(18, 45) * px
            strength = rng.uniform(0.5, 1.0)
            for side in (-0.5, 0.5) if rng.random() < 0.8 else (0.0,):
                for g in np.linspace(-tyre_w / 2, tyre_w / 2, int(rng.integers(4, 8))):
                    stripe = curve.offset_curve(side * track + g)
                    layers["tyre"].add(stripe.buffer(rng.uniform(1.5, 4.0) * px, cap_style="flat"), strength * rng.uniform(0.4, 1.0))
        # Paint lines: straight bands along the road (a few across it), white or
        # yellow, some dashed; each dash is its own polygon so windows stay cheap.
        for _ in range(_poisson(rng, 0.15, mp, 0.45)):
            across = rng.random() < 0.2
            line = _long_line(bounds, rand_point(), road + (np.pi / 2 if across else 0.0) + rng.normal(0, 0.01))
            half_w = rng.uniform(10, 28) * px
            if rng.random() < 0.5:
                dash, gap = rng.uniform(150, 400) * px, rng.uniform(100, 300) * px
                starts = np.arange(0.0, line.length, dash + gap)
                pieces = [shapely.ops.substring(line, s0, min(s0 + dash, line.length)) for s0 in starts]
            else:
                pieces = [line]
            kind = "paint_yellow" if rng.random() < 0.35 else "paint_white"
            value = rng.uniform(0.75, 1.0)
            for piece in pieces:
                layers[kind].add(piece.buffer(half_w, cap_style="flat"), value)


# ----------------------------------------------------------------------------------
# Rendering one window
# ----------------------------------------------------------------------------------


def _query(layer: _Layer, scene: _Scene, row0: int, col0: int, h: int, w: int, pad: int) -> list[int]:
    """Indices of a layer's features that can touch the padded window."""
    if layer.tree is None:
        return []
    t = scene.transform
    xs, ys = zip(*(t * (c, r) for c, r in ((col0 - pad, row0 - pad), (col0 + w + pad, row0 + h + pad))))
    return [int(i) for i in layer.tree.query(box(min(xs), min(ys), max(xs), max(ys)), predicate="intersects")]


def _rasterize(
    layer: _Layer, idx: list[int], transform: Affine, shape: tuple[int, int], merge: MergeAlg = MergeAlg.replace
) -> np.ndarray:
    """Burn features with their strengths, clipped first to the raster (long lines
    and big blobs would otherwise cost their full vertex count in every window)."""
    assert layer.array is not None
    (x0, y0), (x1, y1) = transform * (-1, -1), transform * (shape[1] + 1, shape[0] + 1)
    clipped = shapely.clip_by_rect(layer.array[idx], min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return rasterio.features.rasterize(
        [(g, layer.values[i]) for g, i in zip(clipped, idx) if not g.is_empty],
        out_shape=shape,
        transform=transform,
        fill=0.0,
        dtype="float32",
        merge_alg=merge,
    )


def _soft_alpha(scene: _Scene, kind: str, row0: int, col0: int, h: int, w: int) -> np.ndarray | None:
    """Blurred coverage of one confuser kind in the window, or None if absent.

    Wide blurs are done on a grid coarser by a power of two that is aligned to the
    global pixel grid, then upsampled, so they stay cheap and seamless.
    """
    layer = scene.layers[kind]
    sigma = _SIGMA[kind]
    f = 1
    while f * 2 <= sigma / 2.5 and f < 16:
        f *= 2
    sl = sigma / f
    pad_lo = int(math.ceil(4 * sl)) + 3
    idx = _query(layer, scene, row0, col0, h, w, pad_lo * f)
    if not idx:
        return None
    r0, c0 = row0 // f - pad_lo, col0 // f - pad_lo
    r1, c1 = -(-(row0 + h) // f) + pad_lo, -(-(col0 + w) // f) + pad_lo
    transform = scene.transform * Affine.translation(c0 * f, r0 * f) * Affine.scale(f)
    merge = MergeAlg.add if kind.startswith("stain") else MergeAlg.replace
    cov = _rasterize(layer, idx, transform, (r1 - r0, c1 - c0), merge)
    if not cov.any():
        return None
    np.minimum(cov, 1.0, out=cov)
    ks = 2 * int(math.ceil(3 * sl)) + 1
    cov = cv2.GaussianBlur(cov, (ks, ks), sl, borderType=cv2.BORDER_REPLICATE)
    if f > 1:
        cov = cv2.resize(cov, ((c1 - c0) * f, (r1 - r0) * f), interpolation=cv2.INTER_LINEAR)
    oy, ox = row0 - r0 * f, col0 - c0 * f
    return cov[oy : oy + h, ox : ox + w]


def _surface(scene: _Scene, nz: _WindowNoise) -> np.ndarray:
    """Luminance of bare concrete or asphalt (float32, grey levels)."""
    f32 = np.float32
    g = scene.grain
    if scene.surface == "concrete":
        lum = f32(scene.base) + f32(9.0) * nz.value(512, 0) + f32(5.5) * nz.value(128, 1)
        lum += f32(3.5) * nz.value(32, 2) + f32(2.5) * nz.value(8, 3)
        agg = nz.blurred(0, 0, 1.4 * g)
        fine = nz.blurred(0, 1, 0.6 * g)
        lum += f32(5.0) * agg + f32(7.0) * _smoothstep(1.2, 2.4, agg) - f32(6.0) * _smoothstep(1.4, 2.6, -agg)
        lum += f32(3.0) * fine
        # pores: isolated dark pinholes a couple of pixels wide
        pore = nz.blurred(0, 2, 0.9 * g)
        lum *= f32(1.0) - f32(0.45) * _smoothstep(2.6, 3.6, -pore)
    else:
        lum = f32(scene.base) + f32(7.0) * nz.value(512, 0) + f32(4.5) * nz.value(128, 1) + f32(2.5) * nz.value(32, 2)
        big = nz.blurred(0, 0, 2.0 * g)
        small = nz.blurred(0, 1, 1.0 * g)
        stones = _smoothstep(0.7, 1.7, big + f32(0.45) * small)
        lum += f32(0.45) * scene.base * stones * (f32(0.75) + f32(0.25) * nz.value(8, 12))
        lum += f32(7.0) * small - f32(0.35) * scene.base * _smoothstep(1.3, 2.3, -small)
        lum += f32(3.0) * nz.white(2, 1)
    return lum


def _render_window(scene: _Scene, row0: int, col0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """RGB uint8 (3, h, w), crack mask 0/255 and validity mask 0/255 (None: all valid).

    Neutral effects are applied to one luminance plane and colour only where it
    matters (rust, paint, moss, shadows), which keeps the cost per pixel low.
    """
    f32 = np.float32
    valid: np.ndarray | None = None
    if scene.footprint is not None:
        x0, y0 = scene.transform * (col0, row0)
        x1, y1 = scene.transform * (col0 + w, row0 + h)
        win_box = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if not scene.footprint.intersects(win_box):
            return np.zeros((3, h, w), np.uint8), np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        if scene.footprint.contains(win_box):
            valid = np.full((h, w), 255, np.uint8)
        else:
            valid = rasterio.features.rasterize(
                [(scene.footprint, 255)],
                out_shape=(h, w),
                transform=scene.transform * Affine.translation(col0, row0),
                fill=0,
                dtype="uint8",
            )

    nz = _WindowNoise(scene.seed, row0, col0, h, w)
    lum = _surface(scene, nz)

    def soft(kind: str) -> np.ndarray | None:
        return _soft_alpha(scene, kind, row0, col0, h, w)

    if (a := soft("bughole")) is not None:
        lum *= f32(1.0) - np.minimum(a * f32(1.6), f32(1.0)) * f32(0.6)
    if (a := soft("stain_dark")) is not None:
        mottle = np.clip(f32(0.65) + f32(0.3) * nz.value(16, 5) + f32(0.15) * nz.value(64, 6), 0.0, 1.0)
        lum *= f32(1.0) - np.minimum(a, f32(1.0)) * mottle * f32(0.42)
    if (a := soft("joint_fill")) is not None:
        lum += a * (f32(scene.fill_grey) + f32(3.0) * nz.blurred(0, 1, 0.6 * scene.grain) - lum)
    if (a := soft("joint_dark")) is not None:
        lum *= f32(1.0) - a
    if (a := soft("joint_light")) is not None:
        lum *= f32(1.0) + a
    lum += f32(2.5) * nz.white(2, 0)  # sensor grain
    np.maximum(lum, f32(0.0), out=lum)

    # Colour from here on, as three contiguous planes: numpy is slow on (h, w, 3).
    chroma = f32(2.5) * nz.value(256, 4)
    tr, tg, tb = (f32(t) for t in scene.tint)
    rgb = [lum * tr + chroma, lum * tg, lum * tb - chroma]

    def mult(alpha: np.ndarray, amount: tuple[float, float, float]) -> None:
        for plane, k in zip(rgb, amount):
            plane *= f32(1.0) - alpha * f32(k)

    def blend(alpha: np.ndarray, colour: tuple[np.ndarray | float, ...]) -> None:
        keep = f32(1.0) - alpha
        for plane, c in zip(rgb, colour):
            plane *= keep
            plane += alpha * c

    if (a := soft("stain_rust")) is not None:
        mottle = np.clip(f32(0.65) + f32(0.3) * nz.value(16, 5) + f32(0.15) * nz.value(64, 6), 0.0, 1.0)
        mult(np.minimum(a, f32(1.0)) * mottle, (0.22, 0.36, 0.52))
    for kind, colour in (("paint_white", (232, 232, 226)), ("paint_yellow", (226, 190, 62))):
        if (a := soft(kind)) is not None:
            wear = np.clip(f32(0.85) + f32(0.35) * nz.value(8, 7) + f32(0.25) * nz.blurred(0, 1, 1.0 * scene.grain), 0.0, 1.0)
            shade = lum * f32(0.25 / scene.base) + f32(0.75)
            blend(a * wear, tuple(shade * f32(c) for c in colour))
    if (a := soft("tyre")) is not None:
        a = f32(1.0) - a * np.clip(f32(0.8) + f32(0.2) * nz.value(32, 8), 0, 1) * f32(0.45)
        for plane in rgb:
            plane *= a
    if (a := soft("moss")) is not None:
        a = np.minimum(a * f32(1.3), f32(1.0)) * np.clip(f32(0.75) + f32(0.3) * nz.value(8, 9), 0, 1)
        var = f32(1.0) + f32(0.15) * nz.blurred(0, 0, 1.4 * scene.grain)
        blend(a, tuple(var * f32(c) for c in scene.moss_colour))

    crack = _draw_cracks(scene, nz, rgb, row0, col0, h, w)

    if (a := soft("shadow")) is not None:
        mult(a, (0.95, 0.92, 0.84))
    out = np.stack([cv2.convertScaleAbs(plane) for plane in rgb])  # >= 0: saturating cast
    if valid is not None and not valid.all():
        out[:, valid == 0] = 0
        crack[valid == 0] = 0
    return out, crack, valid


def _draw_cracks(scene: _Scene, nz: _WindowNoise, rgb: list[np.ndarray], row0: int, col0: int, h: int, w: int) -> np.ndarray:
    """Darken cracks in place with rough, varying edges; return their 0/255 mask.

    The mask is the buffered line (nominal width); the drawn crack wanders about a
    pixel either side of it and fades in depth along its length, as real ones do.
    """
    f32 = np.float32
    pad = 12
    layer = scene.crack_layer
    idx = _query(layer, scene, row0, col0, h, w, pad)
    if not idx:
        return np.zeros((h, w), np.uint8)
    t = scene.transform * Affine.translation(col0 - pad, row0 - pad)
    shape = (h + 2 * pad, w + 2 * pad)
    depth = _rasterize(layer, idx, t, shape)
    m = (depth > 0).astype(np.uint8)
    if not m.any():
        return np.zeros((h, w), np.uint8)
    # work only on the cracks' bounding box (+ pad): results are the same, far cheaper
    bx, by, bw, bh = cv2.boundingRect(m)
    y0, y1 = max(by - pad, 0), min(by + bh + pad, shape[0])
    x0, x1 = max(bx - pad, 0), min(bx + bw + pad, shape[1])
    wy0, wy1, wx0, wx1 = max(y0, pad), min(y1, pad + h), max(x0, pad), min(x1, pad + w)
    mask = np.zeros((h, w), np.uint8)
    if wy0 >= wy1 or wx0 >= wx1:
        return mask
    m, depth = m[y0:y1, x0:x1], depth[y0:y1, x0:x1]
    d_in = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    depth = cv2.dilate(depth, np.ones((5, 5), np.uint8))
    halo = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 2.5)
    local = (slice(wy0 - y0, wy1 - y0), slice(wx0 - x0, wx1 - x0))
    win = (slice(wy0 - pad, wy1 - pad), slice(wx0 - pad, wx1 - pad))
    d_in, d_out, depth, halo, m = d_in[local], d_out[local], depth[local], halo[local], m[local]
    signed = np.where(m > 0, f32(0.5) - d_in, d_out - f32(0.5))
    jitter = f32(0.75) * nz.value(8, 10)[win] + f32(0.35) * nz.blurred(0, 3, 0.7)[win] + f32(0.2)
    if scene.surface == "asphalt":  # edges ravel into the binder and skirt the stones
        jitter -= f32(0.8) * nz.blurred(0, 0, 2.0 * scene.grain)[win] - f32(0.3)
    alpha = np.clip(f32(0.5) + (jitter - signed) * f32(1.1), 0.0, 1.0)
    along = np.clip(f32(0.82) + f32(0.22) * nz.value(24, 11)[win], 0.45, 1.0)
    core = f32(0.85) + f32(0.15) * np.minimum(d_in * f32(0.5), f32(1.0))
    dark = alpha * depth * along * core * f32(0.9) + halo * f32(0.1)
    keep = f32(1.0) - np.minimum(dark, f32(0.92))
    for plane in rgb:
        plane[win] *= keep
    mask[win] = m * np.uint8(255)
    return mask


# ----------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------


def render_scene(
    height: int,
    width: int,
    seed: int,
    surface: Surface = "concrete",
    n_cracks: int | None = None,
    confusers: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One close-range survey photo and its crack mask, for road scans and tests.

    Returns ``(rgb uint8 (H, W, 3), mask uint8 (H, W) in {0, 255})``. The mask marks
    cracks only: confusers are drawn but left out, which is the point of them.
    ``n_cracks=None`` draws 1-3 cracks; 0 gives an all-zero mask.
    """
    if surface not in ("concrete", "asphalt"):
        raise ValueError(f"surface must be 'concrete' or 'asphalt', not {surface!r}")
    scene = _build_scene(
        seed,
        (0.0, 0.0, float(width), float(height)),
        1.0,
        Affine.identity(),
        surface,
        n_cracks,
        confusers,
        False,
        grain=1.6 if surface == "asphalt" else 1.3,
    )
    planes, mask, _ = _render_window(scene, 0, 0, height, width)
    return np.ascontiguousarray(np.moveaxis(planes, 0, 2)), mask


def write_orthomosaic(
    path: str | Path,
    width: int,
    height: int,
    *,
    seed: int,
    crs: str = "EPSG:32631",
    origin: tuple[float, float] = (500000.0, 5700000.0),
    gsd: float = 0.005,
    n_cracks: int | None = None,
    annotation_path: str | Path | None = None,
    annotation_crs: str | None = None,
    block: int = 1024,
    compress: Literal["JPEG", "DEFLATE"] = "JPEG",
    surface: Surface = "concrete",
    annotation_geometry: Literal["lines", "polygons"] = "lines",
    later: LaterDate | None = None,
) -> None:
    """Write a georeferenced, tiled RGB GeoTIFF survey with an irregular footprint.

    Drawn window by window (never the whole raster in memory) so that benchmark
    rasters of hundreds of megapixels can be made anywhere. Pixels outside the
    footprint are 0 and masked in an internal GDAL mask band. Cracks (about 1.2
    per megapixel unless ``n_cracks``) are vectors for the whole extent, so they
    run continuously across tiles; with ``annotation_path`` (.geojson or .gpkg)
    the parts inside the footprint are written as LineStrings with a ``width``
    column in raster-CRS units (or, with ``annotation_geometry="polygons"``, as
    the lines buffered by width/2), in ``annotation_crs`` or the raster CRS.
    ``surface`` picks concrete or asphalt. Same seed, same raster, whatever
    ``block``: texture and vectors depend on global pixel coordinates only.
    ``later`` draws the same site at a later date (LaterDate: grown and new cracks, a
    shifted grid); the annotation then holds the later date's cracks.
    """
    if block % 16 or block <= 0:
        raise ValueError(f"block must be a positive multiple of 16, not {block}")
    if compress not in ("JPEG", "DEFLATE"):
        raise ValueError(f"compress must be 'JPEG' or 'DEFLATE', not {compress!r}")
    if annotation_geometry not in ("lines", "polygons"):
        raise ValueError(f"annotation_geometry must be 'lines' or 'polygons', not {annotation_geometry!r}")
    if annotation_path is not None and Path(annotation_path).suffix.lower() not in _ANNOTATION_DRIVERS:
        raise ValueError(f"annotation_path must end in .geojson or .gpkg, not {Path(annotation_path).name}")
    transform = from_origin(origin[0], origin[1], gsd, gsd)
    bounds = (origin[0], origin[1] - height * gsd, origin[0] + width * gsd, origin[1])
    scene = _build_scene(seed, bounds, gsd, transform, surface, n_cracks, True, True, later=later)
    if later is not None:  # the same site on another grid
        transform = transform * Affine.translation(*later.shift_px)
        scene.transform = transform

    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    if compress == "JPEG":
        profile.update(compress="JPEG", photometric="YCBCR", jpeg_quality=90)
    else:
        profile.update(compress="DEFLATE", predictor=2, photometric="RGB")

    sub = min(block, 512)  # draw in <= 512 px pieces: bounded float temporaries
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a small block cache: written tiles are flushed, not hoarded (bounded RAM at any size)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=64 * 2**20), rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, height, block):
            bh = min(block, height - row0)
            for col0 in range(0, width, block):
                bw = min(block, width - col0)
                rgb = np.zeros((3, bh, bw), np.uint8)
                valid = np.zeros((bh, bw), np.uint8)
                for r in range(0, bh, sub):
                    for c in range(0, bw, sub):
                        sh, sw = min(sub, bh - r), min(sub, bw - c)
                        img, _, v = _render_window(scene, row0 + r, col0 + c, sh, sw)
                        rgb[:, r : r + sh, c : c + sw] = img
                        valid[r : r + sh, c : c + sw] = v if v is not None else 255
                win = Window(col0, row0, bw, bh)
                dst.write(rgb, window=win)
                dst.write_mask(valid, window=win)

    if annotation_path is not None:
        _write_annotations(scene, Path(annotation_path), crs, annotation_crs, annotation_geometry)


_ANNOTATION_DRIVERS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG"}


def _write_annotations(
    scene: _Scene, path: Path, crs: str, annotation_crs: str | None, geometry: Literal["lines", "polygons"]
) -> None:
    """Crack vectors clipped to the footprint, ``width`` in raster-CRS units."""
    import geopandas as gpd

    driver = _ANNOTATION_DRIVERS[path.suffix.lower()]
    geoms: list[shapely.Geometry] = []
    widths: list[float] = []
    for line, w in scene.cracks:
        g = line if geometry == "lines" else line.buffer(w / 2, quad_segs=4)
        if scene.footprint is not None:
            g = g.intersection(scene.footprint)
        for part in getattr(g, "geoms", [g]):
            if not part.is_empty and part.geom_type in ("LineString", "Polygon"):
                geoms.append(part)
                widths.append(w)
    gdf = gpd.GeoDataFrame({"width": np.asarray(widths, float)}, geometry=geoms, crs=crs)
    if annotation_crs is not None:
        gdf = gdf.to_crs(annotation_crs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    gdf.to_file(path, driver=driver, layer=path.stem if driver == "GPKG" else None)
