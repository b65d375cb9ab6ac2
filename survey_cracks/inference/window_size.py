"""``window_px: auto``: the largest window core whose working set, times the tasks run at once, fits a memory budget.

Why: a window's output is kept for its core only, the margin is read for context and thrown
away, so the network computes ``(core + 2 margin)^2 / core^2`` pixels per kept pixel (1.56 for a
1024 px core with a 128 px margin, 1.27 at 2048). Larger cores waste less, but a task's memory
grows with the read's pixels: the window is chosen from a memory budget rather than fixed.

The working set is measured, not guessed: once per model, engine, precision, threads, CPU and
library versions (the key of `engine_choice.choice_key`, plus the spec), a fresh process with the
workers' environment loads the run's engine and runs windows of growing size through ``segment``;
the slope of its peak resident size (VmHWM) against the read's pixels is the bytes a task
needs per read pixel (the process's own size, torch and the model, is the intercept and not part
of a window's working set). It is cached as JSON beside the engine choice. Where it is not measured
(``SURVEY_CRACKS_MEASURE_ENGINES=0``, as in the test suite; a GPU; a measurement that failed) the
documented figure `DOCUMENTED_BYTES_PER_PX` stands in: above the shipped model's bf16 (197-222) and ONNX
Runtime fp32 (174) slopes measured on the development machine (docs/benchmarks.md); eager fp32 measured 297.

Then ``core`` is the largest multiple of 32 with ``tasks x bytes_per_px x (core + 2 margin)^2 <=
budget``, between 128 px and 8192 px, and never larger than the raster needs (`cap_to_raster`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from survey_cracks.config import WINDOW_PX_RANGE, InferenceConfig
from survey_cracks.inference.cluster import NETWORK_ENVIRONMENT
from survey_cracks.models import hardware
from survey_cracks.models.engine_choice import choice_key
from survey_cracks.models.engines import ModelSpec
from survey_cracks.models.onnx_engine import onnx_cache_dir
from survey_cracks.outputs import atomic_write
from survey_cracks.tiling import ALIGN

LOG = logging.getLogger("survey_cracks.windows")
GIB = 2**30
SMALLEST, LARGEST = WINDOW_PX_RANGE
MEASURED_CORES = (256, 512, 768, 1024)  # window cores run to measure (a first, smaller one warms the engine up)
# Measured with `python -m survey_cracks.inference.window_size` on the shipped model (2-core AMD EPYC, torch 2.x,
# one thread): see docs/benchmarks.md, "Windows from a memory budget". Used only where nothing is measured.
DOCUMENTED_BYTES_PER_PX = 260.0
RULE = 2  # in the cache key: a measurement made by an earlier rule (1: ru_maxrss) is made again


@dataclass(frozen=True)
class WindowMemory:
    """What a task needs per read pixel of a window, and where the figure comes from."""

    bytes_per_px: float
    source: str  # "measured" or "documented"
    points: tuple[tuple[int, int], ...] = ()  # (read pixels, peak resident bytes) of the measurement
    compute: str = ""  # the engine measured, e.g. "cpu bf16 torch"
    note: str = ""


@dataclass(frozen=True)
class WindowChoice:
    """The window core a run uses and why (run.json ``window``)."""

    core_px: int
    margin_px: int
    how: str  # "set" (window_px given) or "auto" (from the budget)
    budget_gib: float | None = None
    tasks: int | None = None  # windows in memory at once on a machine: workers x threads per worker
    bytes_per_px: float | None = None
    bytes_source: str | None = None  # "measured" or "documented"
    task_gib: float | None = None  # one task's working set at this window
    limited_by: str = ""  # "budget", "smallest window" or "largest window"

    @property
    def network_px_per_core_px(self) -> float:
        """Pixels the network computes per pixel kept: ``(core + 2 margin)^2 / core^2``."""
        return round((self.core_px + 2 * self.margin_px) ** 2 / self.core_px**2, 3)

    def record(self) -> dict:
        """run.json's ``window``: the choice, its reasons and the network's pixels per kept pixel."""
        fields = {key: value for key, value in asdict(self).items() if value is not None and value != ""}
        return fields | {"network_px_per_core_px": self.network_px_per_core_px}


def working_set_bytes(bytes_per_px: float, core: int, margin: int) -> float:
    """One task's working set for a window of ``core`` px read with ``margin`` px each side."""
    return bytes_per_px * (core + 2 * margin) ** 2


def choose_window(bytes_per_px: float, budget_gib: float, tasks: int, margin: int, source: str = "measured"
                  ) -> WindowChoice:
    """The largest core (multiple of 32, within 128-8192 px) whose working set times ``tasks`` fits ``budget_gib``."""
    if bytes_per_px <= 0 or budget_gib <= 0 or tasks < 1:
        raise ValueError("bytes_per_px and budget_gib must be positive, tasks at least 1")
    read_side = math.isqrt(int(budget_gib * GIB / tasks / bytes_per_px))
    core = (read_side - 2 * margin) // ALIGN * ALIGN
    limited_by = "budget"
    if core < SMALLEST:
        core, limited_by = SMALLEST, "smallest window"
    elif core > LARGEST:
        core, limited_by = LARGEST, "largest window"
    return WindowChoice(core, margin, "auto", budget_gib, tasks, round(bytes_per_px, 1), source,
                        round(working_set_bytes(bytes_per_px, core, margin) / GIB, 3), limited_by)


