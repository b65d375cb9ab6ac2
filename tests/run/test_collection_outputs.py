"""What is done with a collection after its run: `evaluate OUT`, `compare`, the reports and the catalogue.

Tiny procedural photos (96 x 128 px) with annotations, the shipped model, the CLI on one
LocalCluster started here: each check is the CLI's, on what it leaves in OUT.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.deliver.collection import COLLECTION, HEATMAPS, PHOTOS_CSV, read_journal
from survey_cracks.run.manifest import load_records
from survey_cracks.synthetic import render_scene
from test_collection import add_gps, write_photos

# photos.csv's columns a re-scoring must give as a fresh run does (timings aside)
FIGURES = ["status", "polygons", "centrelines", "crack_length", "max_width", "threshold", "cell_f1", "object_f1",
           "pixel_0px_f1", "pixel_2px_f1", "centreline_quality", "score", "heatmap"]


CLUSTER_THREADS = 2  # the cluster fixture's (conftest.py): two photos at once


def invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result.exit_code, result.output


def write_survey(folder: Path, count: int = 3, seed: int = 0, size: tuple[int, int] = (96, 128), prefix: str = "frame"
                 ) -> list[Path]:
    """``count`` photos in ``folder``; the first annotated by a mask, the second by polygons with a `label`."""
    paths = [path.rename(path.with_name(path.name.replace("frame", prefix)))
             for path in write_photos(folder, count, size, seed)]
    for i, path in enumerate(paths[:2]):
        _, mask = render_scene(*size, seed=seed + i, n_cracks=2)  # the photo's own crack mask: its seed's
        if i == 0:
            cv2.imwrite(str(folder / f"{path.stem}.mask.png"), mask)
        else:
            write_vector_annotation(folder / f"{path.stem}.cracks.geojson", mask)
    return paths


def write_vector_annotation(path: Path, mask: np.ndarray, ignore: shapely.Geometry | None = None) -> None:
    """The mask's cracks as polygons in pixel coordinates (x = column, y = -row), and an `ignore` area if given."""
    from rasterio.features import shapes

    flip = lambda geom: shapely.affinity.scale(geom, 1, -1, origin=(0, 0))  # noqa: E731
    cracks = [flip(shapely.geometry.shape(g)) for g, v in shapes((mask > 0).astype(np.uint8)) if v == 1]
    frame = gpd.GeoDataFrame({"label": ["crack"] * len(cracks)}, geometry=cracks)
    if ignore is not None:
        frame = pd.concat([frame, gpd.GeoDataFrame({"label": ["ignore"]}, geometry=[flip(ignore)])], ignore_index=True)
    path.write_text(frame.to_json())


def run(survey: Path, out: Path, cluster, *options: object) -> str:
    code, output = invoke("run", survey, "--out", out, "--scheduler", cluster.scheduler_address, "-q", *options)
    assert code == 0, output
    return output


def photos(out: Path, survey: str = "road") -> pd.DataFrame:
    return pd.read_csv(out / survey / COLLECTION / PHOTOS_CSV).set_index("photo")


def test_evaluate_rescores_a_collection_as_a_fresh_run_at_that_threshold_would(tmp_path, cluster):
    survey = tmp_path / "road"
    paths = write_survey(survey)
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    run(survey, out, cluster)
    before = photos(out)
    assert before.loc["frame_0000", "cell_f1"] == before.loc["frame_0000", "cell_f1"]  # annotated: scored
    # the annotation now beside the photo is the one scored: half of frame_0001 marked `ignore` after the run
    _, mask = render_scene(96, 128, seed=1, n_cracks=2)
    write_vector_annotation(survey / "frame_0001.cracks.geojson", mask, ignore=shapely.box(0, 0, 64, 96))
    code, output = invoke("evaluate", out, "--threshold", 0.6, "-q")
    assert code == 0, output
    assert "3 photos in 1 collection re-evaluated" in output, output
    run(survey, fresh, cluster, "--threshold", 0.6)
    ours, theirs = photos(out), photos(fresh)
    pd.testing.assert_frame_equal(ours[FIGURES], theirs[FIGURES])
    assert (ours["threshold"] == 0.6).all() and ours.loc["frame_0001", "pixel_2px_f1"] != before.loc["frame_0001", "pixel_2px_f1"]
    for layer in ("cracks", "centrelines", "photos"):
        a, b = (gpd.read_file(o / "road" / COLLECTION / "cracks.gpkg", layer=layer) for o in (out, fresh))
        assert len(a) == len(b) and sorted(a["photo"]) == sorted(b["photo"]), layer
    # the collection's totals where per-raster totals go: its report.json, the survey's, summary.csv
    for o in (out, fresh):
        report = json.loads((o / "road" / COLLECTION / "report.json").read_text())
        assert report["counts"]["threshold"] == 0.6 and report["counts"]["photos"] == 3
    mine, fresh_report = (json.loads((o / "road" / "report.json").read_text()) for o in (out, fresh))
    assert mine["metrics"] == fresh_report["metrics"]
    summary = pd.read_csv(out / "summary.csv").set_index("raster")
    assert summary.loc[COLLECTION, "threshold"] == 0.6
    assert not (out / "road" / COLLECTION / ".evaluate").exists()
    # the manifest records the threshold: a run at it has nothing to do, as after `run --threshold 0.6`
    assert "3 photos up to date" in invoke("run", survey, "--out", out, "--scheduler", cluster.scheduler_address,
                                           "--threshold", 0.6)[1]
    assert len(read_journal(out / "road" / COLLECTION)) == len(paths)


