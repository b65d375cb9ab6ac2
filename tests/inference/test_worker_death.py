"""A Dask worker process killed (SIGKILL) in the middle of a run: its tasks run again elsewhere and the
run completes, with the outputs of an uninterrupted run and nothing of the death on the console.

Real processes and files: the console script starts its own LocalCluster of two worker processes; the
test reads the scheduler's address from OUT/run.log.jsonl, watches the raster's tasks through a second
client, and kills a worker that is running one once some tasks are done and most are still to do.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from survey_cracks.synthetic import render_scene
from tests.conftest import write_geotiff

SIDE = 1536  # tiny model: 64 px patches at a 32 px stride, 47 x 47 = 2209 windows
WINDOWS_PER_TASK = 8  # ~280 tasks over two single-threaded workers


def write_big_raster(path: Path) -> Path:
    tile = render_scene(512, 512, seed=3, n_cracks=3)[0]
    rgb = np.tile(tile, (SIDE // 512, SIDE // 512, 1))
    return write_geotiff(path, rgb, transform=from_origin(500000.0, 5700000.0, 0.01, 0.01))


def command(survey: Path, out: Path, model: Path, config: Path) -> list[str]:
    script = Path(sys.executable).parent / "survey-cracks"
    return [str(script), "run", str(survey), "--out", str(out), "--model", str(model), "--config", str(config),
            "--workers", "2", "--threads", "1", "-q"]


def scheduler_address(out: Path) -> str | None:
    log = out / "run.log.jsonl"
    if not log.is_file():
        return None
    for line in log.read_text().splitlines():
        try:
            message = json.loads(line)["message"]
        except (ValueError, KeyError):
            continue  # a line being written
        if message.startswith("dask:") and " at " in message:
            return message.split(" at ", 1)[1].split(";", 1)[0]
    return None


def summary(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return {f"{r['survey']}/{r['raster']}": r for r in csv.DictReader(fh)}


def heatmap(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.timeout(1200)
def test_worker_killed_mid_run_the_run_completes_as_an_uninterrupted_one(tiny_model, tmp_path):
    from distributed import Client

    def window_tasks(dask_scheduler) -> tuple[int, dict[str, tuple[int, int]]]:
        """On the scheduler: the raster's window tasks not yet done, and each worker's (pid, tasks running).

        Defined here, not at module level: the scheduler unpickles it by value, without this test module."""
        left = sum(1 for key, ts in dask_scheduler.tasks.items()
                   if "score_windows" in str(key) and ts.state not in ("memory", "released", "forgotten", "erred"))
        return left, {address: (ws.pid, len(ws.processing)) for address, ws in dask_scheduler.workers.items()}

    survey = tmp_path / "site"
    survey.mkdir()
    write_big_raster(survey / "big.tif")
    config = tmp_path / "run.yaml"
    config.write_text(f"inference:\n  windows_per_task: {WINDOWS_PER_TASK}\n  batch_size: 8\n")
    out, reference = tmp_path / "out", tmp_path / "reference"

    proc = subprocess.Popen(command(survey, out, tiny_model, config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    killed: tuple[int, int, int] | None = None  # (pid, tasks left, most tasks seen)
    try:
        deadline = time.monotonic() + 600
        address = None
        while address is None and proc.poll() is None and time.monotonic() < deadline:
            address = scheduler_address(out)
            time.sleep(0.1)
        assert address, "the run never logged its scheduler"
        with Client(address, timeout="60s") as watcher:
            most = 0
            while proc.poll() is None and time.monotonic() < deadline:
                left, workers = watcher.run_on_scheduler(window_tasks)
                most = max(most, left)
                busy = [pid for pid, running in workers.values() if running and pid]
                # some windows are done, most are still to do, and a worker is running one of them
                if most >= 100 and most - left >= 10 and left >= most // 2 and busy:
                    os.kill(busy[0], signal.SIGKILL)
                    killed = (busy[0], left, most)
                    break
                time.sleep(0.05)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"the run hung after worker {killed} was killed: {(out / 'run.log').read_text()[-2000:]}")
    assert killed, f"the run ended before a worker could be killed mid-run: {stdout}{stderr}"

    console = stdout + stderr
    assert proc.returncode == 0, console
    assert "Traceback" not in console and "KilledWorker" not in console and "distributed." not in console, console
    assert stderr.strip() == "", stderr
    assert stdout.strip().splitlines()[-1].startswith("1 of 1 raster done (1 computed, 0 up to date, 0 failed)"), stdout

    again = subprocess.run(command(survey, reference, tiny_model, config), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    ours, theirs = summary(out), summary(reference)
    ignore = {"seconds"}
    assert {k: v for k, v in ours["site/big"].items() if k not in ignore} == {
        k: v for k, v in theirs["site/big"].items() if k not in ignore}
    report = json.loads((out / "site" / "big" / "report.json").read_text())
    assert report["status"] == "ok" and report["counts"]["patches_scored"] == report["counts"]["patches"] == 47 * 47
    np.testing.assert_array_equal(heatmap(out / "site" / "big" / "heatmap.tif"),
                                  heatmap(reference / "site" / "big" / "heatmap.tif"))
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
