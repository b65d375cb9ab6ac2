"""`survey-cracks`: the command line. It parses, calls one library function, reports.

No work happens here: every command maps onto a function of the library so the same
job can run from Python, a notebook or a scheduler.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click
from rasterio.errors import NotGeoreferencedWarning

from survey_cracks.cli.options import (
    WINDOW_PX,
    assets_opt,
    config_opt,
    model_opt,
    out_dir_opt,
    quiet_opt,
    resume_opt,
    rules_opt,
    ship_opt,
)
from survey_cracks.edge.cli import stream_and_report, stream_options
from survey_cracks.errors import InfrastructureError, SurveyCracksError
from survey_cracks.models.checkpoint import SHIPPED_MODEL

if TYPE_CHECKING:
    from survey_cracks.run.pipeline import RunResult

# Road scans have no georeferencing by design; raster.inspect_raster records that in report.json.
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)


# Exit codes of `run` (documented in its --help, the README and docs/guide/surveys.md); an interrupted run
# exits 128 + the signal's number (130 Ctrl-C, 143 SIGTERM), as a shell reports it.
EXIT_OK, EXIT_RASTERS_FAILED, EXIT_USAGE, EXIT_INFRASTRUCTURE, EXIT_ANNOTATION_UNUSED = 0, 1, 2, 3, 4


def _fail(error: SurveyCracksError) -> NoReturn:
    """One line on stderr; exit 3 for the machine's problems (lock, disk, scheduler), 2 for the user's."""
    click.echo(f"error: {error.message}", err=True)
    sys.exit(EXIT_INFRASTRUCTURE if isinstance(error, InfrastructureError) else EXIT_USAGE)


def _report_training(metrics: dict, checkpoint: Path) -> None:
    """What a training command ends with: the held-out (test split) figures and where the checkpoint is."""
    click.echo(json.dumps({k: v for k, v in metrics["sets"].items() if k.startswith("test/")}, indent=1))
    click.echo(f"checkpoint: {checkpoint}")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="survey_cracks")
def cli() -> None:
    """Find cracks in infrastructure survey imagery.

    \b
    Typical night:  survey-cracks run /data/surveys/ --out /data/results/2026-11-25
    Fine-tune:      survey-cracks finetune my_surveys/ --out my_model.safetensors
    Then:           survey-cracks run /data/surveys/ --model my_model.safetensors --out ...

    Run any command with --help for its options and defaults.
    """


@cli.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))
@click.option("--from-list", "from_list", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Also the rasters listed in FILE, one per line (path, http(s):// URL or s3:// URI; blank lines "
                   "and # comments ignored).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder; gets <survey>/<raster>/{heatmap.tif, cracks.gpkg, cracks.geojson, report.json}, "
                   "summary.csv and run.json. Its parent must exist.")
@config_opt
@model_opt
@click.option("--scheduler", default=None, help="Address of a running Dask scheduler (tcp://host:8786). "
              "[default: start a LocalCluster on this machine]")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="LocalCluster worker processes; each loads torch (~0.8 GB).  [default: 1]")
@click.option("--threads", type=click.IntRange(1), default=None,
              help="Tasks each worker runs at once, one torch thread each.  [default: CPUs // workers]")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Crack probability for polygons and metrics.  [default: the model's calibrated threshold]")
@click.option("--ground-patch-m", type=click.FloatRange(min=0, min_open=True), default=None,
              help="GSD-aware tiling: metres of ground per patch on georeferenced rasters.  [default: off, patch = model input]")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Patches per model batch (patch mode).  [default: 64]")
@click.option("--mode", type=click.Choice(["auto", "mask", "dense", "patch"]), default=None,
              help="mask: per-pixel cracks from the decoder; dense: the patch head every 32 px, one trunk pass per window; "
                   "patch: each 128 px patch scored on its own.  [default: auto = mask when the model has a decoder, else patch]")
@click.option("--window", "window_px", type=WINDOW_PX, default=None,
              help="Core of each mask/dense window, a multiple of 32 from 128 to 8192 (memory per task grows with its "
                   "square), or auto: the largest whose working set (measured once per model and engine here) times "
                   "the tasks run at once fits --memory-budget; run.json says which and why.  [default: 1024]")
@click.option("--memory-budget", "memory_budget_gib", type=click.FloatRange(min=0, min_open=True), default=None,
              help="With --window auto: GiB the windows of all tasks running at once may take together (the rest of "
                   "a run, ~1 GiB on 2 cores, comes on top).  [default: 0.8]")
@click.option("--margin", "margin_px", type=click.IntRange(0), default=None,
              help="Context read around each window's core, a multiple of 32.  [default: what the model needs (survey-cracks info)]")
@click.option("--scale", type=click.FloatRange(0.25, 4.0), default=None,
              help="Mask mode: process at this multiple of the raster's resolution (2: a 1 px crack becomes 2 px wide "
                   "for the network); outputs stay on the raster's grid.  [default: 1]")
@click.option("--target-gsd", "target_gsd_m", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Mask mode: process rasters georeferenced in metres at this ground sampling distance (m/px), e.g. 0.001; "
                   "others at --scale.")
@assets_opt
@rules_opt
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Where the workers run the model (printed before the first raster, with the engine and "
                   "precision).  [default: auto = cuda when a GPU is visible, else cpu]")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]), default=None,
              help="auto: fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; int8: the model's calibrated int8 "
                   "export on ONNX Runtime (made and checked once per model, then cached; its F1 beside fp32 is in "
                   "the cache's <sha256>.int8.onnx.json).  [default: auto]")
@click.option("--write-mask", is_flag=True, help="Also write crack_mask.tif beside each heatmap.tif: 1 crack, 0 no crack at "
              "the threshold, 255 outside the footprint (a COG).")
@click.option("--force", is_flag=True, help="Recompute every raster, even those whose outputs in OUT are up to date.")
@click.option("--layout", type=click.Choice(["collection", "per-raster"]), default="collection", show_default=True,
              help="collection: a survey's photos (JPEG/PNG without a world file; mask mode) go into one "
                   "OUT/<survey>/collection/ (cracks.gpkg with a photo column, photos.csv, heatmaps/); per-raster: "
                   "a folder per photo, as for orthomosaics (docs/guide/photos.md).")
@click.option("--no-heatmaps", is_flag=True, help="Collection layout: no heatmaps/ PNG per photo (vectors and tables only; "
              "`evaluate OUT` then cannot re-score the photos).")
@click.option("--frame-positions", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Collection layout: CSV of photo positions, columns photo,lon,lat[,time] (photo: file name or stem; "
                   "degrees, EPSG:4326), e.g. a video's frames: the photos layer gets a point per photo named. A position "
                   "given here wins over the photo's EXIF GPS; it holds for later runs until another CSV is given.")
@click.option("--quiet", "-q", is_flag=True, help="For cron: print only warnings, errors and one closing line. Progress bars "
              "are drawn only on a terminal; a redirected log gets plain lines.")
def run(inputs: tuple[str, ...], from_list: Path | None, out: Path, config_path: Path | None, model_path: Path | None, scheduler: str | None,
        workers: int | None, threads: int | None, threshold: float | None, ground_patch_m: float | None, batch_size: int | None,
        mode: str | None, window_px: int | str | None, memory_budget_gib: float | None, margin_px: int | None, scale: float | None, target_gsd_m: float | None,
        assets_path: Path | None, rules_path: Path | None, device: str | None, precision: str | None, write_mask: bool,
        force: bool, layout: str, no_heatmaps: bool, frame_positions: Path | None, quiet: bool) -> None:
    """Detect cracks in every raster of INPUTS (raster files, survey folders, or folders of survey folders).

    \b
    An input may also live on a server, read there by GDAL (by every Dask worker too):
      http(s)://host/survey/ortho.tif   a raster on a web server (or /vsicurl/http...)
      s3://bucket/surveys/              a survey folder, or a folder of them, in S3 (or /vsis3/...);
                                        credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY;
                                        another S3 server: AWS_S3_ENDPOINT=host:port (AWS_HTTPS=NO,
                                        AWS_VIRTUAL_HOSTING=FALSE); s3:// needs survey_cracks[remote]
      --from-list FILE                  such rasters (or local ones) one per line
    Their survey is their folder's name; annotations are looked for beside them on the server;
    "up to date" compares what the server says (size, ETag, Last-Modified): nothing is downloaded for it.

    \b
    Per raster:  heatmap.tif      crack probability 0..1 per pixel, Cloud-Optimized GeoTIFF, raster's CRS and grid
                 crack_mask.tif   with --write-mask: 1 crack, 0 none at the threshold (COG)
                 cracks.gpkg      layer 'cracks': crack polygons with length, mean/max width, scores;
                                  layer 'centrelines': crack centrelines with length and width (mask mode)
                 cracks.geojson   the polygons; centrelines.geojson the centrelines
                 report.json      counts, timings and, when annotations exist, precision/recall/F1
    Photos:      a survey's photos (JPEG/PNG, no world file) go into <survey>/collection/ (--layout):
                 cracks.gpkg (cracks, centrelines with a photo column; photos), photos.csv, heatmaps/<photo>.png
    Per survey:  <survey>.gpkg    layers cracks, centrelines (with crack type), assets (figures, condition), styled
                 assets.csv       the per-asset figures and condition classes
                 <survey>.qgz     QGIS project: every raster's layers styled and grouped (double-click to open)
                 heatmaps.vrt     all heatmaps as one raster (georeferenced surveys of one CRS)
    Per run:     report.html (self-contained), catalog.json (STAC), summary.csv, run.json
    Annotations beside X.tif are found automatically: X.cracks.geojson, X.cracks.gpkg, X.mask.png, X.mask.tif.

    Run it again into the same OUT and only new or changed rasters (raster, annotation, model or
    settings) are computed; the others are "up to date" (OUT/.manifest records why). A killed run
    resumes where it stopped. summary.csv, the surveys' report.json and run.json always cover every
    raster in OUT; OUT/run.log and OUT/run.log.jsonl keep every message. Survey folders of one name
    (2025/bridge, 2026/bridge) and rasters of one stem (ortho.tif, ortho.jpg) get distinct, stable
    output folders (bridge, 2026-bridge; ortho, ortho_tif); see docs/guide/nightly.md, "Output names".

    \b
    Exit codes:  0  every raster done or up to date
                 1  some rasters failed, or one of several inputs is missing or unreachable (the
                    others are done; one FAILED line each; summary.csv says why)
                 2  usage error: options, config, model file, --out's parent missing, no input
                    exists or none holds a raster (OUT is not created)
                 3  infrastructure: OUT locked by another run, OUT not writable, disk full,
                    Dask scheduler unreachable or malformed
                 4  every raster done, but an annotation could not be used: its raster's maps are
                    written without metrics (one WARNING line each; annotation_error in summary.csv)
                 130, 143  interrupted by Ctrl-C (SIGINT) or SIGTERM: finished rasters and windows are
                    kept, run.json says "interrupted"; the same command resumes
    """
    if not inputs and from_list is None:
        raise click.UsageError("give INPUTS (raster files, survey folders, URLs) or --from-list FILE")
    from survey_cracks.run.interrupt import as_interrupted, interrupted_line, interruptible

    try:
        with interruptible():
            result = _run(inputs, from_list, out, config_path, model_path, quiet, assets_path, rules_path, force, layout,
                          not no_heatmaps, frame_positions, {
                "inference.scheduler": scheduler, "inference.workers": workers,
                "inference.threads_per_worker": threads, "inference.batch_size": batch_size,
                "vectorize.threshold": threshold, "tiling.ground_patch_m": ground_patch_m,
                "inference.mode": mode, "inference.window_px": window_px, "inference.memory_budget_gib": memory_budget_gib,
                "inference.margin_px": margin_px,
                "inference.scale": scale, "inference.target_gsd_m": target_gsd_m, "inference.precision": precision,
                "inference.device": device, "heatmap.write_mask": True if write_mask else None,
            })
    except KeyboardInterrupt as error:  # Ctrl-C or SIGTERM: said in one line (by the run once it has OUT), no traceback
        interrupted = as_interrupted(error)
        if not interrupted.reported:
            click.echo(interrupted_line(interrupted), err=True)
        sys.exit(interrupted.exit_code)
    from survey_cracks.deliver.console import counted

    for outcome in result.failed:
        click.echo(f"FAILED {outcome.error}", err=True)
    ok = len(result.outcomes) - len(result.failed)
    # with collections of photos, what the entries are ("6 photos in 1 collection"), not "1 raster"
    what = (f"{len(result.outcomes)} done ({result.words()}; " if result.covered_collections
            else f"{counted(len(result.outcomes), 'raster')} done (")
    click.echo(f"{ok} of {what}{len(result.computed)} computed, "
               f"{len(result.up_to_date)} up to date, {len(result.failed)} failed); outputs in {out}/ (summary.csv covers "
               f"{result.covered_words()}, run.json, report.html, catalog.json)")
    unused = [o for o in result.outcomes if o.annotation_error]
    if unused and not result.failed:
        click.echo(f"{counted(len(unused), 'annotation')} could not be used: those rasters have no metrics (see the WARNING lines)", err=True)
    sys.exit(EXIT_RASTERS_FAILED if result.failed else EXIT_ANNOTATION_UNUSED if unused else EXIT_OK)


def progress_bars() -> bool:
    """Bars only on a terminal: redirected, their carriage returns and cursor moves garble the log (plain lines
    instead). SURVEY_CRACKS_PROGRESS=bars keeps them on a pipe (the QGIS plugin reads its percentage from them)."""
    return os.environ.get("SURVEY_CRACKS_PROGRESS") == "bars" or sys.stderr.isatty()


def _run(inputs: tuple[str, ...], from_list: Path | None, out: Path, config_path: Path | None, model_path: Path | None,
         quiet: bool, assets_path: Path | None, rules_path: Path | None, force: bool, layout: str, heatmaps: bool,
         frame_positions: Path | None, overrides: dict[str, object]) -> RunResult:
    """`run`'s work once its options are parsed: the inputs checked, the cluster started early, the surveys run."""
    from survey_cracks.config import RunConfig, load_config
    from survey_cracks.io.discover import nothing_to_read, read_input_list

    try:
        listed = read_input_list(from_list) if from_list else []
        if (problem := nothing_to_read([*inputs, *listed])) is not None:
            click.echo(f"error: nothing to run: {problem}", err=True)  # OUT is not created for a typo
            sys.exit(EXIT_USAGE)
        config = load_config(RunConfig, config_path, overrides)
        from survey_cracks.inference.cluster import EarlyCluster

        # The workers start now, while the pipeline's libraries are imported (seconds each).
        with EarlyCluster(config.inference) as cluster:
            from survey_cracks.deliver.condition import load_rules
            from survey_cracks.run.pipeline import run_surveys

            rules = load_rules(rules_path)
            return run_surveys([*inputs, *listed], out, config, model_path, progress=not quiet and progress_bars(),
                               log=click.echo, assets=assets_path, rules=rules, force=force, quiet=quiet, cluster=cluster,
                               layout=layout, heatmaps=heatmaps, frame_positions=frame_positions)
    except SurveyCracksError as error:
        _fail(error)