def test_a_collection_records_its_folder_as_given_and_counts_one_photo_in_the_singular(tmp_path, monkeypatch):
    """report.json's source is the survey folder as given to `run` (here relative), as a raster's report records its
    own path; the manifest keeps it absolute (later runs name the survey by it)."""
    write_survey(tmp_path / "road", 1)
    monkeypatch.chdir(tmp_path)  # the run's own cluster, started here: the module's has another working folder
    code, output = invoke("run", "road", "--out", "out", "--workers", 1)
    assert code == 0, output
    assert json.loads((tmp_path / "out" / "road" / COLLECTION / "report.json").read_text())["source"] == "road"
    record = load_records(tmp_path / "out")[0]
    assert record.source == record.survey_source == str((tmp_path / "road").resolve())
    assert "road: 1 photo as one collection, 1 to compute" in output and "1 photos" not in output, output
    assert "(1 photo in 1 collection; 1 computed" in output and "summary.csv covers 1 photo in 1 collection" in output, output


def test_relative_photo_and_out_paths_reach_the_workers_of_a_cluster_started_elsewhere(tmp_path, cluster, monkeypatch):
    """An external --scheduler's workers have their own working folder (this module's cluster was started in
    another one): photos given by a relative path are read, and heatmaps written, where `run` was started."""
    write_survey(tmp_path / "road", 2)
    monkeypatch.chdir(tmp_path)
    run(Path("road"), Path("out"), cluster)
    table = photos(tmp_path / "out")
    assert len(table) == 2 and (table["status"] == "ok").all(), table[["status", "error"]]
    assert sorted(p.name for p in (tmp_path / "out" / "road" / COLLECTION / HEATMAPS).iterdir()) == sorted(
        Path(h).name for h in table["heatmap"])
    assert json.loads((tmp_path / "out" / "road" / COLLECTION / "report.json").read_text())["source"] == "road"


def test_evaluate_says_in_one_line_that_a_collection_without_heatmaps_cannot_be_rescored(tmp_path, cluster):
    survey = tmp_path / "road"
    write_survey(survey, 2)
    out = tmp_path / "out"
    run(survey, out, cluster, "--no-heatmaps")
    assert not list((out / "road" / COLLECTION / HEATMAPS).iterdir())
    before = (out / "road" / COLLECTION / PHOTOS_CSV).read_text()
    code, output = invoke("evaluate", out, "--threshold", 0.6, "-q")
    assert code == 0, output
    lines = [line for line in output.splitlines() if "--no-heatmaps" in line]
    assert len(lines) == 1 and "re-scoring needs" in lines[0] and "--force" in lines[0], output
    assert (out / "road" / COLLECTION / PHOTOS_CSV).read_text() == before


