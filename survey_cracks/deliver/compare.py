"""`survey-cracks compare OLD_OUT NEW_OUT`: what changed on a site between two survey dates.

Surveys of the two runs are paired by name and put in the later run's CRS (the
rasters need not share a grid). A *crack* is a crack polygon (a connected region).
Two cracks of different dates are the same crack when, each grown by
``match_distance_px`` (pixels of the coarser GSD), their grown shapes overlap by at
least ``min_overlap`` of the smaller one: for thin cracks, about that share of the
shorter one lies within the distance of the other. Cracks linked by that relation,
directly or through others (one crack seen as two pieces at the other date), form
one record:

* **new** — only at the later date; **gone** — only at the earlier date (no longer seen);
* **grown** — its length (centreline length, summed over the pieces) rose by more than
  ``length_growth_px`` pixels *and* more than ``length_growth_fraction`` of the old
  length, or its maximum width by more than ``width_growth_px`` pixels;
* **matched** — otherwise (the same crack, no measurable growth).

Records shorter than ``min_length_px`` at both dates are left out: specks a detector
finds at one date and not the next are not change.

Per asset (``--assets``, else the run's asset file, else the later run's raster
footprints): length, density and condition at both dates and their change.

Photos have no common ground between two dates (each is in its own pixel coordinates), so
a survey whose photos are a collection (`deliver.collection`) at either date is compared
photo by photo, by name: counts, crack length, widest crack and pixel@2px F1 where scored,
at both dates and their change (``photo_changes.csv``). A collection is compared with photos
run one by one (``--layout per-raster``) when they share names; with none in common there is
nothing to pair, and that is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from survey_cracks.deliver.assets import GroundScale, assets_in_crs, figures_frame, load_assets, measure_assets
from survey_cracks.deliver.condition import AssetRules, ChangeRules
from survey_cracks.deliver.deliverables import (
    SurveyProduct,
    add_layer,
    build_products,
    survey_assets,
    write_csv,
    write_survey_package,
)
from survey_cracks.deliver.collection import PHOTO_CHANGES_CSV, PHOTOS_CSV, is_collection
from survey_cracks.deliver.outcomes import RasterOutcome
from survey_cracks.deliver.report_html import ASSET_CHANGES_CSV, CHANGES_CSV, write_report_html
from survey_cracks.deliver.run_record import RunRecord, read_run
from survey_cracks.errors import OutputError

Log = Callable[[str], None]
CHANGE_COLUMNS = ["status", "old_rasters", "old_ids", "new_rasters", "new_ids", "old_length", "new_length", "length_change",
                  "old_max_width", "new_max_width", "width_change", "unit"]


@dataclass
class SurveyChange:
    survey: str
    changes: gpd.GeoDataFrame
    assets: pd.DataFrame

    def summary(self) -> str:
        counts = self.changes["status"].value_counts()
        return ", ".join(f"{int(counts.get(s, 0))} {s}" for s in ("matched", "grown", "new", "gone"))


def match_cracks(old: gpd.GeoDataFrame, new: gpd.GeoDataFrame, pixel: float, rules: ChangeRules, unit: str) -> gpd.GeoDataFrame:
    """Change records between two dates' crack polygons in one CRS (see the module docstring).

    Both frames need ``length`` and ``max_width`` (NaN allowed) and may carry ``raster`` and ``id``;
    ``pixel`` is the coarser GSD in map units (1 for pixel coordinates).
    """
    n_old, n_new = len(old), len(new)
    geoms = np.concatenate([np.asarray(old.geometry.values, dtype=object), np.asarray(new.geometry.values, dtype=object)])
    grown = shapely.buffer(geoms, rules.match_distance_px * pixel)
    left, right = shapely.STRtree(grown[n_old:]).query(grown[:n_old], predicate="intersects")
    if len(left):
        shared = shapely.area(shapely.intersection(grown[left], grown[n_old + right]))
        smaller = np.minimum(shapely.area(grown[left]), shapely.area(grown[n_old + right]))
        keep = shared >= rules.min_overlap * smaller
        left, right = left[keep], right[keep]
    n = n_old + n_new
    graph = coo_matrix((np.ones(len(left)), (left, n_old + right)), shape=(n, n))
    _, group = connected_components(graph, directed=False)
    frame = pd.concat([old.assign(_date="old"), new.assign(_date="new")], ignore_index=True)
    for column, fill in (("raster", ""), ("id", 0)):
        if column not in frame.columns:
            frame[column] = fill
    records, shapes = [], []
    for g in np.unique(group):
        members = frame.iloc[np.flatnonzero(group == g)]
        before, after = members[members["_date"] == "old"], members[members["_date"] == "new"]
        old_length, new_length = float(before["length"].sum()), float(after["length"].sum())
        if max(old_length, new_length) < rules.min_length_px * pixel:
            continue
        old_width = float(before["max_width"].max()) if len(before) else np.nan
        new_width = float(after["max_width"].max()) if len(after) else np.nan
        if not len(before):
            status = "new"
        elif not len(after):
            status = "gone"
        else:
            longer = new_length - old_length
            wider = new_width - old_width if np.isfinite(new_width) and np.isfinite(old_width) else 0.0
            grew = longer > rules.length_growth_px * pixel and longer > rules.length_growth_fraction * old_length
            status = "grown" if grew or wider > rules.width_growth_px * pixel else "matched"
        shown = after if len(after) else before
        shapes.append(shapely.union_all(shapely.boundary(np.asarray(shown.geometry.values, dtype=object))))
        records.append({
            "status": status, "old_rasters": ";".join(sorted(set(before["raster"].astype(str)))),
            "old_ids": ";".join(str(int(i)) for i in before["id"]), "new_rasters": ";".join(sorted(set(after["raster"].astype(str)))),
            "new_ids": ";".join(str(int(i)) for i in after["id"]), "old_length": round(old_length, 4),
            "new_length": round(new_length, 4), "length_change": round(new_length - old_length, 4),
            "old_max_width": old_width, "new_max_width": new_width,
            "width_change": new_width - old_width if np.isfinite(new_width) and np.isfinite(old_width) else np.nan, "unit": unit,
        })
    return gpd.GeoDataFrame(pd.DataFrame(records, columns=CHANGE_COLUMNS), geometry=shapes, crs=new.crs)


def _in_crs(product: SurveyProduct, target: SurveyProduct) -> tuple[gpd.GeoDataFrame, shapely.Geometry, gpd.GeoDataFrame | None]:
    """An earlier survey's cracks, footprint and centrelines in the later survey's CRS."""
    cracks, lines = product.cracks, product.lines
    surveyed = shapely.union_all([r.footprint for r in product.rasters])
    if target.crs is not None and product.crs is not None and product.crs != target.crs:
        cracks = cracks.to_crs(target.crs)
        lines = lines.to_crs(target.crs) if lines is not None else None
        surveyed = gpd.GeoSeries([surveyed], crs=product.crs).to_crs(target.crs).iloc[0]
    return cracks, surveyed, lines


def compare_surveys(old: SurveyProduct, new: SurveyProduct, assets: gpd.GeoDataFrame | None, rules: AssetRules) -> SurveyChange:
    """Crack changes and per-asset changes of one survey."""
    old_cracks, old_surveyed, old_lines = _in_crs(old, new)
    factor = new.scale.factor
    gsd = max(g for g in (old.scale.gsd_m, new.scale.gsd_m, 0.0) if g is not None)
    pixel = gsd / factor if new.scale.metres_per_unit is not None and gsd > 0 else 1.0
    changes = match_cracks(old_cracks, new.cracks, pixel, rules.change, new.scale.unit)
    new_surveyed = shapely.union_all([r.footprint for r in new.rasters])
    if assets is None:
        assets = gpd.GeoDataFrame({"asset_id": [r.outcome.raster for r in new.rasters],
                                   "material": [rules.default_material] * len(new.rasters)},
                                  geometry=[r.footprint for r in new.rasters], crs=new.crs)
    before, _ = measure_assets(assets, old_cracks, old_lines, old_surveyed, GroundScale(new.scale.metres_per_unit, old.scale.gsd_m), rules)
    after, _ = measure_assets(assets, new.cracks, new.lines, new_surveyed, new.scale, rules)
    a, b = figures_frame(before, new.crs), figures_frame(after, new.crs)
    table = pd.DataFrame({
        "asset_id": b["asset_id"], "old_length": a["length"], "new_length": b["length"],
        "length_change": (b["length"] - a["length"]).round(4), "old_density": a["density"], "new_density": b["density"],
        "density_change": (b["density"] - a["density"]).round(6), "old_condition": a["condition"], "new_condition": b["condition"],
        "condition_change": [_trend(x, y) for x, y in zip(a["condition_state"], b["condition_state"])], "unit": b["unit"],
    })
    return SurveyChange(new.survey, changes, table)


def _trend(before: float | None, after: float | None) -> str:
    if before is None or after is None or pd.isna(before) or pd.isna(after):
        return "unresolved"
    return "worse" if after > before else "better" if after < before else "same"


PHOTO_FIGURES = {"polygons": "polygons", "centrelines": "centrelines", "crack_length": "length", "max_width": "max_width",
                 "pixel_2px_f1": "pixel_2px_f1"}  # photos.csv's column -> the change table's name


@dataclass
class PhotoChange:
    """A survey's photos at two dates, by name (``table``: one row per photo, see `photo_changes`)."""

    survey: str
    table: pd.DataFrame

    def summary(self) -> str:
        both = self.table[self.table["status"] == "both"]
        counts = self.table["status"].value_counts()
        parts = [f"{len(both)} photos at both dates (cracks {int(both['polygons_change'].sum()):+d}, crack length "
                 f"{both['length_change'].sum():+.1f} {self.table['unit'].dropna().iloc[0] if self.table['unit'].notna().any() else 'px'})"]
        scored = both.dropna(subset=["old_pixel_2px_f1", "new_pixel_2px_f1"])
        if len(scored):
            parts.append(f"pixel@2px F1 {scored['old_pixel_2px_f1'].mean():.2f} -> {scored['new_pixel_2px_f1'].mean():.2f} "
                         f"(mean over {len(scored)} annotated)")
        parts += [f"{int(counts.get(s, 0))} {s}" for s in ("new", "gone", "failed")]
        return ", ".join(parts) + f"; {PHOTO_CHANGES_CSV}"


