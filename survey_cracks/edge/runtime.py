"""An exported crack model on ONNX Runtime, with numpy and OpenCV only (no torch).

The ONNX file made by ``survey-cracks export`` takes uint8 RGB images (N, H, W, 3), H
and W multiples of 32, and carries everything needed to use it in its metadata: the
heads, the patch size and the calibrated thresholds. `EdgeModel` pads any image to
the trunk's stride by reflection (a flat fill would look like a crack edge), runs the
graph and crops the maps back, so the same file gives the same maps here as in the
batch pipeline.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from survey_cracks.errors import ModelFileError

STRIDE = 32  # the trunk's: the graph's spatial sides are multiples of it
MIN_CRACK_PX = 16  # connected crack pixels below this are not reported as a crack (speckle)
MAX_CRACKS = 100  # per frame, largest first: a JSON line stays small on a wet, textured frame
EXPORT_HELP = "make one with `survey-cracks export --format onnx --out FILE.onnx` (full package)"


@dataclass(frozen=True)
class EdgeMeta:
    """What an exported file says about itself (its ONNX metadata_props)."""

    heads: tuple[str, ...]
    classes: tuple[str, ...]
    patch_size: int
    threshold: float  # the patch head's calibrated threshold
    mask_threshold: float  # the decoder's (per-pixel) calibrated threshold
    precision: str
    source_checkpoint: str
    source_sha256: str
    model: dict[str, Any] = field(default_factory=dict)  # the checkpoint's full metadata (provenance included)

    @property
    def has_mask(self) -> bool:
        return "mask" in self.heads

    @property
    def map_threshold(self) -> float:
        """The threshold of what `EdgeModel.crack_map` returns: the decoder's, else the patch head's."""
        return self.mask_threshold if self.has_mask else self.threshold


@dataclass(frozen=True)
class Crack:
    """One connected crack region of a frame, in pixel coordinates (x = column, y = row)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)
    pixels: int
    max_probability: float

    def to_json(self) -> dict[str, Any]:
        return {"box": list(self.box), "pixels": self.pixels, "max_probability": round(self.max_probability, 4)}


@dataclass
class Detection:
    """The crack map of one image and what was found in it."""

    probability: np.ndarray  # (H, W) float32, 0..1
    mask: np.ndarray  # (H, W) bool, probability >= the model's threshold
    cracks: list[Crack]

    @property
    def crack_fraction(self) -> float:
        return float(self.mask.mean()) if self.mask.size else 0.0