@cli.command("train-mask")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Mask training config (configs/mask.yaml trains the shipped model's decoder).")
@out_dir_opt("checkpoints and metrics.json")
@click.option("--init-path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The checkpoint whose trunk and patch head to start from.  [default: init_path of the config, else the shipped model]")
@resume_opt("checkpoint (same weights as an uninterrupted run)")
@ship_opt
@click.option("--loso", is_flag=True,
              help="Instead: the leave-one-source-out table. One model per held-out pixel-mask source, trained on the "
                   "others from init_path's trunk with a fresh decoder, scored on all its labelled images; and a reference "
                   "on all sources. Writes OUT_DIR/loso_mask.json and loso_mask.md; sources already done are skipped.")
@click.option("--loso-steps", type=str, default="300,200", show_default=True, metavar="DECODER,JOINT",
              help="With --loso: the schedule of each model (decoder-only steps, joint steps).")
@click.option("--holdout", multiple=True, metavar="SOURCE",
              help="With --loso: hold out only this source (repeatable).  [default: every mask_folder source with test images]")
@click.option("--loso-val", type=click.IntRange(1), default=None, metavar="N",
              help="With --loso: calibrate each threshold on at most N validation images per source.  [default: all]")
@quiet_opt
def train_mask(config_path: Path, out_dir: Path | None, init_path: Path | None, resume: bool, ship: bool, loso: bool,
               loso_steps: str, holdout: tuple[str, ...], loso_val: int | None, quiet: bool) -> None:
    """Train the crack-mask decoder on a classifier's trunk: decoder first, then end to end.

    Writes OUT_DIR/model.safetensors (patch + mask heads, calibrated mask threshold) and
    OUT_DIR/metrics.json (pixel and centreline figures on the validation and test splits).
    With --loso, the leave-one-source-out table instead (OUT_DIR/loso_mask.json and .md).
    """
    from survey_cracks.config import MaskTrainConfig, load_config
    from survey_cracks.training.segment import fit_mask

    try:
        steps = [int(part) for part in loso_steps.split(",")]
        if len(steps) != 2 or min(steps) < 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"{loso_steps!r}: two step counts, DECODER,JOINT (e.g. 300,200)", param_hint="--loso-steps")
    try:
        config = load_config(MaskTrainConfig, config_path, {
            "out_dir": str(out_dir) if out_dir else None, "init_path": str(init_path) if init_path else None,
        })
        if loso:
            from survey_cracks.outputs import atomic_write
            from survey_cracks.training.loso_mask import leave_one_source_out_mask
            from survey_cracks.training.loso_mask_table import loso_mask_markdown

            command = " ".join([f"survey-cracks train-mask --config {config_path}",
                                *([f"--init-path {init_path}"] if init_path else []), f"--loso --loso-steps {loso_steps}",
                                *(f"--holdout {name}" for name in holdout), *([f"--loso-val {loso_val}"] if loso_val else []),
                                *([f"--out-dir {out_dir}"] if out_dir else [])])
            report = leave_one_source_out_mask(config, list(holdout) or None, *steps, val_per_source=loso_val,
                                               progress=not quiet, log=click.echo, command=command)
            table = loso_mask_markdown(report.to_json())
            with atomic_write(Path(config.out_dir) / "loso_mask.md") as tmp:
                tmp.write_text(table + "\n")
            click.echo(table)
            return
        result = fit_mask(config, resume=resume, progress=not quiet, log=click.echo, ship=ship)
    except SurveyCracksError as error:
        _fail(error)
        return
    _report_training(result.metrics, result.checkpoint)


