"""Export for edge devices: ONNX (ONNX Runtime, TensorRT, OpenVINO) or TorchScript.

The exported graph takes a float NCHW batch already normalised with the model's
mean/std and returns the crack probability per patch; the normalisation, patch size
and calibrated threshold travel with it (ONNX metadata and a JSON sidecar), so an
edge runtime reproduces the pipeline's scores. The export is checked against
PyTorch on random patches before it is reported done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from survey_cracks.errors import OutputError
from survey_cracks.model import SHIPPED_MODEL, file_sha256, load_checkpoint, patches_to_tensor


class CrackProbability(nn.Module):
    """ResNet18 logits -> crack probability, the one number an edge device needs."""

    def __init__(self, model: nn.Module, crack_index: int) -> None:
        super().__init__()
        self.model = model
        self.crack_index = crack_index

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(patches), dim=1)[:, self.crack_index]


def export_model(
    model_path: Path | None, out: Path, fmt: Literal["onnx", "torchscript"] = "onnx", verify: bool = True
) -> dict[str, Any]:
    model_path = Path(model_path) if model_path else SHIPPED_MODEL
    out = Path(out)
    if not out.parent.exists():
        raise OutputError(out, f"folder {out.parent} does not exist", "create it first")
    model, meta = load_checkpoint(model_path)
    wrapper = CrackProbability(model, meta.classes.index("crack")).eval()
    size = meta.patch_size
    example = torch.zeros(2, 3, size, size)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")  # workers may export the same file at once
    if fmt == "onnx":
        onnx_program = torch.onnx.export(
            wrapper, (example,), input_names=["patches"], output_names=["crack_probability"],
            dynamic_shapes={"patches": {0: torch.export.Dim("batch", min=1, max=4096)}}, dynamo=True, verbose=False,
        )
        onnx_program.save(str(tmp))
        _add_onnx_metadata(tmp, meta.to_json())
    else:
        scripted = torch.jit.trace(wrapper, example)
        torch.jit.save(scripted, str(tmp), _extra_files={"survey_cracks.json": meta.to_json()})
    os.replace(tmp, out)
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps({"source_checkpoint": model_path.name, "source_sha256": file_sha256(model_path),
                                   "input": f"float32 NCHW (N, 3, {size}, {size}), RGB / 255, minus mean, over std",
                                   "output": "crack probability (N,)", **json.loads(meta.to_json())}, indent=1))
    result: dict[str, Any] = {"file": str(out), "format": fmt, "bytes": out.stat().st_size, "sha256": file_sha256(out),
                              "patch_size": size, "threshold": meta.threshold, "metadata": str(sidecar)}
    if verify:
        result["max_abs_difference_vs_pytorch"] = verify_export(out, fmt, wrapper, meta)
    return result


def _add_onnx_metadata(path: Path, meta_json: str) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "survey_cracks", meta_json
    onnx.save(proto, str(path))


def verify_export(path: Path, fmt: str, reference: nn.Module, meta: Any, count: int = 8) -> float:
    """Max |p_export - p_torch| on random patches; raises if they disagree."""
    rng = np.random.default_rng(0)
    patches = rng.integers(0, 256, (count, meta.patch_size, meta.patch_size, 3), dtype=np.uint8)
    batch = patches_to_tensor(patches, meta).contiguous()
    with torch.inference_mode():
        expected = reference(batch).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"patches": batch.numpy()})[0]
    else:
        loaded = torch.jit.load(str(path))
        with torch.inference_mode():
            got = loaded(batch).numpy()
    difference = float(np.max(np.abs(got - expected)))
    if difference > 1e-3:
        raise OutputError(path, f"export disagrees with PyTorch (max difference {difference:.2e})", "report this; use --format torchscript")
    return round(difference, 8)