def test_compare_pairs_two_collections_photo_by_photo(tmp_path, cluster):
    survey = tmp_path / "road"
    write_survey(survey, 3)
    old, new = tmp_path / "old", tmp_path / "new"
    run(survey, old, cluster)
    (survey / "frame_0002.jpg").unlink()  # gone at the later date; frame_0003 new there
    write_survey(tmp_path / "more", 4)[3].rename(survey / "frame_0003.jpg")
    run(survey, new, cluster, "--threshold", 0.6)
    code, output = invoke("compare", old, new, "-q")
    assert code == 0, output
    assert "road: 2 photos at both dates" in output and "1 new, 1 gone" in output, output
    table = pd.read_csv(new / "road" / "photo_changes.csv").set_index("photo")
    assert table["status"].to_dict() == {"frame_0000": "both", "frame_0001": "both", "frame_0002": "gone",
                                         "frame_0003": "new"}
    a, b = photos(old), photos(new)
    for name in ("frame_0000", "frame_0001"):
        row = table.loc[name]
        assert (row.old_polygons, row.new_polygons) == (a.loc[name, "polygons"], b.loc[name, "polygons"])
        assert row.polygons_change == b.loc[name, "polygons"] - a.loc[name, "polygons"]
        assert row.length_change == pytest.approx(b.loc[name, "crack_length"] - a.loc[name, "crack_length"], abs=1e-4)
        assert row.new_pixel_2px_f1 == pytest.approx(b.loc[name, "pixel_2px_f1"])  # both annotated: F1 at both dates
    assert np.isnan(table.loc["frame_0002", "new_polygons"]) and np.isnan(table.loc["frame_0003", "old_polygons"])
    # report.html: the collection once, its photos listed, the change said
    page = (new / "report.html").read_text()
    assert page.count("photo collection") == 1 and "frame_0003" in page and "1 new, 1 gone" in page
    assert "data:image" not in page.split("photo collection")[1]  # no picture per photo


def test_the_catalogue_has_one_item_for_a_collection_with_its_files(tmp_path, cluster):
    from survey_cracks.deliver.stac import validate_catalog

    survey = tmp_path / "road"
    paths = write_survey(survey, 3)
    add_gps(paths[2], (52.0, 30.0, 36.0), (1.0, 15.0, 0.0))
    out = tmp_path / "out"
    output = run(survey, out, cluster)
    assert validate_catalog(out / "catalog.json") == ["https://stac-extensions.github.io/processing/v1.2.0/schema.json"]
    items = list(out.rglob("item.json"))
    assert items == [out / "road" / COLLECTION / "item.json"]
    item = json.loads(items[0].read_text())
    assert set(item["assets"]) == {"cracks", "photos", "heatmaps", "report"}
    for asset in item["assets"].values():
        assert (items[0].parent / asset["href"]).exists(), asset["href"]
    assert item["properties"]["survey_cracks:photos"] == 3
    assert item["geometry"]["type"] == "Point" and item["geometry"]["coordinates"] == pytest.approx([-1.25, 52.51])
    # file count per photo: a heatmap each, and a handful for the whole collection
    files = [p for p in (out / "road" / COLLECTION).rglob("*") if p.is_file()]
    assert len(files) <= 3 + 6, files
    assert "road: 3 photos in 1 collection" in invoke("run", survey, "--out", out, "--scheduler",
                                                      cluster.scheduler_address)[1]


def test_compare_a_collection_with_rasters_of_other_photos_is_one_clear_error(tmp_path, cluster):
    survey, elsewhere = tmp_path / "road", tmp_path / "other" / "road"
    write_survey(survey, 2)
    write_survey(elsewhere, 2, prefix="scan")
    photos_out, same_out, other_out = tmp_path / "collection", tmp_path / "same", tmp_path / "per_raster"
    run(survey, photos_out, cluster)
    run(survey, same_out, cluster, "--layout", "per-raster")
    run(elsewhere, other_out, cluster, "--layout", "per-raster")
    # the same photos run one by one pair with the collection's by name
    code, output = invoke("compare", photos_out, same_out, "-q")
    assert code == 0 and "road: 2 photos at both dates" in output, output
    code, output = invoke("compare", photos_out, other_out, "-q")
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no photo in common" in lines[0], output
    assert "--layout" in lines[0] and str(photos_out) in lines[0], output


@pytest.mark.parametrize("text, says", [
    ("photo,lon,lat\nframe_0000.jpg,4.9,95\n", "row 2: lon 4.9, lat 95 is not a position"),
    ("photo,lon,lat\nframe_0000.jpg,4.9,52\nframe_0001,east,52\n", "row 3 (frame_0001): lon 'east'"),
    ("photo,lon,lat\n,4.9,52\n", "row 2: no photo named"),
    ("name,x,y\nframe_0000.jpg,4.9,52\n", "row 1: the header has name, x, y"),
    ("photo,lon,lat\nframe_0000,4.9,52\nframe_0000,4.9,52\n", "row 3: frame_0000 is given a position twice"),
])
def test_a_bad_frame_positions_csv_is_one_line_naming_the_file_and_the_row(tmp_path, text, says):
    from survey_cracks.errors import PositionsError
    from survey_cracks.run.collection import read_frame_positions

    path = tmp_path / "frames.csv"
    path.write_text(text)
    with pytest.raises(PositionsError) as error:
        read_frame_positions(path)
    assert error.value.message.startswith(f"{path}: {says}") and "\n" not in error.value.message


