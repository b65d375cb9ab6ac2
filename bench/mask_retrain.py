"""Is a re-trained mask model worth shipping? Held-out figures of two models, split by source (issue 27 §3).

Both models are scored on the **test** split of every source of a mask config (by
default configs/mask_bridges.yaml, whose splits are configs/mask.yaml's with
uavcrack_bridges split by bridge map too): pixel P/R/F1 at 0, 2 and 5 px and centrelines
at 2 px, each model at its own mask threshold, as `survey-cracks evaluate-mask` does,
plus uavcrack_bridges by bridge map (maps with at least ``--min-tiles`` test tiles) and
the patch head's figures on configs/train.yaml's held-out patches (`survey-cracks
evaluate`). Several candidates can be scored in one run (each against the same current
model, each with its own verdict), so two training recipes are compared on equal terms.

The rule for shipping (the issue's): every existing source's test pixel F1@2 within one
point (0.01) of the current model's, and the new source's test maps better: its F1@2 over
all its test tiles higher AND more than half of its listed maps higher. The verdict is
computed here, not written by hand. Where F1 is undefined (nothing annotated or nothing
predicted) it counts as 0 when only one side has crack pixels and 1 when neither has.
``--min-tiles`` was 10 in the first run (2026-12-06): only one map of the test split has 10
tiles or more (68; its labels visibly miss cracks), so one map decided. From the second run
on it is 3, fixed before that run: 45 maps.

    survey-cracks train-mask --config configs/mask_bridges.yaml --ship   # runs/mask_bridges/model.safetensors
    survey-cracks train-mask --config configs/mask_bridges_negatives.yaml --ship
    flock /tmp/survey_cracks_cpu.lock python bench/mask_retrain.py \
        --candidate runs/mask_bridges/model.safetensors runs/mask_bridges_negatives/model.safetensors
    survey-cracks train-mask --config configs/mask_bridges_mined.yaml --ship   # hard-negative mining
    flock /tmp/survey_cracks_cpu.lock python bench/mask_retrain.py --reuse bench/results/mask_retrain.json \
        --candidate runs/mask_bridges/model.safetensors runs/mask_bridges_negatives/model.safetensors \
        runs/mask_bridges_mined/model.safetensors

``--reuse`` takes the scores of models an earlier result already holds (same sha256, same
config, ``--min-tiles`` and patch setting) instead of scoring them again (~5 min a model on
2 cores); the result says which were reused.

Writes bench/results/mask_retrain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.config import MaskTrainConfig, TrainConfig, load_config  # noqa: E402
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256  # noqa: E402
from survey_cracks.models.network import load_checkpoint  # noqa: E402
from survey_cracks.training.segment import image_counts, load_images, summarise  # noqa: E402
from survey_cracks.training.train import evaluate_checkpoint  # noqa: E402
from repository import shown  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "mask_retrain.json"
NEW_SOURCE = "uavcrack_bridges"
TOLERANCES = (0, 2, 5)
F1_KEY = "pixel@2px"
ONE_POINT = 0.01


def score(path: Path, images: list, min_tiles: int, patch_config: TrainConfig | None) -> dict:
    """One model's rows: each source's test split, the new source by map, the patch head's held-out patches."""
    model, meta = load_checkpoint(path)
    counts = [image_counts(model, meta, im, meta.mask_threshold, TOLERANCES)
              for im in tqdm(images, desc=f"scoring {path.name}", unit="img", disable=not sys.stderr.isatty())]
    rows = {}
    for source in sorted({im.source for im in images}):
        rows[source] = summarise([c for im, c in zip(images, counts) if im.source == source], TOLERANCES)
    by_map: dict[str, list] = {}
    for im, c in zip(images, counts):
        if im.source == NEW_SOURCE and im.group.startswith("ck"):
            by_map.setdefault(im.group, []).append(c)
    for group in sorted(by_map, key=lambda g: -len(by_map[g])):
        if len(by_map[group]) >= min_tiles:
            rows[f"{NEW_SOURCE} map {group}"] = summarise(by_map[group], TOLERANCES)
    patch = None
    if patch_config is not None:
        patch = {k.removeprefix("test/"): v for k, v in evaluate_checkpoint(patch_config, path, progress=False).items()
                 if k.startswith("test/")}
    return {"path": shown(path),
            "sha256": file_sha256(path), "threshold": meta.mask_threshold, "rows": rows, "patch": patch}


def _f1(row: dict) -> float:
    """F1@2 where it is undefined too: 0 when only one side has crack pixels (all missed, or all false), 1 when neither."""
    figures = row[F1_KEY]
    if figures["f1"] is not None:
        return figures["f1"]
    return 1.0 if figures["predicted_px"] == 0 and figures["annotated_px"] == 0 else 0.0


