"""Rendering one window of a scene: surface texture, confusers and cracks, from global pixel coordinates."""

from __future__ import annotations

import math

import cv2
import numpy as np
import rasterio.features
import shapely
from affine import Affine
from rasterio.enums import MergeAlg
from shapely.geometry import box

from survey_cracks.synthetic.features import _SIGMA, _Layer
from survey_cracks.synthetic.noise import _smoothstep, _WindowNoise
from survey_cracks.synthetic.scene import _Scene


def _query(layer: _Layer, scene: _Scene, row0: int, col0: int, h: int, w: int, pad: int) -> list[int]:
    """Indices of a layer's features that can touch the padded window."""
    if layer.tree is None:
        return []
    t = scene.transform
    xs, ys = zip(*(t * (c, r) for c, r in ((col0 - pad, row0 - pad), (col0 + w + pad, row0 + h + pad))))
    return [int(i) for i in layer.tree.query(box(min(xs), min(ys), max(xs), max(ys)), predicate="intersects")]


def _rasterize(
    layer: _Layer, idx: list[int], transform: Affine, shape: tuple[int, int], merge: MergeAlg = MergeAlg.replace
) -> np.ndarray:
    """Burn features with their strengths, clipped first to the raster (long lines
    and big blobs would otherwise cost their full vertex count in every window)."""
    assert layer.array is not None
    (x0, y0), (x1, y1) = transform * (-1, -1), transform * (shape[1] + 1, shape[0] + 1)
    clipped = shapely.clip_by_rect(layer.array[idx], min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return rasterio.features.rasterize(
        [(g, layer.values[i]) for g, i in zip(clipped, idx) if not g.is_empty],
        out_shape=shape,
        transform=transform,
        fill=0.0,
        dtype="float32",
        merge_alg=merge,
    )


def _soft_alpha(scene: _Scene, kind: str, row0: int, col0: int, h: int, w: int) -> np.ndarray | None:
    """Blurred coverage of one confuser kind in the window, or None if absent.

    Wide blurs are done on a grid coarser by a power of two that is aligned to the
    global pixel grid, then upsampled, so they stay cheap and seamless.
    """
    layer = scene.layers[kind]
    sigma = _SIGMA[kind]
    f = 1
    while f * 2 <= sigma / 2.5 and f < 16:
        f *= 2
    sl = sigma / f
    pad_lo = int(math.ceil(4 * sl)) + 3
    idx = _query(layer, scene, row0, col0, h, w, pad_lo * f)
    if not idx:
        return None
    r0, c0 = row0 // f - pad_lo, col0 // f - pad_lo
    r1, c1 = -(-(row0 + h) // f) + pad_lo, -(-(col0 + w) // f) + pad_lo
    transform = scene.transform * Affine.translation(c0 * f, r0 * f) * Affine.scale(f)
    merge = MergeAlg.add if kind.startswith("stain") else MergeAlg.replace
    cov = _rasterize(layer, idx, transform, (r1 - r0, c1 - c0), merge)
    if not cov.any():
        return None
    np.minimum(cov, 1.0, out=cov)
    ks = 2 * int(math.ceil(3 * sl)) + 1
    cov = cv2.GaussianBlur(cov, (ks, ks), sl, borderType=cv2.BORDER_REPLICATE)
    if f > 1:
        cov = cv2.resize(cov, ((c1 - c0) * f, (r1 - r0) * f), interpolation=cv2.INTER_LINEAR)
    oy, ox = row0 - r0 * f, col0 - c0 * f
    return cov[oy : oy + h, ox : ox + w]


def _surface(scene: _Scene, nz: _WindowNoise) -> np.ndarray:
    """Luminance of bare concrete or asphalt (float32, grey levels)."""
    f32 = np.float32
    g = scene.grain
    if scene.surface == "concrete":
        lum = f32(scene.base) + f32(9.0) * nz.value(512, 0) + f32(5.5) * nz.value(128, 1)
        lum += f32(3.5) * nz.value(32, 2) + f32(2.5) * nz.value(8, 3)
        agg = nz.blurred(0, 0, 1.4 * g)
        fine = nz.blurred(0, 1, 0.6 * g)
        lum += f32(5.0) * agg + f32(7.0) * _smoothstep(1.2, 2.4, agg) - f32(6.0) * _smoothstep(1.4, 2.6, -agg)
        lum += f32(3.0) * fine
        # pores: isolated dark pinholes a couple of pixels wide
        pore = nz.blurred(0, 2, 0.9 * g)
        lum *= f32(1.0) - f32(0.45) * _smoothstep(2.6, 3.6, -pore)
    else:
        lum = f32(scene.base) + f32(7.0) * nz.value(512, 0) + f32(4.5) * nz.value(128, 1) + f32(2.5) * nz.value(32, 2)
        big = nz.blurred(0, 0, 2.0 * g)
        small = nz.blurred(0, 1, 1.0 * g)
        stones = _smoothstep(0.7, 1.7, big + f32(0.45) * small)
        lum += f32(0.45) * scene.base * stones * (f32(0.75) + f32(0.25) * nz.value(8, 12))
        lum += f32(7.0) * small - f32(0.35) * scene.base * _smoothstep(1.3, 2.3, -small)
        lum += f32(3.0) * nz.white(2, 1)
    return lum


def _render_window(scene: _Scene, row0: int, col0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """RGB uint8 (3, h, w), crack mask 0/255 and validity mask 0/255 (None: all valid).

    Neutral effects are applied to one luminance plane and colour only where it
    matters (rust, paint, moss, shadows), which keeps the cost per pixel low.
    """
    f32 = np.float32
    valid: np.ndarray | None = None
    if scene.footprint is not None:
        x0, y0 = scene.transform * (col0, row0)
        x1, y1 = scene.transform * (col0 + w, row0 + h)
        win_box = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if not scene.footprint.intersects(win_box):
            return np.zeros((3, h, w), np.uint8), np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
        if scene.footprint.contains(win_box):
            valid = np.full((h, w), 255, np.uint8)
        else:
            valid = rasterio.features.rasterize(
                [(scene.footprint, 255)],
                out_shape=(h, w),
                transform=scene.transform * Affine.translation(col0, row0),
                fill=0,
                dtype="uint8",
            )

    nz = _WindowNoise(scene.seed, row0, col0, h, w)
    lum = _surface(scene, nz)

    def soft(kind: str) -> np.ndarray | None:
        return _soft_alpha(scene, kind, row0, col0, h, w)

    if (a := soft("bughole")) is not None:
        lum *= f32(1.0) - np.minimum(a * f32(1.6), f32(1.0)) * f32(0.6)
    if (a := soft("stain_dark")) is not None:
        mottle = np.clip(f32(0.65) + f32(0.3) * nz.value(16, 5) + f32(0.15) * nz.value(64, 6), 0.0, 1.0)
        lum *= f32(1.0) - np.minimum(a, f32(1.0)) * mottle * f32(0.42)
    if (a := soft("joint_fill")) is not None:
        lum += a * (f32(scene.fill_grey) + f32(3.0) * nz.blurred(0, 1, 0.6 * scene.grain) - lum)
    if (a := soft("joint_dark")) is not None:
        lum *= f32(1.0) - a
    if (a := soft("joint_light")) is not None:
        lum *= f32(1.0) + a
    lum += f32(2.5) * nz.white(2, 0)  # sensor grain
    np.maximum(lum, f32(0.0), out=lum)

    # Colour from here on, as three contiguous planes: numpy is slow on (h, w, 3).
    chroma = f32(2.5) * nz.value(256, 4)
    tr, tg, tb = (f32(t) for t in scene.tint)
    rgb = [lum * tr + chroma, lum * tg, lum * tb - chroma]

    def mult(alpha: np.ndarray, amount: tuple[float, float, float]) -> None:
        for plane, k in zip(rgb, amount):
            plane *= f32(1.0) - alpha * f32(k)

    def blend(alpha: np.ndarray, colour: tuple[np.ndarray | float, ...]) -> None:
        keep = f32(1.0) - alpha
        for plane, c in zip(rgb, colour):
            plane *= keep
            plane += alpha * c

    if (a := soft("stain_rust")) is not None:
        mottle = np.clip(f32(0.65) + f32(0.3) * nz.value(16, 5) + f32(0.15) * nz.value(64, 6), 0.0, 1.0)
        mult(np.minimum(a, f32(1.0)) * mottle, (0.22, 0.36, 0.52))
    for kind, colour in (("paint_white", (232, 232, 226)), ("paint_yellow", (226, 190, 62))):
        if (a := soft(kind)) is not None:
            wear = np.clip(f32(0.85) + f32(0.35) * nz.value(8, 7) + f32(0.25) * nz.blurred(0, 1, 1.0 * scene.grain), 0.0, 1.0)
            shade = lum * f32(0.25 / scene.base) + f32(0.75)
            blend(a * wear, tuple(shade * f32(c) for c in colour))
    if (a := soft("tyre")) is not None:
        a = f32(1.0) - a * np.clip(f32(0.8) + f32(0.2) * nz.value(32, 8), 0, 1) * f32(0.45)
        for plane in rgb:
            plane *= a
    if (a := soft("moss")) is not None:
        a = np.minimum(a * f32(1.3), f32(1.0)) * np.clip(f32(0.75) + f32(0.3) * nz.value(8, 9), 0, 1)
        var = f32(1.0) + f32(0.15) * nz.blurred(0, 0, 1.4 * scene.grain)
        blend(a, tuple(var * f32(c) for c in scene.moss_colour))

    crack = _draw_cracks(scene, nz, rgb, row0, col0, h, w)

    if (a := soft("shadow")) is not None:
        mult(a, (0.95, 0.92, 0.84))
    out = np.stack([cv2.convertScaleAbs(plane) for plane in rgb])  # >= 0: saturating cast
    if valid is not None and not valid.all():
        out[:, valid == 0] = 0
        crack[valid == 0] = 0
    return out, crack, valid


def _draw_cracks(scene: _Scene, nz: _WindowNoise, rgb: list[np.ndarray], row0: int, col0: int, h: int, w: int) -> np.ndarray:
    """Darken cracks in place with rough, varying edges; return their 0/255 mask.

    The mask is the buffered line (nominal width); the drawn crack wanders about a
    pixel either side of it and fades in depth along its length, as real ones do.
    """
    f32 = np.float32
    pad = 12
    layer = scene.crack_layer
    idx = _query(layer, scene, row0, col0, h, w, pad)
    if not idx:
        return np.zeros((h, w), np.uint8)
    t = scene.transform * Affine.translation(col0 - pad, row0 - pad)
    shape = (h + 2 * pad, w + 2 * pad)
    depth = _rasterize(layer, idx, t, shape)
    m = (depth > 0).astype(np.uint8)
    if not m.any():
        return np.zeros((h, w), np.uint8)
    # work only on the cracks' bounding box (+ pad): results are the same, far cheaper
    bx, by, bw, bh = cv2.boundingRect(m)
    y0, y1 = max(by - pad, 0), min(by + bh + pad, shape[0])
    x0, x1 = max(bx - pad, 0), min(bx + bw + pad, shape[1])
    wy0, wy1, wx0, wx1 = max(y0, pad), min(y1, pad + h), max(x0, pad), min(x1, pad + w)
    mask = np.zeros((h, w), np.uint8)
    if wy0 >= wy1 or wx0 >= wx1:
        return mask
    m, depth = m[y0:y1, x0:x1], depth[y0:y1, x0:x1]
    d_in = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    depth = cv2.dilate(depth, np.ones((5, 5), np.uint8))
    halo = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 2.5)
    local = (slice(wy0 - y0, wy1 - y0), slice(wx0 - x0, wx1 - x0))
    win = (slice(wy0 - pad, wy1 - pad), slice(wx0 - pad, wx1 - pad))
    d_in, d_out, depth, halo, m = d_in[local], d_out[local], depth[local], halo[local], m[local]
    signed = np.where(m > 0, f32(0.5) - d_in, d_out - f32(0.5))
    jitter = f32(0.75) * nz.value(8, 10)[win] + f32(0.35) * nz.blurred(0, 3, 0.7)[win] + f32(0.2)
    if scene.surface == "asphalt":  # edges ravel into the binder and skirt the stones
        jitter -= f32(0.8) * nz.blurred(0, 0, 2.0 * scene.grain)[win] - f32(0.3)
    alpha = np.clip(f32(0.5) + (jitter - signed) * f32(1.1), 0.0, 1.0)
    along = np.clip(f32(0.82) + f32(0.22) * nz.value(24, 11)[win], 0.45, 1.0)
    core = f32(0.85) + f32(0.15) * np.minimum(d_in * f32(0.5), f32(1.0))
    dark = alpha * depth * along * core * f32(0.9) + halo * f32(0.1)
    keep = f32(1.0) - np.minimum(dark, f32(0.92))
    for plane in rgb:
        plane[win] *= keep
    mask[win] = m * np.uint8(255)
    return mask
