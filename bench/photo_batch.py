"""Would network batches of equal-shaped photos help a photo collection (issue 28)? The product's graph in batches.

A collection's worker runs two task slots, each with one torch thread, each sending one photo at a
time through `models.network.WindowGraph` (uint8 in, heatmap levels out). Here, in one process, two
threads do the same on random uint8 photos of one size, in batches of 1, 2 and 4, the batch sizes
interleaved over --rounds rounds; the figure is wall milliseconds per photo (both threads together),
median over the rounds. A batch helps only if the median falls clearly with the batch size.

Output: a Markdown table to stdout and --json (bench/results/photo_batch.json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from survey_cracks.inference.cluster import NETWORK_ENVIRONMENT  # noqa: E402  (imports no torch)

os.environ.update(NETWORK_ENVIRONMENT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from survey_cracks.models import hardware  # noqa: E402
from survey_cracks.models.network import CrackClassifier  # noqa: E402

BATCHES = (1, 2, 4)


def per_photo_ms(classifier: CrackClassifier, photos: np.ndarray, batch: int, per_thread: int, threads: int) -> float:
    """Wall ms per photo with ``threads`` threads each running ``per_thread`` photos in batches of ``batch``."""
    amp = classifier.amp_dtype

    def work() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            for k in range(0, per_thread, batch):
                start = k % len(photos)
                outputs = classifier.graph(torch.from_numpy(photos[start : start + batch]))
                [o.numpy() for o in outputs]

    started = time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (time.perf_counter() - started) / (per_thread * threads) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", default=["448x448", "640x384"], help="WIDTHxHEIGHT of the photos' windows")
    parser.add_argument("--per-thread", type=int, default=16, help="photos each thread runs per measurement")
    parser.add_argument("--threads", type=int, default=2, help="task slots of the worker (one torch thread each)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "photo_batch.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    classifier = CrackClassifier(device="cpu")
    rng = np.random.default_rng(0)
    result: dict = {"command": "python bench/photo_batch.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "machine": {"cpu": hardware.cpu_name(), "cores": os.cpu_count(), "compute": classifier.compute},
                    "threads": args.threads, "rounds": args.rounds, "sizes": {}}
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        photos = rng.integers(0, 255, (16, height, width, 3), dtype=np.uint8)
        for batch in BATCHES:  # untimed: first-call costs of each shape
            per_photo_ms(classifier, photos, batch, 2 * batch, args.threads)
        rounds: dict[int, list[float]] = {b: [] for b in BATCHES}
        for _ in range(args.rounds):
            for batch in BATCHES:
                rounds[batch].append(round(per_photo_ms(classifier, photos, batch, args.per_thread, args.threads), 1))
        result["sizes"][size] = {str(b): {"rounds": v, "median_ms": round(statistics.median(v), 1)} for b, v in rounds.items()}
        print(f"{size}: " + ", ".join(f"batch {b} {statistics.median(v):.1f} ms" for b, v in rounds.items()), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("| window | batch | ms a photo (median) | single rounds |\n|---|---:|---:|---|")
    for size, entry in result["sizes"].items():
        for batch, row in entry.items():
            print(f"| {size} | {batch} | {row['median_ms']} | {', '.join(str(x) for x in row['rounds'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
