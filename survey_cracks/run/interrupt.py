"""Ctrl-C and SIGTERM: the run stops where it is, keeps what it finished, and says so in one line.

A terminal's Ctrl-C reaches the whole process group: the client and its Dask workers. The
workers ignore SIGINT (`inference.quiet_worker`), so only the client reacts: `interruptible`
turns SIGINT and SIGTERM (what cron, systemd and Kubernetes send) into `Interrupted`, which
unwinds the run like any exception: the windows journal is committed (`keep_windows`), run.json
says ``interrupted``, the LocalCluster is shut down, and `survey-cracks run` exits 128 + the
signal's number (130 for SIGINT, 143 for SIGTERM), as a shell reports a process killed by it.
Signals that arrive while that happens are ignored: the cleanup is what makes the rerun resume.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from survey_cracks.run.journal import WindowJournal
    from survey_cracks.vectors.heatmap import StagedHeatmap

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by ``signum``; ``windows``: (kept, of) of the raster it was in, when it was segmenting one."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.windows: tuple[str, int, int] | None = None
        self.reported = False

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def as_interrupted(error: KeyboardInterrupt) -> Interrupted:
    """``error`` as an `Interrupted` (a plain KeyboardInterrupt is Ctrl-C without our handler: SIGINT)."""
    return error if isinstance(error, Interrupted) else Interrupted(signal.SIGINT)


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Interrupted` in the main thread inside; the previous handlers are restored on leaving."""

    def ignore(signum: int, frame: FrameType | None) -> None:
        """A second Ctrl-C while the run keeps its work: that cleanup is what the rerun resumes from."""

    def stop(signum: int, frame: FrameType | None) -> None:
        for number in SIGNALS:
            signal.signal(number, ignore)
        raise Interrupted(signum)

    previous = {number: signal.signal(number, stop) for number in SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def keep_windows(staged: StagedHeatmap, journal: WindowJournal, raster: str, total: int) -> Iterator[None]:
    """On Ctrl-C inside, the windows already written are flushed and journaled before the run unwinds, so the rerun
    resumes from them (the journal is otherwise committed only every few windows)."""
    try:
        yield
    except KeyboardInterrupt as error:
        interrupted = as_interrupted(error)
        with contextlib.suppress(Exception):  # a journal not committed only costs the rerun those windows
            staged.flush()  # pixels on disk before the journal says so
            journal.commit()
        interrupted.windows = (raster, len(journal.finished), total)
        raise interrupted from None


def interrupted_line(error: Interrupted) -> str:
    """The one line a person reads."""
    if error.windows is not None:
        from survey_cracks.deliver.console import counted  # here: this module is imported before the run, light

        raster, kept, total = error.windows
        return f"interrupted: {kept} of {counted(total, 'window')} of {raster} kept; run the same command to resume"
    return "interrupted: finished rasters are kept; run the same command to resume"


__all__ = ["Interrupted", "as_interrupted", "interrupted_line", "interruptible", "keep_windows"]
