"""Is an export as good as the PyTorch model? Scores and F1 of both on real, labelled images.

An fp32 export must give PyTorch's scores (within `PARITY_TOLERANCE`); an fp16 or int8
export is allowed to move scores but not accuracy, so it is judged by what a user sees:
the pixel F1 at 2 px (the decoder at its mask threshold) and the patch F1 (the patch
head at its threshold, every 128 px patch at a 32 px step labelled from the mask by the
classifier's rule) of the export beside PyTorch's own, on the same images.

The images are the validation split of the mask model's pixel-annotated training
sources (``configs/mask.yaml``: DeepCrack, CrackForest, masonry; needs ``../shared/data``):
never trained on, and labelled per pixel. Without them the repository's sample road scans
and their masks stand in, and in an installed package the same procedural scenes drawn
by `survey_cracks.synthetic`; the report says which.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from survey_cracks.config import LabelRule
from survey_cracks.evaluation.pixel_metrics import pixel_scores, tolerant_counts
from survey_cracks.models.checkpoint import ModelMeta
from survey_cracks.models.labels import dense_patch_labels

REPOSITORY = Path(__file__).resolve().parents[2]
MASK_CONFIG = REPOSITORY / "configs" / "mask.yaml"
SAMPLE_SCANS = REPOSITORY / "sample_surveys" / "road_scans"
PARITY_TOLERANCE = 1e-3  # an fp32 export further than this from PyTorch on any score is broken
F1_LOSS_POINTS = 1.0  # an fp16/int8 export losing more F1 points than this is reported loudly
TOLERANCE_PX = 2  # pixel F1 tolerance, as the model card's headline figure

Maps = tuple[np.ndarray | None, np.ndarray]  # (crack probability (H, W) or None, patch scores (h, w))


@dataclass(frozen=True)
class LabelledImage:
    """A real image (RGB uint8) with its crack mask (bool), for checking exports."""

    name: str
    rgb: np.ndarray
    truth: np.ndarray


@dataclass(frozen=True)
class ExportCheck:
    """An export beside the PyTorch model on the same labelled images."""

    images: str  # which images, in words
    image_count: int
    max_abs_difference: float  # over every per-pixel and patch probability
    mean_abs_difference: float
    pixel_label_agreement: float | None  # share of pixels on the same side of the mask threshold
    patch_label_agreement: float  # share of patches on the same side of the patch threshold
    pixel_f1_pytorch: float | None  # at TOLERANCE_PX, the decoder at its mask threshold
    pixel_f1_export: float | None
    patch_f1_pytorch: float | None
    patch_f1_export: float | None
    f1_loss_points: float  # the larger drop of the two F1s, in points (100 x F1); negative = a gain
    f1_loss_over_limit: bool  # lost more than F1_LOSS_POINTS

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pixel_f1_tolerance_px": TOLERANCE_PX, "f1_loss_limit_points": F1_LOSS_POINTS}


def _evenly(items: list[Any], count: int | None) -> list[Any]:
    if count is None or count >= len(items):
        return items
    keep = np.unique(np.linspace(0, len(items) - 1, max(count, 1)).round().astype(int))
    return [items[i] for i in keep]


def _read(image: Path, mask: Path, name: str) -> LabelledImage:
    rgb = cv2.imread(str(image), cv2.IMREAD_COLOR)
    truth = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE)
    if rgb is None or truth is None or truth.shape != rgb.shape[:2]:
        from survey_cracks.errors import DataSourceError

        raise DataSourceError(image, "image or its mask unreadable, or of different sizes", "check the data folder")
    return LabelledImage(name, cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB), truth > 127)


def validation_images(count: int | None = None) -> tuple[list[LabelledImage], str]:
    """The validation images of the mask model's pixel-annotated sources, ``count`` of them evenly spread
    over the sorted list (all when None), and where they come from; the sample road scans without ../shared."""
    from survey_cracks.config import MaskTrainConfig, load_config
    from survey_cracks.io.sources import list_items

    sources = []
    if MASK_CONFIG.is_file():
        config = load_config(MaskTrainConfig, MASK_CONFIG)
        sources = [s for s in config.sources if s.kind == "mask_folder" and s.role != "test" and s.root.is_dir()]
    if sources:
        items = sorted((item for source in sources for item in list_items(source, config.seed)
                        if item.split == "val" and item.mask is not None), key=lambda item: item.name)
        chosen = _evenly(items, count)
        names = ", ".join(sorted({item.source for item in chosen}))
        return ([_read(item.path, item.mask, item.name) for item in chosen],  # type: ignore[arg-type]
                f"{len(chosen)} of the {len(items)} validation images of {names} (configs/mask.yaml)")
    scans = _evenly(sorted(SAMPLE_SCANS.glob("*.jpg")), count)
    if scans:
        return ([_read(s, s.with_name(f"{s.stem}.mask.png"), s.name) for s in scans],
                f"{len(scans)} sample road scans with masks (procedural; ../shared/data absent)")
    from survey_cracks.synthetic import render_scene  # an installed package: no repository beside it

    scenes = [render_scene(480, 640, seed=seed, surface="asphalt" if seed % 2 else "concrete") for seed in range(6)]
    scenes = _evenly(scenes, count)
    return ([LabelledImage(f"scene{i}", rgb, mask > 0) for i, (rgb, mask) in enumerate(scenes)],
            f"{len(scenes)} procedural road scans (survey_cracks.synthetic; no ../shared/data, no repository)")


def patch_labels(truth: np.ndarray, patch: int, min_center_px: int | None = None) -> np.ndarray:
    """The classifier's label of every ``patch`` px patch at a 32 px step of a (padded) mask: 1 crack, 0 clean,
    -100 neither (see `models.labels.dense_patch_labels`)."""
    target = torch.from_numpy(truth.astype(np.float32))[None, None]
    rule = min_center_px if min_center_px is not None else LabelRule().min_center_crack_px
    return dense_patch_labels(target, torch.zeros_like(target), patch, rule)[0].numpy()


def pixel_f1_of(counts: np.ndarray) -> float | None:
    """Pixel F1 from summed (tp, fp, fn, tp_truth): 0 where cracks are annotated and none predicted, None where
    none are annotated."""
    scores = pixel_scores(counts)
    if scores["f1"] is None and scores["annotated_px"]:
        return 0.0  # cracks annotated, none predicted
    return scores["f1"]  # type: ignore[return-value]


class _Tally:
    """Counts of one model over the images: pixel (tp, fp, fn, tp_truth) and patch scores with labels."""

    def __init__(self) -> None:
        self.pixels = np.zeros(4, np.int64)
        self.patch_scores: list[np.ndarray] = []
        self.patch_labels: list[np.ndarray] = []

    def pixel_f1(self, has_mask: bool) -> float | None:
        return pixel_f1_of(self.pixels) if has_mask else None

    def patch_f1(self, threshold: float) -> float | None:
        scores, labels = np.concatenate(self.patch_scores), np.concatenate(self.patch_labels)
        tp = int(np.sum((scores >= threshold) & (labels == 1)))
        fp, fn = int(np.sum((scores >= threshold) & (labels == 0))), int(np.sum((scores < threshold) & (labels == 1)))
        return round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None


def model_f1(maps: Callable[[np.ndarray], Maps], meta: ModelMeta, images: list[LabelledImage]) -> tuple[float | None, float | None]:
    """(pixel F1 at 2 px, patch F1) of one model over ``images``; ``maps`` as `edge.EdgeModel.maps`."""
    tally = _Tally()
    for image in images:
        _add(tally, maps(image.rgb), image, meta)
    return tally.pixel_f1(meta.has_mask), tally.patch_f1(meta.threshold)


def _add(tally: _Tally, maps: Maps, image: LabelledImage, meta: ModelMeta) -> None:
    from survey_cracks.edge.runtime import pad_to_stride

    mask, patches = maps
    if mask is not None:
        tally.pixels += tolerant_counts(mask >= meta.mask_threshold, image.truth, TOLERANCE_PX)
    labels = patch_labels(pad_to_stride(image.truth.astype(np.uint8), meta.patch_size) > 0, meta.patch_size)
    keep = labels != -100
    tally.patch_scores.append(patches[keep])
    tally.patch_labels.append(labels[keep])


class _Agreement:
    """Score differences and same-side-of-the-threshold counts of one output over the images."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.worst, self.total, self.same, self.count = 0.0, 0.0, 0, 0

    def add(self, got: np.ndarray | None, expected: np.ndarray | None) -> None:
        if got is None or expected is None:
            return
        difference = np.abs(got.astype(np.float64) - expected.astype(np.float64))
        self.worst = max(self.worst, float(difference.max()))
        self.total += float(difference.sum())
        self.same += int(np.count_nonzero((got >= self.threshold) == (expected >= self.threshold)))
        self.count += difference.size

    def agreement(self) -> float | None:
        return round(self.same / self.count, 6) if self.count else None


