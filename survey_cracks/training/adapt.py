"""Adapting a mask model's pixels to a user's own annotated structure (`survey-cracks finetune`).

`finetune` of a patch classifier moves its patch head only; a model with a crack-mask
decoder is wrong where users see it, per pixel: straight joints and seams of their
structure taken for cracks, faint hairlines missed. Here the decoder *and* the trunk
learn from the user's annotations, with the recipe of `segment.fit_mask` turned for
small data:

- start from the whole model, decoder included (``keep_decoder``), not a fresh decoder;
- a short decoder-only phase, then everything with the trunk at a tenth of the rate;
  trunk BatchNorm keeps its statistics (`segment._freeze_batchnorm`): a few crops per
  batch would only add noise to them;
- the patch head keeps learning from the same masks in the joint phase and its
  threshold is set again on validation, so `run --mode dense|patch` stays calibrated;
- ``not_crack`` areas are hard negatives weighted up in the loss, ``ignore`` areas
  count nowhere (`io.annotations`);
- rasters are split into training and validation by file (one raster: its end strip,
  `io.sources.strip_parts`); the mask threshold is calibrated and the kept checkpoint
  chosen (early stop on pixel F1) on validation only; the starting weights are a
  candidate, so a fine-tune that only hurts keeps them.

It ends with the before/after table on the held-out rasters, written beside the
checkpoint as JSON and Markdown, and a model card saying what was adapted on what.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from survey_cracks.config import MaskTrainConfig, load_config
from survey_cracks.errors import ConfigError, DataSourceError
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256
from survey_cracks.models.network import load_checkpoint
from survey_cracks.outputs import atomic_write
from survey_cracks.outputs.tables import markdown_table

Log = Callable[[str], None]

# Sized for three 7 MP mosaics in well under 20 min on 2 CPU cores (bench/finetune_mask.py measures it).
ADAPT_DEFAULTS: dict[str, Any] = {
    "init": "shipped",
    "keep_decoder": True,
    "schedule": {
        "decoder_steps": 40, "joint_steps": 160, "batch_size": 4, "crop_size": 256, "lr": 5e-4,
        "trunk_lr_factor": 0.1, "checkpoint_every": 25, "patience": 4, "scale_jitter": (0.8, 1.25),
        "negative_weight": 5.0, "patch_loss_weight": 0.3,
    },
}
TOLERANCES = (2, 5)  # pixel tolerances of the before/after table
CENTRELINE_TOLERANCE = 5
CELL_PX = 64


@dataclass
class HeldOutFigures:
    """One model's figures on the held-out rasters at its own calibrated mask threshold."""

    model: str
    sha256: str
    threshold: float
    figures: dict[str, Any]  # segment.mask_metrics' dict

    def row(self, label: str) -> list[object]:
        f = self.figures
        cells = [label, self.threshold]
        for t in TOLERANCES:
            p = f[f"pixel@{t}px"]
            cells += [p["precision"], p["recall"], p["f1"]]
        c = f[f"centreline@{CENTRELINE_TOLERANCE}px"]
        return cells + [c["completeness"], c["correctness"], c["quality"], f.get(f"cell_ap@{CELL_PX}px")]


@dataclass
class BeforeAfter:
    """The base and the adapted model on the same held-out rasters."""

    rasters: list[str]
    before: HeldOutFigures
    after: HeldOutFigures
    # The base model at the threshold the fine-tune's validation rasters give it: what recalibrating alone does.
    before_recalibrated: HeldOutFigures | None = None

    def markdown(self) -> str:
        headers = ["model", "threshold"]
        for t in TOLERANCES:
            headers += [f"pixel P@{t}", f"R@{t}", f"F1@{t}"]
        headers += [f"centreline completeness@{CENTRELINE_TOLERANCE}", "correctness", "quality", f"cell AP ({CELL_PX} px)"]
        rows = [self.before.row(f"before: `{Path(self.before.model).name}`")]
        if self.before_recalibrated is not None:
            rows.append(self.before_recalibrated.row("before, at the threshold the validation rasters give it"))
        rows.append(self.after.row(f"after: `{Path(self.after.model).name}`"))
        return markdown_table(headers, rows) + "\n"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def held_out_figures(model_path: Path, images: list[Any], threshold: float | None = None) -> HeldOutFigures:
    """``model_path`` scored on ``images`` (`segment.MaskImage`) at ``threshold`` (default: its own mask threshold)."""
    from survey_cracks.training.segment import mask_metrics

    model, meta = load_checkpoint(model_path)
    if not meta.has_mask:
        raise ConfigError(model_path, "the model has no crack-mask decoder", "give a mask model (the shipped one has one)")
    chosen = meta.mask_threshold if threshold is None else threshold
    figures = mask_metrics(model, meta, images, chosen, tolerances=TOLERANCES,
                           centreline_tolerance=CENTRELINE_TOLERANCE, cell=CELL_PX)
    return HeldOutFigures(str(model_path), file_sha256(model_path), chosen, figures)


def compare(base: Path, adapted: Path, images: list[Any], base_threshold: float | None = None) -> BeforeAfter:
    """Before/after on ``images``, each model at its own threshold (the one `run` would use).

    ``base_threshold``: also the base model at this threshold (the one the fine-tune's
    validation rasters chose for it), so the table shows what recalibration alone gives.
    """
    again = held_out_figures(base, images, base_threshold) if base_threshold is not None else None
    return BeforeAfter([im.name for im in images], held_out_figures(base, images), held_out_figures(adapted, images), again)


def run_folder(out: Path) -> Path:
    """Where a fine-tune writing ``out`` keeps its checkpoints, metrics and card: ``<out stem>_run`` beside it."""
    return Path(out).parent / f"{Path(out).stem}_run"


