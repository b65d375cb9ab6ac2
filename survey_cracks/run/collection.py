"""A survey of photos as one collection: many photos per Dask task, one GeoPackage per survey (`deliver.collection`).

Road-scan and inspection surveys are folders of thousands of small photos without
georeferencing. Run one raster at a time, each photo paid for a padded window, its own
tasks, a COG, a folder of ten files and the reports rebuilt; here:

- each photo runs in windows sized to it (`tiling.photo_windows`);
- photos go to the workers in groups of a few megapixels (`dispatch.photo_groups`), and a worker
  does all of a photo's work: network, tracing, evaluation against its annotation, its heatmap
  PNG; the client only appends the features to the survey's GeoPackage, so writing overlaps the
  network;
- the collection is one entry in OUT's manifest; which photos are done is its journal
  (``photos.jsonl``): a killed or later run computes only the photos not in it, or changed since.

A photo that fails (unreadable, corrupt) fails alone: one line, its row in photos.csv says why,
and the next run tries it again.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import sys
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import cv2
import geopandas as gpd
import numpy as np
from rasterio.errors import NotGeoreferencedWarning

from survey_cracks.config import RunConfig
from survey_cracks.deliver.collection import (
    COLLECTION,
    FRAME_CSV,
    HEATMAPS,
    CollectionWriter,
    FramePosition,
    apply_positions,
    compact_journal,
    heatmap_name,
    iter_journal,
    photo_row,
    table_positions,
)
from survey_cracks.deliver.console import counted
from survey_cracks.deliver.outcomes import COMPUTED, UP_TO_DATE, RasterCounts, RasterOutcome, RasterSummary
from survey_cracks.errors import OutputError, PositionsError, RasterError, SurveyCracksError
from survey_cracks.evaluation.evaluate import RasterMetrics, combine, evaluate_raster
from survey_cracks.inference.dispatch import ModelSpec, grouped_results, photo_groups, segment_photo
from survey_cracks.io.annotations import Truth, find_annotation
from survey_cracks.io.discover import SurveyRaster
from survey_cracks.io.raster import RasterInfo, inspect_raster
from survey_cracks.io.remote import Source
from survey_cracks.outputs import REPORT, write_json
from survey_cracks.run.manifest import Fingerprint, Inputs
from survey_cracks.run.notices import optional_truth
from survey_cracks.vectors.heatmap import probability_of
from survey_cracks.vectors.tracing import HeatmapTracer

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}
# Sidecars that georeference a JPEG or PNG (world files, GDAL's .aux.xml): such an image is a map, not a photo.
WORLD_FILES = (".jgw", ".jpgw", ".pgw", ".pngw", ".wld", ".aux.xml")


def is_photo(item: SurveyRaster) -> bool:
    """A JPEG or PNG without a world file: a photo for the collection layout (decided without opening it)."""
    path = item.path
    if not isinstance(path, Path) or path.suffix.lower() not in PHOTO_SUFFIXES:
        return False
    return not any(path.with_suffix(s).exists() or Path(f"{path}{s}").exists() for s in WORLD_FILES)


@dataclass(frozen=True)
class PhotoJob:
    """One photo to compute: its name in the collection, its file, its annotation, and what it is made from."""

    name: str
    path: Path
    annotation: Path | None
    inputs: str  # sha256 of the photo's `Inputs`: equal means its journal line is up to date
    size: int  # bytes of the file: groups are cut by this (a photo's pixels are not known before it is opened)


@dataclass(frozen=True)
class PhotoSettings:
    """What every photo of the run is computed with (sent once per task)."""

    spec: ModelSpec
    config: RunConfig
    threshold: float
    margin: int
    survey: str
    folder: Path  # the collection's folder in OUT
    heatmaps: bool = True  # False: --no-heatmaps


@dataclass
class PhotoResult:
    """A photo back from its worker: its outcome (report.json's form), its vectors, its score."""

    outcome: RasterOutcome
    polygons: gpd.GeoDataFrame | None = None
    lines: gpd.GeoDataFrame | None = None
    score: float | None = None
    network_px: int | None = None
    position: tuple[float, float] | None = None  # (longitude, latitude), EPSG:4326, from the photo's EXIF GPS


GPS_IFD = 0x8825  # EXIF's GPS tags: 1/2 latitude ref/value, 3/4 longitude ref/value (degrees, minutes, seconds)


def exif_position(path: Path) -> tuple[float, float] | None:
    """(longitude, latitude) in EPSG:4326 from the photo's EXIF GPS tags; None without them (or unreadable)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            gps = image.getexif().get_ifd(GPS_IFD)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    if 2 not in gps or 4 not in gps:
        return None

    def degrees(value: tuple, ref: str, negative: str) -> float:
        d, m, s = (float(v) for v in value)
        return -(d + m / 60 + s / 3600) if str(ref).upper().startswith(negative) else d + m / 60 + s / 3600

    try:
        return degrees(gps[4], gps.get(3, "E"), "W"), degrees(gps[2], gps.get(1, "N"), "S")
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def read_frame_positions(path: Path) -> dict[str, FramePosition]:
    """A CSV of frame positions: columns ``photo`` (file name or stem), ``lon``, ``lat`` (degrees, EPSG:4326) and an
    optional ``time``, kept as written; PositionsError naming the file and the row for anything else."""
    fix = "columns photo,lon,lat[,time]: the photo's file name or stem, longitude and latitude in degrees (EPSG:4326)"
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip().lower() for c in reader.fieldnames or []]
            if not {"photo", "lon", "lat"} <= set(columns):
                raise PositionsError(path, f"row 1: the header has {', '.join(columns) or 'no columns'}", fix)
            positions: dict[str, FramePosition] = {}
            for number, raw in enumerate(reader, start=2):
                row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
                if not any(row.values()):
                    continue
                photo = row["photo"]
                try:
                    lon, lat = float(row["lon"]), float(row["lat"])
                except ValueError:
                    raise PositionsError(path, f"row {number} ({photo or 'no photo'}): lon {row['lon']!r}, lat "
                                         f"{row['lat']!r} are not numbers", fix) from None
                if not photo or not (-180 <= lon <= 180 and -90 <= lat <= 90):
                    what = "no photo named" if not photo else f"lon {lon:g}, lat {lat:g} is not a position in degrees"
                    raise PositionsError(path, f"row {number}: {what}", fix)
                if photo in positions:
                    raise PositionsError(path, f"row {number}: {photo} is given a position twice", "keep one row per photo")
                positions[photo] = FramePosition(lon, lat, row.get("time") or None)
    except OSError as error:
        raise PositionsError(path, f"cannot read it ({error.strerror or error})", "check the file and its permissions") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise PositionsError(path, f"not a CSV text file ({error})", fix) from None
    return positions


def place_photos(plans: list[CollectionRun], positions: dict[str, FramePosition], path: Path) -> None:
    """Each plan's photos given their row of ``positions`` (by collection name, file name or stem); PositionsError when
    the CSV names no photo of the run."""
    matched = 0
    for plan in plans:
        for job in plan.photos:
            position = next((positions[key] for key in (job.name, job.path.name, job.path.stem) if key in positions), None)
            if position is not None:
                plan.positions[job.name] = position
                matched += 1
    if not matched:
        example = next(iter(positions), "nothing")
        raise PositionsError(path, f"names no photo of this run ({len(positions)} rows, e.g. {example})",
                             "name each photo by its file name (scan_001.jpg) or stem (scan_001) in column photo")


def photo_inputs(item: SurveyRaster, annotation: Source | None, model_sha256: str, config_hash: str) -> str:
    from survey_cracks.run.manifest import fingerprint

    inputs = Inputs(raster=fingerprint(item.path), model_sha256=model_sha256, config_sha256=config_hash)
    return hashlib.sha256(inputs.with_annotation(annotation).model_dump_json().encode()).hexdigest()


def collection_inputs(jobs: list[PhotoJob], model_sha256: str, config_hash: str) -> Inputs:
    """The collection's entry in the manifest: changes when any photo (or its annotation) does."""
    # by name, so `evaluate OUT` (which lists the photos from the journal) records what a run would
    digest = hashlib.sha256("".join(f"{j.name}:{j.inputs}\n" for j in sorted(jobs, key=lambda j: j.name)).encode()).hexdigest()
    return Inputs(raster=Fingerprint(size=sum(j.size for j in jobs), sample_sha256=digest), model_sha256=model_sha256,
                  config_sha256=config_hash)


# How long a thread may hold the GIL while another waits for it (CPython's default: 5 ms). A worker's two photo
# tasks share one GIL: the network gives it up for every operation and must take it back after each (about a
# hundred a photo), while the other task traces in Python and keeps it up to the interval each time. Measured
# (bench/photo_gil.py, 448 x 448, one torch thread): the network took ~90 ms a photo alone and ~150 ms beside a
# tracing thread at 5 ms and at 0.5 ms, ~117 ms at 0.1 ms; the tracing itself is not slower.
PHOTO_SWITCH_INTERVAL_S = 0.0001
_switch_lock = threading.Lock()
_switch_users = 0
_switch_before = sys.getswitchinterval()


@contextlib.contextmanager
def photo_switch_interval() -> Iterator[None]:
    """The short switch interval while any photo task of this process runs; the previous one after the last.

    The interval is process-wide: left set, it would also govern the orthomosaic windows a worker computes
    later (not measured at it) and the process of an in-process run. Counted, so that one of two concurrent
    photo tasks ending does not take the interval from the other.
    """
    global _switch_users, _switch_before
    with _switch_lock:
        if _switch_users == 0:
            _switch_before = sys.getswitchinterval()
            sys.setswitchinterval(PHOTO_SWITCH_INTERVAL_S)
        _switch_users += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_before)


