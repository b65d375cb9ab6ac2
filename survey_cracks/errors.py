"""Errors a user can act on.

Every error names the file it is about and what to do, so the batch CLI can print
one line per failed raster and go on with the others.
"""

from __future__ import annotations

from pathlib import Path


class SurveyCracksError(Exception):
    """Base class: a problem with one input that the user can fix."""

    def __init__(self, path: str | Path | None, problem: str, fix: str = "") -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        self.fix = fix
        super().__init__(self.message)

    def __reduce__(self) -> tuple[type, tuple[str | None, str, str]]:
        """Pickled by its three parts: a Dask worker's error reaches the client as the same type and message."""
        return type(self), (self.path, self.problem, self.fix)

    @property
    def message(self) -> str:
        where = f"{self.path}: " if self.path else ""
        fix = f" — {self.fix}" if self.fix else ""
        return f"{where}{self.problem}{fix}"


class RasterError(SurveyCracksError):
    """A raster cannot be read or has a layout the model cannot use."""


class PixelReadError(RasterError):
    """A raster opens but its pixels cannot be decoded: the file is truncated or corrupt (GDAL's read fails)."""


class AnnotationError(SurveyCracksError):
    """An annotation file is empty, invalid, or does not match its raster."""


class ModelFileError(SurveyCracksError):
    """A checkpoint is missing, corrupt, or not a survey_cracks model."""


class ConfigError(SurveyCracksError):
    """A YAML config does not validate."""


class DataSourceError(SurveyCracksError):
    """A training data source is missing or malformed."""


class OutputError(SurveyCracksError):
    """An output location cannot be written."""


class AssetError(SurveyCracksError):
    """An asset file (or an asset rules file) cannot be used: unreadable, no id column, no CRS, no polygons."""


class SourceError(SurveyCracksError):
    """A video file, camera or stream URL cannot be opened or read."""


class PositionsError(SurveyCracksError):
    """A CSV of frame positions (`run --frame-positions`) cannot be used: a bad row, or no photo of the run in it."""


class InfrastructureError(SurveyCracksError):
    """The machine, not an input: OUT not writable, disk full, scheduler unreachable, OUT locked (exit code 3)."""
