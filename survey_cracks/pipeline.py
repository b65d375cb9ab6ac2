"""The survey job: every raster through tiles → scores → heatmap → polygons → report.

Each raster is built in a hidden ``.<name>.partial`` folder and renamed into place
only when complete, so a failure (or a kill) never leaves half-written outputs. A
raster that fails is reported with one clear line and the batch goes on.
"""

from __future__ import annotations

import shutil
import time
import traceback
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import geopandas as gpd
import numpy as np
import rasterio

from survey_cracks.assets import load_assets
from survey_cracks.annotations import Truth, find_annotation, load_truth
from survey_cracks.condition import AssetRules
from survey_cracks.config import RunConfig
from survey_cracks.deliverables import write_deliverables
from survey_cracks.discover import SurveyRaster, find_rasters
from survey_cracks.errors import ConfigError, ModelFileError, OutputError, RasterError, SurveyCracksError
from survey_cracks.evaluate import RasterMetrics, combine, evaluate_raster
from survey_cracks.heatmap import StagedHeatmap, write_patch_scores
from survey_cracks.inference import (ModelSpec, compute_when_warm, dask_client, model_spec, score_raster, segment_raster,
                                     warm_workers)
from survey_cracks.models.checkpoint import SHIPPED_MODEL, ModelMeta, file_sha256, read_meta
from survey_cracks.qgis_styles import STYLES, embed_layer_styles
from survey_cracks.raster import RasterInfo, inspect_raster
from survey_cracks.report import RasterOutcome, package_versions, write_json, write_summary
from survey_cracks.tiling import ALIGN, PatchGrid, context_windows, patch_grid, window_size_for_ground
from survey_cracks.tracing import HeatmapTracer

Log = Callable[[str], None]
HEATMAP, GPKG, GEOJSON, REPORT = "heatmap.tif", "cracks.gpkg", "cracks.geojson", "report.json"
CENTRELINES_GEOJSON = "centrelines.geojson"
PIXEL_COORDINATES = "pixel coordinates (x = column, y = -row); the image has no georeferencing"


@dataclass
class RunResult:
    out: Path
    outcomes: list[RasterOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[RasterOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]


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
    inputs: list[Path],
    out: Path,
    config: RunConfig,
    model_path: Path | None = None,
    progress: bool = True,
    log: Log = print,
    assets: Path | None = None,
    rules: AssetRules | None = None,
) -> RunResult:
    """Process every raster found in ``inputs``; write per-raster folders, run-level reports and the deliverables.

    ``assets``: asset polygons for every survey (else each survey folder's assets.gpkg/.geojson, else
    the rasters' footprints); ``rules``: condition classes and crack types (see deliverables).
    """
    started = time.time()
    out = Path(out)
    if not out.parent.exists():
        raise OutputError(out, f"parent folder {out.parent} does not exist", "create it, or choose another --out")
    rules = rules or AssetRules()
    if assets is not None:
        load_assets(assets, rules)  # a bad asset file fails before hours of inference, not after
    model_path = Path(model_path) if model_path else SHIPPED_MODEL
    meta = read_meta(model_path)
    sha = file_sha256(model_path)
    out.mkdir(exist_ok=True)
    mode = resolve_mode(config.inference.mode, meta, model_path)
    if mode != "mask" and (config.inference.scale != 1.0 or config.inference.target_gsd_m is not None):
        raise ConfigError(None, f"inference.scale / target_gsd_m apply to mask mode only (mode is {mode})",
                          "leave them unset, or use a model with a mask decoder")
    margin = context_margin(meta, mode, config, model_path) if mode != "patch" else 0
    threshold = output_threshold(meta, mode, config)
    log(f"model {model_path.name} (sha256 {sha[:12]}, heads {'+'.join(meta.heads)}, {meta.provenance.get('init', 'unknown')} init); "
        f"mode {mode}, threshold {threshold:.3f}" + (f", windows {config.inference.window_px} px + {margin} px context" if margin else ""))
    rasters, input_errors = find_rasters(inputs)
    result = RunResult(out)
    compute: list[str] = []
    for error in input_errors:
        log(f"ERROR {error.message}")
        result.outcomes.append(RasterOutcome(survey="", raster="", source=str(error.path), status="error", error=error.message))
    spec = model_spec(model_path, sha, config.inference)
    if rasters:
        # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB.
        cache_bytes = config.inference.gdal_cache_mb * 2**20
        with rasterio.Env(GDAL_CACHEMAX=cache_bytes), dask_client(config.inference) as client:
            warming = warm_workers(client, spec)
            log(f"dask: {len(client.scheduler_info().get('workers', {}))} workers at {client.scheduler.address}")
            for number, item in enumerate(rasters, 1):
                log(f"[{number}/{len(rasters)}] {item.survey}/{item.path.name}")
                outcome = process_raster(item, out, client, spec, meta, threshold, config, progress, mode, margin)
                if outcome.error:
                    log(f"ERROR {outcome.error}")
                result.outcomes.append(outcome)
                if number == 1:
                    compute = compute_when_warm(warming)
                    log(f"model on {' / '.join(compute)}")
    write_survey_reports(out, result.outcomes)
    write_summary(out / "summary.csv", result.outcomes)
    write_json(
        out / "run.json",
        {
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "inputs": [str(p) for p in inputs],
            "cwd": str(Path.cwd()),  # relative sources in report.json are relative to it
            "config": config.model_dump(mode="json"),
            "model": {"file": str(model_path), "sha256": sha, "threshold": threshold, "metadata": meta.provenance,
                      "patch_size": meta.patch_size, "heads": list(meta.heads), "compute": compute},
            "mode": mode,
            "window": {"core_px": config.inference.window_px, "margin_px": margin} if mode != "patch" else None,
            "versions": package_versions(),
            "rasters": len(result.outcomes),
            "failed": len(result.failed),
            "seconds": round(time.time() - started, 2),
            "timings": {f"{o.survey}/{o.raster}" if o.survey else o.source: o.seconds for o in result.outcomes},
            "assets": str(Path(assets).resolve()) if assets else None,
            "asset_rules": rules.model_dump(mode="json"),
        },
    )
    write_deliverables(out, log)
    return result


