"""Remote inputs: rasters on a web server (http://) and in object storage (s3://), and ``run --from-list``.

Loopback only: a small web server with Range requests (tests/io/range_server.py) and moto's
S3 server, each in its own process. Batch runs go through ``--scheduler`` on one
LocalCluster started after the S3 environment is set, so its workers read s3:// too.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import LineString

from survey_cracks.io.remote import RemotePath, as_source, is_remote
from survey_cracks.run.manifest import load_records
from tests.run.test_nightly import heatmap, invoke, summary, write_raster

BUCKET = "night-surveys"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="module")
def s3() -> Iterator[object]:
    """moto's S3 server on loopback, and the environment GDAL and boto3 read it through."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port)
        with pytest.MonkeyPatch.context() as env:
            for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                                "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                                "AWS_S3_ENDPOINT": f"127.0.0.1:{port}", "AWS_HTTPS": "NO",
                                "AWS_VIRTUAL_HOSTING": "FALSE"}.items():
                env.setenv(name, value)
            env.delenv("AWS_ENDPOINT_URL", raising=False)
            env.delenv("AWS_PROFILE", raising=False)
            import boto3

            client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
            client.create_bucket(Bucket=BUCKET)
            yield client
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="module")
def cluster(s3):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


@pytest.fixture
def web(tmp_path) -> Iterator[tuple[str, Path, Path]]:
    """(base URL, served folder, request log) of a loopback web server."""
    root, log = tmp_path / "www", tmp_path / "requests.log"
    root.mkdir()
    log.touch()
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("range_server.py")), str(root), str(log)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        yield f"http://127.0.0.1:{int(server.stdout.readline())}", root, log
    finally:
        server.kill()
        server.wait()


def night(inputs, out: Path, model: Path, cluster, *extra):
    """`run` as cron would; without a cluster for runs that compute nothing."""
    inputs = inputs if isinstance(inputs, list) else [inputs]
    scheduler = ["--scheduler", cluster.scheduler_address] if cluster is not None else []
    return invoke("run", *inputs, "--out", out, "--model", model, *scheduler, "-q", *extra)


def polygons(folder: Path) -> int:
    return len(gpd.read_file(folder / "cracks.gpkg", layer="cracks"))


def crack_annotation(path: Path, width: float = 0.03) -> Path:
    """One crack across a 96 px raster of 1 cm pixels (write_raster's grid), in its CRS."""
    line = LineString([(500000.10, 5699999.20), (500000.85, 5699999.70)])
    gpd.GeoDataFrame(geometry=[line.buffer(width / 2)], crs="EPSG:32631").to_file(path, driver="GeoJSON")
    return path


# ---------------------------------------------------------------------------------- names


def test_remote_inputs_are_named_like_local_files():
    url = as_source("/vsicurl/http://127.0.0.1:8080/2026/bridge/ortho.tif")
    assert isinstance(url, RemotePath) and str(url) == "http://127.0.0.1:8080/2026/bridge/ortho.tif"
    assert url.gdal == "/vsicurl/http://127.0.0.1:8080/2026/bridge/ortho.tif"
    assert (url.name, url.stem, url.suffix) == ("ortho.tif", "ortho", ".tif")
    assert str(url.parent) == "http://127.0.0.1:8080/2026/bridge"
    assert str(url.with_name("ortho.cracks.geojson")) == "http://127.0.0.1:8080/2026/bridge/ortho.cracks.geojson"
    key = as_source("s3://bucket/surveys/deck/a.tif")
    assert key.gdal == "/vsis3/bucket/surveys/deck/a.tif" and as_source("/vsis3/bucket/surveys/deck/a.tif") == key
    assert key.parts == ("s3://", "bucket", "surveys", "deck", "a.tif")
    assert is_remote("https://h/x.tif") and not is_remote("data/x.tif") and as_source("data/x.tif") == Path("data/x.tif")
    # The survey is the folder's name, as for a local raster; the second "bridge" (in sorted order) gets its parent in front.
    from survey_cracks.io.discover import name_rasters

    other = as_source("s3://bucket/2025/bridge/ortho.tif")
    named = name_rasters([(url.parent, url), (other.parent, other)], {}, {})
    assert {(r.survey, r.name) for r in named} == {("bridge", "ortho"), ("2025-bridge", "ortho")}


# ---------------------------------------------------------------------------------- http(s)


