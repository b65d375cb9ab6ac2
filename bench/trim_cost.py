"""What the heap trim after a cropped window costs a worker (docs/benchmarks.md, History).

A Dask worker trims glibc's heap after each window the footprint's edge crops
(`inference._segment_footprint`). This runs what a worker runs, in one process and
without the client beside it: every window of a raster through `inference.segment_window`
on the worker's task slots (two on a 2-core machine, one intra-op thread each),
with that trim as shipped (``--trim always``) or turned off (``--trim never``); it prints
wall seconds, CPU seconds and the process's peak RSS (polled every 0.05 s). Run the two
alternately, a few times each: the machine drifts.

    .venv/bin/python bench/trim_cost.py /tmp/bench_rasters/ortho_100mp.tif --trim always
    .venv/bin/python bench/trim_cost.py /tmp/bench_rasters/ortho_100mp.tif --trim never
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from survey_cracks.config import RunConfig  # noqa: E402
from survey_cracks.inference.cluster import worker_settings  # noqa: E402  (imports no torch)

CONFIG = RunConfig()
# The environment a LocalCluster worker starts with (`cluster.worker_settings`), set before torch is imported.
os.environ.update(worker_settings(CONFIG.inference)["distributed.nanny.pre-spawn-environ"])  # type: ignore[arg-type]

import psutil  # noqa: E402

import survey_cracks.inference.dispatch as inference  # noqa: E402
from survey_cracks.io.raster import inspect_raster  # noqa: E402
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256, read_meta  # noqa: E402
from survey_cracks.run.pipeline import context_margin  # noqa: E402
from survey_cracks.tiling import context_windows  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raster", type=Path)
    parser.add_argument("--trim", choices=("always", "never"), required=True)
    args = parser.parse_args()
    trims = 0

    def counted_trim() -> bool:
        nonlocal trims
        if args.trim == "never":
            return False
        trims += 1
        return shipped_trim()

    shipped_trim = inference.trim_heap
    inference.trim_heap = counted_trim
    config = CONFIG
    info = inspect_raster(args.raster)
    margin = context_margin(read_meta(SHIPPED_MODEL), "mask", config, SHIPPED_MODEL)  # as `survey-cracks run` picks it
    windows = context_windows(info.width, info.height, config.inference.window_px, margin)
    spec = inference.model_spec(SHIPPED_MODEL, file_sha256(SHIPPED_MODEL), config.inference)
    inference.load_engine(spec)
    process, peak, done = psutil.Process(), 0, threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(config.inference.worker_threads()) as pool:  # a worker's task slots
        list(pool.map(lambda window: inference.segment_window(info, window, spec, True), windows))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    print(f"trim {args.trim}: {len(windows)} windows, {wall:.1f} s wall, {cpu:.1f} CPU-s, peak RSS "
          f"{peak / 2**30:.3f} GiB, {trims} trims")


if __name__ == "__main__":
    main()
