"""Leave-one-source-out for the crack-mask model: how its pixels carry to a source it has not seen.

For each held-out pixel-mask source S (with its related sources: ``deepcrack`` takes
``deepcrack_test`` with it, as `training.loso` does for the patch classifier), a mask
model is trained by `fit_mask` on every other source's training split (same config, a
shorter schedule), its threshold calibrated on the other sources' validation images, and
scored on **all** labelled images of S (pixel P/R/F1 at 0, 2 and 5 px, centrelines at
2 px). A reference model, the same schedule on every source, scored on each source's
test split, is what each row reads against: the row also gives S's test split alone.

Held out means held out of the decoder and the fine-tune. The trunk every model starts
from is the patch classifier of ``init_path``, and its own training saw the patch labels
of some of these sources; each row says which (from the checkpoint's provenance), so the
table claims no more than it shows. A mask model as the start would have seen every
source's pixels, so it is refused.

Each source's result is written as soon as it is known (``without_<S>/loso_row.json``),
so a killed run resumed skips the sources already done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from survey_cracks.config import MaskTrainConfig
from survey_cracks.errors import ConfigError
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256
from survey_cracks.models.network import load_checkpoint, read_meta
from survey_cracks.outputs import atomic_write
from survey_cracks.training.segment import MaskImage, fit_mask, image_counts, load_images, summarise

Log = Callable[[str], None]
TOLERANCES = (0, 2, 5)
CENTRELINE_TOLERANCE = 2
RESULT = "loso_mask.json"
ROW = "loso_row.json"
REFERENCE = "all_sources"


@dataclass
class LosoMaskRow:
    """One held-out source: what was held out, what trained the model, and its figures on the held-out images."""

    held_out: str
    sources_held_out: list[str]  # the held-out source and its related ones (deepcrack_test with deepcrack)
    trained_on: list[str]  # the sources whose training images made the batches
    trunk_saw: list[str]  # held-out sources whose patch labels trained the starting trunk (provenance of init_path)
    threshold: float  # the mask threshold, calibrated on the other sources' validation images
    train_seconds: float
    all_images: dict[str, Any]  # every labelled image of the held-out sources
    test_split: dict[str, Any]  # their test split only: the images the reference row is scored on


@dataclass
class LosoMaskReference:
    """The same schedule on every source, scored on each source's test split."""

    trained_on: list[str]
    threshold: float
    train_seconds: float
    sets: dict[str, dict[str, Any]]


@dataclass
class LosoMaskResult:
    init: str  # the starting checkpoint (name and sha256)
    trunk_sources: list[str]  # every source whose patch labels trained that trunk
    schedule: dict[str, Any]
    val_per_source: int | None  # the threshold's validation images: at most this many of each source (None: all)
    always_trained_on: list[str]  # sources never held out (no pixel masks)
    rows: list[LosoMaskRow]
    reference: LosoMaskReference | None
    command: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def related_sources(config: MaskTrainConfig, held: str) -> list[str]:
    """The source and those named after it (``deepcrack_test`` goes with ``deepcrack``): held out together."""
    names = [s.name for s in config.sources]
    if held not in names:
        raise ConfigError(None, f"held-out source {held!r} is not in the config", f"name one of: {', '.join(names)}")
    return [name for name in names if name == held or name.startswith(f"{held}_")]


def default_holdouts(config: MaskTrainConfig, images: list[MaskImage]) -> list[str]:
    """Every pixel-mask source (not one named after another) whose group has labelled test images."""
    names = [s.name for s in config.sources if s.kind == "mask_folder"]
    heads = [n for n in names if not any(n != other and n.startswith(f"{other}_") for other in names)]
    return [n for n in heads
            if any(im.pixel_truth and im.split == "test" and im.source in related_sources(config, n) for im in images)]


def _trunk_sources(init: Path) -> tuple[str, list[str], dict[str, set[str]]]:
    """The starting checkpoint's label, the sources of its training, and which splits of each it trained on."""
    meta = read_meta(init)
    if meta.has_mask:
        raise ConfigError(init, "is a mask model: its decoder and trunk have seen every source's pixel masks",
                          "start from a patch classifier (init_path: survey_cracks/weights/crack_resnet18_patch_v1.safetensors)")
    sources = meta.provenance.get("sources", [])
    splits = {s["name"]: set(s.get("patches", {})) & {"train", "val"} for s in sources}
    return f"{init.name} (sha256 {file_sha256(init)[:12]})", [s["name"] for s in sources], splits


