"""Throughput and memory benchmark: bare model vs end-to-end `run` vs a naive loop.

One run measures, on this machine:
  1. bare model   - ResNet18 alone on in-memory patches, at the model's patch size, batch 64:
                    the fastest of PyTorch (bf16 where native, else fp32) and ONNX Runtime,
                    one stream or one stream per core;
  2. end-to-end   - `survey-cracks run` on procedural orthomosaics of >= 100 and 400 MP
                    (windowed reading, Dask workers, heatmap COG, polygons), wall time from
                    process start to exit, peak RSS of the whole process tree (client + workers);
  3. naive        - the notebook way over the same kind of patches: a per-patch loop, PIL crop,
                    torchvision transforms, fp32, batch 1.
Figures are ratios against the bare model measured in the same run: once at the start (every
engine and way, fastest pass), and, for the fastest way, again just before and after each
end-to-end run, since a shared machine's speed drifts over the benchmark: as its fastest pass
(`*_vs_bare_model_around_it`, a burst against a long run's average) and as total patches over total
time of all passes (`*_vs_sustained_bare_model_around_it`, measured the way the run is). With
`--repeats N` the end-to-end runs (and the naive loop) are measured in N alternating rounds and each
ratio is the median over the rounds. Results go to bench/results/throughput.json and a Markdown
table on stdout (its runs are in docs/benchmarks.md, History).

    python bench/throughput.py [--sizes 100 400] [--repeats N] [--model PATH] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psutil
import rasterio
import torch
from rasterio.windows import Window

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.models.network import (  # noqa: E402
    SHIPPED_MODEL,
    CrackClassifier,
    ModelMeta,
    autocast_dtype,
    build_model,
    precision_name,
    save_checkpoint,
)
from survey_cracks.synthetic import write_orthomosaic  # noqa: E402


def sample_patches(raster: Path, size: int, count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    with rasterio.open(raster) as src:
        out = []
        while len(out) < count:
            row, col = rng.integers(0, src.height - size), rng.integers(0, src.width - size)
            patch = src.read([1, 2, 3], window=Window(int(col), int(row), size, size))
            if patch.mean() > 5:
                out.append(np.moveaxis(patch, 0, -1))
    return np.stack(out)


WAYS = ("intra-op", "streams")
AROUND_PASSES = 4  # ~45 s of bare model before and after each end-to-end run


def bare_model(model: Path, patches: np.ndarray, threads: int, repeats: int = 3) -> dict:
    """The model alone on in-memory patches: the best of every engine and way to use the cores.

    Engines: PyTorch at the pipeline's precision (bf16 autocast + channels_last where the CPU runs
    bf16 natively, else fp32) and ONNX Runtime fp32. Ways: ``intra-op`` (one stream of batches,
    all cores per operation) and ``streams`` (one stream per core, one thread each: how the
    pipeline's worker runs). The best of them is what the bare model allows on this machine.
    """
    # The precision CrackClassifier(device="cpu", precision="auto") runs at, without loading the model for it.
    torch_name = f"torch {precision_name(autocast_dtype(torch.device('cpu'), 'auto'))}"
    rates = {f"{engine} {way}": bare_way(model, patches, threads, engine, way, repeats)
             for way in WAYS for engine in (torch_name, "onnxruntime fp32")}
    fastest = max(rates, key=lambda name: rates[name].best)
    return {"patches_per_s": rates[fastest].best, "sustained_patches_per_s": rates[fastest].sustained,
            "fastest": fastest, "by_mode": {name: rate.best for name, rate in rates.items()}, "batch": 64,
            "threads": threads}


def bare_way(model: Path, patches: np.ndarray, threads: int, engine: str, way: str, repeats: int = 3) -> Rate:
    """Patches/s of one engine ("torch ..." or "onnxruntime ...") used one way (see `WAYS`).

    Also re-measured for the fastest way just before and after each end-to-end run: this
    shared machine's speed drifts over a benchmark (see `_rate`), and a bare figure taken
    around a run is the fair denominator for that run.
    """
    from survey_cracks.models.onnx_engine import OnnxCrackClassifier

    streams = 1 if way == "intra-op" else threads
    engine_threads = threads if streams == 1 else 1
    if engine.startswith("torch"):
        torch.set_num_threads(engine_threads)
        classifier = CrackClassifier(model, device="cpu", precision="auto")
    else:
        classifier = OnnxCrackClassifier(model, threads=engine_threads)
    return _rate(classifier, patches, streams, repeats)


class Rate(NamedTuple):
    """Patches/s of several passes: the fastest pass, and all patches over all their time."""

    best: float
    sustained: float


def _rate(classifier, patches: np.ndarray, streams: int, repeats: int) -> Rate:  # type: ignore[no-untyped-def]
    """Patches/s of ``repeats`` passes over ``patches``, split over ``streams`` threads.

    ``best`` is a burst (the machine at its fastest moment); ``sustained`` is measured as the
    end-to-end run is, total patches over total time, so it carries the machine's moment-to-moment
    drift (passes of the same work here differ by up to 30 %) the same way the long run does.
    """
    from concurrent.futures import ThreadPoolExecutor

    parts = np.array_split(patches, streams)
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda part: classifier.predict(part[:64], 64), parts))  # warm-up
        passes = []
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(lambda part: classifier.predict(part, 64), parts))
            passes.append(time.perf_counter() - start)
    return Rate(best=round(len(patches) / min(passes), 1), sustained=round(len(patches) * repeats / sum(passes), 1))


def naive_loop(model: Path, raster: Path, size: int, count: int, threads: int) -> dict:
    """What a notebook does: PIL image, crop, ToTensor + Normalize, one patch at a time in fp32."""
    from PIL import Image
    from torchvision import transforms

    from survey_cracks.models.network import load_checkpoint

    torch.set_num_threads(threads)
    net, meta = load_checkpoint(model)
    to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize(meta.mean, meta.std)])
    with rasterio.open(raster) as src:
        side = min(4096, src.width, src.height)
        left, top = (src.width - side) // 2, (src.height - side) // 2
        image = Image.fromarray(np.moveaxis(src.read([1, 2, 3], window=Window(left, top, side, side)), 0, -1))
    step = size // 2
    boxes = [(c, r, c + size, r + size) for r in range(0, side - size + 1, step) for c in range(0, side - size + 1, step)]
    boxes = boxes[:count]

    def score(box: tuple[int, int, int, int]) -> None:
        torch.softmax(net(to_input(image.crop(box)).unsqueeze(0)), dim=1)

    with torch.no_grad():
        for box in boxes[:8]:  # warm-up, untimed, as for the bare model
            score(box)
        start = time.perf_counter()
        for box in boxes:
            score(box)
    rate = len(boxes) / (time.perf_counter() - start)
    return {"patches_per_s": round(rate, 1), "patches_timed": len(boxes), "precision": "fp32", "batch": 1, "threads": threads}


class TreeMemory(threading.Thread):
    """Peak of the summed RSS of a process and all its children (Dask workers included)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                total = 0
                for p in procs:
                    try:
                        total += p.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak = max(self.peak, total)
            except psutil.Error:
                break
            time.sleep(0.2)


def timed_command(command: list[str]) -> tuple[float, float, int, str]:
    """Run a command: (wall seconds from start to exit, peak RSS of its process tree in GiB, return code, output)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = TreeMemory(proc.pid)
    memory.start()
    output, _ = proc.communicate()
    seconds = time.perf_counter() - start
    memory.stop.set()
    memory.join()
    return seconds, memory.peak / 2**30, proc.returncode, output


def end_to_end(raster: Path, model: Path, out: Path, patch_size: int, stride: int) -> dict:
    command = [str(Path(sys.executable).with_name("survey-cracks")), "run", str(raster), "--out", str(out),
               "--model", str(model), "--quiet"]
    seconds, peak_gib, returncode, output = timed_command(command)
    if returncode != 0:
        raise RuntimeError(f"run failed:\n{output}")
    report = json.loads(next(out.glob("*/*/report.json")).read_text())
    with rasterio.open(raster) as src:
        megapixels = src.width * src.height / 1e6
    scored = report["counts"]["patches_scored"]
    return {
        "megapixels": round(megapixels, 1), "seconds": round(seconds, 1), "megapixels_per_s": round(megapixels / seconds, 2),
        "patches": report["counts"]["patches"], "patches_scored": scored,
        "patches_per_s": round(scored / seconds, 1), "peak_rss_gib": round(peak_gib, 2),
        "stage_seconds": report["seconds"], "patch": patch_size, "stride": stride,
    }


def round_ratios(rows: list[dict], bare: float) -> dict[str, float]:
    """The target ratios of one round of end-to-end runs (one row per raster size)."""
    ratios = {}
    for row in rows:
        size = f"{row['megapixels']:g}mp"
        ratios[f"end_to_end_{size}_vs_bare_model"] = round(row["patches_per_s"] / bare, 3)
        ratios[f"end_to_end_{size}_vs_bare_model_around_it"] = round(row["patches_per_s"] / row["bare_around"], 3)
        ratios[f"end_to_end_{size}_vs_sustained_bare_model_around_it"] = round(
            row["patches_per_s"] / row["bare_sustained_around"], 3)
        ratios[f"end_to_end_{size}_vs_naive"] = round(row["patches_per_s"] / row["naive"], 2)
    if len(rows) > 1:
        ratios["peak_rss_largest_vs_smallest"] = round(rows[-1]["peak_rss_gib"] / rows[0]["peak_rss_gib"], 3)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400], help="megapixels of the end-to-end rasters")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint [default: the shipped model]")
    parser.add_argument("--keep", action="store_true", help="keep the generated rasters")
    parser.add_argument("--naive-patches", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of end-to-end runs (naive loop and bare model re-measured in each); "
                             "ratios are then medians over the rounds [default: 1]")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    threads = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="survey_cracks_bench_"))
    model = args.model or SHIPPED_MODEL
    if not model.exists():  # speed does not depend on the weights
        model = work / "random.safetensors"
        save_checkpoint(model, build_model(), ModelMeta())
    from survey_cracks.models.network import read_meta

    meta = read_meta(model)
    stride = meta.patch_size // 2
    results: dict = {"machine": f"{platform.processor() or platform.machine()}, {threads} cores, "
                                f"{psutil.virtual_memory().total / 2**30:.0f} GiB", "torch": torch.__version__,
                     "model": model.name, "end_to_end": []}
    rasters = []
    for mp in args.sizes:
        side = int(round((mp * 1e6) ** 0.5))
        raster = work / f"ortho_{mp}mp.tif"
        start = time.perf_counter()
        write_orthomosaic(raster, side, side, seed=mp, block=512)
        print(f"generated {raster.name} ({side} x {side}) in {time.perf_counter() - start:.0f} s", flush=True)
        rasters.append(raster)

    patches = sample_patches(rasters[0], meta.patch_size, 1280)
    results["bare_model"] = bare_model(model, patches, threads)
    print("bare model:", results["bare_model"], flush=True)
    results["naive"] = naive_loop(model, rasters[0], meta.patch_size, args.naive_patches, threads)
    print("naive loop:", results["naive"], flush=True)
    engine, way = results["bare_model"]["fastest"].rsplit(" ", 1)
    rounds = []
    for number in range(args.repeats):
        # Each round re-measures the naive loop too: on a shared machine it drifts as much as the rest.
        naive = results["naive"] if number == 0 else naive_loop(model, rasters[0], meta.patch_size, args.naive_patches, threads)
        rows = []
        for raster in rasters:
            before = bare_way(model, patches, threads, engine, way, repeats=AROUND_PASSES)
            row = end_to_end(raster, model, work / f"out_{raster.stem}", meta.patch_size, stride)
            after = bare_way(model, patches, threads, engine, way, repeats=AROUND_PASSES)
            row["bare_around"] = round((before.best + after.best) / 2, 1)
            row["bare_sustained_around"] = round((before.sustained + after.sustained) / 2, 1)
            row["naive"], row["round"] = naive["patches_per_s"], number + 1
            rows.append(row)
            print("end to end:", row, flush=True)
        results["end_to_end"] += rows
        rounds.append(round_ratios(rows, results["bare_model"]["patches_per_s"]))

    bare, naive_rate = results["bare_model"]["patches_per_s"], results["naive"]["patches_per_s"]
    # Megapixels one patch accounts for on the stride grid: stride^2 new pixels per patch.
    mp_per_patch = stride * stride / 1e6
    # One round: its ratios. Several (--repeats): each ratio's median over the rounds, and every round.
    results["ratios"] = {key: round(float(np.median([r[key] for r in rounds])), 3) for key in rounds[0]}
    if len(rounds) > 1:
        results["ratios_by_round"] = rounds
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "throughput.json").write_text(json.dumps(results, indent=2))

    print(f"\n{results['machine']}, torch {results['torch']}, patch {meta.patch_size} px, stride {stride} px\n")
    print("| what | patches/s | megapixels/s | peak RSS |")
    print("|---|---|---|---|")
    modes = ", ".join(f"{k} {v}" for k, v in results["bare_model"]["by_mode"].items())
    print(f"| bare model (batch 64; best of {modes}) | {bare} | "
          f"{bare * mp_per_patch:.1f} | |")
    print(f"| naive loop (PIL + transforms, fp32, batch 1) | {naive_rate} | {naive_rate * mp_per_patch:.1f} | |")
    for row in results["end_to_end"]:
        run = f"{row['megapixels']} MP" + (f", round {row['round']} (naive loop {row['naive']})" if args.repeats > 1 else "")
        print(f"| bare model around the {run} run: fastest pass / sustained | "
              f"{row['bare_around']} / {row['bare_sustained_around']} | | |")
        print(f"| end-to-end `run`, {run} | {row['patches_per_s']} | {row['megapixels_per_s']} | "
              f"{row['peak_rss_gib']} GiB |")
    print("\nratios:", json.dumps(results["ratios"]))
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
