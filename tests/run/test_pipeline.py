"""Library-level pipeline behaviour: GSD-aware tiling and survey discovery."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from rasterio.transform import from_origin

from survey_cracks.cli.main import cli
from survey_cracks.config import RunConfig, TilingConfig
from survey_cracks.io.discover import find_rasters
from survey_cracks.io.raster import inspect_raster
from survey_cracks.models.network import ModelMeta
from survey_cracks.run.pipeline import patch_grid_for
from tests.conftest import write_geotiff


def test_ground_size_patches_follow_the_pixel_size(tmp_path):
    raster = write_geotiff(tmp_path / "r.tif", np.zeros((600, 600, 3), np.uint8) + 80,
                           transform=from_origin(500000.0, 5700000.0, 0.005, 0.005))
    info = inspect_raster(raster)
    config = RunConfig(tiling=TilingConfig(patch_size=64, ground_patch_m=0.64))
    grid = patch_grid_for(info, ModelMeta(patch_size=64), config)
    assert grid.size == 128 and grid.stride == 64  # 0.64 m / 5 mm, half overlap kept
    assert patch_grid_for(info, ModelMeta(patch_size=64), RunConfig(tiling=TilingConfig(patch_size=64))).size == 64


def test_gsd_aware_run_resamples_windows(tiny_model, tmp_path):
    data = tmp_path / "site"
    data.mkdir()
    write_geotiff(data / "r.tif", np.random.default_rng(0).integers(60, 200, (300, 300, 3), dtype=np.uint8),
                  transform=from_origin(500000.0, 5700000.0, 0.005, 0.005))
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(data), "--out", str(out), "--model", str(tiny_model), "--workers", "1",
                                      "--ground-patch-m", "0.64", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "site" / "r" / "report.json").read_text())
    assert report["counts"]["patch_window_px"] == 128 and report["counts"]["patches"] == 16


def test_discovery_of_files_surveys_and_folders_of_surveys(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for path in ("a/x.tif", "a/x.mask.tif", "a/x.cracks.geojson", "b/y.png", "b/.hidden.png", "loose.jpg"):
        (tmp_path / path).write_bytes(b"")
    found, errors = find_rasters([tmp_path])
    assert {(r.survey, r.name) for r in found} == {("a", "x"), ("b", "y"), (tmp_path.name, "loose")}
    found, errors = find_rasters([tmp_path / "a" / "x.tif", tmp_path / "nope"])
    assert [(r.survey, r.name) for r in found] == [("a", "x")] and "not found" in errors[0].message


def test_rasters_given_by_relative_path_keep_it_and_are_opened_by_absolute_path(tmp_path, monkeypatch):
    """Records keep the path as given; the workers of an external cluster (--scheduler) have their own working folder."""
    (tmp_path / "a").mkdir()
    for name in ("x.tif", "scan.png"):
        (tmp_path / "a" / name).write_bytes(b"")  # discovery does not open them
    monkeypatch.chdir(tmp_path)
    for given in ("a", "a/x.tif"):
        found, _ = find_rasters([given])
        assert found and all(not r.path.is_absolute() and r.location == tmp_path / "a" / r.path.name for r in found), given
    assert {r.survey for r in find_rasters(["a"])[0]} == {"a"}


def test_geographic_crs_pixels_are_measured_in_metres_on_the_ellipsoid(tmp_path):
    # 1e-7 degree pixels at the equator: 0.01113 m east-west, 0.01106 m north-south
    raster = write_geotiff(tmp_path / "r.tif", np.zeros((300, 300, 3), np.uint8) + 80, crs="EPSG:4326",
                           transform=from_origin(5.0, 0.000015, 1e-7, 1e-7))
    info = inspect_raster(raster)
    assert info.pixel_size == pytest.approx(np.sqrt(0.011132 * 0.011057), rel=2e-3)
    config = RunConfig(tiling=TilingConfig(patch_size=64, ground_patch_m=1.42))
    assert patch_grid_for(info, ModelMeta(patch_size=64), config).size == 128


def test_projected_pixels_in_feet_are_converted_to_metres(tmp_path):
    raster = write_geotiff(tmp_path / "r.tif", np.zeros((64, 64, 3), np.uint8) + 80, crs="EPSG:2263",
                           transform=from_origin(1000000.0, 200000.0, 0.1, 0.1))
    assert inspect_raster(raster).pixel_size == pytest.approx(0.1 * 0.3048006, rel=1e-6)


def test_a_raster_given_by_relative_path_is_read_by_the_workers_of_a_cluster_started_elsewhere(tmp_path, cluster,
                                                                                                monkeypatch):
    """An external --scheduler's workers have their own working folder (the module's cluster was started in another)."""
    (tmp_path / "site").mkdir()
    write_geotiff(tmp_path / "site" / "r.tif", np.random.default_rng(0).integers(60, 200, (300, 300, 3), dtype=np.uint8))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["run", "site", "--out", "out", "--scheduler", cluster.scheduler_address, "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "site" / "r" / "report.json").read_text())
    assert report["status"] == "ok" and report["source"] == "site/r.tif"  # recorded as given
