import dataclasses

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from survey_cracks.config import CentrelineConfig, VectorizeConfig
from survey_cracks.io.raster import PIXEL_TRANSFORM
from survey_cracks.synthetic import render_scene
from survey_cracks.vectors.centrelines import COLUMNS, attach_centrelines
from survey_cracks.vectors.tracing import trace_heatmap
from tests.conftest import write_geotiff
from tests.vectors.test_vectorize import _heatmap, inspect_raster, vectorize_raster


def trace_centrelines(path, threshold, info, config, block=1024, progress=False):
    """The centrelines of a finished heatmap as a run traces them (`tracing.trace_heatmap`), before they are
    attached to their polygons."""
    return trace_heatmap(path, info, threshold, VectorizeConfig(), config, progress, block)[1].drop(columns="crack_id")


def _pixel_info(path):
    """The RasterInfo of a raster without georeferencing: x = col, y = -row, lengths in pixels."""
    return dataclasses.replace(inspect_raster(path), crs=None, transform=PIXEL_TRANSFORM, georeferenced=False)


def _trace(tmp_path, values, block=64, **config):
    path = _heatmap(tmp_path, values)
    return trace_centrelines(path, 0.5, _pixel_info(path), CentrelineConfig(**config), block=block, progress=False)


def _band(values, rows, cols, value=0.9):
    values[rows[0] : rows[1], cols[0] : cols[1]] = value
    return values


def _pixel_line(*row_col):
    """The ideal centreline through pixel centres (row, col), in the pixel transform's map coordinates."""
    return shapely.LineString([(c + 0.5, -(r + 0.5)) for r, c in row_col])


def test_a_band_crossing_block_borders_is_one_line_with_its_width(tmp_path):
    values = _band(np.zeros((100, 300), np.float32), (48, 51), (10, 290))  # 3 px wide, 280 px long
    frame = _trace(tmp_path, values, block=64)
    assert list(frame.columns) == COLUMNS and frame.crs is None
    assert len(frame) == 1
    line = frame.iloc[0]
    assert line["id"] == 1 and line["unit"] == "px"
    assert line.geometry.geom_type == "LineString"
    assert line["length"] == pytest.approx(280, abs=2)
    assert line["mean_width"] == pytest.approx(3, abs=1) and line["max_width"] == pytest.approx(3)
    assert line.geometry.hausdorff_distance(_pixel_line((49, 11), (49, 288))) < 2


@pytest.mark.parametrize(
    "name, corners",
    [("diagonal", [(10, 10), (250, 250)]), ("L", [(128, 30), (128, 192), (280, 192)])],
)
def test_lines_through_block_corners_have_no_gaps(tmp_path, name, corners):
    values = np.zeros((300, 300), np.float32)
    rr, cc = np.mgrid[0:300, 0:300]
    for (r0, c0), (r1, c1) in zip(corners[:-1], corners[1:]):  # 3 px wide strokes through (64k, 64k) corners
        t = np.clip(((rr - r0) * (r1 - r0) + (cc - c0) * (c1 - c0)) / ((r1 - r0) ** 2 + (c1 - c0) ** 2), 0, 1)
        values[np.hypot(rr - r0 - t * (r1 - r0), cc - c0 - t * (c1 - c0)) <= 1.5] = 0.9
    frame = _trace(tmp_path, values, block=64)
    assert len(frame) == 1
    line = frame.geometry.iloc[0]
    assert line.geom_type == "LineString" and line.is_simple
    ideal = _pixel_line(*corners)
    assert frame["length"].iloc[0] == pytest.approx(ideal.length, abs=4)
    assert line.hausdorff_distance(ideal) < 3


def test_short_spurs_are_pruned_and_long_branches_kept(tmp_path):
    values = _band(np.zeros((100, 300), np.float32), (48, 51), (10, 290))
    _band(values, (51, 56), (99, 102))  # a 5 px stub below the line
    _band(values, (51, 81), (199, 202))  # a 30 px branch
    frame = _trace(tmp_path, values, block=64)
    # the main line, split at the branch's junction, and the branch
    assert len(frame) == 3
    assert frame["length"].sum() == pytest.approx(280 + 31, abs=4)
    lines = shapely.union_all(frame.geometry.values)
    assert not lines.intersects(shapely.box(95, -60, 106, -51))  # nothing of the stub left below the line
    assert -lines.bounds[1] == pytest.approx(79.5, abs=2)  # the branch reaches its end
    unpruned = _trace(tmp_path, values, block=64, min_spur_px=0)
    assert len(unpruned) > len(frame)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_results_do_not_depend_on_the_block_size(tmp_path, seed):
    _, mask = render_scene(256, 320, seed=seed, n_cracks=3, confusers=False)
    values = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
    _band(values, (200, 203), (0, 320))  # a crack through the raster's edges
    frames = [_trace(tmp_path, values, block=b) for b in (64, 100, 1024)]
    assert len(frames[-1]) > 1
    for frame in frames[:-1]:
        assert len(frame) == len(frames[-1])
        assert frame["length"].sum() == pytest.approx(frames[-1]["length"].sum(), abs=1e-6)
        for column in ("length", "mean_width", "max_width"):
            assert np.allclose(frame[column], frames[-1][column], atol=1e-6)
        assert all(shapely.equals_exact(frame.geometry.values, frames[-1].geometry.values, 1e-9))


