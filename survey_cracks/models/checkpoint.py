"""Checkpoint files without torch: metadata, hashes, the shipped model's path.

Reading a checkpoint's metadata must not import torch (half a gigabyte of memory):
the client of a survey run only needs the threshold, patch size and sha256, while
the Dask workers load the weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from survey_cracks.errors import ModelFileError

ARCH = "resnet18"
CLASSES = ("no_crack", "crack")
HEADS = ("patch", "mask")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FORMAT = "survey_cracks.checkpoint/1"
# torchvision's own ImageNet weights; verified by hash before use.
IMAGENET_FILE = "resnet18-f37072fd.pth"
IMAGENET_SHA256 = "f37072fd47e89c5e827621c5baffa7500819f7896bbacec160b1a16c560e07ec"
SHIPPED_MODEL = Path(__file__).parent.parent / "weights" / "crack_resnet18.safetensors"


@dataclass
class ModelMeta:
    """What a checkpoint says about itself."""

    arch: str = ARCH
    classes: tuple[str, ...] = CLASSES
    patch_size: int = 128
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    threshold: float = 0.5
    provenance: dict[str, Any] = field(default_factory=dict)
    # Which outputs the network has: "patch" (crack/no-crack per patch, dense at stride 32)
    # and "mask" (per-pixel crack probability from the decoder). Files written before the
    # decoder existed carry no such key and are patch classifiers.
    heads: tuple[str, ...] = ("patch",)
    decoder_channels: int = 0
    mask_threshold: float = 0.5
    # Context (px, each side) a window needs for its centre to be unaffected by the window
    # edge, measured when the decoder was trained (see models.network.measure_margin).
    min_margin_px: int = 0

    @property
    def has_mask(self) -> bool:
        return "mask" in self.heads

    @property
    def trained_on(self) -> frozenset[str]:
        """Names of the sources this checkpoint's own training run drew training images from (its provenance).

        A source listed with ``role: test`` was only scored, so it is not among them. Nor are
        the sources of the model the run started from: a benchmark that must be held out by
        source checks the start model too (the shipped model's card names it).
        """
        return frozenset(s["name"] for s in self.provenance.get("sources", [])
                         if isinstance(s, dict) and "name" in s and s.get("role") != "test")

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, path: Path) -> "ModelMeta":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ModelFileError(path, "checkpoint metadata is not valid JSON", "re-export the model") from None
        if data.pop("format", None) != FORMAT:
            raise ModelFileError(path, "not a survey_cracks checkpoint", "train or fine-tune one with survey-cracks")
        try:
            meta = cls(**data)
        except TypeError as exc:
            raise ModelFileError(path, f"checkpoint metadata does not match ({exc})", "re-export the model") from None
        meta.classes = tuple(meta.classes)
        meta.mean = tuple(meta.mean)  # type: ignore[assignment]
        meta.std = tuple(meta.std)  # type: ignore[assignment]
        meta.heads = tuple(meta.heads)
        if meta.arch != ARCH or len(meta.classes) != 2:
            raise ModelFileError(path, f"unsupported architecture {meta.arch} / classes {meta.classes}")
        if not meta.heads or not set(meta.heads) <= set(HEADS) or (meta.has_mask and meta.decoder_channels < 1):
            raise ModelFileError(path, f"unsupported heads {meta.heads}", "use a checkpoint made by this version of survey-cracks")
        return meta


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_meta(path: str | Path) -> ModelMeta:
    """Metadata only, without loading tensors."""
    path = Path(path)
    _check_exists(path)
    try:
        with safe_open(str(path), framework="numpy") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(path, f"not a valid model file ({exc})", "give a .safetensors checkpoint made by survey-cracks") from None
    if "survey_cracks" not in header:
        raise ModelFileError(path, "safetensors file has no survey_cracks metadata", "train or export it with survey-cracks")
    return ModelMeta.from_json(header["survey_cracks"], path)


def _check_exists(path: Path) -> None:
    if not path.is_file():
        if path == SHIPPED_MODEL:
            raise ModelFileError(path, "the shipped model is missing from the package", "reinstall or pass --model")
        raise ModelFileError(path, "model file not found", "check --model")
