"""The asset-management deliverables end to end, `evaluate OUT` against a fresh run, and change matching.

A tiny georeferenced survey (an annotated procedural orthomosaic, EPSG:32631) is run
with the tiny mask model of conftest and an asset file in another CRS; the outputs
are reopened. Change matching is tested on hand-built crack pairs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import LineString, box

from survey_cracks.cli.main import cli
from survey_cracks.deliver.compare import match_cracks
from survey_cracks.deliver.condition import ChangeRules
from survey_cracks.deliver.deliverables import build_products
from survey_cracks.deliver.outcomes import RasterOutcome
from survey_cracks.deliver.report_html import write_report_html
from survey_cracks.deliver.run_record import read_run
from survey_cracks.deliver.stac import validate_catalog
from survey_cracks.synthetic import write_orthomosaic

GSD = 0.005


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def survey(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("assets_data") / "data" / "deck"
    root.mkdir(parents=True)
    tif = root / "deck.tif"
    write_orthomosaic(tif, 256, 256, seed=3, n_cracks=3, annotation_path=root / "deck.cracks.geojson",
                      annotation_crs="EPSG:4326", block=256, compress="DEFLATE", gsd=GSD)
    with rasterio.open(tif) as src:
        left, bottom, right, top = src.bounds
    # two panels splitting the deck, stored in lon/lat: reprojected to the raster's CRS
    panels = gpd.GeoDataFrame({"asset_id": ["west", "east"], "material": ["concrete", "pavement"]},
                              geometry=[box(left, bottom, (left + right) / 2, top), box((left + right) / 2, bottom, right, top)],
                              crs="EPSG:32631").to_crs("EPSG:4326")
    assets = root.parent.parent / "panels.geojson"
    panels.to_file(assets)
    return {"root": root.parent, "tif": tif, "assets": assets}


@pytest.fixture(scope="module")
def run_out(survey, tiny_mask_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("assets_out") / "night"
    result = invoke("run", survey["root"], "--out", out, "--model", tiny_mask_model, "--workers", "1", "--assets",
                    survey["assets"], "-q")
    assert result.exit_code == 0, result.output
    return out


def test_run_with_assets_writes_styled_survey_gpkg_csv_report_and_valid_stac(run_out):
    gpkg = run_out / "deck" / "deck.gpkg"
    layers = [name for name, _ in pyogrio.list_layers(gpkg)]
    assert layers[:3] == ["cracks", "centrelines", "assets"] and "layer_styles" in layers
    with sqlite3.connect(gpkg) as db:
        styled = {row[0]: row[1] for row in db.execute("SELECT f_table_name, useAsDefault FROM layer_styles")}
    assert styled == {"cracks": 1, "centrelines": 1, "assets": 1}
    assets = gpd.read_file(gpkg, layer="assets")
    assert assets.crs.to_epsg() == 32631 and assets["asset_id"].tolist() == ["west", "east"]
    # the two panels halve the 256 x 256 px deck at 5 mm: 0.64 m x 1.28 m each
    assert assets.geometry.area.to_numpy() == pytest.approx([0.8192, 0.8192], rel=1e-6)
    lines = gpd.read_file(gpkg, layer="centrelines")
    assert set(lines["asset_id"].dropna()) <= {"west", "east"}
    assert set(lines["crack_type"].dropna()) <= {"longitudinal", "transverse", "diagonal", "network"}
    # asset lengths add up to the centrelines inside the panels (all of them: the panels tile the raster)
    assert assets["length"].sum() == pytest.approx(lines["length"].sum(), rel=1e-3)
    table = pd.read_csv(run_out / "deck" / "assets.csv")
    assert table["asset_id"].tolist() == ["west", "east"] and "condition" in table.columns
    # 5 mm GSD: widths of a few mm cannot be put in AASHTO's 0.3 / 1.3 mm classes unless they are wide
    assert all(c.startswith(("CS3", "unresolved", "CS1")) for c in table.loc[table["material"] == "concrete", "width_class"])
    page = (run_out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 2 and "http://" not in page and "https://" not in page
    assert "west" in page and "precision-recall" in page
    assert validate_catalog(run_out / "catalog.json") == ["https://stac-extensions.github.io/processing/v1.2.0/schema.json"]
    item = json.loads((run_out / "deck" / "deck" / "item.json").read_text())
    assert item["properties"]["survey_cracks:model_sha256"] and set(item["assets"]) == {"heatmap", "cracks", "report", "survey"}
    assert item["properties"]["processing:software"]["survey_cracks"]
    for asset in item["assets"].values():  # relative to item.json, where the files are
        assert (run_out / "deck" / "deck" / asset["href"]).is_file(), asset["href"]


class _Page(HTMLParser):
    """The tags of a page and the text inside each kind of tag."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.text: dict[str, list[str]] = {}

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in {"img", "meta"}:  # void elements: never closed
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open.pop() == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"

    def handle_data(self, data):
        if self.open:
            self.text.setdefault(self.open[-1], []).append(data)


