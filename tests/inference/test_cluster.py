"""The cluster a run's windows go to: started early by the command line, taken over by the run."""

from __future__ import annotations

import os
import time

import dask
import psutil

from survey_cracks.config import InferenceConfig
from survey_cracks.inference.cluster import EarlyCluster, dask_client, worker_settings

CONFIG = InferenceConfig(workers=1, threads_per_worker=1, torch_threads=1)


def _children() -> set[int]:
    """This process's children, but multiprocessing's resource tracker (it outlives every cluster)."""
    children = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                children.add(child.pid)
        except psutil.Error:  # gone meanwhile
            pass
    return children


def _gone(pids: set[int], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids):
            return True
        time.sleep(0.2)
    return False


def test_an_early_cluster_is_the_one_the_client_runs_on_and_shuts_down_with_it():
    with EarlyCluster(CONFIG) as early:
        assert early.starting
        with dask_client(CONFIG, early=early) as client:
            assert not early.starting, "taken over by the client"
            workers = client.run(os.getpid)
            assert len(workers) == 1
            started = set(workers.values())
            assert started <= _children(), "the early cluster's worker, a process of this one"
    assert _gone(started), "the client's exit shuts the cluster down"


def test_an_early_cluster_that_no_run_takes_is_shut_down_on_leaving():
    before = _children()
    with EarlyCluster(CONFIG):
        deadline = time.monotonic() + 60
        while not (_children() - before) and time.monotonic() < deadline:  # a run with nothing to compute
            time.sleep(0.1)
        started = _children() - before
        assert started, "the cluster's processes were started"
    assert _gone(started)


def test_with_a_scheduler_address_nothing_is_started_early():
    before = _children()
    with EarlyCluster(InferenceConfig(scheduler="tcp://127.0.0.1:1")) as early:
        assert not early.starting
        assert _children() == before


def test_workers_that_will_run_pytorch_start_importing_it_as_they_start():
    import importlib.util

    from survey_cracks.inference.cluster import worker_settings

    quiet = "survey_cracks.inference.quiet_worker"  # every worker ignores Ctrl-C: the client handles it
    assert worker_settings(InferenceConfig(engine="torch"))["distributed.worker.preload"] == [quiet, "survey_cracks.models.preload"]
    if importlib.util.find_spec("onnxruntime"):
        assert worker_settings(InferenceConfig(engine="onnxruntime"))["distributed.worker.preload"] == [quiet], \
            "an ONNX Runtime worker never imports torch"
    with EarlyCluster(InferenceConfig(workers=1, threads_per_worker=1, engine="torch")) as early:
        with dask_client(InferenceConfig(workers=1, threads_per_worker=1, engine="torch"), early=early) as client:
            seen = client.run(lambda: __import__("sys").modules.get("survey_cracks.models.preload") is not None)
    assert list(seen.values()) == [True]


def test_the_cluster_checks_its_event_loops_once_a_second_not_fifty_times():
    with EarlyCluster(CONFIG) as early:
        with dask_client(CONFIG, early=early) as client:
            # the servers' running tick callbacks (Server.periodic_callbacks, tornado's callback_time in ms)
            worker_ticks = client.run(lambda dask_worker: dask_worker.periodic_callbacks["tick"].callback_time)
            scheduler_tick = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.periodic_callbacks["tick"].callback_time)
    assert list(worker_ticks.values()) == [1000.0] and scheduler_tick == 1000.0


def test_workers_get_dasks_spawn_environment_but_its_malloc_trim_threshold():
    environ = worker_settings(CONFIG)["distributed.nanny.pre-spawn-environ"]
    defaults = dask.config.get("distributed.nanny.pre-spawn-environ")
    assert "OPENBLAS_NUM_THREADS" in defaults and "MALLOC_TRIM_THRESHOLD_" in defaults  # what Dask sets today
    assert "MALLOC_TRIM_THRESHOLD_" not in environ  # it costs ResNet18 a fifth of its speed
    assert {k: environ[k] for k in defaults if k != "MALLOC_TRIM_THRESHOLD_"} == {
        **{k: v for k, v in defaults.items() if k != "MALLOC_TRIM_THRESHOLD_"}, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert environ["THP_MEM_ALLOC_ENABLE"] == "1" and environ["GDAL_CACHEMAX"] == str(CONFIG.gdal_cache_mb)
