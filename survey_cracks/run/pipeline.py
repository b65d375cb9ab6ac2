"""The survey job: every raster through read → infer → heatmap → vectorize → evaluate → write (`process_raster`).

Each raster is built in a hidden ``.<name>.partial`` folder (`outputs.work_folder`) and
renamed into place only when complete, so a failure (or a kill) never leaves half-written
outputs; a kill in mask mode leaves the staged heatmap and its windows journal there, and
the rerun resumes from the finished windows (`journal`). A raster that fails is reported
with one clear line and the batch goes on.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import shutil
import time
import traceback
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import rasterio
from rasterio.windows import Window

from survey_cracks.background import in_background
from survey_cracks.config import EvaluateConfig, HeatmapConfig, RunConfig
from survey_cracks.deliver.assets import load_assets
from survey_cracks.deliver.condition import AssetRules
from survey_cracks.deliver.console import counted, rasters_and_photos, raster_found, survey_threshold, totals_lines
from survey_cracks.deliver.deliverables import write_deliverables
from survey_cracks.deliver.outcomes import (
    COMPUTED,
    NOT_IN_INPUTS,
    RUNNING,
    UP_TO_DATE,
    RasterCounts,
    RasterOutcome,
    package_versions,
    write_summary,
)
from survey_cracks.errors import ConfigError, InfrastructureError, ModelFileError, OutputError, RasterError, SurveyCracksError
from survey_cracks.evaluation.evaluate import RasterMetrics, combine, evaluate_raster
from survey_cracks.inference.cluster import EarlyCluster, dashboard_of, dask_client
from survey_cracks.inference.dispatch import (
    ModelSpec,
    compute_when_warm,
    model_spec,
    release_worker_memory,
    score_raster,
    segment_raster,
    source_core,
    warm_workers,
)
from survey_cracks.inference.window_size import WindowChoice, cap_to_raster, resolve_window
from survey_cracks.tuning import trim_heap
from survey_cracks.io.annotations import find_annotation
from survey_cracks.io.discover import SurveyRaster, find_rasters
from survey_cracks.io.raster import RasterInfo, inspect_raster
from survey_cracks.io.remote import Source
from survey_cracks.models.checkpoint import SHIPPED_MODEL, ModelMeta, file_sha256, read_meta
from survey_cracks.outputs import (  # noqa: F401 (names
    CENTRELINES_GEOJSON,
    CRACK_MASK,
    GEOJSON,
    GPKG,
    HEATMAP,
    OUTPUT_NAMES,
    REPORT,
    STAC_ITEM,  # importable from here too)
    remove_outputs,
    replace_folder,
    work_folder,
    write_json,
    write_vectors,
)
from survey_cracks.deliver.collection import FramePosition
from survey_cracks.run.collection import (
    COLLECTION,
    PHOTOS_FAILED,
    CollectionRun,
    PhotoSettings,
    collection_photos,
    place_photos,
    plan_collection,
    read_frame_positions,
    raster_summary,
    run_collection,
)
from survey_cracks.run.interrupt import Interrupted, as_interrupted, interrupted_line, keep_windows
from survey_cracks.run.journal import JOURNAL, FinishedWindow, WindowJournal, checksum
from survey_cracks.run.lock import out_lock
from survey_cracks.run.manifest import Inputs, RasterRecord, config_sha256, fingerprint, load_records, now, save_record, why_redo
from survey_cracks.run.notices import optional_truth, threshold_warning
from survey_cracks.run.runlog import RunLog
from survey_cracks.tiling import (
    ALIGN,
    ContextWindow,
    PatchGrid,
    context_windows,
    patch_grid,
    photo_windows,
    window_size_for_ground,
)
from survey_cracks.vectors.heatmap import StagedHeatmap, staged_heatmap_problem, write_crack_mask, write_patch_scores
from survey_cracks.vectors.tracing import HeatmapTracer

if TYPE_CHECKING:  # frames are passed through, never built here
    import geopandas as gpd

Log = Callable[[str], None]
# OS errors of the machine rather than of one raster: the run stops with exit code 3.
INFRASTRUCTURE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


@dataclass
class RunResult:
    """This run's rasters (computed, up to date, failed) and bad inputs; ``covered`` counts every raster in OUT."""

    out: Path
    outcomes: list[RasterOutcome] = field(default_factory=list)
    covered: int = 0
    covered_photos: int = 0  # of the ``covered`` entries, ``covered_collections`` are collections of these photos
    covered_collections: int = 0

    def covered_words(self) -> str:
        """``3 rasters`` or ``1 raster, 6 photos in 1 collection``: what OUT holds."""
        return ", ".join(rasters_and_photos(self.covered - self.covered_collections, self.covered_photos,
                                            self.covered_collections))

    def words(self) -> str:
        """This run's entries the same way."""
        collections = sum(o.counts.photos is not None for o in self.outcomes)
        return ", ".join(rasters_and_photos(len(self.outcomes) - collections,
                                            sum(o.counts.photos or 0 for o in self.outcomes), collections))

    @property
    def failed(self) -> list[RasterOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]

    @property
    def up_to_date(self) -> list[RasterOutcome]:
        return [o for o in self.outcomes if o.action == UP_TO_DATE]

    @property
    def computed(self) -> list[RasterOutcome]:
        return [o for o in self.outcomes if o.action == COMPUTED and o.status == "ok"]


