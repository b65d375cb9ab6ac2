"""The Dask cluster a run's windows go to: a LocalCluster of worker processes, or a scheduler's.

Kept apart from `inference` (reading windows, running the network) so that the command line
can start the cluster before it imports the rest of the pipeline (`EarlyCluster`).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import dask
from distributed import Client, LocalCluster

from survey_cracks.background import in_background
from survey_cracks.config import InferenceConfig
from survey_cracks.errors import ConfigError, InfrastructureError
from survey_cracks.models.engines import resolve_engine

# Each window's activations are tens of MB, allocated and freed again for every window: in
# 4 kB pages that is a page fault per 4 kB, a tenth of a worker's CPU time on this machine.
# PyTorch's allocator backs its blocks of 2 MB and more with transparent huge pages when
# asked (where the kernel offers them: "madvise" or "always"); the memory used is the same.
NETWORK_ENVIRONMENT = {"THP_MEM_ALLOC_ENABLE": "1"}


def worker_settings(config: InferenceConfig) -> dict[str, object]:
    """Dask settings for long, CPU-bound model tasks.

    Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536; setting it at all turns off
    glibc's adaptive mmap threshold, so every batch's activations are mapped and
    unmapped again: measured here, that costs ResNet18 a fifth of its speed. The
    environment below is Dask's own (OPENBLAS_NUM_THREADS=1 and the rest) without that
    one key, so malloc is left alone (docs/benchmarks.md, "What was measured on the way", says what one glibc arena
    keeping freed memory would gain, and why it is not used), plus our thread counts and
    `NETWORK_ENVIRONMENT`. GDAL's block cache is capped so memory does not grow with the raster.
    Workers that will run the model on PyTorch start importing it as they start
    (`models.preload`); ONNX Runtime workers never import torch.
    """
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # costs ResNet18 a fifth of its speed: see above
    settings: dict[str, object] = {
        "distributed.worker.profile.enabled": False,
        # Every Dask server (scheduler, nanny, worker) checks its event loop's health this often; at the
        # default 20 ms the checks alone took ~4 % of a core in the client and ~2 % in a worker, beside
        # windows that each take seconds. A blocked loop is still reported (after `tick.limit`, 3 s).
        "distributed.admin.tick.interval": "1s",
        # A whole mapping (dask.config.set would rewrite '_' to '-' in dotted keys), so Dask's defaults are merged in.
        "distributed.nanny.pre-spawn-environ": {
            **environ,
            "OMP_NUM_THREADS": str(config.torch_threads),
            "MKL_NUM_THREADS": str(config.torch_threads),
            "GDAL_CACHEMAX": str(config.gdal_cache_mb),
            **NETWORK_ENVIRONMENT,
        },
    }
    try:
        on_torch = resolve_engine(config.engine, config.device, config.precision) == "torch"
    except ConfigError:
        on_torch = False  # the run reports the setting; the workers just start without the head start
    # Workers ignore Ctrl-C (`inference.quiet_worker`); those that will run PyTorch import it as they start.
    settings["distributed.worker.preload"] = ["survey_cracks.inference.quiet_worker",
                                              *(["survey_cracks.models.preload"] if on_torch else [])]
    return settings


@contextlib.contextmanager
def dask_client(config: InferenceConfig, shutdown: contextlib.ExitStack | None = None,
                early: EarlyCluster | None = None) -> Iterator[Client]:
    """A client on ``config.scheduler``, or on a LocalCluster of worker processes.

    An unreachable or malformed scheduler address is an InfrastructureError (one line,
    exit code 3). The LocalCluster serves Dask's dashboard on a free port when bokeh is
    installed (`dashboard_of` tells where); without bokeh it serves only health pages.
    The client is closed on leaving. The LocalCluster is shut down then too, unless
    ``shutdown`` is given: its worker processes take a second or more to exit, so a caller
    with work left can leave that on ``shutdown`` and close it when it suits (on a thread).
    An error inside shuts it down on the way out regardless. ``early``: the LocalCluster
    already being started (`EarlyCluster`), used instead of starting one.
    """
    if config.scheduler:
        try:
            client = Client(config.scheduler, timeout=f"{config.scheduler_timeout_s}s")
        except (OSError, ValueError, TypeError) as error:  # distributed raises OSError on timeout, ValueError on a bad address
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise InfrastructureError(config.scheduler, f"cannot reach the Dask scheduler ({reason})",
                                      "check the address (tcp://host:8786) and that the scheduler is running") from None
        with client:
            yield client
        return
    with contextlib.ExitStack() as cluster:
        owned, local = early.take() if early is not None and early.starting else local_cluster(config)
        cluster.enter_context(owned)
        with Client(local) as client:  # closed here, on this thread: it resets a context variable set here
            yield client
        if shutdown is not None:
            shutdown.push(cluster.pop_all())


def local_cluster(config: InferenceConfig) -> tuple[contextlib.ExitStack, LocalCluster]:
    """A LocalCluster of worker processes, with what shuts it down (and drops its settings)."""
    with contextlib.ExitStack() as cluster:
        # The settings stay for the cluster's life: a nanny reads them again when it restarts a dead worker.
        cluster.enter_context(dask.config.set(worker_settings(config)))
        local = cluster.enter_context(LocalCluster(
            n_workers=config.workers,
            threads_per_worker=config.worker_threads(),
            processes=True,
            dashboard_address=":0",  # a free port: the dashboard when bokeh is installed, else only Dask's health pages
            silence_logs=logging.CRITICAL,  # a task's error reaches the client as one line per raster, not a worker traceback
            memory_limit=0,
        ))
        return cluster.pop_all(), local
    raise AssertionError("unreachable")  # for type checkers: the with block returns


class EarlyCluster:
    """The LocalCluster of `config`, started on a thread before the run needs it.

    A worker process takes seconds to start and load the model (importing torch alone is
    more than a second), and the client as long to import its own libraries and plan: begun
    first thing (`survey-cracks run` does so before importing the pipeline), the two overlap.
    `dask_client` takes the cluster over; one never taken is shut down on leaving (a run with
    nothing to compute). With a scheduler address there is nothing to start.
    """

    def __init__(self, config: InferenceConfig) -> None:
        self._future = None if config.scheduler else in_background(lambda: local_cluster(config), "cluster")

    @property
    def starting(self) -> bool:
        return self._future is not None

    def take(self) -> tuple[contextlib.ExitStack, LocalCluster]:
        """The cluster and its shutdown, now the caller's (raises what starting it raised)."""
        assert self._future is not None, "taken twice, or nothing was started"
        future, self._future = self._future, None
        return future.result()

    def __enter__(self) -> EarlyCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._future is not None:
            future, self._future = self._future, None
            if future.exception() is None:
                future.result()[0].close()


def dashboard_of(client: Client) -> str:
    """The dashboard's address, or why there is none."""
    services = client.scheduler_info().get("services", {})
    if "dashboard" not in services:
        return "none (the scheduler serves none; install bokeh for one)"
    return client.dashboard_link


__all__ = ["EarlyCluster", "NETWORK_ENVIRONMENT", "dashboard_of", "dask_client", "local_cluster", "worker_settings"]