def start_threshold(run_dir: Path) -> float | None:
    """The base model's threshold calibrated on the validation rasters (the fine-tune's step-0 record), if logged."""
    metrics = Path(run_dir) / "metrics.json"
    if not metrics.is_file():
        return None
    history = json.loads(metrics.read_text()).get("history") or []
    start = next((h for h in history if h.get("phase") == "start"), None)
    return (start.get("val") or {}).get("threshold") if start else None


def write_before_after(result: BeforeAfter, checkpoint: Path) -> tuple[Path, Path]:
    """``<checkpoint stem>.before_after.json`` and ``.md`` beside the checkpoint."""
    paths = (checkpoint.with_name(f"{checkpoint.stem}.before_after.json"),
             checkpoint.with_name(f"{checkpoint.stem}.before_after.md"))
    for path, text in zip(paths, (result.to_json(), result.markdown())):
        with atomic_write(path) as tmp:
            Path(tmp).write_text(text)
    return paths


def survey_images(surveys: list[Path], progress: bool = True) -> list[Any]:
    """Every annotated raster of ``surveys`` as scoring images (`segment.MaskImage`, split "test"): a survey no model trained on."""
    from survey_cracks.training.segment import load_images

    config = load_config(MaskTrainConfig, None, {
        "sources": [{"name": Path(s).resolve().name, "kind": "survey", "root": str(Path(s).resolve()), "role": "test"}
                    for s in surveys]})
    return load_images(config, progress)


def adapt_config(surveys: list[Path], out: Path, base: Path, val_fraction: float, config_path: Path | None = None,
                 steps: int | None = None) -> MaskTrainConfig:
    """The mask-training config of a fine-tune: `ADAPT_DEFAULTS`, then ``config_path``'s keys, then the options."""
    settings: dict[str, Any] = json.loads(json.dumps(ADAPT_DEFAULTS))
    if config_path is not None:
        loaded = yaml.safe_load(Path(config_path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(config_path, "config must be a mapping")
        for key, value in loaded.items():
            settings[key] = {**settings[key], **value} if isinstance(value, dict) and isinstance(settings.get(key), dict) else value
    if steps is not None:
        decoder = max(0, round(steps * 0.2))
        settings["schedule"] = {**settings["schedule"], "decoder_steps": decoder, "joint_steps": steps - decoder}
    settings.update({
        "sources": [{"name": Path(s).resolve().name, "kind": "survey", "root": str(Path(s).resolve()),
                     "split": {"val": val_fraction, "test": 0.0}} for s in surveys],
        "init_path": str(base),
        "out_dir": str(run_folder(out)),
    })
    return load_config(MaskTrainConfig, None, settings)


def finetune_mask(
    surveys: list[Path],
    out: Path,
    model_path: Path | None = None,
    config_path: Path | None = None,
    steps: int | None = None,
    val_fraction: float = 0.2,
    resume: bool = False,
    progress: bool = True,
    log: Log = print,
) -> tuple[Path, BeforeAfter]:
    """Adapt decoder, trunk and patch head to ``surveys``; write ``out``, its before/after table and card.

    ``resume``: continue a killed run from its last checkpoint (same weights as an uninterrupted run).
    """
    from survey_cracks.training.card import adapted_mask_card
    from survey_cracks.training.segment import fit_mask, load_images

    out = Path(out)
    base = Path(model_path) if model_path else SHIPPED_MODEL
    config = adapt_config(surveys, out, base, val_fraction, config_path, steps)
    images = load_images(config, progress)
    _check_split(images, surveys, val_fraction, log)
    result = fit_mask(config, resume=resume, progress=progress, log=log, images=images)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as tmp:
        shutil.copyfile(result.checkpoint, tmp)
    held_out = [im for im in images if im.split == "val" and im.pixel_truth]
    comparison = compare(base, out, held_out, start_threshold(Path(config.out_dir)))
    json_path, md_path = write_before_after(comparison, out)
    log(comparison.markdown())
    log(f"before/after: {json_path}, {md_path}")
    command = " ".join(["survey-cracks finetune", *map(str, surveys), "--out", str(out),
                        *(["--model", str(model_path)] if model_path else []),
                        *(["--config", str(config_path)] if config_path else []),
                        *(["--steps", str(steps)] if steps else []), "--val-fraction", str(val_fraction)])
    run_dir = Path(config.out_dir)
    (run_dir / "MODEL_CARD.md").write_text(adapted_mask_card(
        result.metrics, out, base, command, comparison, surveys, [im.name for im in images if im.split == "train"]))
    return out, comparison


def _check_split(images: list[Any], surveys: list[Path], val_fraction: float, log: Log) -> None:
    """Say how the rasters are split; stop with one clear error when a side is empty or holds no crack."""
    where = ", ".join(str(s) for s in surveys)
    for split, role in (("train", "training"), ("val", "validation")):
        members = [im for im in images if im.split == split]
        if not members:
            raise DataSourceError(where, f"no annotated {role} raster",
                                  f"add annotated rasters (validation holds out --val-fraction {val_fraction} of them)")
        log(f"{role}: {', '.join(im.name for im in members)}")
    if not any(im.target.any() for im in images if im.split == "train"):
        raise DataSourceError(where, "the training rasters hold no annotated crack",
                              "annotate cracks (label crack or no label) on at least one training raster")
    if not any(im.target.any() for im in images if im.split == "val"):
        log("warning: the validation rasters hold no annotated crack, so they cannot calibrate the threshold or "
            "choose the checkpoint; annotate or hold out a raster with cracks")
