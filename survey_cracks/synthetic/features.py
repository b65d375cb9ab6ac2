"""Vector features of a scene other than cracks: its footprint and the look-alikes (confusers).

Each kind is a `_Layer` of polygons with a strength per feature and a spatial index, so a
window rasterises only the features it touches."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import shapely
import shapely.affinity
import shapely.errors
import shapely.ops
from shapely.geometry import LineString, Polygon, box

from survey_cracks.synthetic.noise import Surface


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


def _offset(curve: LineString, distance: float, normal: np.ndarray) -> LineString:
    """``curve`` moved ``distance`` to its side: GEOS's offset, or for the odd curve where GEOS fails
    (seen on a 128 px scene: "cannot create std::vector larger than max_size()") a parallel shift along
    ``normal``, which for these gently bent tracks is nearly the same line."""
    try:
        return curve.offset_curve(distance)
    except shapely.errors.GEOSException:
        return shapely.affinity.translate(curve, *(normal * distance))


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
                    stripe = _offset(curve, side * track + g, normal)
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
