"""``OUT/report.html``: one self-contained page per run, for people who do not open QGIS.

Per survey of photos in the collection layout, one section for the collection (its totals,
metrics and the photos with most crack length; photos.csv has them all). Per survey: the per-asset table with condition classes (and the change table after
`compare`); per raster: an overview with the heatmap and the crack outlines over the
imagery, the metrics, the pixel@2px precision-recall curve where annotated, and a
gallery of the worst false positives (most confident polygons on no annotated crack)
and false negatives (longest annotated cracks not found) as image crops. Images are
PNGs made with matplotlib and embedded as base64: the page needs no network and no
other file. Every image is read from the rasters' overviews or as a decimated window
(``out_shape``), so memory does not grow with the raster size.

The page itself is the Jinja2 template ``templates/report.html.j2``, rendered with
autoescape on: survey, raster and asset names, notes and error messages come from file
names and user files, and the template escapes every one of them. This module gathers
and formats the figures; the template lays them out.
"""

from __future__ import annotations

import base64
import io
import math
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import jinja2
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.enums import Compression, Resampling
from rasterio.windows import Window, from_bounds

from survey_cracks.deliver.collection import COLLECTION, HEATMAPS, PHOTO_CHANGES_CSV, PHOTOS_CSV, is_collection
from survey_cracks.deliver.console import rasters_and_photos
from survey_cracks.deliver.outcomes import RasterOutcome
from survey_cracks.deliver.report_text import LEGEND, METRIC_LEVELS, threshold_advice
from survey_cracks.deliver.run_record import RunRecord
from survey_cracks.deliver.units import format_gsd, format_length, format_width
from survey_cracks.errors import SurveyCracksError
from survey_cracks.evaluation.evaluate import object_flags, pixel_pr_curve
from survey_cracks.io.annotations import find_annotation, load_truth
from survey_cracks.io.raster import inspect_raster, open_raster
from survey_cracks.outputs import GPKG, HEATMAP, write_text
from survey_cracks.vectors.heatmap import read_probability

if TYPE_CHECKING:
    from survey_cracks.deliver.product import RasterLayers, SurveyProduct

REPORT_HTML = "report.html"
OVERVIEW_PX = 900
CROP_PX = 200
GALLERY = 4
CHANGES_CSV = "changes.csv"
ASSET_CHANGES_CSV = "asset_changes.csv"





