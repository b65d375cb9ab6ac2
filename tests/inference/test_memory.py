import sys

import pytest

from tests.conftest import run_in_fresh_python


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_heap_gives_freed_heap_back_that_glibc_would_keep():
    """Freed blocks below the heap's top stay resident until trimmed: what a worker holds after a raster."""
    script = """
import numpy as np, psutil
from survey_cracks.inference.memory import trim_heap
rss = lambda: psutil.Process().memory_info().rss / 2**20
blocks = [np.ones(100_000 // 8) for _ in range(3000)]  # ~300 MB of 100 kB heap blocks (under mmap's threshold)
keep = blocks[-1]
del blocks  # all freed but the top one, so glibc cannot shrink the heap by itself
before = rss()
assert trim_heap()
print(before - rss())
"""
    given_back = run_in_fresh_python(script, timeout=120)
    assert float(given_back) > 200, f"only {given_back} MB given back"
