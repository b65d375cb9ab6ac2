"""Training the crack-mask decoder on a patch classifier's trunk.

Transfer learning in two phases: the decoder alone with the trunk and patch head
frozen (the trunk's crack features are kept, only the decoder learns to read them
per pixel), then the whole network at a tenth of the rate with both losses (pixel
BCE + soft Dice, and the patch head's cross-entropy on labels derived from the same
masks, so its scores stay calibrated while the trunk moves).

What each source teaches:

- pixel masks (DeepCrack, CrackForest, masonry): every pixel;
- class folders (Brickwork): crack-free images as all-background masks; crack images
  carry no pixel information and are left to the patch classifier that made the trunk;
- YOLO boxes (quay-wall UAV tiles): outside every box is background, inside is ignored.

Images are split by the same seeded group hash as the classifier (`io.sources.list_items`),
so the images held out from the trunk's training stay held out here. Each step's
batch is a pure function of ``(seed, step)``, and a checkpoint with the optimiser
state is written every ``checkpoint_every`` steps, so a killed run resumed with
``resume=True`` ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch
from rasterio.windows import Window
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from survey_cracks.config import MaskTrainConfig
from survey_cracks.evaluation.metrics import average_precision, choose_threshold
from survey_cracks.evaluation.pixel_metrics import centreline_counts, centreline_scores, pixel_scores, tolerant_counts
from survey_cracks.io.raster import RasterInfo, inspect_raster, open_raster, read_window
from survey_cracks.io.sources import ImageItem, group_of, list_items
from survey_cracks.models.checkpoint import SHIPPED_MODEL, ModelMeta, file_sha256
from survey_cracks.models.labels import IGNORE, dense_patch_labels
from survey_cracks.models.network import (
    CrackNet,
    build_model,
    find_imagenet_weights,
    load_checkpoint,
    load_imagenet_backbone,
    normalise,
    save_checkpoint,
)
from survey_cracks.errors import ConfigError
from survey_cracks.outputs import atomic_write
from survey_cracks.tiling import ALIGN, PatchGrid
from survey_cracks.training.card import MASK_TASK
from survey_cracks.training.faint_cracks import fade_cracks
from survey_cracks.training.mining import MiningRule, mine
from survey_cracks.training.negatives import draw_straight_negatives
from survey_cracks.vectors.heatmap import BlockBlender, blend_ramp

Log = Callable[[str], None]


@dataclass
class MaskImage:
    """One training image in memory with its pixel target."""

    source: str
    name: str
    split: str
    image: np.ndarray  # (H, W, 3) uint8
    target: np.ndarray  # (H, W) uint8, 1 = crack
    ignore: np.ndarray  # (H, W) bool, True = no supervision
    pixel_truth: bool  # a full crack mask (counts in pixel metrics)
    negative: np.ndarray | None = None  # (H, W) bool, True = annotated `not_crack` (a hard negative)
    group: str = ""  # the photo or map it was cut from (`io.sources.group_of`): figures by group


def load_images(config: MaskTrainConfig, progress: bool = True, splits: tuple[str, ...] | None = None) -> list[MaskImage]:
    """Every usable image of every source (of ``splits`` when given), read with the pipeline's own reader.

    Evaluation asks for its splits only: reading the training images too cost minutes and GBs.
    """
    out: list[MaskImage] = []
    items = [(source, item) for source in config.sources for item in list_items(source, config.seed)
             if splits is None or item.split in splits]
    for source, item in tqdm(items, desc="reading images", unit="img", disable=not progress, leave=False):
        if item.whole_label == 1:
            continue  # crack / no-crack only: nothing to say per pixel
        info = inspect_raster(item.path)
        with open_raster(item.path) as src:
            rgb, _ = read_window(src, info, Window(0, 0, info.width, info.height))
        target = np.zeros((info.height, info.width), np.uint8)
        ignore = np.zeros((info.height, info.width), bool)
        negative = None
        if item.survey:
            rgb, target, ignore, negative = _survey_targets(item, info, rgb)
        elif item.mask is not None:
            mask = cv2.imread(str(item.mask), cv2.IMREAD_GRAYSCALE)
            if mask is None or mask.shape != target.shape:
                from survey_cracks.errors import DataSourceError

                raise DataSourceError(item.mask, "mask unreadable or not the image's size", "masks must match their image")
            target = (mask > 127).astype(np.uint8)
        for x0, y0, x1, y1 in item.boxes or ():
            ignore[max(0, int(math.floor(y0))) : int(math.ceil(y1)), max(0, int(math.floor(x0))) : int(math.ceil(x1))] = True
        out.append(MaskImage(item.source, item.name if item.part else item.path.name, item.split, rgb, target, ignore,
                             item.mask is not None or item.survey, negative, group_of(item.path.stem, source)))
    return out


def _survey_targets(item: ImageItem, info: RasterInfo, rgb: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A user's annotated raster (or its part, `io.sources.strip_parts`): image, crack, ignore and not_crack pixels.

    Nodata pixels are unsupervised; the part's pixels only, so no training crop can
    reach into the held-out strip.
    """
    from survey_cracks.io.annotations import load_truth

    whole = Window(0, 0, info.width, info.height)
    truth = load_truth(item.path, info)
    target = truth.mask(whole).astype(np.uint8)
    ignore = truth.ignore_mask(whole)
    negative = truth.not_crack_mask(whole)
    if item.part is not None:
        length = max(info.width, info.height)
        start, end = (int(round(f * length)) for f in item.part)
        cut = (slice(None), slice(start, end)) if info.width >= info.height else (slice(start, end), slice(None))
        rgb, target, ignore, negative = (np.ascontiguousarray(a[cut]) for a in (rgb, target, ignore, negative))
    return rgb, target, ignore, negative


