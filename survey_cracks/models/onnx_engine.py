"""ONNX Runtime inference, torch-free: what a Dask worker runs on CPUs without native bf16.

The checkpoint is converted to ONNX once per sha256 (checked against PyTorch, which
is imported only then) and kept in a cache; after that a worker needs numpy and
onnxruntime only. On an AVX2-only CPU ONNX Runtime ran ResNet18 fp32 at 1.2-1.3x
eager PyTorch (bench/throughput.py measures both).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from survey_cracks.models.checkpoint import SHIPPED_MODEL, ModelMeta, file_sha256, read_meta


def onnx_cache_dir() -> Path:
    """Where converted models are kept (``SURVEY_CRACKS_CACHE``, else ``~/.cache/survey_cracks``)."""
    if os.environ.get("SURVEY_CRACKS_CACHE"):
        return Path(os.environ["SURVEY_CRACKS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "survey_cracks"


def cached_onnx(model_path: Path, sha256: str | None = None) -> Path:
    """The checkpoint as verified ONNX, converted once per model sha256 and reused by every worker and run.

    ``sha256``: the file's, when the caller has just checked it (saves hashing it again).
    """
    target = onnx_cache_dir() / "onnx" / f"{sha256 or file_sha256(model_path)}.onnx"
    if not target.is_file():
        from survey_cracks.models.export import export_model

        target.parent.mkdir(parents=True, exist_ok=True)
        export_model(model_path, target, "onnx", verify=True)
    return target


def cached_segmenter(model_path: Path, sha256: str | None = None) -> Path:
    """The checkpoint's mask + dense graph as verified ONNX, converted once per model sha256."""
    target = onnx_cache_dir() / "onnx" / f"{sha256 or file_sha256(model_path)}.segment.onnx"
    if not target.is_file():
        from survey_cracks.models.export import export_segmenter

        target.parent.mkdir(parents=True, exist_ok=True)
        export_segmenter(model_path, target, verify=True)  # published only once verified
    return target


def patches_to_array(patches: np.ndarray, meta: ModelMeta) -> np.ndarray:
    """uint8 NHWC patches -> normalised float32 NCHW, the same arithmetic as `model.patches_to_tensor`."""
    batch = np.asarray(patches)
    if batch.ndim == 3:
        batch = batch[None]
    mean = np.asarray(meta.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(meta.std, dtype=np.float32).reshape(1, 3, 1, 1)
    array = batch.transpose(0, 3, 1, 2).astype(np.float32)
    array /= np.float32(255.0)
    array -= mean
    array /= std
    return np.ascontiguousarray(array)


class OnnxCrackClassifier:
    """Scores patches with ONNX Runtime, same interface and scores (within 1e-4) as ``model.CrackClassifier``."""

    def __init__(self, path: str | Path | None = None, threads: int = 1, sha256: str | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else SHIPPED_MODEL
        self.meta = read_meta(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.options, self.sha256 = options, sha256
        self.session = ort.InferenceSession(str(cached_onnx(self.path, sha256)), options, providers=["CPUExecutionProvider"])
        self._segmenter = None
        self._lock = threading.Lock()

    def predict(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Crack probability per patch, float32 (N,); safe to call from several threads at once."""
        out = np.zeros(len(patches), dtype=np.float32)
        for start in range(0, len(patches), batch_size):
            batch = patches_to_array(patches[start : start + batch_size], self.meta)
            out[start : start + len(batch)] = self.session.run(None, {"patches": batch})[0]
        return out


    def segment(self, window: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """uint8 (H, W, 3) -> (crack probability (H, W) or None without a decoder, dense patch scores), one trunk pass."""
        with self._lock:  # the worker's threads share this engine: convert and load once
            if self._segmenter is None:
                import onnxruntime as ort

                self._segmenter = ort.InferenceSession(str(cached_segmenter(self.path, self.sha256)), self.options,
                                                       providers=["CPUExecutionProvider"])
        outputs = self._segmenter.run(None, {"windows": patches_to_array(window, self.meta)})
        if len(outputs) == 1:
            return None, outputs[0][0]
        return outputs[0][0], outputs[1][0]


__all__ = ["OnnxCrackClassifier", "cached_onnx", "cached_segmenter", "onnx_cache_dir", "patches_to_array"]
