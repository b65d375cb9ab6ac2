"""`survey-cracks suggest`: windows to annotate next, from a run's heatmaps alone."""

from __future__ import annotations

import json
import sqlite3

import geopandas as gpd
import numpy as np
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.deliver.suggest import score_window
from tests.conftest import write_geotiff


def _run_out(tmp_path):
    """A finished run of one 768 x 512 raster: a clear crack, an ambiguous window, a straight joint."""
    source = write_geotiff(tmp_path / "wall.tif", np.full((512, 768, 3), 140, np.uint8))
    heat = np.full((512, 768), 0.02, np.float32)
    rr, cc = np.mgrid[0:256, 0:256]
    heat[40:220, 60 + (np.arange(180) // 6)] = 0.97  # a clear, wandering crack in window (0, 0)
    heat[256:512, 256:512] = np.where((rr + cc) % 3 == 0, 0.48, 0.3)  # window (1, 1): the model cannot decide
    heat[300:310, 520:768] = 0.9  # window (1, 2): a long straight band
    folder = tmp_path / "out" / "site" / "wall"
    folder.mkdir(parents=True)
    write_geotiff(folder / "heatmap.tif", heat[..., None], nodata=-1)
    (folder / "report.json").write_text(json.dumps({"survey": "site", "raster": "wall", "source": str(source),
                                                    "status": "ok", "counts": {"threshold": 0.5}}))
    return tmp_path / "out"


def test_suggest_ranks_the_ambiguous_window_first_and_writes_a_styled_layer_and_a_page(tmp_path):
    out = _run_out(tmp_path)
    result = CliRunner().invoke(cli, ["suggest", str(out), "--n", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    layer = gpd.read_file(out / "site" / "wall" / "suggest.gpkg", layer="suggestions").sort_values("rank")
    first = layer.iloc[0]
    assert (first["col"], first["row"], first["reason_kind"]) == (256, 256, "uncertain")
    assert "straight_line" in set(layer["reason_kind"])
    assert layer["score"].is_monotonic_decreasing and len(layer) == 3
    with sqlite3.connect(out / "site" / "wall" / "suggest.gpkg") as db:
        qml = db.execute("SELECT styleQML FROM layer_styles WHERE f_table_name = 'suggestions'").fetchone()[0]
    assert 'attr="reason_kind"' in qml
    page = (out / "suggest.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and "#1" in page and "not_crack" in page


def test_a_straight_line_scores_as_one_and_a_clean_window_as_nothing():
    prob = np.full((256, 256), 0.01, np.float32)
    assert score_window(prob, 0.5, 256).score == 0
    prob[100:104, :] = 0.95
    measures = score_window(prob, 0.5, 256)
    assert measures.reason_kind == "straight_line" and measures.straight_line > 0.6


def test_a_photo_collection_is_named_as_not_ranked_rather_than_passed_over_in_silence(tmp_path):
    out = _run_out(tmp_path)
    collection = out / "road" / "collection"
    collection.mkdir(parents=True)
    (collection / "photos.csv").write_text("photo\n")
    result = CliRunner().invoke(cli, ["suggest", str(out), "--n", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "not ranked: the photo collection road" in result.output
    only_photos = tmp_path / "photos_only"
    (only_photos / "road" / "collection").mkdir(parents=True)
    (only_photos / "road" / "collection" / "photos.csv").write_text("photo\n")
    result = CliRunner().invoke(cli, ["suggest", str(only_photos), "--quiet"])
    assert result.exit_code != 0 and "only the photo collection road" in result.output
    assert "--layout per-raster" in result.output
