"""Typed configuration.

YAML files validate into these models (unknown keys are rejected, so a typo fails
loudly instead of being ignored). Defaults that depend on other values (the stride
defaults to half the patch) are derived here and nowhere else; the resolved config
is written beside the outputs so every run can be reproduced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from survey_cracks.errors import ConfigError


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TilingConfig(StrictModel):
    """How a raster is cut into model patches."""

    patch_size: int = Field(128, ge=32, le=1024, description="pixels on a side fed to the model")
    stride: int | None = Field(None, ge=8, description="step between patches; default patch_size // 2")
    ground_patch_m: float | None = Field(
        None,
        gt=0,
        description="if set and the raster is georeferenced in metres, each patch covers this many "
        "metres on the ground and is resampled to patch_size (GSD-aware tiling)",
    )
    min_valid_fraction: float = Field(
        0.25, ge=0.0, le=1.0, description="patches with less of their area inside the footprint are skipped"
    )

    @model_validator(mode="after")
    def _derive_stride(self) -> "TilingConfig":
        if self.stride is None:
            object.__setattr__(self, "stride", max(8, self.patch_size // 2))
        if self.stride > self.patch_size:  # strips between patches would get no score, silently nodata
            raise ValueError(f"stride {self.stride} is larger than patch_size {self.patch_size}: "
                             "pixels between patches would get no score; use stride <= patch_size")
        return self

    @property
    def step(self) -> int:
        assert self.stride is not None
        return self.stride


Precision = Literal["auto", "fp32", "bf16", "fp16"]
InferencePrecision = Literal["auto", "fp32", "bf16", "fp16", "int8"]
Device = Literal["auto", "cpu", "cuda"]
Engine = Literal["auto", "torch", "inductor", "onnxruntime", "openvino"]
WINDOW_PX_RANGE = (128, 8192)  # a window core's bounds (px); `window_px: auto` chooses within them


class InferenceConfig(StrictModel):
    """How patches are scored and how the work is spread over Dask workers.

    The default is one worker process running one task per CPU core, each task on one
    torch thread: torch and its libraries (~0.8 GB resident) are loaded once, not once
    per core, and tasks never fight over cores.
    """

    mode: Literal["auto", "mask", "dense", "patch"] = Field(
        "auto",
        description="mask = per-pixel crack probability from the decoder (auto when the model has one); "
        "dense = the patch head at every 32 px from one trunk pass per window; patch = each 128 px patch on its own",
    )
    window_px: int | Literal["auto"] = Field(
        1024,
        description="core of a mask/dense window (multiple of 32, 128-8192); peak memory per task grows with "
        "(window + 2 margin)^2. auto = the largest whose working set (measured once per model and engine on this "
        "machine), times the tasks run at once (workers x threads per worker), fits memory_budget_gib",
    )
    memory_budget_gib: float = Field(
        0.8, gt=0, le=1024,
        description="window_px auto: memory the windows of all tasks running at once may take together (GiB); the rest "
        "of a run (torch and the model in each worker, the client) comes on top, ~1 GiB on a 2-core machine",
    )
    margin_px: int | None = Field(
        None, ge=0,
        description="context read around each window's core (multiple of 32); default: what the model needs, "
        "measured when its decoder was trained (`survey-cracks info`); smaller is an error",
    )
    scale: float = Field(
        1.0, ge=0.25, le=4.0,
        description="mask mode: processing resolution relative to the raster's (2 = each source pixel becomes 2 x 2, "
        "so a 1 px crack is 2 px wide for the network); outputs always come back on the raster's grid",
    )
    target_gsd_m: float | None = Field(
        None, gt=0,
        description="mask mode: process rasters georeferenced in metres at this ground sampling distance "
        "(scale = pixel size / target_gsd_m, within 0.25-4); others at `scale`",
    )
    batch_size: int = Field(64, ge=1, le=4096)
    workers: int = Field(1, ge=1, description="LocalCluster worker processes (each loads torch once)")
    threads_per_worker: int | None = Field(
        None, ge=1, description="tasks run at once in each worker; default cpu_count // workers"
    )
    torch_threads: int = Field(1, ge=1, description="intra-op threads of each task (torch or ONNX Runtime)")
    windows_per_task: int = Field(512, ge=1, description="patches one Dask task reads and scores")
    precision: InferencePrecision = Field(
        "auto", description="auto = fp16 on CUDA, bf16 on CPUs that run it natively (AVX-512 BF16/AMX), else fp32; "
        "int8 = the model's calibrated int8 export on ONNX Runtime (made once per model, cached)",
    )
    device: Device = "auto"
    engine: Engine = Field(
        "auto", description="auto = on a CPU with precision auto, the engine and precision measured fastest here at "
        "equal outputs (once per model, CPU and library versions; cached: `survey-cracks info --engines`); elsewhere "
        "ONNX Runtime when the model runs fp32 on a CPU, else PyTorch. inductor = PyTorch through torch.compile "
        "(compiled once, cached); openvino needs the openvino extra"
    )
    scheduler: str | None = Field(None, description="address of an existing Dask scheduler")
    scheduler_timeout_s: float = Field(30.0, gt=0, description="how long to try to reach the scheduler before giving up")
    gdal_cache_mb: int = Field(16, ge=8, description="GDAL block cache per process (MB): bounds memory; a window's blocks fit")

    @model_validator(mode="after")
    def _windows_multiple_of_32(self) -> "InferenceConfig":
        if self.window_px != "auto" and not WINDOW_PX_RANGE[0] <= self.window_px <= WINDOW_PX_RANGE[1]:
            raise ValueError(f"window_px {self.window_px} must be auto or within 128-8192")
        if (self.window_px != "auto" and self.window_px % 32) or (self.margin_px is not None and self.margin_px % 32):
            raise ValueError("window_px and margin_px must be multiples of 32 (the trunk's stride)")
        return self

    def worker_threads(self) -> int:
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // self.workers)


class HeatmapConfig(StrictModel):
    """How patch scores become a per-pixel crack probability raster."""

    block_size: int = Field(512, ge=64, le=8192, multiple_of=16, description="output block edge (GeoTIFF tiles: multiple of 16)")
    compress: Literal["deflate", "lzw", "zstd"] = "deflate"
    compress_level: int = Field(
        1, ge=1, le=9, description="deflate/zstd level: 1 is twice as fast as GDAL's 6 for ~3 % more bytes"
    )
    blend_floor: float = Field(
        0.1, gt=0.0, le=1.0, description="weight at a patch edge relative to its centre (smooth blending)"
    )
    write_mask: bool = Field(False, description="also write crack_mask.tif: 1 crack, 0 none at the threshold (run --write-mask)")


class VectorizeConfig(StrictModel):
    """How the heatmap becomes crack polygons."""

    threshold: float | None = Field(None, ge=0.0, le=1.0, description="default: the model's calibrated one")
    min_area_px: float | None = Field(
        None, ge=0.0, description="smaller polygons are dropped; default 16 px in mask mode (a 2 px crack 8 px long), 64 in patch/dense mode"
    )
    simplify_px: float = Field(1.0, ge=0.0, description="Douglas-Peucker tolerance in pixels")

    def for_mode(self, mode: str) -> "VectorizeConfig":
        """This config with the mode's defaults filled in."""
        if self.min_area_px is not None:
            return self
        return self.model_copy(update={"min_area_px": 16.0 if mode == "mask" else 64.0})