# --- augmentation -------------------------------------------------------------------------


def _rescale(image: MaskImage, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Image, target, ignore and hard negatives at another ground sampling distance; thin cracks stay visible."""
    negative = image.negative if image.negative is not None else np.zeros(image.target.shape, bool)
    if abs(scale - 1.0) < 1e-3:
        return image.image, image.target, image.ignore, negative
    h, w = image.target.shape
    size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(image.image, size, interpolation=interp)
    # A 1 px crack shrunk by area covers ~scale of a pixel: keep pixels a crack crosses substantially.
    target = cv2.resize(image.target.astype(np.float32), size, interpolation=interp) >= (0.3 if scale < 1 else 0.5)
    ignore = cv2.resize(image.ignore.astype(np.float32), size, interpolation=interp) > 0
    negative = cv2.resize(negative.astype(np.float32), size, interpolation=interp) >= 0.5
    return rgb, target.astype(np.uint8), ignore, negative


def sample_crop(image: MaskImage, crop: int, rng: np.random.Generator, schedule_scale: tuple[float, float],
                augment: bool, synthetic_negatives: float = 0.0, mined_negatives: float = 0.0,
                faint_cracks: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A (crop x crop) training sample: rgb uint8, target uint8, ignore bool, hard negative bool.

    With probability ``synthetic_negatives`` a straight look-alike (joint, board joints,
    marking or patch edge) is drawn on the crop as a hard negative (`negatives.py`). With
    probability ``mined_negatives``, on an image with hard-negative pixels (mined, or
    annotated `not_crack`), the crop is cut around one of them, as most crops are cut around
    a crack: a few hundred such pixels would otherwise rarely be in a crop at all. With
    probability ``faint_cracks`` the crop's cracks are faded toward their surroundings
    (`faint_cracks.py`), label kept. At 0 no random number is drawn for either, so the
    crops are those of a run without them.
    """
    lo, hi = schedule_scale
    scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) if augment else 1.0
    rgb, target, ignore, negative = _rescale(image, scale)
    h, w = target.shape
    if h < crop or w < crop:  # small images: reflect the pixels, supervise none of the padding
        ph, pw = max(0, crop - h), max(0, crop - w)
        rgb = cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_REFLECT_101)
        target = np.pad(target, ((0, ph), (0, pw)))
        ignore = np.pad(ignore, ((0, ph), (0, pw)), constant_values=True)
        negative = np.pad(negative, ((0, ph), (0, pw)))
        h, w = target.shape
    cracks = np.flatnonzero(target.ravel())
    hard = np.flatnonzero(negative.ravel()) if mined_negatives > 0 else cracks[:0]
    if hard.size and rng.random() < mined_negatives:
        top, left = _crop_around(hard, h, w, crop, rng)
    elif cracks.size and rng.random() < 0.6:  # most crops hold a crack: cracks are a few % of the pixels
        top, left = _crop_around(cracks, h, w, crop, rng)
    else:
        top, left = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
    box = (slice(top, top + crop), slice(left, left + crop))
    arrays = [a[box] for a in (rgb, target, ignore, negative)]
    if augment:
        k = int(rng.integers(4))
        flip = bool(rng.integers(2))
        arrays = [np.rot90(a, k) for a in arrays]
        if flip:
            arrays = [a[:, ::-1] for a in arrays]
        if synthetic_negatives > 0 and rng.random() < synthetic_negatives:
            arrays[0], drawn = draw_straight_negatives(np.ascontiguousarray(arrays[0]), arrays[1], rng)
            arrays[3] = (arrays[3] | drawn) & ~arrays[2]
        if faint_cracks > 0 and rng.random() < faint_cracks:
            arrays[0] = fade_cracks(np.ascontiguousarray(arrays[0]), arrays[1], rng)
        arrays[0] = photometric(np.ascontiguousarray(arrays[0]), rng)
    rgb, target, ignore, negative = (np.ascontiguousarray(a) for a in arrays)
    return rgb, target, ignore, negative


