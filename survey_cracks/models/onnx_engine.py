"""ONNX Runtime inference, torch-free: what a Dask worker runs on CPUs without native bf16, or for int8.

The checkpoint is exported once per sha256 and precision (`cached_onnx`:
checked against PyTorch, which is imported only then) and kept in a cache; after that
a worker needs numpy and onnxruntime only. The graph is the edge export itself (uint8
RGB in, normalisation inside), run through `edge.EdgeModel`: the batch pipeline and an
edge device run the same file. On an AVX2-only CPU ONNX Runtime ran ResNet18 fp32 at
1.2-1.3x eager PyTorch (bench/throughput.py measures both); int8 on a VNNI CPU, see
bench/edge_throughput.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from survey_cracks.models.checkpoint import SHIPPED_MODEL, read_meta


def onnx_cache_dir() -> Path:
    """Where converted models are kept (``SURVEY_CRACKS_CACHE``, else ``~/.cache/survey_cracks``)."""
    if os.environ.get("SURVEY_CRACKS_CACHE"):
        return Path(os.environ["SURVEY_CRACKS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "survey_cracks"


def cached_onnx(model_path: Path, precision: str = "fp32", sha256: str | None = None, verify_images: int = 8) -> Path:
    """The checkpoint as a verified ONNX export at ``precision``, made once per model sha256 (with torch, checked
    on ``verify_images`` validation images) and reused by every worker and run."""
    from survey_cracks.models.checkpoint import file_sha256

    target = onnx_cache_dir() / "onnx" / f"{sha256 or file_sha256(model_path)}.{precision}.onnx"
    if not target.is_file():
        from survey_cracks.models.export import export_model

        target.parent.mkdir(parents=True, exist_ok=True)
        export_model(model_path, target, "onnx", precision, verify_images=verify_images)  # type: ignore[arg-type]
    return target


class OnnxCrackClassifier:
    """Scores patches and windows with ONNX Runtime; the `engines.CrackEngine` interface.

    fp32 gives PyTorch's scores within 1e-3; int8 is the calibrated static quantisation
    (its F1 beside PyTorch's is in the export's report, ``<sha256>.int8.onnx.json`` in the cache).
    """

    def __init__(self, path: str | Path | None = None, threads: int = 1, sha256: str | None = None,
                 precision: str = "fp32") -> None:
        from survey_cracks.edge.runtime import EdgeModel

        self.path = Path(path) if path is not None else SHIPPED_MODEL
        self.meta = read_meta(self.path)
        self.precision = precision
        self.model = EdgeModel(cached_onnx(self.path, precision, sha256), threads=threads)

    def predict(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Crack probability per uint8 NHWC patch, float32 (N,); safe to call from several threads at once."""
        return self.model.patch_scores(patches, batch_size)

    def segment(self, window: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """uint8 (H, W, 3) -> (crack probability (H, W) or None without a decoder, dense patch scores), one trunk pass."""
        return self.model.maps(window)


__all__ = ["OnnxCrackClassifier", "cached_onnx", "onnx_cache_dir"]
