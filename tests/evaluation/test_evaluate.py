"""Cell, object and pixel metrics on hand-made heatmaps, annotations and polygons."""

from __future__ import annotations

import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from shapely.geometry import Polygon, box

from survey_cracks.config import EvaluateConfig
from survey_cracks.errors import RasterError
from survey_cracks.evaluation.evaluate import MatchScores, RasterMetrics, combine, evaluate_raster, object_match
from survey_cracks.evaluation.metrics import Scores
from survey_cracks.io.annotations import load_truth
from survey_cracks.io.raster import PIXEL_TRANSFORM, inspect_raster

W, H = 300, 200
PIXEL = 0.01
GEO_TRANSFORM = from_origin(500000.0, 5000000.0, PIXEL, PIXEL)
CRS_UTM = "EPSG:32631"


def write(path: Path, data: np.ndarray, *, geo: bool = True, nodata: float | None = None) -> Path:
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1, "dtype": data.dtype}
    if path.suffix == ".png":
        profile["driver"] = "PNG"
    if geo:
        profile.update(crs=CRS_UTM, transform=GEO_TRANSFORM)
    if nodata is not None:
        profile["nodata"] = nodata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
    return path


def px_box(col0: float, row0: float, col1: float, row1: float) -> Polygon:
    (xa, ya), (xb, yb) = GEO_TRANSFORM @ (col0, row0), GEO_TRANSFORM @ (col1, row1)
    return box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))


def no_polygons(crs: str | None = CRS_UTM) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(geometry=[], crs=crs)


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    return write(tmp_path / "site.tif", np.full((H, W), 100, dtype=np.uint8))


def test_pixel_tolerance_counts_3px_offset_at_5_not_2(raster: Path, tmp_path: Path) -> None:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[20:180, 62] = 1  # 160 annotated pixels, just left of the block border at 64
    write(tmp_path / "site.mask.tif", mask)
    heat = np.full((H, W), 0.1, dtype=np.float32)
    heat[20:180, 65] = 0.9  # 3 px to the right, in the next 64 px block
    heatmap = write(tmp_path / "heat.tif", heat, nodata=-1)
    info = inspect_raster(raster)
    truth = load_truth(raster, info)
    config = EvaluateConfig(cell_size_px=32)
    results = [
        evaluate_raster(heatmap, truth, no_polygons(), 0.5, info, config, block=b) for b in (64, 1024)
    ]
    for metrics in results:
        assert metrics.pixel[2] == MatchScores(tp=0, fp=160, fn=160, tp_truth=0)
        assert metrics.pixel[5] == MatchScores(tp=160, fp=0, fn=0, tp_truth=160)
        assert metrics.pixel[5].precision == metrics.pixel[5].recall == metrics.pixel[5].f1 == 1.0
        assert metrics.pixel[2].f1 == 0.0
    assert results[0].as_dict() == results[1].as_dict()
    d = results[0].as_dict()["pixel_5px"]
    assert (d["predicted_px"], d["annotated_px"], d["tolerance_px"]) == (160, 160, 5)


def test_pixel_recall_and_precision_differ_with_tolerance(raster: Path, tmp_path: Path) -> None:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[100, 100:110] = 1  # 10 annotated pixels
    write(tmp_path / "site.mask.tif", mask)
    heat = np.zeros((H, W), dtype=np.float32)
    heat[101, 104] = 1.0  # one predicted pixel just below the crack
    heatmap = write(tmp_path / "heat.tif", heat, nodata=-1)
    info = inspect_raster(raster)
    metrics = evaluate_raster(
        heatmap, load_truth(raster, info), no_polygons(), 0.5, info, EvaluateConfig(pixel_tolerances_px=[1, 2])
    )
    # Within 1 px of (101, 104): only (100, 104). Within 2 px: columns 103..105 (sqrt(1 + 1) <= 2, sqrt(1 + 4) > 2).
    assert metrics.pixel[1] == MatchScores(tp=1, fp=0, fn=9, tp_truth=1)
    assert metrics.pixel[2] == MatchScores(tp=1, fp=0, fn=7, tp_truth=3)
    assert metrics.pixel[2].precision == 1.0 and metrics.pixel[2].recall == pytest.approx(0.3)


