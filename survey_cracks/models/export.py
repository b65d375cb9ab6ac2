"""Export for edge devices: ONNX (fp32, fp16, int8) or TorchScript, checked against PyTorch before it is published.

The exported graph is the one `run` uses: one trunk pass per image, returning the
per-pixel crack probability (when the checkpoint has a decoder) and the patch head's
score every 32 px. It takes uint8 RGB images (N, H, W, 3), H and W multiples of 32 from
the patch size up, any batch: the normalisation is inside the graph, so an edge device
feeds camera pixels as they come. The checkpoint's metadata (heads, classes, patch size,
thresholds, provenance) and the source checkpoint's sha256 travel in the ONNX
metadata_props (TorchScript: extra files) and in a JSON report beside the file.

Precisions (ONNX): fp32 as trained; fp16 weights and activations (onnxruntime's own
float16 converter, inputs and outputs kept uint8/float32) for GPU and NPU runtimes (on
x86 CPUs ONNX Runtime computes it in fp32); int8 by static QDQ quantisation, weights
per channel, activation ranges calibrated on real validation images (onnxruntime's
quantisation tools; ONNX Runtime runs it with VNNI integer kernels).

Every export is checked (`verify.check_export`) before it is renamed into place: an
fp32 export whose scores differ from PyTorch's by more than 1e-3 is refused; fp16 and
int8 are judged by the pixel and patch F1 they keep, and an export losing more than one
F1 point is published but flagged (``f1_loss_over_limit`` in its report).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import nn

from survey_cracks.edge.runtime import EdgeModel, pad_to_stride
from survey_cracks.errors import OutputError
from survey_cracks.models.checkpoint import SHIPPED_MODEL, ModelMeta, file_sha256
from survey_cracks.models.network import TRUNK_STRIDE, WindowGraph, load_checkpoint
from survey_cracks.models.verify import PARITY_TOLERANCE, ExportCheck, Maps, check_export, validation_images
from survey_cracks.outputs import atomic_write, write_json

ExportFormat = Literal["onnx", "torchscript"]
ExportPrecision = Literal["fp32", "fp16", "int8"]
EXPORT_FORMAT = "survey_cracks.export/1"
CALIBRATION_IMAGES = 32  # validation images whose activations set the int8 ranges
CALIBRATION_SIDE = 256  # px, the decoder's training crop
# Quantised to int8: the trunk, decoder and the adds and pools between them. The input's
# normalisation and the final softmax / sigmoid stay float (a probability in 1/255 steps
# would move thresholds).
INT8_OPS = ["Conv", "Add", "Relu", "MaxPool", "AveragePool", "Resize"]
INPUT_DOC = "images: uint8 RGB (N, H, W, 3), H and W multiples of 32, at least the patch size; normalised in the graph"
OUTPUTS_DOC = {
    "crack_probability": "(N, H, W) float32, per-pixel crack probability (models with a decoder)",
    "patch_probability": "(N, H/32 - P/32 + 1, W/32 - P/32 + 1) float32, crack probability of the P px patch at (32 i, 32 j)",
}


def EdgeGraph(model: nn.Module, meta: ModelMeta) -> WindowGraph:  # noqa: N802  (was a class; callers build it so)
    """uint8 NHWC RGB -> (per-pixel crack probability, patch scores every 32 px): the exported graph, float outputs."""
    return WindowGraph(model, meta, quantise=False)


def torch_maps(module: Callable[[torch.Tensor], Any], meta: ModelMeta) -> Callable[[np.ndarray], Maps]:
    """`EdgeModel.maps` for a PyTorch or TorchScript `EdgeGraph`: pad, run, crop."""

    def maps(rgb: np.ndarray) -> Maps:
        h, w = rgb.shape[:2]
        with torch.inference_mode():
            outputs = module(torch.from_numpy(pad_to_stride(rgb, meta.patch_size)[None]))
        return (outputs[0][0, :h, :w].numpy() if meta.has_mask else None), outputs[-1][0].numpy()

    return maps


@dataclass(frozen=True)
class ExportResult:
    """A published export and its check against PyTorch (None with ``verify=False``)."""

    file: Path
    format: ExportFormat
    precision: ExportPrecision
    bytes: int
    sha256: str
    source: Path
    source_sha256: str
    report: Path  # FILE.json beside the file: all of this, plus the model's metadata
    check: ExportCheck | None

    @property
    def f1_loss_over_limit(self) -> bool:
        return bool(self.check and self.check.f1_loss_over_limit)

    def to_dict(self) -> dict[str, Any]:
        return {"file": str(self.file), "format": self.format, "precision": self.precision, "bytes": self.bytes,
                "sha256": self.sha256, "source_checkpoint": str(self.source), "source_sha256": self.source_sha256,
                "report": str(self.report), "check": self.check.to_dict() if self.check else None}


def export_model(
    model_path: Path | None,
    out: Path,
    fmt: ExportFormat = "onnx",
    precision: ExportPrecision = "fp32",
    verify: bool = True,
    verify_images: int | None = None,
    log: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export a checkpoint (default: the shipped model) to ``out``, check it, then publish it with its report.

    ``verify_images``: how many validation images to check on (evenly spread; default all).
    Raises `OutputError` (nothing published) when an fp32 export disagrees with PyTorch.
    """
    say = log or (lambda _: None)
    model_path = Path(model_path) if model_path else SHIPPED_MODEL
    out = Path(out)
    if fmt == "torchscript" and precision != "fp32":
        raise OutputError(out, f"TorchScript exports fp32 only, not {precision}", "use --format onnx for fp16 or int8")
    if not out.parent.is_dir():
        raise OutputError(out, f"folder {out.parent} does not exist", "create it first")
    model, meta = load_checkpoint(model_path)
    graph = EdgeGraph(model, meta).eval()
    source_sha256 = file_sha256(model_path)
    facts = {"format": EXPORT_FORMAT, "file_format": fmt, "precision": precision, "source_checkpoint": model_path.name,
             "source_sha256": source_sha256, "input": INPUT_DOC,
             "outputs": {k: v for k, v in OUTPUTS_DOC.items() if meta.has_mask or k != "crack_probability"},
             "exported_with": {"torch": torch.__version__, "onnxruntime": _ort_version()}}
    say(f"exporting {model_path.name} to {fmt} {precision}")

    def checked(tmp: Path) -> ExportCheck:
        images, origin = validation_images(verify_images)
        say(f"checking against PyTorch on {origin}")
        exported = EdgeModel(tmp, threads=torch.get_num_threads()).maps if fmt == "onnx" else torch_maps(torch.jit.load(str(tmp)), meta)
        check = check_export(exported, torch_maps(graph, meta), meta, images, origin)
        if precision == "fp32" and check.max_abs_difference > PARITY_TOLERANCE:
            raise OutputError(tmp, f"export disagrees with PyTorch (max difference {check.max_abs_difference:.2e})",
                              "report this; try --format torchscript")
        return check

    # An export that fails its check is never published (the ONNX cache would otherwise serve it to every
    # later run); the temp name is this process's own, as workers may export the same file at once.
    with atomic_write(out) as tmp:
        if fmt == "onnx":
            _write_onnx(graph, meta, tmp, precision, facts, say)
        else:
            scripted = torch.jit.trace(graph, _example(1), check_trace=False)
            torch.jit.save(scripted, str(tmp), _extra_files={"survey_cracks.json": meta.to_json(),
                                                             "survey_cracks.export.json": json.dumps(facts)})
        try:
            check = checked(tmp) if verify else None
        except OutputError as error:
            raise OutputError(out, error.problem, error.fix) from None
    report = out.with_name(out.name + ".json")  # crack.onnx.json: an .onnx and a .pt of one name keep their own
    result = ExportResult(out, fmt, precision, out.stat().st_size, file_sha256(out), model_path, source_sha256, report, check)
    write_json(report, {**result.to_dict(), "export": facts, "model": json.loads(meta.to_json())})
    return result


