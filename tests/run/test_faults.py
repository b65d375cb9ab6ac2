"""Fault injection with real files and processes: a corrupt tile inside a valid GeoTIFF, a raster
the run may not read, OUT on a read-only path, a disk that fills while a raster's outputs are written.

Each fault gives its exit code (1: a raster failed, the others are done; 3: the machine, not an
input) and one line naming the file, what is wrong and the fix; never a traceback.
(The unreachable scheduler and a disk full between rasters: tests/run/test_nightly.py.)

Permissions: the test suite may run as root, whom file modes do not stop. The runs that must meet
a permission error then go through ``setpriv`` without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH: still
root, still the owner of every file here, but bound by the modes like anyone else.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from tests.conftest import write_geotiff
from tests.run.test_bad_inputs import assert_good_outputs, leftovers, read_summary, write_good

SCRIPT = Path(sys.executable).parent / "survey-cracks"


def unprivileged(command: list[str]) -> list[str]:
    """``command`` bound by file permissions, whoever runs the tests."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: file permissions cannot be enforced")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}", *command]


def cli_run(*args, permissions: bool = False) -> subprocess.CompletedProcess:
    command = [str(SCRIPT), "run", *[str(a) for a in args], "--workers", "1", "-q"]
    return subprocess.run(unprivileged(command) if permissions else command, capture_output=True, text=True, timeout=600)


def failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("FAILED")]


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    console = proc.stdout + proc.stderr
    assert "Traceback" not in console and "unexpected" not in console and "please report" not in console, console


# ---------------------------------------------------------------------------------- corrupt tile, unreadable raster


def corrupt_one_tile(path: Path) -> None:
    """Overwrite the compressed bytes of one interior tile: the header and every other tile stay valid."""
    with rasterio.open(path) as src:
        assert src.profile["tiled"] and src.block_shapes[0] == (128, 128)
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    junk = np.random.default_rng(1).integers(0, 256, size, dtype=np.uint8).tobytes()
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(junk)


def test_corrupt_tile_inside_a_valid_geotiff_is_one_line_naming_the_file(tiny_model, tmp_path):
    survey = tmp_path / "survey"
    survey.mkdir()
    write_good(survey / "good.tif")
    rgb = np.random.default_rng(0).integers(0, 255, (384, 384, 3), dtype=np.uint8)
    path = write_geotiff(survey / "corrupt.tif", rgb)
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(tiled=True, blockxsize=128, blockysize=128, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    corrupt_one_tile(path)
    with rasterio.open(path) as src:  # still opens, and its header is intact: only the pixels are broken
        assert (src.width, src.height, src.count) == (384, 384, 3)
        src.read(window=((0, 128), (0, 128)))

    proc = cli_run(survey, "--out", tmp_path / "out", "--model", tiny_model)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    failed = failed_lines(proc.stderr)
    assert len(failed) == 1 and "corrupt.tif" in failed[0] and "truncated or corrupt" in failed[0], proc.stderr
    assert "re-copy or re-export" in failed[0]
    assert_good_outputs(tmp_path / "out" / "survey" / "good")
    assert not (tmp_path / "out" / "survey" / "corrupt").exists() and not leftovers(tmp_path / "out")


def test_raster_without_read_permission_fails_alone_in_one_line(tiny_model, tmp_path):
    survey = tmp_path / "survey"
    survey.mkdir()
    write_good(survey / "good.tif")
    locked = write_good(survey / "locked.tif", seed=3)
    locked.chmod(0)
    try:
        proc = cli_run(survey, "--out", tmp_path / "out", "--model", tiny_model, permissions=True)
    finally:
        locked.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    failed = failed_lines(proc.stderr)
    assert len(failed) == 1 and "locked.tif" in failed[0], proc.stderr
    assert "ermission denied" in failed[0] and "permission" in failed[0].split("—")[-1], failed[0]
    assert_good_outputs(tmp_path / "out" / "survey" / "good")
    rows = {row["raster"]: row for row in read_summary(tmp_path / "out")}
    assert rows["good"]["status"] == "ok" and rows["locked"]["status"] == "error"


# ---------------------------------------------------------------------------------- OUT on a read-only path


def test_out_inside_a_read_only_folder_exits_3_in_one_line(tiny_model, tmp_path):
    survey = tmp_path / "survey"
    survey.mkdir()
    write_good(survey / "good.tif")
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        proc = cli_run(survey, "--out", read_only / "out", "--model", tiny_model, permissions=True)
    finally:
        read_only.chmod(0o755)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr
    assert str(read_only / "out") in proc.stderr and "cannot create the output folder (Permission denied)" in proc.stderr
    assert not (read_only / "out").exists()


def test_read_only_out_from_an_earlier_night_exits_3_and_is_left_as_it_was(tiny_model, tmp_path):
    survey = tmp_path / "survey"
    survey.mkdir()
    write_good(survey / "good.tif")
    out = tmp_path / "out"
    first = cli_run(survey, "--out", out, "--model", tiny_model)
    assert first.returncode == 0, first.stdout + first.stderr
    write_good(survey / "new.tif", seed=4)
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    out.chmod(0o555)
    try:
        proc = cli_run(survey, "--out", out, "--model", tiny_model, permissions=True)
    finally:
        out.chmod(0o755)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert_no_traceback(proc)
    assert len(proc.stderr.strip().splitlines()) == 1 and str(out) in proc.stderr, proc.stderr
    assert "Permission denied" in proc.stderr and "writable" in proc.stderr, proc.stderr
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before


# ---------------------------------------------------------------------------------- a full disk mid-raster


def test_disk_full_while_writing_a_rasters_outputs_exits_3_and_leaves_no_partial(tiny_model, cluster, tmp_path,
                                                                                    monkeypatch):
    """ENOSPC from inside a raster's stages is no fault of the raster: the run stops, nothing half-written stays."""
    import survey_cracks.run.pipeline as pipeline

    survey = tmp_path / "site"
    survey.mkdir()
    write_good(survey / "a.tif", seed=1)
    write_good(survey / "b.tif", seed=2)
    out = tmp_path / "out"
    real = pipeline.write_vectors
    calls = []

    def disk_fills_on_the_second_raster(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "write_vectors", disk_fills_on_the_second_raster)
    args = ["run", survey, "--out", out, "--model", tiny_model, "--scheduler", cluster.scheduler_address, "-q"]
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output and "No space left on device" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(out) in result.stderr, result.stderr
    assert not leftovers(out) and not (out / ".lock").exists()
    assert (out / "site" / "a" / "heatmap.tif").is_file() and not (out / "site" / "b").exists()
    monkeypatch.undo()
    again = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert again.exit_code == 0 and "(1 computed, 1 up to date, 0 failed)" in again.stdout, again.output