def _crop_around(pixels: np.ndarray, h: int, w: int, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left of a crop holding one of ``pixels`` (flat indices) at least crop/8 from its edges where the image allows."""
    cy, cx = divmod(int(pixels[rng.integers(pixels.size)]), w)
    top = int(np.clip(cy - rng.integers(crop // 8, crop - crop // 8), 0, h - crop))
    left = int(np.clip(cx - rng.integers(crop // 8, crop - crop // 8), 0, w - crop))
    return top, left


def photometric(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting, camera colour, focus, noise and compression; never strong enough to erase a 1 px crack."""
    out = rgb.astype(np.float32)
    if rng.random() < 0.8:
        out = (out - out.mean()) * rng.uniform(0.65, 1.35) + out.mean() + rng.uniform(-35, 35)
        out *= rng.uniform(0.9, 1.1, size=3)  # white balance
    if rng.random() < 0.15:
        out[:] = out.mean(axis=2, keepdims=True)
    if rng.random() < 0.15:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.3, 1.0))
    if rng.random() < 0.25:
        out += rng.normal(0, rng.uniform(2, 8), out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


class StepSampler:
    """The batch of step ``k`` is a pure function of ``(seed, k)``: resume is exact."""

    def __init__(self, images: list[MaskImage], config: MaskTrainConfig) -> None:
        self.config = config
        train = [im for im in images if im.split == "train"]
        weight = {s.name: s.weight for s in config.sources}
        self.by_source = {}
        for im in train:
            self.by_source.setdefault(im.source, []).append(im)
        self.sources = sorted(self.by_source)
        shares = np.array([weight.get(s, 1.0) for s in self.sources], dtype=np.float64)
        self.shares = shares / shares.sum()

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) uint8; target, ignore and hard-negative maps (B, 1, H, W) float."""
        schedule = self.config.schedule
        rng = np.random.default_rng([self.config.seed, step])
        crops = []
        for _ in range(schedule.batch_size):
            source = self.sources[int(rng.choice(len(self.sources), p=self.shares))]
            members = self.by_source[source]
            image = members[int(rng.integers(len(members)))]
            crops.append(sample_crop(image, schedule.crop_size, rng, schedule.scale_jitter, self.config.augment,
                                     schedule.synthetic_negatives, schedule.mined_negatives,
                                     schedule.faint_cracks))
        rgbs, targets, ignores, negatives = zip(*crops)
        images = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2)
        target, ignore, negative = (torch.from_numpy(np.stack(a))[:, None].float() for a in (targets, ignores, negatives))
        return images, target, ignore, negative


# --- losses ---------------------------------------------------------------------------------


def mask_loss(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor, dice_weight: float,
              negative: torch.Tensor | None = None, negative_weight: float = 1.0) -> torch.Tensor:
    """Pixel BCE + soft Dice over the supervised pixels: Dice keeps thin, rare cracks from drowning in background.

    ``negative`` marks hard negatives (annotated `not_crack`: joints, seams): background
    whose BCE counts ``negative_weight`` times, as a joint is a few hundred pixels among
    a crop's tens of thousands of easy ones. Ignored pixels count in neither term.
    """
    weight = 1.0 - ignore
    bce_weight = weight if negative is None else weight * (1.0 + (negative_weight - 1.0) * negative * (1.0 - target))
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * bce_weight).sum() / bce_weight.sum().clamp(min=1)
    prob = torch.sigmoid(logits) * weight
    dice = 1.0 - (2.0 * (prob * target).sum() + 1.0) / (prob.sum() + (target * weight).sum() + 1.0)
    return bce + dice_weight * dice


# --- prediction and metrics on whole images -------------------------------------------------


@torch.inference_mode()
def probability_map(model: CrackNet, meta: ModelMeta, rgb: np.ndarray) -> np.ndarray:
    """Per-pixel crack probability of a whole (small) image, padded by reflection to a multiple of 32."""
    h, w = rgb.shape[:2]
    ph, pw = (-h) % 32, (-w) % 32
    padded = cv2.copyMakeBorder(rgb, 0, ph, 0, pw, cv2.BORDER_REFLECT_101) if ph or pw else rgb
    batch = normalise(torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None], meta)
    logits, dense = model.segment(batch)
    if logits is not None:
        return torch.sigmoid(logits)[0, 0, :h, :w].numpy()
    # A patch classifier: its patch scores every 32 px blended over their windows, as `run --mode dense` does.
    scores = torch.softmax(dense, dim=1)[0, meta.classes.index("crack")].numpy()
    grid = PatchGrid(width=padded.shape[1], height=padded.shape[0], size=meta.patch_size, stride=ALIGN,
                     rows=np.arange(scores.shape[0]) * ALIGN, cols=np.arange(scores.shape[1]) * ALIGN)
    total, weight = BlockBlender(grid, scores.ravel(), blend_ramp(meta.patch_size, 0.1)).sums(Window(0, 0, w, h))
    return total / np.maximum(weight, 1e-12)


THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)


def scored_truth(image: MaskImage) -> tuple[np.ndarray, np.ndarray]:
    """Crack pixels and the pixels metrics count: unsupervised (`ignore`) ones are neither predicted nor annotated."""
    scored = ~image.ignore
    return image.target.astype(bool) & scored, scored


def calibrate(model: CrackNet, meta: ModelMeta, images: list[MaskImage], tolerance: int) -> tuple[float, dict[str, Any]]:
    """The mask threshold with the best pixel F1 at ``tolerance`` px; ties go to the one nearest 0.5."""
    counts = np.zeros((len(THRESHOLDS), 4), np.int64)
    for image in images:
        prob = probability_map(model, meta, image.image)
        truth, scored = scored_truth(image)
        for i, t in enumerate(THRESHOLDS):
            counts[i] += tolerant_counts((prob >= t) & scored, truth, tolerance)
    f1 = np.array([pixel_scores(c)["f1"] or 0.0 for c in counts])
    best = np.flatnonzero(f1 == f1.max())
    choice = int(best[np.argmin(np.abs(THRESHOLDS[best] - 0.5))])
    return float(THRESHOLDS[choice]), {"threshold": float(THRESHOLDS[choice]), **pixel_scores(counts[choice])}


def scaled_probability_map(model: CrackNet, meta: ModelMeta, rgb: np.ndarray, scale: float) -> np.ndarray:
    """`probability_map` at ``scale`` x the image's resolution, brought back to the image's grid (as `run --scale`)."""
    if scale == 1.0:
        return probability_map(model, meta, rgb)
    h, w = rgb.shape[:2]
    size = (max(32, int(round(w * scale))), max(32, int(round(h * scale))))
    resized = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return cv2.resize(probability_map(model, meta, resized), (w, h), interpolation=cv2.INTER_LINEAR)


def mask_metrics(
    model: CrackNet, meta: ModelMeta, images: list[MaskImage], threshold: float, tolerances: tuple[int, ...] = (0, 2),
    centreline_tolerance: int = 2, scale: float = 1.0, cell: int | None = None, min_cell_crack_px: int = 8,
) -> dict[str, Any]:
    """Pixel P/R/F1 at each tolerance and centreline completeness / correctness / quality over ``images``.

    With ``cell``: also the average precision of ``cell`` px cells (score: the highest
    probability in the cell; a crack cell holds ``min_cell_crack_px`` annotated pixels),
    which needs no threshold, so models calibrated differently compare fairly.
    """
    counts = [image_counts(model, meta, image, threshold, tolerances, centreline_tolerance, scale, cell, min_cell_crack_px)
              for image in images]
    return summarise(counts, tolerances, centreline_tolerance, cell)


@dataclass
class ImageCounts:
    """One image's contribution to `mask_metrics`: counts add up, so any set of images is scored from them."""

    pixel: dict[int, np.ndarray]
    line: np.ndarray
    cell_score: np.ndarray | None = None
    cell_label: np.ndarray | None = None


