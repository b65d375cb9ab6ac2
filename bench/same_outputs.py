"""Are two runs' outputs the same? Heatmaps pixel for pixel, vectors feature for feature, reports but for timings.

    python bench/same_outputs.py OUT_BEFORE OUT_AFTER

Used to show that a change which should not alter what a run computes (a refactor, a new
library under the same behaviour) did not: run ``make demo OUT=...`` before and after, then
compare. Exits 1 and lists every difference when there is one.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio

# Fields that record when and how long, or which machine and versions, never what was computed.
VOLATILE = {"started_at", "finished_at", "seconds", "timings", "elapsed_s", "wall_s", "created", "datetime", "updated",
            "versions", "packages", "host", "dashboard", "workers_started_s", "run_seconds", "duration_s", "peak_rss_gb",
            "survey_cracks", "mtime_ns", "cwd"}
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")
CHECKOUT = re.compile(r"/[^\s\"']*?/(?=(sample_surveys|survey_cracks)/)")  # where each run's repository was


def _strip(value: Any, root: Path) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v, root) for k, v in value.items() if k not in VOLATILE and not k.endswith("_s")}
    if isinstance(value, list):
        return [_strip(v, root) for v in value]
    if isinstance(value, str):
        return CHECKOUT.sub("", TIMESTAMP.sub("TIME", value.replace(str(root), "OUT")))
    return value


def same_heatmap(a: Path, b: Path) -> str | None:
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        if (ra.profile["width"], ra.profile["height"], ra.crs, ra.transform) != (rb.width, rb.height, rb.crs, rb.transform):
            return "grid differs"
        for _, window in ra.block_windows(1):
            if not np.array_equal(ra.read(window=window, masked=False), rb.read(window=window, masked=False)):
                return f"pixels differ in {window}"
    return None


def same_vectors(a: Path, b: Path) -> str | None:
    if a.suffix == ".geojson":  # one layer, whatever name the file records
        return _same_frames(gpd.read_file(a), gpd.read_file(b), a.stem)
    layers_a = sorted(name for name, _ in pyogrio.list_layers(a))
    layers_b = sorted(name for name, _ in pyogrio.list_layers(b))
    if layers_a != layers_b:
        return f"layers {layers_a} != {layers_b}"
    for layer in layers_a:
        problem = _same_frames(gpd.read_file(a, layer=layer), gpd.read_file(b, layer=layer), layer)
        if problem:
            return problem
    return None


def _same_frames(fa: gpd.GeoDataFrame, fb: gpd.GeoDataFrame, layer: str) -> str | None:
    if layer == "layer_styles":
        fa, fb = fa.drop(columns=["update_time"], errors="ignore"), fb.drop(columns=["update_time"], errors="ignore")
    if list(fa.columns) != list(fb.columns) or len(fa) != len(fb):
        return f"layer {layer}: columns or counts differ ({len(fa)} vs {len(fb)})"
    if "geometry" in fa and not fa.geometry.geom_equals_exact(fb.geometry, 1e-9).all():
        return f"layer {layer}: geometries differ"
    attrs = [c for c in fa.columns if c != "geometry"]
    if not fa[attrs].reset_index(drop=True).equals(fb[attrs].reset_index(drop=True)):
        return f"layer {layer}: attributes differ"
    return None


def same_csv(a: Path, b: Path) -> str | None:
    fa, fb = pd.read_csv(a), pd.read_csv(b)
    drop = [c for c in fa.columns if c in VOLATILE or c.endswith("_s")]
    return None if fa.drop(columns=drop).equals(fb.drop(columns=drop, errors="ignore")) else "rows differ beyond timings"


def compare(before: Path, after: Path) -> list[str]:
    problems = []
    files_a = {p.relative_to(before) for p in before.rglob("*") if p.is_file()}
    files_b = {p.relative_to(after) for p in after.rglob("*") if p.is_file()}
    for missing in sorted(files_a ^ files_b):
        problems.append(f"{missing}: only in {'before' if missing in files_a else 'after'}")
    for rel in sorted(files_a & files_b):
        a, b = before / rel, after / rel
        if rel.name in {"run.log", "run.log.jsonl", "report.html"}:
            continue  # timings and log lines; report.html embeds the same figures as report.json
        if rel.suffix == ".tif":
            problem = same_heatmap(a, b)
        elif rel.suffix in {".gpkg", ".geojson"}:
            problem = same_vectors(a, b)
        elif rel.suffix == ".csv":
            problem = same_csv(a, b)
        elif rel.suffix == ".json":
            problem = None if _strip(json.loads(a.read_text()), before) == _strip(json.loads(b.read_text()), after) \
                else "JSON differs beyond timings"
        else:
            problem = None if a.read_bytes() == b.read_bytes() else "bytes differ"
        if problem:
            problems.append(f"{rel}: {problem}")
    return problems


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    before, after = Path(sys.argv[1]), Path(sys.argv[2])
    problems = compare(before, after)
    count = sum(1 for p in before.rglob("*") if p.is_file())
    for problem in problems:
        print(problem)
    print(f"{count} files compared: " + ("identical (but for timings)" if not problems else f"{len(problems)} differ"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