def test_http_raster_gives_the_local_outputs_and_is_redone_only_when_the_server_says_it_changed(
        tiny_model, cluster, web, tmp_path):
    base, root, log = web
    local = write_raster(tmp_path / "local" / "survey" / "ortho.tif", seed=3)
    (root / "survey").mkdir()
    shutil.copy(local, root / "survey" / "ortho.tif")
    url = f"{base}/survey/ortho.tif"

    local_run = night(local, tmp_path / "out_local", tiny_model, cluster)
    remote_run = night(url, tmp_path / "out", tiny_model, cluster)
    assert local_run.exit_code == 0, local_run.output
    assert remote_run.exit_code == 0, remote_run.output
    assert "input not found" not in remote_run.output  # the old answer to any URL
    assert "1 of 1 raster done (1 computed" in remote_run.stdout
    mine, theirs = tmp_path / "out" / "survey" / "ortho", tmp_path / "out_local" / "survey" / "ortho"
    assert np.array_equal(heatmap(mine), heatmap(theirs))
    assert polygons(mine) == polygons(theirs)
    assert json.loads((mine / "report.json").read_text())["source"] == url
    (record,) = load_records(tmp_path / "out")
    assert record.source == url and record.inputs.raster.etag and record.inputs.raster.size == local.stat().st_size
    assert any(line.startswith("GET /survey/ortho.tif bytes=") for line in log.read_text().splitlines()), \
        "GDAL reads the raster by ranges"

    log.write_text("")
    again = night(url, tmp_path / "out", tiny_model, cluster)
    assert again.exit_code == 0 and "(0 computed, 1 up to date, 0 failed)" in again.stdout, again.output
    assert "HEAD /survey/ortho.tif -" in log.read_text().splitlines(), "the server says whether it changed"
    assert load_records(tmp_path / "out")[0].inputs.raster.sample_sha256 is None, "no bytes of it are hashed"

    write_raster(root / "survey" / "ortho.tif", seed=8)  # re-exported on the server: new ETag
    fresh = night(root / "survey" / "ortho.tif", tmp_path / "out_local_new", tiny_model, cluster)
    changed = night(url, tmp_path / "out", tiny_model, cluster)
    assert fresh.exit_code == 0 and changed.exit_code == 0, changed.output
    assert "(1 computed, 0 up to date, 0 failed)" in changed.stdout
    assert summary(tmp_path / "out")["survey/ortho"]["reason"] == "raster changed"
    assert np.array_equal(heatmap(mine), heatmap(tmp_path / "out_local_new" / "survey" / "ortho")), \
        "the changed file is read, not what GDAL kept of the old one"


def test_unreachable_urls_fail_with_one_line_each_naming_them(tiny_model, web, tmp_path):
    base, _, _ = web
    missing, refused = f"{base}/survey/gone.tif", f"http://127.0.0.1:{free_port()}/survey/ortho.tif"
    result = night([missing, refused, f"{base}/survey/"], tmp_path / "out", tiny_model, cluster=None)
    assert result.exit_code == 1, result.output
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 3, result.stderr
    assert failed[0].startswith(f"FAILED {missing}: not found on the server — check the URL")
    assert failed[1].startswith(f"FAILED {refused}: cannot read it (cannot connect") and "credentials" in failed[1]
    assert failed[2] == f"FAILED {base}/survey: a web folder cannot be listed — give its rasters' URLs, or --from-list FILE"
    assert "Traceback" not in result.output and "input not found" not in result.output


# ---------------------------------------------------------------------------------- s3


