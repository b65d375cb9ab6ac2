"""The collection layout: a survey of photos in grouped Dask tasks, one GeoPackage, a journal per photo.

The shipped model on small procedural photos (the layout, not the model's skill, is under test).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.config import RunConfig
from survey_cracks.deliver.collection import COLLECTION, JOURNAL, PHOTOS_CSV, read_journal
from survey_cracks.inference.dispatch import model_spec, photo_groups
from survey_cracks.io.discover import SurveyRaster
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256, read_meta
from survey_cracks.run.collection import PhotoSettings, is_photo, photo_inputs, photos_task, PhotoJob
from survey_cracks.run.manifest import config_sha256
from survey_cracks.synthetic import render_scene

ROOT = Path(__file__).resolve().parents[2]


def write_photos(folder: Path, count: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rgb, _ = render_scene(*size, seed=seed + i, n_cracks=2)
        path = folder / f"frame_{i:04d}.jpg"
        cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def jobs_and_settings(paths: list[Path], folder: Path) -> tuple[list[PhotoJob], PhotoSettings]:
    config, sha = RunConfig(), file_sha256(SHIPPED_MODEL)
    jobs = [PhotoJob(p.stem, p, None, photo_inputs(SurveyRaster("s", p, p.stem, p.parent), None, sha, config_sha256(config)),
                     p.stat().st_size) for p in paths]
    (folder / "heatmaps").mkdir(parents=True)
    meta = read_meta(SHIPPED_MODEL)
    return jobs, PhotoSettings(model_spec(SHIPPED_MODEL, sha, config.inference), config, meta.mask_threshold,
                               meta.min_margin_px, "s", folder)


def test_photo_groups_keep_every_photo_once_in_order_within_the_budget():
    sizes = [300, 50, 900, 10, 10, 10, 700, 1]
    groups = photo_groups(list(range(len(sizes))), lambda i: sizes[i], budget_px=1000, most=3)
    assert [j for g in groups for j in g] == list(range(len(sizes)))
    assert all(len(g) <= 3 for g in groups)
    # a group closes as soon as it reaches the budget or the count
    assert groups == [[0, 1, 2], [3, 4, 5], [6, 7]]


def test_grouped_tasks_give_the_outputs_ungrouped_ones_give(tmp_path):
    tall = write_photos(tmp_path / "other", 1, size=(200, 64), seed=9)[0].rename(tmp_path / "tall.jpg")
    paths = write_photos(tmp_path / "photos", 3, size=(96, 160)) + [tall]
    jobs, grouped_settings = jobs_and_settings(paths, tmp_path / "grouped")
    _, single_settings = jobs_and_settings(paths, tmp_path / "single")
    grouped = photos_task(jobs, grouped_settings)
    single = [photos_task([job], single_settings)[0] for job in jobs]
    assert [r.outcome.raster for r in grouped] == [j.name for j in jobs]
    for ours, theirs in zip(grouped, single):
        assert ours.outcome.status == theirs.outcome.status == "ok", (ours.outcome.error, ours.outcome.traceback)
        assert ours.outcome.counts == theirs.outcome.counts and ours.score == theirs.score
        assert ours.network_px == theirs.network_px
        assert ours.polygons.geometry.geom_equals_exact(theirs.polygons.geometry, 1e-9).all()
        assert ours.lines.geometry.geom_equals_exact(theirs.lines.geometry, 1e-9).all()
        name = f"heatmaps/{ours.outcome.raster}.png"
        a = cv2.imread(str(tmp_path / "grouped" / name), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "single" / name), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(a, b)
        assert a.shape == tuple(int(v) for v in (ours.outcome.info.height, ours.outcome.info.width))
    # windows sized to the photo: a 160 x 96 photo is one window of 160 x 128 (the model's 128 px patch at least,
    # for its dense head), no margin around it
    assert grouped[0].network_px == 128 * 160 and grouped[0].outcome.counts.windows == 1


def test_a_jpeg_with_a_world_file_is_a_map_not_a_photo(tmp_path):
    path = write_photos(tmp_path, 1)[0]
    item = SurveyRaster("s", path, path.stem, tmp_path)
    assert is_photo(item)
    path.with_suffix(".jgw").write_text("0.01\n0\n0\n-0.01\n500000\n5700000\n")
    assert not is_photo(item)


def add_gps(path: Path, lat: tuple[float, float, float], lon: tuple[float, float, float], lat_ref="N", lon_ref="W") -> None:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        exif = image.getexif()
        exif.get_ifd(0x8825).update({1: lat_ref, 2: lat, 3: lon_ref, 4: lon})
        image.save(path, exif=exif, quality=90)


def test_exif_gps_gives_the_photo_a_position_in_epsg_4326(tmp_path):
    from survey_cracks.run.collection import exif_position

    path = write_photos(tmp_path, 1)[0]
    assert exif_position(path) is None
    add_gps(path, (52.0, 30.0, 36.0), (1.0, 15.0, 0.0))
    lon, lat = exif_position(path)
    assert lon == pytest.approx(-1.25) and lat == pytest.approx(52.51)


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["run", *[str(a) for a in args]])
    return result.exit_code, result.output


CLUSTER_THREADS = 2  # the cluster fixture's (conftest.py): two photos at once


def test_a_corrupt_photo_among_good_ones_fails_alone_with_one_line(tmp_path, cluster):
    survey = tmp_path / "road"
    add_gps(write_photos(survey, 3)[1], (52.0, 30.0, 36.0), (1.0, 15.0, 0.0))
    (survey / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    out = tmp_path / "out"
    code, output = _run(survey, "--out", out, "--scheduler", cluster.scheduler_address, "-q")
    assert code == 1, output
    lines = [line for line in output.splitlines() if "broken.jpg" in line]
    assert len(lines) == 1 and " — " in lines[0], output  # one line: the file, what is wrong, what to do
    # a collection with a failed photo is still counted as its photos, not as "1 raster"
    assert "(4 photos in 1 collection; 0 computed, 0 up to date, 1 failed)" in output, output
    folder = out / "road" / COLLECTION
    table = pd.read_csv(folder / PHOTOS_CSV)
    assert sorted(table.photo) == ["broken", "frame_0000", "frame_0001", "frame_0002"]
    assert (table.set_index("photo").status == "error").to_dict() == {"broken": True, "frame_0000": False,
                                                                      "frame_0001": False, "frame_0002": False}
    assert sorted(read_journal(folder)) == ["frame_0000", "frame_0001", "frame_0002"]
    assert sorted(p.name for p in (folder / "heatmaps").iterdir()) == [f"frame_000{i}.png" for i in range(3)]
    # the next run tries the broken photo again, and only it
    (survey / "broken.jpg").unlink()
    write_photos(tmp_path / "fixed", 1, seed=50)[0].rename(survey / "broken.jpg")
    before = {p.name: p.stat().st_mtime_ns for p in (folder / "heatmaps").iterdir()}
    code, output = _run(survey, "--out", out, "--scheduler", cluster.scheduler_address)
    assert code == 0, output
    assert "3 of 4 photos already done" in output, output
    assert all((folder / "heatmaps" / name).stat().st_mtime_ns == mtime for name, mtime in before.items())
    assert len(pd.read_csv(folder / PHOTOS_CSV)) == 4 and sorted(read_journal(folder))[0] == "broken"
    # and a third run has nothing to do
    code, output = _run(survey, "--out", out, "--scheduler", cluster.scheduler_address)
    assert code == 0 and "4 photos up to date" in output, output
    # the collection is one styled layer per kind for all photos, a file or two per photo
    layers = dict(pyogrio.list_layers(folder / "cracks.gpkg"))
    assert {"cracks", "centrelines", "photos", "layer_styles"} <= set(layers)
    photos = gpd.read_file(folder / "cracks.gpkg", layer="photos").set_index("photo")
    assert photos.crs.to_epsg() == 4326 and photos.geometry["frame_0000"] is None
    assert (photos.geometry["frame_0001"].x, photos.geometry["frame_0001"].y) == pytest.approx((-1.25, 52.51))
    cracks = gpd.read_file(folder / "cracks.gpkg", layer="cracks")
    assert set(cracks.photo) <= {"broken", "frame_0000", "frame_0001", "frame_0002"}
    assert len(list(out.rglob("*"))) - 4 < 2 * 4 + 20


@pytest.mark.slow
def test_a_killed_run_over_200_photos_resumes_without_redoing_finished_ones(tmp_path):
    survey = tmp_path / "road"
    write_photos(survey, 200, size=(64, 96))
    env = os.environ | {"PYTHONPATH": str(ROOT)}

    def command(out: Path) -> list[str]:
        return [sys.executable, "-c", "from survey_cracks.cli.main import cli; cli()", "run", str(survey), "--out", str(out),
                "--workers", "1", "-q"]

    reference, out = tmp_path / "reference", tmp_path / "out"
    subprocess.run(command(reference), check=True, capture_output=True, timeout=600, env=env, cwd=ROOT)
    proc = subprocess.Popen(command(out), start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, cwd=ROOT)
    journal = out / "road" / COLLECTION / JOURNAL
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 32:
            break
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = read_journal(out / "road" / COLLECTION)
    assert 32 <= len(finished) < 200, "the run finished before the kill"
    stamps = {name: (out / "road" / COLLECTION / "heatmaps" / f"{name}.png").stat().st_mtime_ns for name in finished}

    resumed = subprocess.run(command(out)[:-1], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"{len(finished)} of 200 photos already done" in resumed.stdout
    for name, stamp in stamps.items():  # finished before the kill: not computed again
        assert (out / "road" / COLLECTION / "heatmaps" / f"{name}.png").stat().st_mtime_ns == stamp, name
    ours, theirs = (pd.read_csv(o / "road" / COLLECTION / PHOTOS_CSV).set_index("photo") for o in (out, reference))
    columns = ["status", "polygons", "centrelines", "crack_length", "max_width", "score", "cell_f1"]
    pd.testing.assert_frame_equal(ours[columns], theirs[columns])
    for layer in ("cracks", "centrelines"):  # no photo's features twice, none missing
        a, b = (gpd.read_file(o / "road" / COLLECTION / "cracks.gpkg", layer=layer) for o in (out, reference))
        assert a.photo.value_counts().sort_index().equals(b.photo.value_counts().sort_index()), layer
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["failed"] == 0
