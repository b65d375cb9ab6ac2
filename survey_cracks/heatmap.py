"""Per-pixel crack probability from overlapping patch scores, streamed to a COG.

Each patch score is spread over its window with a smooth weight (highest in the
centre, ``blend_floor`` at the edges) and overlapping windows are averaged as
``sum(weight * score) / sum(weight)``, Raster Vision's scores/hits accumulation done
per output block, so there are no seams and memory does not grow with the raster.
Blocks go to a tiled GeoTIFF, which GDAL's COG driver then turns into a
Cloud-Optimized GeoTIFF with overviews (BigTIFF when needed).
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import rasterio.shutil

from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from survey_cracks.config import HeatmapConfig
from survey_cracks.raster import RasterInfo
from survey_cracks.tiling import PatchGrid, block_windows

NODATA = -1.0


def blend_ramp(size: int, floor: float) -> np.ndarray:
    """Raised-sine weight along one axis of a patch: ``floor`` at the edges, 1 in the centre."""
    ramp = np.sin(np.pi * (np.arange(size) + 0.5) / size).astype(np.float32)
    return (floor + (1.0 - floor) * ramp).astype(np.float32)


def blend_weights(size: int, floor: float) -> np.ndarray:
    """The 2-D weight of one patch (separable: the outer product of two ramps)."""
    ramp = blend_ramp(size, floor)
    return np.outer(ramp, ramp)


def heatmap_profile(info: RasterInfo, config: HeatmapConfig) -> dict:
    """Tiled float32 staging profile; compression is applied by the COG copy."""
    return {
        "driver": "GTiff",
        "width": info.width,
        "height": info.height,
        "count": 1,
        "dtype": "float32",
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


class StagedHeatmap:
    """The heatmap under construction: an uncompressed tiled GeoTIFF on the raster's grid.

    Stages write it window by window (`write`), in any order; `publish` turns it into
    the COG at ``path``. Until then nothing exists under the final name, and leaving the
    context without publishing removes every temporary file.
    """

    def __init__(self, path: Path, info: RasterInfo, config: HeatmapConfig) -> None:
        self.path, self.info, self.config = Path(path), info, config
        self.staging = self.path.with_name(f".{self.path.stem}.staging.tif")
        self._partial = self.path.with_name(f".{self.path.stem}.partial.tif")
        self._dst: rasterio.io.DatasetWriter | None = None

    def __enter__(self) -> "StagedHeatmap":
        with warnings.catch_warnings():
            # Pixel-coordinate outputs carry x = column, y = -row on purpose (see raster.PIXEL_TRANSFORM).
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._dst = rasterio.open(self.staging, "w", **heatmap_profile(self.info, self.config))
        return self

    def write(self, window: Window, values: np.ndarray) -> None:
        """Crack probability for ``window``; NaN (outside the footprint) is stored as nodata."""
        assert self._dst is not None, "use StagedHeatmap as a context manager"
        out = np.asarray(values, dtype=np.float32)
        out = np.where(np.isfinite(out), out, NODATA).astype(np.float32)
        self._dst.write(out, 1, window=window)

    def publish(self, meanwhile: Callable[[Path], None] | None = None) -> Path:
        """Build the COG and move it into place.

        ``meanwhile(staging)`` runs on this thread while GDAL builds the COG in another,
        given the finished heatmap as an uncompressed GeoTIFF (same grid, nodata = NODATA)
        that lives until it returns: the copy releases the GIL and keeps about one core
        busy, so work that needs only the heatmap (tracing and merging the polygons)
        overlaps it instead of following it.
        """
        assert self._dst is not None
        self._dst.close()
        with ThreadPoolExecutor(1, thread_name_prefix="cog") as pool:
            copied = pool.submit(_copy_to_cog, self.staging, self._partial, self.config)
            try:
                if meanwhile is not None:
                    meanwhile(self.staging)
            finally:
                copied.result()  # the copy finishes (or fails) before its files are cleaned up
        os.replace(self._partial, self.path)
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self._dst is not None and not self._dst.closed:
            self._dst.close()
        for leftover in (self.staging, self._partial):
            leftover.unlink(missing_ok=True)


def write_heatmap(
    path: Path,
    info: RasterInfo,
    grid: PatchGrid,
    scores: np.ndarray,
    config: HeatmapConfig,
    progress: bool = True,
    meanwhile: Callable[[Path], None] | None = None,
) -> Path:
    """The heatmap COG of patch scores blended over their windows (see `StagedHeatmap.publish` for ``meanwhile``)."""
    with StagedHeatmap(path, info, config) as staged:
        _write_blocks(staged, info, grid, scores, blend_ramp(grid.size, config.blend_floor), config, progress)
        return staged.publish(meanwhile)


def _copy_to_cog(staging: Path, target: Path, config: HeatmapConfig) -> None:
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
        OVERVIEW_RESAMPLING="AVERAGE",
        BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",
    )


def _write_blocks(
    staged: StagedHeatmap, info: RasterInfo, grid: PatchGrid, scores: np.ndarray, ramp: np.ndarray,
    config: HeatmapConfig, progress: bool,
) -> None:
    # The staging file is uncompressed: the COG copy compresses once, not twice.
    # The blend's matrix products are tiny (a few windows by one block edge): BLAS threads
    # cost far more to wake than the arithmetic, so the blocks are blended on one thread.
    with rasterio.open(info.path) as src, threadpool_limits(limits=1, user_api="blas"):
        blocks = block_windows(info.width, info.height, config.block_size)
        blender = BlockBlender(grid, scores, ramp)
        for window in tqdm(blocks, desc="heatmap", unit="block", disable=not progress, leave=False):
            total, weight = blender.sums(window)
            out = np.full(total.shape, NODATA, dtype=np.float32)
            assessed = weight > 0
            if info.has_mask:
                assessed &= src.dataset_mask(window=window) > 0
            np.divide(total, weight, out=out, where=assessed)
            staged.write(window, out)


