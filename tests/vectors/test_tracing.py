"""Tracing while the heatmap is written gives the vectors of the finished heatmap, whatever the window order."""

import numpy as np
import pandas as pd
import pytest
import shapely
from rasterio.windows import Window

from survey_cracks.config import CentrelineConfig, HeatmapConfig, VectorizeConfig
from survey_cracks.synthetic import render_scene
from survey_cracks.tiling import context_windows
from survey_cracks.vectors.heatmap import StagedHeatmap
from survey_cracks.vectors.tracing import HeatmapTracer, trace_heatmap
from tests.vectors.test_vectorize import _heatmap, inspect_raster


def _scene(height=700, width=900, seed=3):
    _, mask = render_scene(height, width, seed=seed, n_cracks=6, confusers=False)
    probability = np.where(mask > 0, 0.9, 0.05).astype(np.float32)
    probability[350:354, :] = 0.8  # a crack through every window and block border
    probability[:, :150] = np.nan  # outside the footprint
    return probability


def _same(a, b):
    assert len(a) == len(b) > 0
    pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
    assert all(shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=1e-9))


@pytest.mark.parametrize("order", ["row-major", "shuffled", "reversed"])
def test_windows_traced_as_they_arrive_give_the_finished_heatmaps_vectors(tmp_path, order):
    probability = _scene()
    reference = _heatmap(tmp_path, np.nan_to_num(probability, nan=-1))
    info = inspect_raster(reference)
    configs = (VectorizeConfig(min_area_px=4), CentrelineConfig())
    expected = trace_heatmap(reference, info, 0.5, *configs)

    windows = [w.core for w in context_windows(info.width, info.height, 256, 64)]
    if order == "shuffled":
        windows = [windows[i] for i in np.random.default_rng(0).permutation(len(windows))]
    elif order == "reversed":
        windows = windows[::-1]
    tracer = HeatmapTracer(info, 0.5, *configs, block=256)  # blocks smaller than the raster, unlike the windows
    traced_before_last = None
    with StagedHeatmap(tmp_path / "live.tif", info, HeatmapConfig()) as staged:
        for n, core in enumerate(windows):
            values = probability[int(core.row_off):int(core.row_off + core.height),
                                 int(core.col_off):int(core.col_off + core.width)]
            outside = bool(np.isnan(values).all())
            if not outside:
                staged.write(core, values)
            tracer.settle(core, staged.read, written=not outside)
            if n == len(windows) - 2:
                traced_before_last = tracer.traced
        polygons, lines = tracer.finish()
        staged.publish()
    assert 0 < traced_before_last < len(tracer.blocks)  # tracing ran beside the writing, not after it
    # The reference was traced from float32 values with 1024 px blocks; the live run from
    # uint8 levels with 256 px blocks: 0.9 / 0.8 / 0.05 are exact levels, so the vectors agree.
    _same(polygons, expected[0])
    _same(lines, expected[1])
    again = trace_heatmap(tmp_path / "live.tif", info, 0.5, *configs)
    _same(polygons, again[0])
    _same(lines, again[1])


def test_a_block_never_completed_is_an_error(tmp_path):
    info = inspect_raster(_heatmap(tmp_path, np.zeros((300, 300), np.float32)))
    tracer = HeatmapTracer(info, 0.5, VectorizeConfig(), None, block=128)
    tracer.settle(Window(0, 0, 300, 200), lambda w: np.zeros((int(w.height), int(w.width)), np.float32))
    with pytest.raises(RuntimeError, match="never completed"):
        tracer.finish()