def _score(path: Path, images: list[MaskImage], workers: int, progress: bool, desc: str) -> tuple[float, list[Any]]:
    """The checkpoint's threshold and each image's counts (the network runs once per image)."""
    model, meta = load_checkpoint(path)
    torch.set_num_threads(workers)
    counts = [image_counts(model, meta, im, meta.mask_threshold, TOLERANCES, CENTRELINE_TOLERANCE)
              for im in tqdm(images, desc=desc, unit="img", disable=not progress, leave=False)]
    return float(meta.mask_threshold), counts


def _figures(counts: list[Any]) -> dict[str, Any]:
    return summarise(counts, TOLERANCES, CENTRELINE_TOLERANCE)


def calibration_subset(images: list[MaskImage], per_source: int | None) -> list[MaskImage]:
    """The validation images the threshold is chosen on: at most ``per_source`` of each source, every n-th by name.

    Calibrating tries 19 thresholds on every validation pixel; on all of them it costs more than a short
    schedule's training, and a short schedule's threshold needs no more.
    """
    if per_source is None:
        return images
    out = []
    for source in sorted({im.source for im in images}):
        members = sorted((im for im in images if im.source == source), key=lambda im: im.name)
        step = max(1, -(-len(members) // per_source))
        out += members[::step][:per_source]
    return out


def _fit(config: MaskTrainConfig, run_dir: Path, images: list[MaskImage], val_per_source: int | None, resume: bool,
         progress: bool, log: Log):
    """`fit_mask` on the given images' train split and (a subset of) their validation split; test images are scored here."""
    sub = config.model_copy(update={"out_dir": run_dir})
    val = calibration_subset([im for im in images if im.split == "val" and im.pixel_truth], val_per_source)
    return fit_mask(sub, resume=resume, progress=progress, log=log, images=[im for im in images if im.split == "train"] + val)


def leave_one_source_out_mask(
    config: MaskTrainConfig,
    holdouts: list[str] | None = None,
    decoder_steps: int | None = None,
    joint_steps: int | None = None,
    reference: bool = True,
    val_per_source: int | None = None,
    resume: bool = True,
    progress: bool = True,
    log: Log = print,
    command: str = "",
) -> LosoMaskResult:
    """Train without each held-out source in turn, score on it; and the reference on all sources.

    ``decoder_steps`` / ``joint_steps`` replace the config's schedule (LOSO needs one model
    per source, so a shorter one); one checkpoint at the end of each. ``resume``: sources
    whose ``without_<S>/loso_row.json`` exists are read, not retrained, and a killed
    training continues from its checkpoint. ``val_per_source``: calibrate each threshold on at most this
    many validation images of each source (`calibration_subset`). Writes ``out_dir/loso_mask.json``.
    """
    init = Path(config.init_path) if config.init_path else SHIPPED_MODEL
    if config.init != "shipped":
        raise ConfigError(None, f"init: {config.init}: the leave-one-source-out table starts from a patch classifier",
                          "set init: shipped and init_path to the patch classifier (as configs/mask.yaml does)")
    init_label, trunk_sources, trunk_splits = _trunk_sources(init)
    schedule = config.schedule.model_copy(update={
        k: v for k, v in (("decoder_steps", decoder_steps), ("joint_steps", joint_steps)) if v is not None})
    schedule = schedule.model_copy(update={"checkpoint_every": max(1, schedule.decoder_steps + schedule.joint_steps),
                                           "patience": None})
    config = config.model_copy(update={"schedule": schedule, "keep_decoder": False})
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = load_images(config, progress)
    held_names = holdouts or default_holdouts(config, images)
    groups = {held: related_sources(config, held) for held in held_names}
    held_anywhere = {name for names in groups.values() for name in names}
    always = sorted({im.source for im in images if im.split == "train"} - held_anywhere)
    log(f"leave one source out: {', '.join(held_names)}; always in training: {', '.join(always) or 'none'}; "
        f"{schedule.decoder_steps} decoder + {schedule.joint_steps} joint steps each, from {init_label}")
    # The reference first: a run cut short still has what its rows are read against.
    ref = _reference(config, out_dir, images, groups, val_per_source, resume, progress, log) if reference else None
    rows: list[LosoMaskRow] = []
    for held, related in groups.items():
        run_dir = out_dir / f"without_{held}"
        row_path = run_dir / ROW
        if resume and row_path.is_file():
            rows.append(LosoMaskRow(**json.loads(row_path.read_text())))
            log(f"held out {held}: read {row_path} (done before)")
            continue
        kept = [im for im in images if im.source not in related]
        tested = [im for im in images if im.source in related and im.pixel_truth]
        if not tested:
            raise ConfigError(None, f"held-out source {held!r} has no images with pixel masks",
                              "hold out a mask_folder source")
        trained_on = sorted({im.source for im in kept if im.split == "train"})
        log(f"held out {', '.join(related)}: training on {', '.join(trained_on)}; scoring {len(tested)} images")
        started = time.time()
        result = _fit(config, run_dir, kept, val_per_source, resume, progress, log)
        threshold, counts = _score(result.checkpoint, tested, config.workers, progress, f"scoring {held}")
        row = LosoMaskRow(
            held_out=held, sources_held_out=related, trained_on=trained_on,
            trunk_saw=[f"{name} ({'/'.join(sorted(trunk_splits[name]))} patch labels)" for name in related
                       if trunk_splits.get(name)],
            threshold=threshold, train_seconds=round(time.time() - started, 1), all_images=_figures(counts),
            test_split=_figures([c for im, c in zip(tested, counts) if im.split == "test"]),
        )
        with atomic_write(row_path) as tmp:
            tmp.write_text(json.dumps(asdict(row), indent=1))
        rows.append(row)
        log(json.dumps({"held_out": held, "pixel@2px": row.all_images["pixel@2px"]}))
    out = LosoMaskResult(
        init=init_label, trunk_sources=trunk_sources, schedule=schedule.model_dump(mode="json"), val_per_source=val_per_source,
        always_trained_on=always,
        rows=rows, reference=ref, command=command,
        notes=[(f"Held out of the decoder and of the end-to-end fine-tune. The trunk every model starts from "
                f"({init_label}) was trained on patch labels of {', '.join(trunk_sources) or 'no recorded sources'}: "
                "'trunk saw' names the held-out sources among them, so those rows are not held out of the trunk's "
                "first training (its test splits were held out there too).")],
    )
    with atomic_write(out_dir / RESULT) as tmp:
        tmp.write_text(json.dumps(out.to_json(), indent=1))
    log(f"wrote {out_dir / RESULT}")
    return out


def _reference(config: MaskTrainConfig, out_dir: Path, images: list[MaskImage], groups: dict[str, list[str]],
               val_per_source: int | None, resume: bool, progress: bool, log: Log) -> LosoMaskReference:
    """Every source's training split, the same schedule; each held-out group scored on its test split."""
    run_dir = out_dir / REFERENCE
    row_path = run_dir / ROW
    if resume and row_path.is_file():
        log(f"reference: read {row_path} (done before)")
        return LosoMaskReference(**json.loads(row_path.read_text()))
    log("reference: training on every source")
    started = time.time()
    result = _fit(config, run_dir, images, val_per_source, resume, progress, log)
    tested = [im for im in images if im.split == "test" and im.pixel_truth
              and any(im.source in related for related in groups.values())]
    threshold, counts = _score(result.checkpoint, tested, config.workers, progress, "scoring the reference")
    sets = {held: _figures([c for im, c in zip(tested, counts) if im.source in related]) for held, related in groups.items()}
    ref = LosoMaskReference(trained_on=sorted({im.source for im in images if im.split == "train"}), threshold=threshold,
                            train_seconds=round(time.time() - started, 1), sets=sets)
    with atomic_write(row_path) as tmp:
        tmp.write_text(json.dumps(asdict(ref), indent=1))
    return ref
