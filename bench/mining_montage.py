"""What hard-negative mining finds: the start model's false cracks on training images, looked at (issue 27 §3).

For a seeded sample of training images of every source of a mask config, the start model
(the config's ``init_path``) is run at its calibrated threshold and the mined components are
drawn over the image: labelled cracks green, components the configured rule keeps red,
components it drops (too small or not straight enough, or the source is not mined) yellow. The picture decided which
rule `configs/mask_bridges_mined.yaml` uses (docs/model.md).

    python bench/mining_montage.py --config configs/mask_bridges_mined.yaml --per-source 4

Writes docs/mining_montage.jpg (a tile per image: the image, then the overlay).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.config import MaskTrainConfig, load_config  # noqa: E402
from survey_cracks.models.checkpoint import SHIPPED_MODEL  # noqa: E402
from survey_cracks.models.network import load_checkpoint  # noqa: E402
from survey_cracks.training.mining import false_positives  # noqa: E402
from survey_cracks.training.segment import load_images, mining_rule, probability_map  # noqa: E402

TILE = 256


def overlay(rgb: np.ndarray, target: np.ndarray, kept: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    out = rgb.copy()
    for mask, colour in ((target.astype(bool), (0, 255, 0)), (dropped, (255, 255, 0)), (kept, (255, 0, 0))):
        out[mask] = (0.35 * out[mask] + 0.65 * np.array(colour)).astype(np.uint8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "mask_bridges_mined.yaml")
    parser.add_argument("--per-source", type=int, default=4, help="images shown per source: those with most mined pixels "
                        "(any component) among a seeded sample")
    parser.add_argument("--sample", type=int, default=40, help="training images looked at per source")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sources", nargs="+", help="only these sources (default: all of the config's)")
    parser.add_argument("--min-elongation", type=float, help="the rule's min_elongation instead of the config's")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "mining_montage.jpg")
    args = parser.parse_args()
    config = load_config(MaskTrainConfig, args.config)
    torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(Path(config.init_path) if config.init_path else SHIPPED_MODEL)
    model.eval()
    rule = mining_rule(config, meta)
    if args.min_elongation is not None:
        rule = replace(rule, min_elongation=args.min_elongation)
    everything = replace(rule, min_elongation=0.0)
    rng = np.random.default_rng(0)
    images = load_images(config, progress=False, splits=("train",))
    rows = []
    for source in sorted({im.source for im in images} & set(args.sources or [s.name for s in config.sources])):
        members = [im for im in images if im.source == source]
        sample = [members[i] for i in rng.choice(len(members), min(args.sample, len(members)), replace=False)]
        found = []
        for image in sample:
            prob = probability_map(model, meta, image.image)
            every = false_positives(prob, image.target, image.ignore, everything)
            mined = config.schedule.mining_sources is None or source in config.schedule.mining_sources
            kept = false_positives(prob, image.target, image.ignore, rule) if mined else np.zeros_like(every)
            found.append((int(every.sum()), image, kept, every & ~kept))
        found.sort(key=lambda f: -f[0])
        print(f"{source}: mined pixels in the sample of {len(sample)}: all components {sum(f[0] for f in found)}, "
              f"kept by the rule {sum(int(f[2].sum()) for f in found)}; images with any: {sum(f[0] > 0 for f in found)}")
        for _, image, kept, dropped in found[: args.per_source]:
            pair = [cv2.resize(a, (TILE, TILE), interpolation=cv2.INTER_NEAREST)
                    for a in (image.image, overlay(image.image, image.target, kept, dropped))]
            tile = np.concatenate([pair[0], np.full((TILE, 4, 3), 255, np.uint8), pair[1]], axis=1)
            mined = config.schedule.mining_sources is None or source in config.schedule.mining_sources
            cv2.putText(tile, f"{source}{'' if mined else ' (not mined)'} {image.name[:24]}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
            rows.append(tile)
    columns = 2
    while len(rows) % columns:
        rows.append(np.zeros_like(rows[0]))
    lines = [np.concatenate(rows[i : i + columns], axis=1) for i in range(0, len(rows), columns)]
    picture = np.concatenate(lines, axis=0)
    cv2.imwrite(str(args.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
