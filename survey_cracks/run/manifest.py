"""What OUT holds and why: one record per raster under ``OUT/.manifest/<survey>/<raster>.json``.

A record says which inputs (a fingerprint of the raster and of its annotation), which
model (sha256) and which settings (a hash of the config sections that change outputs)
made the raster's folder, and whether that worked. A later run compares them with
what it would do now: an unchanged raster is skipped, a changed one redone.

One file per raster, each written under a temp name and renamed, so a kill at any
moment leaves every record either old or new, never half-written, and finishing one
raster never rewrites the others' records.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from survey_cracks.config import RunConfig
from survey_cracks.io.remote import RemotePath, Source
from survey_cracks.outputs import REPORT, write_text

MANIFEST_DIR = ".manifest"
SAMPLE_BYTES = 1 << 20  # the content hash reads the first and last MiB: cheap on a 10 GB orthomosaic
# Inference settings that change the numbers written; the rest (workers, batch size, cache) only change speed.
OUTPUT_INFERENCE_KEYS = ("mode", "window_px", "margin_px", "scale", "target_gsd_m", "precision", "device", "engine")
Status = Literal["running", "ok", "error"]


class Fingerprint(BaseModel):
    """A local file: size, modification time and a hash of the first and last MiB, so a re-copied or
    re-exported file differs. A remote one (http(s)://, s3://): what the server says, size, ETag and
    Last-Modified, so nothing is downloaded to tell a changed file.
    """

    size: int
    mtime_ns: int | None = None
    sample_sha256: str | None = None
    etag: str | None = None
    last_modified: str | None = None


def fingerprint(path: Source) -> Fingerprint:
    """Raises OSError when the file cannot be read (or its server asked)."""
    if isinstance(path, RemotePath):
        head = path.stat()
        return Fingerprint(size=head.st_size, etag=head.etag, last_modified=head.last_modified)
    stat = path.stat()
    digest = hashlib.sha256(str(stat.st_size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(SAMPLE_BYTES))
        if stat.st_size > 2 * SAMPLE_BYTES:
            fh.seek(-SAMPLE_BYTES, os.SEEK_END)
            digest.update(fh.read(SAMPLE_BYTES))
    return Fingerprint(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sample_sha256=digest.hexdigest())


def config_sha256(config: RunConfig) -> str:
    """Hash of the settings that change a raster's outputs (not scheduler, workers, batch size or caches)."""
    sections = config.model_dump(mode="json", exclude={"inference"})
    sections["inference"] = config.inference.model_dump(mode="json", include=set(OUTPUT_INFERENCE_KEYS))
    return hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


class Inputs(BaseModel):
    """Everything a raster's outputs depend on; equal inputs mean equal outputs."""

    raster: Fingerprint
    annotation: str | None = None
    annotation_fingerprint: Fingerprint | None = None
    model_sha256: str
    config_sha256: str

    def differs_from(self, old: "Inputs") -> str | None:
        """Why outputs made from ``old`` are out of date, or None when they are not."""
        if self.model_sha256 != old.model_sha256:
            return "model changed"
        if self.config_sha256 != old.config_sha256:
            return "settings changed"
        if self.raster != old.raster:
            return "raster changed"
        if (self.annotation, self.annotation_fingerprint) != (old.annotation, old.annotation_fingerprint):
            return "annotation changed"
        return None

    def with_annotation(self, annotation: Source | None) -> "Inputs":
        """These inputs with ``annotation`` as the file the raster is evaluated against (None: not annotated).

        Raises OSError when it cannot be read.
        """
        return self.model_copy(update={"annotation": annotation.name if annotation else None,
                                       "annotation_fingerprint": fingerprint(annotation) if annotation else None})


class RasterRecord(BaseModel):
    """One raster's entry: where its outputs are, what made them, how it went."""

    survey: str
    raster: str
    source: str  # absolute path (or URL) of the raster
    survey_source: str  # absolute path (or URL) of the folder the survey name stands for
    status: Status
    inputs: Inputs
    error: str | None = None
    started_at: str
    finished_at: str | None = None
    seconds: dict[str, float] = {}

    def folder(self, out: Path) -> Path:
        return out / self.survey / self.raster


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def record_path(out: Path, survey: str, raster: str) -> Path:
    return out / MANIFEST_DIR / survey / f"{raster}.json"


def save_record(out: Path, record: RasterRecord) -> None:
    path = record_path(out, record.survey, record.raster)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, record.model_dump_json(indent=2) + "\n")


def load_records(out: Path) -> list[RasterRecord]:
    """Every readable record in OUT, ordered by survey and raster; an unreadable one counts as absent (redone)."""
    records = []
    for path in sorted((out / MANIFEST_DIR).glob("*/*.json")):
        try:
            records.append(RasterRecord.model_validate_json(path.read_text()))
        except (OSError, ValidationError, ValueError):
            continue
    return sorted(records, key=lambda r: (r.survey, r.raster))


def why_redo(record: RasterRecord | None, inputs: Inputs, out: Path, force: bool) -> str | None:
    """Why a raster must be (re)computed, or None when its folder in OUT is up to date."""
    if force:
        return "--force"
    if record is None:
        return "new"
    if record.status == "running":
        return "a previous run stopped while computing it"
    if record.status == "error":
        return "failed last time"
    if not (record.folder(out) / REPORT).is_file():
        return "output folder missing"
    return record.inputs.differs_from(inputs)
