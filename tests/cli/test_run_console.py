"""What a person sees of a run (issue 31): findings on the console, the best threshold, the mask, the VRT, the QGIS project.

One real run of the console script with the shipped model over a copy of the sample
bridge deck (georeferenced, annotated) and two road scans (pixel coordinates, annotated).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from survey_cracks.models.checkpoint import SHIPPED_MODEL, read_meta
from survey_cracks.vectors.heatmap import NODATA, read_probability

SHIPPED_THRESHOLD = read_meta(SHIPPED_MODEL).mask_threshold  # what `run` uses in mask mode without --threshold

pytestmark = pytest.mark.slow  # the tests run in file order: the last two change OUT (evaluate, a rerun)
REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_surveys"
# this checkout's package (the virtualenv's survey-cracks script may be another checkout's)
COMMAND = [sys.executable, "-c", "from survey_cracks.cli.main import cli; cli()"]
QGIS_PYTHON = Path("/usr/bin/python3")


def survey_cracks(*args: object, timeout: float = 400) -> subprocess.CompletedProcess:
    proc = subprocess.run([*COMMAND, *map(str, args)], check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def console_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("console_data")
    shutil.copytree(SAMPLES / "bridge_deck", data / "bridge_deck")
    (data / "road_scans").mkdir()
    for name in ("scan_001", "scan_002"):
        for suffix in (".jpg", ".mask.png"):
            shutil.copy(SAMPLES / "road_scans" / f"{name}{suffix}", data / "road_scans")
    out = tmp_path_factory.mktemp("console_out") / "night"
    proc = survey_cracks("run", data, "--out", out, "--workers", "1", "--write-mask", "--layout", "per-raster")
    return proc, out


def test_console_says_per_raster_what_was_found_and_the_survey_totals(console_run):
    proc, out = console_run
    lines = proc.stdout.splitlines()
    deck = next(line for line in lines if line.startswith("bridge_deck/bridge_deck_ortho: ") and "crack" in line)
    # cracks, total length with its unit, widest crack, F1 figures on the annotation
    assert re.search(r": \d+ cracks, [\d,]+\.\d\d m in total, widest \d+\.\d mm; F1 pixel@2px 0\.\d\d, object 0\.\d\d", deck), deck
    scan = next(line for line in lines if line.startswith("road_scans/scan_001: ") and "crack" in line)
    assert re.search(r": \d+ cracks?, [\d,]+ px in total, widest \d+\.\d px; F1 pixel@2px", scan), scan
    totals = next(line for line in lines if line.startswith("road_scans: 2 rasters, "))
    assert "px in total" in totals and "over 2 annotated" in totals
    report = json.loads((out / "bridge_deck" / "bridge_deck_ortho" / "report.json").read_text())
    assert report["counts"]["max_width"] > 0 and len(report["threshold_sweep"]["thresholds"]) == 101
    assert not re.search(r"\d\.\d{4,} (m|px)\b|e\+0", proc.stdout)  # rounded lengths only


def test_heatmap_band_crack_mask_and_heatmaps_vrt(console_run):
    _, out = console_run
    folder = out / "bridge_deck" / "bridge_deck_ortho"
    with rasterio.open(folder / "heatmap.tif") as heat, rasterio.open(folder / "crack_mask.tif") as crack:
        assert heat.descriptions == ("crack probability",) and heat.units == ("probability (0-1)",)
        threshold = float(crack.tags(1)["threshold"])
        assert threshold == pytest.approx(SHIPPED_THRESHOLD) and crack.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        probability, mask = read_probability(heat), crack.read(1)
    inside = ~np.isnan(probability)
    assert (mask[~inside] == NODATA).all() and np.array_equal(mask[inside] == 1, probability[inside] >= threshold)
    # the survey's heatmaps as one raster: the same pixels on the same grid
    with rasterio.open(out / "bridge_deck" / "heatmaps.vrt") as vrt, rasterio.open(folder / "heatmap.tif") as heat:
        assert vrt.crs == heat.crs and vrt.transform.almost_equals(heat.transform) and vrt.shape == heat.shape
        assert vrt.descriptions == ("crack probability",) and vrt.scales == heat.scales and vrt.nodata == NODATA
        assert np.array_equal(vrt.read(1), heat.read(1))
    assert not (out / "road_scans" / "heatmaps.vrt").exists()  # pixel-coordinate scans are no mosaic
    assert (out / "road_scans" / "scan_001" / "crack_mask.tif").is_file()


def test_qgis_project_lists_every_raster_styled_and_grouped_with_relative_paths(console_run):
    _, out = console_run
    for survey, rasters in (("bridge_deck", ["bridge_deck_ortho"]), ("road_scans", ["scan_001", "scan_002"])):
        path = out / survey / f"{survey}.qgz"
        with zipfile.ZipFile(path) as archive:
            assert archive.namelist() == [f"{survey}.qgs"]
            root = ET.fromstring(archive.read(f"{survey}.qgs"))
        groups = {g.get("name"): g for g in root.find("layer-tree-group").findall("layer-tree-group")}
        assert set(rasters) <= set(groups) and "assets" in groups
        for raster in rasters:
            names = [layer.get("name") for layer in groups[raster].findall("layer-tree-layer")]
            assert names[:3] == [f"{raster} centrelines", f"{raster} cracks", f"{raster} heatmap"]
        for layer in root.find("projectlayers"):
            source = layer.findtext("datasource")
            assert source.startswith("./"), source  # relative: OUT can move
            assert (out / survey / source.split("|")[0]).resolve().is_file(), source
            styled = layer.find("pipe/rasterrenderer") if layer.get("type") == "raster" else layer.find("renderer-v2")
            assert styled is not None or layer.findtext("layername").endswith("imagery"), layer.findtext("layername")
        assert root.findtext("properties/Paths/Absolute") == "false"


@pytest.mark.skipif(subprocess.run([str(QGIS_PYTHON), "-c", "import qgis.core"], check=False, capture_output=True).returncode != 0
                    if QGIS_PYTHON.exists() else True, reason="PyQGIS (Debian's python3-qgis) not installed")
def test_qgis_opens_the_project_with_every_layer_valid_styled_and_grouped(console_run, tmp_path):
    _, out = console_run
    proc = subprocess.run([str(QGIS_PYTHON), str(REPO / "bench" / "qgis_project_check.py"), str(out / "bridge_deck" / "bridge_deck.qgz"),
                           "--png", str(tmp_path / "project.png"), "--width", "300"],
                          check=False, capture_output=True, text=True, timeout=180, env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert proc.returncode == 0 and result["problems"] == [], proc.stdout + proc.stderr
    assert {layer["renderer"] for layer in result["layers"] if layer["name"].endswith("heatmap")} == {"singlebandpseudocolor"}
    assert (tmp_path / "project.png").stat().st_size > 1000



def test_report_html_has_a_colour_legend_the_metric_levels_explained_and_rounded_lengths(console_run):
    _, out = console_run
    page = re.sub(r'src="data:[^"]+"', "", (out / "report.html").read_text())  # the text, not the images
    assert "Colours" in page and "#39ff14" in page and "condition state 1 (good)" in page
    import markupsafe

    from survey_cracks.deliver.report_text import METRIC_LEVELS

    for level, sentence in METRIC_LEVELS.items():
        assert f"<strong>{level}</strong>: {markupsafe.escape(sentence)}" in page  # as Jinja2 escapes it
    text = re.sub(r"<[^>]+>", " ", page)
    assert not re.search(r"\d\.\d{4,} (m|px|mm)\b|\de\+0", text)  # not 100.6766 m, not 3.072e+05
    assert re.search(r"[\d,]+\.\d\d m of crack, widest \d+\.\d mm", text) and "307,200" in text
    assert re.search(r"\d+\.\d mm ± 4\.0 mm", text)  # max width ± the 1 px uncertainty at the deck's 4 mm GSD


def test_best_threshold_on_the_annotations_is_named_with_the_command_that_applies_it(console_run):
    proc, out = console_run
    survey = json.loads((out / "bridge_deck" / "report.json").read_text())["threshold"]
    assert survey["metric"] == "pixel_2px f1" and survey["in_use"] == pytest.approx(SHIPPED_THRESHOLD)
    assert 0 <= survey["best"] <= 1 and survey["best_f1"] >= survey["in_use_f1"]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("bridge_deck: best pixel@2px F1"))
    assert f"at threshold {survey['best']:.2f}; in use {SHIPPED_THRESHOLD:.2f}" in line
    if survey["command"]:  # the best differs from the one in use: the exact command, on the console and in the report
        exact = f"survey-cracks evaluate {out} --threshold {survey['best']:.2f}"
        assert survey["command"] == f"survey-cracks evaluate OUT --threshold {survey['best']:.2f}"  # true wherever OUT moves
        assert line.endswith(f"to apply it: {exact}") and exact in (out / "report.html").read_text()
        # applied, the survey's threshold in use is the best one, and nothing is left to apply
        survey_cracks("evaluate", out, "--threshold", f"{survey['best']:.2f}", "-q")
        again = json.loads((out / "bridge_deck" / "report.json").read_text())["threshold"]
        assert again["in_use"] == pytest.approx(survey["best"]) and again["command"] is None
        assert again["in_use_f1"] == pytest.approx(survey["best_f1"], abs=1e-3)
        with rasterio.open(out / "bridge_deck" / "bridge_deck_ortho" / "crack_mask.tif") as crack:  # the mask follows
            assert float(crack.tags(1)["threshold"]) == pytest.approx(survey["best"])


def test_quiet_rerun_prints_no_findings(console_run):
    _, out = console_run
    proc = survey_cracks("run", _inputs(out), "--out", out, "--write-mask", "-q", "--layout", "per-raster")
    assert "crack" not in proc.stdout.replace("catalog", "") and "best pixel" not in proc.stdout
    assert len(proc.stdout.strip().splitlines()) == 1  # the closing line only


def _inputs(out: Path) -> str:
    return json.loads((out / "run.json").read_text())["inputs"][0]
