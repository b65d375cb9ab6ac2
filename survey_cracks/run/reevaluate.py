"""`survey-cracks evaluate OUT`: every figure and report of a run again, from its outputs, without the model.

The heatmap does not depend on the threshold; everything after it does. So at a new
threshold the polygons and centrelines are traced again from ``heatmap.tif`` (the
same block-wise tracing, `tracing.trace_heatmap`, a run does while it writes them), the
metrics are recomputed against the annotations found beside the source rasters, and
report.json, the survey reports, summary.csv, run.json and the deliverables are
rewritten: the outputs then equal a fresh run at that threshold, except timings and
the patch-mode count ``patches_above_threshold`` (patch scores are not kept; it is
left out).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import geopandas as gpd

from survey_cracks.config import RunConfig
from survey_cracks.deliver.condition import AssetRules
from survey_cracks.deliver.deliverables import write_deliverables
from survey_cracks.deliver.outcomes import RasterOutcome, write_summary
from survey_cracks.deliver.run_record import RUN_JSON, read_run
from survey_cracks.errors import RasterError
from survey_cracks.evaluation.evaluate import evaluate_raster
from survey_cracks.io.annotations import find_annotation, load_truth
from survey_cracks.io.raster import RasterInfo, inspect_raster
from survey_cracks.outputs import CRACK_MASK, HEATMAP, REPORT, write_json, write_vectors
from survey_cracks.run.pipeline import write_survey_reports
from survey_cracks.vectors.heatmap import write_crack_mask
from survey_cracks.vectors.tracing import trace_heatmap

Log = Callable[[str], None]


def vectors_from_heatmap(heatmap: Path, threshold: float, info: RasterInfo, config: RunConfig, mode: str,
                         progress: bool = False) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame | None]:
    """Crack polygons and (mask mode) centrelines at ``threshold``, exactly as `process_raster` traces them."""
    return trace_heatmap(heatmap, info, threshold, config.vectorize.for_mode(mode),
                         config.centrelines if mode == "mask" else None, progress=progress)


def reevaluate_raster(outcome: RasterOutcome, folder: Path, source: Path, threshold: float, config: RunConfig, mode: str,
                      progress: bool = False) -> RasterOutcome:
    """One raster's vectors, counts and metrics at ``threshold``, rewritten in its folder."""
    if not source.is_file():
        raise RasterError(source, "source raster of this output not found (report.json records it)",
                          "run evaluate from the folder the run was started in, or restore the raster")
    info = inspect_raster(source)
    polygons, lines = vectors_from_heatmap(folder / HEATMAP, threshold, info, config, mode, progress)
    write_vectors(polygons, lines, folder)
    if config.heatmap.write_mask:  # the mask is of the threshold too
        write_crack_mask(folder / HEATMAP, folder / CRACK_MASK, threshold, config.heatmap)
    # Patch scores are not kept: the count above the new threshold is left out.
    counts = replace(outcome.counts, patches_above_threshold=None, annotation=None).with_vectors(
        threshold, polygons, lines, info.georeferenced)
    result = RasterOutcome(survey=outcome.survey, raster=outcome.raster, source=outcome.source, info=outcome.info,
                           counts=counts, seconds=outcome.seconds, action=outcome.action, reason=outcome.reason)
    annotation = find_annotation(source)
    if annotation is not None:
        truth = load_truth(source, info, config.evaluate, annotation)
        result.measured = evaluate_raster(folder / HEATMAP, truth, polygons, threshold, info, config.evaluate)
        result.counts.annotation = annotation.name
    write_json(folder / REPORT, result.as_dict())
    return result


def evaluate_outputs(out: Path, threshold: float | None = None, assets: Path | None = None, rules: AssetRules | None = None,
                     progress: bool = False, log: Log = print) -> list[RasterOutcome]:
    """Recompute every figure and report of the run in ``out`` (see the module docstring)."""
    out = Path(out)
    record = read_run(out)
    if assets is not None:
        from survey_cracks.deliver.assets import load_assets

        load_assets(assets, rules or record.rules)
    given = threshold is not None
    threshold = record.threshold if threshold is None else float(threshold)
    outcomes = []
    for outcome in record.outcomes:
        if outcome.status == "ok":
            log(f"{outcome.survey}/{outcome.raster}: threshold {threshold:g}")
            outcome = reevaluate_raster(outcome, record.folder(outcome), record.source(outcome), threshold, record.config, record.mode, progress)
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
