"""Mask-level fine-tuning (`survey-cracks finetune`, `--adapt mask`): before / after on rasters it never saw.

(a) procedural: a board-formed concrete structure (survey_cracks.synthetic: long straight
    formwork and panel joints, sealed joints, saw cuts, beside real-looking cracks), three
    mosaics at 2 mm. The user's annotation marks the cracks, and the joints as
    ``label = not_crack``. Fine-tune on two (one trains, one validates), score the third.
(b) real, held out by source: ../shared/data/uavcrack_bridges, adapting a model that never saw it
    (``--real-base``, by default crack_resnet18_mask_v1, the mask model shipped before that source
    was added; the shipped model has trained on it since, and is refused here). Grouped as its README prescribes (`ck…` tiles by bridge map = the name up to its last
    `_`; dated and `IMG_` tiles by photo = the first two `_` fields). A few tiles of a few
    groups become the user's survey (symlinks + X.mask.png), the held-out tiles are other
    groups of the same source, byte-identical duplicates of anything on the adaptation side
    dropped from them.

Each part runs the CLI exactly as a user would and scores both models with
`training.adapt.compare` (each at its own calibrated mask threshold; pixel P/R/F1 at 2 and
5 px, centrelines at 5 px, cell AP over 64 px cells). Writes bench/results/finetune_mask.json.

    flock /tmp/survey_cracks_cpu.lock python bench/finetune_mask.py [--work runs/finetune_mask]

bench/results/finetune_mask.json was made when crack_resnet18_mask_v1 was the shipped model
(sha256 fb65974ac408): ``--base survey_cracks/weights/crack_resnet18_mask_v1.safetensors`` gives
its procedural part again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.models.network import SHIPPED_MODEL, read_meta  # noqa: E402
from survey_cracks.synthetic import write_orthomosaic  # noqa: E402
from survey_cracks.training.adapt import compare, run_folder, start_threshold, survey_images  # noqa: E402
from repository import BEFORE_BRIDGES  # noqa: E402

# ../shared beside the repository (a worktree sits one level deeper, under ../wt/)
DATA = next((p for p in (ROOT.parent / "shared", ROOT.parents[1] / "shared") if p.is_dir()), ROOT.parent / "shared") \
    / "data" / "uavcrack_bridges"
RESULTS = ROOT / "bench" / "results" / "finetune_mask.json"


def finetune(survey: Path, out: Path, steps: int, val_fraction: float, base: Path) -> tuple[list[str], float]:
    """`survey-cracks finetune` as a user runs it; returns the command and its seconds."""
    command = ["survey-cracks", "finetune", str(survey), "--out", str(out), "--steps", str(steps),
               "--val-fraction", str(val_fraction), "--quiet"]
    if base.resolve() != SHIPPED_MODEL.resolve():
        command += ["--model", str(base)]
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "survey_cracks.cli.main", *command[1:]], check=True, env=env)
    return command, time.perf_counter() - started


def procedural(work: Path, size: int, steps: int, base: Path) -> dict:
    adapt, held = work / "board" / "adapt", work / "board" / "held_out"
    for folder in (adapt, held):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for name, seed, folder in (("board_a", 11, adapt), ("board_b", 12, adapt), ("board_c", 13, held)):
        write_orthomosaic(folder / f"{name}.tif", size, size, seed=seed, gsd=0.002, surface="concrete",
                          annotation_path=folder / f"{name}.cracks.gpkg", label_joints=True)
    out = work / "board" / "board.safetensors"
    command, seconds = finetune(adapt, out, steps, 0.5, base)
    result = compare(base, out, survey_images([held], progress=False), start_threshold(run_folder(out)))
    return {"command": " ".join(command), "finetune_seconds": round(seconds, 1), "mosaics": f"3 x {size}x{size} px, 2 mm",
            "made_by": f"survey_cracks.synthetic.write_orthomosaic(seed=11|12|13, gsd=0.002, label_joints=True)",
            "table": json.loads(result.to_json()), "markdown": result.markdown()}


def group(stem: str) -> str:
    """uavcrack_bridges' grouping (its README): by bridge map for `ck…` tiles, by photo for the others."""
    return stem.rsplit("_", 1)[0] if stem.startswith("ck") else "_".join(stem.split("_")[:2])


