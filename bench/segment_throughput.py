"""Speed and memory of pixel-precise crack segmentation (issue "pixel-precise cracks").

One run measures, on this machine and on procedural orthomosaics of 100 and 400 MP (--sizes; made
once per size by survey_cracks.synthetic.write_orthomosaic, exactly as bench/throughput.py makes
them: same side, seed and tiling, so the two benchmarks see the same rasters):

  1. notebook loop  - the naive way, bench/throughput.py's `naive_loop` (in a process of its own, without
                      the workers' environment): 128 px patches at 50 %
                      overlap (stride 64) cut from a PIL image, torchvision ToTensor + Normalize,
                      the network's patch head in fp32, batch 1. It reports patches/s; here that is
                      turned into megapixels of raster covered per second: on a stride-64 grid each
                      128 px patch adds 64 x 64 = 4096 new pixels, so
                          MP/s = patches/s x 4096 / 1e6      (stride = patch / 2 in general).
  2. bare network   - the engine `survey-cracks run` loads in its Dask workers
                      (`load_engine(model_spec(model, sha256, config.inference))`: same engine,
                      precision and threads as the run), `engine.segment` alone on in-memory uint8
                      windows of the run's read size, (window_px + 2 margin)^2 px (1216^2 for the
                      default 1024 px core and a 96 px margin), cut from the same raster. Two ways:
                        "stream per task slot": one thread per task slot of the run (one worker
                          with a task per core, `torch_threads` = 1 intra-op thread each), all
                          calling segment concurrently, as the pipeline runs it;
                        "one stream": one thread calling segment, with one intra-op thread per core.
                      The faster way is the figure. Each way: one untimed window per stream, then
                      --bare-windows windows per stream timed together. MP/s counts only the core
                      pixels (window_px^2 per window): the margin is overhead the pipeline pays too.
  3. end to end     - `survey-cracks run RASTER --mode mask|dense|patch` as a subprocess: wall time
                      from process start to exit (cluster start-up, reading, network, heatmap COG,
                      polygons, centrelines in mask mode), peak RSS of the whole process tree
                      (client + Dask workers, polled every 0.2 s), MP/s = raster megapixels / wall
                      seconds. Patch mode (each 128 px patch on its own, ~0.4-0.5 MP/s) runs only
                      at the sizes in --patch-sizes (default 100 MP).

Rule, fixed before any run of this script:
  - The bare network is measured right before and right after each end-to-end run ("around it");
    a run's ratio to the bare network uses the mean of those two bare figures. Consecutive runs
    share the measurement between them.
  - --repeats N (default 3) interleaves N rounds; a round is: notebook loop, then for each size
    (smallest first): bare, mask run, bare, dense run, bare[, patch run, bare]. A round's ratios
    against the notebook loop use that round's notebook figure.
  - --windows W1 W2 ... (e.g. 1024 auto; default: the config's window_px alone) runs every mode and
    size once per window setting, in that order within each size (`run --window W`), each with its
    own bare network around it, measured on windows of that setting's read size (auto resolved as
    the run resolves it, `inference.window_size.resolve_window`); the ratios of each setting carry its
    name (`mask_100mp_wauto_vs_naive`), and `mask_100mp_wauto_vs_w1024` is the auto run's MP/s over the
    1024 run's of the same round (informative). The targets apply to every setting.
  - Each reported ratio is the median over the rounds; single rounds are printed beside it,
    whatever they show.
  - Targets (the issue's), each judged on those medians:
      mask mode >= 6 x the notebook loop, at every size (--targets NAIVE BARE sets these two);
      mask mode >= 0.8 x the bare network around it, at every size;
      every peak RSS, of every run of every mode and round, < 2 GiB;
      mask mode: peak RSS at the largest size <= 1.2 x at the smallest (400 MP vs 100 MP).
    Dense and patch mode ratios are reported for information and judged against nothing.

What the end-to-end figure includes that the bare one does not, by design: windows whose core lies
wholly outside the raster's footprint are skipped by the run (the procedural rasters have irregular
footprints: 7 of 100 windows at 100 MP, 114 of 400 at 400 MP), and windows on the right and bottom
edges are read only as wide as their clipped core needs (`tiling.context_windows`), windows the
footprint's edge crosses run the network on their valid part plus the margin (`tiling.footprint_crop`),
while the bare network runs full-size windows only. The JSON keeps each run's window counts so both can be accounted for.

Results: every raw figure, each round, and the machine (CPU model, avx512_bf16, torch, the engine
`compute_of` resolves) go to bench/results/segment_throughput.json (--json), rewritten after each
round (docs/benchmarks.md renders its tables from that file); a Markdown table goes to stdout at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import rasterio

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from survey_cracks.inference.cluster import NETWORK_ENVIRONMENT  # noqa: E402  (imports no torch)

# The bare network runs in this process with the environment the run gives its workers (PyTorch
# reads it at its first allocation, so before torch is imported): the two figures then differ
# only by what the pipeline adds. The notebook loop runs in a process of its own without it
# (`naive_in_plain_process`): a notebook has no such setting, and huge pages slow its batch-1
# passes down (measured: 71 against 65 patches/s, medians of three pairs).
PLAIN_ENVIRONMENT = {key: value for key, value in os.environ.items() if key not in NETWORK_ENVIRONMENT}
os.environ.update(NETWORK_ENVIRONMENT)

import torch  # noqa: E402
from throughput import ROOT, timed_command  # noqa: E402

from survey_cracks.models import hardware  # noqa: E402
from survey_cracks.config import RunConfig, load_config  # noqa: E402
from survey_cracks.inference.dispatch import model_spec  # noqa: E402
from survey_cracks.inference.window_size import resolve_window  # noqa: E402
from survey_cracks.io.raster import inspect_raster, open_raster, read_context  # noqa: E402
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256, read_meta  # noqa: E402
from survey_cracks.models.engines import ModelSpec, load_engine  # noqa: E402
from survey_cracks.run.pipeline import context_margin  # noqa: E402
from survey_cracks.synthetic import write_orthomosaic  # noqa: E402
from survey_cracks.tiling import context_windows  # noqa: E402

MODES = ("mask", "dense", "patch")
RSS_LIMIT_GIB = 2.0
TARGETS = {"mask_vs_naive": 6.0, "mask_vs_bare": 0.8, "rss_growth": 1.2}

EPILOG = """\
examples:
  full benchmark (docs/benchmarks.md's; roughly an hour on an idle 2-core CPU, patch mode at 100 MP ~4 min a round):
      .venv/bin/python bench/segment_throughput.py --model runs/mask/model.safetensors
  same rasters on later runs (generated on the first, kept, reused when the size matches):
      .venv/bin/python bench/segment_throughput.py --model M --raster-dir /data/bench_rasters
  smoke test of the script itself (seconds to minutes; its figures mean nothing):
      nice -n 19 .venv/bin/python bench/segment_throughput.py --model /tmp/random_mask.safetensors \\
          --sizes 2 4 --patch-sizes 2 --repeats 1 --bare-windows 1 --naive-patches 40 \\
          --json /tmp/segment_smoke.json

speed does not depend on the weights, only on the architecture and the margin (min_margin_px, measured
when a decoder is trained: `survey-cracks info --model MODEL`); a random-weight model with a decoder of 32
channels, as configs/mask.yaml trains, and a 96 px margin:
      .venv/bin/python -c "from survey_cracks.models.network import build_model, save_checkpoint, ModelMeta; \\
          save_checkpoint('/tmp/random_mask.safetensors', build_model(decoder_channels=32), \\
          ModelMeta(heads=('patch', 'mask'), decoder_channels=32, min_margin_px=96))"
"""


# --------------------------------------------------------------------------- rasters


def raster_for(mp: int, folder: Path) -> Path:
    """The procedural orthomosaic of ``mp`` megapixels in ``folder``, written unless already there."""
    side = int(round((mp * 1e6) ** 0.5))
    raster = folder / f"ortho_{mp}mp.tif"
    if raster.is_file():
        with rasterio.open(raster) as src:
            if (src.width, src.height) == (side, side):
                print(f"reusing {raster} ({side} x {side})", flush=True)
                return raster
    start = time.perf_counter()
    write_orthomosaic(raster, side, side, seed=mp, block=512)  # as bench/throughput.py
    print(f"generated {raster} ({side} x {side}) in {time.perf_counter() - start:.0f} s", flush=True)
    return raster


def sample_windows(raster: Path, window_px: int, margin: int, count: int = 4) -> list[np.ndarray]:
    """``count`` read windows of the run's size from ``raster``, read as the run reads them.

    Windows nearest the centre whose core is mostly inside the footprint come first; the
    content barely matters to the speed, but real survey pixels are what the run sees.
    """
    info = inspect_raster(raster)
    windows = context_windows(info.width, info.height, window_px, margin)
    cy, cx = info.height / 2, info.width / 2
    windows.sort(key=lambda w: (w.core.row_off + w.core.height / 2 - cy) ** 2 + (w.core.col_off + w.core.width / 2 - cx) ** 2)
    scored = []
    with open_raster(raster) as src:
        for window in windows[: max(count * 4, 16)]:
            rgb, valid = read_context(src, info, window.read)
            core_valid = valid[window.in_read].mean()
            scored.append((core_valid, rgb))
    scored.sort(key=lambda item: -item[0])
    return [rgb for _, rgb in scored[:count]]


# --------------------------------------------------------------------------- notebook loop


def naive_in_plain_process(model: Path, raster: Path, size: int, count: int, threads: int) -> dict:
    """bench/throughput.py's `naive_loop` in a fresh process with this process's environment before the
    network's settings were added: what a notebook would run in."""
    code = ("import json, sys; from pathlib import Path; sys.path[:0] = [sys.argv[1]]; from throughput import naive_loop; "
            "print(json.dumps(naive_loop(Path(sys.argv[2]), Path(sys.argv[3]), *map(int, sys.argv[4:]))))")
    done = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), str(model), str(raster),
                           str(size), str(count), str(threads)], env=PLAIN_ENVIRONMENT, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"the notebook loop failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- bare network