@cli.command("evaluate-mask")
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Mask training config whose validation and test images are scored (configs/mask.yaml).")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Checkpoint to score.  [default: the shipped model]")
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the figures here (JSON).")
@click.option("--scales", type=float, multiple=True,
              help="Instead: accuracy against cost on the validation images at these processing scales "
                   "(repeatable, e.g. --scales 0.75 --scales 1 --scales 1.5 --scales 2; what `run --scale` does).")
@click.option("--by-group", "by_group", multiple=True, metavar="SOURCE",
              help="Also the figures of each group (map or photo, the source's group_regex) of this source "
                   "(repeatable), under \"groups\" in the JSON.")
@quiet_opt
def evaluate_mask(config_path: Path, model_path: Path | None, out: Path | None, scales: tuple[float, ...],
                  by_group: tuple[str, ...], quiet: bool) -> None:
    """Pixel (0 and 2 px) and centreline figures of a checkpoint on held-out images, at its own threshold.

    A mask model is scored on its per-pixel output; a patch classifier on its patch
    scores blended into a heatmap (what `run --mode dense` writes), so the two can be compared.
    """
    from survey_cracks.config import MaskTrainConfig, load_config
    from survey_cracks.training.segment import evaluate_mask_checkpoint, scale_study

    try:
        config = load_config(MaskTrainConfig, config_path)
        if scales:
            figures = scale_study(config, model_path, list(scales), progress=not quiet)
        else:
            figures = evaluate_mask_checkpoint(config, model_path, progress=not quiet, by_group=by_group)
    except SurveyCracksError as error:
        _fail(error)
        return
    for source in figures.get("not_held_out", []):
        click.echo(f"warning: the model trained on {source}, which {config_path} holds out whole: its test/{source} "
                   "figures include training images; score it with a config that splits it as the model's training did "
                   "(for the shipped model and uavcrack_bridges: configs/mask_bridges.yaml)", err=True)
    text = json.dumps(figures, indent=1)
    if out:
        out.write_text(text + "\n")
    click.echo(text)


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training config (configs/train.yaml trains the shipped model).")
@out_dir_opt("checkpoints, metrics.json and pr_curve.png")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Override schedule.epochs.")
@click.option("--init", type=click.Choice(["auto", "imagenet", "shipped", "scratch"]), default=None,
              help="Starting weights.  [default: from the config; auto = ImageNet if the verified file is cached, else scratch]")
