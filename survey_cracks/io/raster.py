"""Opening survey rasters and reading patches from them.

One place decides how any raster (GeoTIFF, JPEG, PNG, RGB, RGBA, grey, uint8 or
uint16, georeferenced or not) becomes 8-bit RGB patches plus a validity mask, so
training and inference see identical pixels.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import cv2
import numpy as np
import pyproj
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from survey_cracks.errors import PixelReadError, RasterError
from survey_cracks.io.remote import REMOTE_FIX, RemotePath, Source, as_source, open_with_rasterio

RASTER_SUFFIXES = {".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".vrt", ".img", ".bmp"}
# Non-georeferenced images are placed with x = column, y = -row, the convention QGIS
# uses for images without georeferencing, so outputs overlay the image there.
PIXEL_TRANSFORM = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
T = TypeVar("T")


@dataclass(frozen=True)
class RasterInfo:
    """What the pipeline needs to know about a raster, checked once at open."""

    path: Source  # a local Path, or a RemotePath that each Dask worker opens itself
    width: int
    height: int
    band_indexes: tuple[int, int, int]
    dtype: str
    crs: str | None
    transform: Affine
    georeferenced: bool
    has_mask: bool
    value_range: tuple[float, float] = (0.0, 255.0)
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def pixel_size(self) -> float | None:
        """Ground size of a pixel in metres (GSD-aware tiling), None when not georeferenced.

        Projected CRS: the pixel width in the CRS's linear unit, converted to metres. Geographic
        CRS (EPSG:4326): degrees are no length, so the pixel is measured on the CRS's ellipsoid
        at the raster's centre (the geometric mean of its east-west and north-south sides).
        """
        if not self.georeferenced or self.crs is None:
            return None
        crs = pyproj.CRS.from_user_input(self.crs)
        if crs.is_projected:
            factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
            return float(abs(self.transform.a) * factor)
        if not crs.is_geographic:
            return None
        geod = crs.get_geod()
        if geod is None:
            return None
        centre = self.transform * (self.width / 2, self.height / 2)
        east = self.transform * (self.width / 2 + 1, self.height / 2)
        south = self.transform * (self.width / 2, self.height / 2 + 1)
        dx = geod.inv(*centre, *east)[2]
        dy = geod.inv(*centre, *south)[2]
        return float(np.sqrt(abs(dx * dy)))

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def open_raster(path: str | Source) -> rasterio.io.DatasetReader:
    """Open with a clear error instead of GDAL's; a remote raster through GDAL's /vsicurl/ or /vsis3/."""
    path = as_source(path)
    if isinstance(path, RemotePath):  # not asked first: Dask tasks open the raster once per window
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                return open_with_rasterio(path)
        except RasterioIOError as exc:
            raise RasterError(path, f"cannot read it as a raster ({exc})", REMOTE_FIX) from None
    if not path.exists():
        raise RasterError(path, "file not found", "check the path")
    if path.stat().st_size == 0:
        raise RasterError(path, "file is empty (0 bytes)", "re-export or re-copy the raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterError(path, f"not a readable raster ({exc})", "check the file is a complete GeoTIFF/JPEG/PNG") from None


_SHARED: dict[str, tuple[tuple[int, int] | None, rasterio.io.DatasetReader, threading.Lock]] = {}
_SHARED_LOCK = threading.Lock()


@contextlib.contextmanager
def shared_reader(path: str | Source) -> Iterator[rasterio.io.DatasetReader]:
    """This process's one open handle on ``path``, lent to one thread at a time.

    GDAL keeps the blocks it has decoded per open dataset. Neighbouring windows' reads
    overlap (their margins, and compressed blocks they both touch), so a handle kept across
    a Dask worker's tasks decodes each block about once instead of two to four times
    (100 MP JPEG mosaic in 512 px blocks: 37 % less reading CPU). A handle is reopened when
    its file changes (size or modification time); `close_shared_readers` closes them all.
    """
    source = as_source(path)
    stamp = None if isinstance(source, RemotePath) else _stamp(source)
    with _SHARED_LOCK:
        entry = _SHARED.get(str(source))
        if entry is None or entry[0] != stamp:
            if entry is not None:
                with entry[2]:  # a thread still reading the old file finishes first
                    entry[1].close()
            entry = (stamp, open_raster(source), threading.Lock())
            _SHARED[str(source)] = entry
    with entry[2]:
        yield entry[1]


def close_shared_readers() -> None:
    """Close every `shared_reader` handle (and drop the blocks GDAL cached for them)."""
    with _SHARED_LOCK:
        for _, reader, lock in _SHARED.values():
            with lock:
                reader.close()
        _SHARED.clear()


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None  # open_raster says what is wrong
    return stat.st_size, stat.st_mtime_ns


def read_pixels(path: str | Source, read: Callable[[], T]) -> T:
    """``read()``, with GDAL's read error on a raster that opened (a truncated or corrupt file) raised as a
    `PixelReadError` naming ``path``.

    Raised outside the handler, so GDAL's error is not its ``__context__``: a Dask worker pickles an
    error with its chain, and rasterio's CPLE errors do not unpickle (the client would get a bare Exception).
    """
    try:
        return read()
    except RasterioIOError as exc:
        first_line = (str(exc) or type(exc).__name__).splitlines()[0]
    raise PixelReadError(path, f"cannot read its pixels ({first_line}): the file is truncated or corrupt",
                         "re-copy or re-export it, then run again")


def inspect_raster(path: str | Source) -> RasterInfo:
    """Check band layout, dtype and footprint; raise RasterError naming the fix."""
    path = as_source(path)
    with open_raster(path) as src:
        interp = list(src.colorinterp)
        notes: list[str] = []
        if src.count == 2 and interp[1] != ColorInterp.alpha:
            raise RasterError(
                path,
                f"2-band raster whose second band is not alpha (it is {interp[1].name}): grey + what?",
                "keep the grey band (gdal_translate -b 1 in.tif out.tif), or, if band 2 is the footprint, "
                "mark it as alpha (gdal_translate -colorinterp_2 alpha in.tif out.tif)",
            )
        if src.count in (1, 2):
            bands = (1, 1, 1)
            notes.append("single-band raster: grey replicated to RGB")
        elif src.count in (3, 4):
            bands = (1, 2, 3)
            if src.count == 4 and interp[3] != ColorInterp.alpha:
                notes.append("4-band raster without alpha: band 4 ignored")
        else:
            raise RasterError(
                path,
                f"unsupported band layout ({src.count} bands)",
                "give an RGB, RGBA or single-band raster (e.g. gdal_translate -b 1 -b 2 -b 3)",
            )
        dtype = src.dtypes[0]
        if dtype not in ("uint8", "uint16"):
            raise RasterError(
                path, f"unsupported data type {dtype}", "convert to 8- or 16-bit (gdal_translate -ot Byte -scale)"
            )
        georeferenced = src.crs is not None and not src.transform.is_identity
        if src.crs is None and not src.transform.is_identity:
            notes.append("geotransform without CRS: processed in pixel coordinates")
            georeferenced = False
        flags = src.mask_flag_enums[0]
        has_mask = MaskFlags.all_valid not in flags
        value_range = (0.0, 255.0)
        if dtype == "uint16":
            value_range = read_pixels(path, lambda: _stretch_range(src, bands))
            notes.append(f"16-bit raster stretched from {value_range[0]:.0f}..{value_range[1]:.0f} to 8 bits")
        if has_mask and not read_pixels(path, lambda: _has_valid_pixels(src)):
            raise RasterError(path, "raster has no valid pixels (empty footprint)", "check nodata/alpha settings")
        return RasterInfo(
            path=path,
            width=src.width,
            height=src.height,
            band_indexes=bands,
            dtype=dtype,
            crs=src.crs.to_string() if (georeferenced and src.crs) else None,
            transform=src.transform if georeferenced else PIXEL_TRANSFORM,
            georeferenced=georeferenced,
            has_mask=has_mask,
            value_range=value_range,
            notes=tuple(notes),
        )


def _overview_shape(src: rasterio.io.DatasetReader, longest: int = 1024) -> tuple[int, int]:
    scale = max(1.0, max(src.width, src.height) / longest)
    return max(1, int(src.height / scale)), max(1, int(src.width / scale))


def _has_valid_pixels(src: rasterio.io.DatasetReader, full_scan_limit: float = 50e6) -> bool:
    """A decimated look at the mask; only small rasters are scanned block by block when it sees nothing.

    Reading a mask without overviews touches every block, seconds on a large raster,
    so above ``full_scan_limit`` pixels an empty footprint is left for the pipeline
    to report when no patch lies inside it.
    """
    if src.overviews(1) or src.width * src.height <= full_scan_limit:
        if src.dataset_mask(out_shape=_overview_shape(src), resampling=Resampling.nearest).any():
            return True
        if src.width * src.height > full_scan_limit:
            return False
        from survey_cracks.tiling import block_windows

        return any(src.dataset_mask(window=w).any() for w in block_windows(src.width, src.height, 2048))
    return True


def _stretch_range(src: rasterio.io.DatasetReader, bands: tuple[int, int, int]) -> tuple[float, float]:
    h, w = _overview_shape(src)
    data = src.read(list(dict.fromkeys(bands)), out_shape=(len(set(bands)), h, w), masked=True)
    values = data.compressed() if np.ma.isMaskedArray(data) else data.ravel()
    if values.size == 0:
        return (0.0, 65535.0)
    lo, hi = np.percentile(values, [0.5, 99.5])
    return (float(lo), float(max(hi, lo + 1)))


def read_patch(
    src: rasterio.io.DatasetReader,
    info: RasterInfo,
    window: Window,
    out_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a square ``window`` resampled to ``out_size`` pixels: (RGB uint8 HxWx3, valid bool HxW)."""
    return read_window(src, info, window, (out_size, out_size))


