"""Ground truth beside a survey raster.

An annotation lives next to its raster ``X.<ext>`` (``X`` = the name without its
final suffix), found in this order:

1. ``X.cracks.geojson`` / 2. ``X.cracks.gpkg`` — polygons, or (multi)lines with an
   optional numeric ``width`` column in map units of the *raster* CRS. Lines are
   buffered by ``width / 2``; without a width they get
   ``EvaluateConfig.default_line_width_px`` pixels. Vectors in any CRS are
   reprojected to the raster CRS. For a non-georeferenced image the coordinates
   are pixel coordinates (x = column, y = -row, as QGIS shows such images) and the
   file must carry no CRS. A GeoJSON without a ``"crs"`` member is read as
   WGS 84 lon/lat (RFC 7946) for a georeferenced raster and as pixel coordinates
   for a non-georeferenced one.
3. ``X.mask.png`` / 4. ``X.mask.tif`` — a raster of the raster's width and height,
   any non-zero value = crack. An all-zero mask is how a crack-free raster is
   annotated (an empty vector file is refused, as it is usually an export mistake).

A vector file may carry a ``label`` column saying what each feature is:

- ``crack`` (also when the column or the value is missing): a crack;
- ``not_crack``: something that looks like one but is not (a formwork joint, a
  seam, a board edge, a paint line). Fine-tuning takes these pixels as hard
  negatives, weighted up; they are background everywhere else;
- ``ignore``: an area nobody is sure of. It counts in neither training nor
  evaluation (pixel, cell and centreline metrics leave its pixels out).

One column in the file the user already draws in keeps the three in one layer,
where QGIS styles them by value; a mask file carries cracks only.

Files named ``*.mask.<ext>`` (or ``*.cracks.<ext>``) are annotations, never
survey rasters (:func:`is_annotation_raster`, the rule ``discover`` applies too).

Everything a user can get wrong raises :class:`AnnotationError` naming the file and
the fix, so a survey evaluation reports the broken annotation and goes on.
"""

from __future__ import annotations

import math
import re
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import rasterio.windows
import shapely
import shapely.affinity
import shapely.errors
import shapely.geometry
from affine import Affine
from pyproj import CRS
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from survey_cracks.config import EvaluateConfig
from survey_cracks.errors import AnnotationError
from survey_cracks.io.geometry import touching_groups
from survey_cracks.io.raster import RasterInfo
from survey_cracks.io.remote import Source, as_source, open_with_rasterio, readable
from survey_cracks.tiling import block_windows

VECTOR_SUFFIXES = (".cracks.geojson", ".cracks.gpkg")
MASK_SUFFIXES = (".mask.png", ".mask.tif")
ANNOTATION_SUFFIXES = VECTOR_SUFFIXES + MASK_SUFFIXES
_MASK_FILE_SUFFIXES = {".png", ".tif", ".tiff"}
_POLYGONAL = {"Polygon", "MultiPolygon"}
_LINEAR = {"LineString", "MultiLineString", "LinearRing"}
# A top-level GeoJSON "crs" member (written by GDAL/QGIS): {"type": "name"|"link", ...}.
_GEOJSON_CRS = re.compile(rb'"crs"\s*:\s*\{\s*"type"')
# Source pixels handled at once when a mask is resampled to a smaller shape.
_STRIP_PIXELS = 1 << 22

TruthKind = Literal["vector", "mask"]
Label = Literal["crack", "not_crack", "ignore"]
LABELS: tuple[Label, ...] = ("crack", "not_crack", "ignore")


def is_annotation_raster(path: str | Source) -> bool:
    """True for ``*.mask.<ext>`` and ``*.cracks.<ext>``: ground truth, never rasters to survey.

    Same rule as ``discover.is_survey_raster``, so a mask is never surveyed itself.
    """
    return Path(as_source(path).stem).suffix.lower() in (".mask", ".cracks")


def annotation_candidates(raster: str | Source) -> list[Source]:
    """The four places an annotation of ``raster`` may be, in lookup order (beside a remote raster: on its server)."""
    raster = as_source(raster)
    base = raster.with_suffix("").name
    return [raster.with_name(base + suffix) for suffix in ANNOTATION_SUFFIXES]


