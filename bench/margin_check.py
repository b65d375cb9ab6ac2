"""How much context does a window need? The model's margin checked against the rule for equal outputs (issue 29).

A window's margin is network work the run throws away: (core + 2 margin)^2 / core^2 network
pixels per kept pixel, 1.56 for a 1024 px core with 128 px. Training measures each model's
margin (`training.segment.measure_margin`: the centre's probabilities change by < 0.01 against
the whole image) and stores it in the checkpoint (`min_margin_px`); `run` refuses less. This
checks that figure against the rule `engine: auto` holds engines to (`engine_choice.AGREEMENT`):
heatmap levels within one step of the reference on >= 99.9 % of the pixels.

On every validation image (real ones with ../shared/data), cores of 128 px on a 96 px grid, each
with at least the widest margin of context inside the image, are predicted with each margin
and compared with the same pixels predicted from the whole image, by the engine a run uses
(`engine: auto`). A margin meets the rule when its share of pixels within one level does.

    flock /tmp/survey_cracks_cpu.lock python bench/margin_check.py

Writes bench/results/margin_check.json (docs/benchmarks.md renders it) and prints the table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from survey_cracks.models import hardware  # noqa: E402
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256, read_meta  # noqa: E402
from survey_cracks.models.engine_choice import AGREEMENT, level_agreement  # noqa: E402
from survey_cracks.models.engines import ModelSpec, load_engine  # noqa: E402
from survey_cracks.models.network import TRUNK_STRIDE  # noqa: E402
from survey_cracks.models.verify import validation_images  # noqa: E402
from survey_cracks.outputs import write_json  # noqa: E402
from repository import ROOT, shown  # noqa: E402

CORE = 128  # px, as training measures it
STEP = 96  # px between the cores' corners (rounded down to the trunk's stride)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL)
    parser.add_argument("--margins", type=int, nargs="+", default=[32, 64, 96, 128])
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "margin_check.json")
    args = parser.parse_args()
    started = time.perf_counter()
    sha256 = file_sha256(args.model)
    engine = load_engine(ModelSpec(str(args.model), sha256, device="cpu", threads=args.threads))
    images, origin = validation_images(None)
    widest = max(args.margins)
    centres: dict[int, list[np.ndarray]] = {m: [] for m in args.margins}  # each core's levels at each margin
    references: list[np.ndarray] = []  # the same pixels from the whole image
    for image in images:
        h, w = (n // TRUNK_STRIDE * TRUNK_STRIDE for n in image.truth.shape)
        whole = engine.segment(np.ascontiguousarray(image.rgb[:h, :w]))[0]
        for top in range(widest, h - CORE - widest + 1, STEP):
            for left in range(widest, w - CORE - widest + 1, STEP):
                top, left = top // TRUNK_STRIDE * TRUNK_STRIDE, left // TRUNK_STRIDE * TRUNK_STRIDE
                references.append(whole[top : top + CORE, left : left + CORE])
                for margin, levels in centres.items():
                    crop = np.ascontiguousarray(image.rgb[top - margin : top + CORE + margin, left - margin : left + CORE + margin])
                    levels.append(engine.segment(crop)[0][margin : margin + CORE, margin : margin + CORE])
    rows = []
    for margin, levels in centres.items():
        within_one = level_agreement(levels, references)
        assert within_one is not None  # the model has a decoder and there are cores
        rows.append({"margin_px": margin, "within_one": round(within_one, 6),
                     "max_levels": max(int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max()) for a, b in zip(levels, references)),
                     "pixels": sum(r.size for r in references), "meets": within_one >= AGREEMENT,
                     "network_px_per_core_px_at_1024": round(((1024 + 2 * margin) / 1024) ** 2, 3)})
    cores = len(references)
    result = {"command": "python bench/margin_check.py" + (f" --model {shown(args.model)}" if args.model != SHIPPED_MODEL else ""),
              "model": shown(args.model), "sha256": sha256, "stored_margin_px": read_meta(args.model).min_margin_px,
              "engine": engine.compute, "images": origin, "cores": cores, "core_px": CORE, "agreement_needed": AGREEMENT,
              "rows": rows, "cpu": hardware.cpu_name(), "seconds": round(time.perf_counter() - started, 1)}
    write_json(args.out, result)
    print(f"{origin}; {cores} cores of {CORE} px; {engine.compute}; stored margin {result['stored_margin_px']} px")
    for row in rows:
        print(f"margin {row['margin_px']:4d} px: {row['within_one']:.4%} within one level (max {row['max_levels']}), "
              f"{'meets' if row['meets'] else 'fails'} the {AGREEMENT:.1%} rule")


if __name__ == "__main__":
    main()