@cache
def _templates() -> jinja2.Environment:
    """The report's templates, autoescaped (``.html.j2``); undefined names raise instead of rendering empty."""
    return jinja2.Environment(loader=jinja2.PackageLoader("survey_cracks.deliver"),
                              autoescape=jinja2.select_autoescape(["html.j2"], default=True),
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


@dataclass
class Table:
    """An HTML table as the template's ``table`` macro draws it: (header, class) per column, (class, cells) per row."""

    columns: list[tuple[str, str]]
    rows: list[tuple[str, list[tuple[str, str]]]]


@dataclass
class RasterView:
    """One raster's section of the page: its figures formatted, its images as data URIs."""

    name: str
    polygons: object
    centrelines: object
    length: str  # with its unit, rounded to what the unit resolves (`units.format_length`)
    widest: str
    threshold: object
    coordinates: str
    overview: str
    metrics: Table | None
    pr_curve: str | None = None
    gallery: list[str] | None = None  # None: not annotated, no gallery
    gallery_error: str | None = None


@dataclass
class SurveyView:
    """One survey's section of the page."""

    name: str
    notes: list[str]
    asset_source: str
    unit: str
    gsd: str | None  # the coarsest ground sampling distance, formatted; None in pixel coordinates
    gpkg: str
    threshold_advice: str | None  # the best-F1 threshold on the annotations and the command to apply it
    assets: Table
    changes: Table | None = None
    change_summary: str = ""
    rasters: list[RasterView] = field(default_factory=list)


@dataclass
class CollectionView:
    """A survey's collection of photos (`deliver.collection`): its totals and its photos, once, not a section each."""

    survey: str
    summary: str
    files: str
    threshold_advice: str | None
    metrics: Table | None
    photos: Table
    shown: str  # which photos the table shows, of how many
    changes: str | None = None  # after `compare`: the photo-by-photo change in one line


SHOWN_PHOTOS = 25  # a survey has tens of thousands: the page lists the failed ones and those with most crack length


def _png(fig: Any) -> str:
    """The figure as a PNG data URI, for an ``<img src>``."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}"


def _rgb(src: rasterio.io.DatasetReader, window: Window, shape: tuple[int, int]) -> np.ndarray:
    """RGB uint8 of a window at ``shape``, stretched when not 8-bit; invalid = white.

    The whole raster is read without a window, so that GDAL decimates through overviews,
    or a JPEG-compressed TIFF's implicit ones (libjpeg's DCT scaling): measured on a 100 MP
    mosaic without overviews, 0.3 s instead of 1.1 s with its full window, 1.6 s averaging
    and 2 s through rasterio's boundless path. Only without overviews is it averaged.
    """
    bands = [1, 2, 3] if src.count >= 3 else [1, 1, 1]
    boundless = not _inside(window, src)
    if _inside(Window(0, 0, src.width, src.height), src, window):
        window = None
    overviews = bool(src.overviews(1)) or src.compression == Compression.jpeg
    resampling = Resampling.nearest if overviews and not boundless else Resampling.average
    data = src.read(bands, window=window, out_shape=(3, *shape), resampling=resampling, boundless=boundless)
    if data.dtype != np.uint8:
        lo, hi = np.percentile(data, [0.5, 99.5])
        data = np.clip((data - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    valid = src.read_masks(1, window=window, out_shape=shape, boundless=boundless) > 0
    rgb = np.moveaxis(data, 0, -1).copy()
    rgb[~valid] = 255
    return rgb


def _inside(window: Window, src: rasterio.io.DatasetReader, outer: Window | None = None) -> bool:
    """Whether ``window`` lies inside ``outer`` (the raster by default), to rounding."""
    outer = outer or Window(0, 0, src.width, src.height)
    tolerance = 1e-6  # from_bounds of the raster's own bounds is off by rounding
    return (window.col_off >= outer.col_off - tolerance and window.row_off >= outer.row_off - tolerance
            and window.col_off + window.width <= outer.col_off + outer.width + tolerance
            and window.row_off + window.height <= outer.row_off + outer.height + tolerance)


def _heat(path: Path, window: Window, shape: tuple[int, int]) -> np.ndarray:
    with open_raster(path) as src:
        heat = read_probability(src, window, out_shape=shape, boundless=True)
    return np.ma.masked_less(np.nan_to_num(heat, nan=-1.0), 0.05)


def _shape_for(width: float, height: float, longest: int) -> tuple[int, int]:
    scale = min(1.0, longest / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _picture(raster: "RasterLayers", bounds: tuple[float, float, float, float], longest: int, outlines: list[tuple[Any, str]],
             title: str, size: tuple[float, float]) -> str:
    """Imagery + heatmap + outlines over a map-coordinate box of the raster's own grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    heatmap = raster.folder / HEATMAP
    with open_raster(heatmap) as ref:
        window = from_bounds(*bounds, transform=ref.transform)
    shape = _shape_for(window.width, window.height, longest)
    fig, ax = plt.subplots(figsize=size)
    extent = (bounds[0], bounds[2], bounds[1], bounds[3])
    source = raster.source
    if source.is_file():
        # Measured: GDAL's decimated read of a 100 MP JPEG mosaic is 4x faster with the dataset opened inside a rasterio Env.
        with rasterio.Env(), open_raster(source) as src:
            ax.imshow(_rgb(src, window, shape), extent=extent, interpolation="bilinear")
    ax.imshow(_heat(heatmap, window, shape), extent=extent, cmap="inferno", vmin=0, vmax=1, alpha=0.55, interpolation="nearest")
    for colour in dict.fromkeys(colour for _, colour in outlines):  # one artist per colour, not one per line
        geometries = [g for g, c in outlines if c == colour]
        lines = [shapely.boundary(g) if shapely.get_dimensions(g) == 2 else g for g in geometries]
        paths = [xy for xy in map(shapely.get_coordinates, shapely.get_parts(lines)) if len(xy)]
        ax.add_collection(LineCollection(paths, colors=colour, linewidths=0.8))
    ax.set_xlim(bounds[0], bounds[2])
    ax.set_ylim(bounds[1], bounds[3])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _png(fig)


def _pr_figure(curve: Any, threshold: float) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ok = np.isfinite(curve.precision)
    ax.plot(curve.recall[ok], curve.precision[ok], color="#246")
    k = int(np.argmin(np.abs(curve.thresholds - threshold)))
    if ok[k]:
        ax.plot(curve.recall[k], curve.precision[k], "o", color="#c30", label=f"threshold {threshold:.2f}")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"pixel@{curve.tolerance_px}px precision-recall", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"  # 307,200 px², not 3.072e+05
    return str(value)


def _table(frame: pd.DataFrame, text_columns: set[str] = frozenset(), state_column: str | None = None) -> Table:
    """A frame as a Table: text columns left-aligned (class t), rows coloured by condition state (s1..s4, su unknown)."""
    classes = ["t" if c in text_columns else "" for c in frame.columns]
    rows = []
    for _, row in frame.iterrows():
        state = row.get(state_column) if state_column else None
        klass = f's{int(state)}' if state is not None and pd.notna(state) else ("su" if state_column else "")
        rows.append((klass, [(_cell(row[c]), k) for c, k in zip(frame.columns, classes)]))
    return Table(list(zip(map(str, frame.columns), classes)), rows)


