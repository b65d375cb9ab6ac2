"""What each speed-up in `survey_cracks.tuning` buys a whole run, switched off one at a time.

`survey-cracks run RASTER` (mask mode, the shipped model) as a subprocess, with the environment's
``SURVEY_CRACKS_TUNING`` set to each setting in turn: ``on`` (everything as shipped), ``-heap_trim``,
``-deferred_dynamo`` and ``off``. Measured per run: wall seconds from start to exit and the peak RSS
of the whole process tree (client and Dask workers, polled every 0.2 s; `throughput.timed_command`).

Rule, fixed before any run: ``--rounds N`` (default 3) rounds, each running every setting once, in an
order rotated by one each round (the machine drifts by up to 30 % within an hour); each setting's
figure is the median over the rounds, and each single round is printed beside it. A speed-up is worth
keeping when the median without it is worse than the median with everything on by more than the
spread (max - min) of the ``on`` runs; otherwise its benefit does not show beyond noise.

    .venv/bin/python bench/tuning.py --raster-dir /tmp/bench_rasters --size 100
    .venv/bin/python bench/tuning.py --size 4 --rounds 1      # a smoke test of the script: figures mean nothing

Results go to bench/results/tuning.json (--json), with the CPU, torch and the raw runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from segment_throughput import raster_for  # noqa: E402
from throughput import ROOT, timed_command  # noqa: E402

from survey_cracks.tuning import SWITCH, TUNINGS  # noqa: E402

SETTINGS = ("on", *(f"-{name}" for name in TUNINGS), "off")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def timed_run(raster: Path, setting: str, out: Path) -> dict:
    """One `survey-cracks run` of ``raster`` with the tuning switch at ``setting``: seconds and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    command = [str(Path(sys.executable).with_name("survey-cracks")), "run", str(raster), "--out", str(out), "--quiet"]
    os.environ[SWITCH] = setting  # the subprocess and its workers inherit it
    try:
        seconds, peak_gib, returncode, output = timed_command(command)
    finally:
        os.environ.pop(SWITCH, None)
    if returncode != 0:
        raise RuntimeError(f"run with {SWITCH}={setting} failed:\n{output[-2000:]}")
    return {"setting": setting, "seconds": round(seconds, 2), "peak_rss_gib": round(peak_gib, 3)}


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per setting: the median seconds and peak RSS over the rounds, each round's figures, and the verdict."""
    by_setting = {s: [r for r in runs if r["setting"] == s] for s in SETTINGS}
    table = {s: {"seconds": statistics.median(r["seconds"] for r in rows), "peak_rss_gib": statistics.median(r["peak_rss_gib"] for r in rows),
                 "rounds_seconds": [r["seconds"] for r in rows], "rounds_peak_rss_gib": [r["peak_rss_gib"] for r in rows]}
             for s, rows in by_setting.items() if rows}
    on = table["on"]
    noise_s = max(on["rounds_seconds"]) - min(on["rounds_seconds"])
    noise_gib = max(on["rounds_peak_rss_gib"]) - min(on["rounds_peak_rss_gib"])
    for setting, row in table.items():
        if setting.startswith("-"):
            slower, bigger = row["seconds"] - on["seconds"], row["peak_rss_gib"] - on["peak_rss_gib"]
            row["costs_without"] = {"seconds": round(slower, 2), "peak_rss_gib": round(bigger, 3)}
            row["shows_beyond_noise"] = bool(slower > noise_s or bigger > noise_gib)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--size", type=int, default=100, metavar="MP", help="procedural orthomosaic size (default 100)")
    parser.add_argument("--rounds", type=int, default=3, metavar="N")
    parser.add_argument("--raster-dir", type=Path, default=None, help="where the procedural raster is kept and reused")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "tuning.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuning_bench_"))
    raster_dir = args.raster_dir or work
    raster_dir.mkdir(parents=True, exist_ok=True)
    raster = raster_for(args.size, raster_dir)
    runs: list[dict] = []
    for round_number in range(args.rounds):
        order = SETTINGS[round_number % len(SETTINGS):] + SETTINGS[: round_number % len(SETTINGS)]
        for setting in order:
            run = timed_run(raster, setting, work / "out")
            run["round"] = round_number + 1
            runs.append(run)
            print(f"round {round_number + 1}: {SWITCH}={setting:<17} {run['seconds']:7.1f} s  peak {run['peak_rss_gib']:.3f} GiB",
                  flush=True)
    import torch  # noqa: PLC0415  (only for its version, after the runs)

    result = {"raster_megapixels": args.size, "cpu": cpu_model(), "torch": torch.__version__, "rounds": args.rounds,
              "settings": summarise(runs), "runs": runs}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| {SWITCH} | median s | median peak GiB | worse without it than the on-spread? |\n|---|---|---|---|")
    for setting, row in result["settings"].items():
        verdict = {True: "yes", False: "no"}.get(row.get("shows_beyond_noise"), "")
        print(f"| {setting} | {row['seconds']:.1f} ({', '.join(map(str, row['rounds_seconds']))}) | "
              f"{row['peak_rss_gib']:.3f} | {verdict} |")
    print(f"\nwritten {args.json}")
    shutil.rmtree(work, ignore_errors=True)  # the runs; a raster kept in --raster-dir stays


if __name__ == "__main__":
    main()
