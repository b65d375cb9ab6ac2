"""Scoring every patch of a raster on a Dask cluster.

Tasks carry only a file path and a list of window offsets: each worker reads its
own windows from the raster (shared storage), scores them in batches with the
model it keeps loaded, and returns one float per window. No pixels travel through
the client, so the same code runs on a laptop's LocalCluster and on a real cluster
given its scheduler address.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import cv2
import numpy as np
import rasterio
from distributed import Client, Future, as_completed
from rasterio.windows import Window
from tqdm import tqdm

from survey_cracks.config import InferenceConfig
from survey_cracks.tuning import trim_heap
from survey_cracks.io.raster import (
    RasterInfo,
    close_shared_readers,
    fill_invalid,
    open_raster,
    read_context,
    read_patch,
    read_window,
    shared_reader,
)
from survey_cracks.models.engines import CrackEngine, ModelSpec, load_engine
from survey_cracks.tiling import ALIGN, ContextWindow, PatchGrid, footprint_crop, photo_windows
from survey_cracks.vectors.heatmap import NODATA

ProgressCallback = Callable[[int], None]



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
    classifier = load_engine(spec)
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


@dataclass(frozen=True)
class WindowMaps:
    """What one window's trunk pass gives back for its core: only the core's pixels travel."""

    core: Window
    levels: np.ndarray | None  # (h, w) uint8 heatmap levels of crack probability (mask mode), as the engine gives them
    dense: np.ndarray  # (rows, cols) float32 patch scores of the 128 px patches centred in the core, 32 px apart
    dense_origin: tuple[int, int]  # raster (row, col) offset of dense[0, 0]'s patch window


def window_sums(values: np.ndarray, size: int, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Sum of ``values`` over each ``size`` x ``size`` window at ``step`` px: an integral image, (rows, cols) = ``shape``."""
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1), np.int64)
    integral[1:, 1:] = values.cumsum(0).cumsum(1)
    r, c = np.arange(shape[0]) * step, np.arange(shape[1]) * step
    return (integral[np.ix_(r + size, c + size)] - integral[np.ix_(r, c + size)]
            - integral[np.ix_(r + size, c)] + integral[np.ix_(r, c)])


def source_span(start: int, stop: int, scale: float, limit: int) -> tuple[int, int]:
    """Source pixels whose centres fall in processing pixels ``[start, stop)``: cores tile the source exactly."""
    return (min(limit, max(0, int(np.ceil(start / scale - 0.5)))), min(limit, max(0, int(np.ceil(stop / scale - 0.5)))))


def _back_to_source(values: np.ndarray, read: Window, rows: tuple[int, int], cols: tuple[int, int], scale: float,
                    interpolation: int) -> np.ndarray:
    """Sample a processing-grid array (covering ``read``) at the centres of the source pixels ``rows`` x ``cols``."""
    ys = ((np.arange(*rows) + 0.5) * scale - 0.5 - read.row_off).astype(np.float32)
    xs = ((np.arange(*cols) + 0.5) * scale - 0.5 - read.col_off).astype(np.float32)
    map_x, map_y = np.meshgrid(xs, ys)
    return cv2.remap(values, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)


def source_core(info: RasterInfo, window: ContextWindow, scale: float) -> Window | None:
    """The raster pixels a processing-grid core stands for (None when none): cores tile the raster exactly."""
    if scale == 1.0:
        return window.core
    rows = source_span(int(window.core.row_off), int(window.core.row_off + window.core.height), scale, info.height)
    cols = source_span(int(window.core.col_off), int(window.core.col_off + window.core.width), scale, info.width)
    if rows[0] == rows[1] or cols[0] == cols[1]:
        return None
    return Window(cols[0], rows[0], cols[1] - cols[0], rows[1] - rows[0])