def photos_task(jobs: list[PhotoJob], settings: PhotoSettings) -> list[PhotoResult]:
    """Dask task: every photo of ``jobs`` computed in turn (each fails alone), at the short switch interval."""
    with photo_switch_interval():
        return [compute_photo(job, settings) for job in jobs]


def compute_photo(job: PhotoJob, settings: PhotoSettings) -> PhotoResult:
    """One photo, all in this worker: network, tracing, heatmap PNG, evaluation; its error as one line."""
    config = settings.config
    outcome = RasterOutcome(survey=settings.survey, raster=job.name, source=str(job.path))
    started = time.perf_counter()
    try:
        info = inspect_raster(job.path)
        outcome.info = raster_summary(info)
        truth, outcome.annotation_error = optional_truth(job.path, info, config.evaluate, job.annotation)
        photo = segment_photo(info, settings.spec, config.inference.window_px, settings.margin,
                              config.tiling.min_valid_fraction)
        outcome.seconds["inference"] = round(time.perf_counter() - started, 3)
        if photo.windows_processed == 0:
            raise RasterError(job.path, "no window lies inside the photo's valid pixels",
                                    "check the image's alpha or nodata")
        probability = probability_of(photo.levels)
        polygons, lines = trace_photo(probability, info, settings.threshold, config)
        outcome.counts = RasterCounts(mode="mask", windows=photo.windows, windows_processed=photo.windows_processed,
                                      window_px=config.inference.window_px, margin_px=settings.margin,
                                      processing_scale=1.0).with_vectors(settings.threshold, polygons, lines, False)
        heatmap = write_heatmap(photo.levels, settings, job, truth is not None)
        if truth is not None and heatmap is not None:
            score_photo(outcome, heatmap, truth, polygons, settings.threshold, info, config)
            if not settings.heatmaps:
                heatmap.unlink(missing_ok=True)
        outcome.seconds["photo"] = round(time.perf_counter() - started, 3)
        finite = probability[np.isfinite(probability)]
        return PhotoResult(outcome, polygons, lines, round(float(finite.max()), 4) if finite.size else None,
                           photo.network_px, exif_position(job.path))
    except SurveyCracksError as error:  # a PixelReadError too: a corrupt photo
        outcome.status, outcome.error = "error", error.message
    except Exception as error:  # noqa: BLE001 — one photo's bug must not stop the survey
        outcome.status = "error"
        outcome.error = f"{job.path}: unexpected {type(error).__name__}: {error} — please report this with run.json"
        outcome.traceback = traceback.format_exc(limit=5)
    outcome.seconds["photo"] = round(time.perf_counter() - started, 3)
    return PhotoResult(outcome)


