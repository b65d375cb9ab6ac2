"""Per-pixel crack probability from overlapping patch scores, streamed to a COG.

Each patch score is spread over its window with a smooth weight (highest in the
centre, ``blend_floor`` at the edges) and overlapping windows are averaged as
``sum(weight * score) / sum(weight)``, Raster Vision's scores/hits accumulation done
per output block, so there are no seams and memory does not grow with the raster.
Blocks go to a tiled GeoTIFF, which GDAL's COG driver then turns into a
Cloud-Optimized GeoTIFF with overviews (BigTIFF when needed).

The stored values are probability levels, uint8 0..250 with scale 1/250 (255: outside
the footprint), not float32: a 400 MP float32 heatmap was 1.6 GB to stage and took most
of a run's tail to compress, for a precision (0.004) below the model's calibration.
GDAL, QGIS and rasterio readers that apply scale/offset see probabilities 0..1;
`read_probability` is the one way this package reads them back.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import Future, wait
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from survey_cracks.background import in_background
from survey_cracks.config import HeatmapConfig
from survey_cracks.io.raster import RasterInfo, open_raster
from survey_cracks.tiling import PatchGrid, block_windows

LEVELS = 250  # probability 1.0; a level is 0.004
NODATA = 255
SCALE = 1.0 / LEVELS
# What QGIS's layer properties and gdalinfo show for band 1: what the number is, and that it is a 0..1 ratio.
DESCRIPTION = "crack probability"
UNITS = "probability (0-1)"
MASK_DESCRIPTION = "crack (1) or not (0)"
# Every level's probability as float32, NaN for nodata: thresholds compare these values,
# whoever reads the heatmap (tracing, evaluation), so they always agree.
_PROBABILITY_OF_LEVEL = np.where(np.arange(256) <= LEVELS, np.arange(256) / LEVELS, np.nan).astype(np.float32)


def to_levels(probability: np.ndarray) -> np.ndarray:
    """Probabilities (NaN: not assessed) to stored uint8 levels."""
    p = np.asarray(probability, dtype=np.float32)
    levels = np.rint(np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0) * LEVELS).astype(np.uint8)
    levels[~np.isfinite(p)] = NODATA
    return levels


def probability_of(levels: np.ndarray) -> np.ndarray:
    """Stored uint8 levels to float32 probability, NaN where not assessed."""
    return _PROBABILITY_OF_LEVEL[levels]


def read_probability(src: rasterio.io.DatasetReader, window: Window | None = None,
                     out_shape: tuple[int, int] | None = None, boundless: bool = False) -> np.ndarray:
    """Band 1 as float32 probability with NaN outside the footprint (and, ``boundless``, outside the raster).

    Reads this package's uint8 level heatmaps and float heatmaps of earlier versions
    (nodata -1) alike; ``out_shape`` reads a decimated copy (nearest level, from overviews).
    """
    options = {"out_shape": out_shape, "resampling": Resampling.nearest} if out_shape is not None else {}
    if boundless:
        options.update(boundless=True, fill_value=src.nodata if src.nodata is not None else 0)
    data = src.read(1, window=window, **options)
    if data.dtype == np.uint8:
        return probability_of(data)
    values = data.astype(np.float32, copy=False)
    if src.nodata is not None:
        values = np.where(values == src.nodata, np.nan, values)
    return values


def blend_ramp(size: int, floor: float) -> np.ndarray:
    """Raised-sine weight along one axis of a patch: ``floor`` at the edges, 1 in the centre."""
    ramp = np.sin(np.pi * (np.arange(size) + 0.5) / size).astype(np.float32)
    return (floor + (1.0 - floor) * ramp).astype(np.float32)


def blend_weights(size: int, floor: float) -> np.ndarray:
    """The 2-D weight of one patch (separable: the outer product of two ramps)."""
    ramp = blend_ramp(size, floor)
    return np.outer(ramp, ramp)


def heatmap_profile(info: RasterInfo, config: HeatmapConfig) -> dict:
    """Tiled uint8 staging profile; compression is applied by the COG copy."""
    return {
        "driver": "GTiff",
        "width": info.width,
        "height": info.height,
        "count": 1,
        "dtype": "uint8",
        "crs": info.crs,
        "transform": info.transform,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": config.block_size,
        "blockysize": config.block_size,
        "BIGTIFF": "IF_SAFER",
    }


def _axis_weights(offsets: np.ndarray, start: int, length: int, ramp: np.ndarray) -> np.ndarray:
    """(windows, pixels) weight of each window row/column at each pixel of the block."""
    position = np.arange(start, start + length)[None, :] - offsets[:, None]
    inside = (position >= 0) & (position < len(ramp))
    return np.where(inside, ramp[np.clip(position, 0, len(ramp) - 1)], 0.0).astype(np.float32)


def block_heatmap(
    window: Window, grid: PatchGrid, scores: np.ndarray, ramp: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted score sum and weight sum for one output block."""
    return BlockBlender(grid, scores, ramp).sums(window)


