"""Crack polygons and centrelines traced block by block while the heatmap is still being written.

Windows come back from the Dask workers in any order. The heatmap is cut into blocks of
a fixed grid (`TRACE_BLOCK` px, whatever the windows are), and each block is traced as
soon as every pixel within `centrelines.HALO` of it is final: its polygons from its own
pixels, its centreline pieces with the halo. Tracing thus runs beside inference instead
of after it, and a finished heatmap traced afterwards (`trace_heatmap`) gives the same
vectors. Memory holds the cracks and one block, never the raster.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import geopandas as gpd
import numpy as np
from rasterio.errors import WindowError
from rasterio.windows import Window
from tqdm import tqdm

from survey_cracks.config import CentrelineConfig, VectorizeConfig
from survey_cracks.io.raster import RasterInfo, open_raster
from survey_cracks.tiling import block_windows
from survey_cracks.vectors.centrelines import HALO, CentrelineCollector, attach_centrelines, halo_window
from survey_cracks.vectors.heatmap import read_probability
from survey_cracks.vectors.vectorize import RegionCollector

TRACE_BLOCK = 1024
Read = Callable[[Window], np.ndarray]  # probability of a window of the heatmap, NaN where not assessed


class HeatmapTracer:
    """Traces each block of a heatmap once the pixels it depends on are final (`settle`).

    ``centrelines`` None traces polygons only (patch-level heatmaps have no meaningful
    centreline).
    """

    def __init__(self, info: RasterInfo, threshold: float, polygons: VectorizeConfig,
                 centrelines: CentrelineConfig | None, block: int = TRACE_BLOCK, progress: bool = False) -> None:
        self.info, self.block = info, block
        self.polygon_config, self.centreline_config = polygons, centrelines
        self.regions = RegionCollector(threshold, info, polygons.min_area_px or 0.0)
        self.lines = CentrelineCollector(threshold) if centrelines is not None else None
        self.blocks = block_windows(info.width, info.height, block)
        self.columns = -(-info.width // block)
        self.full = Window(0, 0, info.width, info.height)
        # Pixels each block still waits for: its own and its halo's, inside the raster.
        self.waiting = np.array([_area(halo_window(b, self.full)) for b in self.blocks], dtype=np.int64)
        self.written = np.zeros(len(self.blocks), dtype=bool)
        self.traced = 0
        self.bar = tqdm(total=len(self.blocks), desc="tracing", unit="block", disable=not progress, leave=False)

    def settle(self, window: Window, read: Read, written: bool = True) -> None:
        """``window``'s pixels are final (``written`` False: they stay nodata); trace the blocks now complete."""
        window = window.intersection(self.full)
        rows = self._span(int(window.row_off), int(window.row_off + window.height), -(-self.info.height // self.block))
        cols = self._span(int(window.col_off), int(window.col_off + window.width), self.columns)
        for r in rows:
            for c in cols:
                i = r * self.columns + c
                self.waiting[i] -= _overlap(halo_window(self.blocks[i], self.full), window)
                self.written[i] |= written
                if self.waiting[i] == 0:
                    self._trace(i, read)

    def settle_all(self, read: Read) -> None:
        """The whole heatmap is final (patch and dense modes write it in one go)."""
        self.settle(self.full, read)

    def finish(self) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None]:
        """The merged polygons and, when traced, the centrelines attached to them."""
        if (self.waiting > 0).any():
            raise RuntimeError(f"{int((self.waiting > 0).sum())} heatmap blocks were never completed")
        self.bar.close()
        polygons = self.regions.polygons(self.polygon_config)
        if self.lines is None or self.centreline_config is None:
            return polygons, None
        return attach_centrelines(polygons, self.lines.lines(self.info, self.centreline_config))

    def _span(self, start: int, stop: int, count: int) -> range:
        """Blocks along one axis whose halo window meets pixels ``[start, stop)``."""
        first = max(0, (start - HALO) // self.block)
        last = min(count - 1, (stop - 1 + HALO) // self.block)
        return range(first, last + 1)

    def _trace(self, i: int, read: Read) -> None:
        self.traced += 1
        self.bar.update(1)
        if not self.written[i]:
            return  # nothing but nodata around this block
        core = self.blocks[i]
        ext = halo_window(core, self.full)
        probability = read(ext)
        top, left = int(core.row_off - ext.row_off), int(core.col_off - ext.col_off)
        self.regions.add(core, probability[top : top + int(core.height), left : left + int(core.width)])
        if self.lines is not None:
            self.lines.add(core, ext, probability)


def trace_heatmap(path: Path, info: RasterInfo, threshold: float, polygons: VectorizeConfig,
                  centrelines: CentrelineConfig | None, progress: bool = False, block: int = TRACE_BLOCK
                  ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None]:
    """The vectors of a finished heatmap file, exactly as a run traces them while writing it."""
    tracer = HeatmapTracer(info, threshold, polygons, centrelines, block=block, progress=progress)
    with open_raster(path) as src:
        tracer.settle_all(lambda window: read_probability(src, window))
    return tracer.finish()


def _area(window: Window) -> int:
    return int(window.width) * int(window.height)


def _overlap(a: Window, b: Window) -> int:
    try:
        return _area(a.intersection(b))
    except WindowError:  # they do not intersect
        return 0


__all__ = ["HeatmapTracer", "TRACE_BLOCK", "trace_heatmap"]
