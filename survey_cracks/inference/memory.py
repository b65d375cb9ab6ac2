"""Handing freed memory back to the system.

glibc keeps what a process frees in its malloc arenas, for reuse: a long run's resident
size then stays at its high-water mark, and a Dask worker resting between rasters still
holds what its last windows needed. Trimming at quiet moments keeps the run's peak (client
and workers together) at what is in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's malloc_trim); False where there is none."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


__all__ = ["trim_heap"]