class CentrelineConfig(StrictModel):
    """How crack regions become centrelines (pixel units)."""

    min_spur_px: float = Field(10.0, ge=0.0, description="dangling branches shorter than this are pruned")
    min_length_px: float = Field(10.0, ge=0.0, description="isolated lines shorter than this are dropped")
    simplify_px: float = Field(0.7, ge=0.0, description="Douglas-Peucker tolerance on the final lines (ends kept)")


class EvaluateConfig(StrictModel):
    """How predictions are scored against annotations."""

    cell_size_px: int = Field(128, ge=8, description="edge of the fixed grid cells of the cell-level metric")
    min_cell_crack_px: int = Field(
        8, ge=1, description="annotated crack pixels a cell needs to count as a crack cell"
    )
    pixel_tolerances_px: list[int] = Field(default_factory=lambda: [0, 2, 5])
    centreline_tolerance_px: int = Field(2, ge=0, description="tolerance of centreline completeness/correctness/quality")
    object_tolerance_px: float = Field(2.0, ge=0, description="annotated and predicted objects are grown by this before overlaps are measured")
    object_overlap: float = Field(
        0.5, gt=0.0, le=1.0,
        description="share of a predicted polygon that must lie on one annotated object for it to be correct "
        "(and of an annotated object on one polygon for it to be found)",
    )
    default_line_width_px: float = Field(
        3.0, gt=0, description="width given to annotated lines that carry no width attribute"
    )


