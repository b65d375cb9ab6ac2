import numpy as np
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from survey_cracks.config import VectorizeConfig
from survey_cracks.io.raster import RasterInfo
from survey_cracks.vectors.tracing import trace_heatmap
from survey_cracks.vectors.vectorize import COLUMNS, simplify


def _heatmap(tmp_path, values, crs="EPSG:32631", res=0.005, origin=(500000.0, 5700000.0)):
    path = tmp_path / "h.tif"
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype="float32", crs=crs, transform=from_origin(*origin, res, res), nodata=-1) as dst:
        dst.write(values.astype(np.float32), 1)
    return path


def vectorize_raster(path, threshold, info, config, block=1024):
    """The polygons of a finished heatmap, as a run traces them (`tracing.trace_heatmap`)."""
    return trace_heatmap(path, info, threshold, config, None, block=block)[0]


def inspect_raster(path):
    with rasterio.open(path) as src:
        return RasterInfo(path, src.width, src.height, (1, 1, 1), "float32", src.crs.to_string(), src.transform,
                          True, True)


def test_a_crack_crossing_blocks_is_one_polygon(tmp_path):
    values = np.zeros((300, 300), np.float32)
    values[140:150, 10:290] = 0.9  # one long crack across every block border
    values[20:40, 20:40] = 0.6
    path = _heatmap(tmp_path, values)
    info = inspect_raster(path)
    results = [vectorize_raster(path, 0.5, info, VectorizeConfig(min_area_px=10), block=b) for b in (32, 64, 100, 300)]
    for frame in results:
        assert len(frame) == 2
        assert list(frame.columns) == COLUMNS
    long = results[0].sort_values("area").iloc[-1]
    assert long["area"] == pytest.approx(280 * 10 * 0.005**2, rel=0.02)
    assert long["length"] == pytest.approx(280 * 0.005, rel=0.05)
    assert long["max_score"] == pytest.approx(0.9) and long["unit"] == "m"
    assert results[0].crs.to_epsg() == 32631


def test_min_area_and_nodata(tmp_path):
    values = np.full((100, 100), -1.0, np.float32)
    values[10:12, 10:12] = 0.9  # 4 px: below min area
    values[50:70, 50:70] = 0.8
    path = _heatmap(tmp_path, values)
    frame = vectorize_raster(path, 0.5, inspect_raster(path), VectorizeConfig(min_area_px=16))
    assert len(frame) == 1
    assert frame.iloc[0]["mean_score"] == pytest.approx(0.8)
    assert vectorize_raster(path, 0.95, inspect_raster(path), VectorizeConfig()).empty


def test_geographic_crs_areas_are_in_square_metres(tmp_path):
    values = np.zeros((100, 100), np.float32)
    values[40:60, 40:60] = 0.9
    path = _heatmap(tmp_path, values, crs="EPSG:4326", res=1e-6, origin=(5.0, 52.0))
    frame = vectorize_raster(path, 0.5, inspect_raster(path), VectorizeConfig(min_area_px=1, simplify_px=0))
    # 20 x 20 pixels of 1e-6 degrees at 52 N: 20e-6 deg is ~1.37 m east-west and ~2.23 m north-south
    assert frame.iloc[0]["unit"] == "m"
    assert frame.iloc[0]["area"] == pytest.approx(1.371 * 2.225, rel=0.03)


def test_simplify_thins_staircases_and_keeps_thin_shapes():
    # a pixel staircase (a diagonal crack outline): Douglas-Peucker removes the steps
    stair = shapely.Polygon([p for i in range(40) for p in ((i, i), (i + 1, i))] + [(40, 40), (40, 45), (0, 45)])
    # a bar thinner than the tolerance: Douglas-Peucker alone would collapse it to nothing
    bar = shapely.Polygon([(0, 0), (20, 0.1), (40, 0), (40, 0.8), (20, 0.9), (0, 0.8)])
    assert stair.is_valid
    assert shapely.simplify(bar, 1.0, preserve_topology=False).is_empty
    out = simplify(np.array([stair, bar], dtype=object), 1.0)
    assert all(shapely.is_valid(out)) and not any(shapely.is_empty(out))
    assert len(shapely.get_coordinates(out[0])) < len(shapely.get_coordinates(stair)) / 4
    assert out[0].area == pytest.approx(stair.area, rel=0.05)
    assert out[1].area >= bar.area / 4 and out[1].bounds[2] - out[1].bounds[0] == pytest.approx(40)
