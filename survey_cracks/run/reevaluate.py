"""`survey-cracks evaluate OUT`: every figure and report of a run again, from its outputs, without the model.

The heatmap does not depend on the threshold; everything after it does. So at a new
threshold the polygons and centrelines are traced again from ``heatmap.tif`` (the
same block-wise tracing, `tracing.trace_heatmap`, a run does while it writes them), the
metrics are recomputed against the annotations found beside the source rasters, and
report.json, the survey reports, summary.csv, run.json and the deliverables are
rewritten: the outputs then equal a fresh run at that threshold, except timings and
the patch-mode count ``patches_above_threshold`` (patch scores are not kept; it is
left out). The steps after tracing are the run's own (`pipeline.finish_raster`).

OUT's manifest is rewritten with them, so outputs and their record never disagree: each
re-evaluated raster's entry then says what ``run --threshold T`` would have recorded, the
settings at the threshold its polygons are traced at and the annotation they were scored
against. A later run at another threshold (a plain ``run`` after ``evaluate --threshold T``
included) therefore finds those rasters' settings changed and computes them again at its own
threshold, instead of keeping polygons at T under a run.json that states its threshold.
Every entry is recorded at run.json's settings, the ones its vectors were just traced with.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import geopandas as gpd
from tqdm import tqdm

from survey_cracks.config import RunConfig
from survey_cracks.deliver.collection import (
    HEATMAPS,
    JOURNAL,
    PHOTOS_CSV,
    CollectionWriter,
    failed_rows,
    heatmap_name,
    is_collection,
    iter_journal,
    photo_row,
    table_positions,
)
from survey_cracks.deliver.condition import AssetRules
from survey_cracks.deliver.deliverables import write_deliverables
from survey_cracks.deliver.outcomes import RasterOutcome, write_summary
from survey_cracks.deliver.run_record import RUN_JSON, read_run
from survey_cracks.errors import RasterError
from survey_cracks.io.annotations import find_annotation
from survey_cracks.io.raster import RasterInfo, inspect_raster
from survey_cracks.io.remote import Source
from survey_cracks.io.discover import SurveyRaster
from survey_cracks.outputs import GPKG, HEATMAP, REPORT, write_json
from survey_cracks.run.collection import PhotoJob, close_collection, collection_inputs, photo_inputs, rescore_photo
from survey_cracks.run.manifest import Inputs, config_sha256, load_records, save_record
from survey_cracks.run.notices import optional_truth
from survey_cracks.run.pipeline import finish_raster, write_survey_reports
from survey_cracks.vectors.tracing import trace_heatmap

Log = Callable[[str], None]


def vectors_from_heatmap(heatmap: Path, threshold: float, info: RasterInfo, config: RunConfig, mode: str,
                         progress: bool = False) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None]:
    """Crack polygons and (mask mode) centrelines at ``threshold``, exactly as `process_raster` traces them."""
    return trace_heatmap(heatmap, info, threshold, config.vectorize.for_mode(mode),
                         config.centrelines if mode == "mask" else None, progress=progress)


def reevaluate_raster(outcome: RasterOutcome, folder: Path, source: Path, threshold: float, config: RunConfig, mode: str,
                      progress: bool = False, annotation: Source | None = None) -> RasterOutcome:
    """One raster's vectors, counts and metrics at ``threshold``, rewritten in its folder.

    ``annotation``: the one resolved for this raster (`find_annotation`); None: not annotated.
    """
    if not source.is_file():
        raise RasterError(source, "source raster of this output not found (report.json records it)",
                          "run evaluate from the folder the run was started in, or restore the raster")
    info = inspect_raster(source)
    truth, annotation_error = optional_truth(source, info, config.evaluate, annotation)  # as a run treats it
    polygons, lines = vectors_from_heatmap(folder / HEATMAP, threshold, info, config, mode, progress)
    # Patch scores are not kept: the count above the new threshold is left out.
    counts = replace(outcome.counts, patches_above_threshold=None, annotation=None)
    result = RasterOutcome(survey=outcome.survey, raster=outcome.raster, source=outcome.source, info=outcome.info,
                           counts=counts, seconds=outcome.seconds, action=outcome.action, reason=outcome.reason,
                           annotation_error=annotation_error)
    return finish_raster(result, folder, polygons, lines, threshold, info, truth, config.evaluate, mask=config.heatmap)


def reevaluate_collection(outcome: RasterOutcome, folder: Path, cwd: Path, threshold: float, config: RunConfig,
                          model_sha256: str, settings: str, progress: bool = False, log: Log = print
                          ) -> tuple[RasterOutcome, Inputs] | None:
    """A collection's photos re-scored at ``threshold`` from heatmaps/ (`collection.rescore_photo`): its GeoPackage,
    photos.csv, journal and report.json rewritten; the outcome and the manifest's inputs for it. None (and one line
    said) when the photos' heatmaps were not written (``--no-heatmaps``): the collection is then left as it is.

    ``settings``: the hash of the settings now in force; each photo's journal line records it, as a run at
    ``threshold`` would, so that a later run at another threshold computes the photos again.
    """
    journal = [name for name, _ in iter_journal(folder)]  # the names only: the lines are read one at a time below
    missing = [name for name in journal if not (folder / heatmap_name(name)).is_file()]
    if missing:
        log(f"{outcome.survey}/{outcome.raster}: re-scoring needs each photo's heatmap and {len(missing)} of {len(journal)} "
            f"are not in {folder / HEATMAPS} (run with --no-heatmaps?): kept at threshold {outcome.counts.threshold}; to "
            f"re-score, run the photos again without --no-heatmaps, with --threshold {threshold:g} --force")
        return None
    failed, positions = failed_rows(folder), table_positions(folder)  # positions kept as they are (EXIF or CSV)
    work = folder / ".evaluate"
    shutil.rmtree(work, ignore_errors=True)
    writer = CollectionWriter(work)
    writer.start(set())
    jobs: list[PhotoJob] = []
    empty: dict[str, gpd.GeoDataFrame] = {}
    for name, entry in tqdm(iter_journal(folder), desc=f"{outcome.survey}/{outcome.raster}", unit="photo", total=len(journal),
                            disable=not progress):
        source = cwd / entry["report"]["source"]
        annotation = find_annotation(source) if source.is_file() else None
        photo, polygons, lines = rescore_photo(entry, folder / heatmap_name(name), source, annotation, threshold, config)
        row = photo_row(photo, entry["row"].get("score"), entry["row"].get("network_px"), True)
        inputs = photo_inputs(SurveyRaster(outcome.survey, source, name, source.parent), annotation, model_sha256, settings)
        writer.add(name, polygons, lines, {"inputs": inputs, "report": photo.as_dict(), "row": row})
        for layer, frame in (("cracks", polygons), ("centrelines", lines)):
            empty.setdefault(layer, frame.iloc[:0])
        jobs.append(PhotoJob(name, source, Path(annotation) if annotation else None, inputs, source.stat().st_size))
    result = close_collection(writer, outcome.survey, outcome.source, set(journal) | {row["photo"] for row in failed},
                              set(), failed, empty, sum(outcome.seconds.values()), positions)
    for name in (GPKG, PHOTOS_CSV, JOURNAL, REPORT):  # each replaced whole; heatmaps/ is not touched
        os.replace(work / name, folder / name)
    shutil.rmtree(work)
    result.action, result.reason = outcome.action, outcome.reason
    return result, collection_inputs(jobs, model_sha256, settings)


def evaluate_outputs(out: Path, threshold: float | None = None, assets: Path | None = None, rules: AssetRules | None = None,
                     progress: bool = False, log: Log = print) -> list[RasterOutcome]:
    """Recompute every figure and report of the run in ``out``, and its manifest (see the module docstring)."""
    out = Path(out)
    record = read_run(out)
    if assets is not None:
        from survey_cracks.deliver.assets import load_assets

        load_assets(assets, rules or record.rules)
    given = threshold is not None
    threshold = record.threshold if threshold is None else float(threshold)
    # The settings as `run --threshold T` records them: what the manifest's entries now stand for.
    config = record.config.model_copy(update={"vectorize": record.config.vectorize.model_copy(update={"threshold": threshold})}) \
        if given else record.config
    settings = config_sha256(config)
    entries = {(r.survey, r.raster): r for r in load_records(out)}
    outcomes = []
    for outcome in record.outcomes:
        if outcome.status == "ok" and is_collection(outcome):
            log(f"{outcome.survey}/{outcome.raster}: threshold {threshold:g}")
            rescored = reevaluate_collection(outcome, record.folder(outcome), record.cwd, threshold, config,
                                             record.model_sha256, settings, progress, log)
            entry = entries.get((outcome.survey, outcome.raster))
            if rescored is not None:
                outcome = rescored[0]
                if entry is not None:
                    entry.inputs = rescored[1]
                    save_record(out, entry)
        elif outcome.status == "ok":
            log(f"{outcome.survey}/{outcome.raster}: threshold {threshold:g}")
            source = record.source(outcome)
            annotation = find_annotation(source) if source.is_file() else None
            outcome = reevaluate_raster(outcome, record.folder(outcome), source, threshold, config, record.mode, progress,
                                        annotation)
            entry = entries.get((outcome.survey, outcome.raster))
            if entry is not None:
                entry.inputs = entry.inputs.with_annotation(annotation).model_copy(update={"config_sha256": settings})
                save_record(out, entry)
        outcomes.append(outcome)
    write_survey_reports(out, outcomes)
    write_summary(out / "summary.csv", outcomes)
    data = json.loads((out / RUN_JSON).read_text())
    if given:  # as `run --threshold T` records it
        data["config"]["vectorize"]["threshold"] = threshold
    data["model"]["threshold"] = threshold
    if assets is not None:
        data["assets"] = str(Path(assets).resolve())
    if rules is not None:
        data["asset_rules"] = rules.model_dump(mode="json")
    data["evaluated"] = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "threshold": threshold,
                         "from": "existing outputs (survey-cracks evaluate)"}
    write_json(out / RUN_JSON, data)
    write_deliverables(out, log)
    return outcomes
