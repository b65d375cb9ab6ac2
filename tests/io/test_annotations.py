"""Ground truth beside a raster: discovery, CRS handling, widths, errors, windows, objects."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import LineString, Point, Polygon, box

from survey_cracks.config import EvaluateConfig
from survey_cracks.errors import AnnotationError
from survey_cracks.io.annotations import (
    Truth,
    annotation_candidates,
    find_annotation,
    is_annotation_raster,
    load_truth,
)
from survey_cracks.io.raster import inspect_raster

W, H = 300, 200
PIXEL = 0.01
X0, Y0 = 500000.0, 5000000.0
GEO_TRANSFORM = from_origin(X0, Y0, PIXEL, PIXEL)
CRS_UTM = "EPSG:32631"


def write_raster(path: Path, width: int = W, height: int = H, *, geo: bool = True, data: np.ndarray | None = None) -> Path:
    """A small uint8 raster; georeferenced GeoTIFF in EPSG:32631 or a plain image."""
    if data is None:
        data = np.full((height, width), 120, dtype=np.uint8)
    profile = {"width": width, "height": height, "count": 1, "dtype": "uint8"}
    if geo:
        profile.update(driver="GTiff", crs=CRS_UTM, transform=GEO_TRANSFORM)
    else:
        profile.update(driver="PNG" if path.suffix == ".png" else "GTiff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data, 1)
    return path


def px(col: float, row: float) -> tuple[float, float]:
    """Map coordinates (EPSG:32631) of a pixel position of the georeferenced test raster."""
    return GEO_TRANSFORM @ (col, row)


def px_box(col0: float, row0: float, col1: float, row1: float) -> Polygon:
    (xa, ya), (xb, yb) = px(col0, row0), px(col1, row1)
    return box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb))


def write_vector(path: Path, geoms: list, crs: str | None, **columns: list) -> Path:
    frame = gpd.GeoDataFrame(dict(columns), geometry=geoms, crs=crs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame.to_file(path, driver="GPKG" if path.suffix == ".gpkg" else "GeoJSON")
    return path


@pytest.fixture
def geo_raster(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "site.tif")


@pytest.fixture
def png_raster(tmp_path: Path) -> Path:
    return write_raster(tmp_path / "photo.png", geo=False)


def full_mask(truth: Truth) -> np.ndarray:
    return truth.mask(Window(0, 0, truth.info.width, truth.info.height))


# --- discovery ---------------------------------------------------------------


def test_discovery_order_and_mask_rasters_are_not_surveys(tmp_path: Path) -> None:
    raster = tmp_path / "site.a.tif"
    names = [p.name for p in annotation_candidates(raster)]
    assert names == ["site.a.cracks.geojson", "site.a.cracks.gpkg", "site.a.mask.png", "site.a.mask.tif"]
    assert find_annotation(raster) is None
    for name in reversed(names):
        (tmp_path / name).write_bytes(b"x")
        assert find_annotation(raster) == tmp_path / name
    for name in names[:-1]:
        (tmp_path / name).unlink()
        assert find_annotation(raster) == tmp_path / names[names.index(name) + 1]
    assert is_annotation_raster(tmp_path / "site.mask.tif")
    assert is_annotation_raster(tmp_path / "site.MASK.png")
    assert is_annotation_raster(tmp_path / "site.cracks.tif")
    assert not is_annotation_raster(tmp_path / "site.masked.tif")
    assert not is_annotation_raster(raster)
    assert find_annotation(tmp_path / "site.a.mask.tif") is None


# --- vectors -----------------------------------------------------------------


def test_lines_buffered_by_default_and_column_width(geo_raster: Path, tmp_path: Path) -> None:
    # Horizontal lines on pixel-row boundaries: a band of width w covers rows
    # boundary - w/2 .. boundary + w/2, i.e. ceil(w) + 1 rows when w/2 is mid-pixel.
    no_width = LineString([px(20, 50), px(280, 50)])
    wide = LineString([px(20, 150), px(280, 150)])
    path = write_vector(tmp_path / "site.cracks.geojson", [no_width, wide], CRS_UTM, width=[None, 5 * PIXEL])
    truth = load_truth(geo_raster, inspect_raster(geo_raster), EvaluateConfig(default_line_width_px=3))
    assert truth.kind == "vector" and truth.path == path
    column = full_mask(truth)[:, 150]
    assert np.flatnonzero(column[:100]).tolist() == [48, 49, 50, 51]  # 3 px: 48.5 .. 51.5
    assert np.flatnonzero(column[100:]).tolist() == [47, 48, 49, 50, 51, 52]  # 5 px: 147.5 .. 152.5
    row = full_mask(truth)[50]
    assert row[20:280].all()


def test_geojson_in_wgs84_is_reprojected_onto_the_right_pixels(geo_raster: Path, tmp_path: Path) -> None:
    to_wgs = Transformer.from_crs(CRS_UTM, "EPSG:4326", always_xy=True)
    square = px_box(50.5, 80.5, 59.5, 89.5)  # covers columns 50..59, rows 80..89
    lonlat = shapely.transform(square, lambda xy: np.column_stack(to_wgs.transform(xy[:, 0], xy[:, 1])))
    write_vector(tmp_path / "site.cracks.geojson", [lonlat], "EPSG:4326")
    truth = load_truth(geo_raster, inspect_raster(geo_raster))
    rows, cols = np.nonzero(full_mask(truth))
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (80, 89, 50, 59)
    assert rows.size == 100


def test_geojson_without_crs_member_is_wgs84(geo_raster: Path, tmp_path: Path) -> None:
    to_wgs = Transformer.from_crs(CRS_UTM, "EPSG:4326", always_xy=True)
    ring = [list(to_wgs.transform(*px(c, r))) for c, r in [(10.5, 10.5), (19.5, 10.5), (19.5, 19.5), (10.5, 10.5)]]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    (tmp_path / "site.cracks.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    mask = full_mask(load_truth(geo_raster, inspect_raster(geo_raster)))
    assert mask[15, 17] and mask[11, 18] and not mask[18, 11] and not mask[30, 30]


def test_pixel_coordinates_for_non_georeferenced_image(png_raster: Path, tmp_path: Path) -> None:
    info = inspect_raster(png_raster)
    assert not info.georeferenced
    # x = column, y = -row; no CRS (GeoJSON without a "crs" member).
    line = LineString([(10, -100), (200, -100)])
    path = tmp_path / "photo.cracks.geojson"
    feature = {"type": "Feature", "properties": {"width": 4}, "geometry": shapely.geometry.mapping(line)}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    mask = full_mask(load_truth(png_raster, info))
    assert np.flatnonzero(mask[:, 100]).tolist() == [98, 99, 100, 101]
    assert mask[100, 8:202].all() and not mask[100, 203:].any()


def test_overlapping_features_merge_into_one_object(geo_raster: Path, tmp_path: Path) -> None:
    geoms = [
        px_box(10, 10, 30, 20),
        px_box(25, 15, 40, 30),  # overlaps the first
        LineString([px(100, 100), px(150, 100)]),
        px_box(290, 190, 400, 300),  # partly outside: clipped to the raster
    ]
    write_vector(tmp_path / "site.cracks.gpkg", geoms, CRS_UTM)
    objects = load_truth(geo_raster, inspect_raster(geo_raster)).objects()
    assert len(objects) == 3
    assert objects.crs.to_epsg() == 32631
    areas = sorted(objects.area / PIXEL**2)
    assert areas[0] == pytest.approx(100, rel=1e-6)  # the clipped 10 x 10 corner
    assert areas[2] == pytest.approx(200 + 225 - 25, rel=1e-6)


# --- masks -------------------------------------------------------------------


def test_mask_window_partly_outside_and_resampled(geo_raster: Path, tmp_path: Path) -> None:
    data = np.zeros((H, W), dtype=np.uint8)
    data[0:10, 0:20] = 255
    data[100, 100] = 1
    write_raster(tmp_path / "site.mask.tif", data=data)
    truth = load_truth(geo_raster, inspect_raster(geo_raster))
    assert truth.kind == "mask"
    window = truth.mask(Window(-50, -30, 100, 60))
    assert window.shape == (60, 100)
    expected = np.zeros((60, 100), dtype=bool)
    expected[30:40, 50:70] = True
    np.testing.assert_array_equal(window, expected)
    assert not truth.mask(Window(W + 5, 0, 10, 10)).any()
    # "any" resampling: a single crack pixel survives a 10x reduction.
    small = truth.mask(Window(0, 0, W, H), out_shape=(20, 30))
    assert small[10, 10] and small[0, 0] and small[0, 1] and not small[0, 2] and small.sum() == 3


def test_vector_window_partly_outside(geo_raster: Path, tmp_path: Path) -> None:
    write_vector(tmp_path / "site.cracks.geojson", [px_box(-20.5, -20.5, 10.5, 5.5)], CRS_UTM)
    truth = load_truth(geo_raster, inspect_raster(geo_raster))
    window = truth.mask(Window(-8, -4, 30, 20))
    expected = np.zeros((20, 30), dtype=bool)
    expected[4:10, 8:19] = True  # rows 0..5, cols 0..10 of the raster; outside stays False
    np.testing.assert_array_equal(window, expected)


def test_mask_objects_are_8_connected_across_block_borders(png_raster: Path, tmp_path: Path) -> None:
    data = np.zeros((H, W), dtype=np.uint8)
    data[60:70, 20:200] = 1  # crosses the block borders at columns 64, 128, 192
    for i in range(30):  # a 1-px diagonal crack crossing the border at row 64/column 128
        data[50 + i, 110 + i] = 1
    data[150:160, 250:260] = 1  # separate
    data[10, 10] = 1
    data[11, 11] = 1  # diagonal neighbours: one object
    write_raster(tmp_path / "photo.mask.png", geo=False, data=data)
    truth = load_truth(png_raster, inspect_raster(png_raster))
    truth.block = 64
    objects = truth.objects()
    assert objects.crs is None
    assert sorted(objects.area.round().astype(int)) == [2, 100, 1800 + 30 - 10]
    # Pixel convention: row r spans y = -r-1 .. -r.
    assert objects.total_bounds.tolist() == [10.0, -160.0, 260.0, -10.0]


def test_rgb_mask_any_band_counts(geo_raster: Path, tmp_path: Path) -> None:
    data = np.zeros((3, H, W), dtype=np.uint8)
    data[1, 5:8, 5:9] = 255  # green cracks on black: band 1 is all zero
    with rasterio.open(
        tmp_path / "site.mask.tif", "w", driver="GTiff", width=W, height=H, count=3, dtype="uint8"
    ) as dst:
        dst.write(data)
    truth = load_truth(geo_raster, inspect_raster(geo_raster))
    assert full_mask(truth).sum() == 12
    assert len(truth.objects()) == 1 and truth.objects().area.iloc[0] == pytest.approx(12 * PIXEL**2)


def test_all_zero_mask_is_a_valid_crack_free_annotation(geo_raster: Path, tmp_path: Path) -> None:
    write_raster(tmp_path / "site.mask.png", geo=False, data=np.zeros((H, W), dtype=np.uint8))
    truth = load_truth(geo_raster, inspect_raster(geo_raster))
    assert not full_mask(truth).any() and len(truth.objects()) == 0


# --- errors ------------------------------------------------------------------


def _raises(raster: Path, annotation: Path, *words: str) -> AnnotationError:
    with pytest.raises(AnnotationError) as caught:
        load_truth(raster, inspect_raster(raster))
    message = str(caught.value)
    assert str(annotation) in message
    assert caught.value.fix
    for word in words:
        assert word in message
    return caught.value


def test_error_zero_bytes(geo_raster: Path, tmp_path: Path) -> None:
    path = tmp_path / "site.cracks.geojson"
    path.write_bytes(b"")
    _raises(geo_raster, path, "empty")


def test_error_no_features(geo_raster: Path, tmp_path: Path) -> None:
    path = tmp_path / "site.cracks.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}')
    _raises(geo_raster, path, "no features")


def test_error_unreadable(geo_raster: Path, tmp_path: Path) -> None:
    path = tmp_path / "site.cracks.gpkg"
    path.write_text("this is not a geopackage")
    _raises(geo_raster, path, "not a readable")


def test_error_unreadable_mask(geo_raster: Path, tmp_path: Path) -> None:
    path = tmp_path / "site.mask.png"
    path.write_bytes(b"\x89PNG broken")
    _raises(geo_raster, path, "not a readable mask")


def test_error_points(geo_raster: Path, tmp_path: Path) -> None:
    path = write_vector(tmp_path / "site.cracks.geojson", [px_box(1, 1, 5, 5), Point(px(9, 9))], CRS_UTM)
    _raises(geo_raster, path, "Point", "not polygons or lines")


def test_error_invalid_geometry_that_cannot_be_repaired(geo_raster: Path, tmp_path: Path) -> None:
    flat = Polygon([px(10, 10), px(20, 10), px(30, 10), px(10, 10)])  # zero area
    path = write_vector(tmp_path / "site.cracks.geojson", [flat], CRS_UTM)
    _raises(geo_raster, path, "cannot be repaired")


def test_repairable_bowtie_is_accepted(geo_raster: Path, tmp_path: Path) -> None:
    bowtie = Polygon([px(10.5, 10.5), px(30.5, 30.5), px(30.5, 10.5), px(10.5, 30.5), px(10.5, 10.5)])
    write_vector(tmp_path / "site.cracks.geojson", [bowtie], CRS_UTM)
    mask = full_mask(load_truth(geo_raster, inspect_raster(geo_raster)))
    assert mask[20, 12] and mask[20, 28] and not mask[12, 20]


def test_error_no_crs_for_georeferenced_raster(geo_raster: Path, tmp_path: Path) -> None:
    path = write_vector(tmp_path / "site.cracks.gpkg", [px_box(1, 1, 5, 5)], None)
    _raises(geo_raster, path, "no CRS", "ogr2ogr -a_srs EPSG:32631")


def test_error_geojson_in_metres_without_crs_member(geo_raster: Path, tmp_path: Path) -> None:
    path = tmp_path / "site.cracks.geojson"
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(px_box(1, 1, 5, 5))}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    _raises(geo_raster, path, "no CRS", "ogr2ogr -a_srs")


def test_error_crs_for_non_georeferenced_image(png_raster: Path, tmp_path: Path) -> None:
    path = write_vector(tmp_path / "photo.cracks.gpkg", [box(1, -5, 5, -1)], CRS_UTM)
    _raises(png_raster, path, "not georeferenced")


def test_error_features_outside_the_raster(geo_raster: Path, tmp_path: Path) -> None:
    path = write_vector(tmp_path / "site.cracks.geojson", [px_box(1000, 1000, 1010, 1010)], CRS_UTM)
    _raises(geo_raster, path, "another raster/CRS")


def test_error_mask_size_mismatch(geo_raster: Path, tmp_path: Path) -> None:
    path = write_raster(tmp_path / "site.mask.tif", width=W // 2, height=H // 2)
    _raises(geo_raster, path, "150x100", "300x200")


def test_error_no_annotation(geo_raster: Path) -> None:
    with pytest.raises(AnnotationError, match="site.cracks.geojson"):
        load_truth(geo_raster, inspect_raster(geo_raster))


def test_explicit_annotation_path(geo_raster: Path, tmp_path: Path) -> None:
    other = write_vector(tmp_path / "elsewhere.gpkg", [px_box(0, 0, 10, 10)], CRS_UTM)
    truth = load_truth(geo_raster, inspect_raster(geo_raster), annotation=other)
    assert truth.path == other and full_mask(truth).sum() == 100


def test_truth_pickles_for_workers(geo_raster: Path, tmp_path: Path) -> None:
    import pickle

    write_vector(tmp_path / "site.cracks.geojson", [px_box(0, 0, 10, 10)], CRS_UTM)
    truth = load_truth(geo_raster, inspect_raster(geo_raster))
    before = full_mask(truth)
    again = pickle.loads(pickle.dumps(truth))
    np.testing.assert_array_equal(full_mask(again), before)


def test_pixel_transform_is_the_convention() -> None:
    from survey_cracks.io.raster import PIXEL_TRANSFORM

    assert PIXEL_TRANSFORM == Affine(1, 0, 0, 0, -1, 0)


# ---------------------------------------------------------------------------------- crack / not_crack / ignore labels


def _labelled(tmp_path, labels, geoms):
    import geopandas as gpd

    from survey_cracks.io.raster import inspect_raster
    from tests.conftest import write_geotiff

    raster = write_geotiff(tmp_path / "wall.tif", np.full((100, 100, 3), 120, np.uint8))
    gpd.GeoDataFrame({"label": labels}, geometry=geoms, crs="EPSG:32631").to_file(tmp_path / "wall.cracks.gpkg")
    return raster, inspect_raster(raster)


def _px_line(c0, r0, c1, r1):
    import shapely

    return shapely.LineString([(500000.0 + c0 * 0.01, 5700000.0 - r0 * 0.01), (500000.0 + c1 * 0.01, 5700000.0 - r1 * 0.01)])


def test_label_column_separates_cracks_hard_negatives_and_ignored_areas(tmp_path):
    from rasterio.windows import Window

    from survey_cracks.io.annotations import load_truth

    raster, info = _labelled(tmp_path, ["crack", "NOT_CRACK ", None, "ignore"],
                             [_px_line(10, 10, 90, 10), _px_line(50, 0, 50, 100), _px_line(10, 80, 90, 80),
                              _px_line(0, 40, 100, 40).buffer(0.05)])
    truth = load_truth(raster, info)
    whole = Window(0, 0, 100, 100)
    crack, hard, ignore = truth.mask(whole), truth.not_crack_mask(whole), truth.ignore_mask(whole)
    assert crack[10, 50] and crack[80, 50] and not crack[30, 50]  # a missing label is a crack
    assert hard[30, 50] and hard[60, 50] and not hard[10, 50]  # the crack crossing the joint stays a crack
    assert ignore[40, 10] and not ignore[10, 10] and not crack[40, 10]
    assert len(truth.objects()) == 2  # objects are cracks only


@pytest.mark.parametrize("labels,geoms,needle", [
    (["crack", "joint"], "lines", "unknown 'label' 'joint'"),
    (["crack", "not_crack"], "points", "Point, not polygons or lines"),
])
def test_wrong_labels_or_geometries_are_one_clear_error_naming_the_file(tmp_path, labels, geoms, needle):
    import shapely

    from survey_cracks.errors import AnnotationError
    from survey_cracks.io.annotations import load_truth

    shapes = [_px_line(10, 10, 90, 10), _px_line(50, 0, 50, 100) if geoms == "lines" else shapely.Point(500000.5, 5699999.5)]
    raster, info = _labelled(tmp_path, labels, shapes)
    with pytest.raises(AnnotationError) as caught:
        load_truth(raster, info)
    assert needle in str(caught.value) and "wall.cracks.gpkg" in str(caught.value)
