"""Procedural imagery: shapes, determinism, crack masks that match dark pixels,
and orthomosaics that are georeferenced, masked and seamless across tiles."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from rasterio.transform import from_origin
from scipy import ndimage

from survey_cracks.synthetic import crack_lines, render_scene, write_orthomosaic


def _lum(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float32).mean(axis=-1)


def _ring(mask: np.ndarray, width: int = 4) -> np.ndarray:
    """Pixels just around a mask, the crack's immediate surroundings."""
    return ndimage.binary_dilation(mask, iterations=width) & ~ndimage.binary_dilation(mask, iterations=1)


def test_render_scene_shapes_dtypes_and_determinism():
    rgb, mask = render_scene(120, 160, seed=5)
    assert rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8
    assert mask.shape == (120, 160) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 255}
    rgb2, mask2 = render_scene(120, 160, seed=5)
    assert np.array_equal(rgb, rgb2) and np.array_equal(mask, mask2)
    rgb3, _ = render_scene(120, 160, seed=6)
    assert not np.array_equal(rgb, rgb3)
    assert rgb.std() > 3  # textured, not flat
    with pytest.raises(ValueError):
        render_scene(50, 50, seed=1, surface="gravel")  # type: ignore[arg-type]


@pytest.mark.parametrize("surface", ["concrete", "asphalt"])
def test_cracks_in_mask_and_darker_than_surroundings(surface):
    rgb, mask = render_scene(192, 256, seed=11, surface=surface, n_cracks=3)
    crack = mask > 0
    assert crack.sum() > 100
    lum = _lum(rgb)
    assert lum[crack].mean() < lum[_ring(crack)].mean() - 15


def test_no_cracks_means_empty_mask_but_still_confusers():
    rgb, mask = render_scene(192, 256, seed=114, surface="concrete", n_cracks=0)
    assert not mask.any()
    # the scene is not blank: joints, stains or shadows give strong dark structure
    lum = _lum(rgb)
    assert np.percentile(lum, 1) < np.median(lum) - 25


def test_crack_lines_stay_in_bounds_with_pixel_widths():
    bounds = (100.0, 200.0, 110.0, 205.0)
    px = 0.005
    lines = crack_lines(bounds, 5, np.random.default_rng(3), px)
    assert len(lines) >= 5  # branches add more
    for line, width in lines:
        x0, y0, x1, y1 = line.bounds
        assert x0 >= bounds[0] and y0 >= bounds[1] and x1 <= bounds[2] and y1 <= bounds[3]
        assert 1.0 * px <= width <= 6.0 * px + 1e-12
        assert line.length > 2 * px
    again = crack_lines(bounds, 5, np.random.default_rng(3), px)
    assert [l.wkb for l, _ in lines] == [l.wkb for l, _ in again]


@pytest.fixture(scope="module")
def ortho(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ortho")
    tif, ann = folder / "o.tif", folder / "o.cracks.geojson"
    write_orthomosaic(
        tif, 700, 500, seed=4, n_cracks=6, block=256, annotation_path=ann, annotation_crs="EPSG:4326", compress="DEFLATE"
    )
    return tif, ann


def test_orthomosaic_georeferencing_and_footprint_mask(ortho):
    tif, _ = ortho
    with rasterio.open(tif) as src:
        assert (src.width, src.height, src.count) == (700, 500, 3)
        assert src.dtypes == ("uint8",) * 3
        assert src.crs.to_epsg() == 32631
        assert src.transform.almost_equals(from_origin(500000.0, 5700000.0, 0.005, 0.005))
        assert src.block_shapes[0] == (256, 256)
        assert src.mask_flag_enums[0] == [rasterio.enums.MaskFlags.per_dataset]
        mask = src.dataset_mask()
        data = src.read()
    valid = mask > 0
    assert 0.5 < valid.mean() < 0.95  # irregular footprint, not the full extent
    assert not valid[0, 0] and not valid[-1, -1]  # corners fall outside
    assert not data[:, ~valid].any()  # outside pixels are 0
    assert (data[:, valid].mean(axis=0) > 20).mean() > 0.99


def test_orthomosaic_annotations_are_reprojected_lines_with_metric_width(ortho):
    _, ann = ortho
    gdf = gpd.read_file(ann)
    assert gdf.crs.to_epsg() == 4326
    assert len(gdf) >= 6 and set(gdf.geom_type) == {"LineString"}
    assert ((gdf["width"] >= 0.005) & (gdf["width"] <= 0.0301)).all()  # metres: 1-6 px at 5 mm
    # lon/lat near UTM 31N (500000, 5700000)
    x0, y0, x1, y1 = gdf.total_bounds
    assert 2.99 < x0 < x1 < 3.01 and 51.4 < y0 < y1 < 51.5


def test_orthomosaic_cracks_match_dark_pixels_across_tile_borders(ortho):
    tif, ann = ortho
    with rasterio.open(tif) as src:
        lum = _lum(np.moveaxis(src.read(), 0, -1))
        transform, crs = src.transform, src.crs
    gdf = gpd.read_file(ann).to_crs(crs)
    shapes = [(g.buffer(w / 2), 1) for g, w in zip(gdf.geometry, gdf["width"])]
    crack = rasterio.features.rasterize(shapes, out_shape=lum.shape, transform=transform).astype(bool)
    near_border = np.zeros_like(crack)
    for k in (256, 512):  # tile borders, rows and columns
        near_border[max(0, k - 3) : k + 3, :] = True
        near_border[:, k - 3 : k + 3] = True
    assert (crack & near_border).sum() > 20, "no crack crosses a tile border in this fixture"
    ring = _ring(crack)
    assert lum[crack & near_border].mean() < lum[ring & near_border].mean() - 15
    assert lum[crack].mean() < lum[ring].mean() - 15


def test_orthomosaic_is_identical_whatever_the_tiling(ortho, tmp_path):
    """Texture and vectors are functions of global coordinates: tiles join seamlessly."""
    tif, _ = ortho
    other = tmp_path / "o512.tif"
    write_orthomosaic(other, 700, 500, seed=4, n_cracks=6, block=512, compress="DEFLATE")
    with rasterio.open(tif) as a, rasterio.open(other) as b:
        assert np.array_equal(a.read(), b.read())
        assert np.array_equal(a.dataset_mask(), b.dataset_mask())


def test_a_small_road_scene_whose_tyre_track_geos_cannot_offset_still_renders():
    """Seed 1373 at 128 px made GEOS's offset_curve fail; the scene falls back to a parallel shift."""
    from survey_cracks.synthetic.survey import render_scene

    rgb, truth = render_scene(128, 128, seed=1373, surface="asphalt")
    assert rgb.shape == (128, 128, 3) and truth.shape == (128, 128)
