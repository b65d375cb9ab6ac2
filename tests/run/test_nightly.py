"""Nightly operation: skip what is up to date, resume after a kill, unique names, the lock, exit codes, logs.

Batch runs go through ``--scheduler`` on one LocalCluster started here, on 96 px rasters.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from rasterio.transform import from_origin

from survey_cracks.cli.main import cli
from survey_cracks.errors import InfrastructureError
from survey_cracks.io.discover import find_rasters, safe_name
from survey_cracks.run.lock import out_lock, read_owner
from survey_cracks.run.manifest import MANIFEST_DIR, load_records
from survey_cracks.synthetic import render_scene
from tests.conftest import write_geotiff

SIZE = 96


def write_raster(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = render_scene(SIZE, SIZE, seed=seed, n_cracks=1)[0]
    return write_geotiff(path, rgb, transform=from_origin(500000.0, 5700000.0, 0.01, 0.01))


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def night(inputs, out: Path, model: Path, cluster, *extra):
    inputs = inputs if isinstance(inputs, list) else [inputs]
    return invoke("run", *inputs, "--out", out, "--model", model, "--scheduler", cluster.scheduler_address, "-q", *extra)


def summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return {f"{r['survey']}/{r['raster']}": r for r in csv.DictReader(fh)}


def stamp(folder: Path) -> int:
    return (folder / "heatmap.tif").stat().st_mtime_ns


def heatmap(folder: Path) -> np.ndarray:
    with rasterio.open(folder / "heatmap.tif") as src:
        return src.read(1)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------- manifest, skip, --force


def test_second_night_skips_unchanged_rasters_and_redoes_changed_ones(tiny_model, cluster, tmp_path):
    survey = tmp_path / "site"
    write_raster(survey / "a.tif", 1)
    write_raster(survey / "b.tif", 2)
    out = tmp_path / "out"
    first = night(survey, out, tiny_model, cluster)
    assert first.exit_code == 0, first.output
    a, b = out / "site" / "a", out / "site" / "b"
    (a / "notes.txt").write_text("the inspector's notes")
    (b / "notes.txt").write_text("more notes")
    stamps = stamp(a), stamp(b)

    second = night(survey, out, tiny_model, cluster)
    assert second.exit_code == 0, second.output
    assert "2 of 2 rasters done (0 computed, 2 up to date, 0 failed)" in second.stdout
    assert (stamp(a), stamp(b)) == stamps, "an up-to-date raster must not be recomputed"
    assert (a / "notes.txt").read_text() == "the inspector's notes"
    rows = summary(out)
    assert {r["action"] for r in rows.values()} == {"up to date"} and all(r["status"] == "ok" for r in rows.values())
    assert "up to date" in (out / "run.log").read_text()

    write_raster(survey / "b.tif", 7)  # re-exported
    third = night(survey, out, tiny_model, cluster)
    assert third.exit_code == 0, third.output
    assert "(1 computed, 1 up to date, 0 failed)" in third.stdout
    assert stamp(a) == stamps[0] and stamp(b) != stamps[1]
    assert summary(out)["site/b"]["reason"] == "raster changed"
    assert (b / "notes.txt").read_text() == "more notes", "the user's file moves into the recomputed folder"

    changed = night(survey, out, tiny_model, cluster, "--threshold", "0.9")
    assert "(2 computed, 0 up to date, 0 failed)" in changed.stdout
    assert {r["reason"] for r in summary(out).values()} == {"settings changed"}
    forced = night(survey, out, tiny_model, cluster, "--threshold", "0.9", "--force")
    assert "(2 computed, 0 up to date, 0 failed)" in forced.stdout
    assert {r["reason"] for r in summary(out).values()} == {"--force"}
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["this_run"] == {"computed": 2, "up to date": 0, "failed": 0}


def test_run_over_one_raster_keeps_the_others_in_the_reports(tiny_model, cluster, tmp_path):
    survey = tmp_path / "site"
    write_raster(survey / "a.tif", 1)
    write_raster(survey / "b.tif", 2)
    out = tmp_path / "out"
    assert night(survey, out, tiny_model, cluster).exit_code == 0
    before = summary(out)

    again = night(survey / "a.tif", out, tiny_model, cluster, "--force")
    assert again.exit_code == 0, again.output
    rows = summary(out)
    assert set(rows) == {"site/a", "site/b"}
    assert rows["site/a"]["action"] == "computed" and rows["site/b"]["action"] == "not in this run's inputs"
    assert rows["site/b"]["polygons"] == before["site/b"]["polygons"]
    report = json.loads((out / "site" / "report.json").read_text())
    assert report["rasters"] == ["a", "b"] and report["ok"] == 2
    assert json.loads((out / "run.json").read_text())["rasters"] == 2


# ---------------------------------------------------------------------------------- kill -9 and resume


def test_killed_night_resumes_without_recomputing_and_ends_as_an_uninterrupted_one(tiny_model, cluster, tmp_path):
    survey = tmp_path / "site"
    for seed, name in enumerate(("r1", "r2", "r3"), 1):
        write_raster(survey / f"{name}.tif", seed)
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert night(survey, reference, tiny_model, cluster).exit_code == 0
    assert night(survey, out, tiny_model, cluster).exit_code == 0
    # What kill -9 during r3 leaves: r3's half-built folder, its manifest record saying "running", the lock of a
    # dead process, and reports that were last written before r3 (here: none at all).
    records = {r.raster: r for r in load_records(out)}
    r3 = records["r3"].model_copy(update={"status": "running", "finished_at": None})
    (out / MANIFEST_DIR / "site" / "r3.json").write_text(r3.model_dump_json())
    partial = out / "site" / ".r3.partial"
    (out / "site" / "r3").rename(partial)
    (partial / "heatmap.tif").write_bytes(b"half")
    for name in ("summary.csv", "run.json", "site/report.json"):
        (out / name).unlink()
    (out / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "started_at": "then"}))
    stamps = {name: stamp(out / "site" / name) for name in ("r1", "r2")}

    resumed = night(survey, out, tiny_model, cluster)
    assert resumed.exit_code == 0, resumed.output
    assert "WARNING took over the lock" in resumed.stdout
    assert "(1 computed, 2 up to date, 0 failed)" in resumed.stdout
    assert {name: stamp(out / "site" / name) for name in ("r1", "r2")} == stamps
    assert summary(out)["site/r3"]["reason"] == "a previous run stopped while computing it"
    assert not partial.exists() and not (out / ".lock").exists()
    ignore = {"seconds", "action", "reason"}
    ours, theirs = summary(out), summary(reference)
    assert set(ours) == set(theirs)
    for key in ours:
        assert {k: v for k, v in ours[key].items() if k not in ignore} == {k: v for k, v in theirs[key].items() if k not in ignore}
        np.testing.assert_array_equal(heatmap(out / key), heatmap(reference / key))
    report = json.loads((out / "site" / "report.json").read_text())
    assert report["ok"] == 3 and report["rasters"] == ["r1", "r2", "r3"]


# ---------------------------------------------------------------------------------- names


def test_same_survey_names_and_stems_get_distinct_stable_folders(tmp_path):
    for year in ("2025", "2026", "2027"):
        (tmp_path / year / "bridge").mkdir(parents=True)
        (tmp_path / year / "bridge" / "ortho.tif").write_bytes(b"")
    (tmp_path / "2027" / "bridge" / "ortho.jpg").write_bytes(b"")
    (tmp_path / "2027" / "bridge" / "ortho.JPG").write_bytes(b"")
    (tmp_path / "2027" / "bridge" / "ortho.Jpg").write_bytes(b"")
    inputs = [tmp_path / year / "bridge" for year in ("2027", "2025", "2026")]
    found, errors = find_rasters(inputs)
    assert not errors
    names = {(r.survey, r.name) for r in found}
    # sorted path order: ortho.JPG, ortho.Jpg, ortho.jpg, ortho.tif
    assert names == {("bridge", "ortho"), ("2026-bridge", "ortho"), ("2027-bridge", "ortho"),
                     ("2027-bridge", "ortho_jpg"), ("2027-bridge", "ortho_jpg-2"), ("2027-bridge", "ortho_tif")}, names
    assert len(found) == 6, "no raster is dropped"
    # a later night with one more folder keeps the names the earlier nights gave
    known_surveys = {str(r.folder): r.survey for r in found}
    known_rasters = {r.source: (r.survey, r.name) for r in found}
    (tmp_path / "2024" / "bridge").mkdir(parents=True)
    (tmp_path / "2024" / "bridge" / "ortho.tif").write_bytes(b"")
    later, _ = find_rasters(inputs + [tmp_path / "2024" / "bridge"], known_surveys, known_rasters)
    assert {(r.survey, r.name) for r in later} == names | {("2024-bridge", "ortho")}


@pytest.mark.parametrize("name, expected", [
    ("..", "_"), ("...hidden", "hidden"), ("a/b", "a_b"), ("a\\b", "a_b"), ("x:y*z?", "x_y_z_"), ("tab\there", "tab_here"),
    ("Brücke Süd", "Brücke Süd"), ("", "_"),
])
def test_names_from_the_input_tree_stay_inside_out(name, expected):
    assert safe_name(name) == expected


def test_reserved_names_are_not_taken(tmp_path):
    (tmp_path / "run.json").mkdir()
    (tmp_path / "run.json" / "report.json.tif").write_bytes(b"")
    found, _ = find_rasters([tmp_path / "run.json"])
    assert [(r.survey, r.name) for r in found] == [(f"{tmp_path.name}-run.json", "report.json_tif")]


# ---------------------------------------------------------------------------------- lock


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_one(tmp_path):
    warnings: list[str] = []
    with out_lock(tmp_path, warnings.append):
        with pytest.raises(InfrastructureError, match=f"another run is writing here \\(pid {os.getpid()} on"):
            with out_lock(tmp_path, warnings.append):
                pass
    assert not (tmp_path / ".lock").exists() and not warnings
    (tmp_path / ".lock").write_text(json.dumps({"pid": dead_pid(), "host": os.uname().nodename, "started_at": "x"}))
    with out_lock(tmp_path, warnings.append) as owner:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == owner.pid == os.getpid()
    assert len(warnings) == 1 and "took over" in warnings[0] and "started x" in warnings[0]
    assert [p.name for p in tmp_path.iterdir()] == []


HOLD_LOCK = """
import sys, time
from pathlib import Path
from survey_cracks.run.lock import out_lock, read_owner
with out_lock(Path(sys.argv[1]), print):
    print("held", flush=True)
    time.sleep(600)