@dataclass
class RunContext:
    """What this run is (for run.json) and what it did so far (for the reports rebuilt as rasters finish)."""

    inputs: list[str]
    config: RunConfig
    model_path: Path
    meta: ModelMeta
    sha256: str
    mode: Mode
    margin: int
    threshold: float
    started_at: str = field(default_factory=now)
    started: float = field(default_factory=time.time)
    compute: list[str] = field(default_factory=list)
    input_errors: list[RasterOutcome] = field(default_factory=list)
    actions: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)  # (survey, raster) -> (action, reason)
    finished: bool = False
    interrupted: bool = False
    assets: Path | None = None
    rules: AssetRules = field(default_factory=AssetRules)
    frame_positions: Path | None = None
    window: WindowChoice | None = None  # mask and dense modes: the window core and why (run.json ``window``)


@dataclass(frozen=True)
class RasterTodo:
    """A raster this run computes: its annotation, what its outputs are made from now, and why it is computed.

    The annotation is looked up once, when the raster is listed: the manifest fingerprints the
    very file the evaluation reads (a second lookup could find another one, and costs requests on s3).
    """

    item: SurveyRaster
    annotation: Source | None
    inputs: Inputs
    reason: str


def raster_inputs(item: SurveyRaster, annotation: Source | None, model_sha256: str, config_hash: str) -> Inputs:
    """What the raster's outputs would be made from now (raises OSError when the raster cannot be read)."""
    return Inputs(raster=fingerprint(item.path), model_sha256=model_sha256, config_sha256=config_hash).with_annotation(annotation)


def patch_grid_for(info: RasterInfo, meta: ModelMeta, config: RunConfig) -> PatchGrid:
    """Windows in source pixels: the model's patch, or a ground size when GSD-aware."""
    window_px = window_size_for_ground(meta.patch_size, config.tiling.ground_patch_m, info.pixel_size)
    overlap = config.tiling.step / config.tiling.patch_size
    stride = max(1, int(round(window_px * overlap)))
    return patch_grid(info.width, info.height, window_px, stride)


Mode = str  # "mask", "dense" or "patch"


def resolve_mode(requested: str, meta: ModelMeta, model_path: Path) -> Mode:
    """``auto``: per-pixel masks when the checkpoint has a decoder, else today's patch scores."""
    if requested == "auto":
        return "mask" if meta.has_mask else "patch"
    if requested == "mask" and not meta.has_mask:
        raise ModelFileError(model_path, "inference.mode is mask but this checkpoint has no mask decoder",
                             "use --mode dense or patch, or a model trained with train-mask")
    return requested


