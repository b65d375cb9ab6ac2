"""End-to-end tests of the `survey-cracks` command line.

One georeferenced survey (GeoTIFF, EPSG:32631, irregular internal mask, annotation
GeoJSON written in EPSG:4326) and one road-scan folder (PNG + .mask.png, no
georeferencing) are processed together, once by the real console script (default
LocalCluster, ``--workers 1``) and once through ``--scheduler`` on a LocalCluster
started here; every output is reopened with rasterio / geopandas / json / csv.
"""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from PIL import Image

from survey_cracks.cli.main import cli
from survey_cracks.io.raster import PIXEL_TRANSFORM
from survey_cracks.synthetic import render_scene, write_orthomosaic
from survey_cracks.vectors.heatmap import NODATA, SCALE, read_probability
from tests.conftest import write_geotiff

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "survey-cracks"
if not SCRIPT.exists():  # pragma: no cover - pytest run from another interpreter
    SCRIPT = REPO / ".venv" / "bin" / "survey-cracks"

OUTPUT_FILES = ("heatmap.tif", "cracks.gpkg", "cracks.geojson", "report.json", "heatmap.qml", "cracks.qml",
                "item.json")  # the STAC item of the raster (stac.py)
CRACK_COLUMNS = {"id", "max_score", "mean_score", "area", "length", "unit"}
METRIC_KEYS = {"cell", "object", "pixel_2px", "pixel_5px"}
ROAD_SHAPE = (72, 1040)  # (rows, cols): a long scan strip, wide enough for COG overviews
DECK_GSD = 0.005  # metres per pixel of the georeferenced survey


def squash(text: str) -> str:
    """Help text with line wrapping undone."""
    return " ".join(text.split())


def partial_leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if "partial" in p.name]


def read_summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def surveys(tmp_path_factory) -> dict:
    """data/bridge/deck.tif (+ deck.cracks.geojson in EPSG:4326) and data/road/scan.png (+ scan.mask.png)."""
    root = tmp_path_factory.mktemp("cli_data") / "data"
    bridge, road = root / "bridge", root / "road"
    bridge.mkdir(parents=True)
    road.mkdir()
    deck = bridge / "deck.tif"
    write_orthomosaic(deck, 256, 256, seed=3, n_cracks=3, annotation_path=bridge / "deck.cracks.geojson",
                      annotation_crs="EPSG:4326", block=256, compress="DEFLATE", gsd=DECK_GSD)
    rgb, mask = render_scene(*ROAD_SHAPE, seed=5, surface="asphalt", n_cracks=2)
    scan = write_geotiff(road / "scan.png", rgb, driver="PNG")
    Image.fromarray(mask).save(road / "scan.mask.png")
    with rasterio.open(deck) as src:
        footprint = src.dataset_mask() > 0
    # the fixture is only useful if the footprint really is irregular
    assert 0.3 < footprint.mean() < 0.95
    annotation = json.loads((bridge / "deck.cracks.geojson").read_text())
    assert "CRS84" in annotation["crs"]["properties"]["name"] and annotation["features"]
    return {"root": root, "deck": deck, "scan": scan, "footprint": footprint}