class RunConfig(StrictModel):
    """Everything `survey-cracks run` needs besides the inputs."""

    tiling: TilingConfig = Field(default_factory=TilingConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    heatmap: HeatmapConfig = Field(default_factory=HeatmapConfig)
    vectorize: VectorizeConfig = Field(default_factory=VectorizeConfig)
    centrelines: CentrelineConfig = Field(default_factory=CentrelineConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)


Split = Literal["train", "val", "test"]
SourceKind = Literal["mask_folder", "class_folders", "yolo_boxes", "survey"]


class SplitFractions(StrictModel):
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.0, ge=0.0, lt=1.0)


class DataSource(StrictModel):
    """One training data source; `kind` says how its labels are read."""

    name: str
    kind: SourceKind
    root: Path = Field(description="folder of the source (relative paths resolve against the config file)")
    images: str = Field("images", description="images sub-folder (mask_folder, yolo_boxes)")
    masks: str = Field("masks", description="masks sub-folder (mask_folder)")
    labels: str = Field("labels", description="YOLO label sub-folder (yolo_boxes)")
    role: Literal["split", "test"] = Field(
        "split", description="split = divided by image into train/val(/test); test = final report only"
    )
    split: SplitFractions = Field(default_factory=SplitFractions)
    exclude_groups: list[str] = Field(
        default_factory=list, description="image groups (e.g. sites) left out of this source entirely"
    )
    include_groups: list[str] = Field(
        default_factory=list, description="if set, only these image groups (e.g. sites) are used"
    )
    group_csv: str | None = Field(
        None, description="CSV with columns stem,<group column> that groups images (e.g. sites.csv)"
    )
    group_column: str = "site"
    group_regex: str | None = Field(
        None,
        description="regex whose first group names the photo an image was cut from (e.g. '^(.+)-\\d+$'); "
        "images of one group always land in the same split; with alternatives, the first group that matched",
    )
    drop_duplicates: bool = Field(
        False, description="leave out held-out (val/test) images byte-identical to a training image or to each other"
    )
    weight: float = Field(1.0, gt=0, description="relative share of this source in each training epoch")
    max_patches: int | None = Field(None, ge=1, description="cap on patches taken from this source")


class LabelRule(StrictModel):
    """How a patch is labelled from a mask or boxes (see training/labels.py)."""

    center_fraction: float = Field(0.5, gt=0.0, le=1.0, description="side of the central region, as a fraction")
    min_center_crack_px: int = Field(24, ge=1, description="crack pixels in the centre for a crack patch")
    box_center_overlap: float = Field(
        0.15, gt=0.0, le=1.0, description="share of the centre a box must cover for a crack patch"
    )
    negatives_per_positive: float = Field(
        1.5, gt=0.0, description="cap on crack-free patches kept per crack patch, per source"
    )