def _cell_case(tmp_path: Path) -> tuple[Path, Path]:
    """Cells of 50 px: 6 x 4 grid; the last column of cells is all nodata."""
    heat = np.full((H, W), 0.1, dtype=np.float32)
    mask = np.zeros((H, W), dtype=np.uint8)
    heat[:, 250:] = -1  # 4 cells without footprint: not counted
    mask[160:190, 260:270] = 1  # annotation outside the footprint: ignored
    heat[10, 10], mask[20, 20:30] = 0.9, 1  # cell (0, 0): 10 px, predicted -> TP
    mask[20, 70:80] = 1  # cell (0, 1): 10 px, max 0.1 -> FN
    heat[60, 10], mask[70, 20:25] = 0.9, 1  # cell (1, 0): 5 px < 8, predicted -> FP
    heat[5, 120] = 0.5  # cell (0, 2): max == threshold -> predicted, no truth -> FP
    heat[100:150, 100:125] = -1  # cell (2, 2): half nodata
    heat[110, 130], mask[120, 130:150] = 0.95, 1  # ... 20 px in its footprint, predicted -> TP
    heat[100:150, 175:200] = -1  # cell (2, 3): half nodata
    mask[105, 180:190] = 1  # ... 10 px in nodata
    mask[105, 150:154] = 1  # ... 4 px in footprint: not a crack cell -> TN
    return write(tmp_path / "site.mask.tif", mask), write(tmp_path / "heat.tif", heat, nodata=-1)


@pytest.mark.parametrize("block", [1024, 64, 120])
def test_cell_counts_with_nodata(raster: Path, tmp_path: Path, block: int) -> None:
    _, heatmap = _cell_case(tmp_path)
    info = inspect_raster(raster)
    config = EvaluateConfig(cell_size_px=50, min_cell_crack_px=8)
    metrics = evaluate_raster(heatmap, load_truth(raster, info), no_polygons(), 0.5, info, config, block=block)
    assert metrics.cell == Scores(tp=2, fp=2, fn=1)
    assert metrics.cell_counts == {"cells": 20}
    assert metrics.as_dict()["cell"]["cells"] == 20


def test_object_metric_on_hand_made_polygons(raster: Path, tmp_path: Path) -> None:
    """Majority overlap, objects grown by 2 px (fractions worked out below, in pixels)."""
    annotated = [px_box(10, 10, 40, 20), px_box(60, 10, 90, 20), px_box(200, 150, 220, 160)]  # A1, A2, A3
    predicted = [
        px_box(30, 12, 70, 18),  # spans A1 and A2: 72 of 240 px2 on each grown one (0.3) -> not correct
        px_box(12, 11, 38, 19),  # inside A1 -> correct; A1 lies wholly on it grown -> A1 found
        px_box(120, 100, 130, 110),  # on nothing -> not correct
        px_box(205, 152, 215, 158),  # inside A3 -> correct; A3: 140 of 200 px2 on it grown (0.7) -> found
    ]
    # A2: only 120 of 300 px2 on the spanning polygon grown (0.4) -> not found.
    frame = gpd.GeoDataFrame(geometry=annotated, crs=CRS_UTM)
    frame.to_file(tmp_path / "site.cracks.gpkg")
    heatmap = write(tmp_path / "heat.tif", np.zeros((H, W), dtype=np.float32), nodata=-1)
    info = inspect_raster(raster)
    truth = load_truth(raster, info)
    pred = gpd.GeoDataFrame(geometry=predicted, crs=CRS_UTM)
    metrics = evaluate_raster(heatmap, truth, pred.to_crs("EPSG:4326"), 0.5, info, EvaluateConfig())
    assert metrics.object == MatchScores(tp=2, fp=2, fn=1, tp_truth=2)
    assert metrics.object_counts == {"annotated_objects": 3, "predicted_objects": 4}
    d = metrics.as_dict()["object"]
    assert d["precision"] == 0.5 and d["recall"] == pytest.approx(0.6667)
    assert d["f1"] == pytest.approx(round(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3), 4))
    assert (d["annotated_objects"], d["predicted_objects"]) == (3, 4)
    # No predictions: recall 0, precision undefined.
    scores, counts = object_match(truth.objects(), no_polygons(), info)
    assert scores == MatchScores(0, 0, 3, 0) and scores.recall == 0.0 and scores.precision is None
    assert counts == {"annotated_objects": 3, "predicted_objects": 0}


def test_one_big_polygon_over_two_cracks_is_not_a_correct_detection(raster: Path, tmp_path: Path) -> None:
    gpd.GeoDataFrame(geometry=[px_box(10, 10, 40, 20), px_box(60, 10, 90, 20)], crs=CRS_UTM).to_file(
        tmp_path / "site.cracks.gpkg")
    info = inspect_raster(raster)
    big = gpd.GeoDataFrame(geometry=[px_box(10, 10, 90, 20)], crs=CRS_UTM)  # 320 of 800 px2 on each grown crack
    scores, _ = object_match(load_truth(raster, info).objects(), big, info)
    assert scores.precision == 0.0 and scores.recall == 1.0  # both cracks lie under it, but it is no crack's outline
    two = gpd.GeoDataFrame(geometry=[px_box(10, 10, 40, 20), px_box(60, 10, 90, 20)], crs=CRS_UTM)
    assert object_match(load_truth(raster, info).objects(), two, info)[0] == MatchScores(2, 0, 0, 2)


