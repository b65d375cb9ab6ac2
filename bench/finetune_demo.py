"""Fine-tuning demo: the shipped model adapted to a quay-wall site it never saw.

Site o6 of ../shared/data/quaywall_uav is excluded from the shipped model's training
(configs/train.yaml). Here it plays a user's own survey: its UAV tiles, grouped by the
photo they were cut from, are split into a fine-tuning survey and a held-out survey,
each written in the pipeline's convention (image + X.cracks.geojson with the crack
boxes as polygons in pixel coordinates x = column, y = -row; images are symlinked,
nothing is copied). Then:

  1. patch-level precision / recall / F1 of the shipped model on the held-out survey;
  2. `survey-cracks finetune <fine-tuning survey> --out <model>`;
  3. the same figures for the fine-tuned model, on the same held-out patches;
  4. the pipeline's cell-level metric (`survey-cracks run`) on the held-out survey, both models.

    python bench/finetune_demo.py [--data ../shared/data/quaywall_uav] [--out runs/finetune_demo]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
from shapely.geometry import box

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.config import DataSource, TrainConfig  # noqa: E402
from survey_cracks.io.sources import yolo_to_pixel_boxes  # noqa: E402
from survey_cracks.models.network import SHIPPED_MODEL, load_checkpoint  # noqa: E402
from survey_cracks.training.data import build_patch_set  # noqa: E402
from survey_cracks.training.train import evaluate_sets  # noqa: E402

SITE = "o6"


def make_surveys(data: Path, out: Path, seed: int = 0) -> tuple[Path, Path]:
    with open(data / "sites.csv", newline="") as fh:
        stems = sorted(r["stem"] for r in csv.DictReader(fh) if r["site"] == SITE)
    tune, held = out / "o6_finetune", out / "o6_holdout"
    for folder in (tune, held):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    photos = sorted({re.sub(r"_\d+_\d+$", "", s) for s in stems},
                    key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    held_photos = set(photos[: len(photos) // 2])  # tiles of one photo never straddle the split
    for stem in stems:
        photo = re.sub(r"_\d+_\d+$", "", stem)
        folder = held if photo in held_photos else tune
        image = data / "images" / f"{stem}.jpg"
        (folder / image.name).symlink_to(image.resolve())
        lines = (data / "labels" / f"{stem}.txt").read_text().splitlines()
        boxes = yolo_to_pixel_boxes(lines, 256, 256)
        polygons = [box(x0, -y1, x1, -y0) for x0, y0, x1, y1 in boxes]  # pixel convention: y = -row
        gpd.GeoDataFrame({"label": ["crack"] * len(polygons)}, geometry=polygons, crs=None).to_file(
            folder / f"{stem}.cracks.geojson", driver="GeoJSON")
    return tune, held


def patch_scores(model: Path, held: Path) -> dict:
    config = TrainConfig(sources=[DataSource(name="o6_holdout", kind="survey", root=held, role="test")], workers=2)
    patch_set = build_patch_set(config, progress=False)
    net, meta = load_checkpoint(model)
    table, _ = evaluate_sets(net, meta, patch_set, {"o6_holdout": patch_set.where("test")})
    return {**table["o6_holdout"], "threshold": meta.threshold}


def pipeline_scores(model: Path, held: Path, out: Path) -> dict:
    cli = str(Path(sys.executable).with_name("survey-cracks"))
    subprocess.run([cli, "run", str(held), "--out", str(out), "--model", str(model), "--quiet", "--workers", "2"],
                   check=True, capture_output=True)
    report = json.loads((out / held.name / "report.json").read_text())
    return {level: report["metrics"][level] for level in ("cell", "object")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "quaywall_uav")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "finetune_demo")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    if not (args.data / "sites.csv").exists():
        sys.exit(f"{args.data}: quaywall_uav not found (needs ../shared/data)")
    tune, held = make_surveys(args.data, args.out)
    print(f"fine-tuning survey: {len(list(tune.glob('*.jpg')))} tiles; held-out survey: {len(list(held.glob('*.jpg')))} tiles")
    tuned = args.out / "o6_model.safetensors"
    cli = str(Path(sys.executable).with_name("survey-cracks"))
    subprocess.run([cli, "finetune", str(tune), "--out", str(tuned), "--epochs", str(args.epochs), "--quiet"], check=True)
    rows = {}
    for name, model in (("shipped model", SHIPPED_MODEL), ("fine-tuned on o6", tuned)):
        rows[name] = {"patch": patch_scores(model, held),
                      "pipeline": pipeline_scores(model, held, args.out / f"run_{name.split()[0]}")}
        print(name, json.dumps(rows[name]), flush=True)
    (args.out / "finetune_demo.json").write_text(json.dumps(rows, indent=2))
    print("\n| model | threshold | patch precision | patch recall | patch F1 | patch AP | cell F1 | object F1 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        p, q = row["patch"], row["pipeline"]
        print(f"| {name} | {p['threshold']} | {p['precision']} | {p['recall']} | {p['f1']} | {p['ap']} | "
              f"{q['cell']['f1']} | {q['object']['f1']} |")
    print(f"\nheld-out: {rows['shipped model']['patch']['patches']} patches from "
          f"{rows['shipped model']['patch']['images']} tiles of site {SITE}")


if __name__ == "__main__":
    main()
