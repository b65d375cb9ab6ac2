"""``engine: auto`` by measurement: each engine and precision timed on this machine, once, and the choice cached.

Which runtime is fastest depends on the CPU (AMX, AVX-512 BF16, VNNI, AVX2), the
library versions and the model: eager bf16 ran a window 3x faster than fp32 on an AMD
EPYC with AVX-512 BF16, and 8x slower on an AVX2-only CPU (emulated); ONNX Runtime
beat eager PyTorch fp32 on AVX2. So on first use per
(model sha256, CPU model and flags, library versions, threads) every installed
candidate runs a real-sized window for a few seconds, its heatmap levels are checked
against the reference's (`reference`: eager PyTorch at the same precision, fp32 for int8) on validation
images (within one level on at least `AGREEMENT` of the pixels, and pixel F1 at 2 px within `F1_CHANGE` of
the reference's: a runtime that moves the heatmap is not a speed-up), and
the fastest that agrees is kept as JSON in the cache folder
(``SURVEY_CRACKS_CACHE``, else ``~/.cache/survey_cracks``). A changed key is a
different file, so a new model, CPU or library version is measured again. Several
workers starting at once measure it once: the others wait on a file lock, then read it.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from survey_cracks.models import hardware
from survey_cracks.models.onnx_engine import onnx_cache_dir
from survey_cracks.outputs import atomic_write

LOG = logging.getLogger("survey_cracks.engines")
AGREEMENT = 0.999  # share of pixels whose level is within one step of the reference's
F1_CHANGE = 0.002  # largest change of pixel F1 at `verify.TOLERANCE_PX` against the reference's, on the same images
MEASURE_S = 3.0  # seconds of timed windows per candidate, over `ROUNDS` interleaved rounds (a window at least each)
ROUNDS = 3
# Start-up counts: each worker process loads (exports, compiles) its engine once per run, then runs its share of
# the windows; 50 is a worker's share of a 100 MP raster on a 2-core machine (~100 windows of 1024^2). Inductor's
# 24 s start (cached kernels, still traced again per process) outweighs its 6 % per window there.
AMORTISED_WINDOWS = 50
WINDOW_PX = 1216  # a 1024 px core with 96 px each side (the shipped model reads 1280: its margin is 128; kept so tables compare)
AGREEMENT_IMAGES = 4  # validation images the levels are compared on
CANDIDATES: tuple[tuple[str, str], ...] = (
    ("torch", "fp32"), ("torch", "bf16"), ("inductor", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
    ("openvino", "fp32"), ("openvino", "bf16"),
)
# Runtimes whose first load writes what every later process reads (the ONNX export, int8 calibration, OpenVINO's
# compiled blobs): the start-up that counts is a later load's, so they are loaded once untimed before it is timed.
# Inductor's first call is traced again in every process, so its first load is the one timed. Loading them again
# takes a tenth of a second, so they are not kept between the timing rounds: each holds 0.3-0.5 GB after a window
# (its own arena), and all candidates kept at once took the measuring worker to 3.1 GiB.
LOADED_FROM_DISK = frozenset({"onnxruntime", "openvino"})
LIBRARIES = ("torch", "onnxruntime", "openvino", "numpy")
# Measured in the table, never chosen by ``auto``: a window alone on one thread is not how a run uses it. With the
# run's task slots calling it at once, OpenVINO bf16 ran the 100 MP raster end to end at 1.52-1.58 MP/s (3 rounds,
# 63-66 s) against 1.84-2.07 MP/s (48-54 s) for eager bf16 the same hour, though it won the single-window timing
# (bench/segment_throughput.py, AMD EPYC 2 cores). `inference.engine: openvino` still runs it on request.
NOT_FOR_AUTO: frozenset[tuple[str, str]] = frozenset({("openvino", "fp32"), ("openvino", "bf16")})
RULE = 3  # in the cache key: a cached choice made by an earlier rule is measured again


def reference(precision: str) -> tuple[str, str]:
    """The engine a candidate of ``precision`` is checked against: eager PyTorch at that precision (fp32 the
    model's own arithmetic; bf16 autocast, what ``auto`` ran on CPUs with native bf16 before it was measured;
    int8, which PyTorch does not run here, against fp32), so a choice never moves the heatmaps of its precision
    by more than one level on more than 0.1 % of the pixels, nor their pixel F1 by more than `F1_CHANGE`."""
    return ("torch", "fp32" if precision == "int8" else precision)


@dataclass(frozen=True)
class Trial:
    """One candidate's measurement: speed on a window of ``WINDOW_PX``, agreement with the reference's levels."""

    engine: str
    precision: str
    available: bool
    ms_per_window: float | None = None
    mp_per_s: float | None = None
    agreement: float | None = None  # share of pixels within one level of the reference's (`reference`)
    pixel_f1: float | None = None  # at `verify.TOLERANCE_PX` on the same images, thresholded as a run thresholds
    f1_change: float | None = None  # pixel_f1 minus the reference's
    start_s: float | None = None  # loading it, export or compilation included (cached after the first time)
    note: str = ""

    @property
    def agrees(self) -> bool:
        """Equal outputs: levels within one step on `AGREEMENT` of the pixels and pixel F1 within `F1_CHANGE`
        (no F1 without annotated cracks in the images: the levels decide)."""
        same_f1 = self.f1_change is None or abs(self.f1_change) <= F1_CHANGE
        return self.available and self.agreement is not None and self.agreement >= AGREEMENT and same_f1

    @property
    def cost_ms(self) -> float:
        """What a window costs a worker, its start-up spread over `AMORTISED_WINDOWS` windows: the figure chosen on."""
        if self.ms_per_window is None:
            return float("inf")
        return self.ms_per_window + 1000 * (self.start_s or 0.0) / AMORTISED_WINDOWS


@dataclass(frozen=True)
class EngineChoice:
    """The engine and precision ``auto`` runs here, and the table it was chosen from."""

    engine: str
    precision: str
    key: dict
    trials: list[Trial] = field(default_factory=list)
    window_px: int = WINDOW_PX
    measured_at: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EngineChoice:
        data = json.loads(text)
        return cls(**{**data, "trials": [Trial(**t) for t in data["trials"]]})


def library_versions() -> dict[str, str]:
    """Installed versions of the runtimes (absent: ``-``), without importing them."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "-"
    return versions


