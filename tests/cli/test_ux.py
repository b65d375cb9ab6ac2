"""What a person meets at the terminal and in the log (issue 31): Ctrl-C and SIGTERM, redirected logs, mistyped
inputs, options a command would ignore, a threshold that makes the whole image a crack, --device."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from rasterio.transform import from_origin

from survey_cracks.cli.main import cli
from survey_cracks.run.journal import JOURNAL
from survey_cracks.synthetic import render_scene
from tests.conftest import write_geotiff

REPO = Path(__file__).resolve().parents[2]
# The command line of this checkout (the virtualenv's console script may belong to another), as a terminal starts it.
CLI = [sys.executable, "-c", "from survey_cracks.cli.main import cli; cli()"]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def write_raster(path: Path, size: int, seed: int = 3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = render_scene(size, size, seed=seed, n_cracks=3)[0]
    return write_geotiff(path, rgb, transform=from_origin(500000.0, 5700000.0, 0.002, 0.002))


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


# ---------------------------------------------------------------------------------- Ctrl-C and SIGTERM


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_process_group_stops_in_one_line_and_the_rerun_resumes(tiny_mask_model, tmp_path, signum, code):
    survey = tmp_path / "site"
    write_raster(survey / "big.tif", 1280)  # 100 windows of 128 px
    out = tmp_path / "out"
    command = [*CLI, "run", str(survey), "--out", str(out), "--model", str(tiny_mask_model), "--window", "128",
               "--workers", "1", "-q"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    journal = out / "site" / ".big.partial" / JOURNAL
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) > 1:  # a window journaled
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signum)  # as a terminal (Ctrl-C) or a process manager sends it
    stdout, stderr = proc.communicate(timeout=120)
    said = (stdout + stderr).strip().splitlines()
    assert proc.returncode == code, stdout + stderr
    assert len(said) == 1 and said[0].startswith("interrupted: ") and said[0].endswith(
        "windows of site/big kept; run the same command to resume"), said
    assert "Traceback" not in stdout + stderr and "Aborted" not in stdout + stderr
    kept = int(said[0].split()[1])
    assert 1 <= kept < 100
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"
    assert said[0] in (out / "run.log").read_text()
    journaled = {json.loads(line)["i"] for line in journal.read_text().splitlines()[1:]}
    assert len(journaled) == kept, "the journal holds every window the line promises"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=ENV)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"site/big: resumed: {kept} of 100 windows already done" in (out / "run.log").read_text()
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


# ---------------------------------------------------------------------------------- a redirected log, --device


def test_redirected_log_has_no_control_characters_and_names_the_engine_first(tiny_model, tmp_path):
    survey = tmp_path / "site"
    write_raster(survey / "a.tif", 384)
    out, log = tmp_path / "out", tmp_path / "night.log"
    with open(log, "w") as fh:  # not a terminal: no progress bars
        done = subprocess.run([*CLI, "run", str(survey), "--out", str(out), "--model", str(tiny_model), "--workers", "1",
                               "--device", "cpu"], stdout=fh, stderr=subprocess.STDOUT, timeout=300, check=False, env=ENV)
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    lines = text.splitlines()
    engine = next(i for i, line in enumerate(lines) if line.startswith("model on cpu "))
    first = next(i for i, line in enumerate(lines) if line.startswith("[1/1] site/a"))
    assert engine < first, "the engine and precision are said before the first raster"
    assert json.loads((out / "run.json").read_text())["config"]["inference"]["device"] == "cpu"


# ---------------------------------------------------------------------------------- inputs that hold nothing


def test_no_input_exists_is_a_usage_error_and_creates_nothing(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "quay_wal"), "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0 and "quay_wal" in result.stderr and "input not found" in result.stderr
    assert not out.exists()


def test_an_empty_folder_is_a_usage_error_and_creates_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "empty"), "--out", str(out), "-q"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().count("\n") == 0 and "no rasters found" in result.stderr
    assert not out.exists()


# ---------------------------------------------------------------------------------- options a command would ignore


@pytest.mark.parametrize("args", [["--out", "x.json"], ["--model", "m.safetensors"]], ids=["out", "model"])
def test_evaluate_out_dir_refuses_the_options_of_the_other_form(tmp_path, args):
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path), *args])
    assert result.exit_code == 2 and f"{args[0]} cannot be used with OUT_DIR" in result.output, result.output
    assert not (Path.cwd() / "x.json").exists()


def test_evaluate_config_refuses_a_threshold(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("{}\n")
    result = CliRunner().invoke(cli, ["evaluate", "--config", str(config), "--threshold", "0.4"])
    assert result.exit_code == 2 and "--threshold cannot be used with --config" in result.output, result.output


def test_export_no_verify_refuses_verify_images(tmp_path):
    result = CliRunner().invoke(cli, ["export", "--out", str(tmp_path / "m.onnx"), "--no-verify", "--verify-images", "3"])
    assert result.exit_code == 2 and "--verify-images cannot be used with --no-verify" in result.output, result.output


# ---------------------------------------------------------------------------------- a threshold that floods the image


def test_threshold_zero_warns_that_most_of_the_footprint_is_a_crack(tiny_model, cluster, tmp_path):
    survey = tmp_path / "site"
    write_raster(survey / "a.tif", 256)
    out = tmp_path / "out"
    args = ["run", str(survey), "--out", str(out), "--model", str(tiny_model), "--scheduler", cluster.scheduler_address, "-q"]
    result = CliRunner().invoke(cli, [*args, "--threshold", "0"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("WARNING") and "threshold 0 makes" in line]
    assert len(warnings) == 1, result.output
    assert "100% of the valid footprint a crack" in warnings[0]
    assert warnings[0] in (out / "run.log").read_text()
    report = json.loads((out / "site" / "a" / "report.json").read_text())
    assert len(report["warnings"]) == 1 and "threshold 0 makes" in report["warnings"][0]

    calibrated = CliRunner().invoke(cli, [*args, "--force"])
    assert calibrated.exit_code == 0 and "WARNING" not in calibrated.output, calibrated.output