def engine_with(spec: ModelSpec, threads: int):  # type: ignore[no-untyped-def]
    """The run's engine, with ``threads`` intra-op threads per call.

    With the run's own thread count this is exactly `load_engine(spec)`, the object a worker
    holds; `load_engine` keys engines by thread count too (an ONNX Runtime session fixes it at
    creation; PyTorch takes it per calling thread, set before each measurement).
    """
    return load_engine(dataclasses.replace(spec, threads=threads))


def segment_rate(engine, windows: list[np.ndarray], streams: int, threads: int, per_stream: int,  # type: ignore[no-untyped-def]
                 core_pixels: int) -> dict:
    """Core MP/s of ``streams`` threads each running ``per_stream`` windows through ``engine.segment``."""
    torch.set_num_threads(threads)  # new threads (the pool's) take it at their first torch call
    engine.segment(windows[0])  # one call alone first: lazy sessions (ONNX segmenter) are not made twice
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda k: engine.segment(windows[k % len(windows)]), range(streams)))  # untimed, per stream

        def stream(k: int) -> None:
            for j in range(per_stream):
                engine.segment(windows[(k + j) % len(windows)])

        start = time.perf_counter()
        list(pool.map(stream, range(streams)))
        seconds = time.perf_counter() - start
    count = streams * per_stream
    return {"megapixels_per_s": round(count * core_pixels / 1e6 / seconds, 3), "windows": count,
            "seconds": round(seconds, 2), "streams": streams, "threads_per_stream": threads}


