"""`survey-cracks-edge`: the torch-free runtime's command line. `survey-cracks stream` (full package) shares
its options and its reporting, and adds exporting a checkpoint on first use."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable

import click

from survey_cracks.errors import SurveyCracksError

F = Callable[..., Any]


def default_out(source: str) -> Path:
    """``<video stem>_cracks``, ``camera<N>_cracks`` or ``stream_cracks`` in the current folder."""
    if source.isdigit():
        return Path(f"camera{source}_cracks")
    if "://" in source:
        return Path("stream_cracks")
    return Path(f"{Path(source).stem}_cracks")


def stream_options(command: F) -> F:
    """SOURCE and the options of every stream command (rasterio's shared-options pattern)."""
    for option in reversed([
        click.argument("source"),
        click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Output folder: overlay.mp4, frames.jsonl (one line per processed frame), stream.json.  "
                          "[default: <video stem>_cracks, camera<N>_cracks or stream_cracks]"),
        click.option("--realtime/--no-realtime", default=None,
                     help="Drop frames the model cannot keep up with (a reader thread keeps only the newest) or process "
                          "every frame.  [default: realtime for a camera or URL; every frame of a video file]"),
        click.option("--max-frames", type=click.IntRange(1), default=None, help="Stop after this many processed frames."),
        click.option("--threads", type=click.IntRange(1), default=None,
                     help="ONNX Runtime threads.  [default: every core]"),
        click.option("--quiet", "-q", is_flag=True, help="No progress line."),
    ]):
        command = option(command)
    return command


def stream_and_report(model_file: Path, source: str, out: Path | None, realtime: bool | None, max_frames: int | None,
                      threads: int | None, quiet: bool) -> None:
    """Run `run_stream` with an ONNX export and print its summary; one-line error and exit code 2 on bad input."""
    from survey_cracks.edge.runtime import EdgeModel
    from survey_cracks.edge.stream import run_stream

    try:
        summary = run_stream(EdgeModel(model_file, threads), source, out or default_out(source), realtime, max_frames,
                             progress=not quiet)
    except SurveyCracksError as error:
        fail(error)
        return
    click.echo(json.dumps(summary.to_dict(), indent=1))
    if summary.frames_dropped:
        click.echo(f"{summary.frames_dropped} of {summary.frames_read} frames dropped: the model ran at "
                   f"{summary.fps} frames/s (median {summary.latency_ms_median} ms)", err=True)


def fail(error: SurveyCracksError) -> None:
    click.echo(f"error: {error.message}", err=True)
    sys.exit(2)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Crack detection with an exported model, without torch (ONNX Runtime, numpy, OpenCV).

    \b
    Make the model on a machine with the full package:
        survey-cracks export --precision int8 --out crack_int8.onnx
    Then, here:
        survey-cracks-edge stream 0 --model crack_int8.onnx              # camera 0, live
        survey-cracks-edge stream flight.mp4 --model crack_int8.onnx     # every frame of a video
        survey-cracks-edge images photos/ --model crack_int8.onnx --out found/
    """


@cli.command()
@click.option("--model", "model_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX export made by `survey-cracks export`.")
@stream_options
def stream(model_file: Path, source: str, out: Path | None, realtime: bool | None, max_frames: int | None,
           threads: int | None, quiet: bool) -> None:
    """Crack map over each frame of SOURCE: a video file, a camera index (0) or a stream URL (rtsp://...).

    Writes OUT/overlay.mp4 (cracks in red, boxes in yellow), OUT/frames.jsonl (per processed frame: time,
    crack fraction, crack boxes) and OUT/stream.json (frames read, processed, dropped; fps; latency).
    Ctrl-C ends a live stream and keeps what was written. Exit code 0, or 2 on bad input.
    """
    stream_and_report(model_file, source, out, realtime, max_frames, threads, quiet)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX export made by `survey-cracks export`.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output folder: <stem>.overlay.png per image and images.jsonl.")
@click.option("--threads", type=click.IntRange(1), default=None, help="ONNX Runtime threads.  [default: every core]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def images(inputs: tuple[Path, ...], model_file: Path, out: Path, threads: int | None, quiet: bool) -> None:
    """Crack map of each image in INPUTS (image files or folders of them), drawn over it, with one JSON line each."""
    from survey_cracks.edge.runtime import EdgeModel
    from survey_cracks.edge.stream import run_images

    try:
        done = run_images(EdgeModel(model_file, threads), list(inputs), out, progress=not quiet)
    except SurveyCracksError as error:
        fail(error)
        return
    click.echo(f"{done} images; overlays and images.jsonl in {out}/")


if __name__ == "__main__":
    cli()