@click.option("--init-path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ImageNet resnet18-f37072fd.pth or a survey_cracks checkpoint.")
@resume_opt("epoch checkpoint")
@ship_opt
@quiet_opt
def train(config_path: Path, out_dir: Path | None, epochs: int | None, init: str | None, init_path: Path | None,
          resume: bool, ship: bool, quiet: bool) -> None:
    """Train the crack classifier on the sources of a config; report held-out precision/recall/F1."""
    from survey_cracks.config import TrainConfig, load_config
    from survey_cracks.training.train import train as train_model

    try:
        config = load_config(TrainConfig, config_path, {
            "out_dir": str(out_dir) if out_dir else None, "schedule.epochs": epochs, "init": init,
            "init_path": str(init_path) if init_path else None,
        })
        result = train_model(config, resume=resume, progress=not quiet, log=click.echo, ship=ship)
    except SurveyCracksError as error:
        _fail(error)
        return
    _report_training(result.metrics, result.checkpoint)


def refuse_unused(form: str, what: str, given: dict[str, object]) -> None:
    """A usage error (exit 2) for options given that ``form`` of a command would ignore: silently unused is worse."""
    unused = [name for name, value in given.items() if value is not None]
    if unused:
        raise click.UsageError(f"{' and '.join(unused)} cannot be used with {form}: {what} "
                               f"({' and '.join(unused)} {'go' if len(unused) > 1 else 'goes'} with the other form; see --help)")


