"""Imported by each LocalCluster worker as it starts (Dask's worker preload, `cluster.worker_settings`): SIGINT ignored.

Ctrl-C at a terminal reaches the whole process group. A worker that took it would die in the
middle of a task with a traceback on the console; the client alone handles it (`run.interrupt`),
keeps the finished windows and shuts the workers down. SIGTERM keeps its default: the nanny
stops a worker with it when one does not close in time.
"""

from __future__ import annotations

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