class Schedule(StrictModel):
    """Transfer-learning schedule: head first, then the whole network."""

    epochs: int = Field(12, ge=1)
    head_epochs: int = Field(1, ge=0, description="epochs training only the classifier head")
    lr: float = Field(2e-3, gt=0)
    backbone_lr_factor: float = Field(0.1, gt=0, le=1.0, description="backbone LR = lr x this after the head phase")
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, ge=2)
    patience: int = Field(4, ge=1, description="early stopping: epochs without a better validation F1 (keep: best_val_f1)")
    keep: Literal["best_val_f1", "last"] = Field(
        "best_val_f1",
        description="which epoch's weights are kept: the best validation F1 (with early stopping), "
        "or the last epoch of the full schedule (no early stopping; steadier when validation F1 is noisy)",
    )
    samples_per_epoch: int | None = Field(None, ge=1, description="default: the training set's size")
    label_smoothing: float = Field(0.05, ge=0.0, lt=0.5)


class ThresholdRule(StrictModel):
    mode: Literal["max_f1", "target_recall"] = "max_f1"
    target_recall: float = Field(0.9, gt=0.0, le=1.0)


class TrainConfig(StrictModel):
    """Everything `survey-cracks train` needs."""

    sources: list[DataSource] = Field(min_length=1)
    init: Literal["imagenet", "shipped", "scratch", "auto"] = Field(
        "auto", description="auto = ImageNet if the verified file is found, else scratch"
    )
    init_path: Path | None = Field(None, description="ImageNet .pth or a survey_cracks checkpoint")
    tiling: TilingConfig = Field(default_factory=TilingConfig)
    labels: LabelRule = Field(default_factory=LabelRule)
    schedule: Schedule = Field(default_factory=Schedule)
    threshold: ThresholdRule = Field(default_factory=ThresholdRule)
    augment: bool = True
    seed: int = 0
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="torch threads")
    precision: Precision = Field(
        "auto",
        description="auto = bf16 autocast on CPUs with native bf16, fp16 on CUDA, else fp32; "
        "fp32 gives the same run on any CPU kind that has the same kernels",
    )
    out_dir: Path = Path("runs/train")


class MaskSchedule(StrictModel):
    """Decoder first with the trunk frozen, then the whole network at a low rate (see training/segment.py)."""

    decoder_steps: int = Field(2000, ge=0, description="steps training the decoder alone (trunk and patch head frozen)")
    joint_steps: int = Field(1500, ge=0, description="steps training everything, both losses")
    batch_size: int = Field(8, ge=1)
    crop_size: int = Field(256, ge=64, le=1024, multiple_of=32, description="training crop edge (multiple of 32): the decoder's context")
    lr: float = Field(1e-3, gt=0, description="decoder learning rate (cosine-decayed within each phase)")
    trunk_lr_factor: float = Field(0.1, gt=0, le=1.0, description="trunk and patch head rate = lr x this in the joint phase")
    weight_decay: float = Field(1e-4, ge=0)
    dice_weight: float = Field(1.0, ge=0, description="soft Dice loss weight beside pixel BCE")
    patch_loss_weight: float = Field(0.3, ge=0, description="weight of the patch head's loss in the joint phase")
    checkpoint_every: int = Field(250, ge=1, description="steps between resumable checkpoints and validation")
    scale_jitter: tuple[float, float] = Field((0.7, 1.4), description="random rescale of each crop (other GSDs)")
    negative_weight: float = Field(
        5.0, ge=1.0, description="BCE weight of pixels annotated `not_crack` (hard negatives: joints, seams, paint lines)"
    )
    synthetic_negatives: float = Field(
        0.0, ge=0.0, le=1.0, description="share of training crops with a straight look-alike drawn on them as a hard "
        "negative (joint, formwork board joints, marking or patch edge; training/negatives.py)"
    )
    faint_cracks: float = Field(
        0.0, ge=0.0, le=1.0, description="share of training crops whose cracks are faded toward their surroundings, "
        "label kept (faint hairlines are most of the misses; training/faint_cracks.py)"
    )
    mined_negatives: float = Field(
        0.0, ge=0.0, le=1.0, description="hard-negative mining (training/mining.py): the start model's false cracks on "
        "the training images become hard negatives, and this share of the crops of an image that has any is cut "
        "around one; 0 = no mining"
    )
    mining_clearance_px: int = Field(5, ge=0, description="mined pixels lie farther than this from a labelled crack")
    mining_min_px: int = Field(16, ge=1, description="smallest connected component of false cracks that is mined")
    mining_min_elongation: float = Field(
        0.0, ge=0.0, description="principal-axis ratio a mined component needs (straight look-alikes only); 0 = any shape"
    )
    mining_sources: list[str] | None = Field(
        None, description="sources whose training images are mined; None = all (a source with incomplete crack "
        "labels would teach its unlabelled cracks as background)"
    )
    patience: int | None = Field(
        None, ge=1, description="early stop after this many checkpoints without a better validation pixel F1 "
        "(the best one's weights are kept); None: train every step, keep the last"
    )