def image_counts(
    model: CrackNet, meta: ModelMeta, image: MaskImage, threshold: float, tolerances: tuple[int, ...] = (0, 2),
    centreline_tolerance: int = 2, scale: float = 1.0, cell: int | None = None, min_cell_crack_px: int = 8,
) -> ImageCounts:
    """The network runs once per image; figures per source and per group are then sums (`summarise`)."""
    truth, scored = scored_truth(image)
    prob = scaled_probability_map(model, meta, image.image, scale)
    predicted = (prob >= threshold) & scored
    counts = ImageCounts({t: tolerant_counts(predicted, truth, t) for t in tolerances},
                         centreline_counts(predicted, truth, centreline_tolerance))
    if cell:
        counts.cell_score, counts.cell_label = _cells(np.where(scored, prob, -1.0), truth, cell, min_cell_crack_px)
    return counts


def summarise(counts: list[ImageCounts], tolerances: tuple[int, ...] = (0, 2), centreline_tolerance: int = 2,
              cell: int | None = None) -> dict[str, Any]:
    """`mask_metrics`' figures over the images whose counts are given."""
    out: dict[str, Any] = {"images": len(counts)}
    for t in tolerances:
        out[f"pixel@{t}px"] = pixel_scores(sum((c.pixel[t] for c in counts), np.zeros(4, np.int64)))
    out[f"centreline@{centreline_tolerance}px"] = centreline_scores(sum((c.line for c in counts), np.zeros(4, np.int64)))
    if cell:
        ap = average_precision(np.concatenate([c.cell_score for c in counts]),
                               np.concatenate([c.cell_label for c in counts])) if counts else None
        out[f"cell_ap@{cell}px"] = None if ap is None else round(ap, 4)
    return out


