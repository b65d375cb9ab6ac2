"""Global-coordinate noise: a value depends only on (row, col, salt), never on the window it is computed in,
so tiles drawn separately join seamlessly."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np

Surface = Literal["concrete", "asphalt"]

_U64 = np.uint64
_MASK64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-mixed integer hash on uint64 arrays."""
    x = x ^ (x >> _U64(30))
    x = x * _U64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> _U64(27))
    x = x * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _salt(seed: int, stream: int) -> int:
    """Independent hash stream per (seed, purpose), as a 64-bit int."""
    return ((seed * 0x9E3779B97F4A7C15) ^ (stream * 0xD1B54A32D192ED03) ^ 0x5851F42D4C957F2D) & _MASK64


def _hash2d(rows: np.ndarray, cols: np.ndarray, salt: int) -> np.ndarray:
    """uint64 hash of every (row, col) pair; separable mixing keeps it cheap."""
    hr = _mix64(rows.astype(np.int64).astype(np.uint64) * _U64(0x9E3779B97F4A7C15) + _U64(salt))
    hc = _mix64(cols.astype(np.int64).astype(np.uint64) * _U64(0xC2B2AE3D27D4EB4F) + _U64(salt ^ 0x27D4EB2F165667C5))
    return _mix64(hr[:, None] ^ hc[None, :])


def _bits_uniform(h: np.ndarray, field_index: int) -> np.ndarray:
    """One of four independent 16-bit uniform [0, 1) fields packed in a 64-bit hash."""
    return ((h >> _U64(16 * field_index)) & _U64(0xFFFF)).astype(np.float32) * np.float32(1.0 / 65536.0)


def _bspline_weights(t: np.ndarray) -> np.ndarray:
    """Cubic B-spline weights for nodes i-1..i+2: C2-smooth value noise, no ringing."""
    t2, t3 = t * t, t * t * t
    return np.stack(
        [(1 - t) ** 3 / 6, (3 * t3 - 6 * t2 + 4) / 6, (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6], axis=1
    ).astype(np.float32)


def _interp_taps(pos: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """B-spline taps (indices into a local node range, weights) for pixel positions.

    ``pos`` are pixel-index coordinates on the global grid; node i sits at pixel
    ``i * cell + (cell - 1) / 2``, whatever window asks.
    """
    u = (pos + 0.5) / cell - 0.5
    i = np.floor(u).astype(np.int64)
    first = int(i[0]) - 1
    count = int(i[-1]) + 2 - first + 1
    idx = (i - 1 - first)[:, None] + np.arange(4)[None, :]
    return idx, _bspline_weights(u - i), first, count


def _bspline_std() -> float:
    """Std of B-spline-interpolated iid U(-1, 1) lattice values, to normalise noise to ~1."""
    t = (np.arange(256) + 0.5) / 256
    return float(np.sqrt((_bspline_weights(t) ** 2).sum(axis=1).mean() / 3.0))


_VALUE_NOISE_STD = _bspline_std()


class _WindowNoise:
    """Lazily computed, cached noise fields for one window of the global pixel grid."""

    def __init__(self, seed: int, row0: int, col0: int, h: int, w: int) -> None:
        self.seed, self.row0, self.col0, self.h, self.w = seed, row0, col0, h, w
        self._cache: dict[tuple[object, ...], np.ndarray] = {}

    def value(self, cell: int, stream: int) -> np.ndarray:
        """Smooth value noise, feature size ``cell`` px (>= 8), zero mean, std ~1.

        Evaluated exactly on a coarser grid aligned to the global one (every ``f``
        px, ``f`` ~ cell/4), then linearly upsampled: far cheaper than full
        resolution and indistinguishable for features this smooth. No BLAS, whose
        threads crawl when the cores are busy.
        """
        key = ("v", cell, stream)
        if key not in self._cache:
            f = 1
            while f * 2 <= cell // 4 and f < 16:
                f *= 2
            r0, c0 = self.row0 // f - 1, self.col0 // f - 1
            r1, c1 = -(-(self.row0 + self.h) // f) + 1, -(-(self.col0 + self.w) // f) + 1
            half = (f - 1) / 2
            iy, wy, ry, ny = _interp_taps(np.arange(r0, r1) * f + half, cell)
            ix, wx, rx, nx = _interp_taps(np.arange(c0, c1) * f + half, cell)
            lat = _hash2d(np.arange(ry, ry + ny), np.arange(rx, rx + nx), _salt(self.seed, 1000 + stream))
            vals = (lat >> _U64(40)).astype(np.float32) * np.float32(2.0 / (1 << 24)) - np.float32(1.0)
            rows = sum(wy[:, k, None] * vals[iy[:, k], :] for k in range(4))
            coarse = sum(wx[None, :, k] * rows[:, ix[:, k]] for k in range(4))
            coarse = np.ascontiguousarray(coarse * np.float32(1.0 / _VALUE_NOISE_STD), dtype=np.float32)
            if f > 1:
                coarse = cv2.resize(coarse, ((c1 - c0) * f, (r1 - r0) * f), interpolation=cv2.INTER_LINEAR)
            oy, ox = self.row0 - r0 * f, self.col0 - c0 * f
            self._cache[key] = coarse[oy : oy + self.h, ox : ox + self.w]
        return self._cache[key]

    _PAD = 16  # hash fields are made once per stream, this much larger than the window

    def hashed(self, stream: int, pad: int) -> np.ndarray:
        """Per-pixel uint64 hash over the window grown by ``pad`` (<= 16) px each side."""
        key = ("h", stream)
        if key not in self._cache:
            p = self._PAD
            rows = np.arange(self.row0 - p, self.row0 + self.h + p)
            cols = np.arange(self.col0 - p, self.col0 + self.w + p)
            self._cache[key] = _hash2d(rows, cols, _salt(self.seed, 2000 + stream))
        cut = self._PAD - pad
        full = self._cache[key]
        return full[cut : full.shape[0] - cut, cut : full.shape[1] - cut]

    def blurred(self, stream: int, field_index: int, sigma: float) -> np.ndarray:
        """White noise blurred with ``sigma`` (<= 5) px: granular texture, std ~1, seamless."""
        key = ("b", stream, field_index, sigma)
        if key not in self._cache:
            pad = int(math.ceil(3 * sigma))
            ksize = 2 * pad + 1
            u = _bits_uniform(self.hashed(stream, pad), field_index) - np.float32(0.5)
            out = cv2.GaussianBlur(u, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT)
            k = cv2.getGaussianKernel(ksize, sigma).ravel()
            norm = math.sqrt(1.0 / 12.0) * float((k**2).sum())
            self._cache[key] = out[pad : pad + self.h, pad : pad + self.w] * np.float32(1.0 / norm)
        return self._cache[key]

    def white(self, stream: int, field_index: int) -> np.ndarray:
        """Unblurred uniform [-1, 1) noise: sensor grain."""
        return _bits_uniform(self.hashed(stream, 0), field_index) * np.float32(2.0) - np.float32(1.0)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) * np.float32(1.0 / (e1 - e0)), 0.0, 1.0)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)
