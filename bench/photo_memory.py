"""Peak memory of a photo collection against its number of photos (issue 28: < 2 GiB for 10,000 photos).

Procedural photos (survey_cracks.synthetic.render_scene, JPEG q90, no georeferencing) of --size, made
once into --photo-dir (the first N of the largest count are hard-linked into each smaller folder, so
every count runs the same photos). For each --counts N: `survey-cracks run FOLDER --out OUT --quiet`
with default settings (heatmaps written: --no-heatmaps is not used) as a subprocess of the code under
test; peak RSS of the whole process tree (client, nanny, worker: `throughput.TreeMemory`, sampled
every 50 ms), wall seconds, photos per second, files per photo, and the collection's photos.csv row
count (every photo computed, none failed).

Results: --json (bench/results/photo_memory.json) and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).resolve().parent), str(ROOT)]

from photo_throughput import make_procedural, run_once

from survey_cracks.deliver.collection import COLLECTION, PHOTOS_CSV
from survey_cracks.models import hardware


def linked_subset(source: list[Path], folder: Path, count: int) -> Path:
    """The first ``count`` photos of ``source`` hard-linked into ``folder`` (copied where links fail)."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in source[:count]:
        target = folder / path.name
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                target.write_bytes(path.read_bytes())
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path, default=ROOT, help="the survey_cracks checkout to run")
    parser.add_argument("--size", default="128x128", help="WIDTHxHEIGHT of the procedural photos")
    parser.add_argument("--counts", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--photo-dir", type=Path, default=Path(tempfile.gettempdir()) / "survey_cracks_photo_memory")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "photo_memory.json")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    photos = make_procedural(args.photo_dir / f"{args.size}_all", width, height, max(args.counts))
    result: dict = {
        "command": "python bench/photo_memory.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "size": args.size,
        "machine": {"cpu": hardware.cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as scratch:
        for count in args.counts:
            folder = linked_subset(photos, args.photo_dir / f"{args.size}_{count}" / f"photos_{count}", count)
            row = run_once(folder, args.repo.resolve(), Path(scratch))
            with (Path(scratch) / "out" / folder.name / COLLECTION / PHOTOS_CSV).open(newline="") as f:
                rows = list(csv.DictReader(f))
            ok = sum(1 for r in rows if r["status"] == "ok")
            result["runs"].append(row | {"photos": count, "photos_ok": ok, "photos_per_s": round(count / row["seconds"], 2),
                                         "files_per_photo": round(row["files"] / count, 3)})
            print(f"{count} photos: peak RSS {row['peak_rss_gib']:.3f} GiB, {row['seconds']:.0f} s "
                  f"({count / row['seconds']:.1f} photos/s), {ok} ok, {row['files'] / count:.3f} files per photo", flush=True)
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    return 0


def table(result: dict) -> str:
    """The Markdown table (docs/hooks/bench_tables.py renders the same from the JSON)."""
    lines = [f"| photos ({result['size']}) | peak RSS GiB (process tree) | seconds | photos/s | files per photo |",
             "|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['photos']:,} | {r['peak_rss_gib']:.2f} | {r['seconds']:.0f} | {r['photos_per_s']:.1f} | "
                     f"{r['files_per_photo']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