def read_window(
    src: rasterio.io.DatasetReader,
    info: RasterInfo,
    window: Window,
    out_shape: tuple[int, int] | None = None,
    fill: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window`` (optionally resampled to ``out_shape``) as RGB uint8 plus a validity mask.

    Parts of the window outside the raster are filled with zeros and marked invalid,
    so rasters smaller than a patch still work. With ``fill`` the invalid pixels are
    then painted by `fill_invalid`; a caller that cuts patches from a larger read
    passes ``fill=False`` and fills each patch itself, as `read_patch` would.
    """
    out_h, out_w = out_shape or (int(window.height), int(window.width))
    full = Window(0, 0, info.width, info.height)
    inner = window.intersection(full)
    scale_y, scale_x = out_h / window.height, out_w / window.width
    rgb = np.zeros((out_h, out_w, 3), dtype=np.uint8)
    valid = np.zeros((out_h, out_w), dtype=bool)
    # Destination slice of the part that lies inside the raster.
    r0 = int(round((inner.row_off - window.row_off) * scale_y))
    c0 = int(round((inner.col_off - window.col_off) * scale_x))
    h = max(1, min(out_h - r0, int(round(inner.height * scale_y))))
    w = max(1, min(out_w - c0, int(round(inner.width * scale_x))))
    resampling = Resampling.nearest if (scale_x, scale_y) == (1.0, 1.0) else Resampling.bilinear
    unique = list(dict.fromkeys(info.band_indexes))
    inside = rgb[r0 : r0 + h, c0 : c0 + w]

    def read_inside() -> None:
        if len(unique) == 3 and info.dtype == "uint8":
            # GDAL writes straight into the pixel-interleaved array (a band-first view of it): no
            # band-first copy to transpose afterwards (~8 ms of a 1280 px window's ~35 ms read).
            src.read(unique, window=inner, out=inside.transpose(2, 0, 1), resampling=resampling)
        else:
            data = src.read(unique, window=inner, out_shape=(len(unique), h, w), resampling=resampling)
            if len(unique) == 1:
                data = np.repeat(data, 3, axis=0)
            inside[:] = to_uint8(np.moveaxis(data, 0, -1), info.value_range)
        if info.has_mask:
            mask = src.dataset_mask(window=inner, out_shape=(h, w), resampling=Resampling.nearest)
            valid[r0 : r0 + h, c0 : c0 + w] = mask > 0
        else:
            valid[r0 : r0 + h, c0 : c0 + w] = True

    read_pixels(info.path, read_inside)  # a corrupt tile fails here, in the worker that reads it
    if fill:
        fill_invalid(rgb, valid)
    return rgb, valid


def read_context(
    src: rasterio.io.DatasetReader, info: RasterInfo, window: Window, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``window``, which may reach past the raster's edges, for a fully-convolutional network.

    ``window`` is in processing pixels: source pixels x ``scale`` (resampled bilinearly when
    ``scale`` is not 1). Outside the raster the image is mirrored (an edge of flat colour would
    look like a long straight crack); nodata inside the raster is painted by `fill_invalid`. The
    validity mask is False outside the raster and outside the footprint.
    """
    full = Window(0, 0, info.width * scale, info.height * scale)
    inner = window.intersection(full)
    if scale == 1.0:
        rgb, valid = read_window(src, info, inner)
    else:
        # Snap to whole processing pixels, then read the matching (fractional) source window.
        col0, row0 = int(np.floor(inner.col_off)), int(np.floor(inner.row_off))
        col1, row1 = int(np.ceil(inner.col_off + inner.width)), int(np.ceil(inner.row_off + inner.height))
        inner = Window(col0, row0, col1 - col0, row1 - row0)
        source = Window(col0 / scale, row0 / scale, (col1 - col0) / scale, (row1 - row0) / scale)
        rgb, valid = read_window(src, info, source, (row1 - row0, col1 - col0))
    top, left = int(inner.row_off - window.row_off), int(inner.col_off - window.col_off)
    bottom, right = int(window.height) - top - rgb.shape[0], int(window.width) - left - rgb.shape[1]
    if top or left or bottom or right:
        pad = ((top, bottom), (left, right))
        rgb = np.pad(rgb, (*pad, (0, 0)), mode="symmetric")
        valid = np.pad(valid, pad, constant_values=False)
    return rgb, valid


def fill_invalid(rgb: np.ndarray, valid: np.ndarray) -> None:
    """Paint pixels outside the footprint with the mean colour of the valid ones, in place.

    A black nodata border next to real pixels is a long dark straight edge: to a crack
    classifier it looks like a crack, and the footprint outline lit up in the heatmap.
    A flat fill of the surface's own colour has no such edge.
    """
    if valid.all():
        return
    # OpenCV's masked mean and a masked copy: a third of the time of boolean indexing.
    colour = np.array(cv2.mean(rgb, mask=valid.view(np.uint8))[:3]).astype(np.uint8)  # (0, 0, 0) when none is valid
    np.copyto(rgb, colour, where=~valid[..., None])


def to_uint8(data: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Map raster values to 0..255 with the raster's fixed stretch (identity for uint8)."""
    if data.dtype == np.uint8:
        return data
    lo, hi = value_range
    scaled = (data.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled, 0, 255).astype(np.uint8)
