"""Where annotating next would teach the model most: `survey-cracks suggest OUT`.

A user fine-tuning on their own structure (`training.adapt`) annotates a few windows; the
ones worth their time are where the model is unsure or plausibly wrong, read from a
finished run's heatmaps alone (no model, no annotation needed):

- **uncertain**: many pixels whose probability is near the threshold (log-odds within ±0.5:
  0.38-0.62 at a threshold of 0.5, 0.06-0.15 at 0.1): the decision there flips with a small
  change of the model;
- **weak_line**: long centrelines of sub-threshold evidence (probability between half the
  threshold and the threshold), the faint hairlines the model half sees and misses;
- **straight_line**: long, straight runs of predicted crack: joints, board edges and seams
  are straight, cracks seldom are, so these are the likely false cracks to mark ``not_crack``.

Each window of a fixed grid (``window`` px) gets the three measures, each as a length in
window sides (pixels / window), and its score is their sum; the ranking is over the whole
run, and the reason is the largest. The heatmap is read window by window (bounded memory).
Written per raster as ``OUT/<survey>/<raster>/suggest.gpkg`` (layer ``suggestions``, the
raster's CRS, styled for QGIS), and ``OUT/suggest.html``: one page with every crop.
"""

from __future__ import annotations

import base64
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import cv2
import geopandas as gpd
import numpy as np
import rasterio
import rasterio.windows
import shapely
from rasterio.windows import Window
from skimage.morphology import skeletonize
from tqdm import tqdm

from survey_cracks.deliver.collection import COLLECTION, PHOTOS_CSV
from survey_cracks.deliver.report_html import _rgb, _templates
from survey_cracks.errors import SurveyCracksError
from survey_cracks.outputs import atomic_write
from survey_cracks.outputs.qgis_styles import embed_layer_styles
from survey_cracks.tiling import block_windows
from survey_cracks.vectors.heatmap import read_probability

Reason = Literal["uncertain", "weak_line", "straight_line"]
NEAR = 0.5  # log-odds band around the threshold counted as uncertain (0.5 at a 0.5 threshold: 0.38-0.62)
MIN_WEAK_PX = 24  # shorter weak centrelines are noise
LAYER = "suggestions"


@dataclass
class WindowScore:
    """The three measures of one window, in window sides (pixels / window edge)."""

    uncertain: float
    weak_line: float
    straight_line: float

    @property
    def score(self) -> float:
        return self.uncertain + self.weak_line + self.straight_line

    @property
    def reason_kind(self) -> Reason:
        measures = {"uncertain": self.uncertain, "weak_line": self.weak_line, "straight_line": self.straight_line}
        return max(measures, key=measures.__getitem__)  # type: ignore[return-value]

    def reason(self, window: int) -> str:
        kind = self.reason_kind
        if kind == "uncertain":
            return f"{self.uncertain * window:.0f} px near the threshold: the model is unsure here"
        if kind == "weak_line":
            return f"{self.weak_line * window:.0f} px of faint line just below the threshold: a missed hairline?"
        return f"{self.straight_line * window:.0f} px of straight predicted crack: a joint or seam? mark it not_crack"


