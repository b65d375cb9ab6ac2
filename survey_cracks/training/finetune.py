"""Adapting the shipped model to a user's own annotated surveys.

The user's rasters and annotations (the pipeline's convention) become a `survey`
data source; training starts from the shipped model with the head-first schedule
and a lower backbone learning rate, so a few hundred local patches adapt the model
without erasing what it learned from the diverse training set.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from survey_cracks.config import TrainConfig, load_config
from survey_cracks.errors import ConfigError
from survey_cracks.model import SHIPPED_MODEL, read_meta
from survey_cracks.training.train import TrainResult, train

FINETUNE_DEFAULTS: dict[str, Any] = {
    "init": "shipped",
    "schedule": {
        "epochs": 6, "head_epochs": 1, "lr": 0.001, "backbone_lr_factor": 0.1, "batch_size": 48,
        "samples_per_epoch": 2400, "patience": 3,
    },
    "labels": {"negatives_per_positive": 2.0},
}


def finetune(
    surveys: list[Path],
    out: Path,
    model_path: Path | None = None,
    config_path: Path | None = None,
    epochs: int | None = None,
    val_fraction: float = 0.2,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Fine-tune on ``surveys`` and write the checkpoint to ``out``."""
    out = Path(out)
    base = model_path or SHIPPED_MODEL
    meta = read_meta(base)
    settings: dict[str, Any] = copy.deepcopy(FINETUNE_DEFAULTS)
    if config_path is not None:
        loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(config_path, "config must be a mapping")
        settings.update(loaded)
    overrides = {
        "sources": [
            {"name": Path(s).resolve().name, "kind": "survey", "root": str(Path(s).resolve()),
             "split": {"val": val_fraction, "test": 0.0}}
            for s in surveys
        ],
        "init_path": str(base),
        "out_dir": str(out.parent / f"{out.stem}_run"),
        "tiling": {**settings.get("tiling", {}), "patch_size": meta.patch_size},
        "schedule.epochs": epochs,
    }
    config = load_config(TrainConfig, None, {**settings, **overrides})
    result = train(config, progress=progress, log=log, ship=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    shutil.copyfile(result.checkpoint, tmp)
    tmp.replace(out)
    return TrainResult(out, result.metrics, result.seconds)