def _example(batch: int) -> torch.Tensor:
    """A uint8 example input for tracing, not square (so no side is mistaken for the other)."""
    return torch.zeros(batch, CALIBRATION_SIDE, CALIBRATION_SIDE + 2 * TRUNK_STRIDE, 3, dtype=torch.uint8)


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _write_onnx(graph: WindowGraph, meta: ModelMeta, tmp: Path, precision: ExportPrecision, facts: dict[str, Any],
                say: Callable[[str], None]) -> None:
    """fp32 by torch.onnx (dynamic batch and sides), then converted to ``precision``, then the metadata."""
    import onnx

    fp32 = tmp if precision == "fp32" else tmp.with_name(tmp.name + ".fp32")
    cells = max(1, meta.patch_size // TRUNK_STRIDE)
    rows, cols = torch.export.Dim("rows32", min=cells, max=512), torch.export.Dim("cols32", min=cells, max=512)
    outputs = (["crack_probability"] if meta.has_mask else []) + ["patch_probability"]
    try:
        program = torch.onnx.export(
            graph, (_example(2),),  # an example of batch 1 would fix the batch axis at 1 input_names=["images"], output_names=outputs, dynamo=True, verbose=False,
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1, max=4096), 1: TRUNK_STRIDE * rows,
                                       2: TRUNK_STRIDE * cols}},
        )
        program.save(str(fp32))
        onnx.save(_named_outputs(onnx.load(str(fp32)), outputs), str(fp32))
        if precision == "fp16":
            from onnxruntime.transformers.float16 import convert_float_to_float16

            onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(tmp))
        elif precision == "int8":
            _quantise_int8(fp32, tmp, say)
        proto = onnx.load(str(tmp))
        for key, value in (("survey_cracks", meta.to_json()), ("survey_cracks.export", json.dumps(facts, sort_keys=True))):
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(tmp))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if fp32 != tmp:
            fp32.unlink(missing_ok=True)


