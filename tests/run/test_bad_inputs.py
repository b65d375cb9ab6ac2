"""A night's batch with one broken input: one clear error line naming the file, the
other rasters still complete, a non-zero exit code and no half-written outputs.

All batch runs go through ``--scheduler`` on one LocalCluster started here (the
worker keeps the model loaded between runs); the default-LocalCluster path is
covered by tests/cli/test_cli.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from rasterio.transform import from_origin
from shapely.geometry import LineString

from survey_cracks.cli.main import cli
from survey_cracks.synthetic import render_scene
from tests.conftest import write_geotiff

OUTPUT_FILES = {"heatmap.tif", "cracks.gpkg", "cracks.geojson", "report.json", "heatmap.qml", "cracks.qml",
                "item.json"}  # the STAC item of the raster (stac.py)
SIZE = 96  # good and bad rasters: 96 x 96 px
ORIGIN = (500000.0, 5700000.0)
GSD = 0.01


def scene(seed: int) -> np.ndarray:
    return render_scene(SIZE, SIZE, seed=seed, n_cracks=1)[0]


def write_good(path: Path, seed: int = 0) -> Path:
    return write_geotiff(path, scene(seed), transform=from_origin(*ORIGIN, GSD, GSD))


# ---------------------------------------------------------------------------------- bad inputs
# Each writes its broken input into `folder` and returns (output folder name of the bad raster,
# the file name the error must name).


def zero_byte_tif(folder: Path) -> tuple[str, str]:
    (folder / "bad.tif").write_bytes(b"")
    return "bad", "bad.tif"


def text_named_tif(folder: Path) -> tuple[str, str]:
    (folder / "bad.tif").write_text("this is a text file, not a GeoTIFF\n")
    return "bad", "bad.tif"


def five_bands(folder: Path) -> tuple[str, str]:
    data = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 5), dtype=np.uint8)
    write_geotiff(folder / "bad.tif", data)
    return "bad", "bad.tif"


def float32_raster(folder: Path) -> tuple[str, str]:
    write_geotiff(folder / "bad.tif", scene(1).astype(np.float32) / 255.0)
    return "bad", "bad.tif"


def empty_footprint_mask(folder: Path) -> tuple[str, str]:
    write_geotiff(folder / "bad.tif", scene(1), mask=np.zeros((SIZE, SIZE), bool))
    return "bad", "bad.tif"


def empty_footprint_nodata(folder: Path) -> tuple[str, str]:
    write_geotiff(folder / "bad.tif", np.zeros((SIZE, SIZE, 3), np.uint8), nodata=0)
    return "bad", "bad.tif"


def empty_geojson(folder: Path) -> tuple[str, str]:
    write_good(folder / "bad.tif", seed=1)
    (folder / "bad.cracks.geojson").write_bytes(b"")
    return "bad", "bad.cracks.geojson"


def invalid_geojson(folder: Path) -> tuple[str, str]:
    write_good(folder / "bad.tif", seed=1)
    (folder / "bad.cracks.geojson").write_text('{"type": "nope"}')
    return "bad", "bad.cracks.geojson"


def gpkg_in_mismatched_crs(folder: Path) -> tuple[str, str]:
    """Raster coordinates, but declared in the neighbouring UTM zone: ~400 km off once reprojected."""
    write_good(folder / "bad.tif", seed=1)
    x0, y0 = ORIGIN
    line = LineString([(x0 + 0.1, y0 - 0.1), (x0 + 0.8, y0 - 0.7)])
    gpd.GeoDataFrame({"width": [0.02]}, geometry=[line], crs="EPSG:32632").to_file(
        folder / "bad.cracks.gpkg", driver="GPKG", layer="cracks")
    return "bad", "bad.cracks.gpkg"


def mask_of_other_size(folder: Path) -> tuple[str, str]:
    write_good(folder / "bad.tif", seed=1)
    mask = np.zeros((SIZE // 2, SIZE - 10), np.uint8)
    mask[10:12, :] = 255
    Image.fromarray(mask).save(folder / "bad.mask.png")
    return "bad", "bad.mask.png"


def two_bands_without_alpha(folder: Path) -> tuple[str, str]:
    """Grey + something (say near-infrared): not to be taken for grey + alpha."""
    data = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 2), dtype=np.uint8)
    write_geotiff(folder / "bad.tif", data)
    return "bad", "bad.tif"


def utm_declared_wgs84(folder: Path) -> tuple[str, str]:
    """The raster's UTM coordinates in a GeoJSON that says EPSG:4326 (a common export slip)."""
    write_good(folder / "bad.tif", seed=1)
    x0, y0 = ORIGIN
    line = LineString([(x0 + 0.1, y0 - 0.1), (x0 + 0.8, y0 - 0.7)])
    gpd.GeoDataFrame({"width": [0.02]}, geometry=[line], crs="EPSG:4326").to_file(folder / "bad.cracks.geojson", driver="GeoJSON")
    return "bad", "bad.cracks.geojson"


