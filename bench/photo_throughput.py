"""Photo collections (issue 28): `survey-cracks run` over folders of photos against a bare ResNet18 trunk.

Photo sets (made once into --photo-dir, reused when present):
  - procedural: survey_cracks.synthetic.render_scene at 448x448, 640x360 and 1920x1080 (fixed seeds, JPEG q90,
    no georeferencing: what a road-scan camera writes);
  - from ../shared/data: the first N images of deepcrack (544x384) or, failing that, uavcrack_bridges (256x256);
    skipped with a line when neither is there.

Per set and round:
  1. bare trunk  - torchvision resnet18 without its fc (conv1 .. layer4 + avgpool), fp32 weights, bf16 autocast
                   where the CPU runs bf16 natively (survey_cracks.models.hardware), else fp32; 2 intra-op threads;
                   batch 1; each photo at its own size (decoded beforehand: the network alone), in this process
                   with the run's worker environment (NETWORK_ENVIRONMENT). One untimed photo first.
  2. run         - `survey-cracks run FOLDER --out OUT --quiet` as a subprocess of the code under test (--repo,
                   by PYTHONPATH), with default settings (one worker, a task per core, 1 thread per task):
                   wall seconds from start to exit, peak RSS of the process tree, files written per photo.

Several checkouts (--repo before=PATH --repo after=PATH) run in the same rounds, so before and after are
measured under the same conditions.

--orthomosaic-mp N adds, to every round, `survey-cracks run` of each checkout on bench/segment_throughput.py's
procedural orthomosaic of N MP (made once into --raster-dir): the issue's "orthomosaic throughput unchanged".
Its figure is the run's MP/s and, per round, each checkout's MP/s / the first checkout's in that round; the
checkouts' order alternates from round to round, so neither always runs first.

Rule, fixed before any run: --rounds N (>= 3) rounds, each round runs every set as bare, run, bare[, run, bare]
(interleaved, one run per checkout); a run's ratio is its photos/s / the mean of the two bare figures around it (the bare pass is ~1 s: measured
on both sides, a moment of another process on the machine weighs less); the reported ratio is the median over the rounds,
the single rounds printed beside it. Network-pixel waste = pixels the network sees (the code under test's window
plan, summed over the photos) / image pixels; files per photo = files under OUT / photos.

Results: --json (bench/results/photo_throughput.json; the before figures were stored as
photo_throughput_before.json), and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from survey_cracks.inference.cluster import NETWORK_ENVIRONMENT  # noqa: E402  (imports no torch)

os.environ.update(NETWORK_ENVIRONMENT)

import torch  # noqa: E402
import rasterio  # noqa: E402
from segment_throughput import raster_for  # noqa: E402
from throughput import timed_command  # noqa: E402
from torchvision.models import resnet18  # noqa: E402

from survey_cracks.models import hardware  # noqa: E402
from survey_cracks.outputs.tables import markdown_table  # noqa: E402
from survey_cracks.synthetic import render_scene  # noqa: E402

sys.path.insert(0, str(ROOT / "docs" / "hooks"))  # the docs' renderer of this script's JSON: one table, not two
from bench_tables import photo_throughput as photo_throughput_tables  # noqa: E402

SHARED = Path(os.environ.get("SURVEY_CRACKS_SHARED_DATA", ROOT.parent / "shared" / "data"))  # ../shared beside the repo

# How many pixels the network sees for one photo, asked of the code under test (its window plan).
WASTE_PROBE = """
import json, sys
from survey_cracks.config import RunConfig
from survey_cracks.models.checkpoint import SHIPPED_MODEL, read_meta
from survey_cracks.run import pipeline
meta, config = read_meta(SHIPPED_MODEL), RunConfig()
margin = pipeline.context_margin(meta, "mask", config, SHIPPED_MODEL)
out = {}
for size in json.loads(sys.argv[1]):
    w, h = size
    if hasattr(pipeline, "photo_windows"):
        windows = pipeline.photo_windows(w, h, config.inference.window_px, margin)
    else:
        from survey_cracks.tiling import context_windows
        windows = context_windows(w, h, config.inference.window_px, margin)
    out[f"{w}x{h}"] = sum(int(x.read.width) * int(x.read.height) for x in windows)
print(json.dumps(out))
"""


def make_procedural(folder: Path, width: int, height: int, count: int) -> list[Path]:
    """``count`` procedural photos in ``folder``, a folder of this set alone (`run` is given the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i:05d}.jpg"
        if not path.is_file():
            rgb, _ = render_scene(height, width, seed=1000 + i, surface="asphalt" if i % 2 else "concrete")
            cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return exactly(folder, paths)