class MaskTrainConfig(StrictModel):
    """Everything `survey-cracks train-mask` needs: the crack-mask decoder on a patch classifier's trunk."""

    sources: list[DataSource] = Field(min_length=1)
    init: Literal["shipped", "imagenet", "scratch", "auto"] = Field(
        "shipped", description="trunk start: the shipped crack classifier (or init_path), ImageNet, or scratch"
    )
    init_path: Path | None = Field(None, description="a survey_cracks checkpoint (init: shipped) or ImageNet .pth")
    decoder_channels: int = Field(32, ge=8, le=256, description="FPN width")
    keep_decoder: bool = Field(
        False, description="init: shipped with a mask model: start from its decoder too (fine-tuning), not a fresh one"
    )
    schedule: MaskSchedule = Field(default_factory=MaskSchedule)
    labels: LabelRule = Field(default_factory=LabelRule)
    tolerance_px: int = Field(2, ge=0, description="pixel tolerance of the validation F1 that picks the mask threshold")
    augment: bool = True
    seed: int = 0
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, description="torch threads")
    out_dir: Path = Path("runs/mask")

    @model_validator(mode="after")
    def _mining_needs_a_mask_model(self) -> "MaskTrainConfig":
        if self.schedule.mined_negatives > 0 and not (self.init == "shipped" and self.keep_decoder):
            # Mining runs the start model's decoder: a fresh decoder would mine noise.
            raise ValueError("schedule.mined_negatives needs a start model with a trained decoder: "
                             "set init: shipped and keep_decoder: true, or mined_negatives: 0")
        unknown = set(self.schedule.mining_sources or ()) - {s.name for s in self.sources}
        if unknown:
            raise ValueError(f"schedule.mining_sources names {', '.join(sorted(unknown))}, not a source of this config; "
                             f"name some of: {', '.join(s.name for s in self.sources)}")
        return self


M = TypeVar("M", bound=StrictModel)


def load_config(model: type[M], path: str | Path | None, overrides: dict[str, Any] | None = None) -> M:
    """Read YAML into `model`; relative data paths resolve against the file's folder."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(path, "config file not found", "check the path given to --config") from None
        except yaml.YAMLError as exc:
            raise ConfigError(path, f"not valid YAML ({exc})", "fix the syntax") from None
        if not isinstance(data, dict):
            raise ConfigError(path, "config must be a mapping of keys to values")
        _resolve_paths(data, path.parent)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(path, f"invalid config ({problems})", "see configs/ for a valid example") from None


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for source in data.get("sources", []) or []:
        if isinstance(source, dict) and "root" in source and not Path(source["root"]).is_absolute():
            source["root"] = str((base / source["root"]).resolve())
    for key in ("init_path",):
        if key in data and data[key] and not Path(data[key]).is_absolute():
            data[key] = str((base / data[key]).resolve())