class BlockBlender:
    """Blends the scores of all windows over an output block.

    The windows form a lattice and the weight is separable, so the sums over all
    overlapping windows are two small matrix products, ``Wr.T @ S @ Wc``. The row
    and column weights are the same for every block of a block row or column, so
    they are computed once each.
    """

    def __init__(self, grid: PatchGrid, scores: np.ndarray, ramp: np.ndarray) -> None:
        self.grid, self.ramp = grid, ramp
        self.lattice = scores.reshape(len(grid.rows), len(grid.cols))
        self._row_weights: dict[tuple[int, int], np.ndarray] = {}
        self._col_weights: dict[tuple[int, int], np.ndarray] = {}

    def sums(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        r0, c0, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        row_idx, col_idx = self.grid.lattice_overlap(window)
        if (r0, h) not in self._row_weights:
            self._row_weights = {(r0, h): _axis_weights(self.grid.rows[row_idx], r0, h, self.ramp)}  # blocks come row by row
        if (c0, w) not in self._col_weights:
            self._col_weights[(c0, w)] = _axis_weights(self.grid.cols[col_idx], c0, w, self.ramp)
        wr, wc = self._row_weights[(r0, h)], self._col_weights[(c0, w)]
        lattice = self.lattice[np.ix_(row_idx, col_idx)]
        scored = np.isfinite(lattice)
        total = wr.T @ np.where(scored, lattice, 0.0).astype(np.float32) @ wc
        weight = wr.T @ scored.astype(np.float32) @ wc
        return total, weight


def staging_path(path: Path) -> Path:
    """Where `StagedHeatmap` builds the heatmap ``path``."""
    return Path(path).with_name(f".{Path(path).stem}.staging.tif")


def staged_heatmap_problem(path: Path, info: RasterInfo, config: HeatmapConfig) -> str | None:
    """Why the staged heatmap of ``path`` left by an interrupted run cannot be resumed; None when it can."""
    try:
        with _open_staging(staging_path(path), "r") as src:
            profile = src.profile
    except (OSError, rasterio.errors.RasterioError) as error:
        return f"staged heatmap unreadable ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    expected = heatmap_profile(info, config)
    if any(profile.get(key) != expected[key] for key in ("width", "height", "dtype", "nodata", "blockxsize", "blockysize")):
        return "staged heatmap of another grid"
    return None


class StagedHeatmap:
    """The heatmap under construction: an uncompressed tiled GeoTIFF on the raster's grid.

    Stages write it window by window (`write`, `write_levels`), in any order, and may read
    back what is written (`read`: unwritten pixels read as nodata); `start_publishing` turns
    it into the COG at ``path``. Until then nothing exists under the final name. Leaving the
    context removes every temporary file, except the staging file when interrupted
    (KeyboardInterrupt, SystemExit): with ``resume`` a rerun reopens it and goes on (`flush`
    makes what is written so far durable).
    """

    def __init__(self, path: Path, info: RasterInfo, config: HeatmapConfig, resume: bool = False) -> None:
        self.path, self.info, self.config, self.resume = Path(path), info, config, resume
        self.staging = staging_path(self.path)
        self._partial = self.path.with_name(f".{self.path.stem}.partial.tif")
        self._dst: rasterio.io.DatasetWriter | None = None
        self._published: Future[Path] | None = None

    def __enter__(self) -> "StagedHeatmap":
        if self.resume:
            problem = staged_heatmap_problem(self.path, self.info, self.config)
            if problem:
                raise ValueError(f"{self.staging}: {problem}")
            self._dst = _open_staging(self.staging, "r+")
            return self
        self._dst = _open_staging(self.staging, "w+", **heatmap_profile(self.info, self.config))
        self._dst.scales, self._dst.offsets = (SCALE,), (0.0,)
        describe_band(self._dst, DESCRIPTION, UNITS)
        return self

    def flush(self) -> None:
        """Every pixel written so far on disk (GDAL's cache written out, then fsync), for a rerun after a kill."""
        assert self._dst is not None and not self._dst.closed
        self._dst.close()
        with open(self.staging, "rb+") as fh:
            os.fsync(fh.fileno())
        self._dst = _open_staging(self.staging, "r+")

    def levels(self, window: Window) -> np.ndarray:
        """Stored levels in ``window`` as written (nodata where nothing is)."""
        assert self._dst is not None and not self._dst.closed
        return self._dst.read(1, window=window)

    def write(self, window: Window, probability: np.ndarray) -> None:
        """Crack probability for ``window``; NaN (outside the footprint) is stored as nodata."""
        self.write_levels(window, to_levels(probability))

    def write_levels(self, window: Window, levels: np.ndarray) -> None:
        """Stored levels (`to_levels`) for ``window``, as Dask workers send them."""
        assert self._dst is not None, "use StagedHeatmap as a context manager"
        self._dst.write(levels, 1, window=window)

    def read(self, window: Window) -> np.ndarray:
        """Probability written so far in ``window`` (NaN where nothing is)."""
        assert self._dst is not None and not self._dst.closed, "read before publish"
        return read_probability(self._dst, window)

    def start_publishing(self) -> Future[Path]:
        """Start building the COG on a thread; the future's result is ``path``, once the COG is in place.

        Nothing more is written. The copy releases the GIL, so work that follows the heatmap
        (merging and writing the vectors) overlaps it instead of following it; the staging
        file lives until the context is left, which waits for the copy.
        """
        assert self._dst is not None and self._published is None
        self._dst.close()
        self._published = in_background(self._publish, "cog")
        return self._published

    def publish(self) -> Path:
        """Build the COG and move it into place (`start_publishing`, waited for)."""
        return self.start_publishing().result()

    def _publish(self) -> Path:
        _copy_to_cog(self.staging, self._partial, self.config)
        os.replace(self._partial, self.path)
        return self.path

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if self._published is not None:
            wait([self._published])  # the copy finishes (or fails) before its files are cleaned up
        if self._dst is not None and not self._dst.closed:
            self._dst.close()
        interrupted = kind is not None and not issubclass(kind, Exception)
        for leftover in (self._partial,) if interrupted else (self.staging, self._partial):
            leftover.unlink(missing_ok=True)


def _open_staging(staging: Path, mode: str, **profile: Any) -> Any:
    """The staging file, without GDAL's warning about pixel-coordinate grids.

    Pixel-coordinate outputs carry x = column, y = -row on purpose (see raster.PIXEL_TRANSFORM).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(staging, mode, **profile)


def describe_band(dst: Any, description: str, units: str, **tags: str) -> None:
    """Band 1's description, unit type and tags (``units`` too, for readers of tags only); the COG copy keeps them."""
    dst.set_band_description(1, description)
    dst.units = (units,)
    dst.update_tags(1, units=units, **tags)


def write_crack_mask(heatmap: Path, target: Path, threshold: float, config: HeatmapConfig) -> Path:
    """``target``: a uint8 COG of ``heatmap``'s grid, 1 where the probability is >= ``threshold``, 0 below, 255 outside.

    The crack/no-crack raster many GIS workflows want (zonal statistics, raster calculator)
    without picking a threshold themselves. Written block by block through a tiled staging
    file and the COG copy, like the heatmap: memory stays one block whatever the raster's size.
    The comparison is the tracer's (`probability_of` of the stored levels), so the mask is
    the crack polygons' pixels (and the specks under ``min_area_px`` they leave out). Overviews take the nearest pixel: an average
    of 0 and 1 would be neither.
    """
    target = Path(target)
    staging = target.with_name(f".{target.stem}.staging.tif")
    partial = target.with_name(f".{target.stem}.partial.tif")
    try:
        with open_raster(heatmap) as src:
            profile = {**{k: src.profile[k] for k in ("width", "height", "crs", "transform")}, "driver": "GTiff", "count": 1,
                       "dtype": "uint8", "nodata": NODATA, "tiled": True, "blockxsize": config.block_size,
                       "blockysize": config.block_size, "BIGTIFF": "IF_SAFER"}
            with _open_staging(staging, "w", **profile) as dst:
                describe_band(dst, MASK_DESCRIPTION, "1", threshold=f"{threshold:g}")
                for window in block_windows(src.width, src.height, config.block_size):
                    probability = read_probability(src, window)
                    mask = np.where(np.isnan(probability), NODATA, probability >= threshold).astype(np.uint8)
                    dst.write(mask, 1, window=window)
        _copy_to_cog(staging, partial, config, resampling="NEAREST")
        os.replace(partial, target)
    finally:
        staging.unlink(missing_ok=True)
        partial.unlink(missing_ok=True)
    return target


def _copy_to_cog(staging: Path, target: Path, config: HeatmapConfig, resampling: str = "AVERAGE") -> None:
    level = {} if config.compress == "lzw" else {"LEVEL": config.compress_level}
    rasterio.shutil.copy(
        staging,
        target,
        driver="COG",
        COMPRESS=config.compress.upper(),
        **level,
        PREDICTOR="YES",
        BLOCKSIZE=config.block_size,
        OVERVIEWS="AUTO",
        OVERVIEW_RESAMPLING=resampling,
        BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",
    )


def write_patch_scores(
    staged: StagedHeatmap, info: RasterInfo, grid: PatchGrid, scores: np.ndarray, config: HeatmapConfig,
    progress: bool = True,
) -> None:
    """Patch scores (NaN: not scored) blended over their windows into ``staged``, block by block."""
    ramp = blend_ramp(grid.size, config.blend_floor)
    # The staging file is uncompressed: the COG copy compresses once, not twice.
    # The blend's matrix products are tiny (a few windows by one block edge): BLAS threads
    # cost far more to wake than the arithmetic, so the blocks are blended on one thread.
    with open_raster(info.path) as src, threadpool_limits(limits=1, user_api="blas"):
        blocks = block_windows(info.width, info.height, config.block_size)
        blender = BlockBlender(grid, scores, ramp)
        for window in tqdm(blocks, desc="heatmap", unit="block", disable=not progress, leave=False):
            total, weight = blender.sums(window)
            out = np.full(total.shape, np.nan, dtype=np.float32)
            assessed = weight > 0
            if info.has_mask:
                assessed &= src.dataset_mask(window=window) > 0
            np.divide(total, weight, out=out, where=assessed)
            staged.write(window, out)