def process_raster(
    item: SurveyRaster,
    out: Path,
    client: Any,
    spec: ModelSpec,
    meta: ModelMeta,
    threshold: float,
    config: RunConfig,
    progress: bool = True,
    mode: Mode = "patch",
    margin: int = 0,
) -> RasterOutcome:
    """One raster, all stages, into a temp folder renamed into place at the end."""
    outcome = RasterOutcome(survey=item.survey, raster=item.name, source=str(item.path))
    final = out / item.survey / item.name
    work = out / item.survey / f".{item.name}.partial"
    timer = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal timer
        now = time.perf_counter()
        outcome.seconds[stage] = round(now - timer, 3)
        timer = now

    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        info = inspect_raster(item.path)
        outcome.info = raster_summary(info)
        annotation = find_annotation(item.path)
        truth: Truth | None = load_truth(item.path, info, config.evaluate, annotation) if annotation else None
        lap("inspect")
        polygons: gpd.GeoDataFrame | None = None
        lines: gpd.GeoDataFrame | None = None
        # Patch-level blobs have no meaningful centreline: mask mode only.
        tracer = HeatmapTracer(info, threshold, config.vectorize.for_mode(mode),
                               config.centrelines if mode == "mask" else None, progress=progress)

        def vectors_while_compressing(staging: Path) -> None:
            nonlocal polygons, lines
            lap("heatmap")  # every block is traced; the COG copy now runs beside the merging
            polygons, lines = tracer.finish()
            write_vectors(polygons, lines, work)
            for style in ("heatmap.qml", "cracks.qml", "centrelines.qml") if lines is not None else ("heatmap.qml", "cracks.qml"):
                shutil.copy(STYLES / style, work / style)

        with StagedHeatmap(work / HEATMAP, info, config.heatmap) as staged:
            if mode == "mask":
                scale = processing_scale(info, config)
                windows = context_windows(int(np.ceil(info.width * scale)), int(np.ceil(info.height * scale)),
                                          config.inference.window_px, margin)
                done = 0
                for core, maps in segment_raster(client, info, windows, spec, True, config.tiling.min_valid_fraction,
                                                 progress, scale):
                    if maps is not None:
                        staged.write_levels(maps.core, maps.levels)
                        done += 1
                    if core is not None:  # each block is traced as soon as its pixels are in
                        tracer.settle(core, staged.read, written=maps is not None)
                if done == 0:
                    raise RasterError(item.path, "no window lies inside the valid footprint", "check the raster's nodata/alpha")
                counts = {"windows": len(windows), "windows_processed": done, "window_px": config.inference.window_px,
                          "margin_px": margin, "processing_scale": round(scale, 4)}
            else:
                if mode == "dense":
                    grid = dense_lattice(info, meta.patch_size)
                    scores = np.full(len(grid), np.nan, dtype=np.float32)
                    lattice = scores.reshape(len(grid.rows), len(grid.cols))
                    windows = context_windows(info.width, info.height, config.inference.window_px, margin)
                    for _, maps in segment_raster(client, info, windows, spec, False, config.tiling.min_valid_fraction,
                                                  progress):
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
                    raise RasterError(item.path, "no patch lies inside the valid footprint", "check the raster's nodata/alpha, or lower tiling.min_valid_fraction")
                write_patch_scores(staged, info, grid, scores, config.heatmap, progress)
                tracer.settle_all(staged.read)
                counts = {
                    "patches": len(grid), "patches_scored": scored, "patch_window_px": grid.size, "stride_px": grid.stride,
                    "patches_above_threshold": int(np.sum(scores[np.isfinite(scores)] >= threshold)),
                }
            lap("inference")
            staged.publish(meanwhile=vectors_while_compressing)
        assert polygons is not None  # set by vectors_while_compressing, which publishing always runs
        lap("cog_and_polygons")
        outcome.counts = {"mode": mode, **counts, "polygons": len(polygons), "threshold": round(threshold, 4)}
        if lines is not None:
            outcome.counts.update(centrelines=len(lines), crack_length=round(float(lines["length"].sum()), 4),
                                  unit=str(lines["unit"].iloc[0]) if len(lines) else ("m" if info.georeferenced else "px"))
        if truth is not None:
            metrics = evaluate_raster(work / HEATMAP, truth, polygons, threshold, info, config.evaluate)
            outcome.metrics = metrics.as_dict()
            outcome.counts["annotation"] = annotation.name if annotation else None
            outcome.measured = metrics
        lap("evaluate")
        write_json(work / REPORT, outcome.as_dict())
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        write_json(final / REPORT, outcome.as_dict())
    except SurveyCracksError as error:
        outcome.status, outcome.error = "error", error.message
    except Exception as error:  # noqa: BLE001 — one raster's bug must not stop the night's batch
        outcome.status = "error"
        outcome.error = f"{item.path}: unexpected {type(error).__name__}: {error} — please report this with run.json"
        outcome.info.setdefault("traceback", traceback.format_exc(limit=5))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if outcome.status != "ok":
        shutil.rmtree(final, ignore_errors=True)  # a previous night's outputs must not pass for this run's
    return outcome


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
            },
        )


