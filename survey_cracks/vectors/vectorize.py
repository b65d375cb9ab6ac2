"""From a probability raster to crack polygons, block by block.

Connected regions at or above the threshold are traced per block; regions that
touch a block edge are merged with their neighbours afterwards, so a crack that
crosses block borders comes out as one feature. Memory grows with the number of
cracks, never with the raster size.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage
from shapely.geometry import shape

from survey_cracks.config import VectorizeConfig
from survey_cracks.io.geometry import touching_groups
from survey_cracks.io.raster import RasterInfo

COLUMNS = ["id", "max_score", "mean_score", "area", "length", "unit", "geometry"]
EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class _Region:
    geometry: shapely.Geometry
    total: float
    count: int
    peak: float
    on_border: bool = False


class RegionCollector:
    """Collects above-threshold regions block by block; `polygons()` merges and measures them.

    Fed any raster block by block (`tracing.HeatmapTracer`); memory grows with the cracks only.
    """

    def __init__(self, threshold: float, info: RasterInfo, min_area_px: float = 0.0) -> None:
        self.threshold = threshold
        self.info = info
        self.min_area_px = min_area_px
        self.finished: list[_Region] = []
        self.border: list[_Region] = []

    def add(self, window: Window, values: np.ndarray) -> None:
        """``values``: probability over ``window``, NaN where not assessed."""
        hit = values >= self.threshold  # NaN compares False
        if not hit.any():
            return
        for region in _regions(values.astype(np.float32, copy=False), hit, window, self.info, self.min_area_px):
            (self.border if region.on_border else self.finished).append(region)

    def polygons(self, config: VectorizeConfig) -> gpd.GeoDataFrame:
        return _to_frame(self.finished + _merge(self.border), self.info, config)


def _regions(values: np.ndarray, hit: np.ndarray, window: Window, info: RasterInfo, min_area: float = 0.0) -> list[_Region]:
    """Connected regions of one block; those touching an inner block edge are marked for merging.

    Regions wholly inside the block and smaller than ``min_area`` px are dropped before
    tracing: at a low threshold they are most of the regions (hundreds of thousands of
    specks per 100 MP) and most of the tracing time, and `polygons` would drop them anyway.
    """
    width, height = info.width, info.height
    labels, count = ndimage.label(hit, structure=EIGHT)
    # Per-label sum and count over the hit pixels only (bincount: no sorting).
    lab, val = labels[hit], values[hit]
    totals = np.bincount(lab, weights=val, minlength=count + 1)[1:]
    counts = np.bincount(lab, minlength=count + 1)[1:]
    edge = np.zeros_like(hit)
    r0, c0 = int(window.row_off), int(window.col_off)
    if r0 > 0:
        edge[0, :] = True
    if c0 > 0:
        edge[:, 0] = True
    if r0 + hit.shape[0] < height:
        edge[-1, :] = True
    if c0 + hit.shape[1] < width:
        edge[:, -1] = True
    on_edge = np.zeros(count + 1, dtype=bool)
    on_edge[labels[edge & hit]] = True
    on_edge = on_edge[1:]
    kept = np.flatnonzero(on_edge | (counts >= min_area)) + 1
    if not len(kept):
        return []
    # Per-label maximum inside each label's bounding box: ufunc.at and ndimage.maximum
    # (a sort) cost 10-20 ms per block, about as much as the rest of the tracing.
    boxes = ndimage.find_objects(labels)
    peaks = {i: values[boxes[i - 1]][labels[boxes[i - 1]] == i].max() for i in kept.tolist()}
    parts: dict[int, list[shapely.Geometry]] = {}
    # Traced in global pixel coordinates: integers, so neighbouring blocks share edges exactly.
    # Only the bounding box of the kept regions is traced: the cost is per pixel scanned.
    top, left = min(boxes[i - 1][0].start for i in kept), min(boxes[i - 1][1].start for i in kept)
    bottom, right = max(boxes[i - 1][0].stop for i in kept), max(boxes[i - 1][1].stop for i in kept)
    box = np.s_[top:bottom, left:right]
    keep = np.zeros(count + 1, dtype=bool)
    keep[kept] = True
    transform = Affine.translation(c0 + left, r0 + top)
    for geom, value in shapes(labels[box].astype(np.int32), mask=keep[labels[box]], connectivity=8, transform=transform):
        parts.setdefault(int(value), []).append(shape(geom))
    regions = []
    for label, polygons in parts.items():
        geometry = polygons[0] if len(polygons) == 1 else _dissolve(polygons)
        i = label - 1
        regions.append(_Region(geometry, float(totals[i]), int(counts[i]), float(peaks[label]), bool(on_edge[i])))
    return regions


def _merge(regions: list[_Region]) -> list[_Region]:
    """Union regions that touch across block borders (`touching_groups`), in the order of their first part."""
    merged = []
    for members in touching_groups([r.geometry for r in regions]):
        parts = [regions[i] for i in members]
        geometry = parts[0].geometry if len(parts) == 1 else _dissolve([p.geometry for p in parts])
        merged.append(
            _Region(geometry, sum(p.total for p in parts), sum(p.count for p in parts), max(p.peak for p in parts))
        )
    return merged


def _dissolve(parts: list[shapely.Geometry]) -> shapely.Geometry:
    """Union of pixel-traced polygons that meet along shared edges.

    buffer(0) of their multipolygon dissolves the shared edges as a union would, with
    about 3x less time and half the transient memory of GEOS's overlay union on long
    cracks crossing many blocks (measured on a 400 MP survey: 1.8 s and ~100 MiB for
    1631 parts, against 5.3 s and ~230 MiB).
    """
    return shapely.MultiPolygon(shapely.get_parts(parts).tolist()).buffer(0)


def simplify(geoms: np.ndarray, tolerance: float) -> np.ndarray:
    """Douglas-Peucker, falling back to topology-preserving simplification where it breaks a shape.

    Pixel-traced outlines are long staircases: GEOS's topology-preserving simplifier
    indexes every segment and, on a 400 MP survey, took 2.7 s and ~230 MiB for what
    Douglas-Peucker does in 0.1 s with the same vertices to within 0.03 %. The few
    shapes it would make invalid or empty get the careful method.
    """
    simplified = shapely.simplify(geoms, tolerance, preserve_topology=False)
    broken = ~shapely.is_valid(simplified) | shapely.is_empty(simplified)
    simplified[broken] = shapely.simplify(geoms[broken], tolerance, preserve_topology=True)
    return simplified


def _to_frame(regions: list[_Region], info: RasterInfo, config: VectorizeConfig) -> gpd.GeoDataFrame:
    regions = [r for r in regions if r.count >= (config.min_area_px or 0.0)]
    # One order and one vertex order, whatever order the blocks were traced in: ids and
    # files are the same for a run that traced windows as they arrived and for one that
    # traced the finished heatmap.
    geoms = shapely.normalize(shapely.make_valid(np.array([r.geometry for r in regions], dtype=object)))
    if len(regions):
        bounds = shapely.bounds(geoms)
        counts = np.array([r.count for r in regions])
        # Top row, then left column (pixel coordinates); ties by the far corner and size.
        order = np.lexsort((counts, bounds[:, 2], bounds[:, 3], bounds[:, 0], bounds[:, 1]))
        regions, geoms = [regions[i] for i in order], geoms[order]
    if config.simplify_px > 0:
        geoms = simplify(geoms, config.simplify_px)
    t = info.transform
    geoms = shapely.transform(np.asarray(geoms, dtype=object), lambda xy: xy @ np.array([[t.a, t.d], [t.b, t.e]]) + [t.c, t.f])
    area, length, unit = measure(geoms, info)
    # Built once with every column: each column set on a GeoDataFrame afterwards costs a copy and
    # checks (a photo's vectors are built in ~20 ms, half of it in pandas, before this)
    return gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(regions) + 1, dtype=np.int64),
            "max_score": np.array([r.peak for r in regions], dtype=np.float64).round(4),
            "mean_score": np.array([r.total / max(r.count, 1) for r in regions], dtype=np.float64).round(4),
            "area": area,
            "length": length,
            "unit": unit,
        },
        geometry=geoms,
        crs=info.crs,
    )


def measure(geoms: np.ndarray, info: RasterInfo) -> tuple[np.ndarray, np.ndarray, str]:
    """Area and a length estimate of geometries in the raster's map coordinates, in metres when georeferenced, else pixels.

    The length treats each polygon as a rectangle of the same area and perimeter
    (L = (P + sqrt(P^2 - 16 A)) / 4): the long side for a thin crack.
    """
    if not len(geoms):
        return np.zeros(0), np.zeros(0), "m" if info.georeferenced else "px"
    if info.georeferenced and info.crs is not None:
        metric = gpd.GeoSeries(geoms, crs=info.crs)
        if not metric.crs.is_projected:
            metric = metric.to_crs(metric.estimate_utm_crs())
        factor = metric.crs.axis_info[0].unit_conversion_factor if metric.crs.axis_info else 1.0
        area = shapely.area(metric.values) * factor**2
        perimeter = shapely.length(metric.values) * factor
        unit = "m"
    else:
        area, perimeter, unit = shapely.area(geoms), shapely.length(geoms), "px"
    length = (perimeter + np.sqrt(np.clip(perimeter**2 - 16 * area, 0, None))) / 4
    return np.round(area, 6), np.round(length, 4), unit


__all__ = ["RegionCollector", "measure", "simplify", "COLUMNS"]