def near_threshold(p: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose odds are within a factor e^NEAR of the threshold's (a band that fits any threshold: 0.1 or 0.5)."""
    eps = 1e-4
    t = np.clip(threshold, eps, 1 - eps)
    q = np.clip(p, eps, 1 - eps)
    return np.abs(np.log(q / (1 - q)) - np.log(t / (1 - t))) < NEAR


def score_window(prob: np.ndarray, threshold: float, window: int) -> WindowScore:
    """The measures of one window's probabilities (NaN outside the footprint)."""
    footprint = np.isfinite(prob)
    p = np.where(footprint, prob, 0.0)
    # The footprint's own edge (a mosaic's ragged border) draws faint false lines: 8 px of it are left out.
    valid = cv2.erode(footprint.astype(np.uint8), np.ones((17, 17), np.uint8), borderValue=1).astype(bool)
    predicted = valid & (p >= threshold)
    # The soft edge of every found crack is near the threshold too: only pixels away from one count.
    edge = cv2.dilate(predicted.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    uncertain = int(np.count_nonzero(valid & near_threshold(p, threshold) & ~edge))
    weak = valid & (p >= threshold / 2) & (p < threshold)
    weak_px = 0
    if weak.any():
        skeleton = skeletonize(weak)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(skeleton.astype(np.uint8), connectivity=8)
        sizes = stats[1:, cv2.CC_STAT_AREA]
        weak_px = int(sizes[sizes >= MIN_WEAK_PX].sum())
    straight_px = 0
    if predicted.any():
        # A skeleton wobbles by a pixel: thickened, Hough finds its straight runs; the skeleton pixels
        # near a found segment are counted once however many segments overlap there.
        skeleton = skeletonize(predicted).astype(np.uint8)
        thick = cv2.dilate(skeleton * 255, np.ones((3, 3), np.uint8))
        lines = cv2.HoughLinesP(thick, 1, np.pi / 180, threshold=max(30, window // 4), minLineLength=max(32, window // 3),
                                maxLineGap=4)
        if lines is not None and len(lines):
            drawn = np.zeros_like(skeleton)
            for x0, y0, x1, y1 in lines.reshape(-1, 4).tolist():
                cv2.line(drawn, (x0, y0), (x1, y1), 1, 5)
            straight_px = int(np.count_nonzero(skeleton & drawn))
    return WindowScore(uncertain / window, weak_px / window, straight_px / window)


@dataclass
class Suggestion:
    survey: str
    raster: str
    source: str
    window: Window
    score: WindowScore
    geometry: object  # the window's polygon in the raster's coordinates
    crs: str | None
    threshold: float


@dataclass
class SuggestResult:
    suggestions: list[Suggestion]
    layers: list[Path]
    html: Path


def raster_folders(out: Path) -> list[tuple[Path, dict]]:
    """Every finished raster of a run: its folder and report.json."""
    found = []
    for report_path in sorted(Path(out).glob("*/*/report.json")):
        report = json.loads(report_path.read_text())
        if report.get("status") == "ok" and (report_path.parent / "heatmap.tif").is_file():
            found.append((report_path.parent, report))
    if not found:
        collections = photo_collections(out)
        raise SurveyCracksError(out, "no finished raster with a heatmap.tif in this folder" + (
            f" (only the photo collection{'s' if len(collections) > 1 else ''} {', '.join(collections)})" if collections else ""),
            "give the --out folder of a finished `survey-cracks run` (photos: run them with --layout per-raster)")
    return found


def photo_collections(out: Path) -> list[str]:
    """The surveys of ``out`` written in the collection layout: `suggest` does not rank their photos yet."""
    return sorted(path.parent.parent.name for path in Path(out).glob(f"*/{COLLECTION}/{PHOTOS_CSV}"))


def suggest(out: Path, n: int = 20, window: int = 256, progress: bool = True,
            log: Callable[[str], None] = print) -> SuggestResult:
    """Rank every window of every raster of the run ``out``; write the top ``n`` as layers and one HTML page."""
    out = Path(out)
    candidates: list[Suggestion] = []
    folders = raster_folders(out)
    skipped = photo_collections(out)
    if skipped:
        log(f"not ranked: the photo collection{'s' if len(skipped) > 1 else ''} {', '.join(skipped)} (suggest reads "
            "per-raster heatmaps; run such photos with --layout per-raster to have their windows ranked)")
    for folder, report in tqdm(folders, desc="scoring windows", unit="raster", disable=not progress):
        threshold = float((report.get("counts") or {}).get("threshold") or 0.5)
        with rasterio.open(folder / "heatmap.tif") as src:
            for win in block_windows(src.width, src.height, window):
                prob = read_probability(src, win)
                if not np.isfinite(prob).any():
                    continue
                measures = score_window(prob, threshold, window)
                if measures.score <= 0:
                    continue
                polygon = shapely.box(*rasterio.windows.bounds(win, src.transform))
                candidates.append(Suggestion(report["survey"], report["raster"], report["source"], win, measures, polygon,
                                             src.crs.to_string() if src.crs else None, threshold))
    chosen = sorted(candidates, key=lambda s: -s.score.score)[:n]
    for folder, _ in folders:  # a raster without a suggestion this time keeps none from an earlier call
        (folder / "suggest.gpkg").unlink(missing_ok=True)
    layers = _write_layers(out, chosen, window)
    html = _write_html(out, chosen, window)
    log(f"{len(chosen)} windows to annotate next, of {len(candidates)} scored: {', '.join(map(str, layers))}; {html}")
    return SuggestResult(chosen, layers, html)


def _write_layers(out: Path, chosen: list[Suggestion], window: int) -> list[Path]:
    """One ``suggest.gpkg`` per raster (each in its raster's CRS), ranks over the whole run, styled."""
    written = []
    for (survey, raster) in dict.fromkeys((s.survey, s.raster) for s in chosen):
        rows = [(rank, s) for rank, s in enumerate(chosen, 1) if (s.survey, s.raster) == (survey, raster)]
        frame = gpd.GeoDataFrame({
            "rank": [rank for rank, _ in rows], "score": [round(s.score.score, 3) for _, s in rows],
            "reason_kind": [s.score.reason_kind for _, s in rows], "reason": [s.score.reason(window) for _, s in rows],
            "uncertain": [round(s.score.uncertain, 3) for _, s in rows],
            "weak_line": [round(s.score.weak_line, 3) for _, s in rows],
            "straight_line": [round(s.score.straight_line, 3) for _, s in rows],
            "col": [int(s.window.col_off) for _, s in rows], "row": [int(s.window.row_off) for _, s in rows],
        }, geometry=[s.geometry for _, s in rows], crs=rows[0][1].crs)
        path = out / survey / raster / "suggest.gpkg"
        with atomic_write(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # pyogrio's note on a layer without a CRS (pixel coordinates)
            frame.to_file(tmp, driver="GPKG", layer=LAYER)
            embed_layer_styles(Path(tmp), {LAYER: "suggestions.qml"})
        written.append(path)
    return written


def _write_html(out: Path, chosen: list[Suggestion], window: int) -> Path:
    """A page of the crops, ranked, each with its reason and where it is."""
    cards = []
    for rank, s in enumerate(chosen, 1):
        with rasterio.open(s.source) as src:
            rgb = _rgb(src, s.window, (window, window))
        with rasterio.open(out / s.survey / s.raster / "heatmap.tif") as src:
            prob = read_probability(src, s.window)
        overlay = rgb.copy()
        p = np.where(np.isfinite(prob), prob, 0.0)
        for where, colour in ((near_threshold(p, s.threshold), (255, 170, 0)), (p >= s.threshold, (255, 0, 0))):
            overlay[where] = (0.4 * overlay[where] + 0.6 * np.array(colour)).astype(np.uint8)
        cards.append({"rank": rank, "survey": s.survey, "raster": s.raster, "reason": s.score.reason(window),
                      "kind": s.score.reason_kind, "score": round(s.score.score, 2),
                      "col": int(s.window.col_off), "row": int(s.window.row_off), "size": window,
                      "image": _png(rgb), "overlay": _png(overlay)})
    page = _templates().get_template("suggest.html.j2").render(cards=cards, out=str(out))
    path = out / "suggest.html"
    with atomic_write(path) as tmp:
        Path(tmp).write_text(page)
    return path


def _png(rgb: np.ndarray) -> str:
    ok, buffer = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode()
