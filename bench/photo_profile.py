"""Where a photo collection's time goes beyond the trunk (issue 28): start-up and per-photo stages.

1. Start-up, from the run's own log: `survey-cracks run FOLDER --quiet` as a subprocess of the code under
   test (--repo); the seconds between process start, the first line of run.log.jsonl (imports, model
   metadata, planning), "dask: ... workers" (the LocalCluster taken over), "model on" (every worker has
   loaded the model and chosen its engine), the collection done, "finished" (reports, deliverables) and
   the process's exit. Rounds interleaved with 2., medians.
2. Per photo, in this process with one torch thread (one task slot of the run's default worker), each
   photo through `run.collection.compute_photo` (the worker's part) with every stage timed by wrapping
   the functions it calls, then the client's part (`photo_row`, `CollectionWriter.add/flush/finish`)
   on the results. Beside it: the bare ResNet18 trunk (conv1 .. layer4 + avgpool, bf16 autocast where
   native, 1 thread) and the product's network alone (`engine.segment`: normalisation, trunk,
   decoder, sigmoid, levels) on the same decoded photos.

Output: --json (bench/results/photo_profile.json) and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from survey_cracks.inference.cluster import NETWORK_ENVIRONMENT

os.environ.update(NETWORK_ENVIRONMENT)

import cv2
import torch
from photo_throughput import bare_trunk, make_procedural, run_once

from survey_cracks.models import hardware

STARTUP_MARKS = (("first log line (imports, model metadata, planning)", "model "),
                 ("cluster taken over", "dask: "),
                 ("model loaded on the workers (engine chosen)", "model on "),
                 ("collection computed", "/collection: done"),
                 ("reports written", "finished: "))


def startup_phases(repo: Path, folder: Path, scratch: Path) -> dict[str, float]:
    """Seconds of each start-up phase of one run, from run.log.jsonl's timestamps."""
    started = time.time()
    row = run_once(folder, repo, scratch)
    lines = [json.loads(line) for line in (scratch / "out" / "run.log.jsonl").read_text().splitlines()]
    phases, last = {}, started
    for name, prefix in STARTUP_MARKS:
        stamp = next(datetime.fromisoformat(x["time"]).timestamp() for x in lines if prefix in x["message"])
        phases[name] = round(stamp - last, 3)
        last = stamp
    phases["process exit (cluster shut down)"] = round(started + row["seconds"] - last, 3)
    phases["total"] = row["seconds"]
    return phases


