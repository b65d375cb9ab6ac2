"""``OUT/report.html``: one self-contained page per run, for people who do not open QGIS.

Per survey: the per-asset table with condition classes (and the change table after
`compare`); per raster: an overview with the heatmap and the crack outlines over the
imagery, the metrics, the pixel@2px precision-recall curve where annotated, and a
gallery of the worst false positives (most confident polygons on no annotated crack)
and false negatives (longest annotated cracks not found) as image crops. Images are
PNGs made with matplotlib and embedded as base64: the page needs no network and no
other file. Every image is read from the rasters' overviews or as a decimated window
(``out_shape``), so memory does not grow with the raster size.
"""

from __future__ import annotations

import base64
import html
import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.enums import Compression, Resampling
from rasterio.windows import Window, from_bounds

from survey_cracks.deliver.report_text import legend_html, metric_explanations_html, threshold_html
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

_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:22px}h2{font-size:19px;border-bottom:2px solid #456;padding-bottom:3px;margin-top:36px}h3{font-size:16px;margin-top:26px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border:1px solid #bbb;padding:3px 6px;text-align:right}
th{background:#e8edf2}td.t,th.t{text-align:left}.s1{background:#d8f0d8}.s2{background:#fbf0c0}.s3{background:#f8d0b8}
.s4{background:#f0a8a8}.su{background:#e4e4e4}.row{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
figure{margin:0}figcaption{font-size:11px;color:#555;max-width:260px}.note{color:#704;font-size:13px}"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


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


def load_plotting() -> None:
    """Import matplotlib with its file-only backend: ~0.4 s that the report's first picture would
    otherwise spend at the very end of a run (`pipeline` calls this on a thread early on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    from matplotlib.collections import LineCollection  # noqa: F401


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
    return html.escape(str(value))


def _table(frame: pd.DataFrame, text_columns: set[str] = frozenset(), state_column: str | None = None) -> str:
    head = "".join(f'<th class="{"t" if c in text_columns else ""}">{html.escape(c)}</th>' for c in frame.columns)
    rows = []
    for _, row in frame.iterrows():
        state = row.get(state_column) if state_column else None
        klass = f's{int(state)}' if state is not None and pd.notna(state) else ("su" if state_column else "")
        cells = "".join(f'<td class="{"t" if c in text_columns else ""}">{_cell(row[c])}</td>' for c in frame.columns)
        rows.append(f'<tr class="{klass}">{cells}</tr>')
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _asset_table(product: "SurveyProduct") -> str:
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


def _gallery(raster: "RasterLayers", record: RunRecord) -> tuple[str, Any]:
    """The worst false positives and negatives as crops, and the PR curve; ('', None) when not annotated."""
    source = raster.source
    annotation = find_annotation(source) if source.is_file() else None
    if annotation is None:
        return "", None
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
            image = _picture(raster, box, CROP_PX, [(geometry, colour)], f"{kind}: {value}", (2.9, 2.9))
            figures.append(f"<figure>{image}</figure>")
    curve = pixel_pr_curve(raster.folder / HEATMAP, truth, info, tolerance=2, block=record.config.heatmap.block_size)
    gallery = ("<p>Worst false positives (polygons on no annotated crack, most confident first; cyan) and false negatives "
               "(annotated cracks not found, longest first; green):</p>"
               f'<div class="row">{"".join(figures) or "<p>none</p>"}</div>')
    return gallery, curve


def _metrics_table(outcome: Any) -> str:
    metrics = outcome.metrics or {}
    rows = [{"level": level, "precision": m.get("precision"), "recall": m.get("recall"), "F1": m.get("f1"),
             "quality": m.get("quality")} for level, m in metrics.items()]
    if not rows:
        return ""
    frame = pd.DataFrame(rows)
    return _table(frame.dropna(axis=1, how="all"), {"level"})


def _or_dash(value: object) -> object:
    return "-" if value is None else value


def _raster_section(raster: "RasterLayers", record: RunRecord) -> str:
    outcome = raster.outcome
    with open_raster(raster.folder / HEATMAP) as ref:
        bounds = tuple(ref.bounds)
    counts = outcome.counts
    unit = counts.unit or ""
    outlines = [(g, "#00e5ff") for g in raster.cracks.geometry.values]
    overview = _picture(raster, bounds, OVERVIEW_PX, outlines,
                        f"{outcome.raster}: heatmap (inferno, >= 0.05) and crack outlines (cyan) over the imagery", (7.5, 6.2))
    parts = [f"<h3>{html.escape(outcome.raster)}</h3>",
             f"<p>{counts.polygons or 0} crack polygons, {_or_dash(counts.centrelines)} centrelines, "
             f"{format_length(counts.crack_length, unit)} of crack, widest {format_width(counts.max_width, unit)}; threshold {counts.threshold}; "
             f"{html.escape(outcome.info.coordinates if outcome.info else '')}</p>"]
    try:
        gallery, curve = _gallery(raster, record)
    except SurveyCracksError as error:
        gallery, curve = f'<p class="note">no gallery: {html.escape(error.message)}</p>', None
    side = [_metrics_table(outcome), metric_explanations_html() if outcome.metrics else ""]
    if curve is not None:
        side.append(f"<figure>{_pr_figure(curve, float(counts.threshold if counts.threshold is not None else record.threshold))}<figcaption>pixel@2px "
                    "precision-recall curve over thresholds; the dot is the run's threshold</figcaption></figure>")
    parts.append(f'<div class="row"><figure>{overview}</figure><div>{"".join(side)}</div></div>')
    parts.append(gallery)
    return "".join(parts)


def _change_section(product: "SurveyProduct") -> str:
    path = product.folder / ASSET_CHANGES_CSV
    if not path.is_file():
        return ""
    frame = pd.read_csv(path)
    cracks = pd.read_csv(product.folder / CHANGES_CSV) if (product.folder / CHANGES_CSV).is_file() else None
    summary = ""
    if cracks is not None and len(cracks):
        counts = cracks["status"].value_counts()
        summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in ("matched", "grown", "new", "gone"))
    return (f"<h3>Change since the earlier survey</h3><p>Cracks: {summary}.</p>"
            + _table(frame, {c for c in frame.columns if frame[c].dtype == object}))


def write_report_html(record: RunRecord, products: list["SurveyProduct"]) -> Path:
    """Write OUT/report.html (temp name, then rename) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    sections = []
    for product in products:
        notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in product.notes)
        sections.append(
            f"<h2>Survey {html.escape(product.survey)}</h2>{notes}"
            f"<p>Assets from {html.escape(product.asset_source)}; figures in {product.scale.unit}"
            + (f", coarsest GSD {format_gsd(product.scale.gsd_m)}" if product.scale.gsd_m else " (pixel coordinates: no ground scale)")
            + f". GeoPackage: {html.escape(product.gpkg.name)}.</p>"
            + threshold_html(product.survey, [r.outcome for r in product.rasters], str(record.out))
            + _asset_table(product) + _change_section(product)
            + "".join(_raster_section(r, record) for r in product.rasters))
    failed = [o for o in record.outcomes if o.status != "ok"]
    failures = "".join(f'<p class="note">FAILED {html.escape(str(o.error))}</p>' for o in failed)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>survey_cracks report</title><style>{_CSS}</style></head>"
            f"<body><h1>Crack survey report</h1><p>Run finished {html.escape(record.finished_at)}; model sha256 "
            f"{record.model_sha256[:12]}; {record.mode} mode; threshold {record.threshold:g}; "
            f"{len(record.outcomes) - len(failed)} of {len(record.outcomes)} rasters done.</p>{failures}{legend_html()}"
            + "".join(sections) + "</body></html>")
    path = record.out / REPORT_HTML
    write_text(path, page)
    return path
