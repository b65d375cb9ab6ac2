"""Scoring every patch of a raster on a Dask cluster.

Tasks carry only a file path and a list of window offsets: each worker reads its
own windows from the raster (shared storage), scores them in batches with the
model it keeps loaded, and returns one float per window. No pixels travel through
the client, so the same code runs on a laptop's LocalCluster and on a real cluster
given its scheduler address.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import dask
import numpy as np
import rasterio
from distributed import Client, LocalCluster, as_completed
from rasterio.windows import Window
from tqdm import tqdm

from survey_cracks import hardware
from survey_cracks.config import InferenceConfig
from survey_cracks.errors import ConfigError
from survey_cracks.raster import RasterInfo, fill_invalid, open_raster, read_patch, read_window
from survey_cracks.tiling import PatchGrid

ProgressCallback = Callable[[int], None]

_MODELS: dict[tuple, object] = {}
_MODEL_LOCK = threading.Lock()


@dataclass(frozen=True)
class ModelSpec:
    """How a worker finds and runs the model (the file is checked by sha256)."""

    path: str
    sha256: str
    device: str = "auto"
    precision: str = "auto"
    engine: str = "auto"
    threads: int = 1
    batch_size: int = 64


def _classifier(spec: ModelSpec):  # type: ignore[no-untyped-def]
    """The worker's cached model; loaded once per worker process.

    On a real cluster the client's path may not exist on the worker: the worker's own
    copy of the shipped model is used when its sha256 matches. The ONNX Runtime path
    never imports torch.
    """
    from survey_cracks.checkpoint import SHIPPED_MODEL, file_sha256
    from survey_cracks.errors import ModelFileError

    key = (spec.path, spec.sha256, spec.device, spec.precision, spec.engine)
    with _MODEL_LOCK:
        if key not in _MODELS:
            path = Path(spec.path)
            if not path.is_file() and SHIPPED_MODEL.is_file() and file_sha256(SHIPPED_MODEL) == spec.sha256:
                path = SHIPPED_MODEL
            if not path.is_file() or file_sha256(path) != spec.sha256:
                raise ModelFileError(spec.path, "model file missing or different on this Dask worker",
                                     "put the same model file at the same path on every worker")
            if resolve_engine(spec.engine, spec.device, spec.precision) == "onnxruntime":
                from survey_cracks.onnx_engine import OnnxCrackClassifier

                _MODELS[key] = OnnxCrackClassifier(path, threads=spec.threads, sha256=spec.sha256)
            else:
                import torch

                from survey_cracks.model import CrackClassifier

                torch.set_num_threads(spec.threads)
                _MODELS[key] = CrackClassifier(path, device=spec.device, precision=spec.precision)  # type: ignore[arg-type]
        return _MODELS[key]


def iter_patches(
    src: rasterio.io.DatasetReader,
    info: RasterInfo,
    offsets: np.ndarray,
    window_size: int,
    patch_size: int,
    min_valid_fraction: float = 0.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """(index, rgb) for each window at ``offsets`` with enough valid pixels.

    At native resolution the windows of one grid row are cut from a single strip
    read (one GDAL call instead of hundreds); resampled (GSD-aware) windows are read
    one by one. Either way each patch's pixels, nodata fill included, equal those of
    `raster.read_patch`.
    """
    if window_size != patch_size:
        for i, (row, col) in enumerate(offsets):
            rgb, valid = read_patch(src, info, Window(int(col), int(row), window_size, window_size), patch_size)
            if np.count_nonzero(valid) >= min_valid_fraction * valid.size:
                yield i, rgb
        return
    needed = min_valid_fraction * window_size * window_size
    rows = offsets[:, 0]
    for row in np.unique(rows):
        members = np.flatnonzero(rows == row)
        cols = offsets[members, 1]
        left = int(cols.min())
        strip = Window(left, int(row), int(cols.max()) - left + window_size, window_size)
        rgb, valid = read_window(src, info, strip, fill=False)
        # Column counts once per strip make each window's valid count a difference of sums.
        valid_before = np.concatenate([[0], np.cumsum(np.count_nonzero(valid, axis=0))])
        for i, col in zip(members, cols):
            c = int(col) - left
            count = valid_before[c + window_size] - valid_before[c]
            if count < needed or count == 0:
                continue
            patch = rgb[:, c : c + window_size]
            if count < valid.shape[0] * window_size:
                patch = patch.copy()
                fill_invalid(patch, valid[:, c : c + window_size])
            yield int(i), patch


def score_windows(
    info: RasterInfo,
    offsets: np.ndarray,
    window_size: int,
    patch_size: int,
    min_valid_fraction: float,
    spec: ModelSpec,
) -> np.ndarray:
    """Dask task: read and score the windows at ``offsets``; NaN for skipped ones."""
    classifier = _classifier(spec)
    scores = np.full(len(offsets), np.nan, dtype=np.float32)
    batch: list[np.ndarray] = []
    where: list[int] = []

    def flush() -> None:
        if batch:
            scores[where] = classifier.predict(np.stack(batch), spec.batch_size)
            batch.clear()
            where.clear()

    with open_raster(info.path) as src:
        for i, rgb in iter_patches(src, info, offsets, window_size, patch_size, min_valid_fraction):
            batch.append(rgb)
            where.append(i)
            if len(batch) >= spec.batch_size:
                flush()
        flush()
    return scores


def score_raster(
    client: Client,
    info: RasterInfo,
    grid: PatchGrid,
    patch_size: int,
    min_valid_fraction: float,
    spec: ModelSpec,
    config: InferenceConfig,
    progress: bool = True,
    callback: ProgressCallback | None = None,
) -> np.ndarray:
    """Crack probability for every window of ``grid`` (NaN where the window was skipped)."""
    scores = np.full(len(grid), np.nan, dtype=np.float32)
    slots = sum(client.nthreads().values()) or 1
    chunks = tapered(grid.chunks(config.windows_per_task), slots)
    futures = {}
    offsets = grid.offsets
    for chunk in chunks:
        future = client.submit(
            score_windows, info, offsets[chunk], grid.size, patch_size, min_valid_fraction, spec, pure=False
        )
        futures[future] = chunk
    bar = tqdm(total=len(grid), desc=f"scoring {info.path.name}", unit="patch", disable=not progress, leave=False)
    try:
        for future in as_completed(futures):
            chunk = futures.pop(future)
            scores[chunk] = future.result()
            future.release()
            bar.update(len(chunk))
            if callback:
                callback(len(chunk))
    finally:
        bar.close()
        client.cancel(list(futures))
    return scores


def tapered(chunks: list[np.ndarray], slots: int, pieces: int = 4) -> list[np.ndarray]:
    """The same windows, with the last ``2 x slots`` tasks cut into ``pieces`` each.

    Tasks run roughly in submission order; when the queue runs dry, the cluster's
    slots finish their last tasks one by one while the others idle. Smaller last tasks
    shorten that tail (a 512-window task is ~10 s of one core), and the raster's
    remaining stages wait on it.
    """
    cut = max(0, len(chunks) - 2 * slots)
    tail = [piece for chunk in chunks[cut:] for piece in np.array_split(chunk, min(pieces, len(chunk)))]
    return chunks[:cut] + tail


def worker_settings(config: InferenceConfig) -> dict[str, object]:
    """Dask settings for long, CPU-bound model tasks.

    Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536; setting it at all turns off
    glibc's adaptive mmap threshold, so every batch's activations are mapped and
    unmapped again: measured here, that costs ResNet18 a fifth of its speed. The
    environment below leaves malloc alone. GDAL's block cache is capped so memory
    does not grow with the raster.
    """
    return {
        "distributed.worker.profile.enabled": False,
        # A whole mapping: dask.config.set would rewrite '_' to '-' in dotted keys.
        "distributed.nanny.pre-spawn-environ": {
            "OMP_NUM_THREADS": str(config.torch_threads),
            "MKL_NUM_THREADS": str(config.torch_threads),
            "GDAL_CACHEMAX": str(config.gdal_cache_mb),
        },
    }


@contextlib.contextmanager
def dask_client(config: InferenceConfig) -> Iterator[Client]:
    """A client on ``config.scheduler``, or on a LocalCluster of worker processes."""
    if config.scheduler:
        with Client(config.scheduler, timeout="30s") as client:
            yield client
        return
    with dask.config.set(worker_settings(config)), LocalCluster(
        n_workers=config.workers,
        threads_per_worker=config.worker_threads(),
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
        memory_limit=0,
    ) as cluster, Client(cluster) as client:
        yield client


def worker_compute(client: Client, spec: ModelSpec) -> list[str]:
    """What the workers run the model on (e.g. ``cpu fp32``, ``cuda fp16``), as each worker resolves ``auto``."""
    return sorted(set(client.run(_compute_of, spec.device, spec.precision, spec.engine).values()))


def _compute_of(device: str, precision: str, engine: str) -> str:
    if resolve_engine(engine, device, precision) == "onnxruntime":
        return "cpu fp32 onnxruntime"  # decided without torch: a worker on this path never imports it
    from survey_cracks.model import autocast_dtype, pick_device, precision_name

    resolved = pick_device(device)  # type: ignore[arg-type]
    return f"{resolved.type} {precision_name(autocast_dtype(resolved, precision))} torch"


def resolve_engine(engine: str, device: str, precision: str) -> str:
    """``auto``: ONNX Runtime where the model would run fp32 on the CPU, PyTorch otherwise (CUDA, native bf16).

    Decided from the hardware without importing torch (see `hardware`), as `model.pick_device`
    and `model.autocast_dtype` decide it.
    """
    if engine != "auto":
        if engine == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError(None, "inference.engine is onnxruntime but onnxruntime is not installed",
                              "pip install onnxruntime, or set inference.engine: torch")
        return engine
    on_cpu = device == "cpu" or (device == "auto" and hardware.cuda_device_count() == 0)
    cpu_autocast = precision == "bf16" or (precision == "auto" and hardware.cpu_has_native_bf16())
    if on_cpu and not cpu_autocast and importlib.util.find_spec("onnxruntime"):
        return "onnxruntime"
    return "torch"


def model_spec(path: Path, sha256: str, config: InferenceConfig) -> ModelSpec:
    return ModelSpec(
        path=str(Path(path).resolve()),
        sha256=sha256,
        device=config.device,
        precision=config.precision,
        engine=config.engine,
        threads=config.torch_threads,
        batch_size=config.batch_size,
    )


__all__ = [
    "ModelSpec", "dask_client", "model_spec", "score_raster", "resolve_engine", "score_windows", "tapered", "worker_compute",
]
