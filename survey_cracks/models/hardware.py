"""What the machine runs fast, asked without importing torch.

Dask workers on the ONNX Runtime path never need torch (2.7 s and ~0.6 GB per
worker process to import), so the engine is chosen from the CUDA driver and the
CPU's feature flags. Where those cannot be read, torch is asked instead.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys
from functools import lru_cache
from pathlib import Path

# Linux /proc/cpuinfo flags of CPUs on which oneDNN runs bf16 natively (AVX-512 BF16, AMX; Arm BF16).
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """GPUs the CUDA driver reports (0 without a driver); torch's answer when torch is already loaded."""
    if "torch" in sys.modules:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        driver = ctypes.CDLL(name)
    except OSError:
        return 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _cpuinfo_value(*keys: str) -> str | None:
    """The first value of one of ``keys`` in Linux /proc/cpuinfo (None elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_name() -> str:
    """The CPU's model name: training figures are reproducible per kind of CPU, so the card names it."""
    return _cpuinfo_value("model name", "Model") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo ``flags`` or Arm ``Features``; empty where unreadable)."""
    return set((_cpuinfo_value("flags", "Features") or "").split())


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether the CPU runs bf16 natively (AVX-512 BF16 / AMX class, Arm BF16).

    Elsewhere bf16 is emulated: on an AVX2-only CPU ResNet18 at 128 px ran at 14 patches/s
    in bf16 against ~110 in fp32, so ``precision: auto`` must not pick it blindly.
    """
    flags = _cpuinfo_value("flags", "Features")
    if flags is not None:
        return bool(_BF16_FLAGS & set(flags.split()))
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