def pad_to_stride(rgb: np.ndarray, minimum: int) -> np.ndarray:
    """(H, W, 3) -> sides rounded up to a multiple of 32 and at least ``minimum``, mirrored past the edges."""
    h, w = rgb.shape[:2]
    ph, pw = (max(-(-n // STRIDE), -(-minimum // STRIDE)) * STRIDE - n for n in (h, w))
    if not ph and not pw:
        return np.ascontiguousarray(rgb)
    mode = cv2.BORDER_REFLECT_101 if min(h, w) > 1 else cv2.BORDER_REPLICATE
    return cv2.copyMakeBorder(np.ascontiguousarray(rgb), 0, ph, 0, pw, mode)


def read_edge_meta(props: dict[str, str], path: Path) -> EdgeMeta:
    """`EdgeMeta` from an ONNX file's metadata_props (``survey_cracks`` and ``survey_cracks.export``)."""
    if "survey_cracks" not in props or "survey_cracks.export" not in props:
        raise ModelFileError(path, "ONNX file has no survey_cracks metadata", EXPORT_HELP)
    try:
        model, export = json.loads(props["survey_cracks"]), json.loads(props["survey_cracks.export"])
        return EdgeMeta(
            heads=tuple(model["heads"]), classes=tuple(model["classes"]), patch_size=int(model["patch_size"]),
            threshold=float(model["threshold"]), mask_threshold=float(model["mask_threshold"]),
            precision=str(export["precision"]), source_checkpoint=str(export["source_checkpoint"]),
            source_sha256=str(export["source_sha256"]), model=model,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(path, f"survey_cracks metadata of the ONNX file is incomplete ({exc})", EXPORT_HELP) from None


class EdgeModel:
    """An exported crack model on ONNX Runtime's CPU provider: per-pixel crack maps of whole images.

    ``threads``: ONNX Runtime's intra-op threads (default: every core; a device that
    does other work should give fewer).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(self.path, "model file not found", f"check the path; {EXPORT_HELP}")
        if self.path.suffix == ".safetensors":
            raise ModelFileError(self.path, "this is a training checkpoint, not an export",
                                 f"export it first: survey-cracks export --model {self.path} --out model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ONNX Runtime raises its own exception types per failure
            reason = (str(exc).split("failed:")[-1].strip().rstrip(".").splitlines() or [type(exc).__name__])[0][:160]
            raise ModelFileError(self.path, f"not a loadable ONNX model ({reason})", EXPORT_HELP) from None
        self.meta = read_edge_meta(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """The graph's raw outputs for a uint8 (N, H, W, 3) RGB batch, H and W multiples of 32."""
        return self.session.run(None, {"images": np.ascontiguousarray(images, dtype=np.uint8)})

    def maps(self, rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """uint8 (H, W, 3) RGB -> (crack probability (H, W) or None without a decoder, patch scores every 32 px).

        Patch score (i, j) is the patch of ``patch_size`` px at (32 i, 32 j) of the image
        padded to a multiple of 32.
        """
        h, w = rgb.shape[:2]
        outputs = dict(zip(self.outputs, self.run(pad_to_stride(rgb, self.meta.patch_size)[None])))
        mask = outputs.get("crack_probability")
        return (None if mask is None else mask[0, :h, :w]), outputs["patch_probability"][0]

    def patch_scores(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Crack probability of each uint8 (N, P, P, 3) patch of the model's patch size, float32 (N,)."""
        out = np.zeros(len(patches), np.float32)
        for start in range(0, len(patches), batch_size):
            scores = dict(zip(self.outputs, self.run(patches[start : start + batch_size])))["patch_probability"]
            out[start : start + len(scores)] = scores[:, 0, 0]
        return out

    def crack_map(self, rgb: np.ndarray) -> np.ndarray:
        """Per-pixel crack probability (H, W) float32: the decoder's, or, for a patch-only export, each patch's
        score spread over the 32 px cell at its centre (coarse)."""
        mask, patches = self.maps(rgb)
        if mask is not None:
            return np.asarray(mask, np.float32)
        h, w = rgb.shape[:2]
        half = (self.meta.patch_size - STRIDE) // 2
        cells = cv2.resize(patches.astype(np.float32), (patches.shape[1] * STRIDE, patches.shape[0] * STRIDE),
                           interpolation=cv2.INTER_NEAREST)
        full = cv2.copyMakeBorder(cells, half, half, half, half, cv2.BORDER_REPLICATE)
        return np.ascontiguousarray(full[:h, :w])

    def detect(self, rgb: np.ndarray) -> Detection:
        """`crack_map` at the model's calibrated threshold, with each connected crack region's box."""
        probability = self.crack_map(rgb)
        mask = probability >= self.meta.map_threshold
        return Detection(probability, mask, crack_regions(mask, probability))


def crack_regions(mask: np.ndarray, probability: np.ndarray, min_px: int = MIN_CRACK_PX) -> list[Crack]:
    """Connected (8-neighbour) crack regions of at least ``min_px`` pixels, largest first, at most `MAX_CRACKS`."""
    if not mask.any():
        return []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= min_px]
    keep.sort(key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    cracks = []
    for i in keep[:MAX_CRACKS]:
        x, y, w, h, area = (int(v) for v in stats[i])
        peak = float(probability[y : y + h, x : x + w][labels[y : y + h, x : x + w] == i].max())
        cracks.append(Crack((x, y, x + w, y + h), area, peak))
    return cracks


def draw_overlay(bgr: np.ndarray, detection: Detection, caption: str = "") -> np.ndarray:
    """The frame with crack pixels tinted red, each crack's box in yellow and a caption (BGR, a copy)."""
    out = bgr.copy()
    if detection.mask.any():
        tinted = out[detection.mask].astype(np.float32) * 0.4 + np.array([0, 0, 255], np.float32) * 0.6
        out[detection.mask] = tinted.astype(np.uint8)
    for crack in detection.cracks:
        x0, y0, x1, y1 = crack.box
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (0, 220, 255), 1)
    if caption:
        cv2.putText(out, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, caption, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic (temp name, then rename): a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


__all__ = ["Crack", "Detection", "EdgeMeta", "EdgeModel", "crack_regions", "draw_overlay", "pad_to_stride", "read_edge_meta", "write_json"]
