"""What asset managers and GIS analysts receive: one GeoPackage and one asset table per survey.

``OUT/<survey>/<survey>.gpkg`` holds the survey's rasters together in one CRS (the
first georeferenced raster's; a geographic CRS is replaced by its UTM zone so lengths
and angles are metric): layers ``cracks`` and ``centrelines`` (each with its ``raster``,
the centrelines with the ``asset_id`` holding most of each and its ``crack_type``
there), ``assets`` (crack figures and condition per asset, assets.AssetFigures) and,
after `compare`, ``changes``, with the QGIS style of every layer in its
``layer_styles`` table. ``OUT/<survey>/assets.csv`` is the assets layer as a table;
``<survey>.qgz`` a QGIS project of every raster's layers and ``heatmaps.vrt`` their
heatmaps as one raster (qgis_project).
A pixel-coordinate survey (road scans) stays in pixel coordinates; a raster without
georeferencing in a georeferenced survey is left out of these (the survey's
``notes`` say so). The HTML report and the STAC catalogue are written from the same
survey products (report_html, stac).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Callable

import geopandas as gpd
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from survey_cracks import outputs
from survey_cracks.deliver.assets import (
    SURVEY_ASSET_FILES,
    AssetFigures,
    GroundScale,
    LineAssignment,
    assets_in_crs,
    footprint,
    load_assets,
    measure_assets,
)
from survey_cracks.deliver.condition import AssetRules
from survey_cracks.deliver.console import counted
from survey_cracks.deliver.outcomes import RasterOutcome
from survey_cracks.deliver.product import RasterLayers, SurveyProduct
from survey_cracks.deliver.qgis_project import write_heatmaps_vrt, write_qgis_project
from survey_cracks.deliver.run_record import RunRecord, read_run
from survey_cracks.deliver.collection import COLLECTION, HEATMAPS, PHOTOS_CSV, is_collection
from survey_cracks.outputs import GPKG, HEATMAP, Layer, atomic_write

Log = Callable[[str], None]
GPKG_STYLES = {"cracks": "cracks.qml", "centrelines": "centrelines_typed.qml", "assets": "assets.qml", "changes": "changes.qml"}
ASSETS_CSV = "assets.csv"


def survey_crs(outcomes: list[RasterOutcome], folder: Path) -> tuple[CRS | None, GroundScale]:
    """The survey's working CRS (projected, or None for pixel coordinates) and its ground scale."""
    georef = [o for o in outcomes if o.georeferenced and o.info is not None]
    if not georef:
        return None, GroundScale(None, None)
    crs = CRS.from_user_input(georef[0].info.crs)
    if not crs.is_projected:
        bounds = shapely.bounds(footprint(folder / georef[0].survey / georef[0].raster / HEATMAP))
        crs = gpd.GeoSeries([shapely.box(*bounds)], crs=crs).estimate_utm_crs()
    factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
    sizes = [o.info.pixel_size * factor for o in georef if o.info.pixel_size]
    gsd = max(sizes) if sizes else None
    return crs, GroundScale(factor, gsd)


