"""Adapting the shipped model to a user's own annotated surveys.

The user's rasters and annotations (the pipeline's convention) become a `survey`
data source; training starts from the shipped model with the head-first schedule
and a lower backbone learning rate, so a few hundred local patches adapt the model
without erasing what it learned from the diverse training set.

Epoch and threshold are chosen on held-out rasters of the surveys; a survey with a
single annotated raster holds out a strip of it instead (`io.sources.strip_parts`).
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from survey_cracks.config import TrainConfig, load_config
from survey_cracks.errors import ConfigError, DataSourceError
from survey_cracks.models.network import SHIPPED_MODEL, read_meta
from survey_cracks.outputs import atomic_write
from survey_cracks.training.train import TrainResult, train

FINETUNE_DEFAULTS: dict[str, Any] = {
    "init": "shipped",
    "schedule": {
        "epochs": 6, "head_epochs": 1, "lr": 0.001, "backbone_lr_factor": 0.1, "batch_size": 48,
        "samples_per_epoch": 2400, "patience": 3,
    },
    "labels": {"negatives_per_positive": 2.0},
}


def adaptation(model_path: Path | None, adapt: str) -> str:
    """What ``--adapt`` means for this model: ``mask`` (decoder and trunk, `training.adapt`) or ``head``.

    ``auto`` is mask when the model has a decoder; asking a patch classifier for mask is an error.
    """
    has_mask = read_meta(model_path or SHIPPED_MODEL).has_mask
    if adapt == "mask" and not has_mask:
        raise ConfigError(model_path or SHIPPED_MODEL, "--adapt mask needs a model with a crack-mask decoder",
                          "use --adapt head, or a model made by survey-cracks train-mask")
    if adapt == "auto":
        return "mask" if has_mask else "head"
    return adapt


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
    """Fine-tune on ``surveys`` and write the checkpoint to ``out`` (its run folder, with the model card, beside it)."""
    out = Path(out)
    if val_fraction <= 0:
        raise ConfigError(None, f"--val-fraction {val_fraction} holds nothing out",
                          "give a share above 0: the epoch and threshold are chosen on held-out data")
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
    _check_held_out(config, [Path(s) for s in surveys], val_fraction, progress, log)
    result = train(config, progress=progress, log=log, ship=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        shutil.copyfile(result.checkpoint, tmp)
    from survey_cracks.training.card import model_card

    command = " ".join(["survey-cracks finetune", *map(str, surveys), "--out", str(out),
                        *(["--model", str(model_path)] if model_path else []),
                        *(["--config", str(config_path)] if config_path else []),
                        *(["--epochs", str(epochs)] if epochs else []), "--val-fraction", str(val_fraction)])
    run_dir = Path(config.out_dir)
    (run_dir / "MODEL_CARD.md").write_text(model_card(run_dir, out, command, finetuned_from=Path(base)))
    return TrainResult(out, result.metrics, result.seconds)


def _check_held_out(config: TrainConfig, surveys: list[Path], val_fraction: float, progress: bool,
                    log: Callable[[str], None]) -> None:
    """Say how each survey is split, and stop with a clear error when training or validation is empty.

    The patches are cut here into the run's cache, where `train` finds them.
    """
    from survey_cracks.io.sources import list_items
    from survey_cracks.training.data import build_patch_set

    for source in config.sources:
        items = list_items(source, config.seed)
        if any(item.part is not None for item in items):
            log(f"{source.name}: one annotated raster ({items[0].path.name}), so its last {val_fraction:.0%} along "
                f"its longer side is held out for validation; no patch crosses the cut "
                f"(add a second annotated raster to hold out a whole one)")
    patch_set = build_patch_set(config, cache_dir=Path(config.out_dir).parent / "cache", progress=progress)
    for split in ("train", "val"):
        if len(patch_set.where(split)) == 0:
            where = ", ".join(str(s) for s in surveys)
            raise DataSourceError(
                where, f"no labelled {'training' if split == 'train' else 'validation'} patches "
                f"(patches per split: {patch_set.counts()})",
                "annotate more of the survey or add annotated rasters (validation holds out "
                f"--val-fraction {val_fraction} of them)",
            )
    val = patch_set.where("val")
    if not patch_set.labels[val].any():
        log(f"warning: the {len(val)} validation patches hold no crack, so they cannot choose the epoch or "
            "calibrate the threshold (0.5 is used); annotate or hold out a raster with cracks")
