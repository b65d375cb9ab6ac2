"""Two photo tasks in the threads of one process: how much the network loses to the other's Python (issue 28).

In one process, one torch thread (as a task slot of a Dask worker): the product's network
(`engine.segment`) on --count procedural photos alone, then again while a second thread traces photos'
heatmaps (`HeatmapTracer`: polygons and centrelines, GeoDataFrames) in a loop, as the second task of a
worker's two threads would. ms per photo of each; the tracer's own rate beside the network. --rounds
alternations; `sys.setswitchinterval` of --switch seconds (CPython's default 0.005).

Prints one line per round; with --json, the rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

import cv2
import torch
from photo_throughput import make_procedural

from survey_cracks.config import RunConfig
from survey_cracks.inference.dispatch import model_spec, segment_photo
from survey_cracks.io.raster import inspect_raster
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256, read_meta
from survey_cracks.models.engines import load_engine
from survey_cracks.run.pipeline import context_margin
from survey_cracks.vectors.heatmap import probability_of
from survey_cracks.vectors.tracing import HeatmapTracer


def trace_until(trace: Callable[[int], None], count: int, stop: threading.Event, traced: list[int]) -> None:
    """The second task: photos traced in turn until ``stop``; ``traced[0]`` counts them."""
    while not stop.is_set():
        trace(traced[0] % count)
        traced[0] += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="448x448")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--switch", type=float, default=0.005)
    parser.add_argument("--photo-dir", type=Path, default=Path(tempfile.gettempdir()) / "survey_cracks_photo_bench")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sys.setswitchinterval(args.switch)
    width, height = (int(v) for v in args.size.split("x"))
    paths = make_procedural(args.photo_dir / args.size, width, height, args.count)
    config = RunConfig()
    spec = model_spec(SHIPPED_MODEL, file_sha256(SHIPPED_MODEL), config.inference)
    engine = load_engine(spec)
    margin = context_margin(read_meta(SHIPPED_MODEL), "mask", config, SHIPPED_MODEL)
    images = [cv2.imread(str(p))[..., ::-1].copy() for p in paths]
    infos = [inspect_raster(p) for p in paths]
    levels = [segment_photo(info, spec, config.inference.window_px, margin).levels for info in infos]

    def trace(i: int) -> None:
        probability = probability_of(levels[i])
        tracer = HeatmapTracer(infos[i], 0.1, config.vectorize.for_mode("mask"), config.centrelines)
        tracer.settle_all(lambda window: probability[window.toslices()])
        tracer.finish()

    def network_ms() -> float:
        start = time.perf_counter()
        for rgb in images:
            engine.segment(rgb)
        return 1000 * (time.perf_counter() - start) / len(images)

    rounds = []
    for r in range(args.rounds):
        engine.segment(images[0])
        alone = network_ms()
        start = time.perf_counter()
        for i in range(len(levels)):
            trace(i)
        trace_alone = 1000 * (time.perf_counter() - start) / len(levels)
        stop, traced = threading.Event(), [0]
        thread = threading.Thread(target=trace_until, args=(trace, len(levels), stop, traced))
        start = time.perf_counter()
        thread.start()
        beside = network_ms()
        stop.set()
        thread.join()
        elapsed = 1000 * (time.perf_counter() - start)
        rounds.append({"network_alone_ms": round(alone, 1), "network_beside_tracing_ms": round(beside, 1),
                       "tracing_alone_ms": round(trace_alone, 1),
                       "tracing_beside_network_ms": round(elapsed / max(traced[0], 1), 1)})
        print(f"round {r + 1}: network {alone:.1f} ms a photo alone, {beside:.1f} beside a tracing thread; "
              f"tracing {trace_alone:.1f} ms alone, {elapsed / max(traced[0], 1):.1f} beside", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": "python bench/photo_gil.py " + " ".join(argv or sys.argv[1:]),
                                         "size": args.size, "photos": args.count, "switch_s": args.switch,
                                         "rounds": rounds}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
