"""A scene: every vector feature of one image or orthomosaic, in map coordinates, drawn once from one seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from shapely.geometry import LineString, Polygon

from survey_cracks.synthetic.cracks import _walk, crack_lines
from survey_cracks.synthetic.features import _SIGMA, _add_confusers, _footprint, _Layer, _poisson
from survey_cracks.synthetic.noise import Surface


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