@cli.command()
@click.argument("out_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="OUT_DIR: recompute at this crack probability.  [default: the run's threshold]")
@assets_opt
@rules_opt
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Instead of OUT_DIR: a training config whose validation and test splits are scored (configs/train.yaml).")
@model_opt
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --config: also write the table as JSON here.  [default: print only]")
@quiet_opt
def evaluate(out_dir: Path | None, threshold: float | None, assets_path: Path | None, rules_path: Path | None,
             config_path: Path | None, model_path: Path | None, out: Path | None, quiet: bool) -> None:
    """Recompute a run's metrics and reports from its outputs (OUT_DIR), or score a checkpoint (--config).

    \b
    survey-cracks evaluate OUT_DIR [--threshold T]: polygons, centrelines, metrics, report.json, summary.csv,
        the survey GeoPackages, report.html and the STAC catalogue again from heatmap.tif and the annotations
        beside the source rasters, without the model: the same outputs as a fresh run at T. OUT's manifest then
        records T, as `run --threshold T` would: a later run at another threshold computes those rasters again.
        A collection of photos is re-scored from its heatmaps/<photo>.png (not after --no-heatmaps: one line says so).
    survey-cracks evaluate --config configs/train.yaml: patch-level precision, recall, F1 and AP per source of a
        checkpoint on a training config's held-out splits at its calibrated threshold.
    """
    if (out_dir is None) == (config_path is None):
        raise click.UsageError("give either OUT_DIR (a run's output folder) or --config (a training config)")
    if out_dir is not None:
        refuse_unused("OUT_DIR", "it rewrites the run's own outputs in OUT_DIR", {"--out": out, "--model": model_path})
    else:
        refuse_unused("--config", "it scores a checkpoint on a training config's held-out splits",
                      {"--threshold": threshold, "--assets": assets_path, "--rules": rules_path})
    if out_dir is not None:
        from survey_cracks.deliver.condition import load_rules
        from survey_cracks.run.reevaluate import evaluate_outputs

        try:
            rules = load_rules(rules_path) if rules_path else None
            outcomes = evaluate_outputs(out_dir, threshold, assets_path, rules, progress=not quiet, log=click.echo)
        except SurveyCracksError as error:
            _fail(error)
            return
        from survey_cracks.deliver.console import rasters_and_photos

        done = [o for o in outcomes if o.status == "ok"]
        collections = [o for o in done if o.counts.photos is not None]
        what = rasters_and_photos(len(done) - len(collections), sum(o.counts.photos or 0 for o in collections),
                                  len(collections))
        click.echo(f"{', '.join(what)} re-evaluated; outputs in {out_dir}/")
        return
    from survey_cracks.config import TrainConfig, load_config
    from survey_cracks.training.train import evaluate_checkpoint

    try:
        table = evaluate_checkpoint(load_config(TrainConfig, config_path), model_path, progress=not quiet)
    except SurveyCracksError as error:
        _fail(error)
        return
    click.echo("| set | images | patches | precision | recall | F1 | AP |")
    click.echo("|---|---|---|---|---|---|---|")
    for name, row in sorted(table.items()):
        click.echo(f"| {name} | {row['images']} | {row['patches']} | {row['precision']} | {row['recall']} | "
                   f"{row['f1']} | {row['ap']} |")
    if out:
        out.write_text(json.dumps(table, indent=1))


@cli.command()
@click.argument("old_out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("new_out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@assets_opt
@rules_opt
@quiet_opt
def compare(old_out: Path, new_out: Path, assets_path: Path | None, rules_path: Path | None, quiet: bool) -> None:
    """Change between two runs of the same sites: matched, new, grown and gone cracks; per-asset change.

    \b
    Surveys are paired by name. Per survey, written into NEW_OUT/<survey>/:
      <survey>.gpkg      layer 'changes' added (status new / grown / matched / gone, length and width change)
      changes.csv        the same as a table
      asset_changes.csv  per asset: length, density and condition then and now
    and NEW_OUT/report.html gains the change tables. The two dates' rasters need not share a grid or a CRS.
    A survey of photos in the collection layout is compared photo by photo, by name: NEW_OUT/<survey>/
    photo_changes.csv (counts, crack length, widest crack, pixel@2px F1 at both dates; docs/guide/photos.md).
    """
    from survey_cracks.deliver.compare import compare_runs
    from survey_cracks.deliver.condition import load_rules

    try:
        rules = load_rules(rules_path) if rules_path else None
        results = compare_runs(old_out, new_out, assets_path, rules, log=click.echo)
    except SurveyCracksError as error:
        _fail(error)
        return
    for result in results:
        click.echo(f"{result.survey}: {result.summary()}")
    if not results:
        click.echo("no survey is in both runs", err=True)
        sys.exit(1)


@cli.command()
@click.argument("surveys", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Fine-tuned checkpoint to write (.safetensors); its run folder sits beside it, and a mask "
                   "fine-tune's before/after table as OUT_STEM.before_after.{json,md}.")
@model_opt
@click.option("--adapt", type=click.Choice(["auto", "mask", "head"]), default="auto", show_default=True,
              help="mask: the decoder, the trunk (at a low rate) and the patch head learn from the annotated pixels; "
                   "head: the patch classifier only (patch labels), the only choice for a model without a decoder. "
                   "auto: mask when the model has a decoder.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="YAML of config keys that replace the built-in fine-tuning settings (mask: mask-training keys, "
                   "e.g. schedule.joint_steps; head: train-config keys, e.g. schedule.epochs).  "
                   "[default: built in; see docs/guide/training.md]")
@click.option("--steps", type=click.IntRange(10), default=None,
              help="Mask adaptation: training steps, the first fifth decoder-only.  [default: 200, early stopping on]")
@click.option("--epochs", type=click.IntRange(1), default=None, help="Head adaptation: override schedule.epochs.  [default: 6]")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9), default=0.2, show_default=True,
              help="Share of each survey's rasters held out to pick the checkpoint and the threshold.")
@resume_opt("checkpoint (mask adaptation; same weights as an uninterrupted run)")
@quiet_opt
def finetune(surveys: tuple[Path, ...], out: Path, model_path: Path | None, adapt: str, config_path: Path | None,
             steps: int | None, epochs: int | None, val_fraction: float, resume: bool, quiet: bool) -> None:
    """Adapt the shipped model (or --model) to annotated SURVEYS of your own structure.

    Each survey folder holds rasters with annotations beside them (X.cracks.geojson|gpkg or X.mask.png|tif);
    a vector annotation's optional `label` column marks features crack (default), not_crack (joints, seams:
    hard negatives) or ignore (left out of training and metrics). Rasters are split into train/validation
    by file; a survey with a single annotated raster holds out the end strip of it instead.
    """
    from survey_cracks.training.finetune import adaptation, finetune as finetune_model

    try:
        if adaptation(model_path, adapt) == "mask":
            from survey_cracks.training.adapt import finetune_mask

            if epochs is not None:
                click.echo("note: --epochs applies to --adapt head; mask adaptation counts --steps", err=True)
            checkpoint, _ = finetune_mask(list(surveys), out, model_path=model_path, config_path=config_path,
                                          steps=steps, val_fraction=val_fraction, resume=resume, progress=not quiet,
                                          log=click.echo)
        else:
            checkpoint = finetune_model(list(surveys), out, model_path=model_path, config_path=config_path,
                                        epochs=epochs, val_fraction=val_fraction, progress=not quiet,
                                        log=click.echo).checkpoint
    except SurveyCracksError as error:
        _fail(error)
        return
    click.echo(f"fine-tuned model: {checkpoint}")


@cli.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--n", "count", type=click.IntRange(1), default=20, show_default=True, help="Windows to suggest.")
@click.option("--window", type=click.IntRange(64), default=256, show_default=True, help="Window edge, px.")
@quiet_opt
def suggest(out: Path, count: int, window: int, quiet: bool) -> None:
    """Windows of a finished run (OUT) where annotating would help the model most, ranked with the reason.

    Writes OUT/<survey>/<raster>/suggest.gpkg (layer `suggestions`, styled for QGIS) and OUT/suggest.html
    with the crops. Annotate them (cracks; joints and seams as label not_crack), then `survey-cracks finetune`.
    """
    from survey_cracks.deliver.suggest import suggest as suggest_windows

    try:
        suggest_windows(out, count, window, progress=not quiet, log=click.echo)
    except SurveyCracksError as error:
        _fail(error)


@cli.command()
@model_opt
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Exported file (.onnx or .pt); its report goes beside it as FILE.json (e.g. crack.onnx.json).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True,
              help="onnx runs on ONNX Runtime (survey-cracks-edge), TensorRT, OpenVINO; torchscript on libtorch / mobile.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True,
              help="int8: static quantisation calibrated on real validation images, ~2-4x faster on CPUs with VNNI; "
                   "fp16: half the file, for GPU/NPU runtimes (x86 ONNX Runtime computes it in fp32). ONNX only.")
@click.option("--verify-images", type=click.IntRange(1), default=None,
              help="Check on this many validation images (evenly spread).  [default: all 114 with ../shared/data; "
                   "else the 6 sample road scans]")
@click.option("--no-verify", is_flag=True, help="Skip the check against PyTorch (no F1 in the report).")
@quiet_opt
def export(model_path: Path | None, out: Path, fmt: str, precision: str, verify_images: int | None, no_verify: bool,
           quiet: bool) -> None:
    """Export the model for edge devices and check it against PyTorch on real images.

    \b
    The graph takes uint8 RGB images (N, H, W, 3), H and W multiples of 32, any batch; it returns
    crack_probability (N, H, W) and patch_probability (the patch head every 32 px). Heads, thresholds,
    patch size, provenance and the source checkpoint's sha256 are in the ONNX metadata_props.
    The check runs both on the validation images of configs/mask.yaml (../shared/data): max and mean
    score difference, label agreement, pixel F1 (2 px) and patch F1 of the export beside PyTorch's;
    printed, and written beside it as OUT.json. The file is published (renamed into place) only
    after the check; an fp32 export that disagrees with PyTorch (> 1e-3) is not published.
    Exit code 0; 1 when the export lost more than 1 F1 point (published, flagged in its report, WARNING
    printed): deploy it only if that loss is acceptable; 2 on a usage error.
    """
    from survey_cracks.models.export import export_model

    if no_verify:
        refuse_unused("--no-verify", "nothing is checked", {"--verify-images": verify_images})
    say = (lambda line: click.echo(line, err=True)) if not quiet else None
    try:
        result = export_model(model_path, out, fmt, precision, verify=not no_verify,  # type: ignore[arg-type]
                              verify_images=verify_images, log=say)
    except SurveyCracksError as error:
        _fail(error)
        return
    click.echo(json.dumps(result.to_dict(), indent=1))
    if result.f1_loss_over_limit and result.check:
        click.echo(f"WARNING: {result.file} ({precision}) lost {result.check.f1_loss_points} F1 points against PyTorch "
                   f"(pixel F1 {result.check.pixel_f1_pytorch} -> {result.check.pixel_f1_export}, patch F1 "
                   f"{result.check.patch_f1_pytorch} -> {result.check.patch_f1_export}); see {result.report}", err=True)
        sys.exit(1)


@cli.command()
@click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="An ONNX export (survey-cracks export), or a checkpoint (.safetensors) exported at --precision on "
                   "first use and cached.  [default: the shipped model]")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="int8", show_default=True,
              help="For a checkpoint: the export to run (int8 is the fast one on CPUs).")
