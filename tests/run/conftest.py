"""The Dask cluster the run tests hand to `survey-cracks run --scheduler`: one per test module.

A module-scoped cluster is started once and shared by the module's tests, which pay its start-up
(a worker process importing torch) once. One worker with one thread unless the module sets
``CLUSTER_THREADS`` (the photo collections run two tasks at once, as a 2-core machine does).
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cluster(request):
    from distributed import LocalCluster

    threads = getattr(request.module, "CLUSTER_THREADS", 1)
    with LocalCluster(n_workers=1, threads_per_worker=threads, processes=True, dashboard_address=None) as local:
        yield local