def photo_table(record: RunRecord, survey: str, outcomes: list[RasterOutcome]) -> pd.DataFrame | None:
    """A survey's photos as photos.csv has them (index: photo): its collection's, or, without one, its rasters that
    are not georeferenced (photos run one by one); None when it has neither."""
    collection = next((o for o in outcomes if is_collection(o)), None)
    if collection is not None:
        path = record.folder(collection) / PHOTOS_CSV
        if not path.is_file():
            raise OutputError(path, "the collection's photo table is missing", "run the survey again into this OUT")
        return pd.read_csv(path, dtype={"photo": str}).set_index("photo")
    rows = [o.summary_row() | {"photo": o.raster, "max_width": o.counts.max_width} for o in outcomes
            if not o.georeferenced and o.status == "ok"]
    return pd.DataFrame(rows).set_index("photo") if rows else None


def photo_changes(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One row per photo of either date: ``status`` both / new / gone / failed (failed at a date it is in), its
    figures at both dates and their change (``*_change`` = new - old)."""
    names = sorted(set(old.index) | set(new.index))
    table = pd.DataFrame({"photo": names})
    ok = {date: frame.index[frame["status"] == "ok"] for date, frame in (("old", old), ("new", new))}
    table["status"] = ["failed" if (n in old.index and n not in ok["old"]) or (n in new.index and n not in ok["new"])
                       else "both" if n in old.index and n in new.index else "new" if n in new.index else "gone"
                       for n in names]
    for column, name in PHOTO_FIGURES.items():
        before = pd.to_numeric(old[column].reindex(names), errors="coerce").to_numpy()
        after = pd.to_numeric(new[column].reindex(names), errors="coerce").to_numpy()
        table[f"old_{name}"], table[f"new_{name}"] = before, after
        table[f"{name}_change"] = np.round(after - before, 6)
    table["unit"] = new["unit"].reindex(names).fillna(old["unit"].reindex(names)).to_numpy()
    return table


def compare_photo_surveys(old_record: RunRecord, new_record: RunRecord, log: Log = print) -> list[PhotoChange]:
    """Every survey of both runs with a collection at either date, photo by photo (see the module docstring)."""
    old_surveys = old_record.surveys()
    results = []
    for survey, members in new_record.surveys().items():
        before = old_surveys.get(survey)
        if before is None or not any(is_collection(o) for o in [*before, *members]):
            continue
        old, new = photo_table(old_record, survey, before), photo_table(new_record, survey, members)
        as_collection = [any(is_collection(o) for o in outcomes) for outcomes in (before, members)]
        # two collections without a photo in common are change (every photo new or gone); mixed layouts are not
        if old is None or new is None or (as_collection[0] != as_collection[1] and not set(old.index) & set(new.index)):
            layouts = ["as a collection" if c else "as rasters of their own (--layout per-raster)" for c in as_collection]
            raise OutputError(new_record.out / survey, f"survey {survey} has its photos {layouts[0]} in {old_record.out} "
                              f"and {layouts[1]} here, with no photo in common: nothing to compare",
                              "run both dates with the same --layout (or compare runs of the same photos)")
        table = photo_changes(old, new)
        write_csv(new_record.out / survey / PHOTO_CHANGES_CSV, table)
        log(f"{survey}: {PHOTO_CHANGES_CSV} (photo by photo)")
        results.append(PhotoChange(survey, table))
    return results


def compare_runs(old_out: Path, new_out: Path, assets: Path | None = None, rules: AssetRules | None = None,
                 log: Log = print) -> list[SurveyChange | PhotoChange]:
    """Compare every survey present in both runs; write the changes into NEW_OUT (see the CLI's help)."""
    old_record, new_record = read_run(old_out), read_run(new_out)
    rules = rules or new_record.rules
    if assets is not None:
        load_assets(assets, rules)
    old_products = {p.survey: p for p in build_products(old_record)}
    new_products = build_products(new_record)
    results = []
    for new in new_products:
        old = old_products.get(new.survey)
        if old is None:
            continue
        path, frame = survey_assets(new_record.source(new.rasters[0].outcome).parent if new.rasters else None,
                                     assets or new_record.assets, rules)
        frame = assets_in_crs(frame, new.crs, path) if frame is not None and path is not None else None
        result = compare_surveys(old, new, frame, rules)
        write_survey_package(new)
        add_layer(new.gpkg, "changes", result.changes, "MultiLineString")
        write_csv(new.folder / CHANGES_CSV, result.changes.drop(columns="geometry"))
        write_csv(new.folder / ASSET_CHANGES_CSV, result.assets)
        log(f"{new.survey}: changes layer in {new.gpkg.name}, {CHANGES_CSV}, {ASSET_CHANGES_CSV}")
        results.append(result)
    photo_results = compare_photo_surveys(old_record, new_record, log)
    write_report_html(new_record, new_products)
    return [*results, *photo_results]
