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
import threading
from pathlib import Path

import numpy as np

from survey_cracks.edge.runtime import EdgeModel, read_edge_meta
from survey_cracks.models.checkpoint import SHIPPED_MODEL, read_meta
from survey_cracks.vectors.heatmap import to_levels


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


class OpenVinoModel(EdgeModel):
    """The same exported graph on OpenVINO's CPU plugin: `EdgeModel`'s maps and patch scores, another runtime.

    ``precision`` bf16 asks the plugin to compute in bf16 where the CPU has it (AVX-512 BF16,
    AMX); fp32 keeps it in fp32. Compiled kernels are cached beside the ONNX file, so a
    worker's second start skips most of the compilation. Each calling thread gets a compiled
    model of its own (from that cache: 0.1 s): one compiled for latency runs one request at a
    time, so a Dask worker's two task threads shared one thread's speed (100 MP end to end:
    1.5 MP/s against 3 for one stream of two threads).
    """

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32") -> None:
        import onnx
        import openvino as ov

        self.path = Path(path)
        proto = onnx.load(str(self.path), load_external_data=False)
        self.meta = read_edge_meta({p.key: p.value for p in proto.metadata_props}, self.path)
        self.outputs = [o.name for o in proto.graph.output]
        self.core = ov.Core()
        self.core.set_property({"CACHE_DIR": str(self.path.parent / "openvino")})
        self.config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                       "INFERENCE_NUM_THREADS": threads or os.cpu_count() or 1, "PERFORMANCE_HINT": "LATENCY"}
        self.local = threading.local()
        self.request()  # compiled now: a broken model or plugin fails here, not in the first window

    def request(self):  # type: ignore[no-untyped-def]
        """This thread's infer request (and compiled model)."""
        if not hasattr(self.local, "request"):
            self.local.request = self.core.compile_model(str(self.path), "CPU", self.config).create_infer_request()
        return self.local.request

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        request = self.request()
        results = request.infer([np.ascontiguousarray(images, dtype=np.uint8)])
        return [np.array(results[output]) for output in request.model_outputs]


class OnnxCrackClassifier:
    """Scores patches and windows with the ONNX export on ONNX Runtime (or OpenVINO); the `engines.CrackEngine`
    interface.

    fp32 gives PyTorch's scores within 1e-3; int8 is the calibrated static quantisation
    (its F1 beside PyTorch's is in the export's report, ``<sha256>.int8.onnx.json`` in the cache).
    ``runtime="openvino"`` runs the fp32 export on OpenVINO, in ``precision`` fp32 or bf16.
    """

    def __init__(self, path: str | Path | None = None, threads: int = 1, sha256: str | None = None,
                 precision: str = "fp32", runtime: str = "onnxruntime") -> None:
        self.path = Path(path) if path is not None else SHIPPED_MODEL
        self.meta = read_meta(self.path)
        self.precision = precision
        if runtime == "openvino":
            import openvino  # noqa: F401  (absent: fail now, before the export is made for it)

            self.model: EdgeModel = OpenVinoModel(cached_onnx(self.path, "fp32", sha256), threads, precision)
        else:
            self.model = EdgeModel(cached_onnx(self.path, precision, sha256), threads=threads)
        self.compute = f"cpu {precision} {runtime}"

    def predict(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Crack probability per uint8 NHWC patch, float32 (N,); safe to call from several threads at once."""
        return self.model.patch_scores(patches, batch_size)

    def segment(self, window: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """uint8 (H, W, 3) -> (uint8 heatmap levels (H, W) or None without a decoder, dense patch scores), one pass.

        The export is the edge graph (float probability out: what an edge device reads), so its levels are made here.
        """
        mask, dense = self.model.maps(window)
        return (None if mask is None else to_levels(mask)), dense


__all__ = ["OnnxCrackClassifier", "OpenVinoModel", "cached_onnx", "onnx_cache_dir"]
