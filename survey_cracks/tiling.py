"""Window geometry: where the model looks.

A *patch window* is a square window of the source raster, in source pixels, that
is read, resampled to the model's input size, and scored as a whole. Windows are
laid on a regular grid with a stride; the last window of each row and column is
shifted back inside the raster so every window keeps full size (a fixed-input CNN
must never see a half-empty edge patch). The number of windows along an axis of
length L is ``ceil((L - size) / stride) + 1`` (one when L <= size).

Everything here is pure arithmetic on integers and testable without a file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


def axis_offsets(length: int, size: int, stride: int) -> np.ndarray:
    """Offsets of windows along one axis, the last one shifted back inside."""
    if length <= size:
        return np.zeros(1, dtype=np.int64)
    count = math.ceil((length - size) / stride) + 1
    offsets = np.arange(count, dtype=np.int64) * stride
    offsets[-1] = length - size
    return np.unique(offsets)


@dataclass(frozen=True)
class PatchGrid:
    """All patch windows of one raster: ``offsets[i] = (row_off, col_off)``, side ``size``.

    The windows form a regular lattice, ``rows x cols`` in row-major order, so per-window
    values reshape to ``(len(rows), len(cols))``.
    """

    width: int
    height: int
    size: int
    stride: int
    rows: np.ndarray  # row offsets of the window rows
    cols: np.ndarray  # column offsets of the window columns

    @property
    def offsets(self) -> np.ndarray:
        """(N, 2) int64 (row_off, col_off), row-major."""
        rr, cc = np.meshgrid(self.rows, self.cols, indexing="ij")
        return np.stack([rr.ravel(), cc.ravel()], axis=1)

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def window(self, index: int) -> Window:
        row, col = self.rows[index // len(self.cols)], self.cols[index % len(self.cols)]
        return Window(int(col), int(row), self.size, self.size)

    def chunks(self, per_chunk: int, max_span_px: int = 4096) -> list[np.ndarray]:
        """Flat window indices for Dask tasks: rectangles of the lattice, in row-major order.

        A task spans at most ``max_span_px`` source pixels across, whatever the raster's
        width, so the file blocks one task revisits (its strips overlap by the stride)
        fit a small, fixed GDAL cache: memory stays flat from 100 MP to 10 GP.
        """
        span = max(1, (max_span_px - self.size) // self.stride + 1)
        cols_per_chunk = max(1, min(len(self.cols), span, per_chunk))
        rows_per_chunk = max(1, per_chunk // cols_per_chunk)
        ncols = len(self.cols)
        chunks = []
        for r0 in range(0, len(self.rows), rows_per_chunk):
            rows = np.arange(r0, min(r0 + rows_per_chunk, len(self.rows)))
            for c0 in range(0, ncols, cols_per_chunk):
                cols = np.arange(c0, min(c0 + cols_per_chunk, ncols))
                chunks.append((rows[:, None] * ncols + cols[None, :]).ravel())
        return chunks

    def lattice_overlap(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Indices into ``rows`` and ``cols`` of the window rows / columns that overlap ``window``."""
        r0, c0 = window.row_off, window.col_off
        rows = np.flatnonzero((self.rows < r0 + window.height) & (self.rows + self.size > r0))
        cols = np.flatnonzero((self.cols < c0 + window.width) & (self.cols + self.size > c0))
        return rows, cols

    def intersecting(self, window: Window) -> np.ndarray:
        """Flat indices of patch windows that overlap ``window``."""
        rows, cols = self.lattice_overlap(window)
        return (rows[:, None] * len(self.cols) + cols[None, :]).ravel()


def patch_grid(width: int, height: int, size: int, stride: int) -> PatchGrid:
    """Lay patch windows of ``size`` with ``stride`` over a ``width`` x ``height`` raster."""
    if size < 1 or stride < 1:
        raise ValueError("size and stride must be positive")
    return PatchGrid(width=width, height=height, size=size, stride=stride,
                     rows=axis_offsets(height, size, stride), cols=axis_offsets(width, size, stride))


def window_size_for_ground(patch_size: int, ground_patch_m: float | None, pixel_size_m: float | None) -> int:
    """Source pixels a patch covers: ``ground_patch_m / pixel size`` when both are known."""
    if ground_patch_m is None or pixel_size_m is None or pixel_size_m <= 0:
        return patch_size
    return max(8, int(round(ground_patch_m / pixel_size_m)))


def block_windows(width: int, height: int, block: int) -> list[Window]:
    """Non-overlapping blocks covering the raster (the last ones clipped)."""
    return [
        Window(col, row, min(block, width - col), min(block, height - row))
        for row in range(0, height, block)
        for col in range(0, width, block)
    ]


ALIGN = 32  # the trunk's stride: windows aligned to it see the same pixels at the same phase


@dataclass(frozen=True)
class ContextWindow:
    """A window the network runs on: ``read`` is ``core`` grown by a margin of context each side.

    The network's output is kept for ``core`` only (clipped to the raster), where it no
    longer depends on the window's edge; cores tile the raster without overlap, so
    neighbouring windows agree at their borders and no blending is needed.
    """

    core: Window
    read: Window

    @property
    def in_read(self) -> tuple[slice, slice]:
        """The core's rows and columns within the read (what a pass over the read keeps)."""
        top, left = int(self.core.row_off - self.read.row_off), int(self.core.col_off - self.read.col_off)
        return slice(top, top + int(self.core.height)), slice(left, left + int(self.core.width))