def test_report_html_escapes_names_notes_and_errors(run_out, tmp_path):
    # names come from folder and file names, notes and errors from user files: markup in them is shown, not obeyed
    out = tmp_path / "out"
    shutil.copytree(run_out, out)
    record = read_run(out)
    name = "deck <b>bold</b> & co"
    record.outcomes.append(RasterOutcome(survey="deck", raster="broken", source="", status="failed", error=f"{name} unreadable"))
    [product] = build_products(record)
    product.survey, product.asset_source, product.notes = name, f"{name}.gpkg", [f"note on {name}"]
    product.assets = [dataclasses.replace(a, asset_id=f"{a.asset_id} {name}") for a in product.assets]
    for raster in product.rasters:
        raster.outcome = dataclasses.replace(raster.outcome, raster=name)
    page = write_report_html(record, [product]).read_text()
    assert "<b>" not in page and "deck &lt;b&gt;bold&lt;/b&gt; &amp; co" in page
    parsed = _Page()
    parsed.feed(page)
    parsed.close()
    assert "b" not in parsed.tags and not parsed.open, parsed.open  # no stray tag, every tag closed
    assert parsed.text["h2"] == [f"Survey {name}"] and parsed.text["h3"] == [name]
    assert f"FAILED {name} unreadable" in parsed.text["p"] and f"note on {name}" in parsed.text["p"]
    assert f"west {name}" in parsed.text["td"] and f"east {name}" in parsed.text["td"]


def test_bad_asset_file_fails_before_processing_with_one_clear_line(survey, tiny_mask_model, tmp_path):
    bad = tmp_path / "no_id.geojson"
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[box(0, 0, 1, 1)], crs="EPSG:32631").to_file(bad)
    result = invoke("run", survey["root"], "--out", tmp_path / "out", "--model", tiny_mask_model, "--assets", bad, "-q")
    assert result.exit_code == 2
    assert "no_id.geojson: no id column" in result.output and "add a column 'asset_id'" in result.output
    assert not (tmp_path / "out" / "deck").exists()


def _strip(report: dict) -> dict:
    report = dict(report)
    report.pop("seconds", None)
    return report


def _summary(out: Path) -> list[dict]:
    with open(out / "summary.csv", newline="") as fh:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(fh)]


def test_evaluate_at_a_new_threshold_equals_a_fresh_run_at_it(run_out, survey, tiny_mask_model, tmp_path):
    evaluated = tmp_path / "evaluated"
    shutil.copytree(run_out, evaluated)
    first = json.loads((run_out / "run.json").read_text())["model"]["threshold"]
    threshold = round(min(0.95, first + 0.2), 2)
    result = invoke("evaluate", evaluated, "--threshold", threshold, "-q")
    assert result.exit_code == 0, result.output
    fresh = tmp_path / "fresh"
    result = invoke("run", survey["root"], "--out", fresh, "--model", tiny_mask_model, "--workers", "1", "--assets",
                    survey["assets"], "--threshold", threshold, "-q")
    assert result.exit_code == 0, result.output
    raster = Path("deck") / "deck"
    ours, theirs = (json.loads((o / raster / "report.json").read_text()) for o in (evaluated, fresh))
    assert _strip(ours) == _strip(theirs)
    assert ours["counts"]["threshold"] == threshold and ours["metrics"]
    assert json.loads((evaluated / "deck" / "report.json").read_text()) == json.loads((fresh / "deck" / "report.json").read_text())
    assert _summary(evaluated) == _summary(fresh)
    for layer in ("cracks", "centrelines"):
        a = gpd.read_file(evaluated / raster / "cracks.gpkg", layer=layer)
        b = gpd.read_file(fresh / raster / "cracks.gpkg", layer=layer)
        pd.testing.assert_frame_equal(a.drop(columns="geometry"), b.drop(columns="geometry"))
        assert a.geometry.geom_equals_exact(b.geometry, tolerance=0).all()
    pd.testing.assert_frame_equal(pd.read_csv(evaluated / "deck" / "assets.csv"), pd.read_csv(fresh / "deck" / "assets.csv"))
    ran = json.loads((fresh / "run.json").read_text())
    again = json.loads((evaluated / "run.json").read_text())
    assert again["model"]["threshold"] == ran["model"]["threshold"] == threshold
    assert again["config"] == ran["config"]


