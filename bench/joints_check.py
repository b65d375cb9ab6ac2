"""Do mask models take straight joints for cracks? Several models on the same procedural structure (issue 27).

The issue's false cracks are straight linear structures: formwork board joints, slab and
panel joints, sealed joints. The shared sets hold few of them, so `bench/mask_retrain.py`'s
held-out figures say little about them. This scores each model, as `run` would use it (its
own mask threshold), on three procedural board-formed concrete mosaics at 2 mm
(`survey_cracks.synthetic.write_orthomosaic(..., label_joints=True)`: long formwork and panel
joints, sealed joints and saw cuts beside real-looking cracks; the joints are annotated
`not_crack`, so every joint pixel a model marks is a false crack). No model was trained on
them: they are the mosaics of bench/finetune_mask.py's procedural part, generated afresh.

Pixel P/R/F1 at 2 and 5 px, centrelines at 5 px and cell AP (`training.adapt.held_out_figures`).
Precision is the figure that answers the question: recall on these drawn cracks is near 1 for
every model.

    flock /tmp/survey_cracks_cpu.lock python bench/joints_check.py \
        --model survey_cracks/weights/crack_resnet18.safetensors runs/mask_bridges/model.safetensors ...

Writes bench/results/joints_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.models.network import SHIPPED_MODEL  # noqa: E402
from survey_cracks.synthetic import write_orthomosaic  # noqa: E402
from survey_cracks.training.adapt import held_out_figures, survey_images  # noqa: E402
from repository import shown  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "joints_check.json"
SEEDS = (11, 12, 13)  # bench/finetune_mask.py's board_a, board_b, board_c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, nargs="+", default=[SHIPPED_MODEL], help="the mask models to score")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "joints_check", help="where the mosaics are written")
    parser.add_argument("--size", type=int, default=2048, help="mosaic edge, px")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.perf_counter()
    survey = args.work / "board"
    survey.mkdir(parents=True, exist_ok=True)
    for seed in SEEDS:
        raster = survey / f"board_{seed}.tif"
        if not raster.is_file():
            write_orthomosaic(raster, args.size, args.size, seed=seed, gsd=0.002, surface="concrete",
                              annotation_path=survey / f"board_{seed}.cracks.gpkg", label_joints=True)
    images = survey_images([survey], progress=False)
    models = {}
    for path in args.model:
        figures = held_out_figures(path.resolve(), images)
        models[shown(path)] = asdict(figures) | {"model": shown(path)}
        p5 = figures.figures["pixel@5px"]
        print(f"{shown(path)}: threshold {figures.threshold}, P@5 {p5['precision']}, R@5 {p5['recall']}, F1@5 {p5['f1']}",
              flush=True)
    result = {
        "command": "flock /tmp/survey_cracks_cpu.lock python bench/joints_check.py --model "
                   + " ".join(shown(p) for p in args.model),
        "mosaics": f"{len(SEEDS)} x {args.size}x{args.size} px, 2 mm, seeds {list(SEEDS)}, joints labelled not_crack",
        "models": models, "seconds": round(time.perf_counter() - started, 1),
        "cpu": platform.processor() or platform.machine(), "threads": os.cpu_count(),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