def exactly(folder: Path, paths: list[Path]) -> list[Path]:
    """``paths``, after checking they are all ``folder`` holds: `run FOLDER` must see the set that is counted."""
    extra = sorted({p.name for p in folder.iterdir()} - {p.name for p in paths})
    if extra:
        raise SystemExit(f"{folder} holds {len(extra)} files that are not in the set (e.g. {extra[0]}): "
                         "remove them or choose another --photo-dir")
    return paths


def shared_photos(folder: Path, count: int) -> tuple[str, list[Path]] | None:
    """The first ``count`` images of deepcrack (else uavcrack_bridges) copied into ``folder`` (None: neither there)."""
    for name, pattern in (("deepcrack", "train/**/*.jpg"), ("uavcrack_bridges", "images/**/*.*")):
        found = sorted(p for p in (SHARED / name).glob(pattern) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if found:
            folder.mkdir(parents=True, exist_ok=True)
            paths = []
            for src in found[:count]:
                dst = folder / src.name
                if not dst.is_file():
                    shutil.copyfile(src, dst)
                paths.append(dst)
            return name, exactly(folder, paths)
    return None


def bare_trunk() -> torch.nn.Module:
    model = resnet18(weights=None)
    model.fc = torch.nn.Identity()
    return model.eval().to(memory_format=torch.channels_last)


@torch.inference_mode()
def bare_photos_per_s(model: torch.nn.Module, images: list[np.ndarray], bf16: bool) -> float:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def one(rgb: np.ndarray) -> None:
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(x)

    one(images[0])
    start = time.perf_counter()
    for rgb in images:
        one(rgb)
    return len(images) / (time.perf_counter() - start)


def run_once(folder: Path, repo: Path, scratch: Path) -> dict:
    """`survey-cracks run FOLDER` of ``repo``'s code: wall seconds, peak RSS of the process tree, files written."""
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    # `python -c` puts the working directory first on sys.path: run from the repo, so its code is what runs
    env_python = [sys.executable, "-c", "from survey_cracks.cli.main import cli; cli()"]
    os.environ["PYTHONPATH"] = str(repo)
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        seconds, peak, code, output = timed_command(env_python + ["run", str(folder), "--out", str(out), "--quiet"])
    finally:
        os.chdir(cwd)
        os.environ.pop("PYTHONPATH", None)
    if code != 0:
        raise RuntimeError(f"run failed ({code}):\n{output[-3000:]}")
    files = sum(1 for p in out.rglob("*") if p.is_file())
    return {"seconds": round(seconds, 2), "peak_rss_gib": round(peak, 3), "files": files}


def probe(repo: Path, code: str, *args: str) -> str:
    """Run ``code`` in a fresh Python importing ``repo``'s survey_cracks (from ``repo``: `python -c` puts the
    working directory first on sys.path)."""
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=repo,
                          env=os.environ | {"PYTHONPATH": str(repo)}, check=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", action="append", default=None, metavar="LABEL=PATH",
                        help="a survey_cracks checkout to run, labelled (repeat to interleave several: "
                             "before=../main_before after=.); default: this one, labelled 'this'")
    parser.add_argument("--sets", nargs="*", default=["448x448:20", "640x360:20", "1920x1080:5"],
                        help="procedural sets WIDTHxHEIGHT:COUNT (none given: only the shared photos)")
    parser.add_argument("--shared-count", type=int, default=20, help="photos from ../shared/data (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--orthomosaic-mp", type=int, default=0, metavar="N",
                        help="also run each checkout on a procedural orthomosaic of N MP in every round (0: none)")
    parser.add_argument("--raster-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench_rasters",
                        help="where that orthomosaic is made once (bench/segment_throughput.py's folder)")
    parser.add_argument("--photo-dir", type=Path, default=Path(tempfile.gettempdir()) / "survey_cracks_photo_bench")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "photo_throughput.json")
    args = parser.parse_args(argv)
    repos = {label: Path(path).resolve() for label, path in (r.split("=", 1) for r in (args.repo or [f"this={ROOT}"]))}
    torch.set_num_threads(2)
    bf16 = hardware.cpu_has_native_bf16()

    sets: list[tuple[str, list[Path]]] = []
    for spec in args.sets:
        size, count = spec.split(":")
        width, height = (int(v) for v in size.split("x"))
        sets.append((f"procedural {size}",
                     make_procedural(args.photo_dir / f"{size}_{count}", width, height, int(count))))
    if args.shared_count:
        shared = shared_photos(args.photo_dir / f"shared_{args.shared_count}", args.shared_count)
        if shared is None:
            print(f"no deepcrack or uavcrack_bridges under {SHARED}: that set is skipped")
        else:
            sets.append((shared[0], shared[1]))

    images = {name: [cv2.imread(str(p))[..., ::-1].copy() for p in paths] for name, paths in sets}
    sizes = sorted({(im.shape[1], im.shape[0]) for ims in images.values() for im in ims})
    model = bare_trunk()
    result: dict = {
        "command": "python bench/photo_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rounds": args.rounds,
        "machine": {"cpu": hardware.cpu_name(), "cores": os.cpu_count(), "bf16_native": bf16,
                    "torch": torch.__version__, "python": platform.python_version()},
        "repos": {}, "sets": {},
    }
    network_px = {}
    for label, repo in repos.items():
        where = probe(repo, "import survey_cracks; print(survey_cracks.__file__)")
        commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        # the checkout as the command named it, relative to this one: no machine's folders in published results
        result["repos"][label] = {"path": os.path.relpath(repo, ROOT), "commit": commit}
        network_px[label] = json.loads(probe(repo, WASTE_PROBE, json.dumps(sizes)))
        print(f"{label}: the code of {where} at {commit}")
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            for name, paths in sets:
                ims = images[name]
                pixels = sum(im.shape[0] * im.shape[1] for im in ims)
                entry = result["sets"].setdefault(name, {
                    "photos": len(ims), "size": f"{ims[0].shape[1]}x{ims[0].shape[0]}",
                    "megapixels": round(pixels / 1e6, 3), "by_repo": {}})
                bare_before = bare_photos_per_s(model, ims, bf16)
                for label, repo in repos.items():  # bare, run A, bare, run B, bare: each run between two bare figures
                    row = run_once(paths[0].parent, repo, Path(scratch))
                    bare_after = bare_photos_per_s(model, ims, bf16)
                    bare = (bare_before + bare_after) / 2
                    photos_per_s = len(ims) / row["seconds"]
                    mine = entry["by_repo"].setdefault(label, {
                        "network_pixel_waste": round(sum(network_px[label][f"{im.shape[1]}x{im.shape[0]}"] for im in ims)
                                                     / pixels, 3), "rounds": []})
                    mine["rounds"].append(row | {"photos_per_s": round(photos_per_s, 3),
                                                 "megapixels_per_s": round(pixels / 1e6 / row["seconds"], 3),
                                                 "bare_photos_per_s": round(bare, 2),
                                                 "bare_around": [round(bare_before, 2), round(bare_after, 2)],
                                                 "ratio_vs_bare": round(photos_per_s / bare, 4)})
                    print(f"round {r + 1} {name} {label}: run {photos_per_s:.2f} photos/s, bare {bare:.2f}, "
                          f"ratio {photos_per_s / bare:.3f}, peak {row['peak_rss_gib']:.2f} GiB, {row['files']} files",
                          flush=True)
                    bare_before = bare_after
            if args.orthomosaic_mp:
                orthomosaic_round(result, raster_for(args.orthomosaic_mp, args.raster_dir), repos, r, Path(scratch))
            for entry in result["sets"].values():
                for mine in entry["by_repo"].values():
                    rounds = mine["rounds"]
                    mine["median"] = {key: round(statistics.median(x[key] for x in rounds), 4) for key in
                                      ("photos_per_s", "megapixels_per_s", "bare_photos_per_s", "ratio_vs_bare",
                                       "peak_rss_gib")}
                    mine["files_per_photo"] = round(rounds[-1]["files"] / entry["photos"], 2)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(photo_throughput_tables(result, markdown_table))  # the tables the docs page renders from the JSON
    return 0


