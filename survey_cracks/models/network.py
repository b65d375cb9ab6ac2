"""The crack network: a torchvision ResNet18 trunk with a patch head and a crack-mask decoder.

One trunk pass feeds two heads. The *patch head* is the classifier's pooled features +
linear layer; applied densely (average pool of 4 x 4 cells + the same weights as a
1 x 1 convolution) it gives the classifier's crack score for every 128 px patch at a
32 px step. The *mask decoder* is torchvision's FeaturePyramidNetwork over the stem and
layer1-layer4 (strides 2-32) and a small head predicting at stride 2, interpolated to
full resolution: a per-pixel crack probability at almost no extra cost.

Parameter names of the trunk and patch head are torchvision's ResNet18 names, so the
patch classifiers trained before the decoder existed load as they are (``heads:
patch``). A checkpoint is a safetensors file (tensors only, so loading never unpickles
anything) whose header carries the metadata (see `checkpoint`). The patch
preprocessing lives here too, so training and inference share it.
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
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from survey_cracks.tuning import deferred_torch_dynamo

with deferred_torch_dynamo():  # TorchDynamo stays unloaded (see `tuning`)
    from torchvision.models import resnet18
    from torchvision.ops import FeaturePyramidNetwork

from survey_cracks.errors import ModelFileError
from survey_cracks.models import hardware
from survey_cracks.models.checkpoint import (  # noqa: F401  (re-exported: the model's public API)
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
from survey_cracks.outputs import atomic_write
from survey_cracks.vectors.heatmap import LEVELS

TRUNK_STRIDE = 32
TRUNK_CHANNELS = (64, 64, 128, 256, 512)  # stem (stride 2), layer1 (4), layer2 (8), layer3 (16), layer4 (32)


class CrackNet(nn.Module):
    """ResNet18 trunk, patch head (``fc``) and, when ``decoder_channels`` > 0, a crack-mask decoder."""

    def __init__(self, num_classes: int = 2, decoder_channels: int = 0, patch_size: int = 128) -> None:
        super().__init__()
        trunk = resnet18(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        self.avgpool = trunk.avgpool
        self.fc = nn.Linear(512, num_classes)
        self.patch_cells = max(1, patch_size // TRUNK_STRIDE)
        self.decoder_channels = decoder_channels
        if decoder_channels:
            self.fpn = FeaturePyramidNetwork(list(TRUNK_CHANNELS), decoder_channels)
            self.mask_head = nn.Sequential(
                nn.Conv2d(decoder_channels, 16, 3, padding=1, bias=False),
                nn.BatchNorm2d(16),
                nn.ReLU(inplace=True),
                nn.Conv2d(16, 1, 1),
            )

    def trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Trunk features at strides 2, 4, 8, 16, 32."""
        c1 = self.relu(self.bn1(self.conv1(x)))
        c2 = self.layer1(self.maxpool(c1))
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c1, c2, c3, c4, self.layer4(c4)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits (N, classes): the classifier's interface."""
        features = self.trunk(x)[-1]
        return self.fc(torch.flatten(self.avgpool(features), 1))

    def trunk_parameters(self) -> list[nn.Parameter]:
        heads = {id(p) for p in self.head_parameters()} | {id(p) for p in self.decoder_parameters()}
        return [p for p in self.parameters() if id(p) not in heads]

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.fc.parameters())

    def decoder_parameters(self) -> list[nn.Parameter]:
        if not self.decoder_channels:
            return []
        return list(self.fpn.parameters()) + list(self.mask_head.parameters())

    def dense_logits(self, deepest: torch.Tensor) -> torch.Tensor:
        """Patch logits (N, classes, h, w) for every patch at a 32 px step: position (i, j) is the patch at (32 i, 32 j)."""
        pooled = F.avg_pool2d(deepest, self.patch_cells, stride=1)
        return F.conv2d(pooled, self.fc.weight[:, :, None, None], self.fc.bias)

    def mask_logits(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Per-pixel crack logit (N, 1, H, W), H and W the input's (a multiple of 32).

        Predicted at stride 2 and interpolated bilinearly: a learnt sub-pixel unfolding
        (pixel shuffle, transposed convolution) gives a flat surface a 2 px checkerboard.
        """
        levels = self.fpn({str(i): f for i, f in enumerate(features)})
        return F.interpolate(self.mask_head(levels["0"]), scale_factor=2.0, mode="bilinear", align_corners=False)

    def segment(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """One trunk pass: (mask logits (N, 1, H, W) or None without a decoder, dense patch logits (N, classes, H/32 - 3, W/32 - 3))."""
        features = self.trunk(x)
        mask = self.mask_logits(features) if self.decoder_channels else None
        return mask, self.dense_logits(features[-1])


def build_model(num_classes: int = 2, decoder_channels: int = 0, patch_size: int = 128) -> CrackNet:
    """The network with fresh heads (a decoder when ``decoder_channels`` > 0)."""
    return CrackNet(num_classes, decoder_channels, patch_size)


def model_for(meta: ModelMeta) -> CrackNet:
    """An untrained network of the shape a checkpoint's metadata describes."""
    return build_model(len(meta.classes), meta.decoder_channels if meta.has_mask else 0, meta.patch_size)


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
    if unexpected or any(not k.startswith(("fc.", "fpn.", "mask_head.")) for k in missing):
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
    with atomic_write(path) as tmp:
        save_file(state, str(tmp), metadata={"survey_cracks": meta.to_json()})
    return file_sha256(path)


def load_checkpoint(path: str | Path | None = None) -> tuple[nn.Module, ModelMeta]:
    """Load a checkpoint (default: the shipped model) as an fp32 model in eval mode."""
    path = Path(path) if path is not None else SHIPPED_MODEL
    meta = read_meta(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(path, f"model file is corrupt ({exc})", "re-download or re-train it") from None
    # Built on the CPU, random initialisation and all (0.13 s): on the meta device, PyTorch's
    # initialisers go through its reference implementations, which load TorchDynamo (1.2 s;
    # see `tuning.deferred_torch_dynamo`).
    model = model_for(meta)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(path, f"weights do not fit a ResNet18 ({str(exc)[:120]})", "re-export the model") from None
    model.eval()
    return model, meta


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution just before it, in place (inference only).

    The same function up to rounding, one pass over each layer's activations fewer: a few
    per cent of a window's time on CPU. A BatchNorm is folded where it is registered right
    after its convolution (torchvision's ResNet blocks, Sequential stems), which is where it
    follows it in ``forward``; it is then an identity.
    """
    for module in list(model.modules()):
        children = list(module.named_children())
        for (conv_name, conv), (norm_name, norm) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and not norm.training:
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
    return model


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


class WindowGraph(nn.Module):
    """uint8 NHWC RGB -> (crack probability or its heatmap levels, patch scores every 32 px): everything the engine runs.

    The normalisation, the sigmoid and (``quantise``) the probability's heatmap levels
    (uint8 0..`LEVELS`, `vectors.heatmap`'s convention) are inside the graph: what leaves
    it is a quarter of a float32 map, with no pass over the window outside it. Under
    autocast the network runs in bf16/fp16 and the sigmoid in fp32, as before the graph
    took them in: a graph cast to bf16 whole (normalisation, weights, additions) moved
    0.6 % of the pixels by more than one level against eager fp32 on the validation
    images (autocast: 0.12 %), for no speed (0.69 against 0.71 s on 12 images, AMD EPYC).
    With ``quantise=False`` it is the exported edge graph (float probability).
    """

    def __init__(self, model: nn.Module, meta: ModelMeta, quantise: bool = True) -> None:
        super().__init__()
        self.model = model
        self.crack_index = meta.classes.index("crack")
        self.quantise = quantise
        std, mean = torch.tensor(meta.std).view(1, 3, 1, 1), torch.tensor(meta.mean).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("shift", mean / std)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.permute(0, 3, 1, 2).float() * self.scale - self.shift
        mask, dense = self.model.segment(x.contiguous(memory_format=torch.channels_last))
        patch = torch.softmax(dense.float(), dim=1)[:, self.crack_index]
        if mask is None:
            return (patch,)
        probability = torch.sigmoid(mask[:, 0].float())
        if self.quantise:
            return torch.round(probability * LEVELS).to(torch.uint8), patch
        return probability, patch


class CrackClassifier:
    """Scores uint8 patches with a loaded checkpoint: the model adapter the pipeline uses."""

    def __init__(
        self,
        path: str | Path | None = None,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        precision: str = "auto",
        compile_cache: Path | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else SHIPPED_MODEL
        self.model, self.meta = load_checkpoint(self.path)
        self.device = pick_device(device)
        self.amp_dtype = autocast_dtype(self.device, precision)
        self.model = fold_batch_norms(self.model).to(self.device).to(memory_format=torch.channels_last)
        self.graph = WindowGraph(self.model, self.meta).to(self.device).eval()
        self.compute = f"{self.device.type} {precision_name(self.amp_dtype)} {'inductor' if compile_cache else 'torch'}"
        if compile_cache is not None:  # through torch.compile, its kernels cached there
            self.graph = compile_graph(self.graph, compile_cache)

    def predict(self, patches: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Crack probability per patch, float32 (N,)."""
        return score_patches(self.model, self.meta, patches, self.device, self.amp_dtype, batch_size)

    @torch.inference_mode()
    def segment(self, window: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """uint8 (H, W, 3) -> (uint8 heatmap levels (H, W) or None without a decoder, dense patch scores), one pass."""
        amp = self.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            outputs = self.graph(torch.from_numpy(window[None]).to(self.device))
        return (outputs[0][0].cpu().numpy() if len(outputs) == 2 else None), outputs[-1][0].cpu().numpy()


def compile_graph(graph: nn.Module, cache: Path) -> nn.Module:
    """``graph`` through torch.compile (Inductor: fused element-wise passes, oneDNN convolutions), any window size.

    Compiled on the first call (tens of seconds); Inductor's caches go to ``cache`` (``TORCHINDUCTOR_CACHE_DIR``,
    unless set), so later processes and runs load the kernels instead of compiling them again.
    """
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache))
    return torch.compile(graph, dynamic=True)


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