def segment_window(
    info: RasterInfo, window: ContextWindow, spec: ModelSpec, keep_mask: bool, min_valid_fraction: float = 0.25,
    scale: float = 1.0,
) -> WindowMaps | None:
    """Dask task: read a window with its margin, one trunk pass, keep the core; None outside the footprint.

    ``window`` is on the processing grid (source pixels x ``scale``); the core's heatmap
    levels come back on the raster's own grid (uint8: a quarter of float32's bytes to send).
    With ``keep_mask`` (mask mode) only the levels come back; else only the dense scores.
    """
    engine = load_engine(spec)
    with shared_reader(info.path) as src:
        rgb, valid = read_context(src, info, window.read, scale)
    core = window.in_read
    if not valid[core].any():
        return None
    target = source_core(info, window, scale)
    if target is None:
        return None
    if keep_mask:
        levels = _segment_footprint(engine, window, rgb, valid)  # the engine's uint8 heatmap levels
        if scale == 1.0:
            levels = np.where(valid[core], levels[core], NODATA).astype(np.uint8)
        else:
            rows = (int(target.row_off), int(target.row_off + target.height))
            cols = (int(target.col_off), int(target.col_off + target.width))
            resampled = _back_to_source(levels.astype(np.float32), window.read, rows, cols, scale, cv2.INTER_LINEAR)
            inside = _back_to_source(valid.astype(np.uint8), window.read, rows, cols, scale, cv2.INTER_NEAREST) > 0
            levels = np.where(inside, np.rint(resampled), NODATA).astype(np.uint8)
        return WindowMaps(target, levels, np.zeros((0, 0), np.float32), (0, 0))
    if scale != 1.0:
        raise ValueError("a processing scale other than 1 applies to mask mode only")
    _, dense = engine.segment(rgb)
    # Dense position (i, j) is the patch at read offset (32 i, 32 j); keep those centred in the core.
    patch = engine.meta.patch_size
    centres_r = np.arange(dense.shape[0]) * ALIGN + patch // 2
    centres_c = np.arange(dense.shape[1]) * ALIGN + patch // 2
    rows = np.flatnonzero((centres_r >= core[0].start) & (centres_r < core[0].stop))
    cols = np.flatnonzero((centres_c >= core[1].start) & (centres_c < core[1].stop))
    kept = dense[np.ix_(rows, cols)].astype(np.float32)
    # Patches mostly outside the footprint are skipped, as in patch mode.
    counts = window_sums(valid, patch, ALIGN, dense.shape)
    kept[counts[np.ix_(rows, cols)] < max(1, min_valid_fraction * patch * patch)] = np.nan
    origin = (int(window.read.row_off) + int(rows[0]) * ALIGN if rows.size else 0,
              int(window.read.col_off) + int(cols[0]) * ALIGN if cols.size else 0)
    return WindowMaps(window.core, None, kept, origin)


def _segment_footprint(engine: CrackEngine, window: ContextWindow, rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The mask's uint8 levels over the whole read, the network run on `footprint_crop` of it only (0 elsewhere: no
    valid pixel there)."""
    rows, cols = footprint_crop(window, valid)
    mask, _ = engine.segment(np.ascontiguousarray(rgb[rows, cols]))
    if mask is None:
        raise ValueError("mask mode needs a model with a mask decoder")
    if (rows.stop - rows.start, cols.stop - cols.start) != valid.shape:
        # A pass of a shape of its own leaves its freed activations in glibc's heap in pieces other shapes
        # cannot reuse. Trimmed after each such window, the worker's peak stays near that of full windows
        # (100 MP, three runs each: tree 1.82-1.88 GiB, against 1.90-2.05 untrimmed), for ~1 s of the run:
        # the next pass faults its memory in again (bench/trim_cost.py, the 100 MP raster's windows in one
        # process, three alternations: 35.4/38.1/35.7 s with its 26 trims, 34.1/34.6/34.7 s without).
        trim_heap()
    whole = np.zeros(valid.shape, mask.dtype)
    whole[rows, cols] = mask
    return whole


def segment_raster(
    client: Client,
    info: RasterInfo,
    windows: list[ContextWindow],
    spec: ModelSpec,
    keep_mask: bool = True,
    min_valid_fraction: float = 0.25,
    progress: bool = True,
    scale: float = 1.0,
) -> Iterator[tuple[Window | None, WindowMaps | None]]:
    """Every window of the raster through the network, as the workers finish them (any order).

    Yields each window's core on the raster's grid (`source_core`) with its maps, None
    for a window outside the footprint: its pixels are final too, as nodata.
    """
    futures = {client.submit(segment_window, info, w, spec, keep_mask, min_valid_fraction, scale, pure=False): w
               for w in windows}
    bar = tqdm(total=len(windows), desc=f"segmenting {info.path.name}", unit="window", disable=not progress, leave=False)
    try:
        for future in as_completed(futures):
            maps = future.result()
            window = futures.pop(future)
            future.release()
            bar.update(1)
            yield source_core(info, window, scale), maps
    finally:
        bar.close()
        client.cancel(list(futures))


@dataclass(frozen=True)
class PhotoLevels:
    """A whole photo's heatmap levels (uint8, `heatmap.to_levels`; a photo is small enough to hold) and its windows."""

    levels: np.ndarray
    windows: int
    windows_processed: int
    network_px: int  # pixels the network saw: the reads of the windows it ran on


