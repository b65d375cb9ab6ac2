"""Which engine runs the network, and the one interface the pipeline sees.

An engine scores uint8 patches (``predict``) and turns a uint8 window into per-pixel
crack probability and dense patch scores (``segment``), whatever runs underneath:
PyTorch (CUDA fp16, CPU bf16 where native, else fp32) or ONNX Runtime fp32 (CPUs
without native bf16, where it is faster) or int8 (``precision: int8``: the calibrated
static quantisation of `export`, on ONNX Runtime). ``auto`` is decided from the hardware
without importing torch, so a worker on the ONNX path never loads it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from survey_cracks.errors import ConfigError, ModelFileError
from survey_cracks.models import hardware
from survey_cracks.models.checkpoint import SHIPPED_MODEL, ModelMeta, file_sha256, read_meta

if TYPE_CHECKING:
    from survey_cracks.models.engine_choice import EngineChoice


class CrackEngine(Protocol):
    meta: ModelMeta
    compute: str  # what it runs on, e.g. ``cpu fp32 openvino`` or ``cuda fp16 torch``

    def predict(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Crack probability per uint8 NHWC patch, float32 (N,)."""

    def segment(self, window: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """uint8 (H, W, 3) window, H and W multiples of 32 -> (crack probability as uint8 heatmap levels (H, W)
        (`vectors.heatmap`: 0..250, probability = level / 250), None without a decoder; float32 dense patch scores (H/32 - P/32 + 1, W/32 - P/32 + 1) for patch side P)."""


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


_ENGINES: dict[tuple, CrackEngine] = {}
_LOCK = threading.Lock()
LOG = logging.getLogger("survey_cracks.engines")


def load_engine(spec: ModelSpec) -> CrackEngine:
    """The process's engine for ``spec``, loaded once and shared by its threads.

    On a real cluster the client's path may not exist on the worker: the worker's own
    copy of the shipped model is used when its sha256 matches. ``engine: auto`` with
    ``precision: auto`` on a CPU runs what `engine_choice` measured fastest here.
    """
    key = (spec.path, spec.sha256, spec.device, spec.precision, spec.engine, spec.threads)
    with _LOCK:
        if key not in _ENGINES:
            path = Path(spec.path)
            if not path.is_file() and SHIPPED_MODEL.is_file() and file_sha256(SHIPPED_MODEL) == spec.sha256:
                path = SHIPPED_MODEL
            if not path.is_file() or file_sha256(path) != spec.sha256:
                raise ModelFileError(spec.path, "model file missing or different on this Dask worker",
                                     "put the same model file at the same path on every worker")
            engine, precision = resolve_engine(spec.engine, spec.device, spec.precision), spec.precision
            if measured_here(spec):
                choice = measured_choice(path, spec.threads)
                engine, precision = choice.engine, choice.precision
            _ENGINES[key] = _build_or_fall_back(path, spec, engine, precision)
        return _ENGINES[key]


def measured_choice(model_path: Path | None = None, threads: int = 1, remeasure: bool = False) -> EngineChoice:
    """The engine table ``auto`` chooses from for this model on this machine (measured now if not cached, or
    ``remeasure``)."""
    from survey_cracks.models.engine_choice import choose_engine

    path = Path(model_path) if model_path is not None else SHIPPED_MODEL
    spec = ModelSpec(str(path), file_sha256(path), device="cpu", threads=threads)
    return choose_engine(path, spec.sha256, threads, lambda name, prec: _build(path, spec, name, prec), remeasure=remeasure,
                         mask_threshold=read_meta(path).mask_threshold)


def measured_here(spec: ModelSpec) -> bool:
    """Whether ``auto`` is decided by measurement: engine and precision both auto, on a CPU, and not turned off
    (``SURVEY_CRACKS_MEASURE_ENGINES=0``: the test suite, whose tiny models would each be measured)."""
    enabled = os.environ.get("SURVEY_CRACKS_MEASURE_ENGINES", "1") != "0"
    return enabled and spec.engine == "auto" and spec.precision == "auto" and _on_cpu(spec.device)


def _build(path: Path, spec: ModelSpec, engine: str, precision: str) -> CrackEngine:
    """``engine`` at ``precision`` for the model at ``path``; raises when it cannot run here."""
    if engine in ("onnxruntime", "openvino"):
        from survey_cracks.models.onnx_engine import OnnxCrackClassifier

        # ONNX Runtime: the fp32 or the int8 export; OpenVINO: the fp32 export computed in fp32 or bf16
        wanted = "int8" if engine == "onnxruntime" else "bf16"
        return OnnxCrackClassifier(path, threads=spec.threads, sha256=spec.sha256,
                                   precision=wanted if precision == wanted else "fp32", runtime=engine)
    import torch

    from survey_cracks.models.network import CrackClassifier

    torch.set_num_threads(spec.threads)
    compile_cache = None
    if engine == "inductor":
        from survey_cracks.models.onnx_engine import onnx_cache_dir

        compile_cache = onnx_cache_dir() / "inductor"
    return CrackClassifier(path, device=spec.device, precision=precision, compile_cache=compile_cache)  # type: ignore[arg-type]


def _build_or_fall_back(path: Path, spec: ModelSpec, engine: str, precision: str) -> CrackEngine:
    """`_build`, or PyTorch when ``engine`` cannot run here, said in one log line."""
    try:
        return _build(path, spec, engine, precision)
    except Exception as exc:  # each runtime raises its own types for a missing package, kernel or device
        if engine == "torch":
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        LOG.warning("inference engine %s (%s) cannot run here (%s): falling back to torch", engine, precision, reason)
        return _build(path, spec, "torch", "auto" if precision == "int8" else precision)


def resolve_engine(engine: str, device: str, precision: str) -> str:
    """``auto``: ONNX Runtime where the model would run fp32 on the CPU, PyTorch otherwise (CUDA, native bf16);
    int8 runs on ONNX Runtime only.

    Decided from the hardware without importing torch (see `hardware`), as
    `network.pick_device` and `network.autocast_dtype` decide it.
    """
    if precision == "int8":
        if engine == "torch":
            raise ConfigError(None, "precision int8 runs on ONNX Runtime, not inference.engine: torch",
                              "set inference.engine: auto (or onnxruntime), or another precision")
        engine = "onnxruntime"
    if engine != "auto":
        if engine == "onnxruntime" and importlib.util.find_spec("onnxruntime") is None:
            raise ConfigError(None, "inference.engine is onnxruntime but onnxruntime is not installed",
                              "pip install onnxruntime, or set inference.engine: torch")
        return engine
    cpu_autocast = precision == "bf16" or (precision == "auto" and hardware.cpu_has_native_bf16())
    if _on_cpu(device) and not cpu_autocast and importlib.util.find_spec("onnxruntime"):
        return "onnxruntime"
    return "torch"


def _on_cpu(device: str) -> bool:
    return device == "cpu" or (device == "auto" and hardware.cuda_device_count() == 0)


def compute_of(device: str, precision: str, engine: str) -> str:
    """What the model runs on here, e.g. ``cpu fp32 onnxruntime`` or ``cuda fp16 torch``."""
    if resolve_engine(engine, device, precision) == "onnxruntime":
        # decided without torch: a worker on this path never imports it
        return f"cpu {'int8' if precision == 'int8' else 'fp32'} onnxruntime"
    from survey_cracks.models.network import autocast_dtype, pick_device, precision_name

    resolved = pick_device(device)  # type: ignore[arg-type]
    return f"{resolved.type} {precision_name(autocast_dtype(resolved, precision))} {'inductor' if engine == 'inductor' else 'torch'}"


__all__ = ["CrackEngine", "ModelSpec", "compute_of", "load_engine", "measured_choice", "measured_here", "resolve_engine"]