def test_georeferenced_lengths_and_widths_are_in_metres(tmp_path):
    values = _band(np.zeros((100, 300), np.float32), (48, 51), (10, 290))
    path = _heatmap(tmp_path, values, res=0.002)
    frame = trace_centrelines(path, 0.5, inspect_raster(path), CentrelineConfig(), block=64, progress=False)
    assert frame.crs.to_epsg() == 32631 and len(frame) == 1
    line = frame.iloc[0]
    assert line["unit"] == "m"
    assert line["length"] == pytest.approx(280 * 0.002, abs=2 * 0.002)
    assert line["mean_width"] == pytest.approx(3 * 0.002, abs=0.002)
    assert line["max_width"] == pytest.approx(3 * 0.002, rel=1e-3)
    x, y = shapely.get_coordinates(line.geometry).T
    assert x.min() == pytest.approx(500000 + 11 * 0.002, abs=0.005) and y.max() < 5700000 - 48 * 0.002


@pytest.mark.parametrize("nodata", [-1.0, 9.0])  # 9: a nodata value above the threshold still never counts
def test_nodata_never_makes_lines(tmp_path, nodata):
    values = np.full((100, 300), nodata, np.float32)
    values[:, 150:] = 0.1
    _band(values, (48, 51), (150, 290))
    values[60:63, 20:140] = np.nan
    path = write_geotiff(tmp_path / "n.tif", values, nodata=nodata)
    frame = trace_centrelines(path, 0.5, _pixel_info(path), CentrelineConfig(), block=64, progress=False)
    assert len(frame) == 1
    assert shapely.get_coordinates(frame.geometry.values)[:, 0].min() > 150


def test_no_crack_gives_an_empty_frame(tmp_path):
    path = _heatmap(tmp_path, np.zeros((100, 120), np.float32))
    frame = trace_centrelines(path, 0.5, inspect_raster(path), CentrelineConfig(), block=64, progress=False)
    assert frame.empty and list(frame.columns) == COLUMNS and frame.crs.to_epsg() == 32631


def test_attach_centrelines_measures_polygons_by_their_lines(tmp_path):
    values = _band(np.zeros((100, 300), np.float32), (48, 51), (10, 290))
    path = _heatmap(tmp_path, values)
    info = inspect_raster(path)
    polygons = vectorize_raster(path, 0.5, info, VectorizeConfig(min_area_px=10))
    lines = trace_centrelines(path, 0.5, info, CentrelineConfig(), block=64, progress=False)
    assert len(polygons) == 1 and len(lines) == 1
    far_square = shapely.box(500001.0, 5699999.0, 500001.1, 5699999.1)  # a polygon with no line
    far_line = shapely.LineString([(500002.0, 5699998.0), (500002.5, 5699998.0)])  # a line in no polygon
    extra_polygon = gpd.GeoDataFrame({"id": [2], "length": [0.1], "unit": ["m"]}, geometry=[far_square], crs=polygons.crs)
    extra_line = gpd.GeoDataFrame({"id": [2], "length": [0.5], "mean_width": [0.01], "max_width": [0.01],
                                   "unit": ["m"]}, geometry=[far_line], crs=lines.crs)
    polygons, lines = pd.concat([polygons, extra_polygon]), pd.concat([lines, extra_line])
    measured, labelled = attach_centrelines(polygons, lines)
    crack, empty = measured.iloc[0], measured.iloc[1]
    assert crack["length"] == pytest.approx(lines["length"].iloc[0], abs=1e-4)
    assert crack["mean_width"] == pytest.approx(lines["mean_width"].iloc[0])
    assert crack["max_width"] == pytest.approx(lines["max_width"].iloc[0])
    # no centreline inside: the area/perimeter estimate stays, no widths
    assert empty["length"] == pytest.approx(0.1) and np.isnan(empty["mean_width"]) and np.isnan(empty["max_width"])
    assert labelled["crack_id"].iloc[0] == 1 and pd.isna(labelled["crack_id"].iloc[1])
    assert list(measured.columns) == ["id", "max_score", "mean_score", "area", "length", "mean_width", "max_width",
                                      "unit", "geometry"]
    assert list(labelled.columns) == [*COLUMNS[:-1], "crack_id", "geometry"]
    assert "crack_id" not in lines and "mean_width" not in polygons  # inputs untouched


def test_widths_on_a_geographic_crs_are_measured_across_the_line(tmp_path):
    values = _band(np.zeros((100, 300), np.float32), (48, 51), (10, 290))
    path = _heatmap(tmp_path, values, crs="EPSG:4326", res=1e-6, origin=(5.0, 52.0))
    line = trace_centrelines(path, 0.5, inspect_raster(path), CentrelineConfig(), progress=False).iloc[0]
    # 1e-6 degrees at 52 N: ~0.0686 m east-west (along this line), ~0.1113 m north-south (across it)
    assert line["unit"] == "m"
    assert line["length"] == pytest.approx(278.4 * 0.0686, rel=0.01)
    assert line["max_width"] == pytest.approx(3 * 0.1113, rel=0.01)