def segment_photo(info: RasterInfo, spec: ModelSpec, window_px: int, margin: int, min_valid_fraction: float = 0.25
                  ) -> PhotoLevels:
    """One photo through the network in windows sized to it (`tiling.photo_windows`), in this process.

    Called inside a Dask task that holds many photos (`grouped_results`): the photo's reader is
    closed after it, so a worker that sees 10,000 photos keeps no handle open.
    """
    windows = photo_windows(info.width, info.height, window_px, margin, load_engine(spec).meta.patch_size)
    levels = np.full((info.height, info.width), NODATA, np.uint8)
    done = network_px = 0
    try:
        for window in windows:
            maps = segment_window(info, window, spec, True, min_valid_fraction)
            if maps is None:
                continue
            core = maps.core
            levels[int(core.row_off) : int(core.row_off + core.height), int(core.col_off) : int(core.col_off + core.width)] = maps.levels
            done += 1
            network_px += int(window.read.width) * int(window.read.height)
    finally:
        close_shared_readers()
    return PhotoLevels(levels, len(windows), done, network_px)


Job = TypeVar("Job")
Result = TypeVar("Result")


def photo_groups(jobs: Sequence[Job], pixels: Callable[[Job], int], budget_px: int = 1_500_000, most: int = 32
                 ) -> list[list[Job]]:
    """Consecutive jobs in groups of about ``budget_px`` pixels (at most ``most`` jobs): one Dask task each.

    A task per photo costs the scheduler a round trip, a pickled spec and a result message per
    0.2 MP photo; a megapixel or two per task makes that a small share, while a task is still a second or two
    of one core (the cluster's slots stay busy to the end, and a kill loses little).
    """
    groups: list[list[Job]] = []
    current: list[Job] = []
    total = 0
    for job in jobs:
        current.append(job)
        total += pixels(job)
        if total >= budget_px or len(current) >= most:
            groups.append(current)
            current, total = [], 0
    if current:
        groups.append(current)
    return groups


def grouped_results(client: Client, task: Callable[..., list[Result]], groups: Iterable[list[Job]], *args: object,
                    in_flight: int | None = None, progress: bool = True, total: int | None = None,
                    desc: str = "photos") -> Iterator[Result]:
    """``task(group, *args)`` for every group on the cluster, each group's results as it finishes (any order).

    At most ``in_flight`` groups are submitted at a time (default: two per task slot), so a
    folder of 50,000 photos never has 50,000 results waiting in the client's memory.
    """
    slots = sum(client.nthreads().values()) or 1
    limit = in_flight or 2 * slots
    pending = iter(groups)
    running = as_completed()
    submitted: list[Future] = []
    bar = tqdm(total=total, desc=desc, unit="photo", disable=not progress, leave=False)

    def submit() -> bool:
        group = next(pending, None)
        if group is None:
            return False
        future = client.submit(task, group, *args, pure=False)
        submitted.append(future)
        running.add(future)
        return True

    try:
        for _ in range(limit):
            if not submit():
                break
        for future in running:
            results = future.result()
            submitted.remove(future)
            future.release()
            submit()
            bar.update(len(results))
            yield from results
    finally:
        bar.close()
        client.cancel(submitted)


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


def release_worker_memory(client: Client) -> None:
    """Between rasters, workers close the raster they read and return what their last windows freed
    (glibc keeps freed heap in its arenas: some 0.5 GB after a raster here). The raster's last stages
    run in the client beside them, so the whole run's peak memory is the client's peak plus the
    workers' resting size, not their working size.
    """
    client.run(_release_window_resources)


def _release_window_resources() -> None:
    close_shared_readers()
    trim_heap()


def warm(spec: ModelSpec) -> str:
    """Dask task: load the model into this worker now; what it runs on (the engine's ``compute``: with ``engine: auto``
    the measured choice)."""
    return load_engine(spec).compute


def warm_workers(client: Client, spec: ModelSpec) -> list[Future]:
    """Start loading the model on every worker without waiting for it.

    A worker's first task otherwise starts with importing torch and loading the model
    (seconds); begun here, that overlaps what the client does before the first window
    (reading annotations, opening rasters, starting the heatmap). `compute_when_warm`
    collects the answers.
    """
    workers = list(client.scheduler_info().get("workers", {}))
    # allow_other_workers: a worker that dies (and comes back under a new address) must not leave its
    # warm-up waiting forever for it, and `compute_when_warm` with it (tests/inference/test_worker_death.py).
    return [client.submit(warm, spec, workers=[address], allow_other_workers=True, pure=False) for address in workers]


def compute_when_warm(warming: list[Future]) -> list[str]:
    """What the workers run the model on, once loaded; a worker that failed to load it says why."""
    answers = set()
    for future in warming:
        error = future.exception()
        answers.add(future.result() if error is None else f"unavailable ({error})")
    return sorted(answers)


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
    "ModelSpec", "PhotoLevels", "compute_when_warm", "grouped_results", "photo_groups", "segment_photo", "release_worker_memory", "warm_workers", "model_spec", "score_raster", "score_windows", "segment_raster", "segment_window", "tapered", "WindowMaps",
]