def real(work: Path, steps: int, adapt_groups: int, per_group: int, held_tiles: int, base: Path) -> dict:
    images = sorted((DATA / "images").glob("*.jpg"))
    by_group: dict[str, list[Path]] = {}
    for image in images:
        by_group.setdefault(group(image.stem), []).append(image)
    order = sorted(by_group, key=lambda g: hashlib.sha256(f"0:{g}".encode()).hexdigest())
    big = [g for g in order if len(by_group[g]) >= per_group]  # a map or photo with tiles enough to annotate a few
    chosen = big[:adapt_groups]
    adapt_tiles = [t for g in chosen for t in sorted(by_group[g], key=lambda p: hashlib.sha256(p.name.encode()).hexdigest())[:per_group]]
    digest = {t: hashlib.sha256(t.read_bytes()).hexdigest() for t in images}
    seen = {digest[t] for t in adapt_tiles}
    rest = [t for g in order if g not in chosen for t in by_group[g] if digest[t] not in seen]
    kept: list[Path] = []
    for t in sorted(rest, key=lambda p: hashlib.sha256(p.name.encode()).hexdigest()):
        if digest[t] not in seen:  # byte-identical duplicates leave the held-out side
            kept.append(t)
            seen.add(digest[t])
        if len(kept) == held_tiles:
            break
    adapt, held = work / "bridges" / "adapt", work / "bridges" / "held_out"
    for folder, tiles in ((adapt, adapt_tiles), (held, kept)):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for tile in tiles:
            (folder / tile.name).symlink_to(tile.resolve())
            (folder / f"{tile.stem}.mask.png").symlink_to((DATA / "masks" / f"{tile.stem}.png").resolve())
    out = work / "bridges" / "bridges.safetensors"
    command, seconds = finetune(adapt, out, steps, 0.25, base)
    result = compare(base, out, survey_images([held], progress=False), start_threshold(run_folder(out)))
    return {"command": " ".join(command), "finetune_seconds": round(seconds, 1),
            "adaptation": f"{len(adapt_tiles)} tiles of {len(chosen)} groups ({', '.join(chosen)})",
            "held_out": f"{len(kept)} tiles of {len({group(t.stem) for t in kept})} other groups, duplicates dropped",
            "table": json.loads(result.to_json()), "markdown": result.markdown()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "finetune_mask")
    parser.add_argument("--size", type=int, default=2048, help="mosaic edge, px")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps on the mosaics (the default)")
    parser.add_argument("--real-steps", type=int, default=300, help="fine-tuning steps on the 256 px bridge tiles")
    parser.add_argument("--held-tiles", type=int, default=300, help="held-out uavcrack_bridges tiles")
    parser.add_argument("--parts", default="procedural,real")
    parser.add_argument("--base", type=Path, default=SHIPPED_MODEL,
                        help="the model the procedural part adapts and compares with [default: the shipped model]")
    parser.add_argument("--real-base", type=Path, default=BEFORE_BRIDGES,
                        help="the model the real part adapts: one that never trained on uavcrack_bridges, or the part "
                        "is not held out by source [default: the mask model shipped before it]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if "real" in args.parts.split(",") and "uavcrack_bridges" in read_meta(args.real_base).trained_on:
        parser.error(f"--real-base {args.real_base} trained on uavcrack_bridges: the real part would not be held out "
                     f"by source (the default, {BEFORE_BRIDGES.relative_to(ROOT)}, never saw it)")
    base_arg = "" if args.base.resolve() == SHIPPED_MODEL.resolve() else f" --base {args.base}"
    base_arg += "" if args.real_base.resolve() == BEFORE_BRIDGES.resolve() else f" --real-base {args.real_base}"
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "model": args.base.name,
                     "real_model": args.real_base.name,
                     "command": f"flock /tmp/survey_cracks_cpu.lock python bench/finetune_mask.py{base_arg}"}
    parts = args.parts.split(",")
    if "procedural" in parts:
        results["procedural"] = procedural(args.work, args.size, args.steps, args.base)
        print(results["procedural"]["markdown"], flush=True)
    if "real" in parts:
        if DATA.is_dir():
            results["real"] = real(args.work, args.real_steps, adapt_groups=8, per_group=6, held_tiles=args.held_tiles,
                                   base=args.real_base)
            print(results["real"]["markdown"], flush=True)
        else:
            print(f"skipped the real part: {DATA} not found")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # paths inside the repository as the repository names them: no machine's folders in published results
    args.out.write_text(json.dumps(results, indent=2).replace(f"{ROOT}/", "") + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