def test_non_georeferenced_image_in_pixel_coordinates(tmp_path: Path) -> None:
    image = write(tmp_path / "photo.png", np.full((H, W), 100, dtype=np.uint8), geo=False)
    gpd.GeoDataFrame(geometry=[box(10, -60, 50, -40)]).to_file(tmp_path / "photo.cracks.gpkg")
    heat = np.zeros((H, W), dtype=np.float32)
    heat[40:60, 10:50] = 0.8
    heatmap = write(tmp_path / "heat.tif", heat, geo=False, nodata=-1)
    info = inspect_raster(image)
    assert info.transform == PIXEL_TRANSFORM
    pred = gpd.GeoDataFrame(geometry=[box(12, -58, 48, -42)], crs=None)
    metrics = evaluate_raster(heatmap, load_truth(image, info), pred, 0.5, info, EvaluateConfig(cell_size_px=100))
    assert metrics.object == MatchScores(1, 0, 0, 1)
    assert metrics.pixel[2] == MatchScores(800, 0, 0, 800)
    assert metrics.cell == Scores(1, 0, 0) and metrics.cell_counts == {"cells": 6}


def test_heatmap_size_mismatch(raster: Path, tmp_path: Path) -> None:
    write(tmp_path / "site.mask.tif", np.zeros((H, W), dtype=np.uint8))
    heatmap = write(tmp_path / "heat.tif", np.zeros((10, 10), dtype=np.float32), nodata=-1)
    info = inspect_raster(raster)
    with pytest.raises(RasterError, match="heat.tif"):
        evaluate_raster(heatmap, load_truth(raster, info), no_polygons(), 0.5, info, EvaluateConfig())


def test_combine_sums_counts() -> None:
    a = RasterMetrics(
        cell=Scores(3, 1, 2),
        object=MatchScores(2, 1, 1, 3),
        object_counts={"annotated_objects": 4, "predicted_objects": 3},
        pixel={2: MatchScores(10, 5, 4, 12), 5: MatchScores(14, 1, 1, 15)},
        cell_counts={"cells": 40},
    )
    b = RasterMetrics(
        cell=Scores(1, 0, 0),
        object=MatchScores(0, 2, 5, 0),
        object_counts={"annotated_objects": 5, "predicted_objects": 2},
        pixel={2: MatchScores(0, 3, 6, 0), 5: MatchScores(1, 2, 5, 1)},
        cell_counts={"cells": 10},
    )
    total = combine([a, b])
    assert total.cell == Scores(4, 1, 2)
    assert total.object == MatchScores(2, 3, 6, 3)
    assert total.object_counts == {"annotated_objects": 9, "predicted_objects": 5}
    assert total.pixel == {2: MatchScores(10, 8, 10, 12), 5: MatchScores(15, 3, 6, 16)}
    assert total.cell_counts == {"cells": 50}
    d = total.as_dict()
    assert list(d) == ["cell", "object", "pixel_2px", "pixel_5px"]
    assert d["object"]["recall"] == pytest.approx(3 / 9, abs=1e-4)
    assert d["object"]["precision"] == pytest.approx(2 / 5, abs=1e-4)
    assert d["pixel_5px"]["annotated_px"] == 22
    empty = combine([])
    assert empty.cell == Scores(0, 0, 0) and empty.pixel == {}


def test_ignore_areas_count_in_no_metric(raster: Path, tmp_path: Path) -> None:
    """A false crack inside an `ignore` area and a missed crack inside another change nothing."""
    crack, joint, unsure = px_box(20, 100, 120, 103), px_box(150, 20, 153, 180), px_box(200, 20, 260, 180)
    gpd.GeoDataFrame({"label": ["crack", "ignore", "ignore"]}, geometry=[crack, joint.buffer(PIXEL * 6), unsure],
                     crs=CRS_UTM).to_file(tmp_path / "site.cracks.gpkg")
    heat = np.zeros((H, W), dtype=np.float32)
    heat[100:103, 20:120] = 0.9  # the crack, found
    heat[20:180, 150:153] = 0.9  # the joint, predicted: inside `ignore`
    heatmap = write(tmp_path / "heat.tif", heat, nodata=-1)
    info = inspect_raster(raster)
    truth = load_truth(raster, info)
    metrics = evaluate_raster(heatmap, truth, no_polygons(), 0.5, info, EvaluateConfig(cell_size_px=20))
    assert metrics.pixel[2].precision == 1.0 and metrics.pixel[2].recall == 1.0
    assert metrics.cell.fp == 0 and metrics.centreline.fp == 0
    # The same heatmap without the `ignore` rows: the joint is a false crack.
    gpd.GeoDataFrame(geometry=[crack], crs=CRS_UTM).to_file(tmp_path / "site.cracks.gpkg", mode="w")
    plain = evaluate_raster(heatmap, load_truth(raster, info), no_polygons(), 0.5, info, EvaluateConfig(cell_size_px=20))
    assert plain.pixel[2].precision < 0.5 and plain.cell.fp > 0