def _asset_table(product: "SurveyProduct") -> Table:
    frame = product.assets_frame().drop(columns="geometry")
    unit = product.scale.unit
    view = pd.DataFrame({
        "asset": frame["asset_id"], "material": frame["material"], f"surveyed {unit}²": frame["surveyed_area"],
        "cracks": frame["crack_count"], "length": [format_length(v, unit) for v in frame["length"]],
        f"density {unit}/{unit}²": frame["density"], "cracked share %": frame["cracked_share"] * 100,
        "mean width": [format_width(v, unit) for v in frame["mean_width"]],
        "max width": [f"{format_width(v, unit)} ± {format_width(e, unit)}" if pd.notna(v) else "-"
                      for v, e in zip(frame["max_width"], frame["width_uncertainty"])], "main type": frame["dominant_type"],
        "width class": frame["width_class"], "density class": frame["density_class"], "condition": frame["condition"],
        "state": frame["condition_state"],
    })
    return _table(view, {"asset", "material", "main type", "width class", "density class", "condition"}, "state")


def _gallery(raster: "RasterLayers", record: RunRecord) -> tuple[list[str] | None, Any]:
    """The worst false positives and negatives as crops (data URIs), and the PR curve; (None, None) when not annotated."""
    source = raster.source
    annotation = find_annotation(source) if source.is_file() else None
    if annotation is None:
        return None, None
    info = inspect_raster(source)
    truth = load_truth(source, info, record.config.evaluate, annotation)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predicted = gpd.read_file(raster.folder / GPKG, layer="cracks")
    flags = object_flags(truth.objects(), predicted, info, record.config.evaluate)
    scores = predicted["max_score"].to_numpy()[: len(flags.predicted)] if len(predicted) == len(flags.predicted) \
        else np.zeros(len(flags.predicted))
    wrong = np.flatnonzero(~flags.correct)
    worst_fp = wrong[np.argsort(-scores[wrong], kind="stable")][:GALLERY]
    missed = np.flatnonzero(~flags.found)
    worst_fn = missed[np.argsort(-shapely.length(flags.annotated[missed]), kind="stable")][:GALLERY]
    pixel = abs(info.transform.a)
    figures = []
    for kind, index, geoms, note in (("false positive", worst_fp, flags.predicted, "score"),
                                     ("false negative", worst_fn, flags.annotated, "length")):
        for i in index:
            geometry = geoms[i]
            x0, y0, x1, y1 = shapely.bounds(geometry)
            pad = max(32 * pixel, 0.15 * max(x1 - x0, y1 - y0))
            side = max(x1 - x0, y1 - y0) + 2 * pad
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            value = f"score {scores[i]:.2f}" if note == "score" else f"{format_length(shapely.length(geometry), 'm' if info.georeferenced else 'px')} outline"
            colour = "#00e5ff" if kind == "false positive" else "#39ff14"
            figures.append(_picture(raster, box, CROP_PX, [(geometry, colour)], f"{kind}: {value}", (2.9, 2.9)))
    curve = pixel_pr_curve(raster.folder / HEATMAP, truth, info, tolerance=2, block=record.config.heatmap.block_size)
    return figures, curve


def _metrics_table(outcome: Any) -> Table | None:
    metrics = outcome.metrics or {}
    rows = [{"level": level, "precision": m.get("precision"), "recall": m.get("recall"), "F1": m.get("f1"),
             "quality": m.get("quality")} for level, m in metrics.items()]
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    return _table(frame.dropna(axis=1, how="all"), {"level"})


def _or_dash(value: object) -> object:
    return "-" if value is None else value


def _raster_section(raster: "RasterLayers", record: RunRecord) -> RasterView:
    outcome = raster.outcome
    with open_raster(raster.folder / HEATMAP) as ref:
        bounds = tuple(ref.bounds)
    counts = outcome.counts
    outlines = [(g, "#00e5ff") for g in raster.cracks.geometry.values]
    overview = _picture(raster, bounds, OVERVIEW_PX, outlines,
                        f"{outcome.raster}: heatmap (inferno, >= 0.05) and crack outlines (cyan) over the imagery", (7.5, 6.2))
    unit = counts.unit or ""
    view = RasterView(name=outcome.raster, polygons=counts.polygons or 0, centrelines=_or_dash(counts.centrelines),
                      length=format_length(counts.crack_length, unit), widest=format_width(counts.max_width, unit),
                      threshold=counts.threshold, coordinates=outcome.info.coordinates if outcome.info else "",
                      overview=overview, metrics=_metrics_table(outcome))
    try:
        view.gallery, curve = _gallery(raster, record)
    except SurveyCracksError as error:
        view.gallery_error, curve = error.message, None
    if curve is not None:
        view.pr_curve = _pr_figure(curve, float(counts.threshold if counts.threshold is not None else record.threshold))
    return view