# ---------------------------------------------------------------------------------- change matching


def crack(x0, y0, x1, y1, width=0.002):
    return LineString([(x0, y0), (x1, y1)]).buffer(width / 2, cap_style="flat")


def test_change_matching_on_hand_built_pairs():
    px = 0.001  # 1 mm GSD: matched within 6 mm, grown when > 10 mm and > 10 % longer or > 2 mm wider
    old = gpd.GeoDataFrame({
        "id": [1, 2, 3, 4], "length": [1.0, 0.5, 0.3, 0.4], "max_width": [0.002, 0.002, 0.002, 0.002]},
        geometry=[crack(0, 0, 1, 0), crack(0, 1, 0.5, 1), crack(2, 2, 2, 2.3), crack(3, 0, 3, 0.4)], crs="EPSG:32631")
    new = gpd.GeoDataFrame({
        "id": [1, 2, 3, 4], "length": [1.003, 0.8, 0.2, 0.4], "max_width": [0.002, 0.002, 0.002, 0.006]},
        geometry=[crack(0.002, 0.001, 1.001, 0.001),   # crack 1 seen again 2 mm off, 3 mm longer: matched
                  crack(0, 1, 0.8, 1),                  # crack 2 grew from 0.5 to 0.8 m: grown (length)
                  crack(5, 5, 5, 5.2),                  # nothing there before: new
                  crack(3, 0, 3, 0.4, width=0.006)],    # crack 4, 4 mm wider: grown (width)
        crs="EPSG:32631")                             # crack 3 (2, 2) is not seen again: gone
    changes = match_cracks(old, new, px, ChangeRules(), "m")
    by_old = {row.old_ids: row for row in changes.itertuples()}
    assert by_old["1"].status == "matched" and by_old["1"].new_ids == "1"
    assert by_old["2"].status == "grown" and by_old["2"].length_change == pytest.approx(0.3)
    assert by_old["3"].status == "gone" and by_old["3"].new_ids == ""
    assert by_old["4"].status == "grown" and by_old["4"].width_change == pytest.approx(0.004)
    assert by_old[""].status == "new" and by_old[""].new_ids == "3"
    assert sorted(changes["status"]) == ["gone", "grown", "grown", "matched", "new"]


def test_a_crack_seen_as_two_pieces_is_one_record():
    old = gpd.GeoDataFrame({"id": [1], "length": [1.0], "max_width": [0.002]}, geometry=[crack(0, 0, 1, 0)], crs="EPSG:32631")
    new = gpd.GeoDataFrame({"id": [7, 8], "length": [0.49, 0.49], "max_width": [0.002, 0.002]},
                           geometry=[crack(0, 0, 0.49, 0), crack(0.51, 0, 1, 0)], crs="EPSG:32631")
    changes = match_cracks(old, new, 0.001, ChangeRules(), "m")
    assert len(changes) == 1 and changes["status"].iloc[0] == "matched" and changes["new_ids"].iloc[0] == "7;8"


def test_compare_two_runs_writes_the_changes_layer_and_tables(run_out, tmp_path):
    # the same run twice: every crack matched, nothing new, grown or gone
    new = tmp_path / "new"
    shutil.copytree(run_out, new)
    result = invoke("compare", run_out, new)
    assert result.exit_code == 0, result.output
    gpkg = new / "deck" / "deck.gpkg"
    assert "changes" in [name for name, _ in pyogrio.list_layers(gpkg)]
    changes = gpd.read_file(gpkg, layer="changes")
    assert len(changes) and set(changes["status"]) == {"matched"}
    with sqlite3.connect(gpkg) as db:
        assert ("changes",) in db.execute("SELECT f_table_name FROM layer_styles").fetchall()
    table = pd.read_csv(new / "deck" / "asset_changes.csv")
    assert table["asset_id"].tolist() == ["west", "east"] and (table["length_change"] == 0).all()
    assert "Change since the earlier survey" in (new / "report.html").read_text()
