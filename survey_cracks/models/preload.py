"""Imported by each LocalCluster worker as it starts (Dask's worker preload, `cluster.worker_settings`).

PyTorch takes over a second to import (torchvision, without TorchDynamo, another 0.1 s: see
`tuning.deferred_torch_dynamo`), most of a worker's start-up. Begun
here on a thread, the import overlaps the worker's registration and the client's planning,
instead of starting when the first task (`inference.warm`) asks for the model; that task's
own import then waits for this one to finish (Python's per-module import locks).
"""

from __future__ import annotations

import threading


def _import_network() -> None:
    import survey_cracks.models.network  # noqa: F401  (imported for its side effect: torch loaded)


threading.Thread(target=_import_network, name="import-torch", daemon=True).start()