def verdict(current: dict, candidate: dict) -> dict:
    """The issue's rule: existing sources within one F1 point, the new source's test maps better."""
    changes = {}
    for name, row in current["rows"].items():
        if name in candidate["rows"]:
            changes[name] = round(_f1(candidate["rows"][name]) - _f1(row), 4)
    existing = {n: d for n, d in changes.items() if not n.startswith(NEW_SOURCE)}
    maps = {n: d for n, d in changes.items() if n.startswith(f"{NEW_SOURCE} map")}
    kept = all(d >= -ONE_POINT for d in existing.values())
    improved = changes.get(NEW_SOURCE, 0.0) > 0 and sum(d > 0 for d in maps.values()) > len(maps) / 2
    return {"f1_change_at_2px": changes, "existing_within_one_point": kept, "new_source_improved": improved,
            "maps_improved": f"{sum(d > 0 for d in maps.values())} of {len(maps)}", "ship": kept and improved}


def reusable(path: Path, config: str, min_tiles: int, no_patch: bool) -> dict[str, dict]:
    """An earlier result's model scores by sha256, if it scored the same images the same way (else none)."""
    earlier = json.loads(path.read_text())
    tiles = earlier.get("min_tiles", int(earlier["command"].split("--min-tiles ")[1].split()[0])
                        if "--min-tiles " in earlier["command"] else None)
    same = (earlier["config"] == config and tiles == min_tiles
            and earlier.get("no_patch", "--no-patch" in earlier["command"]) == no_patch)
    return {m["sha256"]: m for m in earlier["models"].values()} if same else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mask_bridges.yaml")
    parser.add_argument("--current", type=Path, default=None,
                        help="the model the candidates would replace [default: the config's init_path, the model they "
                        "started from, else the shipped model]")
    parser.add_argument("--candidate", type=Path, nargs="+", required=True,
                        help="the re-trained model(s); each is named by its run folder (runs/NAME/model.safetensors)")
    parser.add_argument("--min-tiles", type=int, default=3, help="bridge maps with fewer test tiles are not listed")
    parser.add_argument("--no-patch", action="store_true", help="skip the patch head's figures")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--reuse", type=Path, help="an earlier result of this script: its models' scores are taken "
                        "where sha256, config, --min-tiles and the patch setting match")
    args = parser.parse_args()
    config = load_config(MaskTrainConfig, args.config)
    args.current = args.current or (Path(config.init_path) if config.init_path else SHIPPED_MODEL)
    config = config.model_copy(update={"workers": os.cpu_count() or 1})
    torch.set_num_threads(config.workers)
    patch_config = None if args.no_patch else load_config(TrainConfig, ROOT / "configs" / "train.yaml")
    started = time.perf_counter()
    images = [im for im in load_images(config, progress=sys.stderr.isatty(), splits=("test",)) if im.pixel_truth]
    partial = args.out.with_suffix(".partial.json")  # each model's scores as soon as known: a crash keeps them
    done = json.loads(partial.read_text()) if partial.is_file() else {}
    reused = reusable(args.reuse, shown(args.config), args.min_tiles, args.no_patch) if args.reuse else {}
    models = {}
    for name, path in [("current", args.current), *((p.resolve().parent.name, p) for p in args.candidate)]:
        sha = file_sha256(path.resolve())
        key = f"{sha}:{shown(args.config)}:{args.min_tiles}:{args.no_patch}"  # same model, same images
        models[name] = done[key] if key in done else reused[sha] if sha in reused else score(
            path.resolve(), images, args.min_tiles, patch_config)
        done[key] = models[name]
        partial.write_text(json.dumps(done))
    names = list(models)[1:]
    result = {
        "command": f"flock /tmp/survey_cracks_cpu.lock python bench/mask_retrain.py --current {shown(args.current)} "
                   f"--candidate {' '.join(shown(p) for p in args.candidate)}"
                   f"{' --no-patch' if args.no_patch else ''} --min-tiles {args.min_tiles}"
                   f"{f' --reuse {shown(args.reuse)}' if args.reuse else ''}"
                   f"{f' --out {shown(args.out)}' if args.out.resolve() != RESULTS else ''}",
        "config": shown(args.config), "split": "test", "min_tiles": args.min_tiles, "no_patch": args.no_patch,
        "reused": [name for name, m in models.items() if m["sha256"] in reused],  # scores taken from --reuse
        "rule": f"ship when every existing source's test {F1_KEY} F1 is within {ONE_POINT} of the current model's "
                f"and {NEW_SOURCE}'s test F1 and more than half of its test maps (>= {args.min_tiles} tiles) improve",
        "models": models, "verdicts": {name: verdict(models["current"], models[name]) for name in names},
        "seconds": round(time.perf_counter() - started, 1), "cpu": platform.processor() or platform.machine(),
        "threads": config.workers,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    partial.unlink()
    print(json.dumps(result["verdicts"], indent=1))


if __name__ == "__main__":
    main()
