"""Work a run starts and collects later, on a thread of its own.

A run's stages follow each other, but some of their work only needs to be done by the
time a later stage looks for it: the COG copy (GDAL releases the GIL) while the vectors are
merged, the cluster's shutdown while the reports are written. The future says when it is done and
raises what the work raised.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


def in_background(work: Callable[[], T], name: str) -> Future[T]:
    """Start ``work`` on a thread named ``name``; the caller goes on at once."""
    pool = ThreadPoolExecutor(1, thread_name_prefix=name)
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


__all__ = ["in_background"]
