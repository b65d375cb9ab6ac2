"""From a probability raster to crack centrelines with length and width, block by block.

Each block is thresholded and skeletonised with a halo around it, so the skeleton
inside the block is the one the whole raster would give. Skeleton pixels become
2-point segments between pixel centres, each owned by the block of its first pixel
(row-major), so neighbouring blocks' pieces join exactly. Segments are merged per
block into pieces that end at junctions and block borders; the pieces of all
blocks are then merged once, and dangling spurs are pruned on that line graph.
Memory grows with the cracks, never with the raster size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from rasterio.windows import Window
from skimage.morphology import skeletonize

from survey_cracks.config import CentrelineConfig
from survey_cracks.io.raster import RasterInfo
from survey_cracks.vectors.vectorize import measure, simplify

COLUMNS = ["id", "length", "mean_width", "max_width", "unit", "geometry"]
# Pixels read beyond each block side. The skeleton and the distance transform of a
# region depend on pixels up to about its width away, so blocks give the lines of a
# single-piece run for regions up to about this wide.
HALO = 32


@dataclass
class _Lines:
    """Lines in global pixel coordinates (col, row of pixel centres, integers) with width sums for merging."""

    geoms: np.ndarray  # LineStrings
    weighted: np.ndarray  # sum over segments of length x width (px^2)
    peak: np.ndarray  # max width at the vertices (px)

    @staticmethod
    def concat(parts: list[_Lines]) -> _Lines:
        if not parts:
            return _Lines(np.empty(0, dtype=object), np.zeros(0), np.zeros(0))
        return _Lines(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("geoms", "weighted", "peak")))

    def take(self, index: np.ndarray) -> _Lines:
        return _Lines(self.geoms[index], self.weighted[index], self.peak[index])


def halo_window(core: Window, full: Window) -> Window:
    """``core`` grown by `HALO` each side, within ``full``: what a block's skeleton depends on."""
    ext = Window(core.col_off - HALO, core.row_off - HALO, core.width + 2 * HALO, core.height + 2 * HALO)
    return ext.intersection(full)


class CentrelineCollector:
    """Skeleton pieces of a probability raster fed block by block (each with its halo); `lines()` merges them.

    Blocks may come in any order; memory grows with the cracks only.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.pieces: list[_Lines] = []

    def add(self, core: Window, ext: Window, probability: np.ndarray) -> None:
        """``probability`` covers ``ext`` (``core`` and its halo, `halo_window`); NaN is background."""
        self.pieces.append(_block_pieces(probability >= self.threshold, core, ext))

    def lines(self, info: RasterInfo, config: CentrelineConfig) -> gpd.GeoDataFrame:
        # All pieces, not only those at block borders: a junction whose third branch ends
        # inside a block must still stop the merge of the other two.
        return _to_frame(_prune(_merge(_Lines.concat(self.pieces)), config), info, config)


def _block_pieces(hit: np.ndarray, core: Window, ext: Window) -> _Lines:
    """The block's skeleton segments merged into pieces that end at junctions (other blocks' links counted).

    Everything runs on the bounding box of the hits plus a ring of background, which gives
    the skeleton and distances of the whole window (outside the box all is background).
    """
    rows, cols = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
    if not len(rows):
        return _Lines.concat([])
    top, left = max(rows[0] - 1, 0), max(cols[0] - 1, 0)
    hit = hit[top : rows[-1] + 2, left : cols[-1] + 2]
    skeleton = _Skeleton(skeletonize(hit))
    # Outside the read window counts as background, as it does for skeletonize.
    # OpenCV's exact (DIST_MASK_PRECISE) Euclidean distance: ~10x faster than ndimage's.
    edt = cv2.distanceTransform(np.pad(hit, 1).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    sources, targets = _links(skeleton)
    degree = np.bincount(np.concatenate([sources, targets]), minlength=len(skeleton.rows))
    junction = np.zeros(skeleton.shape, dtype=bool)
    junction[skeleton.rows[degree >= 3], skeleton.cols[degree >= 3]] = True
    r0, c0 = int(core.row_off - ext.row_off) - top, int(core.col_off - ext.col_off) - left
    r1, c1 = max(r0 + int(core.height), 0), max(c0 + int(core.width), 0)  # the core may end before the box
    r0, c0 = max(r0, 0), max(c0, 0)
    # Each link belongs to the block of its first pixel.
    rows, cols = skeleton.rows[sources], skeleton.cols[sources]
    owned = (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)
    sources, targets = sources[owned], targets[owned]
    if not len(sources):
        return _Lines.concat([])
    start = np.stack([skeleton.cols[sources], skeleton.rows[sources]], 1)
    end = np.stack([skeleton.cols[targets], skeleton.rows[targets]], 1)
    segments = np.stack([start, end], 1)
    merged = shapely.line_merge(shapely.multilinestrings(shapely.linestrings(segments)))
    xy, index = shapely.get_coordinates(shapely.get_parts(merged), return_index=True)
    parts = np.split(xy.astype(np.int64), np.flatnonzero(np.diff(index)) + 1)
    pieces = [piece for part in parts for piece in _split(part, junction)]
    sizes = [len(piece) for piece in pieces]
    xy, index = np.concatenate(pieces), np.repeat(np.arange(len(pieces)), sizes)
    w = np.maximum(2 * edt[xy[:, 1], xy[:, 0]].astype(np.float64) - 1, 1)
    within = index[1:] == index[:-1]  # consecutive vertices of one piece: a segment
    step = (np.hypot(*np.diff(xy, axis=0).T) * (w[:-1] + w[1:]) / 2)[within]
    weighted = np.bincount(index[1:][within], weights=step, minlength=len(pieces))
    peak = np.maximum.reduceat(w, np.cumsum([0, *sizes[:-1]]))
    return _Lines(shapely.linestrings(xy + [ext.col_off + left, ext.row_off + top], indices=index), weighted, peak)


def _linestrings(coords: list[np.ndarray]) -> np.ndarray:
    """LineStrings of vertex arrays of any lengths, in one call."""
    if not coords:
        return np.empty(0, dtype=object)
    index = np.repeat(np.arange(len(coords)), [len(xy) for xy in coords])
    return shapely.linestrings(np.concatenate(coords), indices=index)


class _Skeleton:
    """A skeleton's pixels (row-major), with each pixel's index for looking neighbours up."""

    def __init__(self, mask: np.ndarray) -> None:
        self.shape = mask.shape
        self.rows, self.cols = np.nonzero(mask)
        self.index = np.full((mask.shape[0] + 2, mask.shape[1] + 2), -1, dtype=np.int32)  # one pixel of padding
        self.index[self.rows + 1, self.cols + 1] = np.arange(len(self.rows))

    def neighbour(self, dr: int, dc: int) -> np.ndarray:
        """Index of each pixel's neighbour at (dr, dc), -1 where that is background."""
        return self.index[self.rows + 1 + dr, self.cols + 1 + dc]


