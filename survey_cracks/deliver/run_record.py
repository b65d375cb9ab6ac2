"""A finished run read back from its outputs: run.json, each raster's report.json, summary.csv.

`evaluate`, `compare` and the deliverables work from what a run left on disk, never
from the model, so they read it here once, into the same types the run wrote from.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from survey_cracks.config import RunConfig
from survey_cracks.deliver.condition import AssetRules
from survey_cracks.deliver.outcomes import COMPUTED, RasterOutcome
from survey_cracks.errors import OutputError
from survey_cracks.io.remote import Source, as_source, is_remote

RUN_JSON, REPORT = "run.json", "report.json"


@dataclass
class RunRecord:
    """What run.json says, typed."""

    out: Path
    inputs: list[str]
    config: RunConfig
    model_file: str
    model_sha256: str
    threshold: float
    mode: str
    finished_at: str
    assets: Path | None
    rules: AssetRules
    versions: dict[str, str | None]
    outcomes: list[RasterOutcome]
    cwd: Path  # where the run was started: relative source paths are relative to it

    def surveys(self) -> dict[str, list[RasterOutcome]]:
        """Outcomes grouped by survey, in run order (input errors, which have no survey, left out)."""
        groups: dict[str, list[RasterOutcome]] = {}
        for outcome in self.outcomes:
            if outcome.survey:
                groups.setdefault(outcome.survey, []).append(outcome)
        return groups

    def folder(self, outcome: RasterOutcome) -> Path:
        return self.out / outcome.survey / outcome.raster

    def source(self, outcome: RasterOutcome) -> Source:
        """The raster an output was made from (report.json records it as given to `run`: a path or a URL)."""
        return as_source(outcome.source) if is_remote(outcome.source) else self.cwd / outcome.source


def read_run(out: Path) -> RunRecord:
    """The run in ``out``; OutputError when it is not a finished survey-cracks run."""
    out = Path(out)
    path = out / RUN_JSON
    if not path.is_file():
        raise OutputError(out, "no run.json here: not the output folder of a finished survey-cracks run",
                          "give the --out folder of a `survey-cracks run`")
    data = json.loads(path.read_text())
    assets = data.get("assets")
    return RunRecord(
        out=out, inputs=list(data.get("inputs", [])), config=RunConfig.model_validate(data["config"]),
        model_file=data["model"]["file"], model_sha256=data["model"]["sha256"], threshold=float(data["model"]["threshold"]),
        mode=data.get("mode", "patch"), finished_at=data.get("finished_at", ""), assets=Path(assets) if assets else None,
        rules=AssetRules.model_validate(data["asset_rules"]) if data.get("asset_rules") else AssetRules(),
        versions=data.get("versions", {}), outcomes=read_outcomes(out),
        cwd=Path(data.get("cwd") or Path.cwd()),
    )


def read_outcomes(out: Path) -> list[RasterOutcome]:
    """Every raster of the run in summary.csv's order: from its report.json when it succeeded, else the summary row."""
    outcomes = []
    with open(out / "summary.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            report = out / row["survey"] / row["raster"] / REPORT
            action, reason = row.get("action") or COMPUTED, row.get("reason") or ""
            if row["status"] == "ok" and report.is_file():
                outcomes.append(RasterOutcome.from_report(json.loads(report.read_text()), action, reason))
            else:
                outcomes.append(RasterOutcome(survey=row["survey"], raster=row["raster"], source="", status=row["status"],
                                              error=row["error"] or None, action=action, reason=reason))
    return outcomes