@stream_options
def stream(model_path: Path | None, precision: str, source: str, out: Path | None, realtime: bool | None,
           max_frames: int | None, threads: int | None, quiet: bool) -> None:
    """Crack map over each frame of SOURCE: a video file, a camera index (0) or a stream URL (rtsp://...).

    \b
    Writes OUT/overlay.mp4 (cracks in red, boxes in yellow), OUT/frames.jsonl (per processed frame: time,
    crack fraction, crack boxes) and OUT/stream.json (frames read, processed, dropped; fps; latency).
    When the model is slower than a live source, frames are dropped, never queued. A video file is
    processed whole unless --realtime. Ctrl-C ends a live stream and keeps what was written.
    Without torch, `survey-cracks-edge stream` does the same with an ONNX export.
    """
    from survey_cracks.models.onnx_engine import cached_onnx

    try:
        model_file = model_path if model_path is not None and model_path.suffix == ".onnx" else \
            cached_onnx(model_path or SHIPPED_MODEL, precision)
    except SurveyCracksError as error:
        _fail(error)
        return
    stream_and_report(model_file, source, out, realtime, max_frames, threads, quiet)


@cli.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training config whose sources are held out in turn (configs/train.yaml).")
@click.option("--holdout", multiple=True, help="Source name to hold out (repeatable).  [default: every trainable source]")
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True, help="Epochs per model.")
@click.option("--samples-per-epoch", type=click.IntRange(64), default=4000, show_default=True, help="Training patches per epoch.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/loso"), show_default=True)
@quiet_opt
def loso(config_path: Path, holdout: tuple[str, ...], epochs: int, samples_per_epoch: int, out_dir: Path, quiet: bool) -> None:
    """Leave-one-source-out table: train without a source, test on it (domain transfer)."""
    from survey_cracks.config import TrainConfig, load_config
    from survey_cracks.training.loso import leave_one_source_out, loso_markdown

    try:
        config = load_config(TrainConfig, config_path, {
            "out_dir": str(out_dir), "schedule.epochs": epochs, "schedule.samples_per_epoch": samples_per_epoch,
        })
        rows = leave_one_source_out(config, list(holdout) or None, progress=not quiet, log=click.echo)
    except SurveyCracksError as error:
        _fail(error)
        return
    table = loso_markdown(rows)
    (out_dir / "loso.md").write_text(table + "\n")
    click.echo(table)


