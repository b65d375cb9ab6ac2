"""A mask model's held-out figures on uavcrack_bridges, a source it was NOT trained on (issue 27 §3).

By default the mask model shipped before that source was added (crack_resnet18_mask_v1); the
shipped model has trained on it since (configs/mask_bridges.yaml), so the script refuses a
model whose provenance lists it.

configs/mask.yaml lists uavcrack_bridges as a ``role: test`` source: grouped as its README
prescribes (`ck…` tiles by bridge map, dated and `IMG_` tiles by photo) and byte-identical
duplicates dropped, every remaining tile held out. This scores the model on all of
them at its own mask threshold (pixel P/R/F1 at 0, 2 and 5 px, centrelines at 2 px, as
`survey-cracks evaluate-mask` does) overall, for each bridge map with at least ``--min-tiles``
tiles, and pooled for the smaller maps and for the photo crops. The network runs once per
tile; rows are sums of per-tile counts. Re-training with this source is not done here.
The per-group figures of every group come from the CLI:
``survey-cracks evaluate-mask --config configs/mask.yaml --by-group uavcrack_bridges``.
Writes bench/results/mask_bridges_shipped.json.

    flock /tmp/survey_cracks_cpu.lock python bench/mask_bridges.py
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

from survey_cracks.config import MaskTrainConfig, load_config  # noqa: E402
from survey_cracks.models.checkpoint import file_sha256  # noqa: E402
from survey_cracks.models.network import load_checkpoint  # noqa: E402
from survey_cracks.training.segment import image_counts, load_images, summarise  # noqa: E402
from repository import BEFORE_BRIDGES  # noqa: E402

# ../shared beside the repository (a worktree sits one level deeper, under ../wt/)
SHARED = next((p for p in (ROOT.parent / "shared", ROOT.parents[1] / "shared") if p.is_dir()), ROOT.parent / "shared")
RESULTS = ROOT / "bench" / "results" / "mask_bridges_shipped.json"
SOURCE = "uavcrack_bridges"
TOLERANCES = (0, 2, 5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-tiles", type=int, default=20, help="maps with fewer tiles are pooled")
    parser.add_argument("--model", type=Path, default=BEFORE_BRIDGES,
                        help="a mask model that never trained on uavcrack_bridges [default: the one shipped before it]")
    args = parser.parse_args()
    config = load_config(MaskTrainConfig, ROOT / "configs" / "mask.yaml")
    source = next(s for s in config.sources if s.name == SOURCE)
    source = source.model_copy(update={"root": SHARED / "data" / SOURCE})
    config = config.model_copy(update={"sources": [source], "workers": os.cpu_count() or 1})
    model, meta = load_checkpoint(args.model)
    if SOURCE in meta.trained_on:
        sys.exit(f"{args.model}: trained on {SOURCE}, so its figures here would not be held out; give a model that "
                 f"never saw it (--model {BEFORE_BRIDGES.relative_to(ROOT)})")
    torch.set_num_threads(config.workers)
    started = time.perf_counter()
    images = [im for im in load_images(config, progress=True, splits=("test",)) if im.pixel_truth]
    counts = [image_counts(model, meta, im, meta.mask_threshold, TOLERANCES)
              for im in tqdm(images, desc="scoring", unit="tile", disable=not sys.stderr.isatty())]
    seconds = time.perf_counter() - started
    tiles: dict[str, list] = {}
    for im, c in zip(images, counts):
        tiles.setdefault(im.group, []).append(c)
    big = sorted((g for g in tiles if g.startswith("ck") and len(tiles[g]) >= args.min_tiles), key=lambda g: -len(tiles[g]))
    small = [g for g in tiles if g.startswith("ck") and g not in big]
    photos = [g for g in tiles if not g.startswith("ck")]
    rows = {"all": (len(tiles), [c for g in tiles for c in tiles[g]])}
    rows.update({f"map {g}": (1, tiles[g]) for g in big})
    rows[f"ck maps with < {args.min_tiles} tiles, pooled"] = (len(small), [c for g in small for c in tiles[g]])
    rows["dated and IMG_ photo crops, pooled"] = (len(photos), [c for g in photos for c in tiles[g]])
    result = {
        "command": "flock /tmp/survey_cracks_cpu.lock python bench/mask_bridges.py"
                   + ("" if args.model.resolve() == BEFORE_BRIDGES.resolve() else f" --model {args.model}"),
        "model": args.model.name, "sha256": file_sha256(args.model), "threshold": meta.mask_threshold,
        "trained_on_this_source": SOURCE in meta.trained_on,
        "held_out": f"{len(images)} tiles of {len(tiles)} groups (2,500 files less byte-identical duplicates)",
        "seconds": round(seconds, 1), "cpu": platform.processor() or platform.machine(), "threads": config.workers,
        "rows": {name: {"groups": n, **summarise(c, TOLERANCES)} for name, (n, c) in rows.items()},
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["rows"], indent=1))


if __name__ == "__main__":
    main()