def orthomosaic_round(result: dict, raster: Path, repos: dict[str, Path], r: int, scratch: Path) -> None:
    """One round of `run RASTER` per checkout, in an order that alternates by round; ratios to the first label."""
    with rasterio.open(raster) as src:
        megapixels = src.width * src.height / 1e6
    entry = result.setdefault("orthomosaic", {"raster": raster.name, "megapixels": round(megapixels, 1),
                                              "by_repo": {label: {"rounds": []} for label in repos}})
    labels = list(repos)
    speeds = {}
    for label in (labels if r % 2 == 0 else labels[::-1]):
        row = run_once(raster, repos[label], scratch)
        speeds[label] = megapixels / row["seconds"]
        entry["by_repo"][label]["rounds"].append(row | {"megapixels_per_s": round(speeds[label], 3)})
        print(f"round {r + 1} orthomosaic {label}: {speeds[label]:.2f} MP/s, peak {row['peak_rss_gib']:.2f} GiB",
              flush=True)
    for label in labels:
        rounds = entry["by_repo"][label]["rounds"]
        rounds[-1]["ratio_vs_first"] = round(speeds[label] / speeds[labels[0]], 4)
        entry["by_repo"][label]["median"] = {key: round(statistics.median(x[key] for x in rounds), 4)
                                             for key in ("megapixels_per_s", "ratio_vs_first", "peak_rss_gib")}


if __name__ == "__main__":
    sys.exit(main())