def choice_key(model_sha256: str, threads: int) -> dict:
    """What a measured choice holds for: the model, the CPU (model name and feature flags), library versions, threads."""
    flags = hardware.cpu_flags()
    return {"model_sha256": model_sha256, "cpu": hardware.cpu_name(),
            "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
            "libraries": library_versions(), "threads": threads, "rule": RULE}


def choice_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return onnx_cache_dir() / "engine_choice" / f"{digest}.json"


def cached_choice(model_sha256: str, threads: int) -> EngineChoice | None:
    """The choice measured for this model, machine and libraries, None when there is none yet (or it is unreadable)."""
    key = choice_key(model_sha256, threads)
    path = choice_path(key)
    try:
        choice = EngineChoice.from_json(path.read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return choice if choice.key == key else None


Builder = Callable[[str, str], object]  # (engine, precision) -> an engine with ``segment``


def choose_engine(model_path: Path, model_sha256: str, threads: int, build: Builder,
                  measure_s: float = MEASURE_S, window_px: int = WINDOW_PX, remeasure: bool = False,
                  mask_threshold: float = 0.5) -> EngineChoice:
    """The cached choice, else (or ``remeasure``) measure every candidate now (once per key, whoever asks first)
    and cache it."""
    key = choice_key(model_sha256, threads)
    path = choice_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker measuring: wait for its answer
        found = None if remeasure else cached_choice(model_sha256, threads)
        if found is not None:
            return found
        LOG.warning("measuring the engines for %s on this machine (once; cached in %s)", model_path.name, path.parent)
        choice = measure(key, build, measure_s, window_px, mask_threshold=mask_threshold)
        with atomic_write(path) as tmp:
            tmp.write_text(choice.to_json())
    return choice


def measure(key: dict, build: Builder, measure_s: float = MEASURE_S, window_px: int = WINDOW_PX,
            mask_threshold: float = 0.5) -> EngineChoice:
    """Time and check every candidate; the cheapest (`Trial.cost_ms`) that agrees with its reference wins (eager
    fp32 if none does). ``mask_threshold``: the model's, where its pixel F1 is taken."""
    from survey_cracks.models.verify import validation_images
    from survey_cracks.synthetic import render_scene

    window = render_scene(window_px, window_px, seed=0)[0]
    labelled = validation_images(AGREEMENT_IMAGES)[0]
    images = [_padded(image.rgb) for image in labelled]
    truths = [image.truth for image in labelled]
    expected: dict[tuple[str, str], tuple[list[np.ndarray], float | None]] = {}  # reference -> its levels, pixel F1
    absent, loaded = [], []
    for engine_name, precision in sorted(CANDIDATES, key=lambda c: c != reference(c[1])):  # references first
        try:
            if engine_name in LOADED_FROM_DISK:
                build(engine_name, precision)  # makes its files (export, calibration, compiled blobs) once, untimed
            start = time.perf_counter()
            engine = build(engine_name, precision)
            engine.segment(window[:256, :256])  # type: ignore[attr-defined]  (a first call: lazy sessions, compilation)
        except Exception as exc:  # an engine that cannot run here (not installed, no kernel) is only absent
            absent.append(Trial(engine_name, precision, False, note=_reason(exc)))
            continue
        start_s = time.perf_counter() - start
        levels = [engine.segment(image)[0] for image in images]  # type: ignore[attr-defined]
        f1 = _pixel_f1(levels, truths, mask_threshold)
        if (engine_name, precision) == reference(precision):
            expected[(engine_name, precision)] = (levels, f1)
        their_levels, their_f1 = expected.get(reference(precision), ([], None))
        change = None if f1 is None or their_f1 is None else round(f1 - their_f1, 4)
        kept = None if engine_name in LOADED_FROM_DISK else engine  # loaded again for each round (see LOADED_FROM_DISK)
        del engine
        agreement = level_agreement(levels, their_levels)
        loaded.append((engine_name, precision, kept, start_s, None if agreement is None else round(agreement, 6), f1, change))
    # Interleaved rounds, so a change in the machine's load touches every candidate alike; the median window counts.
    times: list[list[float]] = [[] for _ in loaded]
    for _ in range(ROUNDS):
        for seconds, (engine_name, precision, kept, *_) in zip(times, loaded):
            engine = kept
            if engine is None:
                engine = build(engine_name, precision)
                engine.segment(window)  # type: ignore[attr-defined]  (untimed: its session and arena set up again)
            seconds.extend(_window_seconds(engine, window, measure_s / ROUNDS))
            del engine
    trials = [Trial(name, precision, True, round(float(np.median(t)) * 1000, 1),
                    round(window_px * window_px / float(np.median(t)) / 1e6, 3), agreement, f1, change, round(start_s, 2))
              for t, (name, precision, _, start_s, agreement, f1, change) in zip(times, loaded)] + absent
    agreeing = [t for t in trials if t.agrees and (t.engine, t.precision) not in NOT_FOR_AUTO] or [t for t in trials if (t.engine, t.precision) == reference("fp32")]
    best = min(agreeing, key=lambda t: t.cost_ms)
    return EngineChoice(best.engine, best.precision, key, trials, window_px, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def _padded(rgb: np.ndarray) -> np.ndarray:
    from survey_cracks.edge.runtime import pad_to_stride

    return pad_to_stride(rgb, 128)


def level_agreement(levels: list[np.ndarray], reference: list[np.ndarray]) -> float | None:
    """Share of pixels within one level of the reference's, over images alike in shape (the mask's levels; None
    without a decoder or a reference): the measure of `AGREEMENT`, also what the engine tests and bench check."""
    if not reference or any(x is None for x in levels + reference):
        return None
    close = sum(int(np.count_nonzero(np.abs(a.astype(np.int16) - b.astype(np.int16)) <= 1)) for a, b in zip(levels, reference))
    return close / sum(r.size for r in reference)


def _pixel_f1(levels: list[np.ndarray], truths: list[np.ndarray], threshold: float) -> float | None:
    """Pixel F1 at `verify.TOLERANCE_PX` over the images at the model's mask threshold, the levels read as a run
    reads them (`heatmap.probability_of`; padded images cut back to their annotation); None without a decoder or
    without annotated cracks."""
    from survey_cracks.evaluation.pixel_metrics import tolerant_counts
    from survey_cracks.models.verify import TOLERANCE_PX, pixel_f1_of
    from survey_cracks.vectors.heatmap import probability_of

    if any(level is None for level in levels):
        return None
    counts = np.zeros(4, np.int64)
    for level, truth in zip(levels, truths):
        counts += tolerant_counts(probability_of(level[: truth.shape[0], : truth.shape[1]]) >= threshold, truth, TOLERANCE_PX)
    return pixel_f1_of(counts)


def _window_seconds(engine: object, window: np.ndarray, measure_s: float) -> list[float]:
    """Seconds of each ``segment`` call on ``window``, calls repeated for ``measure_s`` seconds (at least one)."""
    times: list[float] = []
    while not times or sum(times) < measure_s:
        start = time.perf_counter()
        engine.segment(window)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - start)
    return times


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def choice_table(choice: EngineChoice) -> str:
    """The measured table as Markdown: engine, precision, available, ms/window, MP/s, agreement, pixel F1, chosen."""
    rows = ["| engine | precision | available | ms/window | MP/s | agreement (within 1 level) | pixel F1@2 (change) "
            f"| start s | ms/window with start over {AMORTISED_WINDOWS} | chosen |", "|---|---|---|---|---|---|---|---|---|---|"]
    for t in choice.trials:
        f1 = "-" if t.pixel_f1 is None else f"{t.pixel_f1:.4f}" + ("" if t.f1_change is None else f" ({t.f1_change:+.4f})")
        rows.append(f"| {t.engine} | {t.precision} | {'yes' if t.available else 'no: ' + t.note} | "
                    f"{_fmt(t.ms_per_window, '.0f')} | {_fmt(t.mp_per_s, '.2f')} | {_fmt(t.agreement, '.4%')} | {f1} | "
                    f"{_fmt(t.start_s, '.1f')} | {_fmt(t.cost_ms if t.available else None, '.0f')} | {_verdict(t, choice)} |")
    return "\n".join(rows)


def _verdict(trial: Trial, choice: EngineChoice) -> str:
    """The table's last column: chosen, or why not when it is not for want of speed."""
    if (trial.engine, trial.precision) == (choice.engine, choice.precision):
        return "**yes**"
    if not trial.available:
        return ""
    if (trial.engine, trial.precision) in NOT_FOR_AUTO:
        return "not by auto (slower in a run's concurrent task slots)"
    if trial.agreement is not None and trial.agreement < AGREEMENT:
        return f"no: levels moved (under {AGREEMENT:.1%} within one)"
    if trial.f1_change is not None and abs(trial.f1_change) > F1_CHANGE:
        return f"no: pixel F1 moved by more than {F1_CHANGE}"
    return ""


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


__all__ = ["AGREEMENT", "CANDIDATES", "F1_CHANGE", "NOT_FOR_AUTO", "EngineChoice", "Trial", "cached_choice", "choice_key", "choice_table",
           "choose_engine", "level_agreement", "library_versions", "measure", "reference"]
