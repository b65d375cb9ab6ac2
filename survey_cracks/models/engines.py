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
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from survey_cracks.errors import ConfigError, ModelFileError
from survey_cracks.models import hardware
from survey_cracks.models.checkpoint import SHIPPED_MODEL, ModelMeta, file_sha256


class CrackEngine(Protocol):
    meta: ModelMeta

    def predict(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Crack probability per uint8 NHWC patch, float32 (N,)."""

    def segment(self, window: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """uint8 (H, W, 3) window, H and W multiples of 32 -> (crack probability (H, W), None without a decoder;
        dense patch scores (H/32 - P/32 + 1, W/32 - P/32 + 1) for patch side P)."""


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


def load_engine(spec: ModelSpec) -> CrackEngine:
    """The process's engine for ``spec``, loaded once and shared by its threads.

    On a real cluster the client's path may not exist on the worker: the worker's own
    copy of the shipped model is used when its sha256 matches.
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
            if resolve_engine(spec.engine, spec.device, spec.precision) == "onnxruntime":
                from survey_cracks.models.onnx_engine import OnnxCrackClassifier

                precision = "int8" if spec.precision == "int8" else "fp32"
                _ENGINES[key] = OnnxCrackClassifier(path, threads=spec.threads, sha256=spec.sha256, precision=precision)
            else:
                import torch

                from survey_cracks.models.network import CrackClassifier

                torch.set_num_threads(spec.threads)
                _ENGINES[key] = CrackClassifier(path, device=spec.device, precision=spec.precision)  # type: ignore[arg-type]
        return _ENGINES[key]


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
    on_cpu = device == "cpu" or (device == "auto" and hardware.cuda_device_count() == 0)
    cpu_autocast = precision == "bf16" or (precision == "auto" and hardware.cpu_has_native_bf16())
    if on_cpu and not cpu_autocast and importlib.util.find_spec("onnxruntime"):
        return "onnxruntime"
    return "torch"


def compute_of(device: str, precision: str, engine: str) -> str:
    """What the model runs on here, e.g. ``cpu fp32 onnxruntime`` or ``cuda fp16 torch``."""
    if resolve_engine(engine, device, precision) == "onnxruntime":
        # decided without torch: a worker on this path never imports it
        return f"cpu {'int8' if precision == 'int8' else 'fp32'} onnxruntime"
    from survey_cracks.models.network import autocast_dtype, pick_device, precision_name

    resolved = pick_device(device)  # type: ignore[arg-type]
    return f"{resolved.type} {precision_name(autocast_dtype(resolved, precision))} torch"


__all__ = ["CrackEngine", "ModelSpec", "compute_of", "load_engine", "resolve_engine"]