@pytest.fixture(scope="module")
def default_run(surveys, tiny_model, tmp_path_factory):
    """The real console script over the parent folder, default LocalCluster with one worker."""
    out = tmp_path_factory.mktemp("cli_out") / "night"
    proc = subprocess.run(
        [str(SCRIPT), "run", str(surveys["root"]), "--out", str(out), "--model", str(tiny_model), "--workers", "1", "-q"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc, out


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


# ---------------------------------------------------------------------------------- --help


HELP_EXPECTS = {
    (): ["run", "train", "finetune", "export", "stream", "loso", "info", "--version", "--help"],
    ("run",): ["INPUTS", "--out", "--config", "--model", "--scheduler", "--workers", "--threshold", "--ground-patch-m",
               "--batch-size", "--quiet", "--threads", "[default: CPUs // workers]", "[default: start a LocalCluster on this machine]",
               "[default: the model's calibrated threshold]", "[default: 64]", "--write-mask", "crack_mask.tif", "<survey>.qgz", "[default: the shipped crack model]",
               "--precision", "auto|fp32|bf16|fp16|int8",
               "heatmap.tif", "cracks.gpkg", "summary.csv", "--force", "Exit codes", "3 infrastructure",
               "--from-list", "http(s)://", "s3://", "AWS_ACCESS_KEY_ID", "AWS_S3_ENDPOINT", "ETag"],
    ("train",): ["--config", "--out-dir", "--epochs", "--init", "--init-path", "--resume", "--ship",
                 "[default: out_dir of the config]", "auto|imagenet|shipped|scratch"],
    ("finetune",): ["SURVEYS", "--out", "--model", "--config", "--epochs", "--val-fraction", "[default: 6]",
                    "[default: 0.2", "[default: the shipped crack model]", "--adapt", "auto|mask|head", "--steps",
                    "--resume", "not_crack", "before_after"],
    ("suggest",): ["OUT", "--n", "[default: 20", "--window", "suggest.gpkg", "suggest.html", "not_crack"],
    ("export",): ["--model", "--out", "--format", "onnx|torchscript", "[default: onnx]", "--precision", "fp32|fp16|int8",
                  "[default: fp32]", "--verify-images", "--no-verify", "uint8 RGB", "metadata_props", "pixel F1", "Exit code 0; 1"],
    ("stream",): ["SOURCE", "--model", "--precision", "[default: int8]", "--out", "--realtime / --no-realtime",
                  "--max-frames", "--threads", "overlay.mp4", "frames.jsonl", "dropped", "survey-cracks-edge"],
    ("loso",): ["--config", "--holdout", "--epochs", "[default: 3", "--samples-per-epoch", "[default: 4000",
                "--out-dir", "[default: runs/loso]"],
    ("info",): ["--model", "[default: the shipped crack model]", "patch size"],
}


@pytest.mark.parametrize("command", list(HELP_EXPECTS), ids=lambda c: " ".join(c) or "group")
def test_help_mentions_options_and_defaults(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    text = squash(result.output)
    missing = [word for word in HELP_EXPECTS[command] if word not in text]
    assert not missing, f"{missing} not in help of {command}:\n{result.output}"


# ---------------------------------------------------------------------------------- one full run


def test_run_writes_every_output(default_run, surveys):
    proc, out = default_run
    assert "2 of 2 rasters done" in proc.stdout
    assert "FAILED" not in proc.stderr
    for folder in (out / "bridge" / "deck", out / "road" / "scan"):
        for name in OUTPUT_FILES:
            assert (folder / name).is_file() and (folder / name).stat().st_size > 0, folder / name
    for survey in ("bridge", "road"):
        report = json.loads((out / survey / "report.json").read_text())
        assert report["survey"] == survey and report["ok"] == 1 and report["failed"] == []
        assert report["annotated_rasters"] == 1 and METRIC_KEYS <= set(report["metrics"])
    assert (out / "summary.csv").is_file() and (out / "run.json").is_file()
    assert not partial_leftovers(out)
    # the annotation files are never taken for rasters to survey
    # (beside the raster folders: the survey's report, GeoPackage, asset table and STAC catalogue)
    # and the QGIS project; the heatmaps' VRT where georeferenced (qgis_project.py)
    assert sorted(p.name for p in (out / "bridge").iterdir()) == ["assets.csv", "bridge.gpkg", "bridge.qgz", "catalog.json", "deck",
                                                                   "heatmaps.vrt", "report.json"]
    assert sorted(p.name for p in (out / "road").iterdir()) == ["assets.csv", "catalog.json", "report.json", "road.gpkg", "road.qgz",
                                                                 "scan"]


def test_georeferenced_heatmap_is_cog_on_the_input_grid(default_run, surveys):
    _, out = default_run
    with rasterio.open(surveys["deck"]) as src:
        crs, transform, shape = src.crs, src.transform, (src.height, src.width)
    with rasterio.open(out / "bridge" / "deck" / "heatmap.tif") as heat:
        assert heat.crs == crs and heat.crs.to_epsg() == 32631
        assert heat.transform == transform
        assert (heat.height, heat.width) == shape
        assert heat.count == 1 and heat.dtypes[0] == "uint8" and heat.scales == (SCALE,)
        assert heat.nodata == NODATA
        assert heat.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        values = read_probability(heat)
    footprint = surveys["footprint"]
    assert np.isnan(values[~footprint]).all(), "pixels outside the footprint must be nodata"
    inside = values[footprint]
    scored = inside[np.isfinite(inside)]
    assert scored.size > 0.8 * inside.size, "most of the footprint should be assessed"
    assert scored.max() > scored.min(), "the heatmap must tell pixels apart, not be one flat score"


def test_georeferenced_polygons_and_report(default_run, surveys):
    _, out = default_run
    folder = out / "bridge" / "deck"
    assert [layer[0] for layer in pyogrio.list_layers(folder / "cracks.gpkg")] == ["cracks", "layer_styles"]  # QGIS styles inside
    gpkg = gpd.read_file(folder / "cracks.gpkg", layer="cracks")
    assert gpkg.crs is not None and gpkg.crs.to_epsg() == 32631
    assert CRACK_COLUMNS <= set(gpkg.columns)
    assert len(gpkg) > 0, "the deck has annotated cracks: some must be found"
    assert set(gpkg["unit"]) == {"m"}
    assert (gpkg["max_score"] >= gpkg["mean_score"]).all()
    geojson_text = json.loads((folder / "cracks.geojson").read_text())
    assert "32631" in geojson_text["crs"]["properties"]["name"]
    geojson = gpd.read_file(folder / "cracks.geojson")
    assert geojson.crs.to_epsg() == 32631
    assert len(geojson) == len(gpkg) and CRACK_COLUMNS <= set(geojson.columns)

    report = json.loads((folder / "report.json").read_text())
    assert report["status"] == "ok" and report["error"] is None
    assert METRIC_KEYS <= set(report["metrics"])
    assert report["raster_info"]["georeferenced"] is True
    assert report["raster_info"]["crs"] == "EPSG:32631" and report["raster_info"]["has_mask"] is True
    assert report["counts"]["annotation"] == "deck.cracks.geojson"
    assert report["counts"]["polygons"] == len(gpkg)
    # the EPSG:4326 annotation was reprojected onto the raster: annotated pixels were found
    assert report["metrics"]["pixel_2px"]["annotated_px"] > 0


def test_road_scan_is_processed_in_pixel_coordinates(default_run, surveys):
    _, out = default_run
    folder = out / "road" / "scan"
    report = json.loads((folder / "report.json").read_text())
    info = report["raster_info"]
    assert info["georeferenced"] is False and info["crs"] is None
    assert "pixel coordinates" in info["coordinates"]
    assert (info["height"], info["width"]) == ROAD_SHAPE
    assert METRIC_KEYS <= set(report["metrics"])
    assert report["counts"]["annotation"] == "scan.mask.png"
    assert report["metrics"]["pixel_2px"]["annotated_px"] > 0
    with rasterio.open(folder / "heatmap.tif") as heat:
        assert heat.crs is None
        assert heat.transform == PIXEL_TRANSFORM
        assert (heat.height, heat.width) == ROAD_SHAPE and heat.dtypes[0] == "uint8" and heat.nodata == NODATA
        assert heat.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert heat.overviews(1), "a 1040 px wide heatmap should carry overviews"
        values = read_probability(heat)
    assert np.isfinite(values).all(), "a scan without mask is assessed everywhere"
    gpkg = gpd.read_file(folder / "cracks.gpkg", layer="cracks")
    assert gpkg.crs is None and CRACK_COLUMNS <= set(gpkg.columns)
    assert len(gpkg) > 0, "the scan has masked cracks: some must be found"
    assert set(gpkg["unit"]) == {"px"}
    xmin, ymin, xmax, ymax = gpkg.total_bounds
    assert 0 <= xmin and xmax <= ROAD_SHAPE[1] and -ROAD_SHAPE[0] <= ymin and ymax <= 0


def test_summary_and_run_json(default_run, surveys, tiny_model):
    _, out = default_run
    rows = read_summary(out)
    assert sorted((r["survey"], r["raster"]) for r in rows) == [("bridge", "deck"), ("road", "scan")]
    assert all(r["status"] == "ok" and r["error"] == "" for r in rows)
    by_name = {r["raster"]: r for r in rows}
    assert by_name["deck"]["georeferenced"] == "True" and by_name["deck"]["crs"] == "EPSG:32631"
    assert by_name["scan"]["georeferenced"] == "False" and by_name["scan"]["crs"] == ""
    assert all(r["cell_f1"] != "" or r["cell_precision"] != "" or r["cell_recall"] != "" for r in rows)

    run = json.loads((out / "run.json").read_text())
    assert run["model"]["sha256"] == hashlib.sha256(Path(tiny_model).read_bytes()).hexdigest()
    assert run["model"]["patch_size"] == 64
    assert run["model"]["compute"] and all(c.split()[0] in ("cpu", "cuda") for c in run["model"]["compute"])
    assert run["rasters"] == 2 and run["failed"] == 0
    versions = run["versions"]
    assert versions["survey_cracks"] == metadata.version("survey_cracks")
    for package in ("python", "torch", "rasterio", "geopandas", "dask", "distributed", "numpy"):
        assert versions.get(package), package
    assert run["config"]["inference"]["workers"] == 1


# ---------------------------------------------------------------------------------- threshold / rerun


def test_threshold_zero_gives_polygons_and_one_gives_none(surveys, tiny_model, cluster, tmp_path):
    common = ["run", surveys["root"], "--model", tiny_model, "--scheduler", cluster.scheduler_address,
              "--workers", "1", "-q"]
    low = invoke(*common, "--out", tmp_path / "low", "--threshold", "0")
    assert low.exit_code == 0, low.output
    counts = {row["raster"]: row["polygons"] for row in read_summary(tmp_path / "low")}
    polygons = gpd.read_file(tmp_path / "low" / "bridge" / "deck" / "cracks.gpkg", layer="cracks")
    assert len(polygons) >= 1 and polygons.crs.to_epsg() == 32631
    assert counts["deck"] == str(len(polygons))
    with rasterio.open(surveys["deck"]) as src:
        assert polygons.total_bounds[0] >= src.bounds.left and polygons.total_bounds[2] <= src.bounds.right
        assert polygons.total_bounds[1] >= src.bounds.bottom and polygons.total_bounds[3] <= src.bounds.top
    # threshold 0 marks every assessed pixel: the polygons cover (about) the assessed footprint, in m^2
    assert polygons["area"].sum() == pytest.approx(surveys["footprint"].sum() * DECK_GSD**2, rel=0.1)
    scan = gpd.read_file(tmp_path / "low" / "road" / "scan" / "cracks.gpkg", layer="cracks")
    assert len(scan) >= 1 and scan.crs is None and set(scan["unit"]) == {"px"}
    assert counts["scan"] == str(len(scan))
    xmin, ymin, xmax, ymax = scan.total_bounds  # pixel coordinates: x = column, y = -row
    assert 0 <= xmin and xmax <= ROAD_SHAPE[1] and -ROAD_SHAPE[0] <= ymin and ymax <= 0
    assert scan["area"].sum() == pytest.approx(ROAD_SHAPE[0] * ROAD_SHAPE[1], rel=0.05)

    high = invoke(*common, "--out", tmp_path / "high", "--threshold", "1.0")
    assert high.exit_code == 0, high.output
    folder = tmp_path / "high" / "bridge" / "deck"
    assert [layer[0] for layer in pyogrio.list_layers(folder / "cracks.gpkg")] == ["cracks", "layer_styles"]  # QGIS styles inside
    empty = gpd.read_file(folder / "cracks.gpkg", layer="cracks")
    assert len(empty) == 0 and empty.crs.to_epsg() == 32631
    assert CRACK_COLUMNS <= set(empty.columns)
    assert len(gpd.read_file(folder / "cracks.geojson")) == 0
    report = json.loads((folder / "report.json").read_text())
    assert report["counts"]["polygons"] == 0 and report["counts"]["threshold"] == 1.0


def test_second_run_with_other_settings_replaces_outputs(surveys, tiny_model, cluster, tmp_path):
    out = tmp_path / "out"
    common = ["run", surveys["root"] / "bridge", "--out", out, "--model", tiny_model,
              "--scheduler", cluster.scheduler_address, "--workers", "1", "-q"]
    first = invoke(*common, "--threshold", "0")
    assert first.exit_code == 0, first.output
    folder = out / "bridge" / "deck"
    assert len(gpd.read_file(folder / "cracks.gpkg", layer="cracks")) >= 1
    # leftovers of an older version / a killed run
    (folder / "stale.txt").write_text("from an older run")
    (out / "bridge" / ".deck.partial").mkdir()
    (out / "bridge" / ".deck.partial" / "heatmap.tif").write_bytes(b"half")

    second = invoke(*common, "--threshold", "1.0")
    assert second.exit_code == 0, second.output
    # a file the user put into the folder is carried into the recomputed one
    assert sorted(p.name for p in folder.iterdir()) == sorted(OUTPUT_FILES + ("stale.txt",))
    assert len(gpd.read_file(folder / "cracks.gpkg", layer="cracks")) == 0
    assert json.loads((folder / "report.json").read_text())["counts"]["threshold"] == 1.0
    assert not partial_leftovers(out), partial_leftovers(out)
    rows = read_summary(out)
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["polygons"] == "0"


# ---------------------------------------------------------------------------------- --scheduler


def test_scheduler_gives_same_results_as_local_cluster(default_run, surveys, tiny_model, cluster, tmp_path):
    _, reference = default_run
    out = tmp_path / "sched"
    result = invoke("run", surveys["root"], "--out", out, "--model", tiny_model,
                    "--scheduler", cluster.scheduler_address, "--workers", "1", "-q")
    assert result.exit_code == 0, result.output
    assert f"1 worker at {cluster.scheduler_address}" in (out / "run.log").read_text()  # -q: in the log, not on the console
    assert json.loads((out / "run.json").read_text())["config"]["inference"]["scheduler"] == cluster.scheduler_address
    for relative in ("bridge/deck", "road/scan"):
        with rasterio.open(out / relative / "heatmap.tif") as a, rasterio.open(reference / relative / "heatmap.tif") as b:
            assert a.profile["transform"] == b.profile["transform"]
            assert np.abs(a.read(1).astype(int) - b.read(1).astype(int)).max() <= 1  # stored levels
        ours = gpd.read_file(out / relative / "cracks.gpkg", layer="cracks")
        theirs = gpd.read_file(reference / relative / "cracks.gpkg", layer="cracks")
        assert len(ours) == len(theirs)
    assert [r["polygons"] for r in read_summary(out)] == [r["polygons"] for r in read_summary(reference)]


# ---------------------------------------------------------------------------------- info


def test_info_prints_model_json(tiny_model):
    proc = subprocess.run([str(SCRIPT), "info", "--model", str(tiny_model)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["patch_size"] == 64
    assert data["sha256"] == hashlib.sha256(Path(tiny_model).read_bytes()).hexdigest()
    assert data["file"] == str(tiny_model)
    assert 0.0 <= data["threshold"] <= 1.0