def find_annotation(raster: str | Source) -> Source | None:
    """First existing of ``X.cracks.geojson``, ``X.cracks.gpkg``, ``X.mask.png``, ``X.mask.tif``."""
    if is_annotation_raster(raster):
        return None
    for candidate in annotation_candidates(raster):
        if candidate.is_file():
            return candidate
    return None


class Truth:
    """Annotated cracks of one raster, served window by window.

    Vector truth keeps the buffered geometries (in raster coordinates) and
    rasterizes only those touching the requested window; mask truth reads the
    window from the mask file. Either way memory stays bounded by the window.
    """

    def __init__(
        self,
        path: Path,
        kind: TruthKind,
        info: RasterInfo,
        geometries: np.ndarray | None = None,
        block: int = 1024,
        not_crack: np.ndarray | None = None,
        ignore: np.ndarray | None = None,
    ) -> None:
        self.path = as_source(path)
        self.kind: TruthKind = kind
        self.info = info
        self.block = block
        self.geometries = geometries if geometries is not None else np.empty(0, dtype=object)
        # Areas labelled `not_crack` / `ignore` (vector files only), in raster coordinates.
        self.not_crack = not_crack if not_crack is not None else np.empty(0, dtype=object)
        self.ignore = ignore if ignore is not None else np.empty(0, dtype=object)
        self._objects: gpd.GeoDataFrame | None = None

    def __repr__(self) -> str:
        extra = f", {len(self.geometries)} features" if self.kind == "vector" else ""
        extra += f", {len(self.not_crack)} not_crack" if len(self.not_crack) else ""
        extra += f", {len(self.ignore)} ignore" if len(self.ignore) else ""
        return f"Truth({str(self.path)!r}, kind={self.kind!r}{extra})"

    # Workers of a Dask cluster get the geometries and rebuild the index themselves.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_tree", "_not_crack_tree", "_ignore_tree"):
            state.pop(name, None)
        return state

    @cached_property
    def _tree(self) -> shapely.STRtree:
        return shapely.STRtree(self.geometries)

    @cached_property
    def _not_crack_tree(self) -> shapely.STRtree:
        return shapely.STRtree(self.not_crack)

    @cached_property
    def _ignore_tree(self) -> shapely.STRtree:
        return shapely.STRtree(self.ignore)

    def ignore_mask(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` labelled ``ignore`` (bool, full resolution): left out of training and metrics."""
        return self._burn(_int_window(window), self.ignore, self._ignore_tree if len(self.ignore) else None)

    def not_crack_mask(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` labelled ``not_crack`` (bool, full resolution): hard negatives when fine-tuning.

        A crack drawn across a joint stays a crack: crack pixels are removed from this mask.
        """
        window = _int_window(window)
        hard = self._burn(window, self.not_crack, self._not_crack_tree if len(self.not_crack) else None)
        return hard & ~self._full_res(window) if hard.any() else hard

    def mask(self, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """Crack pixels of ``window`` (bool); outside the raster is False.

        With ``out_shape`` the window is resampled so that an output pixel is True
        when any source pixel under it is (upsampling = nearest).
        """
        window = _int_window(window)
        shape = (int(window.height), int(window.width))
        if out_shape is None or tuple(out_shape) == shape:
            return self._full_res(window)
        return _resample_any(window, (int(out_shape[0]), int(out_shape[1])), self._full_res)

    def _full_res(self, window: Window) -> np.ndarray:
        out = np.zeros((int(window.height), int(window.width)), dtype=bool)
        inner = _clip_to_raster(window, self.info)
        if inner is None:
            return out
        r0 = int(inner.row_off - window.row_off)
        c0 = int(inner.col_off - window.col_off)
        h, w = int(inner.height), int(inner.width)
        if self.kind == "mask":
            with _open_quiet(self.path) as src:
                data = src.read(_data_bands(src), window=inner)
            out[r0 : r0 + h, c0 : c0 + w] = _crack_pixels(data)
            return out
        return self._burn(window, self.geometries, self._tree if len(self.geometries) else None)

    def _burn(self, window: Window, geometries: np.ndarray, tree: shapely.STRtree | None) -> np.ndarray:
        """``geometries`` rasterized onto ``window`` (all touched pixels); outside the raster is False."""
        out = np.zeros((int(window.height), int(window.width)), dtype=bool)
        inner = _clip_to_raster(window, self.info)
        if inner is None or tree is None:
            return out
        r0 = int(inner.row_off - window.row_off)
        c0 = int(inner.col_off - window.col_off)
        h, w = int(inner.height), int(inner.width)
        hits = tree.query(shapely.box(*rasterio.windows.bounds(inner, self.info.transform)))
        if hits.size == 0:
            return out
        burned = rasterio.features.rasterize(
            ((geom, 1) for geom in geometries[np.sort(hits)]),
            out_shape=(h, w),
            transform=rasterio.windows.transform(inner, self.info.transform),
            all_touched=True,
            fill=0,
            dtype="uint8",
        )
        out[r0 : r0 + h, c0 : c0 + w] = burned.astype(bool)
        return out

    def objects(self) -> gpd.GeoDataFrame:
        """One row per annotated crack object, in raster coordinates.

        Objects are groups of features (or mask pixels) that touch each other: a
        crack drawn as several overlapping strokes is one object, and mask pixels
        connect 8-wise (diagonal steps of a thin crack stay one object), across
        block borders too. Parts outside the raster are clipped away.
        """
        if self._objects is None:
            if self.kind == "vector":
                geoms = _merge_touching(self.geometries)
                footprint = _raster_footprint(self.info)
                geoms = shapely.intersection(geoms, footprint) if len(geoms) else geoms
                geoms = np.asarray([g for g in geoms if not g.is_empty and g.area > 0], dtype=object)
            else:
                geoms = self._mask_objects()
            self._objects = gpd.GeoDataFrame(
                {"object_id": np.arange(len(geoms), dtype=np.int64)},
                geometry=gpd.GeoSeries(list(geoms), crs=self.info.crs),
                crs=self.info.crs,
            )
        return self._objects.copy()

    def _mask_objects(self) -> np.ndarray:
        """Connected components of the mask, polygonized block by block.

        Pixel polygons are built in integer pixel coordinates so pieces from
        neighbouring blocks meet exactly, then grouped and moved to raster coordinates.
        Not vectorize.RegionCollector (fed by tracing.HeatmapTracer), which
        reads one band with a ``>= threshold`` test that honours nodata, while a mask's
        crack pixels are "any non-alpha band non-zero" (green-on-black masks included),
        exactly as :meth:`mask` reads them; objects and pixels must agree.
        """
        pieces: list[Any] = []
        with _open_quiet(self.path) as src:
            bands = _data_bands(src)
            for win in block_windows(self.info.width, self.info.height, self.block):
                data = _crack_pixels(src.read(bands, window=win)).astype(np.uint8)
                if not data.any():
                    continue
                shift = Affine.translation(win.col_off, win.row_off)
                for geom, _ in rasterio.features.shapes(data, mask=data > 0, connectivity=4, transform=shift):
                    pieces.append(shapely.geometry.shape(geom))
        merged = _merge_touching(np.asarray(pieces, dtype=object))
        t = self.info.transform
        return np.asarray(
            [shapely.affinity.affine_transform(g, [t.a, t.b, t.d, t.e, t.c, t.f]) for g in merged], dtype=object
        )


def load_truth(
    raster: str | Path,
    info: RasterInfo,
    config: EvaluateConfig | None = None,
    annotation: str | Path | None = None,
) -> Truth:
    """Find, read and check the annotation of ``raster``; raise AnnotationError on any problem."""
    config = config or EvaluateConfig()
    raster = as_source(raster)
    if annotation is None:
        annotation = find_annotation(raster)
        if annotation is None:
            names = ", ".join(p.name for p in annotation_candidates(raster))
            raise AnnotationError(raster, "no annotation found beside the raster", f"add one of: {names}")
    path = as_source(annotation)
    if not path.is_file():
        raise AnnotationError(path, "annotation file not found", "check the path")
    if path.stat().st_size == 0:
        raise AnnotationError(path, "annotation file is empty (0 bytes)", "re-export the annotation")
    if path.suffix.lower() in _MASK_FILE_SUFFIXES:
        return _load_mask(path, info)
    return _load_vector(path, info, config)


def _load_mask(path: Path, info: RasterInfo) -> Truth:
    try:
        with _open_quiet(path) as src:
            size = (src.width, src.height)
            _data_bands(src)
    except (RasterioIOError, ValueError) as exc:
        raise AnnotationError(
            path, f"not a readable mask raster ({exc})", "re-export it as an 8-bit PNG or GeoTIFF, non-zero = crack"
        ) from None
    if size != (info.width, info.height):
        raise AnnotationError(
            path,
            f"mask is {size[0]}x{size[1]} px but the raster {info.path.name} is {info.width}x{info.height} px",
            "export the mask at the raster's full resolution (same width and height)",
        )
    return Truth(path, "mask", info)


def _load_vector(path: Path, info: RasterInfo, config: EvaluateConfig) -> Truth:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frame = gpd.read_file(readable(path))
    except Exception as exc:  # pyogrio raises several types for broken files
        raise AnnotationError(
            path, f"not a readable vector file ({exc})", "re-export it as GeoJSON or GeoPackage (ogr2ogr)"
        ) from None
    if len(frame) == 0:
        raise AnnotationError(
            path,
            "annotation has no features",
            "draw the cracks, or annotate a crack-free raster with an all-zero .mask.png/.mask.tif",
        )
    geoms = frame.geometry.values
    present = ~(shapely.is_missing(np.asarray(geoms, dtype=object)) | shapely.is_empty(np.asarray(geoms, dtype=object)))
    if not present.any():
        raise AnnotationError(path, "annotation has no geometries (all features are empty)", "draw the cracks")
    frame = frame[present]
    _check_types(path, frame)
    labels = _labels(path, frame)
    frame = _to_raster_crs(path, frame, info)
    widths = _line_widths(path, frame, info, config)
    all_shapes = np.asarray(
        [_crack_shape(path, i, g, w) for i, g, w in zip(frame.index, frame.geometry.values, widths)], dtype=object
    )
    drawn = ~shapely.is_empty(all_shapes)
    shapes, labels = all_shapes[drawn], labels[drawn]
    footprint = _raster_footprint(info)
    tree = shapely.STRtree(shapes)
    if tree.query(footprint, predicate="intersects").size == 0:
        xmin, ymin, xmax, ymax = shapely.total_bounds(shapes)
        rxmin, rymin, rxmax, rymax = footprint.bounds
        raise AnnotationError(
            path,
            f"none of its {len(shapes)} features overlap the raster {info.path.name} "
            f"(features span x {xmin:.6g}..{xmax:.6g}, y {ymin:.6g}..{ymax:.6g}; "
            f"raster spans x {rxmin:.6g}..{rxmax:.6g}, y {rymin:.6g}..{rymax:.6g})",
            "is it for another raster/CRS? check the file name and the CRS the file declares",
        )
    return Truth(path, "vector", info, geometries=shapes[labels == "crack"],
                 not_crack=shapes[labels == "not_crack"], ignore=shapes[labels == "ignore"])


def _labels(path: Path, frame: gpd.GeoDataFrame) -> np.ndarray:
    """Each feature's label from the optional ``label`` column (see the module docstring); missing = crack."""
    column = next((c for c in frame.columns if c.lower() == "label" and c != frame.geometry.name), None)
    if column is None:
        return np.full(len(frame), "crack", dtype=object)
    raw = frame[column]
    text = raw.where(raw.notna(), "crack").astype(str).str.strip().str.lower()
    text = text.where(text != "", "crack")
    bad = ~text.isin(LABELS)
    if bad.any():
        values = ", ".join(repr(v) for v in sorted(set(raw[bad.to_numpy()].astype(str))))
        first = frame.index[bad.to_numpy()][0]
        raise AnnotationError(
            path,
            f"{int(bad.sum())} feature(s) have an unknown '{column}' {values} (first: feature {first})",
            f"use one of {', '.join(LABELS)} (empty = crack)",
        )
    return text.to_numpy(dtype=object)


def _check_types(path: Path, frame: gpd.GeoDataFrame) -> None:
    types = frame.geom_type
    bad = ~types.isin(_POLYGONAL | _LINEAR)
    if bad.any():
        kinds = ", ".join(sorted(set(types[bad])))
        first = frame.index[bad.to_numpy()][0]
        raise AnnotationError(
            path,
            f"{int(bad.sum())} feature(s) are {kinds}, not polygons or lines (first: feature {first})",
            "annotate cracks as polygons or lines; convert or remove the others",
        )


def _to_raster_crs(path: Path, frame: gpd.GeoDataFrame, info: RasterInfo) -> gpd.GeoDataFrame:
    """Put the features in the raster's coordinates, refusing CRS mix-ups."""
    declared = frame.crs
    if declared is not None and path.suffix.lower() in (".geojson", ".json") and not geojson_declares_crs(path):
        declared = None  # GDAL's implicit WGS 84; decided below
    if not info.georeferenced:
        if declared is not None:
            raise AnnotationError(
                path,
                f"annotation has a CRS ({_crs_name(declared)}) but {info.path.name} is not georeferenced",
                "store pixel coordinates (x = column, y = -row) without a CRS, or georeference the image",
            )
        return frame
    assert info.crs is not None
    target = CRS.from_user_input(info.crs)
    if declared is None:
        is_geojson = path.suffix.lower() in (".geojson", ".json")
        xmin, ymin, xmax, ymax = frame.total_bounds
        lonlat = -180 <= xmin and xmax <= 180 and -90 <= ymin and ymax <= 90
        if not (is_geojson and lonlat):
            raise AnnotationError(
                path,
                "annotation has no CRS but the raster is georeferenced",
                f"set its CRS, e.g. ogr2ogr -a_srs {_crs_name(target)} fixed{path.suffix} {path.name}",
            )
        frame = frame.set_crs("OGC:CRS84", allow_override=True)  # RFC 7946 GeoJSON
    if CRS.from_user_input(frame.crs) == target:
        return frame
    moved = frame.to_crs(target)
    if not np.isfinite(shapely.get_coordinates(moved.geometry.values)).all():
        raise AnnotationError(
            path,
            f"features cannot be reprojected from {_crs_name(frame.crs)} to {_crs_name(target)}",
            "is it for another raster/CRS? check the CRS the file declares",
        )
    return moved


def geojson_declares_crs(path: Path, chunk: int = 1 << 20) -> bool:
    """Whether a GeoJSON has a ``"crs"`` member; GDAL reports WGS 84 either way."""
    tail = b""
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            if _GEOJSON_CRS.search(tail + block):
                return True
            tail = block[-64:]
    return False


def _line_widths(path: Path, frame: gpd.GeoDataFrame, info: RasterInfo, config: EvaluateConfig) -> np.ndarray:
    """Width of each feature in raster map units (only lines use it)."""
    pixel = math.hypot(info.transform.a, info.transform.d)
    default = config.default_line_width_px * pixel
    widths = np.full(len(frame), default, dtype=np.float64)
    column = next((c for c in frame.columns if c.lower() == "width" and c != frame.geometry.name), None)
    if column is None:
        return widths
    values = frame[column]
    try:
        numeric = values.astype("float64").to_numpy()
    except (TypeError, ValueError):
        raise AnnotationError(
            path, f"column '{column}' is not numeric", "store line widths as numbers in the raster CRS's units"
        ) from None
    bad = np.isfinite(numeric) & (numeric <= 0)
    if bad.any():
        raise AnnotationError(
            path,
            f"{int(bad.sum())} feature(s) have a '{column}' of zero or less",
            "give positive widths, or leave the width empty to use the default",
        )
    known = np.isfinite(numeric)
    widths[known] = numeric[known]
    return widths


def _crack_shape(path: Path, index: Any, geom: Any, width: float) -> Any:
    """The crack area of one feature: a polygon as drawn, a line buffered by width / 2."""
    polygonal = geom.geom_type in _POLYGONAL
    if not geom.is_valid:
        try:
            repaired = shapely.make_valid(geom)
        except shapely.errors.GEOSException:
            repaired = None
        if (
            repaired is None
            or repaired.is_empty
            or not repaired.is_valid
            or (polygonal and _polygonal_part(repaired).is_empty)
        ):
            raise AnnotationError(
                path,
                f"feature {index} is an invalid {geom.geom_type} that cannot be repaired "
                f"({shapely.is_valid_reason(geom)})",
                "fix or redraw it (QGIS: Vector > Geometry Tools > Check Validity)",
            )
        geom = repaired
    if polygonal:
        # make_valid may leave collapsed slivers as lines beside the polygons: drop them.
        return _polygonal_part(geom)
    # A line, or what repairing a broken line left of it, becomes a band of its width.
    return shapely.buffer(geom, width / 2.0)


def _polygonal_part(geom: Any) -> Any:
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in _POLYGONAL]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _merge_touching(geoms: np.ndarray) -> np.ndarray:
    """Union each group of geometries that touch or overlap, transitively."""
    if len(geoms) == 0:
        return geoms
    merged = [geoms[g[0]] if g.size == 1 else shapely.union_all(geoms[g]) for g in touching_groups(geoms)]
    return np.asarray(merged, dtype=object)


