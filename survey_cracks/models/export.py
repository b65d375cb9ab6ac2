"""Export for edge devices: ONNX (ONNX Runtime, TensorRT, OpenVINO) or TorchScript.

The exported graph takes a float NCHW batch already normalised with the model's
mean/std and returns the crack probability per patch; the normalisation, patch size
and calibrated threshold travel with it (ONNX metadata and a JSON sidecar), so an
edge runtime reproduces the pipeline's scores. The export is checked against
PyTorch on image patches (the bundled sample road scans) before it is reported done.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from survey_cracks.errors import OutputError
from survey_cracks.models.network import SHIPPED_MODEL, file_sha256, load_checkpoint, patches_to_tensor


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
    parity = _verified(tmp, out, lambda: verify_export(tmp, fmt, wrapper, meta)) if verify else None
    sidecar = out.with_suffix(".json")
    sidecar.write_text(json.dumps({"source_checkpoint": model_path.name, "source_sha256": file_sha256(model_path),
                                   "input": f"float32 NCHW (N, 3, {size}, {size}), RGB / 255, minus mean, over std",
                                   "output": "crack probability (N,)", **json.loads(meta.to_json())}, indent=1))
    result: dict[str, Any] = {"file": str(out), "format": fmt, "bytes": out.stat().st_size, "sha256": file_sha256(out),
                              "patch_size": size, "threshold": meta.threshold, "metadata": str(sidecar)}
    if parity is not None:
        result["max_abs_difference_vs_pytorch"] = parity["max_abs_difference"]
        result["parity"] = parity
    return result


def _verified(tmp: Path, out: Path, check: Callable[[], Any]) -> Any:
    """Run ``check`` on the temp file, then move it to ``out``: an export that fails its check is never published
    (the ONNX cache would otherwise serve it to every later run)."""
    try:
        result = check()
    except OutputError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError(out, error.problem, error.fix) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    return result


def _add_onnx_metadata(path: Path, meta_json: str) -> None:
    import onnx

    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "survey_cracks", meta_json
    onnx.save(proto, str(path))


SAMPLE_SCANS = Path(__file__).resolve().parents[2] / "sample_surveys" / "road_scans"
PARITY_TOLERANCE = 1e-3


def parity_patches(patch_size: int, count: int = 96) -> tuple[np.ndarray, str]:
    """uint8 NHWC image patches to compare an export with PyTorch on, and where they come from.

    The non-overlapping ``patch_size`` windows of the bundled sample road scans
    (``sample_surveys/road_scans/*.jpg``, read in name order, windows in row-major order),
    thinned evenly to at most ``count``: crack and clean surface alike, so the scores
    span both sides of the threshold, unlike random noise. Without the sample folder
    (an installed package) the same procedural scenes are drawn with `survey_cracks.synthetic`.
    """
    images: list[np.ndarray] = []
    scans = sorted(SAMPLE_SCANS.glob("*.jpg")) if SAMPLE_SCANS.is_dir() else []
    if scans:
        from PIL import Image

        for path in scans:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")))
        origin = f"{len(scans)} sample road scans ({SAMPLE_SCANS.parent.name}/{SAMPLE_SCANS.name})"
    else:
        from survey_cracks.synthetic import render_scene

        for seed in range(6):
            images.append(render_scene(480, 640, seed=seed, surface="asphalt" if seed % 2 else "concrete")[0])
        origin = "6 procedural road scans (survey_cracks.synthetic, seeds 0-5)"
    patches = [
        image[row : row + patch_size, col : col + patch_size]
        for image in images
        for row in range(0, image.shape[0] - patch_size + 1, patch_size)
        for col in range(0, image.shape[1] - patch_size + 1, patch_size)
    ]
    if not patches:
        raise OutputError(SAMPLE_SCANS, f"no {patch_size} px patch fits the parity images", "use --no-verify")
    keep = np.unique(np.linspace(0, len(patches) - 1, min(count, len(patches))).round().astype(int))
    return np.stack([patches[i] for i in keep]), f"{len(keep)} windows of {patch_size} px from {origin}"


def verify_export(
    path: Path, fmt: str, reference: nn.Module, meta: Any, patches: np.ndarray | None = None
) -> dict[str, Any]:
    """Scores of the export against PyTorch on image ``patches`` (uint8 NHWC; default `parity_patches`).

    Returns max and mean |p_export - p_torch|, and how often the two agree on crack /
    no crack at the model's threshold (with how many patches PyTorch puts on each side
    of it); raises if any score differs by more than 1e-3.
    """
    if patches is None:
        patches, origin = parity_patches(meta.patch_size)
    else:
        origin = f"{len(patches)} given patches"
    batch = patches_to_tensor(np.ascontiguousarray(patches), meta).contiguous()
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
    difference = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    worst = float(difference.max())
    if worst > PARITY_TOLERANCE:
        raise OutputError(path, f"export disagrees with PyTorch (max difference {worst:.2e})", "report this; use --format torchscript")
    above_torch, above_export = expected >= meta.threshold, got >= meta.threshold
    return {
        "patches": origin,
        "max_abs_difference": round(worst, 8),
        "mean_abs_difference": round(float(difference.mean()), 8),
        "threshold": meta.threshold,
        "label_agreement": round(float(np.mean(above_torch == above_export)), 6),
        "crack_patches_pytorch": int(above_torch.sum()),
        "no_crack_patches_pytorch": int((~above_torch).sum()),
    }


class CrackMaps(nn.Module):
    """One trunk pass -> (per-pixel crack probability, dense patch crack probability): the ``segment`` graph."""

    def __init__(self, model: nn.Module, crack_index: int) -> None:
        super().__init__()
        self.model = model
        self.crack_index = crack_index

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mask, dense = self.model.segment(windows)
        patch = torch.softmax(dense, dim=1)[:, self.crack_index]
        return (patch,) if mask is None else (torch.sigmoid(mask)[:, 0], patch)


def export_segmenter(model_path: Path | None, out: Path, verify: bool = True) -> dict[str, Any]:
    """The window graph as ONNX, any window whose sides are multiples of 32 (from 128 px up).

    Outputs ``crack_probability`` (per pixel, when the checkpoint has a decoder) and
    ``patch_probability`` (the patch head every 32 px).
    """
    model_path = Path(model_path) if model_path else SHIPPED_MODEL
    model, meta = load_checkpoint(model_path)
    wrapper = CrackMaps(model, meta.classes.index("crack")).eval()
    outputs = (["crack_probability"] if meta.has_mask else []) + ["patch_probability"]
    example = torch.zeros(1, 3, 256, 320)
    rows, cols = torch.export.Dim("rows32", min=4, max=512), torch.export.Dim("cols32", min=4, max=512)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    program = torch.onnx.export(
        wrapper, (example,), input_names=["windows"], output_names=outputs,
        dynamic_shapes={"windows": {0: torch.export.Dim("batch", min=1, max=64), 2: 32 * rows, 3: 32 * cols}},
        dynamo=True, verbose=False,
    )
    program.save(str(tmp))
    _add_onnx_metadata(tmp, meta.to_json())

    def agrees_with_pytorch() -> float:
        import onnxruntime as ort

        patches, _ = parity_patches(meta.patch_size, count=4)  # real image patches, as verify_export uses
        batch = patches_to_tensor(patches, meta).contiguous()
        with torch.inference_mode():
            expected = [t.numpy() for t in wrapper(batch)]
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(None, {"windows": batch.numpy()})
        difference = max(float(np.max(np.abs(g - e))) for g, e in zip(got, expected))
        if difference > 1e-3:
            raise OutputError(tmp, f"segment export disagrees with PyTorch (max difference {difference:.2e})", "report this")
        return difference

    difference = _verified(tmp, out, agrees_with_pytorch) if verify else None
    result: dict[str, Any] = {"file": str(out), "bytes": out.stat().st_size}
    if difference is not None:
        result["max_abs_difference_vs_pytorch"] = round(difference, 8)
    return result