def _named_outputs(proto: Any, names: list[str]) -> Any:
    """Give the graph's outputs ``names`` (the exporter sometimes keeps its own, e.g. ``select_1``) by Identity nodes."""
    import onnx

    for output, name in zip(proto.graph.output, names):
        if output.name != name:
            proto.graph.node.append(onnx.helper.make_node("Identity", [output.name], [name]))
            output.name = name
    return proto


def calibration_windows(count: int = CALIBRATION_IMAGES, side: int = CALIBRATION_SIDE) -> tuple[list[np.ndarray], str]:
    """uint8 (side, side, 3) windows from the centres of ``count`` validation images (mirrored where smaller)."""
    images, origin = validation_images(count)
    windows = []
    for image in images:
        padded = pad_to_stride(image.rgb, side)
        top, left = (padded.shape[0] - side) // 2, (padded.shape[1] - side) // 2
        windows.append(np.ascontiguousarray(padded[top : top + side, left : left + side]))
    return windows, origin


def _quantise_int8(fp32: Path, out: Path, say: Callable[[str], None]) -> None:
    """Static QDQ int8: weights per output channel (symmetric), activations per tensor (uint8, min/max
    over the calibration windows); Conv + BatchNorm folded first (onnxruntime's pre-processing)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    windows, origin = calibration_windows()
    say(f"calibrating int8 activation ranges on {len(windows)} windows of {CALIBRATION_SIDE} px from {origin}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.windows = iter(windows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            window = next(self.windows, None)
            return None if window is None else {"images": window[None]}

    prepared = out.with_name(out.name + ".prep")
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=False)
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS)
    finally:
        prepared.unlink(missing_ok=True)


__all__ = ["EdgeGraph", "ExportFormat", "ExportPrecision", "ExportResult", "calibration_windows",
           "export_model", "torch_maps"]
