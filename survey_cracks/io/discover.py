"""Which rasters to process, and the output folder ``OUT/<survey>/<raster>/`` of each.

An input is a raster file (its survey is its folder), a survey folder (rasters
inside), or a folder of survey folders; each may be local or remote (an http(s)://
raster, an s3:// object or prefix: ``remote.RemotePath``). Annotation files (``*.mask.*``,
``*.cracks.*``) and hidden files are never taken for survey rasters.

Naming rule (stable from night to night). A survey is named after its folder and a
raster after its file stem, with characters that cannot be in a file name (and
leading dots) replaced by ``_``. A name already recorded in OUT's manifest for the
same folder or file is kept. Otherwise, when the name is taken (by another folder or
file, in this run or an earlier one into the same OUT, compared ignoring case):
a survey gets its parent folder's name in front (``2026/bridge`` -> ``2026-bridge``,
then grandparent, ...), a raster its extension behind (``ortho.jpg`` -> ``ortho_jpg``);
a number (``-2``, ``-3``, ...) ends any remaining tie. Folders and files are named
in sorted path order, so the first one keeps the plain name. No raster is dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from survey_cracks.errors import ConfigError, RasterError
from survey_cracks.io.raster import RASTER_SUFFIXES
from survey_cracks.io.remote import REMOTE_FIX, RemotePath, Source, as_source

UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')
# Names a survey or raster folder must not take: the run-level and survey-level files beside them.
RESERVED = {"summary.csv", "run.json", "run.log", "run.log.jsonl", "report.json", ".lock", ".manifest"}


@dataclass(frozen=True)
class SurveyRaster:
    survey: str
    path: Source
    name: str  # output folder name, unique within the survey
    folder: Source | None = None  # the absolute folder the survey name stands for

    @property
    def source(self) -> str:
        return str(self.path.resolve())

    @property
    def location(self) -> Source:
        """Where any process opens it: a local path made absolute (links kept as named), a URL as it is.

        ``path`` stays as given, for the records; the workers of an external cluster
        (``--scheduler``) have their own working folder, so what is sent to them is this.
        """
        return self.path.absolute() if isinstance(self.path, Path) else self.path


def is_survey_raster(path: Source) -> bool:
    if path.name.startswith(".") or path.suffix.lower() not in RASTER_SUFFIXES:
        return False
    inner = Path(path.stem).suffix.lower()
    return inner not in (".mask", ".cracks")


def rasters_in(folder: Source) -> list[Source]:
    return sorted((p for p in folder.iterdir() if is_survey_raster(p) and p.is_file()), key=str)


def safe_name(name: str) -> str:
    """One path component that stays inside OUT: no separators, control characters or leading dots."""
    cleaned = UNSAFE.sub("_", name).strip(" ").lstrip(".").rstrip(". ")
    return cleaned or "_"


def first_free(candidates: Iterable[str], taken: set[str]) -> str:
    """The first candidate not in ``taken`` (casefolded), else the last one numbered -2, -3, ..."""
    last = ""
    for last in candidates:
        if last.casefold() not in taken:
            return last
    number = 2
    while f"{last}-{number}".casefold() in taken:
        number += 1
    return f"{last}-{number}"


def survey_candidates(folder: Source) -> list[str]:
    parts = [safe_name(p) for p in folder.parts[1:]] or ["_"]
    return ["-".join(parts[-n:]) for n in range(1, len(parts) + 1)]


def raster_candidates(path: Source) -> list[str]:
    stem = safe_name(path.stem)
    return [stem, f"{stem}_{safe_name(path.suffix.lstrip('.').lower())}"]


def name_rasters(
    found: list[tuple[Source, Source]], known_surveys: Mapping[str, str], known_rasters: Mapping[str, tuple[str, str]]
) -> list[SurveyRaster]:
    """Give each (survey folder, raster) pair its output names by the naming rule (module docstring)."""
    surveys: dict[Source, str] = {}
    taken_surveys = {name.casefold() for name in known_surveys.values()} | RESERVED
    for folder in sorted({folder for folder, _ in found}, key=str):
        if str(folder) in known_surveys:
            surveys[folder] = known_surveys[str(folder)]
        else:
            surveys[folder] = first_free(survey_candidates(folder), taken_surveys)
            taken_surveys.add(surveys[folder].casefold())
    taken: dict[str, set[str]] = {}
    for survey, raster in known_rasters.values():
        taken.setdefault(survey.casefold(), set(RESERVED)).add(raster.casefold())
    result = []
    for folder, path in sorted(found, key=lambda pair: (str(pair[0]), str(pair[1]))):
        survey = surveys[folder]
        names = taken.setdefault(survey.casefold(), set(RESERVED))
        known = known_rasters.get(str(path.resolve()))
        if known is not None and known[0] == survey:
            name = known[1]
        else:
            name = first_free(raster_candidates(path), names)
            names.add(name.casefold())
        result.append(SurveyRaster(survey, path, name, folder))
    return result


def find_rasters(
    inputs: list[str | Path],
    known_surveys: Mapping[str, str] | None = None,
    known_rasters: Mapping[str, tuple[str, str]] | None = None,
) -> tuple[list[SurveyRaster], list[RasterError]]:
    """Expand inputs into named rasters in a stable order, plus one error per bad input.

    ``known_surveys`` (absolute folder -> survey) and ``known_rasters`` (absolute raster ->
    (survey, raster)) are the names an earlier run gave, from OUT's manifest: they are kept.
    """
    found: dict[Source, tuple[Source, Source]] = {}
    errors: list[RasterError] = []

    def add(folder: Source, path: Source) -> None:
        found.setdefault(path.resolve(), (folder.resolve(), path))  # the same file given twice is one raster

    for given in inputs:
        item = as_source(given)
        try:
            if item.is_file():
                add(item.resolve().parent, item)
            elif item.is_dir():
                before = len(found)
                for path in rasters_in(item):
                    add(item, path)
                for sub in sorted((p for p in item.iterdir() if not p.name.startswith(".") and p.is_dir()), key=str):
                    for path in rasters_in(sub):
                        add(sub, path)
                if len(found) == before:
                    errors.append(RasterError(item, "no rasters found in this folder or its sub-folders", "point at a survey folder"))
            elif isinstance(item, RemotePath) and item.kind == "folder" and not item.is_s3:
                errors.append(RasterError(item, "a web folder cannot be listed", "give its rasters' URLs, or --from-list FILE"))
            elif isinstance(item, RemotePath):
                errors.append(RasterError(item, "not found on the server", REMOTE_FIX))
            else:
                errors.append(RasterError(item, "input not found", "check the path"))
        except OSError as error:  # a server that cannot be reached or refuses
            errors.append(RasterError(item, f"cannot read it ({error.strerror or error})", REMOTE_FIX if
                                      isinstance(item, RemotePath) else "check the path and its permissions"))
    return name_rasters(list(found.values()), known_surveys or {}, known_rasters or {}), errors


def nothing_to_read(inputs: list[str | Path]) -> str | None:
    """Why local ``inputs`` hold no raster at all (every one missing, or folders without rasters), else None.

    Checked before OUT is created: a mistyped path must not leave a run folder with a report of
    nothing. Remote inputs are not looked at here (they are reported per input as the run lists them),
    nor is a mix with one good input: the missing ones are then FAILED lines and the others run.
    """
    if not inputs or any(isinstance(as_source(given), RemotePath) for given in inputs):
        return None
    rasters, errors = find_rasters(inputs)
    if rasters:
        return None
    return "; ".join(error.message for error in errors) or "no rasters in the inputs"


def read_input_list(path: Path) -> list[str]:
    """The inputs ``run --from-list`` names: one per line, blank lines and ``#`` comments skipped.

    Local paths are relative to the current folder, as on the command line. Raises ConfigError
    when the list cannot be read.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(path, f"cannot read the input list ({error})", "give a text file, one raster per line") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
