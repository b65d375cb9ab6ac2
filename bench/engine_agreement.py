"""Do the engines give the same heatmaps? Levels of every installed engine x precision against eager torch (issue 29).

On ``--images`` validation images (the real ones of configs/mask.yaml when ../shared/data is there,
else the sample road scans), padded to a multiple of 128 px, each engine of `engine_choice.CANDIDATES`
(loaded as a run loads it, `load_engine`) gives uint8 heatmap levels; the share of pixels within one
level is reported against the engine `engine: auto` checks it against (`engine_choice.reference`: eager torch
at the same precision, fp32 for int8) and against eager torch fp32 (the model's own arithmetic). No timing: no lock needed.

    python bench/engine_agreement.py --images 12      # writes bench/results/engine_agreement.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from survey_cracks.edge.runtime import pad_to_stride  # noqa: E402
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256  # noqa: E402
from survey_cracks.models.engine_choice import AGREEMENT, CANDIDATES, level_agreement, library_versions, reference  # noqa: E402
from survey_cracks.models.engines import ModelSpec, load_engine  # noqa: E402
from survey_cracks.models.hardware import cpu_name  # noqa: E402
from survey_cracks.models.verify import validation_images  # noqa: E402
from survey_cracks.outputs import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    args = parser.parse_args()
    images, where = validation_images(args.images)
    windows = [pad_to_stride(image.rgb, 128) for image in images]
    sha256 = file_sha256(SHIPPED_MODEL)
    levels = {}
    for engine, precision in CANDIDATES:
        try:
            loaded = load_engine(ModelSpec(str(SHIPPED_MODEL), sha256, device="cpu", precision=precision, engine=engine))
        except Exception as exc:  # noqa: BLE001  (not installed here: said in the table)
            print(f"{engine} {precision}: not available ({exc})")
            continue
        if not loaded.compute.endswith(engine):
            print(f"{engine} {precision}: not available (fell back to {loaded.compute})")
            continue
        levels[(engine, precision)] = [loaded.segment(window)[0] for window in windows]
    rows = [{"engine": engine, "precision": precision,
             "vs_torch_same_precision": level_agreement(got, levels[reference(precision)]),
             "vs_torch_fp32": level_agreement(got, levels[("torch", "fp32")])} for (engine, precision), got in levels.items()]
    write_json(RESULTS / "engine_agreement.json", {
        "command": f"python bench/engine_agreement.py --images {args.images}", "images": where,
        "pixels": int(sum(w.shape[0] * w.shape[1] for w in windows)), "agreement_needed": AGREEMENT,
        "cpu": cpu_name(), "libraries": library_versions(), "rows": rows})
    print(where)
    for row in rows:
        print(f"{row['engine']:12s} {row['precision']}: within one level of {' '.join(reference(row['precision']))} on "
              f"{row['vs_torch_same_precision']:.4%} of the pixels, of torch fp32 on {row['vs_torch_fp32']:.4%}")


if __name__ == "__main__":
    main()
