"""Which windows of a raster are in its staged heatmap, so a rerun after a kill resumes from them.

The journal sits beside the staged heatmap in the raster's work folder: a header line
(what the heatmap is made from: raster fingerprint, model, settings, window grid) and
one line per finished window. Lines are appended only for windows whose pixels the
staged heatmap has flushed to disk (`StagedHeatmap.flush`, then `WindowJournal.commit`,
which fsyncs), so a kill at any moment leaves a journal that promises no more than the
staging file holds; each line carries a checksum of the window's levels, checked when
resumed. A journal of other inputs or another grid is never resumed from.
"""

from __future__ import annotations

import json
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.windows import Window

from survey_cracks.outputs import write_text

JOURNAL = ".windows.journal"
FLUSH_WINDOWS = 8  # a flush (and a journal commit) after this many finished windows,
FLUSH_SECONDS = 10.0  # or this long after the last one, whichever comes first


@dataclass(frozen=True)
class FinishedWindow:
    """One finished window: ``core`` is where it wrote ``crc`` (of its levels); None when outside the footprint."""

    index: int
    core: tuple[int, int, int, int] | None = None
    crc: int = 0

    @property
    def written(self) -> bool:
        return self.core is not None

    def window(self) -> Window:
        assert self.core is not None
        return Window(*self.core)


def checksum(levels: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(levels).tobytes())


class WindowJournal:
    """Append-only record of finished windows (see the module docstring)."""

    def __init__(self, path: Path, header: dict[str, Any], finished: dict[int, FinishedWindow] | None = None) -> None:
        self.path, self.header = Path(path), header
        self.finished: dict[int, FinishedWindow] = dict(finished or {})
        self.pending: list[FinishedWindow] = []
        self.committed_at = time.monotonic()
        if finished is None:
            self.path.write_text(json.dumps(header, sort_keys=True) + "\n")
            self._sync()

    @classmethod
    def reopen(cls, path: Path, header: dict[str, Any]) -> tuple["WindowJournal | None", str]:
        """The journal at ``path`` when it was written for ``header``, else None; and why, in words."""
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            return None, "no windows journal"
        if not lines or lines[0] != json.dumps(header, sort_keys=True):
            return None, "the windows journal is for other inputs, model, settings or windows"
        finished = {}
        for number, line in enumerate(lines[1:], 2):
            try:
                entry = json.loads(line)
                finished[entry["i"]] = FinishedWindow(int(entry["i"]), tuple(entry["core"]) if entry["core"] else None,
                                                      int(entry["crc"]))
            except (ValueError, KeyError, TypeError):
                if number < len(lines):
                    return None, "the windows journal is unreadable"
                # A last line cut short (power cut while appending) was never promised: drop it.
                write_text(path, "\n".join(lines[:-1]) + "\n", fsync=True)
        return cls(path, header, finished), ""

    def add(self, entry: FinishedWindow) -> None:
        """``entry`` is written to the staged heatmap; it is journaled at the next `commit`."""
        self.pending.append(entry)

    def due(self) -> bool:
        """Time to flush the staged heatmap and `commit`."""
        return len(self.pending) >= FLUSH_WINDOWS or (
            bool(self.pending) and time.monotonic() - self.committed_at >= FLUSH_SECONDS)

    def commit(self) -> None:
        """Journal the pending windows; call only once their pixels are flushed."""
        if self.pending:
            with open(self.path, "a") as fh:
                fh.writelines(json.dumps({"i": e.index, "core": list(e.core) if e.core else None, "crc": e.crc}) + "\n"
                              for e in self.pending)
                fh.flush()
                os.fsync(fh.fileno())
            self.finished.update((e.index, e) for e in self.pending)
            self.pending.clear()
        self.committed_at = time.monotonic()

    def forget(self, index: int) -> None:
        """A journaled window whose pixels did not survive: it is computed again."""
        self.finished.pop(index, None)

    def _sync(self) -> None:
        with open(self.path, "rb+") as fh:
            os.fsync(fh.fileno())


__all__ = ["FLUSH_SECONDS", "FLUSH_WINDOWS", "JOURNAL", "FinishedWindow", "WindowJournal", "checksum"]