def _survey_section(product: "SurveyProduct", record: RunRecord) -> SurveyView:
    view = SurveyView(name=product.survey, notes=list(product.notes), asset_source=product.asset_source,
                      unit=product.scale.unit, gpkg=product.gpkg.name,
                      gsd=format_gsd(product.scale.gsd_m) if product.scale.gsd_m else None,
                      threshold_advice=threshold_advice(product.survey, [r.outcome for r in product.rasters], str(record.out)),
                      assets=_asset_table(product), rasters=[_raster_section(r, record) for r in product.rasters])
    path = product.folder / ASSET_CHANGES_CSV
    if path.is_file():
        frame = pd.read_csv(path)
        view.changes = _table(frame, {c for c in frame.columns if frame[c].dtype == object})
        cracks = pd.read_csv(product.folder / CHANGES_CSV) if (product.folder / CHANGES_CSV).is_file() else None
        if cracks is not None and len(cracks):
            counts = cracks["status"].value_counts()
            view.change_summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("matched", "grown", "new", "gone"))
    return view


def _collection_section(outcome: RasterOutcome, record: RunRecord) -> CollectionView:
    """The collection's figures and its photos with most crack length (and every failed one), from photos.csv."""
    folder = record.folder(outcome)
    table = pd.read_csv(folder / PHOTOS_CSV, dtype={"photo": str})
    failed = table[table["status"] != "ok"]
    shown = pd.concat([failed, table[table["status"] == "ok"].nlargest(SHOWN_PHOTOS, "crack_length")])
    unit = outcome.counts.unit or "px"
    view = pd.DataFrame({
        "photo": shown["photo"], "status": shown["status"], "cracks": shown["polygons"],
        "length": [format_length(v, unit) if pd.notna(v) else "" for v in shown["crack_length"]],
        "widest": [format_width(v, unit) if pd.notna(v) else "" for v in shown["max_width"]], "score": shown["score"],
        "pixel@2px F1": shown["pixel_2px_f1"], "error": shown["error"].astype("string").fillna(""),
    })
    counts = outcome.counts
    changes = folder.parent / PHOTO_CHANGES_CSV
    change_line = None
    if changes.is_file():
        statuses = pd.read_csv(changes)["status"].value_counts()
        change_line = ", ".join(f"{int(statuses.get(s, 0))} {s}" for s in ("both", "new", "gone", "failed"))
    return CollectionView(
        survey=outcome.survey,
        summary=f"{len(table)} photos ({len(failed)} failed): {counts.polygons or 0} crack polygons, "
                f"{_or_dash(counts.centrelines)} centrelines, {format_length(counts.crack_length, unit)} of crack, widest "
                f"{format_width(counts.max_width, unit)}; threshold {counts.threshold}; each photo in its own pixel coordinates",
        files=f"{outcome.survey}/{COLLECTION}/: {GPKG} (layers cracks, centrelines, photos), {PHOTOS_CSV}, {HEATMAPS}/",
        threshold_advice=threshold_advice(outcome.survey, [outcome], str(record.out)), metrics=_metrics_table(outcome),
        photos=_table(view.dropna(axis=1, how="all"), {"photo", "status", "error"}),
        shown=f"{len(failed)} failed and the {min(SHOWN_PHOTOS, len(table) - len(failed))} with the most crack length, "
              f"of {len(table)}; every photo in {PHOTOS_CSV}", changes=change_line)


def render_report(record: RunRecord, surveys: list[SurveyView], collections: list[CollectionView] | None = None) -> str:
    """The page: ``templates/report.html.j2`` with the run's figures, every text autoescaped."""
    failed = [o for o in record.outcomes if o.status != "ok"]
    photos = [o for o in record.outcomes if is_collection(o)]
    what = "rasters" if not photos else "done: " + ", ".join(rasters_and_photos(
        len(record.outcomes) - len(photos), sum(o.counts.photos or 0 for o in photos), len(photos)))
    return _templates().get_template("report.html.j2").render(
        finished_at=record.finished_at, model_sha256=record.model_sha256, mode=record.mode, threshold=record.threshold,
        done=len(record.outcomes) - len(failed), total=len(record.outcomes), what=what, failures=[str(o.error) for o in failed],
        surveys=surveys, collections=collections or [], legend=LEGEND, metric_levels=METRIC_LEVELS)


def write_report_html(record: RunRecord, products: list["SurveyProduct"]) -> Path:
    """Write OUT/report.html (temp name, then rename) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    collections = [_collection_section(o, record) for o in record.outcomes if is_collection(o) and o.status == "ok"]
    page = render_report(record, [_survey_section(product, record) for product in products], collections)
    path = record.out / REPORT_HTML
    write_text(path, page)
    return path