def _raster_footprint(info: RasterInfo) -> Any:
    """The raster's extent as a polygon in its own coordinates (exact for rotated transforms)."""
    t = info.transform
    corners = [t @ (0, 0), t @ (info.width, 0), t @ (info.width, info.height), t @ (0, info.height)]
    return shapely.Polygon(corners)


def _clip_to_raster(window: Window, info: RasterInfo) -> Window | None:
    col0, row0 = max(0, int(window.col_off)), max(0, int(window.row_off))
    col1 = min(info.width, int(window.col_off + window.width))
    row1 = min(info.height, int(window.row_off + window.height))
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(col0, row0, col1 - col0, row1 - row0)


def _int_window(window: Window) -> Window:
    col, row = int(round(window.col_off)), int(round(window.row_off))
    width, height = int(round(window.width)), int(round(window.height))
    if width < 0 or height < 0:
        raise ValueError(f"negative window size: {window}")
    return Window(col, row, width, height)


def _resample_any(window: Window, out_shape: tuple[int, int], read: Any) -> np.ndarray:
    """Resample ``read(window)`` so each output pixel is the OR of the source pixels under it.

    Works in horizontal strips of source rows, so a large window sampled to a small
    shape never lives in memory at full resolution.
    """
    height, width = int(window.height), int(window.width)
    out_h, out_w = out_shape
    out = np.zeros(out_shape, dtype=bool)
    if height == 0 or width == 0 or out_h == 0 or out_w == 0:
        return out
    row_starts = (np.arange(out_h, dtype=np.int64) * height) // out_h
    col_starts = (np.arange(out_w, dtype=np.int64) * width) // out_w
    rows_per_strip = max(1, _STRIP_PIXELS // max(1, width))
    i = 0
    while i < out_h:
        j = i + 1
        while j < out_h and row_starts[j] - row_starts[i] < rows_per_strip:
            j += 1
        src0 = int(row_starts[i])
        src1 = int(row_starts[j]) if j < out_h else height
        src1 = max(src1, int(row_starts[j - 1]) + 1)
        strip = read(Window(window.col_off, window.row_off + src0, width, src1 - src0))
        rows = np.logical_or.reduceat(strip, row_starts[i:j] - src0, axis=0)
        out[i:j] = np.logical_or.reduceat(rows, col_starts, axis=1)
        i = j
    return out


def _crack_pixels(data: np.ndarray) -> np.ndarray:
    """(bands, rows, cols) mask values -> crack pixels: non-zero in any band (NaN is not a crack)."""
    hit = data != 0
    if np.issubdtype(data.dtype, np.floating):
        hit &= ~np.isnan(data)
    return hit.any(axis=0)


def _data_bands(src: rasterio.io.DatasetReader) -> list[int]:
    """Mask bands that carry labels (an alpha band is not a label)."""
    bands = [i for i, ci in enumerate(src.colorinterp, start=1) if ci != rasterio.enums.ColorInterp.alpha]
    if not bands:
        raise ValueError("no data band")
    return bands


def _open_quiet(path: Source) -> rasterio.io.DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return open_with_rasterio(path)


def _crs_name(crs: Any) -> str:
    crs = CRS.from_user_input(crs)
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else crs.name