def test_frame_positions_place_photos_and_win_over_exif(tmp_path, cluster):
    survey = tmp_path / "road"
    paths = write_survey(survey, 3)
    add_gps(paths[0], (52.0, 30.0, 36.0), (1.0, 15.0, 0.0))  # EXIF says -1.25, 52.51; the CSV says otherwise
    add_gps(paths[2], (52.0, 30.0, 36.0), (1.0, 15.0, 0.0))  # EXIF only
    frames = tmp_path / "frames.csv"
    frames.write_text("photo,lon,lat,time\nframe_0000.jpg,4.9,52.37,2026-12-01T10:00:00Z\nframe_0001,4.901,52.371,\n"
                      "not_in_this_run.jpg,0,0,\n")
    out = tmp_path / "out"
    run(survey, out, cluster, "--frame-positions", frames)
    layer = gpd.read_file(out / "road" / COLLECTION / "cracks.gpkg", layer="photos").set_index("photo")
    assert layer.crs.to_epsg() == 4326
    assert (layer.geometry["frame_0000"].x, layer.geometry["frame_0000"].y) == pytest.approx((4.9, 52.37))
    assert (layer.geometry["frame_0001"].x, layer.geometry["frame_0001"].y) == pytest.approx((4.901, 52.371))
    assert (layer.geometry["frame_0002"].x, layer.geometry["frame_0002"].y) == pytest.approx((-1.25, 52.51))
    table = photos(out)
    assert table.loc["frame_0000", "time"] == "2026-12-01T10:00:00Z"
    assert table["position"].to_dict() == {"frame_0000": "frame positions", "frame_0001": "frame positions",
                                           "frame_0002": "exif"}
    # they hold for a later run without the CSV, and through `evaluate OUT`
    run(survey, out, cluster, "--force")
    assert invoke("evaluate", out, "--threshold", 0.6, "-q")[0] == 0
    assert photos(out)["position"].to_dict() == table["position"].to_dict()
    assert photos(out).loc["frame_0001", "longitude"] == 4.901
    # a CSV that names no photo of the run: one line, the file, exit 2
    nothing = tmp_path / "nothing.csv"
    nothing.write_text("photo,lon,lat\nelsewhere.jpg,4.9,52\n")
    code, output = invoke("run", survey, "--out", out, "--scheduler", cluster.scheduler_address, "-q",
                          "--frame-positions", nothing)
    assert code == 2 and output.strip().splitlines() == [output.strip()] and f"{nothing}: names no photo" in output, output


def test_a_raster_named_collection_does_not_take_the_collections_folder(tmp_path):
    from survey_cracks.io.discover import SurveyRaster
    from survey_cracks.run.collection import collection_photos

    photo, raster = write_survey(tmp_path, 1)[0], tmp_path / "collection.tif"
    raster.write_bytes(b"")
    items = [SurveyRaster("road", photo, photo.stem, tmp_path), SurveyRaster("road", raster, "collection", tmp_path)]
    photos_of, rasters = collection_photos(items, COLLECTION)
    assert [p.name for p in photos_of["road"]] == [photo.stem] and [r.name for r in rasters] == ["collection_tif"]
    assert collection_photos(items, "per-raster")[1][1].name == "collection"  # no collection folder there


def test_heatmaps_of_photos_gone_from_the_folder_are_removed(tmp_path):
    from survey_cracks.run.collection import remove_stale_heatmaps

    (tmp_path / HEATMAPS).mkdir()
    for name in ("kept", "gone", "v1.2"):
        (tmp_path / HEATMAPS / f"{name}.png").write_bytes(b"png")
    remove_stale_heatmaps(tmp_path, {"kept", "v1.2"})
    assert sorted(p.name for p in (tmp_path / HEATMAPS).iterdir()) == ["kept.png", "v1.2.png"]


def test_photo_tasks_restore_the_switch_interval_after_the_last_one_ends():
    """The short GIL switch interval is process-wide: held while any photo task runs, given back after the last."""
    import sys

    from survey_cracks.run.collection import PHOTO_SWITCH_INTERVAL_S, photo_switch_interval

    before = sys.getswitchinterval()
    with photo_switch_interval():
        with photo_switch_interval():  # a second, concurrent task
            assert sys.getswitchinterval() == pytest.approx(PHOTO_SWITCH_INTERVAL_S)
        assert sys.getswitchinterval() == pytest.approx(PHOTO_SWITCH_INTERVAL_S)  # the first still runs
    assert sys.getswitchinterval() == pytest.approx(before)