def geojson_without_crs_beside_georeferenced(folder: Path) -> tuple[str, str]:
    write_good(folder / "bad.tif", seed=1)
    x0, y0 = ORIGIN
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "LineString", "coordinates": [[x0 + 0.1, y0 - 0.1],
                                                                                                     [x0 + 0.8, y0 - 0.7]]}}
    (folder / "bad.cracks.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return "bad", "bad.cracks.geojson"


BAD_INPUTS = [two_bands_without_alpha, zero_byte_tif, text_named_tif, five_bands, float32_raster, empty_footprint_mask, empty_footprint_nodata]
# An annotation is optional ground truth: when it cannot be used, the raster's maps are still written.
BAD_ANNOTATIONS = [empty_geojson, invalid_geojson, gpkg_in_mismatched_crs, mask_of_other_size, utm_declared_wgs84,
                   geojson_without_crs_beside_georeferenced]


# ---------------------------------------------------------------------------------- helpers


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def read_summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if "partial" in p.name or "staging" in p.name]


def assert_good_outputs(folder: Path) -> None:
    assert folder.is_dir(), f"{folder} missing"
    assert {p.name for p in folder.iterdir()} == OUTPUT_FILES
    report = json.loads((folder / "report.json").read_text())
    assert report["status"] == "ok" and report["error"] is None


def lines_naming(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if name in line]


