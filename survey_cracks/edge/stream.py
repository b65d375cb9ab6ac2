"""Live crack detection on a video file, a camera or a stream URL, and on still images.

Per processed frame: the crack map drawn over the frame into ``overlay.mp4`` and one
JSON line in ``frames.jsonl`` (frame index and time, crack fraction, each crack's box).

**Falling behind.** On a live source (camera, URL) a reader thread keeps only the newest
frame: when the model is slower than the camera, the frames that arrived meanwhile are
dropped, never queued, so the map on screen is never older than one inference, and the
count of dropped frames is reported. A video *file* is processed frame by frame by
default (``realtime=False``: every frame, reproducible); ``realtime=True`` paces a file
at its own frame rate and drops frames the same way, to preview what a camera would give.
In real-time mode each processed overlay is written once per source frame it stands for,
so the output video keeps the source's duration.

Outputs are written under temporary names and renamed when the stream ends (Ctrl-C
ends a live one), with ``stream.json`` summarising the run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
from tqdm import tqdm

from survey_cracks.edge.runtime import Detection, EdgeModel, draw_overlay, write_json
from survey_cracks.errors import SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
CAMERA_FPS = 30.0  # written to the video when a camera does not say its rate


@dataclass(frozen=True)
class Frame:
    """A frame as read: its index in the source, its time (s from the start) and pixels (BGR)."""

    index: int
    time_s: float
    bgr: np.ndarray


@dataclass(frozen=True)
class FrameRecord:
    """One line of ``frames.jsonl``."""

    frame: int
    time_s: float
    crack_fraction: float
    cracks: list[dict]
    latency_ms: float
    dropped_before: int  # frames of the source skipped since the previous processed one

    @classmethod
    def of(cls, frame: Frame, detection: Detection, latency_s: float, dropped_before: int) -> "FrameRecord":
        return cls(frame.index, round(frame.time_s, 3), round(detection.crack_fraction, 6),
                   [c.to_json() for c in detection.cracks], round(latency_s * 1000, 1), dropped_before)


@dataclass(frozen=True)
class StreamSummary:
    """What `run_stream` did (also ``stream.json``)."""

    source: str
    model: str
    precision: str
    realtime: bool
    frames_read: int
    frames_processed: int
    frames_dropped: int
    fps: float  # processed frames per second of wall time
    latency_ms_median: float
    latency_ms_p95: float
    video: str
    frames_jsonl: str

    def to_dict(self) -> dict:
        return asdict(self)


def is_live(source: str) -> bool:
    """A camera index ("0") or a URL (rtsp://, http://...), as opposed to a file."""
    return source.isdigit() or "://" in source


def open_source(source: str) -> cv2.VideoCapture:
    """An opened OpenCV capture of a camera index, URL or video file; `SourceError` naming it and the fix otherwise."""
    if not is_live(source) and not Path(source).is_file():
        raise SourceError(source, "video file not found", "check the path; a camera is given by its index, e.g. 0")
    capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
    if not capture.isOpened():
        capture.release()
        if source.isdigit():
            raise SourceError(f"camera {source}", "camera cannot be opened", "check it is connected and not in use "
                              "(ls /dev/video*), or give another index")
        raise SourceError(source, "cannot be opened as a video", "check it plays (e.g. ffprobe) and OpenCV's FFmpeg reads "
                          "its codec; for a stream, check the URL and the network")
    return capture


class LatestFrameReader(threading.Thread):
    """Reads a capture as fast as it delivers and keeps only the newest frame (older unread ones are dropped).

    ``pace``: release a file's frames at its own rate ``fps``, as a camera would.
    """

    def __init__(self, capture: cv2.VideoCapture, fps: float, live: bool, pace: bool) -> None:
        super().__init__(daemon=True)
        self.capture, self.fps, self.live, self.pace = capture, fps, live, pace
        self.dropped = 0
        self.read = 0
        self._latest: Frame | None = None
        self._ended = False
        self._halt = threading.Event()
        self._ready = threading.Condition()

    def run(self) -> None:
        started = time.monotonic()
        while not self._halt.is_set():
            ok, bgr = self.capture.read()
            if not ok:
                break
            now = time.monotonic() - started
            stamp = now if self.live else self.read / self.fps
            if self.pace and not self.live:
                time.sleep(max(0.0, stamp - now))
            with self._ready:
                if self._latest is not None:
                    self.dropped += 1
                self._latest = Frame(self.read, stamp, bgr)
                self.read += 1
                self._ready.notify()
        with self._ready:
            self._ended = True
            self._ready.notify()

    def take(self) -> Frame | None:
        """The newest frame not yet taken, waiting for one; None when the source has ended."""
        with self._ready:
            while self._latest is None and not self._ended:
                self._ready.wait()
            frame, self._latest = self._latest, None
            return frame

    def stop(self) -> None:
        self._halt.set()


def _every_frame(capture: cv2.VideoCapture, fps: float) -> Iterator[Frame]:
    index = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            return
        yield Frame(index, index / fps, bgr)
        index += 1


def run_stream(model: EdgeModel, source: str, out_dir: Path, realtime: bool | None = None, max_frames: int | None = None,
               progress: bool = True) -> StreamSummary:
    """Detect cracks on every frame of ``source`` that the model keeps up with; write the overlay video,
    ``frames.jsonl`` and ``stream.json`` into ``out_dir``.

    ``realtime``: None = live sources drop frames, files are processed whole (see the module doc).
    """
    live = is_live(source)
    realtime = live if realtime is None else (realtime or live)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    capture = open_source(source)
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    fps = fps if 1.0 <= fps <= 240.0 else CAMERA_FPS
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if not realtime else 0
    video, lines = out_dir / "overlay.mp4", out_dir / "frames.jsonl"
    video_tmp, lines_tmp = out_dir / f".overlay.{os.getpid()}.partial.mp4", out_dir / f".frames.{os.getpid()}.partial"
    reader = LatestFrameReader(capture, fps, live, pace=realtime) if realtime else None
    frames: Iterator[Frame] = iter(reader.take, None) if reader else _every_frame(capture, fps)
    writer: cv2.VideoWriter | None = None
    latencies: list[float] = []
    previous = -1
    started = time.perf_counter()
    bar = tqdm(total=total or None, unit="frame", desc=Path(source).name if not live else source, disable=not progress)
    if reader:
        reader.start()
    try:
        with open(lines_tmp, "w") as jsonl:
            for frame in frames:
                tick = time.perf_counter()
                detection = model.detect(cv2.cvtColor(frame.bgr, cv2.COLOR_BGR2RGB))
                latency = time.perf_counter() - tick
                latencies.append(latency)
                skipped = frame.index - previous - 1
                previous = frame.index
                caption = f"cracks {100 * detection.crack_fraction:.2f}%  {1000 * latency:.0f} ms"
                overlay = draw_overlay(frame.bgr, detection, caption)
                if writer is None:
                    writer = _video_writer(video_tmp, fps, overlay.shape[1], overlay.shape[0])
                for _ in range(1 + skipped if realtime else 1):
                    writer.write(overlay)
                jsonl.write(json.dumps(asdict(FrameRecord.of(frame, detection, latency, skipped))) + "\n")
                jsonl.flush()
                bar.update(1 + skipped if realtime else 1)
                elapsed = time.perf_counter() - started
                bar.set_postfix(fps=f"{len(latencies) / elapsed:.1f}", latency=f"{1000 * latency:.0f}ms",
                                dropped=reader.dropped if reader else 0, refresh=False)
                if max_frames is not None and len(latencies) >= max_frames:
                    break
    except KeyboardInterrupt:  # Ctrl-C ends a live stream: the outputs are kept and summarised
        pass
    finally:
        bar.close()
        if reader:
            reader.stop()
            reader.join(timeout=5)
        capture.release()
        if writer is not None:
            writer.release()
            os.replace(video_tmp, video)
        os.replace(lines_tmp, lines)
    if not latencies:
        raise SourceError(source, "no frame could be read", "check the source plays; a camera may need a moment to start")
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    summary = StreamSummary(
        source=source, model=str(model.path), precision=model.meta.precision, realtime=realtime,
        frames_read=reader.read if reader else previous + 1, frames_processed=len(latencies),
        frames_dropped=reader.dropped if reader else 0, fps=round(len(latencies) / elapsed, 2),
        latency_ms_median=round(float(np.median(ms)), 1), latency_ms_p95=round(float(np.percentile(ms, 95)), 1),
        video=str(video), frames_jsonl=str(lines),
    )
    write_json(out_dir / "stream.json", summary.to_dict())
    return summary


def _video_writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise SourceError(path, "cannot write the overlay video (no mp4v encoder in this OpenCV)",
                          "install opencv-python-headless from PyPI, whose FFmpeg has it")
    return writer


def image_paths(inputs: list[Path]) -> list[Path]:
    """Image files given directly or found (not recursively) in given folders, sorted per folder."""
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            paths.append(item)
        else:
            raise SourceError(item, "image or folder not found", "check the path")
    return paths


def run_images(model: EdgeModel, inputs: list[Path], out_dir: Path, progress: bool = True) -> int:
    """Detect cracks on still images (files or folders of them): ``<stem>.overlay.png`` each, and one JSON line
    per image in ``images.jsonl`` (``frame`` is the image's file name). Returns the number of images done."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = image_paths(inputs)
    lines_tmp = out_dir / f".images.{os.getpid()}.partial"
    with open(lines_tmp, "w") as jsonl:
        for path in tqdm(paths, unit="image", disable=not progress):
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise SourceError(path, "not a readable image", "give JPEG, PNG, TIFF, BMP or WebP files")
            tick = time.perf_counter()
            detection = model.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            latency = time.perf_counter() - tick
            overlay = draw_overlay(bgr, detection, f"cracks {100 * detection.crack_fraction:.2f}%")
            target = out_dir / f"{path.stem}.overlay.png"
            tmp = out_dir / f".{path.stem}.{os.getpid()}.partial.png"
            cv2.imwrite(str(tmp), overlay)
            os.replace(tmp, target)
            record = asdict(FrameRecord.of(Frame(0, 0.0, bgr), detection, latency, 0))
            jsonl.write(json.dumps({**record, "frame": path.name}) + "\n")
    os.replace(lines_tmp, out_dir / "images.jsonl")
    return len(paths)


__all__ = ["Frame", "FrameRecord", "LatestFrameReader", "StreamSummary", "image_paths", "is_live", "open_source",
           "run_images", "run_stream"]