"""


def test_the_lock_of_a_killed_run_is_free_for_the_next_run(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InfrastructureError, match=f"another run is writing here \\(pid {holder.pid} on"):
            with out_lock(tmp_path, print):
                pass
    finally:
        holder.kill()
        holder.wait()
    warnings: list[str] = []
    with out_lock(tmp_path, warnings.append) as owner:
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == owner.pid == os.getpid()
    assert len(warnings) == 1 and f"pid {holder.pid}" in warnings[0]
    assert not (tmp_path / ".lock").exists()


def test_second_run_into_a_locked_out_exits_3(tiny_model, tmp_path):
    write_raster(tmp_path / "site" / "a.tif")
    out = tmp_path / "out"
    out.mkdir()
    with out_lock(out, print) as owner:
        result = invoke("run", tmp_path / "site", "--out", out, "--model", tiny_model, "-q")
        assert read_owner(out / ".lock") == owner  # the refused run left the holder's lock alone
    assert result.exit_code == 3, result.output
    assert "another run is writing here" in result.stderr and str(os.getpid()) in result.stderr
    assert not (out / "summary.csv").exists()


# ---------------------------------------------------------------------------------- exit codes, logs


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:9", "not a scheduler address"])
def test_unreachable_or_malformed_scheduler_exits_3_in_one_line(address, tiny_model, tmp_path):
    write_raster(tmp_path / "site" / "a.tif")
    config = tmp_path / "run.yaml"
    config.write_text("inference:\n  scheduler_timeout_s: 2\n")
    result = invoke("run", tmp_path / "site", "--out", tmp_path / "out", "--model", tiny_model, "--scheduler", address,
                    "--config", config, "-q")
    assert result.exit_code == 3, result.output
    assert "cannot reach the Dask scheduler" in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_out_that_cannot_be_created_exits_3(tiny_model, tmp_path):
    write_raster(tmp_path / "site" / "a.tif")
    (tmp_path / "file").write_text("not a folder")
    result = invoke("run", tmp_path / "site", "--out", tmp_path / "file" / "out", "--model", tiny_model, "-q")
    assert result.exit_code == 3, result.output
    assert "cannot create the output folder" in result.stderr


def test_full_disk_exits_3_and_keeps_finished_rasters(tiny_model, cluster, tmp_path, monkeypatch):
    import survey_cracks.run.pipeline as pipeline

    write_raster(tmp_path / "site" / "a.tif", 1)
    write_raster(tmp_path / "site" / "b.tif", 2)
    out = tmp_path / "out"
    calls = []
    real = pipeline.write_summary

    def full_after_first_raster(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first is written before any raster, the second after raster a
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "write_summary", full_after_first_raster)
    result = night(tmp_path / "site", out, tiny_model, cluster)
    assert result.exit_code == 3, result.output
    assert "No space left on device" in result.stderr and "Traceback" not in result.output
    assert not (out / ".lock").exists()
    monkeypatch.undo()
    again = night(tmp_path / "site", out, tiny_model, cluster)
    assert again.exit_code == 0 and "(1 computed, 1 up to date, 0 failed)" in again.stdout, again.output


def test_quiet_prints_one_closing_line_and_logs_everything_as_json(tiny_model, cluster, tmp_path):
    write_raster(tmp_path / "site" / "a.tif")
    out = tmp_path / "out"
    result = night(tmp_path / "site", out, tiny_model, cluster)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()  # quiet: warnings (the tiny model floods this raster), then one line
    assert all(line.startswith("WARNING ") for line in lines[:-1]), lines
    assert lines[-1:] == [
        f"1 of 1 raster done (1 computed, 0 up to date, 0 failed); outputs in {out}/ (summary.csv covers 1 raster, run.json, report.html, catalog.json)"]
    events = [json.loads(line) for line in (out / "run.log.jsonl").read_text().splitlines()]
    assert {"time", "level", "message"} <= set(events[0])
    assert any(e.get("raster") == "a" and "done" in e["message"] for e in events)
    assert any("dashboard" in e["message"] for e in events)
    assert events[-1]["message"].startswith("finished") and events[-1]["computed"] == 1 and events[-1]["failed"] == 0
    assert (out / "run.log").read_text().count("\n") == len(events)


def test_real_kill_9_after_the_first_raster_then_resume(tiny_model, tmp_path):
    """The console script, its LocalCluster and workers killed with SIGKILL once a raster is in summary.csv.

    What the kill leaves is checked before the resume: the run's reports (summary.csv, run.json, the survey's
    report.json) already cover the finished raster (before issue 14 they were written only at the end: none).
    """
    import signal
    import time

    def finished_in_summary() -> bool:
        try:
            return summary(out).get("site/r1", {}).get("status") == "ok"
        except (OSError, KeyError, csv.Error):  # not written yet, or being written
            return False

    survey = tmp_path / "site"
    for seed, name in enumerate(("r1", "r2", "r3"), 1):
        write_raster(survey / f"{name}.tif", seed)
    out = tmp_path / "out"
    script = Path(sys.executable).parent / "survey-cracks"
    command = [str(script), "run", str(survey), "--out", str(out), "--model", str(tiny_model), "--workers", "1", "-q"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not finished_in_summary():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {r.raster for r in load_records(out) if r.status == "ok"}
    assert "r1" in done_before and len(done_before) < 3, done_before
    # what a killed night leaves: reports covering what it finished, a run.json saying it did not finish
    assert summary(out)["site/r1"]["status"] == "ok"
    killed_run = json.loads((out / "run.json").read_text())
    assert killed_run["status"] == "running" and killed_run["finished_at"] is None
    assert "r1" in json.loads((out / "site" / "report.json").read_text())["rasters"]
    stamps = {name: stamp(out / "site" / name) for name in done_before}

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{3 - len(done_before)} computed, {len(done_before)} up to date, 0 failed" in resumed.stdout, resumed.stdout
    assert {name: stamp(out / "site" / name) for name in done_before} == stamps
    rows = summary(out)
    assert set(rows) == {"site/r1", "site/r2", "site/r3"} and all(r["status"] == "ok" for r in rows.values())
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not [p for p in out.rglob("*") if "partial" in p.name] and not (out / ".lock").exists()
