"""The crack classifier: a torchvision ResNet18 and its checkpoint format.

A checkpoint is a safetensors file (tensors only, so loading never unpickles
arbitrary objects) whose header carries the model's metadata as JSON: architecture,
classes, patch size, normalisation, calibrated threshold and training provenance.
The patch preprocessing lives here too, so training and inference share it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torchvision.models import resnet18

from survey_cracks.checkpoint import (  # noqa: F401  (re-exported: the model's public API)
    ARCH,
    CLASSES,
    FORMAT,
    IMAGENET_FILE,
    IMAGENET_MEAN,
    IMAGENET_SHA256,
    IMAGENET_STD,
    SHIPPED_MODEL,
    ModelMeta,
    file_sha256,
    read_meta,
)
from survey_cracks import hardware
from survey_cracks.errors import ModelFileError

def build_model(num_classes: int = 2) -> nn.Module:
    """ResNet18 with a fresh two-class head."""
    model = resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def find_imagenet_weights(path: str | Path | None = None) -> Path | None:
    """The verified torchvision ImageNet file: a given path, else the torch hub cache."""
    if path is not None:
        candidates = [Path(path)]
    else:
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        candidates = [hub / IMAGENET_FILE]
    for candidate in candidates:
        if candidate.is_file():
            if file_sha256(candidate) != IMAGENET_SHA256:
                raise ModelFileError(
                    candidate,
                    "ImageNet weights fail the sha256 check",
                    f"use torchvision's genuine {IMAGENET_FILE} (sha256 {IMAGENET_SHA256[:12]}…)",
                )
            return candidate
        if path is not None:
            raise ModelFileError(candidate, "ImageNet weights file not found", "check --init-path")
    return None


def load_imagenet_backbone(model: nn.Module, path: Path) -> None:
    """Copy ImageNet weights into everything but the classifier head."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("fc.") for k in missing):
        raise ModelFileError(path, "file is not a torchvision ResNet18 state dict")


def save_checkpoint(path: str | Path, model: nn.Module, meta: ModelMeta, half: bool = False) -> str:
    """Write atomically (temp name, then rename); return the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.to(torch.float16)
        state[key] = tensor
    tmp = path.with_name(path.name + ".partial")
    save_file(state, str(tmp), metadata={"survey_cracks": meta.to_json()})
    os.replace(tmp, path)
    return file_sha256(path)


def load_checkpoint(path: str | Path | None = None) -> tuple[nn.Module, ModelMeta]:
    """Load a checkpoint (default: the shipped model) as an fp32 model in eval mode."""
    path = Path(path) if path is not None else SHIPPED_MODEL
    meta = read_meta(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(path, f"model file is corrupt ({exc})", "re-download or re-train it") from None
    model = build_model(len(meta.classes))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(path, f"weights do not fit a ResNet18 ({str(exc)[:120]})", "re-export the model") from None
    model.eval()
    return model, meta


def patches_to_tensor(patches: np.ndarray | torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """uint8 NHWC patches -> normalised float NCHW tensor (channels_last memory)."""
    batch = torch.as_tensor(patches)
    if batch.ndim == 3:
        batch = batch.unsqueeze(0)
    return normalise(batch.permute(0, 3, 1, 2), meta)


def normalise(batch: torch.Tensor, meta: ModelMeta) -> torch.Tensor:
    """uint8 NCHW -> float NCHW with the checkpoint's mean/std, channels_last."""
    batch = batch.float().div_(255.0)
    mean = torch.tensor(meta.mean).view(1, 3, 1, 1)
    std = torch.tensor(meta.std).view(1, 3, 1, 1)
    return ((batch - mean) / std).contiguous(memory_format=torch.channels_last)


def pick_device(device: Literal["auto", "cpu", "cuda"] = "auto") -> torch.device:
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for ``precision``; None means plain fp32.

    ``auto``: fp16 on CUDA, bf16 on CPUs that run it natively, fp32 on other CPUs.
    """
    if precision == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16 if precision == "bf16" else torch.float16
    if precision == "bf16" or (precision == "auto" and hardware.cpu_has_native_bf16()):
        return torch.bfloat16
    return None


def precision_name(amp_dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32")  # type: ignore[arg-type]


class CrackClassifier:
    """Scores uint8 patches with a loaded checkpoint: the model adapter the pipeline uses."""

    def __init__(
        self,
        path: str | Path | None = None,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        precision: str = "auto",
    ) -> None:
        self.path = Path(path) if path is not None else SHIPPED_MODEL
        self.model, self.meta = load_checkpoint(self.path)
        self.device = pick_device(device)
        self.amp_dtype = autocast_dtype(self.device, precision)
        self.model = self.model.to(self.device).to(memory_format=torch.channels_last)

    def predict(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Crack probability per patch, float32 (N,)."""
        return score_patches(self.model, self.meta, patches, self.device, self.amp_dtype, batch_size)


@torch.inference_mode()
def score_patches(
    model: nn.Module,
    meta: ModelMeta,
    patches: np.ndarray,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    batch_size: int = 64,
) -> np.ndarray:
    """Crack probability for uint8 NHWC patches, in batches; float32 (N,)."""
    out = np.zeros(len(patches), dtype=np.float32)
    crack = meta.classes.index("crack")
    was_training = model.training
    model.eval()
    for start in range(0, len(patches), batch_size):
        batch = patches_to_tensor(patches[start : start + batch_size], meta).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(batch)
        out[start : start + len(batch)] = torch.softmax(logits.float(), dim=1)[:, crack].cpu().numpy()
    model.train(was_training)
    return out
