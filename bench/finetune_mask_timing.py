"""Issue 27's practical target: do three annotated 7 MP mosaics fine-tune in <= 20 min on 2 CPU cores?

Three procedural board-formed concrete mosaics (`survey_cracks.synthetic.write_orthomosaic`,
``label_joints=True``: cracks annotated as cracks, formwork / panel / sealed joints as
``not_crack``; the structure `bench/finetune_mask.py` uses), each ``--size``² px at 2 mm,
form one survey. `survey-cracks finetune SURVEY --out M` runs with its default schedule
(``--steps 200``, mask adaptation, a third of the rasters for validation), wrapped in
``/usr/bin/time -v`` for the peak RSS, and is stopped at ``--limit`` seconds. The fine-tune
holds the survey's images in memory, so the peak RSS is part of the answer. The step
reached is read from the run's checkpoint history when the limit stops it.
Writes bench/results/finetune_mask_timing.json.

    flock /tmp/survey_cracks_cpu.lock python bench/finetune_mask_timing.py [--size 2650] [--limit 1200]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.synthetic import write_orthomosaic  # noqa: E402
from survey_cracks.training.adapt import run_folder  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "finetune_mask_timing.json"


def steps_done(run_dir: Path) -> int | None:
    """The last checkpointed step of the run (``state.pt``, written every 25 steps), None before the first."""
    import torch

    state = run_dir / "state.pt"
    return int(torch.load(state, map_location="cpu", weights_only=False)["step"]) if state.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "finetune_mask_timing")
    parser.add_argument("--size", type=int, default=2650, help="mosaic side in pixels (2650² = 7.0 MP)")
    parser.add_argument("--limit", type=int, default=1200, help="stop the fine-tune after this many seconds")
    parser.add_argument("--steps", type=int, default=200, help="finetune --steps (200 is its default)")
    args = parser.parse_args()
    survey = args.work / "survey"
    shutil.rmtree(args.work, ignore_errors=True)
    survey.mkdir(parents=True)
    started = time.perf_counter()
    for name, seed in (("board_a", 21), ("board_b", 22), ("board_c", 23)):
        write_orthomosaic(survey / f"{name}.tif", args.size, args.size, seed=seed, gsd=0.002, surface="concrete",
                          annotation_path=survey / f"{name}.cracks.gpkg", label_joints=True)
    made = time.perf_counter() - started
    out = args.work / "board.safetensors"
    command = ["survey-cracks", "finetune", str(survey.relative_to(ROOT)), "--out", str(out.relative_to(ROOT)),
               "--steps", str(args.steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    timed = ["/usr/bin/time", "-v", sys.executable, "-m", "survey_cracks.cli.main", *command[1:]]
    started = time.perf_counter()
    proc = subprocess.Popen(timed, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=args.limit)
        stopped = False
    except subprocess.TimeoutExpired:
        proc.terminate()  # /usr/bin/time passes nothing on; end its child (the fine-tune) too
        subprocess.run(["pkill", "-TERM", "-P", str(proc.pid)], check=False)
        output, _ = proc.communicate()
        stopped = True
    seconds = time.perf_counter() - started
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", output or "")
    reached = args.steps if not stopped and proc.returncode == 0 else steps_done(run_folder(out))
    result = {
        "command": " ".join(command),
        "wrapped_in": "flock /tmp/survey_cracks_cpu.lock; /usr/bin/time -v",
        "mosaics": f"3 x {args.size}x{args.size} px ({args.size * args.size / 1e6:.1f} MP each), 2 mm, "
                   "write_orthomosaic(seed=21|22|23, surface=concrete, label_joints=True)",
        "generate_seconds": round(made, 1),
        "limit_seconds": args.limit,
        "stopped_at_limit": stopped,
        "returncode": proc.returncode,
        "finetune_seconds": round(seconds, 1),
        "steps_planned": args.steps,
        "steps_reached": reached,
        "seconds_per_step": round(seconds / reached, 2) if reached else None,
        "peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
        "within_20_min": (not stopped and proc.returncode == 0 and seconds <= 1200),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "tail": (output or "").splitlines()[-40:],
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "tail"}, indent=2))


if __name__ == "__main__":
    main()
