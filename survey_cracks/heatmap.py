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
from pathlib import Path
from typing import Callable

import numpy as np
import rasterio
import rasterio.shutil

from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window
from tqdm import tqdm

from survey_cracks.config import HeatmapConfig
from survey_cracks.raster import RasterInfo
from survey_cracks.tiling import PatchGrid, block_windows

NODATA = -1.0
BlockCallback = Callable[[Window, np.ndarray], None]


def blend_weights(size: int, floor: float) -> np.ndarray:
    """Separable raised-sine window: ``floor`` at the edges, 1 in the centre."""
    ramp = np.sin(np.pi * (np.arange(size) + 0.5) / size).astype(np.float32)
    ramp = floor + (1.0 - floor) * ramp
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


def block_heatmap(
    window: Window, grid: PatchGrid, scores: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted score sum and weight sum for one output block."""
    height, width = int(window.height), int(window.width)
    total = np.zeros((height, width), dtype=np.float32)
    weight = np.zeros((height, width), dtype=np.float32)
    r0, c0 = int(window.row_off), int(window.col_off)
    for index in grid.intersecting(window):
        score = scores[index]
        if not np.isfinite(score):
            continue
        row, col = (int(v) for v in grid.offsets[index])
        top, left = max(row, r0), max(col, c0)
        bottom, right = min(row + grid.size, r0 + height), min(col + grid.size, c0 + width)
        kernel = weights[top - row : bottom - row, left - col : right - col]
        total[top - r0 : bottom - r0, left - c0 : right - c0] += kernel * score
        weight[top - r0 : bottom - r0, left - c0 : right - c0] += kernel
    return total, weight


def write_heatmap(
    path: Path,
    info: RasterInfo,
    grid: PatchGrid,
    scores: np.ndarray,
    config: HeatmapConfig,
    progress: bool = True,
    on_block: BlockCallback | None = None,
) -> Path:
    """Write the heatmap COG at ``path`` (via temp names; nothing partial is left).

    ``on_block(window, values)`` sees every finished block (nodata = NODATA), so
    polygons can be traced in the same pass instead of re-reading the file.
    """
    path = Path(path)
    staging = path.with_name(f".{path.stem}.staging.tif")
    final_tmp = path.with_name(f".{path.stem}.partial.tif")
    weights = blend_weights(grid.size, config.blend_floor)
    try:
        with warnings.catch_warnings():
            # Pixel-coordinate outputs carry x = column, y = -row on purpose (see raster.PIXEL_TRANSFORM).
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            _write_blocks(staging, info, grid, scores, weights, config, progress, on_block)
        rasterio.shutil.copy(
            staging,
            final_tmp,
            driver="COG",
            COMPRESS=config.compress.upper(),
            PREDICTOR="YES",
            BLOCKSIZE=config.block_size,
            OVERVIEWS="AUTO",
            OVERVIEW_RESAMPLING="AVERAGE",
            BIGTIFF="IF_SAFER",
            NUM_THREADS="ALL_CPUS",
        )
        os.replace(final_tmp, path)
    finally:
        for leftover in (staging, final_tmp):
            leftover.unlink(missing_ok=True)
    return path


def _write_blocks(
    staging: Path, info: RasterInfo, grid: PatchGrid, scores: np.ndarray, weights: np.ndarray,
    config: HeatmapConfig, progress: bool, on_block: BlockCallback | None,
) -> None:
    # The staging file is uncompressed: the COG copy compresses once, not twice.
    with rasterio.open(info.path) as src, rasterio.open(staging, "w", **heatmap_profile(info, config)) as dst:
        blocks = block_windows(info.width, info.height, config.block_size)
        for window in tqdm(blocks, desc="heatmap", unit="block", disable=not progress, leave=False):
            total, weight = block_heatmap(window, grid, scores, weights)
            out = np.full(total.shape, NODATA, dtype=np.float32)
            assessed = weight > 0
            if info.has_mask:
                assessed &= src.dataset_mask(window=window) > 0
            np.divide(total, weight, out=out, where=assessed)
            dst.write(out, 1, window=window)
            if on_block is not None:
                on_block(window, out)


