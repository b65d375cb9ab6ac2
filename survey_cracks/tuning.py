"""Speed-ups that lean on one platform or one library version, in one place, behind one switch.

Each is a measured answer to a cost of our own runs (the figures are in docs/benchmarks and
the comments where they are used), but none is needed for a run to be right: with
``SURVEY_CRACKS_TUNING=off`` in the environment every one is off and a run computes exactly the
same outputs. A single one is turned off with ``SURVEY_CRACKS_TUNING=-heap_trim`` (a comma list
of names with a minus each), which is how `bench/tuning.py` measures them one by one.

- ``heap_trim``: glibc's ``malloc_trim`` after a window of a shape of its own, after each journal
  commit and between rasters: glibc keeps freed heap in its arenas, so without it a worker's and the
  client's resident size stay at their high-water mark (the run's peak memory, not its speed).
- ``deferred_dynamo``: torchvision 0.29's ``ops.roi_align`` takes one helper from
  ``torch._dynamo.utils`` at import time and so loads TorchDynamo (~850 modules, ~1.2 s and ~140 MB
  per worker) for a function this network never calls. While torchvision is imported, that module
  is a stand-in whose helper loads the real one when first called. A torchvision that takes any
  other name gets the real module at once: it only loses the saving, and `dynamo_gave_way` says so.

Measured by `bench/tuning.py` (100 MP, two rounds, bench/results/tuning.json): without ``heap_trim`` the
run's peak is 1.97 GiB against 1.68, without ``deferred_dynamo`` 1.93 GiB, with both off 2.18 GiB (over
the 2 GiB target); the seconds differ by less than the rounds' spread. Both stay.

Removed: ``gc.freeze()`` before the CLI exits and importing matplotlib while the workers load the
model. Each saved about 0.4 s of a 45 s 100 MP run when it was added (under 1 %), well inside the
shared machine's drift of up to 30 %, so no benchmark round can tell them from noise.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import importlib
import os
import sys
import types
from functools import lru_cache
from typing import Callable, Iterator, Literal

Tuning = Literal["heap_trim", "deferred_dynamo"]
TUNINGS: tuple[Tuning, ...] = ("heap_trim", "deferred_dynamo")
SWITCH = "SURVEY_CRACKS_TUNING"


def enabled(name: Tuning) -> bool:
    """Whether the speed-up ``name`` is on: all are, unless ``SURVEY_CRACKS_TUNING`` says ``off`` or ``-name``.

    Read from the environment on each call, so Dask workers (which inherit it) follow the client.
    """
    setting = os.environ.get(SWITCH, "on").strip().lower()
    if setting in ("off", "0", "false", "no"):
        return False
    return f"-{name}" not in {part.strip() for part in setting.split(",")}


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's malloc_trim).

    False where there is no glibc or the ``heap_trim`` tuning is off.
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None and enabled("heap_trim") else False


_DYNAMO_UTILS = "torch._dynamo.utils"
dynamo_gave_way: list[str] = []  # names the stand-in had to take from the real module (each loaded it)


@contextlib.contextmanager
def deferred_torch_dynamo() -> Iterator[None]:
    """Imports inside do not load TorchDynamo just because torchvision names one of its helpers (see the module)."""
    if _DYNAMO_UTILS in sys.modules or not enabled("deferred_dynamo"):
        yield
        return

    def real(attribute: str) -> object:
        if sys.modules.get(_DYNAMO_UTILS) is stand_in:
            del sys.modules[_DYNAMO_UTILS]
        return getattr(importlib.import_module(_DYNAMO_UTILS), attribute)

    def later(attribute: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            return real(attribute)(*args, **kwargs)  # type: ignore[operator]
        return call

    class StandIn(types.ModuleType):
        def __getattr__(self, attribute: str) -> object:
            if attribute.startswith("__"):  # introspection (inspect.getmodule asks every module for __file__)
                raise AttributeError(attribute)
            dynamo_gave_way.append(attribute)
            return real(attribute)

    stand_in = StandIn(_DYNAMO_UTILS)
    stand_in.is_compile_supported = later("is_compile_supported")  # type: ignore[attr-defined]
    sys.modules[_DYNAMO_UTILS] = stand_in
    try:
        yield
    finally:
        if sys.modules.get(_DYNAMO_UTILS) is stand_in:
            del sys.modules[_DYNAMO_UTILS]


__all__ = ["SWITCH", "TUNINGS", "Tuning", "deferred_torch_dynamo", "dynamo_gave_way", "enabled", "trim_heap"]