def test_s3_prefix_is_listed_like_a_folder_of_surveys_with_annotations_beside_rasters(tiny_model, s3, cluster, tmp_path):
    files = tmp_path / "upload"
    write_raster(files / "bridge" / "deck.tif", seed=4)
    crack_annotation(files / "bridge" / "deck.cracks.geojson")
    write_raster(files / "tunnel" / "wall.tif", seed=5)
    write_raster(files / "tunnel" / "arch.tif", seed=6)
    from PIL import Image

    Image.fromarray(np.zeros((96, 96), np.uint8)).save(files / "tunnel" / "arch.mask.png")  # annotated: no cracks
    for path in sorted(p for p in files.rglob("*") if p.is_file()):
        s3.upload_file(str(path), BUCKET, f"surveys/{path.relative_to(files).as_posix()}")
    s3.put_object(Bucket=BUCKET, Key="elsewhere/other.tif", Body=b"not listed")

    out = tmp_path / "out"
    result = night(f"s3://{BUCKET}/surveys/", out, tiny_model, cluster)
    assert result.exit_code == 0, result.output
    assert "3 of 3 rasters done (3 computed, 0 up to date, 0 failed)" in result.stdout
    assert set(summary(out)) == {"bridge/deck", "tunnel/arch", "tunnel/wall"}
    deck = json.loads((out / "bridge" / "deck" / "report.json").read_text())
    assert deck["source"] == f"s3://{BUCKET}/surveys/bridge/deck.tif"
    assert deck["counts"]["annotation"] == "deck.cracks.geojson" and deck["metrics"]["object"]["annotated_objects"] == 1
    arch = json.loads((out / "tunnel" / "arch" / "report.json").read_text())
    assert arch["counts"]["annotation"] == "arch.mask.png" and arch["metrics"]["object"]["annotated_objects"] == 0
    assert "annotation" not in json.loads((out / "tunnel" / "wall" / "report.json").read_text())["counts"]
    evaluated = invoke("evaluate", out, "--threshold", "0.3", "-q")  # metrics again, from the annotations in S3
    assert evaluated.exit_code == 0 and "3 rasters re-evaluated" in evaluated.output, evaluated.output
    deck = json.loads((out / "bridge" / "deck" / "report.json").read_text())
    assert deck["counts"]["threshold"] == 0.3 and deck["metrics"]["object"]["annotated_objects"] == 1
    local = night(files / "bridge" / "deck.tif", tmp_path / "out_local", tiny_model, cluster)
    assert local.exit_code == 0
    assert np.array_equal(heatmap(out / "bridge" / "deck"), heatmap(tmp_path / "out_local" / "bridge" / "deck"))

    # OUT's outputs are at 0.3 now (evaluate records it in the manifest): a run at 0.3 has nothing to do
    again = night(f"s3://{BUCKET}/surveys", out, tiny_model, cluster, "--threshold", "0.3")
    assert "(0 computed, 3 up to date, 0 failed)" in again.stdout, again.output
    crack_annotation(files / "bridge" / "deck.cracks.geojson", width=0.05)  # redrawn by the inspector
    s3.upload_file(str(files / "bridge" / "deck.cracks.geojson"), BUCKET, "surveys/bridge/deck.cracks.geojson")
    edited = night(f"s3://{BUCKET}/surveys", out, tiny_model, cluster, "--threshold", "0.3")
    assert "(1 computed, 2 up to date, 0 failed)" in edited.stdout, edited.output
    assert summary(out)["bridge/deck"]["reason"] == "annotation changed"


def test_s3_object_that_is_missing_fails_naming_it(tiny_model, s3, tmp_path):
    missing = f"s3://{BUCKET}/surveys/nowhere/ortho.tif"
    result = night(missing, tmp_path / "out", tiny_model, cluster=None)
    assert result.exit_code == 1
    assert f"FAILED {missing}: not found on the server" in result.stderr and "Traceback" not in result.output


# ---------------------------------------------------------------------------------- --from-list


def test_from_list_runs_local_and_remote_rasters_and_names_the_missing_one(tiny_model, cluster, web, tmp_path):
    base, root, _ = web
    local = write_raster(tmp_path / "site" / "a.tif", seed=1)
    write_raster(root / "survey" / "ortho.tif", seed=2)
    missing = f"{base}/survey/missing.tif"
    listing = tmp_path / "rasters.txt"
    listing.write_text(f"# tonight\n{local}\n\n  {base}/survey/ortho.tif\n{missing}\n")

    out = tmp_path / "out"
    result = night([], out, tiny_model, cluster, "--from-list", listing)
    assert result.exit_code == 1, result.output
    assert "2 of 3 rasters done (2 computed, 0 up to date, 1 failed)" in result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("FAILED")]
    assert failed == [f"FAILED {missing}: not found on the server — check the URL, the network and the credentials "
                      "(README: Remote inputs)"]
    assert {k for k, r in summary(out).items() if r["status"] == "ok"} == {"site/a", "survey/ortho"}


def test_run_needs_inputs_or_a_list(tiny_model, tmp_path):
    result = night([], tmp_path / "out", tiny_model, cluster=None)
    assert result.exit_code == 2 and "--from-list" in result.output


