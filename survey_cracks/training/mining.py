"""Hard-negative mining: the start model's own false cracks on the training images (issue 27 §3).

The shipped model's problem on real structures is precision: straight joints, seams, board
and marking edges taken for cracks. The shared training sets hold some such structures
(mortar joints, slab joints, formwork marks, kerbs), but among hundreds of thousands of
easy background pixels they weigh nothing. Here the model that training starts from is run
over every **training** image (never validation or test: those must stay unseen), and the
pixels it calls crack at its own calibrated threshold that lie more than ``clearance_px``
from any labelled crack, outside ignored areas, are its false positives. Connected
components of at least ``min_component_px`` are kept, optionally only elongated ones
(``min_elongation``, the ratio of a component's principal axes): unlabelled real cracks in
incompletely labelled maps are mostly short, curved fragments, while the look-alikes the
product trips on are long and straight.

The mined pixels become hard negatives (`MaskImage.negative`), weighted by the schedule's
``negative_weight`` in the loss as annotated ``not_crack`` pixels are, and a share of crops
(``mined_negatives``) is cut around them (`segment.sample_crop`).

Masks are cached under the run's folder, one file per image, named by a hash of the model,
the rule and the image with its labels, so a resumed run (or a second run of the same
config) does not run the network again; a changed model, rule or image misses the cache.
The network is passed in as a function (`predict`), so this module does not depend on
the training loop that calls it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np
from tqdm import tqdm

from survey_cracks.outputs import atomic_write

if TYPE_CHECKING:
    from survey_cracks.training.segment import MaskImage

Predict = Callable[[np.ndarray], np.ndarray]  # (H, W, 3) uint8 -> (H, W) crack probability


@dataclass(frozen=True)
class MiningRule:
    """Which pixels of a start model's prediction are kept as hard negatives."""

    threshold: float  # the start model's calibrated mask threshold: what the product would draw
    clearance_px: int = 5  # labelled cracks are dilated by this much: their rims are not false positives
    min_component_px: int = 16  # specks are noise, not structures
    min_elongation: float = 0.0  # principal-axis ratio a component needs; 0 keeps every component


def elongation(labels: np.ndarray, count: int) -> np.ndarray:
    """Ratio of the principal axes (sqrt of the coordinate covariance's eigenvalues) of components 1..count-1.

    A straight joint of length L and width w scores about L / w; a blob about 1; a crack
    that wanders sideways as it runs scores lower than a straight line of its length.
    Index 0 (background) is 0.
    """
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    n = np.bincount(ids, minlength=count).astype(np.float64)
    safe = np.maximum(n, 1)
    mx, my = np.bincount(ids, xs, count) / safe, np.bincount(ids, ys, count) / safe
    dx, dy = xs - mx[ids], ys - my[ids]
    sxx = np.bincount(ids, dx * dx, count) / safe + 1 / 12  # + a pixel's own extent: a 1 px line has width
    syy = np.bincount(ids, dy * dy, count) / safe + 1 / 12
    sxy = np.bincount(ids, dx * dy, count) / safe
    half_gap = np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    major, minor = (sxx + syy) / 2 + half_gap, (sxx + syy) / 2 - half_gap
    ratio = np.sqrt(major / np.maximum(minor, 1e-6))
    ratio[0] = 0.0
    return ratio


def false_positives(prob: np.ndarray, target: np.ndarray, ignore: np.ndarray, rule: MiningRule) -> np.ndarray:
    """(H, W) bool: pixels at or above the threshold, farther than ``clearance_px`` from a crack, not ignored,
    in components the rule keeps."""
    hot = (prob >= rule.threshold) & ~ignore
    if rule.clearance_px > 0 and target.any():
        size = 2 * rule.clearance_px + 1
        near = cv2.dilate(target.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))) > 0
        hot &= ~near
    elif target.any():
        hot &= ~target.astype(bool)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(hot.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= rule.min_component_px
    keep[0] = False
    if rule.min_elongation > 0 and keep.any():
        keep &= elongation(labels, count) >= rule.min_elongation
    return keep[labels]


def components(mask: np.ndarray) -> int:
    """Connected components (8-connected) of a mined mask."""
    return int(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0]) - 1


@dataclass
class SourceMining:
    """What mining found in one source's training images."""

    images: int = 0
    images_with_negatives: int = 0
    pixels: int = 0
    components: int = 0
    pixel_share: float = 0.0  # mined pixels per training pixel of the source


@dataclass
class MiningSummary:
    rule: MiningRule
    model_sha256: str
    sources: dict[str, SourceMining] = field(default_factory=dict)
    computed: int = 0  # images the network ran on; the others came from the cache
    cached: int = 0

    def as_dict(self) -> dict:
        return {"rule": asdict(self.rule), "model_sha256": self.model_sha256, "computed": self.computed,
                "cached": self.cached, "sources": {k: asdict(v) for k, v in self.sources.items()}}

    def lines(self) -> list[str]:
        """One line per source, for the training log."""
        return [f"mined {s}: {m.pixels} px in {m.components} components on {m.images_with_negatives} of {m.images} "
                f"training images ({m.pixel_share:.2%} of their pixels)" for s, m in self.sources.items()]


def cache_key(image: MaskImage, model_sha256: str, rule: MiningRule) -> str:
    """Hash of the model, the rule, and the image's pixels and labels: any change mines again."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"model": model_sha256, "rule": asdict(rule)}, sort_keys=True).encode())
    for array in (image.image, image.target, image.ignore):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def _load(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    try:
        bits = np.load(path)
    except (OSError, ValueError):
        return None  # unreadable (e.g. written by another version): mine again
    count = shape[0] * shape[1]
    return np.unpackbits(bits, count=count).astype(bool).reshape(shape) if bits.size * 8 >= count else None


def _store(path: Path, mask: np.ndarray) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.packbits(mask.ravel()))


def mine(images: list[MaskImage], predict: Predict, model_sha256: str, rule: MiningRule, cache_dir: Path,
         sources: set[str] | None = None, progress: bool = True) -> tuple[list[MaskImage], MiningSummary]:
    """The images with their training images' mined pixels added to ``negative``; what was found, by source.

    Only ``split == "train"`` images are run (of ``sources`` when given); every other image
    is returned as it came, so nothing is learnt from the held-out splits.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    summary = MiningSummary(rule, model_sha256)
    chosen = [i for i, im in enumerate(images) if im.split == "train" and (sources is None or im.source in sources)]
    out = list(images)
    shares: dict[str, list[int]] = {}
    for i in tqdm(chosen, desc="mining hard negatives", unit="img", disable=not progress, leave=False):
        image = images[i]
        path = cache_dir / f"{cache_key(image, model_sha256, rule)}.npy"
        mined = _load(path, image.target.shape) if path.is_file() else None
        if mined is None:
            mined = false_positives(predict(image.image), image.target, image.ignore, rule)
            _store(path, mined)
            summary.computed += 1
        else:
            summary.cached += 1
        found = summary.sources.setdefault(image.source, SourceMining())
        found.images += 1
        pixels = int(mined.sum())
        shares.setdefault(image.source, [0, 0])[1] += mined.size
        if pixels:
            found.images_with_negatives += 1
            found.pixels += pixels
            found.components += components(mined)
            shares[image.source][0] += pixels
            out[i] = replace(image, negative=mined if image.negative is None else image.negative | mined)
    for source, (pixels, total) in shares.items():
        summary.sources[source].pixel_share = round(pixels / total, 6) if total else 0.0
    summary.sources = dict(sorted(summary.sources.items()))
    return out, summary