def cap_to_raster(choice: WindowChoice, width: int, height: int) -> WindowChoice:
    """``choice`` no larger than the raster needs: a core past its longer side (rounded up to 32) covers nothing more.

    The windows are the same either way (`tiling.context_windows` clips cores to the raster); the record says what ran.
    """
    side = -(-max(width, height) // ALIGN) * ALIGN
    if choice.how != "auto" or choice.core_px <= side:
        return choice
    task = None if choice.bytes_per_px is None else round(working_set_bytes(choice.bytes_per_px, side, choice.margin_px) / GIB, 3)
    return WindowChoice(max(side, ALIGN), choice.margin_px, choice.how, choice.budget_gib, choice.tasks,
                        choice.bytes_per_px, choice.bytes_source, task, "raster size")


def concurrent_tasks(config: InferenceConfig) -> int:
    """Windows in memory at once on one machine: the LocalCluster's workers x threads per worker (with a
    scheduler, set ``workers`` and ``threads_per_worker`` to what one machine of it runs)."""
    return config.workers * config.worker_threads()


def resolve_window(config: InferenceConfig, spec: ModelSpec, margin: int) -> WindowChoice:
    """The window a run uses: ``window_px`` as given, or with ``auto`` the largest that fits ``memory_budget_gib``."""
    if config.window_px != "auto":
        return WindowChoice(int(config.window_px), margin, "set")
    memory = window_memory(spec)
    return choose_window(memory.bytes_per_px, config.memory_budget_gib, concurrent_tasks(config), margin, memory.source)


# --------------------------------------------------------------------------- measurement


def measured_here(spec: ModelSpec) -> bool:
    """Whether the working set is measured (on CPU, unless ``SURVEY_CRACKS_MEASURE_ENGINES=0``), else documented."""
    on_cpu = spec.device == "cpu" or (spec.device == "auto" and hardware.cuda_device_count() == 0)
    return os.environ.get("SURVEY_CRACKS_MEASURE_ENGINES", "1") != "0" and on_cpu


def memory_path(spec: ModelSpec) -> Path:
    key = choice_key(spec.sha256, spec.threads) | {"engine": spec.engine, "precision": spec.precision,
                                                   "device": spec.device, "window_rule": RULE}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return onnx_cache_dir() / "window_memory" / f"{digest}.json"


def window_memory(spec: ModelSpec) -> WindowMemory:
    """The cached measurement for ``spec`` on this machine, measured now if there is none; documented if not measured."""
    if not measured_here(spec):
        return WindowMemory(DOCUMENTED_BYTES_PER_PX, "documented", note="not measured (GPU, or turned off)")
    path = memory_path(spec)
    try:
        data = json.loads(path.read_text())
        return WindowMemory(**{**data, "points": tuple(tuple(p) for p in data["points"])})
    except (OSError, ValueError, TypeError, KeyError):
        pass
    LOG.warning("measuring a window's memory for %s on this machine (once; cached in %s)", Path(spec.path).name,
                path.parent)
    try:
        memory = measure_in_fresh_process(spec)
    except (OSError, subprocess.SubprocessError, ValueError, KeyError) as error:
        LOG.warning("could not measure a window's memory (%s): using the documented %.0f bytes per pixel",
                    str(error).strip().splitlines()[-1][:160] if str(error).strip() else type(error).__name__,
                    DOCUMENTED_BYTES_PER_PX)
        return WindowMemory(DOCUMENTED_BYTES_PER_PX, "documented", note="measurement failed")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(asdict(memory), indent=1))
    return memory


def measure_in_fresh_process(spec: ModelSpec, timeout_s: float = 600) -> WindowMemory:
    """`measure_window_memory` in a new interpreter with the workers' environment (its peak is its own)."""
    environ = {**os.environ, **NETWORK_ENVIRONMENT, "OMP_NUM_THREADS": str(spec.threads),
               "MKL_NUM_THREADS": str(spec.threads)}
    done = subprocess.run([sys.executable, "-m", "survey_cracks.inference.window_size", json.dumps(asdict(spec))],
                          capture_output=True, text=True, timeout=timeout_s, env=environ)
    if done.returncode != 0:
        raise ValueError(done.stderr.strip() or f"exit code {done.returncode}")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    memory = WindowMemory(**{**data, "points": tuple(tuple(p) for p in data["points"])})
    if memory.bytes_per_px <= 0:
        raise ValueError(f"the peak did not grow with the window ({memory.points})")
    return memory


def peak_rss_bytes() -> int:
    """This process's peak resident size: Linux's VmHWM (its own, reset by exec; ``ru_maxrss`` keeps the peak of
    the process that started it, a 1.7 GB pytest, say), else ``ru_maxrss``."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_window_memory(spec: ModelSpec, cores: tuple[int, ...] = MEASURED_CORES, margin: int = 128) -> WindowMemory:
    """In this process: peak resident bytes after windows of growing size; their least-squares slope per read pixel.

    Each window is larger than the last, so each sets a new peak: the peak minus the process's size is that
    window's working set (freed activations of a smaller window are reused by the next).
    """
    import numpy as np

    from survey_cracks.models.engines import load_engine

    engine = load_engine(spec)
    rng = np.random.default_rng(0)
    points = []
    for core in cores:
        side = core + 2 * margin
        engine.segment(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        points.append((side * side, peak_rss_bytes()))
    px, peak = np.array(points[1:], dtype=np.float64).T  # the first window warms the engine up
    slope = float(np.polyfit(px, peak, 1)[0])
    return WindowMemory(round(slope, 1), "measured", tuple(points), engine.compute)


if __name__ == "__main__":
    print(json.dumps(asdict(measure_window_memory(ModelSpec(**json.loads(sys.argv[1]))))))
