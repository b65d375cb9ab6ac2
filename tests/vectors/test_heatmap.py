import numpy as np
import rasterio
from rasterio.windows import Window

from survey_cracks.config import HeatmapConfig
from survey_cracks.io.raster import inspect_raster
from survey_cracks.tiling import patch_grid
from survey_cracks.vectors import heatmap as heatmap_module
from survey_cracks.vectors.heatmap import (
    LEVELS,
    NODATA,
    SCALE,
    StagedHeatmap,
    blend_ramp,
    blend_weights,
    block_heatmap,
    probability_of,
    read_probability,
    to_levels,
    write_crack_mask,
    write_patch_scores,
)
from tests.conftest import write_geotiff


def test_blend_weights_are_smooth_and_positive():
    w = blend_weights(64, 0.1)
    assert w.shape == (64, 64) and w.min() > 0.009 and w.max() <= 1.0
    assert np.argmax(w[32]) in (31, 32)
    assert np.abs(np.diff(w, axis=1)).max() < 0.06  # no jumps inside a patch


def test_constant_scores_give_constant_heatmap_without_seams():
    grid = patch_grid(300, 200, 64, 32)
    scores = np.full(len(grid), 0.7, np.float32)
    total, weight = block_heatmap(Window(0, 0, 300, 200), grid, scores, blend_ramp(64, 0.1))
    assert np.allclose(total / weight, 0.7, atol=1e-5)


def test_block_result_does_not_depend_on_block_layout():
    grid = patch_grid(256, 256, 64, 32)
    scores = np.random.default_rng(0).random(len(grid)).astype(np.float32)
    ramp = blend_ramp(64, 0.1)
    whole_t, whole_w = block_heatmap(Window(0, 0, 256, 256), grid, scores, ramp)
    part_t, part_w = block_heatmap(Window(96, 64, 100, 80), grid, scores, ramp)
    assert np.allclose(whole_t[64:144, 96:196], part_t) and np.allclose(whole_w[64:144, 96:196], part_w)


def test_lattice_sums_equal_the_window_by_window_sums():
    grid = patch_grid(300, 230, 64, 32)
    scores = np.random.default_rng(1).random(len(grid)).astype(np.float32)
    scores[::7] = np.nan
    window = Window(40, 50, 200, 150)
    total, weight = block_heatmap(window, grid, scores, blend_ramp(64, 0.1))
    kernel = blend_weights(64, 0.1)
    ref_t, ref_w = np.zeros((150, 200)), np.zeros((150, 200))
    for i in grid.intersecting(window):
        if np.isnan(scores[i]):
            continue
        row, col = grid.offsets[i]
        full_t, full_w = np.zeros((230, 300)), np.zeros((230, 300))
        full_t[row : row + 64, col : col + 64] = kernel * scores[i]
        full_w[row : row + 64, col : col + 64] = kernel
        ref_t += full_t[50:200, 40:240]
        ref_w += full_w[50:200, 40:240]
    assert np.allclose(total, ref_t, atol=1e-4) and np.allclose(weight, ref_w, atol=1e-4)


def test_skipped_windows_do_not_contribute():
    grid = patch_grid(128, 64, 64, 64)
    scores = np.array([1.0, np.nan], np.float32)
    total, weight = block_heatmap(Window(0, 0, 128, 64), grid, scores, blend_ramp(64, 0.1))
    assert (weight[:, 64:] == 0).all() and np.allclose(total[:, :64] / weight[:, :64], 1.0)