def run_beside_good(make_bad, tiny_model: Path, cluster, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A survey of a good raster and what ``make_bad`` writes, run: (bad raster, file named, OUT, the CLI's result)."""
    survey = tmp_path / "survey"
    survey.mkdir()
    write_good(survey / "good.tif")
    bad_name, file_name = make_bad(survey)
    out = tmp_path / "out"
    result = invoke("run", survey, "--out", out, "--model", tiny_model, "--scheduler", cluster.scheduler_address,
                    "--workers", "1", "-q")
    return bad_name, file_name, out, result


# ---------------------------------------------------------------------------------- one bad raster in a batch


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=lambda f: f.__name__)
def test_one_bad_input_fails_alone(make_bad, tiny_model, cluster, tmp_path):
    bad_name, file_name, out, result = run_beside_good(make_bad, tiny_model, cluster, tmp_path)

    assert result.exit_code == 1, result.output
    assert_good_outputs(out / "survey" / "good")
    assert not (out / "survey" / bad_name).exists(), "a failed raster must leave no output folder"
    assert not leftovers(out), leftovers(out)

    rows = {row["raster"]: row for row in read_summary(out)}
    assert set(rows) == {"good", bad_name}
    assert rows["good"]["status"] == "ok"
    bad = rows[bad_name]
    assert bad["status"] == "error" and bad["survey"] == "survey"
    assert file_name in bad["error"], bad["error"]
    assert "\n" not in bad["error"]
    # a user-actionable error, not a crash caught by the batch's safety net
    assert "unexpected" not in bad["error"], bad["error"]

    failed = [line for line in lines_naming(result.stderr, file_name) if line.startswith("FAILED")]
    assert len(failed) == 1, result.stderr
    assert lines_naming(result.stdout, file_name), result.stdout

    survey_report = json.loads((out / "survey" / "report.json").read_text())
    assert survey_report["ok"] == 1 and len(survey_report["failed"]) == 1
    assert file_name in survey_report["failed"][0]
    run = json.loads((out / "run.json").read_text())
    assert run["rasters"] == 2 and run["failed"] == 1


@pytest.mark.parametrize("make_bad", BAD_ANNOTATIONS, ids=lambda f: f.__name__)
def test_bad_annotation_keeps_the_crack_map(make_bad, tiny_model, cluster, tmp_path):
    """The maps are written without metrics; one WARNING line names the file and the fix; exit code 4."""
    bad_name, file_name, out, result = run_beside_good(make_bad, tiny_model, cluster, tmp_path)

    assert result.exit_code == 4, result.output
    for name in ("good", bad_name):
        assert_good_outputs(out / "survey" / name)
    report = json.loads((out / "survey" / bad_name / "report.json").read_text())
    assert report["metrics"] is None and file_name in report["annotation_error"]
    rows = {row["raster"]: row for row in read_summary(out)}
    assert rows[bad_name]["status"] == "ok" and file_name in rows[bad_name]["annotation_error"]
    assert rows["good"]["annotation_error"] == ""
    warnings = [line for line in lines_naming(result.output, file_name) if line.startswith("WARNING")]
    assert len(warnings) == 1, result.output
    assert f"put the fixed file back as {file_name}" in warnings[0] and "\n" not in rows[bad_name]["annotation_error"]
    assert "FAILED" not in result.output


def test_raster_failing_on_rerun_leaves_no_stale_outputs(tiny_model, cluster, tmp_path):
    """Run, then the raster breaks (re-copied, truncated) and the night is re-run into the same OUT."""
    survey = tmp_path / "survey"
    survey.mkdir()
    write_good(survey / "good.tif")
    write_good(survey / "later.tif", seed=2)
    out = tmp_path / "out"
    args = ["run", survey, "--out", out, "--model", tiny_model, "--scheduler", cluster.scheduler_address,
            "--workers", "1", "-q"]
    first = invoke(*args)
    assert first.exit_code == 0, first.output
    assert_good_outputs(out / "survey" / "later")

    (survey / "later.tif").write_bytes(b"")
    second = invoke(*args)
    assert second.exit_code == 1, second.output
    assert_good_outputs(out / "survey" / "good")
    rows = {row["raster"]: row for row in read_summary(out)}
    assert rows["later"]["status"] == "error" and "later.tif" in rows["later"]["error"]
    assert not leftovers(out)
    # summary.csv says error: the previous run's heatmap/polygons/report (status "ok") must not stay behind
    assert not (out / "survey" / "later").exists(), sorted(p.name for p in (out / "survey" / "later").iterdir())


def test_missing_input_is_reported_and_others_complete(tiny_model, cluster, tmp_path):
    survey = tmp_path / "survey"
    survey.mkdir()
    write_good(survey / "good.tif")
    missing = tmp_path / "no_such_survey"
    out = tmp_path / "out"
    result = invoke("run", survey, missing, "--out", out, "--model", tiny_model,
                    "--scheduler", cluster.scheduler_address, "--workers", "1", "-q")
    assert result.exit_code == 1, result.output
    assert_good_outputs(out / "survey" / "good")
    errors = [row for row in read_summary(out) if row["status"] == "error"]
    assert len(errors) == 1 and "no_such_survey" in errors[0]["error"]
    assert [line for line in lines_naming(result.stderr, "no_such_survey") if line.startswith("FAILED")]


def test_only_input_missing_exits_non_zero(tiny_model, tmp_path):
    missing = tmp_path / "ghost.tif"
    result = invoke("run", missing, "--out", tmp_path / "out", "--model", tiny_model, "--workers", "1", "-q")
    assert result.exit_code != 0
    assert lines_naming(result.stderr, "ghost.tif"), result.output


# ---------------------------------------------------------------------------------- usage errors: exit code 2


def run_args(tmp_path: Path, *extra) -> list:
    survey = tmp_path / "survey"
    survey.mkdir(exist_ok=True)
    if not (survey / "good.tif").exists():
        write_good(survey / "good.tif")
    return ["run", survey, "--workers", "1", "-q", *extra]


def assert_no_outputs(out: Path) -> None:
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*")), sorted(out.rglob("*"))


def test_missing_model_is_a_usage_error(tmp_path):
    model = tmp_path / "nowhere" / "model.safetensors"
    out = tmp_path / "out"
    result = invoke(*run_args(tmp_path, "--out", out, "--model", model))
    assert result.exit_code == 2, result.output
    assert str(model) in result.stderr and "not found" in result.stderr
    assert_no_outputs(out)


@pytest.mark.parametrize("corruption", ["garbage", "truncated"])
def test_corrupt_model_is_a_usage_error(corruption, tiny_model, tmp_path):
    model = tmp_path / "broken.safetensors"
    if corruption == "garbage":
        model.write_bytes(b"\x00\x01 this is not a safetensors file" * 10)
    else:  # an interrupted download / copy: valid header, tensors cut short
        data = Path(tiny_model).read_bytes()
        model.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    result = invoke(*run_args(tmp_path, "--out", out, "--model", model))
    assert result.exit_code == 2, result.output
    assert lines_naming(result.stderr, "broken.safetensors"), result.output
    assert_no_outputs(out)


def test_out_parent_missing_is_a_usage_error(tiny_model, tmp_path):
    out = tmp_path / "missing_parent" / "out"
    result = invoke(*run_args(tmp_path, "--out", out, "--model", tiny_model))
    assert result.exit_code == 2, result.output
    assert "missing_parent" in result.stderr and "does not exist" in result.stderr
    assert not out.parent.exists()


@pytest.mark.parametrize("yaml_text, key", [
    ("tiling:\n  patch_sise: 64\n", "patch_sise"),
    ("inference:\n  workers: 1\nthreshhold: 0.4\n", "threshhold"),
])
def test_config_with_unknown_key_is_a_usage_error(yaml_text, key, tiny_model, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "out"
    result = invoke(*run_args(tmp_path, "--out", out, "--model", tiny_model, "--config", config))
    assert result.exit_code == 2, result.output
    errors = lines_naming(result.stderr, key)
    assert errors and "run.yaml" in errors[0], result.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------- unreadable pixels


def test_truncated_geotiff_is_one_line_naming_the_file(tiny_model, tmp_path):
    """Header intact, tiles cut off: the workers' read fails. The console gets one line, no worker traceback."""
    import os
    import subprocess
    import sys

    import rasterio.shutil

    survey = tmp_path / "survey"
    survey.mkdir()
    write_good(survey / "good.tif")
    rgb = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    write_geotiff(tmp_path / "whole.tif", rgb)
    rasterio.shutil.copy(tmp_path / "whole.tif", survey / "cut.tif", driver="COG", BLOCKSIZE=128, OVERVIEWS="NONE")
    os.truncate(survey / "cut.tif", (survey / "cut.tif").stat().st_size // 2)
    script = Path(sys.executable).parent / "survey-cracks"
    proc = subprocess.run([str(script), "run", str(survey), "--out", str(tmp_path / "out"), "--model", str(tiny_model),
                           "--workers", "1", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and "unexpected" not in console, console
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "cut.tif" in failed[0] and "truncated or corrupt" in failed[0], proc.stderr
    assert_good_outputs(tmp_path / "out" / "survey" / "good")