def bare_network(spec: ModelSpec, windows: list[np.ndarray], core_pixels: int, slots: int, cores: int,
                 per_stream: int) -> dict:
    """The faster of the two ways (see the module docstring), with both ways' figures."""
    ways = {
        f"{slots} streams x {spec.threads} thread{'s' * (spec.threads > 1)}": (slots, spec.threads),
        f"1 stream x {cores} threads": (1, cores),
    }
    by_way = {name: segment_rate(engine_with(spec, threads), windows, streams, threads, per_stream, core_pixels)
              for name, (streams, threads) in ways.items()}
    fastest = max(by_way, key=lambda name: by_way[name]["megapixels_per_s"])
    return {"megapixels_per_s": by_way[fastest]["megapixels_per_s"], "way": fastest, "by_way": by_way,
            "at": round(time.time(), 1), "loadavg_1min": round(os.getloadavg()[0], 2)}


# --------------------------------------------------------------------------- end to end


def run_mode(raster: Path, model: Path, out: Path, mode: str, config: Path | None, window: str | None = None) -> dict:
    """`survey-cracks run --mode MODE [--window W]` on one raster: wall time, peak RSS of the process tree, MP/s."""
    command = ([str(Path(sys.executable).with_name("survey-cracks")), "run", str(raster), "--out", str(out),
                "--model", str(model), "--mode", mode, "--quiet"] + (["--config", str(config)] if config else [])
               + (["--window", window] if window else []))
    load = os.getloadavg()[0]
    seconds, peak_gib, returncode, output = timed_command(command)
    if returncode != 0:
        raise RuntimeError(f"survey-cracks run --mode {mode} failed on {raster}:\n{output}")
    report = json.loads(next(out.glob("*/*/report.json")).read_text())
    run_json = json.loads((out / "run.json").read_text())
    with rasterio.open(raster) as src:
        megapixels = src.width * src.height / 1e6
    inference = report["seconds"].get("inference")
    return {
        "mode": mode, "window_setting": window, "megapixels": round(megapixels, 2), "seconds": round(seconds, 2),
        "megapixels_per_s": round(megapixels / seconds, 3), "peak_rss_gib": round(peak_gib, 3),
        "inference_megapixels_per_s": round(megapixels / inference, 3) if inference else None,
        "counts": report["counts"], "stage_seconds": report["seconds"], "window": run_json.get("window"),
        "compute": run_json.get("model", {}).get("compute"), "loadavg_1min_at_start": round(load, 2),
    }