def context_windows(width: int, height: int, core: int, margin: int) -> list[ContextWindow]:
    """Cores of ``core`` px (multiples of 32, aligned to the raster origin) with ``margin`` px of context.

    A read window is its core, rounded up to 32 px, plus ``margin`` each side; parts of it
    outside the raster are filled by the reader (reflection). Cores on the right and bottom
    edges are clipped to the raster and so are their reads: a 10000 px side in 1024 px
    windows ends in a 784 px core, read 1056 px wide instead of 1280 (the network's work
    on the last row and column, a sixth less). Every other read has one size.
    """
    if core % ALIGN or margin % ALIGN or core <= 0 or margin < 0:
        raise ValueError(f"core ({core}) and margin ({margin}) must be multiples of {ALIGN}")

    def read_side(kept: int) -> int:
        return -(-kept // ALIGN) * ALIGN + 2 * margin

    windows = []
    for row in range(0, height, core):
        for col in range(0, width, core):
            kept_w, kept_h = min(core, width - col), min(core, height - row)
            windows.append(ContextWindow(core=Window(col, row, kept_w, kept_h),
                                         read=Window(col - margin, row - margin, read_side(kept_w), read_side(kept_h))))
    return windows


def footprint_crop(window: ContextWindow, valid: np.ndarray) -> tuple[slice, slice]:
    """The part of ``window``'s read the network must see: its core's valid pixels, grown by the margin.

    ``valid`` is the footprint over the read. Pixels further than the margin from a valid
    core pixel cannot change its score (that is what the margin is), and those outside the
    footprint are fill anyway: a window that the footprint's edge crosses runs the network
    on this part only (procedural 100 MP mosaic: 11 % less network work). The crop keeps the
    read's 32 px lattice, so every pixel is seen at the same phase as in the whole read.
    """
    core_rows, core_cols = window.in_read
    core = valid[core_rows, core_cols]
    rows, cols = np.flatnonzero(core.any(1)), np.flatnonzero(core.any(0))
    if not len(rows):
        raise ValueError("the window's core has no valid pixel: nothing to crop to")

    def span(first: int, last: int, margin: int, length: int) -> slice:
        # first/last valid core pixel, in read pixels: [first - margin, last + margin], snapped outwards
        return slice(max(0, (first - margin) // ALIGN * ALIGN), min(length, -(-(last + 1 + margin) // ALIGN) * ALIGN))

    def margin(before: int, kept: int, length: int) -> int:
        # the wider of the read's margins before and after the core (`photo_windows` reads have one side only)
        return max(before, length - before - -(-kept // ALIGN) * ALIGN)

    top, left = core_rows.start, core_cols.start  # the margin before the core, on each axis
    return (span(top + int(rows[0]), top + int(rows[-1]), margin(top, core.shape[0], valid.shape[0]), valid.shape[0]),
            span(left + int(cols[0]), left + int(cols[-1]), margin(left, core.shape[1], valid.shape[1]), valid.shape[1]))



def photo_windows(width: int, height: int, core: int, margin: int, least: int = ALIGN) -> list[ContextWindow]:
    """Windows sized to a photo: context only where a neighbouring window's pixels are, none beyond the image.

    A photo has nothing beyond its edges, so a margin of reflected pixels there is network work
    that sees no new pixel (`context_windows` reads a 448 px photo as 704 x 704: 2.5 x its pixels).
    Here an axis no longer than a full read (``core + 2 margin``) is one window of the image's own
    size rounded up to the stride; a longer one is cut into the fewest cores of at most ``core`` px,
    of equal size (a multiple of 32: equal shapes, and no window mostly margin), each read with the
    margin on its inner sides only, clipped to the image rounded up to the stride. Reads start on
    the 32 px lattice of the image, as in `context_windows`. A read is at least ``least`` px a side (the
    model's patch: its dense head pools that many pixels), the reader filling what lies beyond the photo.
    """
    if core % ALIGN or margin % ALIGN or core <= 0 or margin < 0:
        raise ValueError(f"core ({core}) and margin ({margin}) must be multiples of {ALIGN}")

    def spans(length: int) -> list[tuple[int, int, int, int]]:
        """(core start, core length, read start, read length) along one axis."""
        rounded = max(-(-length // ALIGN) * ALIGN, least)
        if rounded <= core + 2 * margin:
            return [(0, length, 0, rounded)]
        count = -(-length // core)
        share = -(-length // count)  # ceil(length / count)
        side = -(-share // ALIGN) * ALIGN  # rounded up to the stride
        out = []
        for start in range(0, length, side):
            kept = min(side, length - start)
            read_start = max(0, start - margin)
            read_stop = min(rounded, start + -(-kept // ALIGN) * ALIGN + margin)
            out.append((start, kept, read_start, read_stop - read_start))
        return out

    return [ContextWindow(core=Window(c0, r0, cw, rh), read=Window(rc0, rr0, rcw, rrh))
            for r0, rh, rr0, rrh in spans(height) for c0, cw, rc0, rcw in spans(width)]