def _cells(prob: np.ndarray, truth: np.ndarray, cell: int, min_crack_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Per ``cell`` px cell with a scored pixel: its highest probability and whether it is a crack cell."""
    h, w = truth.shape
    ph, pw = (-h) % cell, (-w) % cell
    prob = np.pad(prob, ((0, ph), (0, pw)), constant_values=-1.0)
    truth = np.pad(truth, ((0, ph), (0, pw)))
    shape = (prob.shape[0] // cell, cell, prob.shape[1] // cell, cell)
    best = prob.reshape(shape).max(axis=(1, 3)).ravel()
    cracks = truth.reshape(shape).sum(axis=(1, 3)).ravel()
    keep = best >= 0
    return best[keep], (cracks[keep] >= min_crack_px).astype(np.int8)


@torch.inference_mode()
def calibrate_patch_threshold(model: CrackNet, meta: ModelMeta, images: list[MaskImage], min_center_px: int) -> float:
    """The patch head's threshold (max F1, ties nearest 0.5) on the validation images' dense patches.

    Every 128 px patch at a 32 px step is labelled by the classifier's rule from the mask
    (`dense_patch_labels`); the joint phase moved the head, so its threshold is set again.
    """
    probs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for image in images:
        h, w = image.target.shape
        ph, pw = (-h) % 32, (-w) % 32
        rgb = cv2.copyMakeBorder(image.image, 0, ph, 0, pw, cv2.BORDER_REFLECT_101) if ph or pw else image.image
        if min(rgb.shape[:2]) < meta.patch_size:
            continue
        batch = normalise(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None], meta)
        _, dense = model.segment(batch)
        target = torch.from_numpy(np.pad(image.target, ((0, ph), (0, pw))))[None, None].float()
        ignore = torch.from_numpy(np.pad(image.ignore, ((0, ph), (0, pw)), constant_values=True))[None, None].float()
        label = dense_patch_labels(target, ignore, meta.patch_size, min_center_px)[0].numpy()
        score = torch.softmax(dense, dim=1)[0, meta.classes.index("crack")].numpy()
        keep = label != IGNORE
        probs.append(score[keep])
        labels.append(label[keep])
    if not probs:
        return meta.threshold
    return round(choose_threshold(np.concatenate(probs), np.concatenate(labels)), 4)


def measure_margin(model: CrackNet, meta: ModelMeta, images: list[MaskImage], core: int = 128, tol: float = 0.01) -> int:
    """Context (px, multiple of 32) a window needs each side so its centre's probabilities stop changing.

    For each image, the centre ``core`` is predicted with a growing margin and compared
    with the prediction from the widest context available; the answer is the smallest
    margin whose largest difference stays under ``tol`` on every image.
    """
    widest = 0
    for image in images:
        h, w = image.target.shape
        if min(h, w) < core + 2 * 32:
            continue
        full = probability_map(model, meta, image.image)
        top, left = (h - core) // 2 // 32 * 32, (w - core) // 2 // 32 * 32
        reference = full[top : top + core, left : left + core]
        needed = None
        for margin in range(0, min(top, left) + 1, 32):
            crop = image.image[top - margin : top + core + margin, left - margin : left + core + margin]
            prob = probability_map(model, meta, crop)[margin : margin + core, margin : margin + core]
            if float(np.abs(prob - reference).max()) < tol:
                needed = margin
                break
        widest = max(widest, needed if needed is not None else min(top, left))
    return int(widest)


# --- the fit ---------------------------------------------------------------------------------


def lr_at(step: int, total: int, warmup: int = 50) -> float:
    """Warm-up then cosine to 2 % within a phase: a pure function of the step."""
    if total <= 0:
        return 0.0
    if step < warmup:
        return (step + 1) / warmup
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def early_stop_state(history: list[dict[str, Any]]) -> tuple[int, int]:
    """(step of the best validation pixel F1, checkpoints since it) from the logged records.

    Derived from the history alone, so a resumed run stops exactly where an uninterrupted one would.
    """
    best_step, best_f1, stale = 0, -1.0, 0
    for record in history:
        f1 = (record.get("val") or {}).get("f1") or 0.0
        if f1 > best_f1:
            best_step, best_f1, stale = int(record["step"]), f1, 0
        else:
            stale += 1
    return best_step, stale


@dataclass
class MaskFitResult:
    checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def initial_network(config: MaskTrainConfig, log: Log) -> tuple[CrackNet, ModelMeta, str]:
    """The trunk and patch head to start from, with a fresh decoder; says which."""
    if config.init in ("shipped",):
        source = Path(config.init_path) if config.init_path else SHIPPED_MODEL
        trained, meta = load_checkpoint(source)
        if config.keep_decoder and meta.has_mask:
            # Fine-tuning a mask model: everything it learned is the starting point, its thresholds too.
            log(f"initialisation: all of {source.name} (sha256 {file_sha256(source)[:12]}), decoder included")
            return trained, meta, f"{source.name} (sha256 {file_sha256(source)[:12]}), decoder included"
        net = build_model(len(meta.classes), config.decoder_channels, meta.patch_size)
        trunk_state = {k: v for k, v in trained.state_dict().items() if not k.startswith(("fpn.", "mask_head."))}
        net.load_state_dict(trunk_state, strict=False)
        detail = f"trunk and patch head of {source.name} (sha256 {file_sha256(source)[:12]}, {meta.provenance.get('init', '?')} init)"
        meta = ModelMeta(patch_size=meta.patch_size, threshold=meta.threshold, mean=meta.mean, std=meta.std)
    else:
        net = build_model(2, config.decoder_channels)
        meta = ModelMeta()
        path = find_imagenet_weights(config.init_path) if config.init in ("imagenet", "auto") else None
        if path is not None:
            load_imagenet_backbone(net, path)
            detail = f"torchvision ImageNet weights {path.name} (sha256 verified)"
        else:
            detail = "random init"
    meta.heads = ("patch", "mask")
    meta.decoder_channels = config.decoder_channels
    log(f"initialisation: {detail}")
    return net, meta, detail


def mining_rule(config: MaskTrainConfig, meta: ModelMeta) -> MiningRule:
    """The config's mining rule at the start model's own calibrated mask threshold (what the product would draw)."""
    schedule = config.schedule
    return MiningRule(threshold=float(meta.mask_threshold), clearance_px=schedule.mining_clearance_px,
                      min_component_px=schedule.mining_min_px, min_elongation=schedule.mining_min_elongation)


def mine_hard_negatives(config: MaskTrainConfig, net: CrackNet, meta: ModelMeta, images: list[MaskImage],
                        progress: bool, log: Log) -> tuple[list[MaskImage], dict[str, Any]]:
    """The start model's false cracks on the training images as hard negatives (`mining.py`), cached in the run's folder."""
    if not meta.has_mask:
        raise ConfigError(config.init_path, "mined_negatives needs a start model with a mask decoder",
                          "start from a mask model (init_path), or set schedule.mined_negatives: 0")
    source = Path(config.init_path) if config.init_path else SHIPPED_MODEL
    rule = mining_rule(config, meta)
    net.eval()
    sources = set(config.schedule.mining_sources) if config.schedule.mining_sources is not None else None
    images, summary = mine(images, lambda rgb: probability_map(net, meta, rgb), file_sha256(source), rule,
                           Path(config.out_dir) / "mined", sources, progress)
    log(f"mining with {source.name} at threshold {rule.threshold}: network run on {summary.computed} training images, "
        f"{summary.cached} from the cache")
    for line in summary.lines():
        log(line)
    return images, summary.as_dict()


def _freeze_batchnorm(model: nn.Module) -> None:
    """Trunk BatchNorm keeps its statistics: batches of 8 crops would only add noise to them."""
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d) and not name.startswith("mask_head"):
            module.eval()


def fit_mask(config: MaskTrainConfig, resume: bool = False, progress: bool = True, log: Log = print,
             images: list[MaskImage] | None = None, ship: bool = False) -> MaskFitResult:
    """Train, checkpointing every ``checkpoint_every`` steps; calibrate; report held-out figures.

    ``ship``: store the final weights in fp16 (how the packaged model is stored; figures are the fp32 weights').
    """
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.workers)
    schedule = config.schedule
    images = images if images is not None else load_images(config, progress)
    val = [im for im in images if im.split == "val" and im.pixel_truth]
    test = [im for im in images if im.split == "test" and im.pixel_truth]
    log(f"images: train {sum(im.split == 'train' for im in images)}, validation {len(val)}, test {len(test)}")
    net, meta, init_detail = initial_network(config, log)
    mining = None
    if schedule.mined_negatives > 0:
        images, mining = mine_hard_negatives(config, net, meta, images, progress, log)
    sampler = StepSampler(images, config)
    optimizer = torch.optim.AdamW(
        [{"params": net.decoder_parameters()}, {"params": net.trunk_parameters() + net.head_parameters()}],
        lr=schedule.lr, weight_decay=schedule.weight_decay,
    )
    total = schedule.decoder_steps + schedule.joint_steps
    history: list[dict[str, Any]] = []
    start, spent = 0, 0.0
    state_path, last_path = out_dir / "state.pt", out_dir / "last.safetensors"
    if resume and state_path.exists() and last_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        trained, _ = load_checkpoint(last_path)
        net.load_state_dict(trained.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        start, spent, history = int(state["step"]), float(state["seconds"]), json.loads(state["history"])
        init_detail = state.get("init_detail", init_detail)  # what the run started from, not what that path holds now
        log(f"resumed at step {start} of {total}")
    best_path = out_dir / "best.safetensors"
    if schedule.patience is not None and start == 0:
        # The starting weights are a candidate too: a fine-tune that only hurts keeps them.
        net.eval()
        threshold, val_scores = calibrate(net, meta, val, config.tolerance_px) if val else (0.5, {})
        meta.mask_threshold = threshold
        history.append({"step": 0, "phase": "start", "loss": None, "val": val_scores, "seconds": 0.0})
        save_checkpoint(best_path, net, meta)
        log(json.dumps(history[-1]))
    started = time.time() - spent
    running = 0.0
    bar = tqdm(range(start, total), desc="mask training", unit="step", disable=not progress, initial=start, total=total)
    for step in bar:
        joint = step >= schedule.decoder_steps
        phase_step, phase_total = (step - schedule.decoder_steps, schedule.joint_steps) if joint else (step, schedule.decoder_steps)
        factor = lr_at(phase_step, phase_total)
        optimizer.param_groups[0]["lr"] = schedule.lr * factor
        optimizer.param_groups[1]["lr"] = schedule.lr * schedule.trunk_lr_factor * factor if joint else 0.0
        for p in net.trunk_parameters() + net.head_parameters():
            p.requires_grad_(joint)
        net.train()
        _freeze_batchnorm(net)
        images_u8, target, ignore, negative = sampler.batch(step)
        batch = normalise(images_u8, meta)
        if joint:
            features = net.trunk(batch)
        else:
            with torch.no_grad():
                features = net.trunk(batch)
        logits = net.mask_logits(features)
        loss = mask_loss(logits, target, ignore, schedule.dice_weight, negative, schedule.negative_weight)
        if joint and schedule.patch_loss_weight > 0:
            labels = dense_patch_labels(target, ignore, meta.patch_size, config.labels.min_center_crack_px)
            if (labels != IGNORE).any():
                dense = net.dense_logits(features[-1])
                loss = loss + schedule.patch_loss_weight * F.cross_entropy(dense, labels, ignore_index=IGNORE, label_smoothing=0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running = 0.98 * running + 0.02 * float(loss.detach()) if step > start else float(loss.detach())
        bar.set_postfix(loss=f"{running:.4f}", phase="joint" if joint else "decoder")
        done = step + 1
        if done % schedule.checkpoint_every == 0 or done == total:
            net.eval()
            threshold, val_scores = calibrate(net, meta, val, config.tolerance_px) if val else (0.5, {})
            record = {"step": done, "phase": "joint" if joint else "decoder", "loss": round(running, 5),
                      "val": val_scores, "seconds": round(time.time() - started, 1)}
            history.append(record)
            meta.mask_threshold = threshold
            save_checkpoint(last_path, net, meta)
            with atomic_write(state_path) as tmp:
                torch.save({"step": done, "seconds": time.time() - started, "optimizer": optimizer.state_dict(),
                            "history": json.dumps(history), "init_detail": init_detail}, tmp)
            log(json.dumps(record))  # after the checkpoint: what is logged can be resumed from
            if schedule.patience is not None:
                best_step, stale = early_stop_state(history)
                if best_step == done:
                    save_checkpoint(best_path, net, meta)
                if stale >= schedule.patience:
                    log(f"early stop at step {done}: validation pixel F1 has not improved for {stale} checkpoints "
                        f"(best at step {best_step})")
                    break
    bar.close()
    if schedule.patience is not None and best_path.exists():
        best_step, _ = early_stop_state(history)
        net.load_state_dict(load_checkpoint(best_path)[0].state_dict())
        log(f"kept the weights of step {best_step} (best validation pixel F1)")
    net.eval()
    last = history[-1] if history else {}
    if schedule.patience is None and last.get("step") == total and last.get("val"):
        # The last checkpoint calibrated these very weights: a second pass over the validation images would
        # give the same threshold (and cost as much as a few hundred training steps).
        threshold, val_scores = float(last["val"]["threshold"]), last["val"]
    else:
        threshold, val_scores = calibrate(net, meta, val, config.tolerance_px) if val else (0.5, {})
    meta.mask_threshold = threshold
    meta.threshold = calibrate_patch_threshold(net, meta, val, config.labels.min_center_crack_px)
    meta.min_margin_px = max(32, measure_margin(net, meta, val[:12]))
    log(f"mask threshold {threshold} (validation pixel F1@{config.tolerance_px}px {val_scores.get('f1')}); "
        f"patch threshold {meta.threshold}; window margin {meta.min_margin_px} px")
    sets: dict[str, Any] = {}
    for split, members in (("val", val), ("test", test)):
        for source in sorted({im.source for im in members}):
            chosen = [im for im in members if im.source == source]
            sets[f"{split}/{source}"] = mask_metrics(net, meta, chosen, threshold)
    metrics = {"mask_threshold": threshold, "patch_threshold": meta.threshold, "min_margin_px": meta.min_margin_px, "sets": sets, "history": history,
               "train_seconds": round(time.time() - started, 1), "init": init_detail, "steps": total}
    if mining is not None:
        metrics["mining"] = mining
    meta.provenance = {
        "init": "shipped" if config.init == "shipped" else ("imagenet" if "ImageNet" in init_detail else "scratch"),
        "init_detail": init_detail, "task": MASK_TASK, "schedule": schedule.model_dump(mode="json"),
        "sources": [{"name": s.name, "kind": s.kind, "role": s.role} for s in config.sources],
        "seed": config.seed, "train_seconds": metrics["train_seconds"], "torch": torch.__version__,
        "mask_metrics": {k: {m: v[m] for m in v if m != "images"} for k, v in sets.items()},
    }
    final = out_dir / "model.safetensors"
    save_checkpoint(final, net, meta, half=ship)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    log(f"wrote {final}")
    return MaskFitResult(final, metrics, history)


def scale_study(config: MaskTrainConfig, model_path: Path | None, scales: list[float], progress: bool = True) -> dict[str, Any]:
    """Accuracy against cost of processing at other resolutions, on the validation images (per source).

    Cost is the network's seconds relative to scale 1 (measured here, same images).
    """
    path = Path(model_path) if model_path else SHIPPED_MODEL
    model, meta = load_checkpoint(path)
    torch.set_num_threads(config.workers)
    images = [im for im in load_images(config, progress, ("val",)) if im.pixel_truth]
    rows: dict[str, Any] = {}
    for scale in scales:
        started = time.perf_counter()
        row = {"all": mask_metrics(model, meta, images, meta.mask_threshold, scale=scale)}
        seconds = time.perf_counter() - started
        for source in sorted({im.source for im in images}):
            row[source] = mask_metrics(model, meta, [im for im in images if im.source == source], meta.mask_threshold,
                                       scale=scale)
        rows[str(scale)] = {"seconds": round(seconds, 2), "sets": row}
    base = rows.get("1.0", rows.get("1", {})).get("seconds")
    for row in rows.values():
        row["relative_cost"] = round(row["seconds"] / base, 2) if base else None
    return {"model": str(path), "threshold": meta.mask_threshold, "images": len(images), "scales": rows}


def evaluate_mask_checkpoint(config: MaskTrainConfig, model_path: Path | None = None, progress: bool = True,
                             by_group: tuple[str, ...] = ()) -> dict[str, Any]:
    """A checkpoint's pixel and centreline figures on a config's validation and test images, at its own threshold.

    A mask model is scored on its per-pixel probability at ``mask_threshold``; a patch
    classifier on its patch scores blended into a heatmap (``dense`` mode) at ``threshold``,
    so the old and new shipped models are compared on the same pixels. ``by_group``: for
    these sources also the figures of each group (map or photo, the source's ``group_regex``)
    under ``groups["<split>/<source>"]``; the network runs once per image either way.
    """
    path = Path(model_path) if model_path else SHIPPED_MODEL
    model, meta = load_checkpoint(path)
    torch.set_num_threads(config.workers)
    threshold = meta.mask_threshold if meta.has_mask else meta.threshold
    unknown = set(by_group) - {s.name for s in config.sources}
    if unknown:
        raise ConfigError(None, f"by-group source {', '.join(sorted(unknown))} is not in the config",
                          f"name one of: {', '.join(s.name for s in config.sources)}")
    images = [im for im in load_images(config, progress, ("val", "test")) if im.pixel_truth]
    counts = [image_counts(model, meta, im, threshold)
              for im in tqdm(images, desc="scoring", unit="img", disable=not progress, leave=False)]
    sets: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    for split in ("val", "test"):
        for source in sorted({im.source for im in images if im.split == split}):
            members = [(im, c) for im, c in zip(images, counts) if im.split == split and im.source == source]
            sets[f"{split}/{source}"] = summarise([c for _, c in members])
            if source in by_group:
                groups[f"{split}/{source}"] = {g: summarise([c for im, c in members if im.group == g])
                                               for g in sorted({im.group for im, _ in members})}
    out = {"model": str(path), "sha256": file_sha256(path), "heads": list(meta.heads), "threshold": threshold, "sets": sets}
    if by_group:
        out["groups"] = groups
    seen = trained_on_test_sources(config, meta)
    if seen:
        out["not_held_out"] = seen
    return out


def trained_on_test_sources(config: MaskTrainConfig, meta: ModelMeta) -> list[str]:
    """Sources the config holds out whole (``role: test``) that the model trained on (its provenance).

    configs/mask.yaml keeps uavcrack_bridges as a test source, while the shipped model trained on
    its training maps (configs/mask_bridges.yaml): that config's figures for it are not held out.
    """
    return sorted(s.name for s in config.sources if s.role == "test" and s.name in meta.trained_on)