# --------------------------------------------------------------------------- ratios and verdict


def label(mp: int) -> str:
    return f"{mp}mp"


def window_suffix(setting: str | None, windows: list[str | None]) -> str:
    """``_w<setting>`` when several window settings are compared (keys stay as before with one)."""
    return f"_w{setting}" if len(windows) > 1 else ""


def round_ratios(naive_mp_s: float, runs: list[dict], sizes: list[int], windows: list[str | None] | None = None
                 ) -> dict[str, float]:
    """One round's ratios: every run against the notebook loop and the bare network around it; memory; with
    several window settings, each later one's MP/s over the first's."""
    windows = windows or [None]
    ratios: dict[str, float] = {}
    for run in runs:
        key = f"{run['mode']}_{label(run['size'])}{window_suffix(run.get('window_setting'), windows)}"
        ratios[f"{key}_vs_naive"] = round(run["megapixels_per_s"] / naive_mp_s, 3)
        ratios[f"{key}_vs_bare_around"] = round(run["megapixels_per_s"] / run["bare_around"], 3)
    for setting in windows:
        suffix = window_suffix(setting, windows)
        if len(sizes) > 1:
            rss = {run["size"]: run["peak_rss_gib"] for run in runs
                   if run["mode"] == "mask" and run.get("window_setting") == setting}
            ratios[f"mask_peak_rss_{label(sizes[-1])}_vs_{label(sizes[0])}{suffix}"] = round(rss[sizes[-1]] / rss[sizes[0]], 3)
        if setting != windows[0]:
            for run in runs:
                first = [r for r in runs if (r["mode"], r["size"]) == (run["mode"], run["size"])
                         and r.get("window_setting") == windows[0]]
                if run.get("window_setting") == setting and first:
                    ratios[f"{run['mode']}_{label(run['size'])}{suffix}_vs_w{windows[0]}"] = round(
                        run["megapixels_per_s"] / first[0]["megapixels_per_s"], 3)
    ratios["max_peak_rss_gib"] = max(run["peak_rss_gib"] for run in runs)
    return ratios