def check_export(exported: Callable[[np.ndarray], Maps], reference: Callable[[np.ndarray], Maps], meta: ModelMeta,
                 images: list[LabelledImage], origin: str) -> ExportCheck:
    """Run both on every image and compare scores, labels and F1 (see `ExportCheck`)."""
    ours, theirs = _Tally(), _Tally()
    pixel, patch = _Agreement(meta.mask_threshold), _Agreement(meta.threshold)
    for image in images:
        got, expected = exported(image.rgb), reference(image.rgb)
        _add(ours, got, image, meta)
        _add(theirs, expected, image, meta)
        pixel.add(got[0], expected[0])
        patch.add(got[1], expected[1])
    f1s = [(ours.pixel_f1(meta.has_mask), theirs.pixel_f1(meta.has_mask)),
           (ours.patch_f1(meta.threshold), theirs.patch_f1(meta.threshold))]
    losses = [100.0 * (ref - got) for got, ref in f1s if got is not None and ref is not None]
    loss = round(max(losses), 2) if losses else 0.0
    return ExportCheck(
        images=origin, image_count=len(images), max_abs_difference=round(max(pixel.worst, patch.worst), 8),
        mean_abs_difference=round((pixel.total + patch.total) / max(pixel.count + patch.count, 1), 8),
        pixel_label_agreement=pixel.agreement(), patch_label_agreement=patch.agreement() or 0.0,
        pixel_f1_pytorch=f1s[0][1], pixel_f1_export=f1s[0][0], patch_f1_pytorch=f1s[1][1], patch_f1_export=f1s[1][0],
        f1_loss_points=loss, f1_loss_over_limit=loss > F1_LOSS_POINTS,
    )


__all__ = ["ExportCheck", "F1_LOSS_POINTS", "LabelledImage", "PARITY_TOLERANCE", "check_export", "model_f1", "pixel_f1_of",
           "patch_labels", "validation_images"]