@cli.command()
@model_opt
@click.option("--engines", is_flag=True, help="Time every installed engine and precision on this machine (once; cached) "
              "and print the table `inference.engine: auto` chooses from.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="With --engines: intra-op threads per engine (inference.torch_threads).")
@click.option("--remeasure", is_flag=True, help="With --engines: measure again, replacing the cached table.")
def info(model_path: Path | None, engines: bool, threads: int, remeasure: bool) -> None:
    """Show a checkpoint's metadata: patch size, threshold, training provenance; or (--engines) the engine table."""
    from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256, read_meta

    path = model_path or SHIPPED_MODEL
    try:
        meta = read_meta(path)
        if engines:
            from survey_cracks.deliver.console import counted
            from survey_cracks.models.engine_choice import choice_table
            from survey_cracks.models.engines import measured_choice

            choice = measured_choice(path, threads, remeasure)
    except SurveyCracksError as error:
        _fail(error)
        return
    if engines:
        click.echo(f"{choice.key['cpu']}, {counted(threads, 'thread')}, {choice.window_px} px windows, measured {choice.measured_at}; "
                   f"libraries {', '.join(f'{k} {v}' for k, v in choice.key['libraries'].items())}")
        click.echo(choice_table(choice))
        click.echo(f"auto runs: {choice.engine} {choice.precision}")
        return
    click.echo(json.dumps({"file": str(path), "sha256": file_sha256(path), **json.loads(meta.to_json())}, indent=1))


if __name__ == "__main__":
    cli()