def medians(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each ratio's median over the rounds (the maximum for the peak RSS: every run must stay below)."""
    out = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        out[key] = round(float(max(values) if key == "max_peak_rss_gib" else np.median(values)), 3)
    return out


def verdict(summary: dict[str, float], sizes: list[int], windows: list[str | None] | None = None) -> list[dict]:
    """The issue's targets on the medians: one entry per (target, size, window setting), met or not."""
    windows = windows or [None]
    targets = []
    named = len(windows) > 1
    for what, ratio, rule in (("notebook loop", "vs_naive", "mask_vs_naive"), ("bare network around it", "vs_bare_around", "mask_vs_bare")):
        for size in sizes:
            for setting in windows:
                key = f"mask_{label(size)}{window_suffix(setting, windows)}_{ratio}"
                targets.append({"target": f"mask mode / {what}, {size} MP" + (f", window {setting}" if named else ""),
                                "key": key, "rule": f">= {TARGETS[rule]:g}", "value": summary[key],
                                "met": summary[key] >= TARGETS[rule]})
    value = summary["max_peak_rss_gib"]
    targets.append({"target": "peak RSS of every run (GiB)", "key": "max_peak_rss_gib", "rule": f"< {RSS_LIMIT_GIB:g}",
                    "value": value, "met": value < RSS_LIMIT_GIB})
    if len(sizes) > 1:
        for setting in windows:
            key = f"mask_peak_rss_{label(sizes[-1])}_vs_{label(sizes[0])}{window_suffix(setting, windows)}"
            targets.append({"target": f"mask mode peak RSS, {sizes[-1]} MP / {sizes[0]} MP" + (f", window {setting}" if named else ""),
                            "key": key, "rule": f"<= {TARGETS['rss_growth']:g}", "value": summary[key],
                            "met": summary[key] <= TARGETS["rss_growth"]})
    return targets


# --------------------------------------------------------------------------- output


def machine_info(spec: ModelSpec) -> dict:
    flags = hardware.cpu_flags()
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    git = {}
    for key, args in {"commit": ["rev-parse", "HEAD"], "changed_files": ["status", "--porcelain"]}.items():
        try:
            text = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
            git[key] = text if key == "commit" else len(text.splitlines())
        except (OSError, subprocess.SubprocessError):
            git[key] = None
    return {
        "cpu": hardware.cpu_name(), "cores": os.cpu_count(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags,
        "native_bf16": hardware.cpu_has_native_bf16(), "cuda_devices": hardware.cuda_device_count(),
        "compute": load_engine(spec).compute,  # engine: auto's measured choice (the workers load the same)
        "torch": torch.__version__, "onnxruntime": ort_version, "python": platform.python_version(),
        "platform": platform.platform(), "git": git, "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def markdown(results: dict) -> str:
    m, w = results["machine"], results["window"]
    sizes, rounds = results["sizes"], results["rounds"]
    lines = [
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']:g} GiB, avx512_bf16 {'yes' if m['avx512_bf16'] else 'no'}; "
        f"torch {m['torch']}; network on {m['compute']}; model {results['model']['file']} "
        f"(heads {'+'.join(results['model']['heads'])}, decoder {results['model']['decoder_channels']} channels); "
        "windows " + "; ".join(f"{x.get('setting') or x['core_px']}: {x['core_px']} px + {x['margin_px']} px context "
                               f"(read {x['read_px']} px)" for x in results.get("windows", [w])) + "; "
        f"{len(rounds)} round{'s' * (len(rounds) > 1)}.",
        "",
        "MP/s = megapixels of raster per second (notebook loop: 4096 new pixels per patch at stride 64; "
        "bare network: core pixels only). Bare network around a run: mean of the figures measured just "
        "before and just after it (the faster of its two threading ways).",
        "",
        "| round | raster | what | seconds | MP/s | peak RSS | bare network before / after (MP/s) | × bare around | × notebook loop |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for rnd in rounds:
        naive = rnd["naive"]
        lines.append(f"| {rnd['round']} | {sizes[0]} MP ({naive['crop_px']} px crop) | notebook loop (PIL + transforms, fp32, batch 1; "
                     f"{naive['patches_per_s']} patches/s) | | {naive['megapixels_per_s']} | | | | 1 |")
        for run in rnd["runs"]:
            mode = f"**`run --mode {run['mode']}" + (f" --window {run['window_setting']}" if run.get("window_setting") else "") + "`**"
            lines.append(
                f"| {rnd['round']} | {run['size']} MP | {mode} | {run['seconds']} | **{run['megapixels_per_s']}** | "
                f"{run['peak_rss_gib']} GiB | {run['bare_before']} / {run['bare_after']} | "
                f"{run['megapixels_per_s'] / run['bare_around']:.2f} | {run['megapixels_per_s'] / naive['megapixels_per_s']:.1f} |")
    header = " | ".join(f"round {r['round']}" for r in rounds)
    lines += ["", f"| target | rule | {header} | median | met |", "|---|---|" + "---|" * len(rounds) + "---|---|"]
    for target in results["targets"]:
        singles = " | ".join(f"{r['ratios'][target['key']]:g}" for r in rounds)
        summary = "max" if target["key"] == "max_peak_rss_gib" else "median"
        lines.append(f"| {target['target']} | {target['rule']} | {singles} | **{target['value']:g}** ({summary}) | "
                     f"{'met' if target['met'] else '**not met**'} |")
    judged = {target["key"] for target in results["targets"]} | {"max_peak_rss_gib"}
    informative = [key for key in results["ratios"] if key not in judged]
    if informative:
        lines += ["", "Not targets: " + ", ".join(
            f"{key} {results['ratios'][key]:g}" for key in informative) + "."]
    met = all(t["met"] for t in results["targets"])
    lines += ["", f"Targets: {'all met' if met else 'not all met'} (by the rule in bench/segment_throughput.py)."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 400], metavar="MP",
                        help="megapixels of the procedural rasters, each run in every mode [default: 100 400]")
    parser.add_argument("--patch-sizes", type=int, nargs="*", default=[100], metavar="MP",
                        help="sizes (of --sizes) at which patch mode runs too; none with a bare --patch-sizes "
                             "[default: 100; patch mode is ~0.4-0.5 MP/s, 400 MP would take ~15 min a round]")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="modes run end to end (mask is the one with targets) [default: all three]")
    parser.add_argument("--repeats", type=int, default=3, metavar="N",
                        help="interleaved rounds; each ratio is the median over them [default: 3]")
    parser.add_argument("--model", type=Path, default=None,
                        help="checkpoint with a mask decoder [default: the shipped model, if it has one]")
    parser.add_argument("--config", type=Path, default=None,
                        help="run config given to every `survey-cracks run` and used for the bare network's engine, "
                             "threads and window [default: run's defaults, as configs/run.yaml]")
    parser.add_argument("--raster-dir", type=Path, default=None,
                        help="folder for the rasters: reused there when present at the right size, always kept "
                             "[default: a temporary folder, removed at the end unless --keep]")
    parser.add_argument("--keep", action="store_true", help="keep the generated rasters (their folder is printed)")
    parser.add_argument("--targets", type=float, nargs=2, default=None, metavar=("NAIVE", "BARE"),
                        help="mask mode's targets: x the notebook loop, x the bare network [default: 6 0.8, the "
                             "pixel-precise issue's; issue 29's are 20 0.85]")
    parser.add_argument("--windows", nargs="+", default=None, metavar="PX|auto",
                        help="window settings compared (`run --window`), each run in every mode and size "
                             "[default: the config's window_px alone, not passed]")
    parser.add_argument("--bare-windows", type=int, default=6, metavar="N",
                        help="windows per stream timed in each bare-network measurement [default: 6]")
    parser.add_argument("--naive-patches", type=int, default=300, metavar="N",
                        help="patches timed in the notebook loop [default: 300]")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "segment_throughput.json",
                        help="where the results go [default: bench/results/segment_throughput.json]")
    args = parser.parse_args()
    if args.repeats < 1 or args.bare_windows < 1 or args.naive_patches < 1:
        parser.error("--repeats, --bare-windows and --naive-patches must be at least 1")
    if min(args.sizes) < 1 or len(set(args.sizes)) != len(args.sizes):
        parser.error("--sizes must be distinct and at least 1 MP")
    args.sizes = sorted(args.sizes)
    skipped = sorted(set(args.patch_sizes) - set(args.sizes))
    if skipped:
        print(f"note: --patch-sizes {' '.join(map(str, skipped))} not in --sizes: no patch run there", flush=True)
    args.model = args.model or SHIPPED_MODEL
    if not args.model.is_file():
        parser.error(f"model {args.model} not found")
    if not read_meta(args.model).has_mask:
        parser.error(f"{args.model} has no mask decoder (heads {'+'.join(read_meta(args.model).heads)}): pass --model "
                     "with a train-mask checkpoint (runs/mask/model.safetensors), or a random-weight one (see below --help)")
    return args


def main() -> None:
    args = parse_args()
    if args.targets:  # fixed before the run, on the command line the JSON records
        TARGETS.update(mask_vs_naive=args.targets[0], mask_vs_bare=args.targets[1])
    model = args.model.resolve()
    meta = read_meta(model)
    config = load_config(RunConfig, args.config, {"inference.mode": "mask"})
    margin = context_margin(meta, "mask", config, model)
    spec = model_spec(model, file_sha256(model), config.inference)
    settings: list[str | None] = args.windows or [None]  # None: the config's window_px, not passed to the run
    choices = {setting: resolve_window(config.inference if setting is None else config.inference.model_copy(
        update={"window_px": setting if setting == "auto" else int(setting)}), spec, margin) for setting in settings}
    for setting, choice in choices.items():
        print(f"window {setting or 'of the config'}: {choice.record()}", flush=True)
    cpus = os.cpu_count() or 1
    slots = config.inference.workers * config.inference.worker_threads()  # tasks the run's workers run at once
    stride = meta.patch_size // 2
    naive_pixels = stride * stride  # new pixels each patch adds on the stride grid

    temp = Path(tempfile.mkdtemp(prefix="survey_cracks_segbench_"))
    raster_dir = args.raster_dir or temp / "rasters"
    raster_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "benchmark": "bench/segment_throughput.py", "command": sys.argv, "sizes": args.sizes,
        "patch_sizes": [s for s in args.sizes if s in args.patch_sizes], "repeats": args.repeats,
        "machine": machine_info(spec),
        "model": {"file": str(model.resolve().relative_to(ROOT)) if model.resolve().is_relative_to(ROOT) else str(model),
                  "sha256": spec.sha256, "heads": list(meta.heads),
                  "decoder_channels": meta.decoder_channels, "min_margin_px": meta.min_margin_px,
                  "patch_size": meta.patch_size},
        "spec": {"engine": spec.engine, "precision": spec.precision, "device": spec.device, "threads": spec.threads,
                 "task_slots": slots},
        "window": {"core_px": choices[settings[0]].core_px, "margin_px": margin, "read_px": choices[settings[0]].core_px + 2 * margin},
        "windows": [{"setting": setting, "read_px": choice.core_px + 2 * margin, **choice.record()}
                    for setting, choice in choices.items()],
        "naive": {"patch": meta.patch_size, "stride": stride, "new_pixels_per_patch": naive_pixels,
                  "patches_timed": args.naive_patches},
        "bare": {"windows_per_stream": args.bare_windows},
        "rounds": [],
    }
    print(f"machine: {results['machine']}", flush=True)
    try:
        rasters = {mp: raster_for(mp, raster_dir) for mp in args.sizes}
        windows, core_pixels = {}, {}
        for mp, raster in rasters.items():
            for setting, choice in choices.items():
                window_px = choice.core_px
                windows[mp, setting] = sample_windows(raster, window_px, margin)
                read_h, read_w = windows[mp, setting][0].shape[:2]
                core_pixels[mp, setting] = (read_h - 2 * margin) * (read_w - 2 * margin)
                if (read_h, read_w) != (window_px + 2 * margin,) * 2:
                    print(f"note: {mp} MP is smaller than a window: reads of {read_h} x {read_w} px", flush=True)

        def bare(mp: int, setting: str | None) -> dict:
            figure = bare_network(spec, windows[mp, setting], core_pixels[mp, setting], slots, cpus, args.bare_windows)
            print(f"  bare network at {mp} MP's windows ({choices[setting].core_px} px): {figure['megapixels_per_s']} MP/s ({figure['way']}; "
                  + ", ".join(f"{k} {v['megapixels_per_s']}" for k, v in figure["by_way"].items()) + ")", flush=True)
            return figure

        round_ratio_list = []
        for number in range(1, args.repeats + 1):
            print(f"round {number} of {args.repeats}", flush=True)
            naive = naive_in_plain_process(model, rasters[args.sizes[0]], meta.patch_size, args.naive_patches, cpus)
            naive["megapixels_per_s"] = round(naive["patches_per_s"] * naive_pixels / 1e6, 3)
            naive["crop_px"] = min(4096, int(round((args.sizes[0] * 1e6) ** 0.5)))  # naive_loop's centre crop
            print(f"  notebook loop: {naive['patches_per_s']} patches/s = {naive['megapixels_per_s']} MP/s", flush=True)
            rnd: dict = {"round": number, "naive": naive, "bare": [], "runs": []}
            for mp, setting in [(mp, setting) for mp in args.sizes for setting in settings]:
                before = bare(mp, setting)
                rnd["bare"].append({"size": mp, "window_setting": setting, **before})
                for mode in MODES:
                    if mode not in args.modes or (mode == "patch" and mp not in args.patch_sizes):
                        continue
                    out = temp / f"out_{mp}mp_{mode}_{number}"
                    run = run_mode(rasters[mp], model, out, mode, args.config, setting)
                    shutil.rmtree(out, ignore_errors=True)  # a 400 MP mask heatmap is large
                    after = bare(mp, setting)
                    rnd["bare"].append({"size": mp, "window_setting": setting, **after})
                    if mode != "patch" and run["window"] and run["window"].get("core_px") != choices[setting].core_px:
                        print(f"  note: the run used a {run['window']['core_px']} px core, the bare network "
                              f"{choices[setting].core_px} px", flush=True)
                    run.update(size=mp, round=number, bare_before=before["megapixels_per_s"],
                               bare_after=after["megapixels_per_s"],
                               bare_around=round((before["megapixels_per_s"] + after["megapixels_per_s"]) / 2, 3))
                    if mode != "patch" and run["window"] and run["window"].get("margin_px") != margin:
                        print(f"  note: the run used a {run['window']['margin_px']} px margin, the bare network "
                              f"{margin} px", flush=True)
                    if run["compute"] and results["machine"]["compute"] not in run["compute"]:
                        print(f"  note: the run's workers computed on {run['compute']}, the bare network on "
                              f"{results['machine']['compute']}", flush=True)
                    print(f"  {mode} {mp} MP, window {setting or 'of the config'}: {run['seconds']} s, {run['megapixels_per_s']} MP/s, "
                          f"peak RSS {run['peak_rss_gib']} GiB, {run['megapixels_per_s'] / run['bare_around']:.2f} x bare "
                          f"around ({run['bare_around']}), {run['megapixels_per_s'] / naive['megapixels_per_s']:.1f} x "
                          f"notebook loop", flush=True)
                    rnd["runs"].append(run)
                    before = after
            rnd["ratios"] = round_ratios(naive["megapixels_per_s"], rnd["runs"], args.sizes, settings)
            round_ratio_list.append(rnd["ratios"])
            results["rounds"].append(rnd)
            results["ratios"] = medians(round_ratio_list)
            results["targets"] = verdict(results["ratios"], args.sizes, settings)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))  # after every round: a crash keeps the rounds done
        print(f"\nresults: {args.json}\n", flush=True)
        print(markdown(results))
    finally:
        for leftover in temp.glob("out_*"):  # a failed run's outputs
            shutil.rmtree(leftover, ignore_errors=True)
        if args.raster_dir is None:  # --raster-dir is the user's folder: never emptied
            if args.keep:
                print(f"\nrasters kept in {raster_dir}", flush=True)
            else:
                shutil.rmtree(raster_dir, ignore_errors=True)
        if not any(temp.iterdir()):
            temp.rmdir()


if __name__ == "__main__":
    main()
