"""Labelled data sources: which images a source holds, what labels them, and which split each belongs to.

A source (`config.DataSource`: a folder of images with masks, class folders, YOLO boxes,
or a user's annotated survey) is listed into `ImageItem`s. The split is a seeded hash
of each image's *group* (the photo it was cut from), never of a patch, so the same
image is held out by training, by evaluation and by the export's parity check alike.
A user's survey with a single annotated raster is the one exception: it has no raster
to hold out, so a strip of it is (`strip_parts`). Here, below both `models` and
`training`, because both read the held-out images.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from survey_cracks.config import DataSource
from survey_cracks.errors import DataSourceError
from survey_cracks.io.annotations import find_annotation
from survey_cracks.io.discover import rasters_in
from survey_cracks.io.raster import RASTER_SUFFIXES, inspect_raster


def yolo_to_pixel_boxes(lines: list[str], width: int, height: int) -> np.ndarray:
    """YOLO ``class cx cy w h`` (normalised) -> (N, 4) pixel boxes; raises ValueError if malformed."""
    boxes = []
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            raise ValueError(f"line {number}: expected 'class cx cy w h', got {line.strip()!r}")
        _, cx, cy, w, h = (float(p) for p in parts)
        if not (0 <= cx <= 1 and 0 <= cy <= 1 and 0 < w <= 1 and 0 < h <= 1):
            raise ValueError(f"line {number}: values must be normalised to 0..1")
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


@dataclass(frozen=True)
class ImageItem:
    """One source image and how its patches are labelled."""

    source: str
    path: Path
    split: str
    mask: Path | None = None
    boxes: tuple[tuple[float, float, float, float], ...] | None = None
    whole_label: int | None = None
    survey: bool = False
    # Share of the raster along its longer side, (start, end) in 0..1: only patch windows lying
    # wholly inside it are cut. Set when one raster is split into a training part and a held-out strip.
    part: tuple[float, float] | None = None

    @property
    def name(self) -> str:
        if self.part is None:
            return f"{self.source}/{self.path.name}"
        return f"{self.source}/{self.path.name}[{self.part[0]:.2f}-{self.part[1]:.2f} of its longer side]"


def split_of(group: str, source: DataSource, seed: int) -> str:
    if source.role == "test":
        return "test"
    digest = hashlib.sha256(f"{seed}:{source.name}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < source.split.test:
        return "test"
    if u < source.split.test + source.split.val:
        return "val"
    return "train"


def survey_splits(rasters: list[Path], source: DataSource, seed: int) -> list[str]:
    """A user's survey has few rasters: hold out a fixed share of groups (at least one when there are two).

    With a single group (one annotated raster) no raster can be held out: `list_items`
    then splits the raster itself (`strip_parts`).
    """
    if source.role == "test":
        return ["test"] * len(rasters)
    groups = sorted({group_of(r.stem, source) for r in rasters},
                    key=lambda g: hashlib.sha256(f"{seed}:{source.name}:{g}".encode()).hexdigest())
    n_val = min(len(groups) - 1, max(1 if len(groups) > 1 and source.split.val > 0 else 0, round(len(groups) * source.split.val)))
    n_test = min(len(groups) - 1 - n_val, round(len(groups) * source.split.test))
    split_of_group = {g: "val" for g in groups[:n_val]}
    split_of_group.update({g: "test" for g in groups[n_val : n_val + n_test]})
    return [split_of_group.get(group_of(r.stem, source), "train") for r in rasters]


def strip_parts(val_fraction: float) -> dict[str, tuple[float, float]]:
    """Train / val shares of a raster along its longer side: the last ``val_fraction`` is held out.

    Patches are cut inside each part only (`_patches_of`), so no validation patch shares
    a pixel with a training patch; windows that would straddle the cut are not used.
    """
    cut = 1.0 - val_fraction
    return {"train": (0.0, cut), "val": (cut, 1.0)}


def group_of(stem: str, source: DataSource) -> str:
    """The photo or map an image was cut from: the first group of ``group_regex`` that matched.

    "First that matched" lets one regex hold alternatives for differently named tiles
    (uavcrack_bridges: ``ck…`` map tiles and dated photo crops).
    """
    if source.group_regex:
        match = re.match(source.group_regex, stem)
        if match:
            return next((g for g in match.groups() if g is not None), stem)
    return stem


def drop_duplicates(items: list[ImageItem]) -> list[ImageItem]:
    """Held-out items byte-identical to a training item or to an earlier held-out one, left out.

    A source that copied one tile into several splits (uavcrack_bridges: 130 of 2,500
    files) would otherwise score the model on images it trained on, or count one tile twice.
    Training items are all kept.
    """
    def digest(item: ImageItem) -> str:
        return hashlib.sha256(item.path.read_bytes()).hexdigest()

    seen = {digest(item) for item in items if item.split == "train"}
    kept: list[ImageItem] = []
    for item in items:
        if item.split != "train":
            key = digest(item)
            if key in seen:
                continue
            seen.add(key)
        kept.append(item)
    return kept


def _images_in(folder: Path, source: DataSource) -> list[Path]:
    if not folder.is_dir():
        raise DataSourceError(folder, f"data source '{source.name}': folder not found", "check `root` in the train config")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
    if not images:
        raise DataSourceError(folder, f"data source '{source.name}': no images", "check `root`/`images` in the train config")
    return images


def _excluded_stems(source: DataSource) -> set[str]:
    """Stems left out by exclude_groups / include_groups (groups from the group CSV)."""
    if not source.exclude_groups and not source.include_groups:
        return set()
    if not source.group_csv:
        raise DataSourceError(source.root, f"data source '{source.name}': exclude/include_groups need group_csv")
    table = source.root / source.group_csv
    try:
        with open(table, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise DataSourceError(table, "group CSV not found", "check `group_csv` in the train config") from None
    if rows and (source.group_column not in rows[0] or "stem" not in rows[0]):
        raise DataSourceError(table, f"group CSV needs columns 'stem' and '{source.group_column}'")
    excluded = {r["stem"] for r in rows if r[source.group_column] in set(source.exclude_groups)}
    if source.include_groups:
        excluded |= {r["stem"] for r in rows if r[source.group_column] not in set(source.include_groups)}
    return excluded


def list_items(source: DataSource, seed: int) -> list[ImageItem]:
    """Every image of a source with its split and label evidence; clear errors for malformed data."""
    root = source.root
    if not root.exists():
        raise DataSourceError(root, f"data source '{source.name}' not found", "check `root` in the train config (is ../shared present?)")
    excluded = _excluded_stems(source)
    items: list[ImageItem] = []
    if source.kind == "mask_folder":
        for image in _images_in(root / source.images, source):
            if image.stem in excluded:
                continue
            mask = root / source.masks / f"{image.stem}.png"
            if not mask.exists():
                raise DataSourceError(mask, f"mask missing for {image.name}", "every image needs <stem>.png in the masks folder")
            items.append(ImageItem(source.name, image, split_of(group_of(image.stem, source), source, seed), mask=mask))
    elif source.kind == "class_folders":
        for label, folder in ((1, "crack"), (0, "no_crack")):
            for image in _images_in(root / folder, source):
                if image.stem in excluded:
                    continue
                split = split_of(group_of(f"{folder}/{image.stem}", source), source, seed)
                items.append(ImageItem(source.name, image, split, whole_label=label))
    elif source.kind == "yolo_boxes":
        for image in _images_in(root / source.images, source):
            if image.stem in excluded:
                continue
            label_file = root / source.labels / f"{image.stem}.txt"
            lines = label_file.read_text().splitlines() if label_file.exists() else []
            info = inspect_raster(image)
            try:
                boxes = yolo_to_pixel_boxes(lines, info.width, info.height)
            except ValueError as exc:
                raise DataSourceError(label_file, f"malformed YOLO label ({exc})", "fix or remove the file") from None
            split = split_of(group_of(image.stem, source), source, seed)
            items.append(ImageItem(source.name, image, split, boxes=tuple(map(tuple, boxes.tolist()))))
    elif source.kind == "survey":
        rasters = [r for r in rasters_in(root) if find_annotation(r) is not None]
        if not rasters:
            raise DataSourceError(root, f"survey source '{source.name}' has no annotated rasters", "add X.cracks.geojson/gpkg or X.mask.png beside X.tif")
        single = len({group_of(r.stem, source) for r in rasters}) == 1
        if single and source.role != "test" and source.split.val > 0:
            for raster in rasters:
                for split, part in strip_parts(source.split.val).items():
                    items.append(ImageItem(source.name, raster, split, survey=True, part=part))
        else:
            for raster, split in zip(rasters, survey_splits(rasters, source, seed)):
                items.append(ImageItem(source.name, raster, split, survey=True))
    return drop_duplicates(items) if source.drop_duplicates else items