def trace_photo(probability: np.ndarray, info: RasterInfo, threshold: float, config: RunConfig
                ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A photo's crack polygons and centrelines at ``threshold`` from its probability (what a run and
    `evaluate OUT` both trace: a photo's heatmap is small enough to hold)."""
    tracer = HeatmapTracer(info, threshold, config.vectorize.for_mode("mask"), config.centrelines)
    tracer.settle_all(lambda window: probability[window.toslices()])
    polygons, lines = tracer.finish()
    assert lines is not None  # mask mode: centrelines are always traced
    return polygons, lines


def score_photo(outcome: RasterOutcome, heatmap: Path, truth: Truth, polygons: gpd.GeoDataFrame, threshold: float,
                info: RasterInfo, config: RunConfig) -> None:
    """``outcome``'s metrics against ``truth`` from the heatmap PNG (`ignore` areas scored by nobody, as for rasters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        outcome.measured = evaluate_raster(heatmap, truth, polygons, threshold, info, config.evaluate)
    outcome.counts.annotation = truth.path.name


def rescore_photo(entry: dict[str, Any], heatmap: Path, source: Path, annotation: Path | None, threshold: float,
                  config: RunConfig) -> tuple[RasterOutcome, gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """A finished photo (its journal line) at ``threshold`` again, from its heatmap PNG and ``annotation`` (the one now
    beside ``source``): the vectors and figures a run at ``threshold`` gives (`evaluate OUT`); its timings kept."""
    row = entry["row"]
    before = RasterOutcome.from_report(entry["report"], row.get("action") or COMPUTED, row.get("reason") or "")
    if not source.is_file():
        raise RasterError(source, "source photo of this output not found (photos.jsonl records it)",
                          "run evaluate from the folder the run was started in, or restore the photo")
    info = inspect_raster(source)
    truth, annotation_error = optional_truth(source, info, config.evaluate, annotation)
    levels = cv2.imread(str(heatmap), cv2.IMREAD_UNCHANGED)
    if levels is None or levels.shape != (info.height, info.width):
        raise OutputError(heatmap, f"unreadable, or not the {info.width} x {info.height} px of {source.name}",
                          "run the photos again with --force to rewrite the heatmaps")
    polygons, lines = trace_photo(probability_of(levels), info, threshold, config)
    counts = replace(before.counts, annotation=None).with_vectors(threshold, polygons, lines, False)
    outcome = RasterOutcome(survey=before.survey, raster=before.raster, source=before.source, info=before.info,
                            counts=counts, seconds=before.seconds, action=before.action, reason=before.reason,
                            annotation_error=annotation_error)
    if truth is not None:
        score_photo(outcome, heatmap, truth, polygons, threshold, info, config)
    return outcome, polygons, lines


def write_heatmap(levels: np.ndarray, settings: PhotoSettings, job: PhotoJob, needed: bool) -> Path | None:
    """The photo's heatmap levels as a PNG, atomically: in heatmaps/, or (``--no-heatmaps``) a hidden one the
    evaluation reads and the caller removes; None when neither is wanted."""
    if not settings.heatmaps and not needed:
        return None
    target = settings.folder / (heatmap_name(job.name) if settings.heatmaps else f".{job.name}.eval.png")
    tmp = target.with_name(f".{target.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), levels, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OutputError(target, "cannot write the heatmap PNG", "check free space and permissions of OUT")
    tmp.replace(target)
    return target


# The warning a collection with failed photos carries ("2 of 5 photos failed (photos.csv says why); ..."): the
# run marks the collection's manifest entry as an error by it
PHOTOS_FAILED = "failed (photos.csv says why)"


@dataclass
class CollectionRun:
    """A survey's photos to compute now, and the manifest's view of the whole collection."""

    survey: str
    folder: Path  # OUT/<survey>/collection
    photos: list[PhotoJob]
    inputs: Inputs
    source: str  # the survey folder as given to `run` (relative to where it ran, or absolute): report.json's
    survey_source: str  # the same folder, absolute: the manifest's (it names the survey in later runs)
    done: set[str] = field(default_factory=set)  # photos whose journal line is up to date
    positions: dict[str, FramePosition] = field(default_factory=dict)  # from --frame-positions: win over EXIF


def plan_collection(survey: str, out: Path, items: list[SurveyRaster], model_sha256: str, config_hash: str, force: bool) -> tuple[CollectionRun, list[str]]:
    """The collection's photos, those whose journal line is up to date set apart; unreadable photos' lines."""
    folder = out / survey / COLLECTION
    # only each photo's inputs are kept from its journal line (a line is ~8 KiB: 50,000 photos would be 400 MB)
    journal = {} if force else {name: entry.get("inputs") for name, entry in iter_journal(folder)}
    jobs, errors, done = [], [], set()
    for item in items:
        try:
            annotation = find_annotation(item.path)
            inputs = photo_inputs(item, annotation, model_sha256, config_hash)
            size = Path(item.path).stat().st_size
        except OSError as error:
            errors.append(f"{item.path}: cannot read it ({error.strerror or error}) — check the file and its permissions")
            continue
        job = PhotoJob(item.name, Path(item.location), Path(annotation).absolute() if annotation else None, inputs, size)
        if item.name in journal and journal[item.name] == inputs:
            done.add(item.name)
        jobs.append(job)
    given = Path(items[0].path).parent  # report.json records the survey folder as given to `run`, as a raster's own path
    return CollectionRun(survey, folder, jobs, collection_inputs(jobs, model_sha256, config_hash), str(given),
                         str(items[0].folder or given.resolve()), done), errors


def run_collection(plan: CollectionRun, client: Any, settings: PhotoSettings, progress: bool,
                   say: Callable[[str], None], error: Callable[[str], None]) -> RasterOutcome:
    """Every photo of ``plan`` not yet done through the cluster into the collection; the collection's outcome."""
    started = time.perf_counter()
    # a CSV of frame positions given to an earlier run holds until another is given; EXIF is read again per photo
    positions = {name: p for name, p in table_positions(plan.folder).items() if p.source == FRAME_CSV} | plan.positions
    todo = [job for job in plan.photos if job.name not in plan.done]
    if plan.done:
        say(f"{len(plan.done)} of {counted(len(plan.photos), 'photo')} already done")
    compact_journal_if_needed(plan)
    writer = CollectionWriter(plan.folder)
    writer.start(plan.done)
    failed: list[dict[str, Any]] = []
    empty: dict[str, gpd.GeoDataFrame] = {}
    inputs_of = {job.name: job.inputs for job in todo}
    groups = photo_groups(todo, lambda job: job.size * 8)  # ~8 pixels a byte of JPEG: groups of a few MP
    for result in grouped_results(client, photos_task, groups, settings, progress=progress, total=len(todo)):
        outcome = result.outcome
        outcome.action, outcome.reason = COMPUTED, "new or changed"
        row = photo_row(outcome, result.score, result.network_px, settings.heatmaps, result.position)
        if outcome.status != "ok":
            error(outcome.error or f"{outcome.source}: failed")
            failed.append(row)
            continue
        for name, frame in (("cracks", result.polygons), ("centrelines", result.lines)):
            if frame is not None and name not in empty:
                empty[name] = frame.iloc[:0]
        writer.add(outcome.raster, result.polygons, result.lines,
                   {"inputs": inputs_of[outcome.raster], "report": outcome.as_dict(),
                    "row": row})
    return close_collection(writer, plan.survey, plan.source, {job.name for job in plan.photos}, plan.done, failed,
                            empty, time.perf_counter() - started, positions)


def close_collection(writer: CollectionWriter, survey: str, source: str, names: set[str], done: set[str],
                     failed: list[dict[str, Any]], empty: dict[str, gpd.GeoDataFrame], seconds: float,
                     positions: dict[str, FramePosition]) -> RasterOutcome:
    """The collection's tables and report.json from its journal (photos in ``names``; ``done``: up to date before
    this run), the ``failed`` photos' rows and the ``positions`` that win over the photos' EXIF; its outcome."""
    writer.flush()
    remove_stale_heatmaps(writer.folder, names)
    rows, reports = [], []
    for name, entry in iter_journal(writer.folder):  # a line at a time: the reports (~8 KiB a photo) are not held
        if name in names:
            rows.append(entry["row"] | ({"action": UP_TO_DATE} if name in done else {}))
            reports.append(PhotoTotals.of(RasterOutcome.from_report(entry["report"], COMPUTED)))
    writer.finish(apply_positions(iter(sorted(rows + failed, key=lambda r: r["photo"])), positions), empty)
    outcome = collection_outcome(survey, source, names, reports, failed, seconds)
    write_json(writer.folder / REPORT, outcome.as_dict() | {"layout": COLLECTION, "photos": len(names),
                                                            "photos_failed": len(failed)})
    return outcome


def compact_journal_if_needed(plan: CollectionRun) -> None:
    """Journal lines of photos now out of date (changed, gone) dropped before new ones are added."""
    if {name for name, _ in iter_journal(plan.folder)} != plan.done:
        plan.folder.mkdir(parents=True, exist_ok=True)
        compact_journal(plan.folder, plan.done)


def remove_stale_heatmaps(folder: Path, names: set[str]) -> None:
    """Heatmap PNGs of photos no longer in the collection removed: the outputs and photos.csv never disagree."""
    heatmaps = folder / HEATMAPS
    if heatmaps.is_dir():
        for png in heatmaps.glob("*.png"):
            if png.name.removesuffix(".png") not in names:
                png.unlink(missing_ok=True)


@dataclass(frozen=True)
class PhotoTotals:
    """What the collection's totals take from a photo's report (kept per photo instead of the whole report)."""

    windows: int
    windows_processed: int
    polygons: int
    centrelines: int
    crack_length: float
    max_width: float | None
    threshold: float | None
    measured: RasterMetrics | None

    @classmethod
    def of(cls, report: RasterOutcome) -> PhotoTotals:
        c = report.counts
        return cls(c.windows or 0, c.windows_processed or 0, c.polygons or 0, c.centrelines or 0, c.crack_length or 0,
                   c.max_width, c.threshold, report.measured)


def collection_outcome(survey: str, source: str, names: set[str], reports: list[PhotoTotals],
                       failed: list[dict[str, Any]], seconds: float) -> RasterOutcome:
    """The collection as one line of summary.csv and the survey's report: its photos' totals."""
    counts = RasterCounts(mode="mask", windows=sum(r.windows for r in reports),
                          windows_processed=sum(r.windows_processed for r in reports),
                          polygons=sum(r.polygons for r in reports),
                          centrelines=sum(r.centrelines for r in reports),
                          crack_length=round(sum(r.crack_length for r in reports), 4),
                          max_width=max((r.max_width for r in reports if r.max_width is not None), default=None),
                          threshold=reports[0].threshold if reports else None, unit="px", photos=len(names))
    measured = [r.measured for r in reports if r.measured is not None]
    if measured:
        counts.photos_annotated = len(measured)
        counts.annotation = counted(len(measured), "annotated photo")
    outcome = RasterOutcome(survey=survey, raster=COLLECTION, source=source, counts=counts,
                            measured=combine(measured) if measured else None, seconds={"collection": round(seconds, 2)})
    if failed:
        outcome.warnings.append(f"{len(failed)} of {counted(len(names), 'photo')} {PHOTOS_FAILED}; "
                                "the next run tries them again")
    if not reports:
        outcome.status, outcome.error = "error", f"{source}: no photo of the collection could be computed"
    return outcome


def collection_photos(items: list[SurveyRaster], layout: str) -> tuple[dict[str, list[SurveyRaster]], list[SurveyRaster]]:
    """``items`` split into each survey's photos (the collection layout) and the rasters run one by one.

    A raster whose output name is ``collection`` (collection.tif) would share its folder with the survey's
    collection: it is named as a second raster of one stem is (``collection_tif``), in every survey, so
    that its name does not change when photos are added to the survey later.
    """
    if layout != COLLECTION:
        return {}, items
    photos: dict[str, list[SurveyRaster]] = {}
    rest = []
    for item in items:
        if is_photo(item):
            photos.setdefault(item.survey, []).append(item)
        elif item.name == COLLECTION:
            rest.append(replace(item, name=f"{COLLECTION}_{Path(str(item.path)).suffix.lstrip('.').lower() or 'raster'}"))
        else:
            rest.append(item)
    return photos, rest


PIXEL_COORDINATES = "pixel coordinates (x = column, y = -row); the image has no georeferencing"


def raster_summary(info: RasterInfo) -> RasterSummary:
    """A raster as report.json describes it (``raster_info``), photo or orthomosaic."""
    return RasterSummary(
        width=info.width, height=info.height, dtype=info.dtype, crs=info.crs, georeferenced=info.georeferenced,
        pixel_size=info.pixel_size,
        coordinates="map coordinates of the raster CRS" if info.georeferenced else PIXEL_COORDINATES,
        transform=list(info.transform)[:6], has_mask=info.has_mask, notes=list(info.notes),
    )


__all__ = ["COLLECTION", "CollectionRun", "PhotoJob", "PhotoSettings", "collection_photos", "is_photo",
           "place_photos", "plan_collection", "read_frame_positions", "raster_summary", "run_collection"]
