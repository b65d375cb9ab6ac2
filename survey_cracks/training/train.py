"""Fitting the crack classifier: transfer learning with a head-first schedule.

`train(config)` builds the patch set, picks an initialisation (ImageNet, the
shipped crack model, or scratch, and says which), trains the head alone, then the
whole network at a lower backbone learning rate, keeps the epoch with the best
validation F1 (or the last epoch of the schedule, ``schedule.keep``), calibrates the operating threshold on validation and reports
precision / recall / F1 / AP on each test set. A checkpoint is written every epoch
and `resume=True` continues a killed run from the last one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from tqdm import tqdm

from survey_cracks.config import TrainConfig
from survey_cracks.evaluation.metrics import average_precision, choose_threshold, save_pr_curves, scores_at
from survey_cracks.models import hardware
from survey_cracks.models.network import (
    IMAGENET_FILE,
    SHIPPED_MODEL,
    ModelMeta,
    autocast_dtype,
    build_model,
    file_sha256,
    find_imagenet_weights,
    load_checkpoint,
    load_imagenet_backbone,
    normalise,
    pick_device,
    precision_name,
    read_meta,
    save_checkpoint,
    score_patches,
)
from survey_cracks.outputs import atomic_write
from survey_cracks.training.augment import training_augmentation
from survey_cracks.training.data import PatchSet, build_patch_set

Log = Callable[[str], None]


class PatchDataset(Dataset):
    def __init__(self, patch_set: PatchSet, indices: np.ndarray, augment: bool) -> None:
        self.patch_set = patch_set
        self.indices = indices
        self.transform = training_augmentation() if augment else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        index = self.indices[item]
        image = torch.from_numpy(self.patch_set.patches[index]).permute(2, 0, 1)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.patch_set.labels[index])


@dataclass
class Initialisation:
    kind: str  # "imagenet", "shipped", "scratch"
    detail: str
    pretrained: bool


def initialise(model: nn.Module, config: TrainConfig) -> Initialisation:
    """Load the starting weights the config asks for and say exactly which were used."""
    if config.init in ("imagenet", "auto"):
        path = find_imagenet_weights(config.init_path if config.init == "imagenet" else None)
        if path is not None:
            load_imagenet_backbone(model, path)
            return Initialisation("imagenet", f"torchvision ImageNet weights {path.name} (sha256 verified)", True)
        if config.init == "imagenet":
            from survey_cracks.errors import ModelFileError

            raise ModelFileError(IMAGENET_FILE, "ImageNet weights not found in the torch hub cache", "pass init_path or use init: scratch")
        return Initialisation("scratch", f"random init ({IMAGENET_FILE} not found in the torch hub cache)", False)
    if config.init == "shipped":
        source = config.init_path or SHIPPED_MODEL
        pretrained_model, meta = load_checkpoint(source)
        model.load_state_dict(pretrained_model.state_dict())
        sha = file_sha256(source)
        return Initialisation("shipped", f"survey_cracks model {Path(source).name} (sha256 {sha[:12]})", True)
    return Initialisation("scratch", "random init (asked for)", False)


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up then cosine decay to 2 %: a pure function of the step, so resume is exact."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class FitResult:
    model: nn.Module
    meta: ModelMeta
    history: list[dict[str, Any]]
    best_epoch: int
    seconds: float
    init: Initialisation
    threshold: float = 0.5


def fit(
    patch_set: PatchSet,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    config: TrainConfig,
    out_dir: Path,
    resume: bool = False,
    progress: bool = True,
    log: Log = print,
) -> FitResult:
    """Train on ``train_idx``; keep the epoch with the best F1 on ``val_idx``, or the last one (``schedule.keep``)."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    torch.set_num_threads(config.workers)
    device = pick_device("auto")
    amp = autocast_dtype(device, config.precision)
    log(f"precision: {precision_name(amp)} on {device.type}")
    out_dir.mkdir(parents=True, exist_ok=True)
    schedule = config.schedule
    if len(train_idx) == 0 or len(val_idx) == 0:
        raise ValueError("training and validation sets must both be non-empty")

    base = read_meta(config.init_path or SHIPPED_MODEL) if config.init == "shipped" else None
    keeps_decoder = base is not None and base.has_mask
    model = build_model(decoder_channels=base.decoder_channels if keeps_decoder else 0)
    init = initialise(model, config)
    log(f"initialisation: {init.detail}")
    model = model.to(device).to(memory_format=torch.channels_last)
    meta = ModelMeta(patch_size=config.tiling.patch_size)
    if keeps_decoder:
        # The crack-mask decoder reads the trunk's features: the trunk stays as it is, so the decoder
        # stays valid, and only the patch head is fitted (see docs/guide/training.md, "Fine-tuning a model with a decoder").
        meta.heads, meta.decoder_channels = base.heads, base.decoder_channels
        meta.mask_threshold, meta.min_margin_px = base.mask_threshold, base.min_margin_px
        log("the starting model has a crack-mask decoder: trunk and decoder kept, the patch head alone is fitted")

    head_epochs = schedule.epochs if keeps_decoder else (schedule.head_epochs if init.pretrained else 0)
    if schedule.head_epochs and not init.pretrained:
        log("head-first phase skipped: the backbone starts from scratch, nothing to protect")
    backbone_factor = schedule.backbone_lr_factor if init.pretrained else 1.0
    head_params = list(model.fc.parameters())
    head_ids = {id(p) for p in head_params}
    backbone_params = [p for p in model.parameters() if id(p) not in head_ids]
    optimizer = torch.optim.AdamW(
        [{"params": backbone_params, "lr": 0.0}, {"params": head_params, "lr": schedule.lr}],
        weight_decay=schedule.weight_decay,
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=schedule.label_smoothing)

    samples = schedule.samples_per_epoch or len(train_idx)
    steps_per_epoch = max(1, samples // schedule.batch_size)
    total_steps = steps_per_epoch * schedule.epochs
    warmup = min(steps_per_epoch, 200)

    # Class balance within each source, and each source its configured share.
    weights = np.zeros(len(train_idx), dtype=np.float64)
    source_weight = {i: s.weight for i, s in enumerate(config.sources)}
    for s in np.unique(patch_set.source[train_idx]):
        for label in (0, 1):
            sel = (patch_set.source[train_idx] == s) & (patch_set.labels[train_idx] == label)
            if sel.any():
                weights[sel] = source_weight.get(int(s), 1.0) / sel.sum()
    generator = torch.Generator().manual_seed(config.seed)
    dataset = PatchDataset(patch_set, train_idx, config.augment)

    history: list[dict[str, Any]] = []
    best_f1, best_epoch, start_epoch, stale = -1.0, -1, 0, 0
    state_path = out_dir / "state.pt"
    if resume and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        last, _ = load_checkpoint(out_dir / "last.safetensors")
        model.load_state_dict(last.state_dict())
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best_f1, best_epoch, stale = state["epoch"] + 1, state["best_f1"], state["best_epoch"], state["stale"]
        history = json.loads(state["history"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        log(f"resumed after epoch {start_epoch} (best validation F1 {best_f1:.4f} at epoch {best_epoch + 1})")

    started = time.time() - (history[-1]["seconds"] if history else 0.0)
    for epoch in range(start_epoch, schedule.epochs):
        if schedule.keep == "best_val_f1" and stale >= schedule.patience:
            log(f"early stop: no better validation F1 for {schedule.patience} epochs")
            break
        head_only = epoch < head_epochs
        for p in backbone_params:
            p.requires_grad_(not head_only)
        model.train()
        if head_only:
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        sampler = WeightedRandomSampler(weights, steps_per_epoch * schedule.batch_size, replacement=True, generator=generator)
        loader = DataLoader(dataset, batch_size=schedule.batch_size, sampler=sampler, num_workers=0, drop_last=True)
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{schedule.epochs}{' (head)' if head_only else ''}", unit="batch", disable=not progress, leave=False)
        for step_in_epoch, (images, labels) in enumerate(bar):
            step = epoch * steps_per_epoch + step_in_epoch
            factor = lr_factor(step, total_steps, warmup)
            optimizer.param_groups[0]["lr"] = 0.0 if head_only else schedule.lr * backbone_factor * factor
            optimizer.param_groups[1]["lr"] = schedule.lr * factor
            batch = normalise(images, meta).to(device, non_blocking=True)
            labels = labels.to(device)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = criterion(model(batch).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach()) * len(labels)
            seen += len(labels)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        val_probs = score_patches(model, meta, patch_set.patches[val_idx], device, amp, 128)
        val_labels = patch_set.labels[val_idx]
        threshold = choose_threshold(val_probs, val_labels, config.threshold.mode, config.threshold.target_recall)
        val = scores_at(val_probs, val_labels, threshold)
        record = {
            "epoch": epoch + 1, "phase": "head" if head_only else "full", "train_loss": round(running / max(seen, 1), 5),
            "val_f1": round(val.f1 or 0.0, 4), "val_precision": val.precision, "val_recall": val.recall,
            "val_threshold": round(threshold, 4), "val_ap": average_precision(val_probs, val_labels),
            "seconds": round(time.time() - started, 1),
            "weights_sha256": weights_sha256(model),
        }
        history.append(record)
        log(json.dumps(record))
        save_checkpoint(out_dir / "last.safetensors", model, meta)
        if schedule.keep == "last" or (val.f1 or 0.0) > best_f1:
            best_f1, best_epoch, stale = val.f1 or 0.0, epoch, 0
            save_checkpoint(out_dir / "best.safetensors", model, meta)
        else:
            stale += 1
        with atomic_write(state_path) as tmp:
            torch.save(
                {"epoch": epoch, "best_f1": best_f1, "best_epoch": best_epoch, "stale": stale,
                 "optimizer": optimizer.state_dict(), "history": json.dumps(history), "generator": generator.get_state(),
                 "torch_rng": torch.get_rng_state()},
                tmp,
            )

    best, _ = load_checkpoint(out_dir / "best.safetensors")
    best = best.to(device).to(memory_format=torch.channels_last)
    val_probs = score_patches(best, meta, patch_set.patches[val_idx], device, amp, 128)
    threshold = choose_threshold(val_probs, patch_set.labels[val_idx], config.threshold.mode, config.threshold.target_recall)
    meta.threshold = round(threshold, 4)
    return FitResult(best, meta, history, best_epoch, history[-1]["seconds"] if history else 0.0, init, threshold)


def weights_sha256(model: nn.Module) -> str:
    """A fingerprint of the weights after an epoch: two runs of one config can be compared epoch by epoch."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def evaluate_sets(
    model: nn.Module, meta: ModelMeta, patch_set: PatchSet, sets: dict[str, np.ndarray], precision: str = "auto"
) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Precision / recall / F1 at the model's calibrated threshold, and AP, for each named set."""
    device = next(model.parameters()).device
    amp = autocast_dtype(device, precision)
    table: dict[str, dict[str, Any]] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, idx in sets.items():
        if len(idx) == 0:
            continue
        probs = score_patches(model, meta, patch_set.patches[idx], device, amp, 128)
        labels = patch_set.labels[idx]
        row: dict[str, Any] = scores_at(probs, labels, meta.threshold).as_dict()
        row["ap"] = None if (ap := average_precision(probs, labels)) is None else round(ap, 4)
        row["patches"] = int(len(idx))
        row["images"] = int(len(np.unique(patch_set.image[idx])))
        table[name] = row
        curves[name] = (probs, labels)
    return table, curves


def held_out_sets(patch_set: PatchSet) -> dict[str, np.ndarray]:
    """Each source's validation and test patches, named ``val/<source>`` and ``test/<source>``."""
    sets = {f"val/{name}": patch_set.where("val", [name]) for name in patch_set.source_names}
    sets.update({f"test/{name}": patch_set.where("test", [name]) for name in patch_set.source_names})
    return sets


def evaluate_checkpoint(
    config: TrainConfig, model_path: Path | None = None, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """A checkpoint's figures on a config's held-out splits, at its stored threshold.

    Checks a model card's table against the weights actually shipped, without retraining.
    """
    model, meta = load_checkpoint(Path(model_path) if model_path else SHIPPED_MODEL)
    patch_set = build_patch_set(config, cache_dir=Path(config.out_dir).parent / "cache", progress=progress)
    table, _ = evaluate_sets(model, meta, patch_set, held_out_sets(patch_set), config.precision)
    return table


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, Any]
    seconds: float


def train(config: TrainConfig, resume: bool = False, progress: bool = True, log: Log = print, ship: bool = False) -> TrainResult:
    """Build data, fit, calibrate, evaluate on held-out sets and write the final checkpoint."""
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    commit = _git_commit()  # the code the run starts with, not whatever is checked out when it ends
    patch_set = build_patch_set(config, cache_dir=out_dir.parent / "cache", progress=progress)
    counts = patch_set.counts()
    log(f"patches: {json.dumps(counts)}")
    train_idx, val_idx = patch_set.where("train"), patch_set.where("val")
    result = fit(patch_set, train_idx, val_idx, config, out_dir, resume=resume, progress=progress, log=log)

    table, curves = evaluate_sets(result.model, result.meta, patch_set, held_out_sets(patch_set), config.precision)
    save_pr_curves({k: v for k, v in curves.items() if k.startswith("test/")}, out_dir / "pr_curve.png", "held-out test sets")
    metrics = {
        "threshold": result.meta.threshold,
        "best_epoch": result.best_epoch + 1,
        "epochs_run": len(result.history),
        "train_seconds": result.seconds,
        "sets": table,
        "history": result.history,
        "patch_counts": counts,
    }
    result.meta.provenance = provenance(config, result, table, counts, commit)
    final = out_dir / "model.safetensors"
    save_checkpoint(final, result.model, result.meta, half=ship)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    from survey_cracks.training.card import model_card

    (out_dir / "MODEL_CARD.md").write_text(model_card(out_dir, final, "survey-cracks train --config <this config>"))
    log(f"wrote {final} (threshold {result.meta.threshold})")
    return TrainResult(final, metrics, result.seconds)


def provenance(
    config: TrainConfig, result: FitResult, table: dict[str, Any], counts: dict[str, Any], commit: str | None
) -> dict[str, Any]:
    return {
        "init": result.init.kind,
        "init_detail": result.init.detail,
        "sources": [
            {"name": s.name, "kind": s.kind, "root": _relative(s.root), "role": s.role, "patches": counts.get(s.name, {})}
            for s in config.sources
        ],
        "patch_size": config.tiling.patch_size,
        "stride": config.tiling.step,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch + 1,
        "train_seconds": result.seconds,
        "threshold_rule": config.threshold.model_dump(),
        "schedule": config.schedule.model_dump(),
        "seed": config.seed,
        "metrics": {k: {m: v[m] for m in ("precision", "recall", "f1", "ap")} for k, v in table.items()},
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "torch": torch.__version__,
        "machine": f"{hardware.cpu_name()} ({platform.machine()}), {os.cpu_count()} cpu",
        "precision": precision_name(autocast_dtype(pick_device("auto"), config.precision)),
    }


def _relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
