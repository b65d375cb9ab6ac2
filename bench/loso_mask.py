"""Leave-one-source-out table of the mask model on configs/mask_bridges.yaml's sources (issue 27 §3).

Each pixel-mask source (deepcrack with deepcrack_test, crackforest, masonry,
uavcrack_bridges, split by bridge map) is held out in turn: a mask model is trained on
the others from configs/mask.yaml's start (the patch classifier's trunk and head, a fresh
decoder; not the shipped mask model, which has seen every source), calibrated on their
validation images and scored on all labelled images of the held-out source; plus the
same schedule on every source as the reference. brickwork and quaywall (no pixel masks)
are always training sources. A short schedule (``--steps``) so the five models fit in
about half an hour on 2 CPU cores. This is `survey-cracks train-mask --loso`'s library
call with the data found beside the repository; sources already done are skipped on a
rerun (``--out-dir``).

    flock /tmp/survey_cracks_cpu.lock python bench/loso_mask.py --steps 300,200

Writes bench/results/loso_mask.json (and OUT_DIR/loso_mask.json, the card's copy).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.config import MaskTrainConfig, load_config  # noqa: E402
from survey_cracks.training.loso_mask import leave_one_source_out_mask  # noqa: E402
from survey_cracks.training.loso_mask_table import loso_mask_markdown  # noqa: E402

# ../shared beside the repository (a worktree sits one level deeper, under ../wt/)
SHARED = next((p for p in (ROOT.parent / "shared", ROOT.parents[1] / "shared") if p.is_dir()), ROOT.parent / "shared")
RESULTS = ROOT / "bench" / "results" / "loso_mask.json"


def shared_root(root: Path) -> Path:
    """A config's ``../../shared/data/X`` as found beside this checkout."""
    parts = Path(root).parts
    return root if Path(root).is_dir() or "data" not in parts else SHARED.joinpath(*parts[parts.index("data"):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mask_bridges.yaml", help="whose sources")
    parser.add_argument("--start", type=Path, default=ROOT / "configs" / "mask.yaml",
                        help="whose init_path and schedule (the patch classifier, a fresh decoder)")
    parser.add_argument("--steps", default="300,200", help="DECODER,JOINT steps of each model")
    parser.add_argument("--holdout", action="append", default=None, help="only this source (repeatable)")
    parser.add_argument("--val-per-source", type=int, default=24,
                        help="each threshold calibrated on at most this many validation images of each source")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "runs" / "loso_mask")
    args = parser.parse_args()
    decoder, joint = (int(n) for n in args.steps.split(","))
    start = load_config(MaskTrainConfig, args.start)
    config = load_config(MaskTrainConfig, args.config)
    config = config.model_copy(update={
        "sources": [s.model_copy(update={"root": shared_root(s.root)}) for s in config.sources],
        "init": start.init, "init_path": start.init_path, "keep_decoder": False, "schedule": start.schedule,
        "workers": args.workers, "out_dir": args.out_dir,
    })
    command = (f"flock /tmp/survey_cracks_cpu.lock python bench/loso_mask.py --steps {args.steps} "
               f"--val-per-source {args.val_per_source}"
               + "".join(f" --holdout {h}" for h in args.holdout or []))
    result = leave_one_source_out_mask(config, args.holdout, decoder, joint, val_per_source=args.val_per_source,
                                       command=command).to_json()
    result.update({"sources_config": f"configs/{args.config.name}", "start_config": f"configs/{args.start.name}",
                   "cpu": platform.processor() or platform.machine(), "threads": args.workers})
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(loso_mask_markdown(result))


if __name__ == "__main__":
    main()