def test_written_heatmap_is_a_georeferenced_cog_with_nodata_outside_footprint(tmp_path):
    mask = np.ones((700, 900), bool)
    mask[:, :200] = False
    raster = write_geotiff(tmp_path / "r.tif", np.full((700, 900, 3), 90, np.uint8), mask=mask)
    info = inspect_raster(raster)
    grid = patch_grid(900, 700, 128, 64)
    scores = np.linspace(0, 1, len(grid)).astype(np.float32)
    staged = []
    with StagedHeatmap(tmp_path / "heatmap.tif", info, HeatmapConfig(block_size=256)) as heatmap:
        write_patch_scores(heatmap, info, grid, scores, HeatmapConfig(block_size=256), progress=False)
        published = heatmap.start_publishing()
        with rasterio.open(heatmap.staging) as src:  # the finished heatmap, uncompressed, while the COG is built
            staged.append((src.nodata, src.read(1)))
        out = published.result()
    with rasterio.open(raster) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dst.overviews(1) and dst.nodata == NODATA and dst.dtypes[0] == "uint8"
        # Levels with scale 1/250: what GDAL and QGIS show as probability 0..1.
        assert dst.scales == (SCALE,) and dst.offsets == (0.0,)
        values = dst.read(1)
        probability = read_probability(dst)
    assert (values[:, :200] == NODATA).all() and np.isnan(probability[:, :200]).all()
    inside = values[:, 200:]
    assert (inside != NODATA).all() and inside.max() <= LEVELS  # no nodata inside the footprint
    assert 0.0 <= probability[:, 200:].min() < probability[:, 200:].max() <= 1.0
    assert staged[0][0] == NODATA and np.array_equal(staged[0][1], values)
    assert not list(tmp_path.glob(".*"))  # staging and partial files are gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heatmap.tif", "r.tif"]


def test_levels_round_trip_within_half_a_level_and_keep_nodata():
    probability = np.array([[0.0, 0.1, 0.5, 1.0, np.nan], [0.0019, 0.0021, 0.9999, 1.3, -0.2]], np.float32)
    levels = to_levels(probability)
    assert levels.dtype == np.uint8 and levels[0, 4] == NODATA
    back = probability_of(levels)
    assert np.isnan(back[0, 4])
    finite = np.isfinite(probability)
    assert np.abs(back[finite] - np.clip(probability[finite], 0, 1)).max() <= 0.5 / LEVELS + 1e-7
    assert back[0, 1] >= 0.1  # a calibrated threshold keeps the pixels at it


def test_heatmap_band_says_what_it_is_and_the_crack_mask_is_the_threshold_block_by_block(tmp_path, monkeypatch):
    mask = np.ones((700, 900), bool)
    mask[:, :200] = False
    raster = write_geotiff(tmp_path / "r.tif", np.full((700, 900, 3), 90, np.uint8), mask=mask)
    info = inspect_raster(raster)
    grid = patch_grid(900, 700, 128, 64)
    config = HeatmapConfig(block_size=256)
    with StagedHeatmap(tmp_path / "heatmap.tif", info, config) as heatmap:
        write_patch_scores(heatmap, info, grid, np.linspace(0, 1, len(grid)).astype(np.float32), config, progress=False)
        heatmap.publish()
    reads = []

    def counting_read(src, window=None, *args, **kwargs):
        reads.append(window)
        return read_probability(src, window, *args, **kwargs)

    monkeypatch.setattr(heatmap_module, "read_probability", counting_read)
    write_crack_mask(tmp_path / "heatmap.tif", tmp_path / "crack_mask.tif", 0.5, config)
    monkeypatch.undo()
    assert reads and all(w is not None and w.width <= 256 and w.height <= 256 for w in reads)  # never the whole raster
    with rasterio.open(tmp_path / "heatmap.tif") as heat, rasterio.open(tmp_path / "crack_mask.tif") as crack:
        # what QGIS's layer properties and gdalinfo show
        assert heat.descriptions == ("crack probability",) and heat.units == ("probability (0-1)",)
        assert heat.tags(1)["units"] == "probability (0-1)"
        probability = read_probability(heat)
        assert crack.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and crack.overviews(1)
        assert crack.crs == heat.crs and crack.transform == heat.transform and crack.nodata == NODATA
        assert crack.descriptions == ("crack (1) or not (0)",) and crack.tags(1)["threshold"] == "0.5"
        values = crack.read(1)
    assert set(np.unique(values)) == {0, 1, NODATA}
    assert (values[np.isnan(probability)] == NODATA).all()
    inside = ~np.isnan(probability)
    assert np.array_equal(values[inside] == 1, probability[inside] >= 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crack_mask.tif", "heatmap.tif", "r.tif"]
