"""The engine table ``engine: auto`` chooses from, measured now on this machine (issue 29).

Exactly what ``survey-cracks info --engines --remeasure`` does (`engines.measured_choice`): every
installed engine x precision (`engine_choice.CANDIDATES`) is loaded (exports and compilations come
from the cache when there), checked against the reference's heatmap levels on validation images and
timed on a 1216^2 window for `engine_choice.MEASURE_S` seconds each, in `engine_choice.ROUNDS` interleaved
rounds (every candidate once per round; the median window over the rounds is the figure), with
``--threads`` intra-op threads. Run it under the CPU lock:

    flock /tmp/survey_cracks_cpu.lock python bench/engine_table.py

Writes bench/results/engine_table.json (docs/benchmarks.md renders it) and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from survey_cracks.inference.cluster import NETWORK_ENVIRONMENT  # noqa: E402  (imports no torch)

os.environ.update(NETWORK_ENVIRONMENT)  # as the workers run: set before torch's first allocation

from survey_cracks.models.engine_choice import AGREEMENT, choice_table  # noqa: E402
from survey_cracks.models.engines import measured_choice  # noqa: E402
from survey_cracks.outputs import write_json  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per engine (inference.torch_threads)")
    args = parser.parse_args()
    choice = measured_choice(threads=args.threads, remeasure=True)
    result = {"command": f"python bench/engine_table.py --threads {args.threads}", "agreement_needed": AGREEMENT,
              "cores": os.cpu_count(), **dataclasses.asdict(choice)}
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / "engine_table.json", result)
    print(choice_table(choice))
    print(f"auto runs: {choice.engine} {choice.precision}")


if __name__ == "__main__":
    main()
