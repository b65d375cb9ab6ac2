"""Training patches from several kinds of labelled source.

Every source is cut with the same tiling (`survey_cracks.tiling`) and read with the
same reader (`survey_cracks.io.raster.read_patch`) as inference, so the model trains on
exactly the pixels it will later score. Images are assigned to train / val / test
by a seeded hash of their *group* (the photo they were cut from), never by patch.
A user's survey with a single annotated raster is the one exception: it has no
raster to hold out, so a strip of it is (see `io.sources.survey_splits`).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from rasterio.windows import Window
from tqdm import tqdm

from survey_cracks.config import DataSource, LabelRule, TilingConfig, TrainConfig
from survey_cracks.errors import DataSourceError
from survey_cracks.io.raster import inspect_raster, open_raster, read_patch
from survey_cracks.io.sources import ImageItem, list_items
from survey_cracks.outputs import atomic_write
from survey_cracks.tiling import patch_grid, window_size_for_ground
from survey_cracks.training.labels import label_from_boxes, label_from_mask

SPLITS = ("train", "val", "test")
CACHE_VERSION = 4  # 4: input-file fingerprints in the key; single-raster surveys split by strip


@dataclass
class PatchSet:
    """Labelled patches with where each came from."""

    patches: np.ndarray  # (N, P, P, 3) uint8
    labels: np.ndarray  # (N,) int8: 1 crack, 0 no crack
    source: np.ndarray  # (N,) int16 index into source_names
    split: np.ndarray  # (N,) int8 index into SPLITS
    image: np.ndarray  # (N,) int32 index into image_names
    source_names: list[str]
    image_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, keep: np.ndarray) -> "PatchSet":
        return PatchSet(
            self.patches[keep], self.labels[keep], self.source[keep], self.split[keep], self.image[keep],
            self.source_names, self.image_names,
        )

    def where(self, split: str, sources: list[str] | None = None, exclude: list[str] | None = None) -> np.ndarray:
        keep = self.split == SPLITS.index(split)
        if sources is not None:
            keep &= np.isin(self.source, [self.source_names.index(s) for s in sources if s in self.source_names])
        if exclude:
            keep &= ~np.isin(self.source, [self.source_names.index(s) for s in exclude if s in self.source_names])
        return np.flatnonzero(keep)

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        out: dict[str, dict[str, dict[str, int]]] = {}
        for s, name in enumerate(self.source_names):
            out[name] = {}
            for k, split in enumerate(SPLITS):
                sel = (self.source == s) & (self.split == k)
                if sel.any():
                    out[name][split] = {"crack": int(self.labels[sel].sum()), "no_crack": int((self.labels[sel] == 0).sum())}
        return out


def _patches_of(item: ImageItem, tiling: TilingConfig, rule: LabelRule) -> tuple[np.ndarray, np.ndarray]:
    """All labelled, non-ambiguous patches of one image."""
    info = inspect_raster(item.path)
    size = tiling.patch_size
    out_patches: list[np.ndarray] = []
    out_labels: list[int] = []
    with open_raster(item.path) as src:
        if item.whole_label is not None:
            side = max(info.width, info.height)
            rgb, _ = read_patch(src, info, Window(0, 0, side, side), size)
            return rgb[None], np.array([item.whole_label], dtype=np.int8)
        window_px = window_size_for_ground(size, tiling.ground_patch_m, info.pixel_size)
        stride = max(1, int(round(tiling.step * window_px / size)))
        grid = patch_grid(info.width, info.height, window_px, stride)
        offset = (0, 0)  # (row, col) of the grid's origin in the raster
        if item.part is not None:
            grid, offset = _part_grid(item, info.width, info.height, window_px, stride)
        truth = None
        mask_src = mask_info = None
        if item.mask is not None:
            mask_info = inspect_raster(item.mask)
            if (mask_info.width, mask_info.height) != (info.width, info.height):
                raise DataSourceError(item.mask, "mask size differs from its image", "masks must match image size")
            mask_src = open_raster(item.mask)
        elif item.survey:
            from survey_cracks.io.annotations import load_truth

            truth = load_truth(item.path, info)
        boxes = np.asarray(item.boxes or [], dtype=np.float64).reshape(-1, 4)
        try:
            for index in range(len(grid)):
                window = grid.window(index)
                if offset != (0, 0):
                    window = Window(window.col_off + offset[1], window.row_off + offset[0], window.width, window.height)
                rgb, valid = read_patch(src, info, window, size)
                if valid.mean() < tiling.min_valid_fraction:
                    continue
                if mask_src is not None and mask_info is not None:
                    mask_rgb, _ = read_patch(mask_src, mask_info, window, size)
                    label = label_from_mask(mask_rgb[..., 0] > 127, rule)
                elif truth is not None:
                    label = label_from_mask(truth.mask(window, (size, size)), rule)
                else:
                    x0, y0 = window.col_off, window.row_off
                    label = label_from_boxes((x0, y0, x0 + window.width, y0 + window.height), boxes, rule)
                if label is None:
                    continue
                out_patches.append(rgb)
                out_labels.append(label)
        finally:
            if mask_src is not None:
                mask_src.close()
    if not out_patches:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros(0, np.int8)
    return np.stack(out_patches), np.asarray(out_labels, dtype=np.int8)


def _part_grid(item: ImageItem, width: int, height: int, window_px: int, stride: int):
    """The patch grid of one part of a raster (``item.part``) and its (row, col) origin."""
    assert item.part is not None
    length = max(width, height)
    if length < 2 * window_px:
        folder = item.path.parent
        raise DataSourceError(
            folder,
            f"survey '{item.source}' has one annotated raster ({item.path.name}, {width} x {height} px), too small "
            f"to hold out a validation strip of a {window_px} px patch beside its training part",
            f"add a second annotated raster to {folder} (validation needs patches training never sees)",
        )
    # The cut, in pixels, leaves at least one whole window on each side of it.
    start, end = (min(max(round(f * length), window_px), length - window_px) if 0.0 < f < 1.0 else round(f * length)
                  for f in item.part)
    span = end - start
    if width >= height:
        return patch_grid(span, height, window_px, stride), (0, start)
    return patch_grid(width, span, window_px, stride), (start, 0)


def _work(args: tuple[ImageItem, TilingConfig, LabelRule]) -> tuple[np.ndarray, np.ndarray]:
    return _patches_of(*args)


def build_patch_set(config: TrainConfig, cache_dir: Path | None = None, progress: bool = True) -> PatchSet:
    """Cut every source into labelled patches (cached on disk by config hash)."""
    key = _cache_key(config)
    cache = cache_dir / f"patches-{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        data = np.load(cache, allow_pickle=False)
        names = json.loads(str(data["names"]))
        return PatchSet(data["patches"], data["labels"], data["source"], data["split"], data["image"], names["sources"], names["images"])

    items = [item for source in config.sources for item in list_items(source, config.seed)]
    source_names = [s.name for s in config.sources]
    image_names = [item.name for item in items]
    work = [(item, config.tiling, config.labels) for item in items]
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    bar = dict(total=len(work), desc="cutting patches", unit="img", disable=not progress)
    if len(work) < 64 or config.workers < 2:
        chunks = [_work(args) for args in tqdm(work, **bar)]
    else:
        # spawn, not fork: forking a process whose torch/GDAL threads hold locks can deadlock the child.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(config.workers, 4), mp_context=context) as pool:
            chunks = list(tqdm(pool.map(_work, work, chunksize=8), **bar))
    patches, labels, source, split, image = [], [], [], [], []
    for index, (item, (p, y)) in enumerate(zip(items, chunks)):
        patches.append(p)
        labels.append(y)
        source.append(np.full(len(y), source_names.index(item.source), np.int16))
        split.append(np.full(len(y), SPLITS.index(item.split), np.int8))
        image.append(np.full(len(y), index, np.int32))
    patch_set = PatchSet(
        np.concatenate(patches), np.concatenate(labels), np.concatenate(source), np.concatenate(split),
        np.concatenate(image), source_names, image_names,
    )
    patch_set = _cap_negatives(patch_set, config)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(cache) as tmp:  # the temp name keeps .npz: np.savez would add it
            np.savez(tmp, patches=patch_set.patches, labels=patch_set.labels, source=patch_set.source,
                     split=patch_set.split, image=patch_set.image,
                     names=json.dumps({"sources": source_names, "images": image_names}))
    return patch_set


def _cap_negatives(patch_set: PatchSet, config: TrainConfig) -> PatchSet:
    """Keep every crack patch; sample no-crack training patches down to a ratio (and per-source caps)."""
    rng = np.random.default_rng(config.seed)
    keep = np.ones(len(patch_set), dtype=bool)
    train = patch_set.split == SPLITS.index("train")
    for s, source in enumerate(config.sources):
        in_source = patch_set.source == s
        pos = np.flatnonzero(in_source & train & (patch_set.labels == 1))
        neg = np.flatnonzero(in_source & train & (patch_set.labels == 0))
        limit = int(np.ceil(max(len(pos), 1) * config.labels.negatives_per_positive))
        if len(neg) > limit:
            keep[rng.choice(neg, len(neg) - limit, replace=False)] = False
        if source.max_patches is not None:
            chosen = np.flatnonzero(in_source & keep)
            if len(chosen) > source.max_patches:
                keep[rng.choice(chosen, len(chosen) - source.max_patches, replace=False)] = False
    return patch_set.select(np.flatnonzero(keep))


def _source_files(source: DataSource) -> list[Path]:
    """Every file a source's patches and labels are read from (folders that do not exist are left out)."""
    root = source.root
    if source.kind == "survey":
        folders = [root]  # rasters, their annotations (X.cracks.*, X.mask.*) and sidecars (.aux.xml, .tfw)
    elif source.kind == "mask_folder":
        folders = [root / source.images, root / source.masks]
    elif source.kind == "class_folders":
        folders = [root / "crack", root / "no_crack"]
    else:
        folders = [root / source.images, root / source.labels]
    files = [Path(entry.path) for folder in folders if folder.is_dir() for entry in os.scandir(folder) if entry.is_file()]
    if source.group_csv:
        files.append(root / source.group_csv)
    return sorted(files)


def _fingerprint(files: list[Path]) -> str:
    """(path, size, mtime_ns) of each file: cheap, and changes whenever a file is edited or replaced."""
    digest = hashlib.sha256()
    for path in files:
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()


def _cache_key(config: TrainConfig) -> str:
    """Config and input files: editing an image, mask, annotation or label file gives a new key."""
    payload = json.dumps(
        {
            "v": CACHE_VERSION,
            "sources": [s.model_dump(mode="json") for s in config.sources],
            "files": [_fingerprint(_source_files(s)) for s in config.sources],
            "tiling": config.tiling.model_dump(mode="json"),
            "labels": config.labels.model_dump(mode="json"),
            "seed": config.seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def iter_batches(indices: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]
