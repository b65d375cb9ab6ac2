"""Shared fixtures: tiny rasters written in tmp_path, and a small real checkpoint.

The checkpoint is trained here, for a few seconds, on procedural crack patches
(survey_cracks.synthetic), through the same `fit` the product uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

os.environ.setdefault("OMP_NUM_THREADS", "2")
# Converted (ONNX) models go to a throw-away cache; Dask workers and CLI subprocesses inherit it.
os.environ.setdefault("SURVEY_CRACKS_CACHE", tempfile.mkdtemp(prefix="survey_cracks_test_cache_"))
# engine: auto measures every engine on first use per model (a minute); the tests' many tiny models run the heuristic
os.environ.setdefault("SURVEY_CRACKS_MEASURE_ENGINES", "0")


def run_in_fresh_python(code: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a new interpreter (this one has imported what the test checks is not imported); its stdout.

    ``env``: variables set for it on top of this process's environment.
    """
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY_PATCH = 64


def write_geotiff(
    path: Path,
    rgb: np.ndarray,
    crs: str | None = "EPSG:32631",
    transform=None,
    mask: np.ndarray | None = None,
    nodata: float | None = None,
    driver: str = "GTiff",
) -> Path:
    """Write an (H, W, bands) array; `mask` (bool, True = valid) becomes an internal mask band."""
    rgb = rgb if rgb.ndim == 3 else rgb[..., None]
    height, width, count = rgb.shape
    profile = {"driver": driver, "width": width, "height": height, "count": count, "dtype": rgb.dtype.name}
    if driver == "GTiff":
        profile.update(crs=crs, transform=transform or from_origin(500000.0, 5700000.0, 0.01, 0.01), nodata=nodata)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.moveaxis(rgb, -1, 0))
            if mask is not None:
                dst.write_mask(mask.astype(np.uint8) * 255)
    return path


@pytest.fixture(scope="session")
def synthetic_patch_set():
    """Labelled 64 px patches cut from procedural scenes with the product's labelling rule."""
    from survey_cracks.config import LabelRule
    from survey_cracks.synthetic import render_scene
    from survey_cracks.tiling import patch_grid
    from survey_cracks.training.data import PatchSet
    from survey_cracks.training.labels import label_from_mask

    rule = LabelRule(min_center_crack_px=12)
    patches, labels, split, image = [], [], [], []
    for seed in range(14):
        rgb, mask = render_scene(192, 256, seed=seed, surface="concrete" if seed % 2 else "asphalt")
        grid = patch_grid(256, 192, TINY_PATCH, TINY_PATCH // 2)
        for index in range(len(grid)):
            row, col = grid.offsets[index]
            label = label_from_mask(mask[row : row + TINY_PATCH, col : col + TINY_PATCH] > 0, rule)
            if label is None:
                continue
            patches.append(rgb[row : row + TINY_PATCH, col : col + TINY_PATCH])
            labels.append(label)
            split.append(0 if seed < 11 else 1)
            image.append(seed)
    n = len(labels)
    return PatchSet(
        np.stack(patches), np.asarray(labels, np.int8), np.zeros(n, np.int16), np.asarray(split, np.int8),
        np.asarray(image, np.int32), ["synthetic"], [f"scene{i}" for i in range(14)],
    )


@pytest.fixture(scope="session")
def tiny_fit(synthetic_patch_set, tmp_path_factory):
    """A real, briefly trained ResNet18 (64 px patches) and its training history."""
    from survey_cracks.config import DataSource, Schedule, TilingConfig, TrainConfig
    from survey_cracks.training.train import fit

    out = tmp_path_factory.mktemp("tiny_fit")
    config = TrainConfig(
        sources=[DataSource(name="synthetic", kind="mask_folder", root=out)],
        init="scratch",
        tiling=TilingConfig(patch_size=TINY_PATCH),
        schedule=Schedule(epochs=3, head_epochs=0, lr=1e-3, batch_size=32, samples_per_epoch=960, patience=5),
        augment=True,
        workers=2,
    )
    ps = synthetic_patch_set
    return fit(ps, ps.where("train"), ps.where("val"), config, out, progress=False, log=lambda _: None), out


@pytest.fixture(scope="session")
def tiny_model(tiny_fit) -> Path:
    """Path of the tiny checkpoint, with a threshold calibrated on its validation patches."""
    from survey_cracks.models.network import save_checkpoint

    result, out = tiny_fit
    result.meta.provenance = {"init": "scratch", "note": "test fixture"}
    path = out / "tiny.safetensors"
    save_checkpoint(path, result.model, result.meta)
    return path


@pytest.fixture
def needs_shared() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


# ---------------------------------------------------------------------------------- a tiny mask model
# (shared by test_mask_mode and the tests of the asset deliverables, which need centrelines)


def mask_folder(root: Path, count: int = 10) -> Path:
    from PIL import Image

    from survey_cracks.synthetic import render_scene

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for seed in range(count):
        rgb, mask = render_scene(192, 256, seed=100 + seed, surface="concrete" if seed % 2 else "asphalt")
        Image.fromarray(rgb).save(root / "images" / f"scene{seed}.png")
        Image.fromarray(mask).save(root / "masks" / f"scene{seed}.png")
    return root


def mask_config(root: Path, out: Path, init_path: Path, **schedule: int):
    from survey_cracks.config import DataSource, MaskSchedule, MaskTrainConfig

    steps = {"decoder_steps": 12, "joint_steps": 8, "batch_size": 4, "crop_size": 128, "checkpoint_every": 10, **schedule}
    return MaskTrainConfig(
        sources=[DataSource(name="synthetic", kind="mask_folder", root=root, split={"val": 0.3, "test": 0.0})],
        init="shipped", init_path=init_path, decoder_channels=8, schedule=MaskSchedule(**steps), workers=2, out_dir=out,
    )


@pytest.fixture(scope="session")
def mask_source(tmp_path_factory) -> Path:
    return mask_folder(tmp_path_factory.mktemp("mask_source"))


@pytest.fixture(scope="session")
def tiny_mask_model(tiny_model, mask_source, tmp_path_factory) -> Path:
    from survey_cracks.training.segment import fit_mask

    out = tmp_path_factory.mktemp("tiny_mask")
    result = fit_mask(mask_config(mask_source, out, tiny_model, decoder_steps=48, joint_steps=16, checkpoint_every=32),
                      progress=False, log=lambda _: None)
    return result.checkpoint


# ---------------------------------------------------------------------------------- the `slow` marker
# `make test-fast` (-m "not slow") leaves out what starts processes, kills them, runs Dask clusters
# or whole surveys, or trains the mask model. Marked here by one rule rather than in each file:
# a test is slow when it uses one of these fixtures or lives in one of these files.
SLOW_FIXTURES = {"cluster", "default_run", "run_out", "tiny_mask_model", "exports"}
SLOW_FILES = {"test_worker_death.py", "test_cluster.py", "test_faults.py", "test_resume.py", "test_nightly.py"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