def _read_layers(outcome: RasterOutcome, folder: Path, source_path: Path, crs: CRS | None) -> RasterLayers:
    gpkg = folder / GPKG
    names = [name for name, _ in pyogrio.list_layers(gpkg)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cracks = gpd.read_file(gpkg, layer="cracks")
        lines = gpd.read_file(gpkg, layer="centrelines") if "centrelines" in names else None
    shape = footprint(folder / HEATMAP)
    if crs is not None:
        assert outcome.info is not None
        source = CRS.from_user_input(outcome.info.crs)
        if source != crs:
            cracks, shape = cracks.to_crs(crs), gpd.GeoSeries([shape], crs=source).to_crs(crs).iloc[0]
            lines = lines.to_crs(crs) if lines is not None else None
    for frame in (cracks, lines):
        if frame is not None:
            frame.insert(0, "raster", outcome.raster)
    return RasterLayers(outcome, folder, source_path, cracks, lines, shape)


def survey_assets(survey_folder_source: Path | None, assets_file: Path | None, rules: AssetRules) -> tuple[Path | None, gpd.GeoDataFrame | None]:
    """``--assets FILE``, else assets.gpkg / assets.geojson beside the survey's rasters, else none (footprints)."""
    if assets_file is not None:
        return assets_file, load_assets(assets_file, rules)
    if survey_folder_source is not None:
        for name in SURVEY_ASSET_FILES:
            candidate = survey_folder_source / name
            if candidate.is_file():
                return candidate, load_assets(candidate, rules)
    return None, None


def build_survey(record: RunRecord, survey: str, outcomes: list[RasterOutcome], assets_file: Path | None) -> SurveyProduct:
    """Read a survey's raster outputs and measure its assets (see the module docstring)."""
    folder = record.out / survey
    # a collection of photos is its own product (`deliver.collection`: its cracks.gpkg holds every photo)
    ok = [o for o in outcomes if o.status == "ok" and not is_collection(o)]
    crs, scale = survey_crs(ok, record.out)
    notes = []
    usable = ok if crs is None else [o for o in ok if o.info is not None and o.info.georeferenced]
    for o in ok:
        if o not in usable:
            notes.append(f"{o.raster}: not georeferenced, left out of the survey's GeoPackage and asset figures")
    rasters = [_read_layers(o, record.folder(o), record.source(o), crs) for o in usable]
    rules = record.rules
    source_folder = record.source(ok[0]).parent if ok else None
    asset_path, assets = survey_assets(source_folder, assets_file, rules)
    figures: list[AssetFigures] = []
    has_lines = any(r.lines is not None for r in rasters)
    assignment = LineAssignment([], [])
    if assets is not None:
        assert asset_path is not None
        assets = assets_in_crs(assets, crs, asset_path)
        surveyed = shapely.union_all([r.footprint for r in rasters]) if rasters else shapely.Polygon()
        assets = assets[shapely.intersects(assets.geometry.values, surveyed)]
        if len(assets) == 0:
            notes.append(f"none of the assets in {asset_path} overlaps this survey's imagery")
        cracks, lines = _concat([r.cracks for r in rasters]), _concat([r.lines for r in rasters if r.lines is not None])
        figures, assignment = measure_assets(assets, cracks, lines if has_lines else None, surveyed, scale, rules)
        asset_source = str(asset_path)
    else:  # each raster's footprint is one asset, measured against that raster's cracks only
        for r in rasters:
            asset = gpd.GeoDataFrame({"asset_id": [r.outcome.raster], "material": [rules.default_material]},
                                     geometry=[r.footprint], crs=crs)
            found, assigned = measure_assets(asset, r.cracks, r.lines, r.footprint, scale, rules)
            figures += found
            assignment.asset_id += assigned.asset_id
            assignment.crack_type += assigned.crack_type
        asset_source = "raster footprints"
    lines = _concat([r.lines for r in rasters if r.lines is not None]) if has_lines else None
    if lines is not None:
        lines["asset_id"] = pd.array(assignment.asset_id, dtype="string")
        lines["crack_type"] = pd.array(assignment.crack_type, dtype="string")
    return SurveyProduct(survey, folder, crs, scale, rasters, figures, asset_source, lines,
                         _concat([r.cracks for r in rasters]), notes)


def _concat(frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    frames = [f for f in frames if f is not None]
    if not frames:
        return gpd.GeoDataFrame({"raster": []}, geometry=[])
    return gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=frames[0].crs)


def write_survey_package(product: SurveyProduct, changes: gpd.GeoDataFrame | None = None) -> Path:
    """``<survey>.gpkg`` (layers with embedded QGIS styles) and ``assets.csv``, each via a temp name."""
    layers = [("cracks", product.cracks, "MultiPolygon"), ("assets", product.assets_frame(), "MultiPolygon")]
    if product.lines is not None:
        layers.insert(1, ("centrelines", product.lines, "LineString"))
    if changes is not None:
        layers.append(("changes", changes, "MultiLineString"))
    write_gpkg(product.gpkg, layers)
    write_csv(product.folder / ASSETS_CSV, product.assets_frame().drop(columns="geometry"))
    return product.gpkg


def write_gpkg(path: Path, layers: list[Layer]) -> None:
    """A survey GeoPackage of ``layers`` with their QGIS styles inside."""
    outputs.write_gpkg(path, layers, GPKG_STYLES)


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)


def add_layer(gpkg: Path, layer: str, frame: gpd.GeoDataFrame, geometry_type: str) -> None:
    """Add (or replace) one styled layer in an existing GeoPackage."""
    outputs.add_gpkg_layer(gpkg, (layer, frame, geometry_type), GPKG_STYLES[layer])


def build_products(record: RunRecord, assets_file: Path | None = None) -> list[SurveyProduct]:
    return [build_survey(record, survey, outcomes, assets_file or record.assets)
            for survey, outcomes in record.surveys().items() if any(o.status == "ok" and not is_collection(o) for o in outcomes)]


def write_deliverables(out: Path, log: Log = print) -> list[SurveyProduct]:
    """Per-survey GeoPackage and asset CSV, OUT/report.html and the STAC catalogue of a finished run."""
    from survey_cracks.deliver.report_html import write_report_html
    from survey_cracks.deliver.stac import write_catalog

    record = read_run(out)
    products = build_products(record)
    for product in products:
        write_survey_package(product)
        project, vrt = write_qgis_project(product), write_heatmaps_vrt(product)
        log(f"{product.survey}: {product.gpkg.name} ({counted(len(product.assets), 'asset')} from {product.asset_source}), {ASSETS_CSV}, "
            f"{project.name} (QGIS project){f', {vrt.name}' if vrt else ''}")
    for outcome in record.outcomes:  # a collection is its own deliverable, written by its run: said once, not per photo
        if is_collection(outcome) and outcome.status == "ok":
            photos = f" ({counted(outcome.counts.photos, 'photo')})" if outcome.counts.photos else ""
            log(f"{outcome.survey}: {COLLECTION}/{photos}: {GPKG}, {PHOTOS_CSV}, "
                f"{HEATMAPS}/, {outputs.STAC_ITEM} (STAC item)")
    write_report_html(record, products)
    write_catalog(record, products)
    return products