class Stages:
    """Seconds per stage, summed over photos: ``wrap`` puts a timer around a function."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start
        return timed


def per_photo(paths: list[Path], scratch: Path) -> dict[str, float]:
    """Milliseconds per photo of each stage of the worker's and the client's part, in this process."""
    from survey_cracks.config import RunConfig
    from survey_cracks.deliver import collection as deliver
    from survey_cracks.inference import dispatch
    from survey_cracks.io.discover import SurveyRaster
    from survey_cracks.models.checkpoint import SHIPPED_MODEL, read_meta
    from survey_cracks.models.engines import load_engine
    from survey_cracks.run import collection, pipeline
    from survey_cracks.vectors import tracing

    config = RunConfig()
    meta = read_meta(SHIPPED_MODEL)
    margin = pipeline.context_margin(meta, "mask", config, SHIPPED_MODEL)
    from survey_cracks.models.checkpoint import file_sha256
    spec = dispatch.model_spec(SHIPPED_MODEL, file_sha256(SHIPPED_MODEL), config.inference)
    engine = load_engine(spec)
    stages = Stages()
    patches = contextlib.ExitStack()
    for module, name, label in (
            (collection, "inspect_raster", "open (inspect_raster)"),
            (collection, "optional_truth", "annotation lookup"),
            (dispatch, "read_context", "read + JPEG decode"),
            (dispatch, "close_shared_readers", "close reader"),
            (collection, "probability_of", "levels -> probability"),
            (collection, "write_heatmap", "heatmap PNG"),
            (collection, "exif_position", "EXIF GPS"),
            (collection, "segment_photo", "segment_photo (all)"),
            (deliver, "photo_row", "client: photo_row")):
        original = getattr(module, name)
        patches.callback(setattr, module, name, original)
        setattr(module, name, stages.wrap(label, original))
    for cls, name, label in ((tracing.HeatmapTracer, "settle_all", "vectorising (settle_all)"),
                             (tracing.HeatmapTracer, "finish", "vectorising (finish)"),
                             (deliver.CollectionWriter, "add", "client: writer.add (its flushes included)"),
                             (deliver.CollectionWriter, "flush", "client: GeoPackage flush"),
                             (deliver.CollectionWriter, "finish", "client: finish (photos layer, CSV, styles)")):
        original = getattr(cls, name)
        patches.callback(setattr, cls, name, original)
        setattr(cls, name, stages.wrap(label, original))
    segment = engine.segment
    engine.segment = stages.wrap("network (engine.segment)", segment)
    patches.callback(setattr, engine, "segment", segment)
    folder = scratch / "profile_out" / "collection"
    with patches:
        items = [SurveyRaster(path=p, survey="s", name=p.stem, folder=p.parent) for p in paths]
        plan, _ = collection.plan_collection("s", scratch / "profile_out", items, spec.sha256, "x", True)
        settings = collection.PhotoSettings(spec, config, 0.1, margin, "s", folder, True)
        writer = deliver.CollectionWriter(folder)
        writer.start(set())  # heatmaps/ made
        first = collection.compute_photo(plan.photos[0], settings)  # untimed: first-call costs
        if first.outcome.status != "ok":
            raise RuntimeError(f"the profile's photo failed: {first.outcome.error}")
        stages.seconds.clear()
        start = time.perf_counter()
        results = [collection.compute_photo(job, settings) for job in plan.photos]
        worker = time.perf_counter() - start
        failed = [r.outcome.error for r in results if r.outcome.status != "ok"]
        if failed:
            raise RuntimeError(f"{len(failed)} photos failed: {failed[0]}")
        start = time.perf_counter()
        rows = []
        for job, result in zip(plan.photos, results):
            row = deliver.photo_row(result.outcome, result.score, result.network_px, True, result.position)
            rows.append(row)
            writer.add(job.name, result.polygons, result.lines, {"inputs": job.inputs,
                                                                 "report": result.outcome.as_dict(), "row": row})
        writer.flush()
        writer.finish(iter(rows), {})
        client = time.perf_counter() - start
    n = len(paths)
    ms = {name: round(1000 * s / n, 2) for name, s in sorted(stages.seconds.items())}
    inside = stages.seconds["segment_photo (all)"] - stages.seconds["network (engine.segment)"] \
        - stages.seconds["read + JPEG decode"] - stages.seconds["close reader"]
    ms["segment_photo: the rest (windows, engine lookup, copies)"] = round(1000 * inside / n, 2)
    ms["worker part, all"] = round(1000 * worker / n, 2)
    ms["client part, all"] = round(1000 * client / n, 2)

    # the network alone and the bare trunk on the same decoded photos, one thread
    images = [cv2.imread(str(p))[..., ::-1].copy() for p in paths]
    bf16 = hardware.cpu_has_native_bf16()
    model = bare_trunk()
    from photo_throughput import bare_photos_per_s
    ms["bare ResNet18 trunk (1 thread)"] = round(1000 / bare_photos_per_s(model, images, bf16), 2)
    segment(images[0])
    start = time.perf_counter()
    for rgb in images:
        segment(rgb)
    ms["product network alone (engine.segment, 1 thread)"] = round(1000 * (time.perf_counter() - start) / n, 2)
    return ms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout whose `run` is timed (start-up)")
    parser.add_argument("--size", default="448x448")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--photo-dir", type=Path, default=Path(tempfile.gettempdir()) / "survey_cracks_photo_bench")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "photo_profile.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    width, height = (int(v) for v in args.size.split("x"))
    folder = args.photo_dir / f"{args.size}_{args.count}"
    paths = make_procedural(folder, width, height, args.count)
    startup: list[dict[str, float]] = []
    photo: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            startup.append(startup_phases(args.repo.resolve(), folder, Path(scratch)))
            photo.append(per_photo(paths, Path(scratch)))
            print(f"round {r + 1}: run {startup[-1]['total']:.1f} s; worker {photo[-1]['worker part, all']:.1f} ms/photo, "
                  f"trunk {photo[-1]['bare ResNet18 trunk (1 thread)']:.1f} ms", flush=True)
    median = {key: round(statistics.median(x[key] for x in rows), 3) for rows in (startup, photo) for key in rows[0]}
    result = {"command": "python bench/photo_profile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "photos": args.count, "size": args.size, "rounds": args.rounds,
              "machine": {"cpu": hardware.cpu_name(), "cores": os.cpu_count(), "bf16_native": hardware.cpu_has_native_bf16()},
              "startup_seconds": {k: median[k] for k in startup[0]},
              "per_photo_ms": {k: median[k] for k in photo[0]}, "single_rounds": {"startup": startup, "per_photo": photo}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("| start-up phase | seconds (median) |\n|---|---|")
    for k, v in result["startup_seconds"].items():
        print(f"| {k} | {v:.2f} |")
    print("\n| per photo | ms (median) |\n|---|---|")
    for k, v in result["per_photo_ms"].items():
        print(f"| {k} | {v:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