def context_margin(meta: ModelMeta, mode: Mode, config: RunConfig, model_path: Path) -> int:
    """Context each window needs: the model's measured margin, at least half a patch in dense mode."""
    needed = max(meta.min_margin_px, meta.patch_size // 2 if mode == "dense" else 0, 32)
    needed = -(-needed // 32) * 32
    margin = config.inference.margin_px
    if margin is None:
        return needed
    if margin < needed:
        raise ConfigError(model_path, f"inference.margin_px {margin} is below the {needed} px of context this model "
                          f"needs in {mode} mode (measured when it was trained)", f"set margin_px >= {needed}, or leave it unset")
    return margin


def output_threshold(meta: ModelMeta, mode: Mode, config: RunConfig) -> float:
    if config.vectorize.threshold is not None:
        return config.vectorize.threshold
    return meta.mask_threshold if mode == "mask" else meta.threshold


def processing_scale(info: RasterInfo, config: RunConfig) -> float:
    """Processing pixels per source pixel: from the GSD when asked and known, else ``inference.scale``."""
    target = config.inference.target_gsd_m
    if target is not None and info.pixel_size is not None:
        return float(np.clip(info.pixel_size / target, 0.25, 4.0))
    return config.inference.scale


def dense_lattice(info: RasterInfo, patch: int) -> PatchGrid:
    """Every 128 px patch at a 32 px step whose centre lies in the raster (offsets may be negative)."""
    rows = np.arange(-(patch // 2), info.height - patch // 2, ALIGN, dtype=np.int64)
    cols = np.arange(-(patch // 2), info.width - patch // 2, ALIGN, dtype=np.int64)
    return PatchGrid(width=info.width, height=info.height, size=patch, stride=ALIGN, rows=rows, cols=cols)


def run_surveys(
    inputs: list[str | Path],
    out: Path,
    config: RunConfig,
    model_path: Path | None = None,
    progress: bool = True,
    log: Log = print,
    assets: Path | None = None,
    rules: AssetRules | None = None,
    force: bool = False,
    quiet: bool = False,
    cluster: EarlyCluster | None = None,
    layout: str = COLLECTION,
    heatmaps: bool = True,
    frame_positions: Path | None = None,
) -> RunResult:
    """Bring OUT up to date with ``inputs``: compute new and changed rasters, skip the rest, rebuild the reports
    and the deliverables.

    ``assets``: asset polygons for every survey (else each survey folder's assets.gpkg/.geojson, else
    the rasters' footprints); ``rules``: condition classes and crack types (see deliverables).
    ``log`` gets the human lines (only warnings and errors when ``quiet``); OUT/run.log and
    OUT/run.log.jsonl get them all. ``cluster``: the LocalCluster already being started (`EarlyCluster`),
    used when there is something to compute. ``layout``: ``collection`` puts each survey's photos (mask mode)
    into one collection (`run.collection`; ``heatmaps`` False: no heatmap PNGs), ``per-raster`` runs them
    one by one as rasters; ``frame_positions``: a CSV of photo positions that win over their EXIF
    (`collection.read_frame_positions`). Raises InfrastructureError (OUT locked or not writable,
    disk full, scheduler unreachable) and the usage errors of config and model.
    """
    out = Path(out)
    if not out.parent.exists():
        raise OutputError(out, f"parent folder {out.parent} does not exist", "create it, or choose another --out")
    rules = rules or AssetRules()
    if assets is not None:
        load_assets(assets, rules)  # a bad asset file fails before hours of inference, not after
    model_path = Path(model_path) if model_path else SHIPPED_MODEL
    meta = read_meta(model_path)
    mode = resolve_mode(config.inference.mode, meta, model_path)
    if mode != "mask" and (config.inference.scale != 1.0 or config.inference.target_gsd_m is not None):
        raise ConfigError(None, f"inference.scale / target_gsd_m apply to mask mode only (mode is {mode})",
                          "leave them unset, or use a model with a mask decoder")
    margin = context_margin(meta, mode, config, model_path) if mode != "patch" else 0
    positions = None
    if frame_positions is not None:  # a bad CSV fails before OUT is made, not after the photos are computed
        if layout != COLLECTION or mode != "mask":
            raise ConfigError(frame_positions, "--frame-positions places photos of the collection layout (mask mode)",
                              "leave it out, or run with --layout collection and a model with a mask decoder")
        positions = read_frame_positions(frame_positions)
    sha = file_sha256(model_path)
    window = None
    if mode != "patch":  # `window_px: auto` becomes a number here, once per run: the rest of the run sees that number
        window = resolve_window(config.inference, model_spec(model_path, sha, config.inference), margin)
        config = config.model_copy(update={"inference": config.inference.model_copy(update={"window_px": window.core_px})})
    run = RunContext(inputs=[str(p) for p in inputs], config=config, model_path=model_path, meta=meta, sha256=sha,
                     mode=mode, margin=margin, threshold=output_threshold(meta, mode, config), assets=assets, rules=rules,
                     frame_positions=frame_positions, window=window)
    try:
        out.mkdir(exist_ok=True)
    except OSError as error:
        raise InfrastructureError(out, f"cannot create the output folder ({error.strerror or error})",
                                  "check permissions and free space, or choose another --out") from None
    events = RunLog(log, quiet)
    with out_lock(out, events.warning):
        try:
            events.attach(out)
            return _run_locked(inputs, out, run, progress, events, force, cluster, layout, heatmaps, positions)
        except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM (`run.interrupt`): one line, run.json says so
            raise report_interrupted(as_interrupted(error), out, run, events) from None
        except OSError as error:
            if error.errno not in INFRASTRUCTURE_ERRNOS:
                raise
            raise InfrastructureError(out, f"cannot write outputs ({error.strerror})",
                                      "free disk space or make OUT writable, then run again: finished rasters are kept") from None
        finally:
            events.close()


def _run_locked(inputs: list[str | Path], out: Path, run: RunContext, progress: bool, events: RunLog, force: bool,
                early: EarlyCluster | None, layout: str = COLLECTION, heatmaps: bool = True,
                positions: dict[str, FramePosition] | None = None) -> RunResult:
    config, meta = run.config, run.meta
    events(f"model {run.model_path.name} (sha256 {run.sha256[:12]}, heads {'+'.join(meta.heads)}, "
           f"{meta.provenance.get('init', 'unknown')} init); mode {run.mode}, threshold {run.threshold:.3f}"
           + (f", windows {config.inference.window_px} px + {run.margin} px context" if run.margin else "")
           + (f" (window_px auto: {run.window.task_gib} GiB a task x {run.window.tasks} tasks within "
              f"{run.window.budget_gib} GiB, {run.window.bytes_source} {run.window.bytes_per_px:.0f} bytes per read pixel; "
              f"network pixels per kept pixel {run.window.network_px_per_core_px})"
              if run.window is not None and run.window.how == "auto" else ""))
    records = {(r.survey, r.raster): r for r in load_records(out)}
    rasters, input_errors = find_rasters(inputs, {r.survey_source: r.survey for r in records.values()},
                                         {r.source: (r.survey, r.raster) for r in records.values()})
    run.input_errors = [RasterOutcome(survey="", raster="", source=str(e.path), status="error", error=e.message)
                        for e in input_errors]
    for outcome in run.input_errors:
        events.error(outcome.error or "", source=outcome.source)
    todo: list[RasterTodo] = []
    config_hash = config_sha256(config)
    photo_sets, rasters = collection_photos(rasters, layout if run.mode == "mask" else "per-raster")
    collections = plan_collections(photo_sets, out, run, records, config_hash, force, events, positions is not None)
    if positions is not None and run.frame_positions is not None:
        place_photos(collections, positions, run.frame_positions)
    for item in rasters:
        key = (item.survey, item.name)
        try:
            annotation = find_annotation(item.path)
            inputs_now = raster_inputs(item, annotation, run.sha256, config_hash)
        except OSError as error:  # vanished or unreadable since it was listed
            message = f"{item.path}: cannot read it ({error.strerror or error}) — check the file and its permissions"
            run.input_errors.append(RasterOutcome(survey=item.survey, raster=item.name, source=item.source, status="error",
                                                  error=message, reason="unreadable"))
            events.error(message, survey=item.survey, raster=item.name)
            continue
        reason = why_redo(records.get(key), inputs_now, out, force)
        if reason is None:
            run.actions[key] = (UP_TO_DATE, "inputs, model and settings unchanged")
            events(f"{item.survey}/{item.name}: up to date", survey=item.survey, raster=item.name, action=UP_TO_DATE)
        else:
            todo.append(RasterTodo(item, annotation, inputs_now, reason))
    events(f"{counted(len(rasters), 'raster')}: {len(todo)} to compute, {len(rasters) - len(todo)} up to date or unreadable")
    for plan in collections:
        events(f"{plan.survey}: {counted(len(plan.photos), 'photo')} as one collection, {len(plan.photos) - len(plan.done)} to compute")
    write_run_reports(out, run)
    closing: Future[None] | None = None
    if todo or collections:
        spec = model_spec(run.model_path, run.sha256, config.inference)
        # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB.
        cache_bytes = config.inference.gdal_cache_mb * 2**20
        cluster = contextlib.ExitStack()  # the LocalCluster's shutdown, done while the reports are written
        with rasterio.Env(GDAL_CACHEMAX=cache_bytes), dask_client(config.inference, shutdown=cluster, early=early) as client:
            warming = warm_workers(client, spec)
            events(f"dask: {counted(len(client.scheduler_info().get('workers', {})), 'worker')} at {client.scheduler.address}; "
                   f"dashboard {dashboard_of(client)}")
            run.compute = compute_when_warm(warming)  # what the model runs on, said before the first raster
            events(f"model on {' / '.join(run.compute)}")
            for plan in collections:
                compute_collection(plan, out, client, spec, run, progress, events, heatmaps)
            for number, job in enumerate(todo, 1):
                item, reason = job.item, job.reason
                key = (item.survey, item.name)
                events(f"[{number}/{len(todo)}] {item.survey}/{item.name} ({reason})", survey=item.survey,
                       raster=item.name, source=item.source, reason=reason)
                record = RasterRecord(survey=item.survey, raster=item.name, source=item.source,
                                      survey_source=str(item.folder), status="running", inputs=job.inputs, started_at=now())
                save_record(out, record)
                run.actions[key] = (RUNNING, reason)
                outcome = process_raster(job, out, client, spec, run, progress,
                                         lambda line: events(f"{item.survey}/{item.name}: {line}",
                                                             survey=item.survey, raster=item.name))
                record.status, record.error, record.seconds = ("ok" if outcome.status == "ok" else "error"), outcome.error, outcome.seconds
                record.finished_at = now()
                save_record(out, record)
                run.actions[key] = (COMPUTED, reason)
                for warning in filter(None, [outcome.annotation_error, *outcome.warnings]):
                    events.warning(f"{item.survey}/{item.name}: {warning}", survey=item.survey, raster=item.name)
                if outcome.error:
                    events.error(outcome.error, survey=item.survey, raster=item.name)
                else:
                    events(f"{item.survey}/{item.name}: done in {sum(outcome.seconds.values()):.1f} s",
                           survey=item.survey, raster=item.name, seconds=outcome.seconds)
                    events(raster_found(outcome), survey=item.survey, raster=item.name)
                write_run_reports(out, run)
        closing = in_background(cluster.close, "close")
    run.finished = True
    # The run's end: OUT's reports rebuilt from what is in OUT (the manifest and the raster folders).
    result = write_run_reports(out, run)
    write_deliverables(out, events)
    if closing is not None:
        closing.result()
    for line in totals_lines(result.outcomes, str(out)):
        events(line)
    events(f"finished: {len(result.computed)} computed, {len(result.up_to_date)} up to date, {len(result.failed)} failed; "
           f"OUT holds {result.covered_words()}", computed=len(result.computed), up_to_date=len(result.up_to_date),
           failed=len(result.failed), rasters_in_out=result.covered)
    return result


def plan_collections(photo_sets: dict[str, list[SurveyRaster]], out: Path, run: RunContext,
                     records: dict[tuple[str, str], RasterRecord], config_hash: str, force: bool, events: RunLog,
                     placed: bool = False) -> list[CollectionRun]:
    """Each survey's photos as a collection to compute, or up to date when every photo's journal line is (and no CSV of
    frame positions is given: ``placed``, the photos table is then written again)."""
    collections = []
    for survey, items in photo_sets.items():
        plan, errors = plan_collection(survey, out, items, run.sha256, config_hash, force)
        for message in errors:
            run.input_errors.append(RasterOutcome(survey=survey, raster="", source=message.split(": ")[0], status="error",
                                                  error=message, reason="unreadable"))
            events.error(message, survey=survey)
        if not plan.photos:
            continue
        key = (survey, COLLECTION)
        record = records.get(key)
        if (not placed and len(plan.done) == len(plan.photos) and record is not None and record.status == "ok"
                and record.inputs == plan.inputs and (plan.folder / REPORT).is_file()):
            run.actions[key] = (UP_TO_DATE, "photos, model and settings unchanged")
            events(f"{survey}/{COLLECTION}: {counted(len(plan.photos), 'photo')} up to date", survey=survey, raster=COLLECTION,
                   action=UP_TO_DATE)
        else:
            collections.append(plan)
    return collections


def compute_collection(plan: CollectionRun, out: Path, client: Any, spec: ModelSpec, run: RunContext, progress: bool,
                       events: RunLog, heatmaps: bool) -> None:
    """A survey's photos through the cluster into its collection (`run.collection`), its manifest entry kept."""
    key = (plan.survey, COLLECTION)
    reason = "new" if not plan.done else "photos new or changed" if len(plan.done) < len(plan.photos) else \
        "positions from --frame-positions"
    events(f"{plan.survey}/{COLLECTION}: {len(plan.photos) - len(plan.done)} of {counted(len(plan.photos), 'photo')} ({reason})",
           survey=plan.survey, raster=COLLECTION, reason=reason)
    record = RasterRecord(survey=plan.survey, raster=COLLECTION, source=plan.survey_source, survey_source=plan.survey_source,
                          status="running", inputs=plan.inputs, started_at=now())
    save_record(out, record)
    run.actions[key] = (RUNNING, reason)
    # absolute: the workers write the heatmaps, and those of an external cluster have their own working folder
    settings = PhotoSettings(spec, run.config, run.threshold, run.margin, plan.survey, plan.folder.absolute(), heatmaps)
    outcome = run_collection(plan, client, settings, progress,
                             lambda line: events(f"{plan.survey}/{COLLECTION}: {line}", survey=plan.survey),
                             lambda line: events.error(line, survey=plan.survey, raster=COLLECTION))
    failed = any(PHOTOS_FAILED in w for w in outcome.warnings)
    record.status = "ok" if outcome.status == "ok" and not failed else "error"
    record.error, record.seconds, record.finished_at = outcome.error or (outcome.warnings[0] if failed else None), outcome.seconds, now()
    save_record(out, record)
    run.actions[key] = (COMPUTED, reason)
    for warning in outcome.warnings:
        events.warning(f"{plan.survey}/{COLLECTION}: {warning}", survey=plan.survey, raster=COLLECTION)
    events(f"{plan.survey}/{COLLECTION}: done in {sum(outcome.seconds.values()):.1f} s", survey=plan.survey, raster=COLLECTION)
    if outcome.status == "ok":
        events(raster_found(outcome), survey=plan.survey, raster=COLLECTION)
    write_run_reports(out, run)


def report_interrupted(error: Interrupted, out: Path, run: RunContext, events: RunLog) -> Interrupted:
    """run.json says ``interrupted`` and the log (and console, even when quiet) the one line; ``error``, marked as said."""
    run.interrupted = True
    with contextlib.suppress(OSError):
        write_run_reports(out, run)
    events.always(interrupted_line(error))
    error.reported = True
    return error


def process_raster(job: RasterTodo, out: Path, client: Any, spec: ModelSpec, run: RunContext, progress: bool = True,
                   log: Log | None = None) -> RasterOutcome:
    """One raster, its steps in order: read → infer → trace → evaluate → write, each a call into its room.

    Everything is built in the raster's work folder, renamed into place at the end. In mask
    mode the staged heatmap and its windows journal survive a kill (or Ctrl-C): called again
    with the same ``job.inputs`` it resumes from the finished windows (``log`` says so).
    """
    item, config, mode, threshold = job.item, run.config, run.mode, run.threshold
    outcome = RasterOutcome(survey=item.survey, raster=item.name, source=str(item.path))
    final = out / item.survey / item.name
    work = work_folder(final)
    lap = Laps(outcome.seconds)
    say = log or (lambda _: None)
    interrupted = True
    try:
        # read: the raster, and its annotation now (a bad one fails before the inference, not after)
        info = inspect_raster(item.location)  # its path travels to the workers
        outcome.info = raster_summary(info)
        truth, outcome.annotation_error = optional_truth(item.path, info, config.evaluate, job.annotation)
        plan = window_plan(info, config, run.margin, job.inputs, run.meta.patch_size, run.window) if mode == "mask" else None
        journal = resume_or_start(work, plan, config.heatmap, say)
        lap("inspect")
        # Patch-level blobs have no meaningful centreline: mask mode only.
        tracer = HeatmapTracer(info, threshold, config.vectorize.for_mode(mode),
                               config.centrelines if mode == "mask" else None, progress=progress)
        with StagedHeatmap(work / HEATMAP, info, config.heatmap, resume=bool(journal and journal.finished)) as staged:
            # infer: the heatmap, each block traced as soon as its pixels are in
            if plan is not None:
                assert journal is not None
                counts = segment_into(staged, tracer, plan, journal, item, client, spec, config, progress, say)
            else:
                counts = score_into(staged, tracer, item, info, client, spec, run.meta, threshold, config, progress, mode,
                                    run.margin)
            release_worker_memory(client)
            lap("inference")
            cog = staged.start_publishing()  # the COG copy runs beside the vector work
            lap("heatmap")
            # trace
            polygons, lines = tracer.finish()
            # evaluate and write
            outcome.counts = replace(counts, mode=mode)
            finish_raster(outcome, work, polygons, lines, threshold, info, truth, config.evaluate, heatmap=cog, lap=lap,
                          mask=config.heatmap)
        (work / JOURNAL).unlink(missing_ok=True)
        replace_folder(work, final)
        interrupted = False
    except SurveyCracksError as error:  # a PixelReadError too, raised by io.raster here or in a Dask worker
        interrupted = False
        outcome.status, outcome.error = "error", error.message
    except Exception as error:  # noqa: BLE001 — one raster's bug must not stop the night's batch
        interrupted = False
        if isinstance(error, OSError) and error.errno in INFRASTRUCTURE_ERRNOS:
            raise  # a full disk is no fault of this raster: the run stops (exit code 3)
        outcome.status = "error"
        outcome.error = f"{item.path}: unexpected {type(error).__name__}: {error} — please report this with run.json"
        outcome.traceback = traceback.format_exc(limit=5)
    finally:
        if not interrupted:  # interrupted (Ctrl-C, SystemExit): the staged heatmap stays for the rerun to resume
            shutil.rmtree(work, ignore_errors=True)
    if outcome.status != "ok":
        remove_outputs(final)  # a previous night's outputs must not pass for this run's
    return outcome


def finish_raster(outcome: RasterOutcome, folder: Path, polygons: gpd.GeoDataFrame, lines: gpd.GeoDataFrame | None,
                  threshold: float, info: RasterInfo, truth: Truth | None, config: EvaluateConfig,
                  heatmap: Future[Path] | None = None, lap: Callable[[str], None] | None = None,
                  mask: HeatmapConfig | None = None) -> RasterOutcome:
    """A raster's steps after tracing, the same for `run` and for `evaluate OUT`: its vectors written into ``folder``,
    ``outcome``'s counts completed with them, the heatmap scored against ``truth`` (the annotation resolved
    once for the raster), and report.json written last, so a folder with a report is a whole one.

    One function for both, so `evaluate OUT --threshold T` cannot drift from what a run at T writes.
    ``heatmap``: the COG still being built beside the vector work (`StagedHeatmap.start_publishing`),
    waited for before the evaluation reads it; None: ``folder``'s heatmap.tif is in place.
    ``lap`` (a run's `Laps`) closes the steps "cog_and_polygons" and "evaluate". ``mask``: the heatmap settings,
    whose ``write_mask`` asks for crack_mask.tif at ``threshold`` (it depends on the threshold as the vectors do).
    """
    write_vectors(polygons, lines, folder)
    outcome.counts = outcome.counts.with_vectors(threshold, polygons, lines, info.georeferenced)
    if heatmap is not None:
        heatmap.result()
    if mask is not None and mask.write_mask:
        write_crack_mask(folder / HEATMAP, folder / CRACK_MASK, threshold, mask)
    outcome.warnings += filter(None, [threshold_warning(folder / HEATMAP, threshold)])
    if lap is not None:
        lap("cog_and_polygons")
    if truth is not None:
        outcome.measured = evaluate_raster(folder / HEATMAP, truth, polygons, threshold, info, config)
        outcome.counts.annotation = truth.path.name
    if lap is not None:
        lap("evaluate")
    write_json(folder / REPORT, outcome.as_dict())
    return outcome


class Laps:
    """Seconds of each step, into ``seconds`` (a raster outcome's): ``lap(step)`` closes the step."""

    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds, self.started = seconds, time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self.started, 3)
        self.started = now


@dataclass(frozen=True)
class WindowPlan:
    """Mask mode's windows over a raster, and what its windows journal must say to be resumed from."""

    info: RasterInfo
    windows: list[ContextWindow]
    cores: list[Window | None]  # each window's core on the raster's grid (None: no source pixel)
    scale: float
    window_px: int
    margin: int
    header: dict[str, Any] | None  # None: not resumable (no inputs to check against)


def window_plan(info: RasterInfo, config: RunConfig, margin: int, inputs: Inputs | None, least: int = 128,
                window: WindowChoice | None = None) -> WindowPlan:
    """``least``: the model's patch, the smallest read its dense head takes (a photo's windows may be smaller);
    ``window``: the run's choice, an auto one capped to what this raster needs (the same windows, an honest count)."""
    scale = processing_scale(info, config)
    width, height = int(np.ceil(info.width * scale)), int(np.ceil(info.height * scale))
    core = cap_to_raster(window, width, height).core_px if window is not None else config.inference.window_px
    # A photo (no georeferencing) has nothing beyond its edges: windows sized to it (`tiling.photo_windows`).
    windows = (context_windows(width, height, core, margin) if info.georeferenced
               else photo_windows(width, height, core, margin, least))
    grid = [(w.core.col_off, w.core.row_off, w.core.width, w.core.height, w.read.col_off, w.read.row_off) for w in windows]
    header = None if inputs is None else {
        "format": 1, "inputs": inputs.model_dump(mode="json"), "size": [info.width, info.height],
        "block": config.heatmap.block_size, "scale": scale,
        "windows": hashlib.sha256(json.dumps(grid).encode()).hexdigest(),
    }
    return WindowPlan(info, windows, [source_core(info, w, scale) for w in windows], scale, core, margin, header)


def resume_or_start(work: Path, plan: WindowPlan | None, heatmap_config: HeatmapConfig, say: Log) -> WindowJournal | None:
    """The work folder ready: kept with its journal when ``plan`` can resume from it, else emptied."""
    if plan is not None and plan.header is not None and (work / JOURNAL).is_file():
        journal, why = WindowJournal.reopen(work / JOURNAL, plan.header)
        if journal is not None and not journal.finished:
            why = "no window was finished"
        elif journal is not None:
            why = staged_heatmap_problem(work / HEATMAP, plan.info, heatmap_config) or ""
            if not why:
                return journal
        say(f"cannot resume from the finished windows ({why}): starting from scratch")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return WindowJournal(work / JOURNAL, plan.header) if plan is not None and plan.header is not None else None


def segment_into(staged: StagedHeatmap, tracer: HeatmapTracer, plan: WindowPlan, journal: WindowJournal,
                 item: SurveyRaster, client: Any, spec: ModelSpec, config: RunConfig, progress: bool, say: Log
                 ) -> RasterCounts:
    """Mask mode: every window not yet in ``journal`` through the model into ``staged``; the counts."""
    index_of = {_key(core): i for i, core in enumerate(plan.cores) if core is not None}
    for i, entry in list(journal.finished.items()):
        if entry.written and checksum(staged.levels(entry.window())) != entry.crc:
            journal.forget(i)  # its pixels did not reach the disk after all
    if journal.finished:
        say(f"resumed: {len(journal.finished)} of {counted(len(plan.windows), 'window')} already done")
        for entry in journal.finished.values():  # the tracer sees every block, finished ones read back
            core = plan.cores[entry.index]
            if core is not None:
                tracer.settle(core, staged.read, written=entry.written)
    todo = [w for i, w in enumerate(plan.windows) if i not in journal.finished]
    done = sum(entry.written for entry in journal.finished.values())
    with keep_windows(staged, journal, f"{item.survey}/{item.name}", len(plan.windows)):
        done = _segment_windows(staged, tracer, plan, journal, todo, done, client, spec, config, progress, index_of)
    if done == 0:
        raise RasterError(item.path, "no window lies inside the valid footprint", "check the raster's nodata/alpha")
    return RasterCounts(windows=len(plan.windows), windows_processed=done, window_px=plan.window_px,
                        margin_px=plan.margin, processing_scale=round(plan.scale, 4))


def _segment_windows(staged: StagedHeatmap, tracer: HeatmapTracer, plan: WindowPlan, journal: WindowJournal,
                     todo: list[ContextWindow], done: int, client: Any, spec: ModelSpec, config: RunConfig, progress: bool,
                     index_of: dict[tuple[int, int, int, int], int]) -> int:
    """`segment_into`'s loop: ``todo`` through the model, journaled as they land; the windows written so far."""
    for core, maps in segment_raster(client, plan.info, todo, spec, True, config.tiling.min_valid_fraction,
                                     progress, plan.scale):
        if maps is not None:
            staged.write_levels(maps.core, maps.levels)
            done += 1
        if core is not None:  # each block is traced as soon as its pixels are in
            tracer.settle(core, staged.read, written=maps is not None)
            journal.add(FinishedWindow(index_of[_key(core)], _key(maps.core) if maps is not None else None,
                                       checksum(maps.levels) if maps is not None else 0))
        if journal.due():
            staged.flush()  # pixels on disk before the journal says so
            journal.commit()
            trim_heap()  # the traced blocks' arrays: the client's share of the run's peak memory stays flat
    return done


def _key(window: Window) -> tuple[int, int, int, int]:
    return int(window.col_off), int(window.row_off), int(window.width), int(window.height)


def score_into(staged: StagedHeatmap, tracer: HeatmapTracer, item: SurveyRaster, info: RasterInfo, client: Any,
               spec: ModelSpec, meta: ModelMeta, threshold: float, config: RunConfig, progress: bool, mode: Mode,
               margin: int) -> RasterCounts:
    """Dense and patch modes: a score per patch of a lattice, blended into ``staged``; the counts."""
    if mode == "dense":
        grid = dense_lattice(info, meta.patch_size)
        scores = np.full(len(grid), np.nan, dtype=np.float32)
        lattice = scores.reshape(len(grid.rows), len(grid.cols))
        windows = context_windows(info.width, info.height, config.inference.window_px, margin)
        for _, maps in segment_raster(client, info, windows, spec, False, config.tiling.min_valid_fraction, progress):
            if maps is None:
                continue
            r = (maps.dense_origin[0] - int(grid.rows[0])) // ALIGN
            c = (maps.dense_origin[1] - int(grid.cols[0])) // ALIGN
            lattice[r : r + maps.dense.shape[0], c : c + maps.dense.shape[1]] = maps.dense
    else:
        grid = patch_grid_for(info, meta, config)
        scores = score_raster(client, info, grid, meta.patch_size, config.tiling.min_valid_fraction, spec,
                              config.inference, progress)
    scored = int(np.isfinite(scores).sum())
    if scored == 0:
        raise RasterError(item.path, "no patch lies inside the valid footprint",
                          "check the raster's nodata/alpha, or lower tiling.min_valid_fraction")
    write_patch_scores(staged, info, grid, scores, config.heatmap, progress)
    tracer.settle_all(staged.read)
    return RasterCounts(patches=len(grid), patches_scored=scored, patch_window_px=grid.size, stride_px=grid.stride,
                        patches_above_threshold=int(np.sum(scores[np.isfinite(scores)] >= threshold)))


def collect_outcomes(out: Path, run: RunContext) -> list[RasterOutcome]:
    """Every raster in OUT's manifest as the reports show it, with what this run did to it and why."""
    outcomes = []
    unreadable = {(o.survey, o.raster) for o in run.input_errors}
    for record in load_records(out):
        if (record.survey, record.raster) in unreadable:
            continue
        action, reason = run.actions.get((record.survey, record.raster), (NOT_IN_INPUTS, ""))
        report_path = record.folder(out) / REPORT
        if record.status == "ok" and report_path.is_file():
            outcomes.append(RasterOutcome.from_report(json.loads(report_path.read_text()), action, reason))
            continue
        status = record.status if record.status != "running" or action == RUNNING else "interrupted"
        error = record.error or ("outputs missing" if record.status == "ok" else None)
        outcome = RasterOutcome(survey=record.survey, raster=record.raster, source=record.source, status=status,
                                error=error, seconds=record.seconds, action=action, reason=reason)
        if record.raster == COLLECTION and report_path.is_file():
            # a collection with failed photos is still a collection of its photos (counted as such, not as "1 raster")
            outcome.counts = RasterCounts.from_dict(json.loads(report_path.read_text()).get("counts") or {})
        outcomes.append(outcome)
    return outcomes


def write_run_reports(out: Path, run: RunContext) -> RunResult:
    """summary.csv, each survey's report.json and run.json, rebuilt from the manifest and the raster folders.

    Called as each raster finishes, so a killed run leaves reports that cover what it finished.
    """
    outcomes = collect_outcomes(out, run) + run.input_errors
    write_survey_reports(out, outcomes)
    write_summary(out / "summary.csv", outcomes)
    config = run.config
    this_run = [o for o in outcomes if (o.survey, o.raster) in run.actions or o in run.input_errors]
    write_json(
        out / "run.json",
        {
            "status": "finished" if run.finished else "interrupted" if run.interrupted else "running",
            "started_at": run.started_at,
            "finished_at": now() if run.finished else None,
            "inputs": run.inputs,
            "config": config.model_dump(mode="json"),
            "model": {"file": str(run.model_path), "sha256": run.sha256, "threshold": run.threshold,
                      "metadata": run.meta.provenance, "patch_size": run.meta.patch_size, "heads": list(run.meta.heads),
                      "compute": run.compute},
            "mode": run.mode,
            "window": run.window.record() if run.window is not None else None,
            "versions": package_versions(),
            "rasters": len(outcomes),
            "failed": sum(o.status != "ok" for o in outcomes),
            "this_run": {action: sum(o.action == action for o in this_run) for action in (COMPUTED, UP_TO_DATE)}
                        | {"failed": sum(o.status != "ok" for o in this_run)},
            "seconds": round(time.time() - run.started, 2),
            "timings": {f"{o.survey}/{o.raster}" if o.survey else o.source: o.seconds for o in outcomes},
            "cwd": str(Path.cwd()),  # relative sources in report.json are relative to it
            "assets": str(Path(run.assets).resolve()) if run.assets else None,
            "asset_rules": run.rules.model_dump(mode="json"),
            "frame_positions": str(Path(run.frame_positions).resolve()) if run.frame_positions else None,
        },
    )
    return RunResult(out, this_run, covered=len(outcomes), covered_photos=sum(o.counts.photos or 0 for o in outcomes),
                     covered_collections=sum(o.counts.photos is not None for o in outcomes))


def write_survey_reports(out: Path, outcomes: list[RasterOutcome]) -> None:
    surveys: dict[str, list[RasterOutcome]] = {}
    for outcome in outcomes:
        if outcome.survey:
            surveys.setdefault(outcome.survey, []).append(outcome)
    for survey, members in surveys.items():
        measured: list[RasterMetrics] = [o.measured for o in members if o.measured is not None]
        folder = out / survey
        folder.mkdir(parents=True, exist_ok=True)
        write_json(
            folder / REPORT,
            {
                "survey": survey,
                "rasters": [o.raster for o in members],
                "ok": sum(o.status == "ok" for o in members),
                "failed": [o.error for o in members if o.status != "ok"],
                "annotated_rasters": len(measured),
                "metrics": combine(measured).as_dict() if measured else None,
                "threshold": survey_threshold(members),
                "this_run": {o.raster: {"action": o.action, "reason": o.reason} for o in members},
            },
        )