def raster_summary(info: RasterInfo) -> dict[str, Any]:
    return {
        "width": info.width, "height": info.height, "dtype": info.dtype, "crs": info.crs,
        "georeferenced": info.georeferenced, "pixel_size": info.pixel_size,
        "coordinates": "map coordinates of the raster CRS" if info.georeferenced else PIXEL_COORDINATES,
        "transform": list(info.transform)[:6], "has_mask": info.has_mask, "notes": list(info.notes),
    }


def write_vectors(polygons: gpd.GeoDataFrame, lines: gpd.GeoDataFrame | None, folder: Path) -> None:
    """cracks.gpkg (layers 'cracks' and, in mask mode, 'centrelines'), cracks.geojson and centrelines.geojson.

    Each file is written under a temp name and renamed, so no half-written file is left.
    """
    layers = [("cracks", polygons, "MultiPolygon")] + ([("centrelines", lines, "LineString")] if lines is not None else [])
    gpkg_tmp = folder / f".partial.{GPKG}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # pixel-coordinate outputs
        for layer, frame, geometry_type in layers:
            frame.to_file(gpkg_tmp, driver="GPKG", layer=layer, engine="pyogrio", promote_to_multi=layer == "cracks",
                          geometry_type=geometry_type)
            tmp = folder / f".partial.{layer}.geojson"
            frame.to_file(tmp, driver="GeoJSON", engine="pyogrio", promote_to_multi=layer == "cracks",
                          geometry_type=geometry_type)
            tmp.rename(folder / (GEOJSON if layer == "cracks" else CENTRELINES_GEOJSON))
    embed_layer_styles(gpkg_tmp, {layer: f"{layer}.qml" for layer, _, _ in layers})
    gpkg_tmp.rename(folder / GPKG)
