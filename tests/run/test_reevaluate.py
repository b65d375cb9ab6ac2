"""`evaluate OUT --threshold T` and the runs after it: outputs, run.json, report.json and the manifest agree.

Two sample road scans (shipped model, their ``.mask.png`` annotations) are run, re-evaluated
at another threshold and run again, through the CLI on one LocalCluster started here. The
annotation of each raster is looked up once per run, and the manifest names the file evaluated.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import geopandas as gpd
import pytest
from click.testing import CliRunner

import survey_cracks.run.pipeline as pipeline
from survey_cracks.cli.main import cli
from survey_cracks.run.manifest import fingerprint, load_records

SAMPLES = Path(__file__).resolve().parents[2] / "sample_surveys" / "road_scans"
SCANS = ("scan_001", "scan_002")
EVALUATED_AT = 0.6


@pytest.fixture
def road(tmp_path) -> Path:
    """Two sample road scans and their mask annotations in road/."""
    folder = tmp_path / "road"
    folder.mkdir()
    for scan in SCANS:
        shutil.copy(SAMPLES / f"{scan}.jpg", folder)
        shutil.copy(SAMPLES / f"{scan}.mask.png", folder)
    return folder


def invoke(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run(road: Path, out: Path, cluster, *options) -> str:
    return invoke("run", road, "--out", out, "--scheduler", cluster.scheduler_address, "-q", "--layout", "per-raster", *options)


def reports(out: Path) -> dict[str, dict]:
    return {scan: json.loads((out / "road" / scan / "report.json").read_text()) for scan in SCANS}


def assert_outputs_agree(out: Path) -> float:
    """Every raster's polygons, report.json, summary.csv row and run.json state one threshold; it is returned."""
    threshold = json.loads((out / "run.json").read_text())["model"]["threshold"]
    with open(out / "summary.csv", newline="") as fh:
        rows = {row["raster"]: row for row in csv.DictReader(fh)}
    for scan, report in reports(out).items():
        polygons = gpd.read_file(out / "road" / scan / "cracks.gpkg", layer="cracks")
        assert report["counts"]["threshold"] == pytest.approx(threshold), scan
        assert float(rows[scan]["threshold"]) == pytest.approx(threshold), scan
        assert len(polygons) == report["counts"]["polygons"] == int(rows[scan]["polygons"]), scan
        assert report["metrics"], scan
    return threshold


def test_a_run_after_evaluate_at_another_threshold_traces_at_its_own(road, cluster, tmp_path):
    out = tmp_path / "out"
    run(road, out, cluster)
    first = assert_outputs_agree(out)
    polygons = {scan: report["counts"]["polygons"] for scan, report in reports(out).items()}
    assert first != EVALUATED_AT

    invoke("evaluate", out, "--threshold", EVALUATED_AT, "-q")
    assert assert_outputs_agree(out) == EVALUATED_AT
    assert {scan: report["counts"]["polygons"] for scan, report in reports(out).items()} != polygons  # really other outputs

    # A plain run is at the model's threshold: the rasters traced at T are computed again, not kept as "up to date".
    output = run(road, out, cluster)
    assert "2 computed, 0 up to date" in output, output
    assert assert_outputs_agree(out) == first
    assert {scan: report["counts"]["polygons"] for scan, report in reports(out).items()} == polygons
    assert json.loads((out / "road" / "report.json").read_text())["this_run"] == \
        {scan: {"action": "computed", "reason": "settings changed"} for scan in SCANS}

    # The manifest says what `run --threshold T` records: after `evaluate --threshold T` such a run has nothing to do.
    invoke("evaluate", out, "--threshold", EVALUATED_AT, "-q")
    assert "0 computed, 2 up to date" in run(road, out, cluster, "--threshold", EVALUATED_AT)
    assert assert_outputs_agree(out) == EVALUATED_AT


def test_the_annotation_is_resolved_once_per_raster_and_the_manifest_names_the_file_evaluated(road, cluster, tmp_path,
                                                                                                monkeypatch):
    found = []

    def counting(raster):
        found.append(Path(str(raster)).name)
        return real(raster)

    real = pipeline.find_annotation
    monkeypatch.setattr(pipeline, "find_annotation", counting)
    out = tmp_path / "out"
    run(road, out, cluster)
    assert sorted(found) == [f"{scan}.jpg" for scan in SCANS]
    for record in load_records(out):
        annotation = road / f"{record.raster}.mask.png"
        assert record.inputs.annotation == reports(out)[record.raster]["counts"]["annotation"] == annotation.name
        assert record.inputs.annotation_fingerprint == fingerprint(annotation)
