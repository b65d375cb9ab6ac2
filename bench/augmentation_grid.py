"""Draw docs/augmentations.png: training patches and augmented draws of each.

The patches are procedural (survey_cracks.synthetic) so the picture carries no
third-party imagery; the augmentation is exactly the one training uses.

    python bench/augmentation_grid.py [--out docs/augmentations.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.synthetic import render_scene  # noqa: E402
from survey_cracks.training.augment import save_augmentation_grid  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "augmentations.png")
    args = parser.parse_args()
    patches = []
    for seed, surface in ((3, "concrete"), (8, "asphalt"), (11, "concrete"), (4, "asphalt")):
        rgb, mask = render_scene(256, 256, seed=seed, surface=surface, n_cracks=2)
        rows, cols = np.nonzero(mask)
        r = int(np.clip(rows.mean() - 64, 0, 128)) if rows.size else 64
        c = int(np.clip(cols.mean() - 64, 0, 128)) if cols.size else 64
        patches.append(torch.from_numpy(rgb[r : r + 128, c : c + 128].copy()).permute(2, 0, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_augmentation_grid(torch.stack(patches), str(args.out), columns=8)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
