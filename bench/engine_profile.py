"""Where a window's time goes inside the engine (issue 29): glue around the network, and the network by op class.

On one window of the run's read size (default 1280^2: a 1024 px core with 128 px of margin),
cut from a procedural survey scene (seed 0), with the shipped model:

  1. engine       - ``engine.segment(window)``, the call a Dask worker makes per window: the engine
                    `load_engine` gives for ``--engine`` / ``--precision`` (uint8 window in, what the
                    engine hands the pipeline out).
  2. network      - the network's own ``segment`` on the same window already normalised (a float
                    tensor, channels_last), under the same autocast: no glue.
     glue share   = 1 - network / engine.
  3. profile      - torch.profiler over ``--profile-passes`` network passes (eager PyTorch at the
                    engine's precision), each op's *self* CPU time (so nested ops are not counted
                    twice), summed by class: convolution, element-wise (relu, add, max-pool, upsample,
                    the sigmoid / normalisation / quantisation ops when they are in the graph), other.

Rule, fixed before any run: ``--rounds`` (default 5) interleaved rounds, each one engine call then
one network pass (one untimed call of each first); the reported figures are the medians. Threads:
``--threads`` intra-op threads (default 1, what each Dask task runs with). Run it under the CPU lock:

    flock /tmp/survey_cracks_cpu.lock python bench/engine_profile.py --label before

Results go to bench/results/engine_profile_<label>.json (docs/benchmarks.md renders them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from survey_cracks.inference.cluster import NETWORK_ENVIRONMENT  # noqa: E402  (imports no torch)

os.environ.update(NETWORK_ENVIRONMENT)  # as the workers run: set before torch's first allocation

import torch  # noqa: E402

from survey_cracks.models import hardware  # noqa: E402
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256  # noqa: E402
from survey_cracks.models.engines import ModelSpec, compute_of, load_engine  # noqa: E402
from survey_cracks.models.network import CrackClassifier, autocast_dtype, normalise, precision_name  # noqa: E402
from survey_cracks.outputs import write_json  # noqa: E402
from survey_cracks.synthetic import render_scene  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CONVOLUTION = ("conv", "mkldnn_conv", "linear", "addmm", "mm")  # name prefixes, leading underscores dropped
ELEMENTWISE_PREFIXES = ("max_pool", "upsample")
ELEMENTWISE = ("relu", "add", "sigmoid", "mul", "sub", "div", "round", "clamp", "threshold",
               "softmax", "to", "copy", "permute", "contiguous", "clone", "empty_like")


def op_class(name: str) -> str:
    """convolution, element-wise or other, from an aten op's name (``aten::mkldnn_convolution``, ``aten::relu_``)."""
    base = name.split("::")[-1].lstrip("_").rstrip("_")
    if base.startswith(CONVOLUTION):
        return "convolution"
    if base.split("_")[0] in ELEMENTWISE or base.startswith(ELEMENTWISE_PREFIXES):
        return "element-wise"
    return "other"


def profile_network(classifier: CrackClassifier, x: torch.Tensor, passes: int) -> dict:
    """Self CPU time of the network's ops over ``passes`` passes, by class and by op (ms per pass)."""
    amp = classifier.amp_dtype
    with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
        classifier.model.segment(x)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(passes):
                classifier.model.segment(x)
    by_op: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::") and event.self_cpu_time_total > 0:
            by_op[event.key] = by_op.get(event.key, 0.0) + event.self_cpu_time_total / 1000 / passes
    total = sum(by_op.values())
    classes: dict[str, float] = {"convolution": 0.0, "element-wise": 0.0, "other": 0.0}
    for name, ms in by_op.items():
        classes[op_class(name)] += ms
    return {
        "total_ms": total,
        "classes": {k: {"ms": v, "share": v / total} for k, v in classes.items()},
        "ops": {k: {"ms": v, "share": v / total, "class": op_class(k)}
                for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:20]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="before", help="results go to bench/results/engine_profile_LABEL.json")
    parser.add_argument("--side", type=int, default=1280, help="window side in px (multiple of 32)")
    parser.add_argument("--engine", default="torch", help="inference.engine of the engine timed (auto, torch, ...)")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile-passes", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rgb, _ = render_scene(args.side, args.side, seed=0)
    sha = file_sha256(SHIPPED_MODEL)
    spec = ModelSpec(str(SHIPPED_MODEL), sha, device="cpu", precision=args.precision, engine=args.engine,
                     threads=args.threads)
    engine = load_engine(spec)
    reference = CrackClassifier(SHIPPED_MODEL, device="cpu", precision=args.precision)  # eager: the network alone
    amp = reference.amp_dtype
    x = normalise(torch.from_numpy(rgb).permute(2, 0, 1)[None], reference.meta)

    def network() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
            reference.model.segment(x)

    def timed(call) -> float:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    engine.segment(rgb)
    network()
    rounds = [{"engine_s": timed(lambda: engine.segment(rgb)), "network_s": timed(network)} for _ in range(args.rounds)]
    engine_s = statistics.median(r["engine_s"] for r in rounds)
    network_s = statistics.median(r["network_s"] for r in rounds)
    profile = profile_network(reference, x, args.profile_passes)
    result = {
        "label": args.label,
        "window_px": args.side,
        "threads": args.threads,
        "engine": compute_of("cpu", args.precision, args.engine),
        "network_precision": precision_name(autocast_dtype(torch.device("cpu"), args.precision)),
        "machine": {"cpu": hardware.cpu_name(), "avx512_bf16": hardware.cpu_has_native_bf16(),
                    "cores": os.cpu_count(), "torch": torch.__version__},
        "rounds": rounds,
        "engine_s": engine_s,
        "network_s": network_s,
        "glue_share": 1 - network_s / engine_s,
        "profile": profile,
    }
    RESULTS.mkdir(exist_ok=True)
    write_json(RESULTS / f"engine_profile_{args.label}.json", result)
    print(f"{result['engine']}, {args.side}^2, {args.threads} thread(s), {hardware.cpu_name()}")
    print(f"engine.segment {engine_s:.3f} s, network {network_s:.3f} s: glue {result['glue_share']:.1%}")
    for name, c in profile["classes"].items():
        print(f"  {name:13s} {c['ms']:8.1f} ms  {c['share']:.1%}")
    for name, c in list(profile["ops"].items())[:12]:
        print(f"    {name:32s} {c['ms']:8.1f} ms  {c['share']:.1%}  ({c['class']})")


if __name__ == "__main__":
    main()
