"""Window-level resume: a raster interrupted mid-way goes on from its finished windows, and ends as if never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

import survey_cracks.run.journal
import survey_cracks.run.pipeline
from survey_cracks.cli.main import cli
from survey_cracks.run.journal import JOURNAL
from survey_cracks.run.manifest import load_records
from survey_cracks.synthetic import render_scene
from tests.conftest import write_geotiff

WINDOW = 128
SEGMENT_RASTER = survey_cracks.run.pipeline.segment_raster


def write_raster(path: Path, size: int, seed: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = render_scene(size, size, seed=seed, n_cracks=3)[0]
    return write_geotiff(path, rgb, transform=from_origin(500000.0, 5700000.0, 0.002, 0.002))


def run(survey: Path, out: Path, model: Path, cluster):
    return CliRunner().invoke(cli, ["run", str(survey), "--out", str(out), "--model", str(model), "--window", str(WINDOW),
                                    "--scheduler", cluster.scheduler_address, "-q"])


def assert_same_outputs(ours: Path, theirs: Path) -> None:
    with rasterio.open(ours / "heatmap.tif") as a, rasterio.open(theirs / "heatmap.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    for name in ("cracks.geojson", "centrelines.geojson"):
        mine, reference = gpd.read_file(ours / name), gpd.read_file(theirs / name)
        assert len(mine) == len(reference) > 0, name
        assert mine.geometry.geom_equals_exact(reference.geometry, 1e-9).all(), name
        attributes = [c for c in reference.columns if c != "geometry"]
        assert mine[attributes].equals(reference[attributes]), name
    report, reference_report = (json.loads((folder / "report.json").read_text()) for folder in (ours, theirs))
    assert report["counts"] == reference_report["counts"] and report["metrics"] == reference_report["metrics"]


class Interrupt:
    """``pipeline.segment_raster`` that counts the windows it is given and, armed, stops the run like Ctrl-C."""

    def __init__(self, after: int | None) -> None:
        self.after, self.submitted = after, []

    def __call__(self, client, info, windows, *args, **kwargs):
        self.submitted.append(len(windows))
        for number, item in enumerate(SEGMENT_RASTER(client, info, windows, *args, **kwargs)):
            if number == self.after:
                raise KeyboardInterrupt
            yield item


def test_interrupted_raster_resumes_from_its_finished_windows(tiny_mask_model, cluster, tmp_path, monkeypatch):
    survey = tmp_path / "site"
    write_raster(survey / "big.tif", 512)  # 16 windows of 128 px
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert run(survey, reference, tiny_mask_model, cluster).exit_code == 0

    monkeypatch.setattr(survey_cracks.run.journal, "FLUSH_WINDOWS", 1)  # every finished window journaled at once
    first = Interrupt(after=5)
    monkeypatch.setattr(survey_cracks.run.pipeline, "segment_raster", first)
    stopped = run(survey, out, tiny_mask_model, cluster)
    assert stopped.exit_code != 0 and first.submitted == [16]
    work = out / "site" / ".big.partial"
    assert (work / JOURNAL).is_file() and (work / ".heatmap.staging.tif").is_file()
    assert [r.status for r in load_records(out)] == ["running"]

    second = Interrupt(after=None)
    monkeypatch.setattr(survey_cracks.run.pipeline, "segment_raster", second)
    resumed = run(survey, out, tiny_mask_model, cluster)
    assert resumed.exit_code == 0, resumed.output
    assert second.submitted == [16 - 5]  # the finished windows are not computed again
    log = (out / "run.log").read_text()
    assert "site/big: resumed: 5 of 16 windows already done" in log
    assert_same_outputs(out / "site" / "big", reference / "site" / "big")
    assert not work.exists() and not list((out / "site" / "big").glob(".*"))


def test_a_journal_of_other_settings_is_not_resumed_from(tiny_mask_model, cluster, tmp_path, monkeypatch):
    survey = tmp_path / "site"
    write_raster(survey / "big.tif", 256)  # 4 windows
    out = tmp_path / "out"
    monkeypatch.setattr(survey_cracks.run.journal, "FLUSH_WINDOWS", 1)
    monkeypatch.setattr(survey_cracks.run.pipeline, "segment_raster", Interrupt(after=2))
    assert run(survey, out, tiny_mask_model, cluster).exit_code != 0
    work = out / "site" / ".big.partial"
    (work / ".heatmap.staging.tif").write_bytes(b"not a tiff")  # the staged pixels are lost: nothing to resume from
    counting = Interrupt(after=None)
    monkeypatch.setattr(survey_cracks.run.pipeline, "segment_raster", counting)
    assert run(survey, out, tiny_mask_model, cluster).exit_code == 0
    assert counting.submitted == [4]
    log = (out / "run.log").read_text()
    assert "site/big: cannot resume from the finished windows (staged heatmap unreadable" in log
    assert "starting from scratch" in log and "resumed:" not in log


def test_real_kill_9_in_the_middle_of_a_raster_then_resume(tiny_mask_model, tmp_path):
    """The console script, its LocalCluster and workers killed with SIGKILL once a raster has finished windows."""
    survey = tmp_path / "site"
    write_raster(survey / "big.tif", 1280)  # 100 windows of 128 px
    script = Path(sys.executable).parent / "survey-cracks"

    def command(out: Path) -> list[str]:
        return [str(script), "run", str(survey), "--out", str(out), "--model", str(tiny_mask_model), "--window",
                str(WINDOW), "--workers", "1", "-q"]

    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run(command(reference), check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen(command(out), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "site" / ".big.partial" / JOURNAL
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) > 1 + 2 * survey_cracks.run.journal.FLUSH_WINDOWS:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [r.status for r in load_records(out)] == ["running"], "the raster finished before the kill"

    resumed = subprocess.run(command(out), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    line = next(line for line in (out / "run.log").read_text().splitlines() if "resumed:" in line)
    done = int(line.split("resumed: ")[1].split(" of ")[0])
    assert line.endswith(f"resumed: {done} of 100 windows already done") and 2 * survey_cracks.run.journal.FLUSH_WINDOWS <= done < 100
    assert_same_outputs(out / "site" / "big", reference / "site" / "big")
    assert not [p for p in out.rglob("*") if "partial" in p.name or "staging" in p.name]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_kill_9_at_a_random_moment_then_resume_ends_as_an_uninterrupted_night(tiny_mask_model, tmp_path, seed):
    """SIGKILL at a seeded random moment of a two-raster night (start-up, mid-raster, between rasters or the
    tail); the rerun ends with an uninterrupted night's outputs and leaves finished rasters untouched."""
    import random

    survey = tmp_path / "site"
    write_raster(survey / "a_small.tif", 384, seed=5)
    write_raster(survey / "big.tif", 1024)
    script = Path(sys.executable).parent / "survey-cracks"

    def command(out: Path) -> list[str]:
        return [str(script), "run", str(survey), "--out", str(out), "--model", str(tiny_mask_model), "--window",
                str(WINDOW), "--workers", "1", "-q"]

    reference, out = tmp_path / "reference", tmp_path / "out"
    started = time.monotonic()
    subprocess.run(command(reference), check=True, capture_output=True, timeout=600)
    uninterrupted = time.monotonic() - started
    proc = subprocess.Popen(command(out), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(random.Random(seed).uniform(0.1, 0.9) * uninterrupted)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {r.raster: (out / r.survey / r.raster / "heatmap.tif").stat().st_mtime_ns
                for r in load_records(out) if r.status == "ok"}

    rerun = subprocess.run(command(out), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for raster in ("a_small", "big"):
        assert_same_outputs(out / "site" / raster, reference / "site" / raster)
    for raster, mtime in finished.items():  # finished before the kill: not computed again
        assert (out / "site" / raster / "heatmap.tif").stat().st_mtime_ns == mtime, raster
    assert [r.status for r in load_records(out)] == ["ok", "ok"]
    assert not [p for p in out.rglob("*") if "partial" in p.name or "staging" in p.name]