def _links(skeleton: _Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Forward 8-neighbour links (first pixel, second pixel); a diagonal with a shared 4-neighbour is dropped.

    The dropped diagonals would close tiny triangles with the orthogonal path beside them.
    Only the skeleton's pixels are visited, not the block's.
    """
    right, down = skeleton.neighbour(0, 1), skeleton.neighbour(1, 0)
    left = skeleton.neighbour(0, -1)
    down_right = np.where((right < 0) & (down < 0), skeleton.neighbour(1, 1), -1)
    down_left = np.where((left < 0) & (down < 0), skeleton.neighbour(1, -1), -1)
    here = np.arange(len(skeleton.rows))
    sources, targets = [], []
    for there in (right, down, down_right, down_left):  # the order of the pixel-array version's links
        linked = there >= 0
        sources.append(here[linked])
        targets.append(there[linked])
    return np.concatenate(sources), np.concatenate(targets)


def _split(xy: np.ndarray, junction: np.ndarray) -> list[np.ndarray]:
    """Split a block-merged line at vertices that are junctions once other blocks' links count.

    A closed line is first rotated to start at a junction, so no piece ends at a plain vertex.
    """
    cut = np.flatnonzero(junction[xy[1:-1, 1], xy[1:-1, 0]]) + 1
    if len(cut) and (xy[0] == xy[-1]).all() and not junction[xy[0, 1], xy[0, 0]]:
        xy = np.vstack([xy[cut[0] : -1], xy[: cut[0] + 1]])
        cut = np.flatnonzero(junction[xy[1:-1, 1], xy[1:-1, 0]]) + 1
    bounds = [0, *cut.tolist(), len(xy) - 1]
    return [xy[a : b + 1] for a, b in zip(bounds[:-1], bounds[1:])]


def _merge(lines: _Lines) -> _Lines:
    """line_merge, with each input's width sums carried to the line it ends up in.

    An input lies wholly in one output (line_merge never splits its inputs); the midpoint
    of its first segment, exact in half-pixels, lies on that output only.
    """
    if len(lines.geoms) < 2:
        return lines
    merged = shapely.get_parts(shapely.line_merge(shapely.multilinestrings(lines.geoms)))
    first = shapely.get_coordinates(shapely.get_point(lines.geoms, 0))
    second = shapely.get_coordinates(shapely.get_point(lines.geoms, 1))
    src, dst = shapely.STRtree(merged).query(shapely.points((first + second) / 2), predicate="intersects")
    if not np.array_equal(np.sort(src), np.arange(len(lines.geoms))):
        raise RuntimeError("a merged piece was not found on exactly one line")
    peak = np.full(len(merged), -np.inf)
    np.maximum.at(peak, dst, lines.peak[src])
    return _Lines(merged, np.bincount(dst, weights=lines.weighted[src], minlength=len(merged)), peak)


def _nodes(lines: _Lines) -> tuple[np.ndarray, np.ndarray]:
    """Node index of each line's (start, end) and each node's degree (line ends meeting there)."""
    ends = np.concatenate([shapely.get_coordinates(shapely.get_point(lines.geoms, i)) for i in (0, -1)])
    _, node, degree = np.unique(ends, axis=0, return_inverse=True, return_counts=True)
    return node.reshape(2, -1).T, degree


def _prune(lines: _Lines, config: CentrelineConfig) -> _Lines:
    """Remove dangling spurs shorter than ``min_spur_px`` until none is left, then short isolated lines.

    At a junction at most degree - 2 spurs go in one pass (shortest first), so pruning
    never deletes a whole component, only its fringes; the rest re-merges through it.
    """
    while len(lines.geoms):
        node, degree = _nodes(lines)
        free = degree[node] == 1
        length = shapely.length(lines.geoms)
        spur = (free[:, 0] != free[:, 1]) & (degree[node].max(1) >= 3) & (length < config.min_spur_px)
        room = degree - 2
        drop = np.zeros(len(length), dtype=bool)
        for i in np.flatnonzero(spur)[np.argsort(length[spur], kind="stable")]:
            junction = node[i, 1] if free[i, 0] else node[i, 0]
            if room[junction] > 0:
                room[junction] -= 1
                drop[i] = True
        if not drop.any():
            break
        lines = _merge(lines.take(~drop))
    if not len(lines.geoms):
        return lines
    node, degree = _nodes(lines)
    own = np.where(node[:, 0] == node[:, 1], 2, 1)  # a closed line meets itself
    isolated = (degree[node] == own[:, None]).all(1)
    return lines.take(~(isolated & (shapely.length(lines.geoms) < config.min_length_px)))


def _canonical(xy: np.ndarray) -> np.ndarray:
    """One vertex order per line whatever the block layout: simplification then agrees too."""
    if len(xy) > 2 and (xy[0] == xy[-1]).all():
        ring = xy[:-1]
        start = np.lexsort((ring[:, 0], ring[:, 1]))[0]
        ring = np.roll(ring, -start, axis=0)
        if tuple(ring[-1, ::-1]) < tuple(ring[1, ::-1]):
            ring = np.vstack([ring[:1], ring[:0:-1]])
        return np.vstack([ring, ring[:1]])
    return xy[::-1] if tuple(xy[-1, ::-1]) < tuple(xy[0, ::-1]) else xy


def _to_frame(lines: _Lines, info: RasterInfo, config: CentrelineConfig) -> gpd.GeoDataFrame:
    coords = [_canonical(shapely.get_coordinates(g)) for g in lines.geoms]
    order = sorted(range(len(coords)), key=lambda i: coords[i][:, ::-1].ravel().tolist())  # by (row, col) vertices
    geoms = _linestrings([coords[i] for i in order])
    mean_px = lines.weighted[order] / np.maximum(shapely.length(geoms), 1e-12)
    max_px = lines.peak[order]
    if config.simplify_px > 0 and len(geoms):
        geoms = simplify(geoms, config.simplify_px)
    on_map = _to_map(geoms, info)
    length, unit = _length(on_map, info)
    # Widths are across the line: scaled by the turned line's length, which differs where
    # ground pixels are not square (a geographic CRS).
    across = _length(_to_map(_turned(geoms), info), info)[0]
    scale = across / np.maximum(shapely.length(geoms), 1e-12)
    return gpd.GeoDataFrame({"id": np.arange(1, len(geoms) + 1, dtype=np.int64), "length": np.round(length, 4),
                             "mean_width": np.round(mean_px * scale, 4), "max_width": np.round(max_px * scale, 4),
                             "unit": unit}, geometry=on_map, crs=info.crs)


def _to_map(geoms: np.ndarray, info: RasterInfo) -> np.ndarray:
    """Pixel-centre lines (col, row) to map coordinates."""
    t = info.transform

    def to_map(xy: np.ndarray) -> np.ndarray:
        col, row = xy[:, 0] + 0.5, xy[:, 1] + 0.5
        return np.stack([t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f], 1)

    return shapely.transform(geoms, to_map)


def _turned(geoms: np.ndarray) -> np.ndarray:
    """Each line turned a quarter about its first vertex: its length measures the scale across the line."""
    if not len(geoms):
        return geoms
    xy, index = shapely.get_coordinates(geoms, return_index=True)
    first = xy[np.r_[0, np.flatnonzero(np.diff(index)) + 1]][index]
    d = xy - first
    return shapely.linestrings(first + np.stack([-d[:, 1], d[:, 0]], 1), indices=index)


def _length(lines: np.ndarray, info: RasterInfo) -> tuple[np.ndarray, str]:
    """Lengths of lines in map coordinates, in metres when georeferenced, else pixels, with their unit, as `measure`
    decides."""
    _, half, unit = measure(lines, info)  # a line has no area: measure's rectangle length is half of it
    return (2 * half if unit == "m" else shapely.length(lines)), unit


def attach_centrelines(
    polygons: gpd.GeoDataFrame, lines: gpd.GeoDataFrame
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """Crack polygons measured by their centrelines, and lines labelled with their polygon.

    Returns copies: the polygons with ``length`` replaced by the length of centreline
    inside each (kept as vectorize's area/perimeter estimate when none) and ``mean_width`` (length-weighted over those parts) and
    ``max_width`` (of the lines reaching inside; NaN when none) added; the lines with
    ``crack_id``, the id of the polygon holding most of each line's length (<NA> when none).
    """
    if polygons.crs != lines.crs:
        raise ValueError(f"polygons ({polygons.crs}) and lines ({lines.crs}) are in different CRSs")
    # In numpy, the frames built once each: pandas' groupby and column assignments were about half of a
    # 448 x 448 photo's tracing time (cProfile on the bench's photos)
    shapes, strokes = np.asarray(polygons.geometry.values), np.asarray(lines.geometry.values)
    poly_i, line_i = shapely.STRtree(strokes).query(shapes, predicate="intersects")
    # Map-unit lengths to the lines' unit (metres on a geographic CRS), line by line.
    per_unit = lines["length"].to_numpy() / np.maximum(shapely.length(strokes), 1e-300)
    inside = _length_inside(shapes[poly_i], strokes[line_i]) * per_unit[line_i]
    met = inside > 0
    poly_i, line_i, inside = poly_i[met], line_i[met], inside[met]
    count = len(polygons)
    reached = np.bincount(poly_i, minlength=count) > 0
    length = np.bincount(poly_i, weights=inside, minlength=count)
    weighted = np.bincount(poly_i, weights=np.nan_to_num(inside * lines["mean_width"].to_numpy()[line_i]), minlength=count)
    widest = np.full(count, np.nan)
    np.fmax.at(widest, poly_i, lines["max_width"].to_numpy()[line_i])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_width = np.where(reached, weighted / length, np.nan)
    # A speck too small to keep a centreline keeps vectorize's area/perimeter estimate.
    measured = {c: polygons[c].to_numpy() for c in polygons.columns if c not in ("mean_width", "max_width", "unit", "geometry")}
    measured["length"] = np.round(np.where(reached, length, measured["length"]), 4)
    measured |= {"mean_width": np.round(mean_width, 4), "max_width": widest, "unit": polygons["unit"].to_numpy()}
    # Each line's polygon: the pair with most of its length (the first such pair on a tie).
    order = np.lexsort((np.arange(len(inside)), -inside))
    lines_met, first = np.unique(line_i[order], return_index=True)
    crack = pd.array(np.full(len(lines), pd.NA), dtype="Int64")
    crack[lines_met] = polygons["id"].to_numpy()[poly_i[order][first]]
    labelled = {c: lines[c].to_numpy() for c in lines.columns if c not in ("crack_id", "geometry")} | {"crack_id": crack}
    return (gpd.GeoDataFrame(measured, geometry=shapes, crs=polygons.crs, index=polygons.index),
            gpd.GeoDataFrame(labelled, geometry=strokes, crs=lines.crs, index=lines.index))


def _length_inside(polygons: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """Length of each line inside its polygon, pair by pair.

    A centreline is the skeleton of one connected region, so almost every line lies wholly
    inside one polygon: a prepared ``covers`` test settles those, and only the rest (ends
    cut off by simplification) pay for GEOS's overlay, which took seconds per 100 MP.
    """
    shapely.prepare(polygons)
    inside = shapely.length(lines)
    partial = ~shapely.covers(polygons, lines)
    inside[partial] = shapely.length(shapely.intersection(polygons[partial], lines[partial]))
    return inside


__all__ = ["CentrelineCollector", "attach_centrelines", "halo_window", "COLUMNS", "HALO"]
