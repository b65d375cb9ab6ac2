"""Which rasters to process, and which survey each belongs to.

An input is a raster file (its survey is its folder), a survey folder (rasters
inside), or a folder of survey folders. Annotation files (``*.mask.*``,
``*.cracks.*``) and hidden files are never taken for survey rasters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from survey_cracks.errors import RasterError
from survey_cracks.raster import RASTER_SUFFIXES


@dataclass(frozen=True)
class SurveyRaster:
    survey: str
    path: Path
    name: str  # output folder name, unique within the survey


def is_survey_raster(path: Path) -> bool:
    if path.name.startswith(".") or path.suffix.lower() not in RASTER_SUFFIXES:
        return False
    inner = Path(path.stem).suffix.lower()
    return inner not in (".mask", ".cracks")


def rasters_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_survey_raster(p))


def find_rasters(inputs: list[Path]) -> tuple[list[SurveyRaster], list[RasterError]]:
    """Expand inputs into (survey, raster) pairs in a stable order, plus one error per bad input."""
    found: list[tuple[str, Path]] = []
    errors: list[RasterError] = []
    for item in inputs:
        item = Path(item)
        if item.is_file():
            found.append((item.resolve().parent.name, item))
        elif item.is_dir():
            before = len(found)
            found.extend((item.resolve().name, p) for p in rasters_in(item))
            for sub in sorted(p for p in item.iterdir() if p.is_dir() and not p.name.startswith(".")):
                found.extend((sub.name, p) for p in rasters_in(sub))
            if len(found) == before:
                errors.append(RasterError(item, "no rasters found in this folder or its sub-folders", "point at a survey folder"))
        else:
            errors.append(RasterError(item, "input not found", "check the path"))
    result: list[SurveyRaster] = []
    seen: set[tuple[str, str]] = set()
    for survey, path in found:
        name = path.stem
        if (survey, name) in seen:
            name = f"{path.stem}_{path.suffix.lstrip('.').lower()}"
        if (survey, name) in seen:
            continue
        seen.add((survey, name))
        result.append(SurveyRaster(survey, path, name))
    return result, errors
