"""MkDocs hook: benchmark tables rendered from ``bench/results/*.json`` at build time.

A page asks for a table with ``<!-- bench-table: NAME -->`` on a line of its own; the
hook replaces it with the table of ``bench/results/NAME.json``. Figures are therefore
never pasted into the docs: rerunning a benchmark (``make bench``, ``bench/*.py``) and
rebuilding the site is what updates them. A result file that is absent is said so on
the page ("not measured yet"), so a fresh clone still builds with ``--strict``; a file
that is present but unreadable fails the build, since a silent gap would look like data.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLACEHOLDER = re.compile(r"^<!-- bench-table: ([a-z0-9_]+) -->$", re.MULTILINE)  # names may hold digits (..._400)
# Which command writes each result file: what the page tells a reader to run when it is missing.
PRODUCERS = {
    "segment_throughput": "make bench",
    "edge_throughput": "python bench/edge_throughput.py",
    "install_sizes": "python bench/install_sizes.py",
    "tuning": "python bench/tuning.py",
    "photo_throughput": "python bench/photo_throughput.py --repo before=../main_before --repo after=. --sets "
                        "448x448:200 640x360:200 1920x1080:20 --shared-count 200 --rounds 3 --orthomosaic-mp 100",
    "photo_throughput_scale": "python bench/photo_throughput.py --repo after=. --sets 448x448:400 640x360:400 "
                              "1920x1080:40 --shared-count 300 --rounds 3 --json bench/results/photo_throughput_scale.json",
    "photo_throughput_ab488": "python bench/photo_throughput.py --repo at488=../at488 --repo head=. --sets 448x448:400 "
                              "--shared-count 0 --rounds 3 --json bench/results/photo_throughput_ab488.json",
    "photo_throughput_tracing": "python bench/photo_throughput.py --repo head=../wt/head84 --repo after=. --sets "
                                "448x448:400 640x360:400 1920x1080:40 --shared-count 300 --rounds 3 --orthomosaic-mp 100 "
                                "--json bench/results/photo_throughput_tracing.json",
    "photo_throughput_recheck": "python bench/photo_throughput.py --repo after=. --sets 448x448:400 640x360:400 "
                                "--shared-count 0 --rounds 3 --json bench/results/photo_throughput_recheck.json",
    "photo_throughput_before_after": "python bench/photo_throughput.py --repo before=../main_before --repo after=. --sets "
                                     "448x448:200 640x360:200 1920x1080:20 --shared-count 200 --rounds 3 "
                                     "--json bench/results/photo_throughput_before_after.json",
    "photo_profile_before": "python bench/photo_profile.py --repo ../before --json bench/results/photo_profile_before.json",
    "photo_batch": "python bench/photo_batch.py",
    "photo_memory": "python bench/photo_memory.py",
    "photo_memory_streamed": "python bench/photo_memory.py --counts 10000 --json bench/results/photo_memory_streamed.json",
    "photo_gil": "python bench/photo_gil.py --count 20 --rounds 3 --json bench/results/photo_gil.json",
    "photo_gil_switch": "python bench/photo_gil.py --count 20 --rounds 3 --switch 0.0001 "
                        "--json bench/results/photo_gil_switch.json",
    "finetune_mask": "flock /tmp/survey_cracks_cpu.lock python bench/finetune_mask.py",
    "mask_bridges_shipped": "flock /tmp/survey_cracks_cpu.lock python bench/mask_bridges.py",
    "mask_retrain": "flock /tmp/survey_cracks_cpu.lock python bench/mask_retrain.py --reuse bench/results/mask_retrain.json "
                    "--candidate runs/mask_bridges/model.safetensors runs/mask_bridges_negatives/model.safetensors "
                    "runs/mask_bridges_mined/model.safetensors",
    "mask_retrain_more": "flock /tmp/survey_cracks_cpu.lock python bench/mask_retrain.py --reuse bench/results/mask_retrain_faint.json "
                         "--candidate runs/mask_bridges/model.safetensors runs/mask_bridges_faint/model.safetensors "
                         "runs/mask_bridges_weighted/model.safetensors --out bench/results/mask_retrain_more.json",
    "joints_check": "flock /tmp/survey_cracks_cpu.lock python bench/joints_check.py --model "
                    "survey_cracks/weights/crack_resnet18_mask_v1.safetensors survey_cracks/weights/crack_resnet18.safetensors "
                    "runs/mask_bridges_negatives/model.safetensors runs/mask_bridges_faint/model.safetensors "
                    "runs/mask_bridges_weighted/model.safetensors",
    "finetune_mask_timing": "flock /tmp/survey_cracks_cpu.lock python bench/finetune_mask_timing.py",
    "engine_profile_before": "python bench/engine_profile.py --label before",
    "engine_profile_after": "python bench/engine_profile.py --label after --engine auto",
    "engine_table": "python bench/engine_table.py",
    "engine_agreement": "python bench/engine_agreement.py",
    "margin_check": "flock /tmp/survey_cracks_cpu.lock python bench/margin_check.py",
    "segment_throughput_engine": "python bench/segment_throughput.py --sizes 100 --modes mask --patch-sizes "
                                 "--json bench/results/segment_throughput_engine.json",
    "segment_throughput_windows": "python bench/segment_throughput.py --sizes 100 --modes mask --patch-sizes --windows "
                                  "1024 auto --json bench/results/segment_throughput_windows.json",
    "segment_throughput_windows_large": "python bench/segment_throughput.py --sizes 100 --modes mask --patch-sizes "
                                        "--repeats 1 --windows 1024 1536 2048 "
                                        "--json bench/results/segment_throughput_windows_large.json",
    "segment_throughput_windows_400": "python bench/segment_throughput.py --sizes 400 --modes mask --patch-sizes "
                                      "--windows auto --repeats 1 --json bench/results/segment_throughput_windows_400.json",
    "segment_throughput_400": "flock /tmp/survey_cracks_cpu.lock python bench/segment_throughput.py --sizes 100 400 "
                              "--modes mask --patch-sizes --repeats 3 --targets 20 0.85 "
                              "--json bench/results/segment_throughput_400.json",
    "loso_mask": "flock /tmp/survey_cracks_cpu.lock python bench/loso_mask.py --steps 200,100 --val-per-source 24",
}


def _repository(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _markdown_table(repository: Path) -> Callable[..., str]:
    """survey_cracks.outputs.tables from this checkout (the virtualenv may hold another one's install)."""
    if str(repository) not in sys.path:
        sys.path.insert(0, str(repository))
    from survey_cracks.outputs.tables import markdown_table

    return markdown_table


def edge_throughput(result: dict, table: Callable[..., str]) -> str:
    """bench/edge_throughput.py: each engine's speed (relative to the run's baseline) and F1."""
    rows = [[engine, r["onnx_mb"], r["patch_latency_b1_ms"], r["patches_per_s_b32"], r["frames_per_s_640x480"],
             r["stream_frames_per_s_640x480"], r["pixel_f1"], r["patch_f1"]] for engine, r in result["rows"].items()]
    low, high = result["baseline_gflops_min_max"]
    targets = ", ".join(f"{name.replace('_', ' ')}: {'met' if met else '**not met**'}" for name, met in result["targets"].items())
    return "\n\n".join([
        table(["engine", "ONNX MB", "patch latency, batch 1 (ms)", "patches/s, batch 32", "frames/s 640x480 (network)",
               "stream frames/s 640x480", "pixel F1@2", "patch F1"], rows),
        (f"`{result['command'].strip()}`: {result['rounds']} interleaved rounds, {result['threads']} threads on "
         f"{result['cpus']} CPUs ({result['cpu']}), torch {result['torch']}, onnxruntime {result['onnxruntime']}, "
         f"{result['seconds']} s. Speeds are each engine's median relative to the bracketing baseline times the run's "
         f"median baseline ({result['baseline_gflops_median']} GFLOP/s; {low}–{high} within the run). "
         f"F1 on {result['f1_images']}. Targets: {targets}."),
    ])


def install_sizes(result: dict, table: Callable[..., str]) -> str:
    """bench/install_sizes.py: how much a fresh virtualenv grows with each distribution."""
    rows = [["`pip install .` (survey_cracks: torch with its CUDA libraries, GDAL, Dask, ...)", result["full_package_mb"]],
            ["`pip install ./edge` (survey-cracks-edge: onnxruntime, OpenCV, numpy)", result["edge_runtime_mb"]],
            ["a bare virtualenv, before either", result["bare_venv_mb"]]]
    checks = {"edge_imports_without_torch": "survey_cracks.edge imports without torch",
              "edge_has_no_torch_package": "no torch package in the edge environment",
              "edge_cli_runs": "survey-cracks-edge runs", "full_cli_runs": "survey-cracks runs"}
    return "\n\n".join([
        table(["install", "size on disk (MB)"], rows),
        f"`{result['command'].strip()}` on Python {result['python']}: "
        + "; ".join(f"{text}: {'yes' if result.get(key) else '**no**'}" for key, text in checks.items()) + ".",
    ])


def segment_throughput(result: dict, table: Callable[..., str]) -> str:
    """bench/segment_throughput.py --json: every end-to-end run of every round, and the targets on the medians."""
    machine, window, model, rounds = result["machine"], result["window"], result["model"], result["rounds"]
    git = machine.get("git") or {}
    rows = []
    for rnd in rounds:
        naive = rnd["naive"]
        rows.append([rnd["round"], f"{result['sizes'][0]} MP ({naive['crop_px']} px crop)",
                     f"notebook loop ({naive['patches_per_s']} patches/s)", None, naive["megapixels_per_s"], None,
                     None, None, None, 1])
        for run in rnd["runs"]:
            flag = f" --window {run['window_setting']}" if run.get("window_setting") else ""
            counts = run.get("counts") or {}  # windows wholly outside the footprint are skipped by the run, not the bare network
            windows = (f"{counts['windows_processed']} of {counts['windows']}"
                       if counts.get("windows") and counts.get("windows_processed") is not None else None)
            rows.append([rnd["round"], f"{run['size']} MP", f"`run --mode {run['mode']}{flag}`", run["seconds"],
                         run["megapixels_per_s"], run["peak_rss_gib"], windows, f"{run['bare_before']} / {run['bare_after']}",
                         round(run["megapixels_per_s"] / run["bare_around"], 2),
                         round(run["megapixels_per_s"] / naive["megapixels_per_s"], 1)])
    singles = [f"round {r['round']}" for r in rounds]
    targets = [[t["target"], t["rule"], *(r["ratios"][t["key"]] for r in rounds),
                f"**{t['value']}** ({'max' if t['key'] == 'max_peak_rss_gib' else 'median'})",
                "met" if t["met"] else "**not met**"] for t in result.get("targets", [])]
    judged = {t["key"] for t in result.get("targets", [])} | {"max_peak_rss_gib"}
    others = [[key, *(r["ratios"].get(key) for r in rounds), f"**{value}** (median)"]
              for key, value in result.get("ratios", {}).items() if key not in judged]
    commit = (git.get("commit") or "unknown")[:7]
    if git.get("changed_files"):
        commit += f", {git['changed_files']} files changed"  # measured on a working tree that differs from the commit
    return "\n\n".join([
        (f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']:g} GiB, avx512_bf16 "
         f"{'yes' if machine['avx512_bf16'] else 'no'}; torch {machine['torch']}; network on {machine['compute']}; "
         f"model `{model['file']}` (heads {'+'.join(model['heads'])}, decoder {model['decoder_channels']} channels); "
         "windows " + "; ".join(f"{w.get('setting') or w['core_px']}: {w['core_px']} px + {w['margin_px']} px context"
                                + (f" ({w['bytes_source']} {w['bytes_per_px']:.0f} bytes per read pixel, {w['tasks']} tasks "
                                   f"within {w['budget_gib']} GiB)" if w.get("how") == "auto" else "")
                                for w in result.get("windows", [window]))
         + f"; {len(rounds)} round{'s' * (len(rounds) != 1)}; commit {commit}. "
         f"Command: `{' '.join(result['command'])}`."),
        table(["round", "raster", "what", "seconds", "MP/s", "peak RSS (GiB)", "windows run", "bare network before / after (MP/s)",
               "× bare around", "× notebook loop"], rows),
        table(["target", "rule", *singles, "summary", "met"], targets) if targets else "No round finished: no targets judged.",
        *([table(["not a target (ratio)", *singles, "summary"], others)] if others else []),
        *([(f"Targets: {'all met' if all(t['met'] for t in result['targets']) else '**not all met**'} "
            "(by the rule in bench/segment_throughput.py).")] if targets else []),
    ])


def tuning(result: dict, table: Callable[..., str]) -> str:
    """bench/tuning.py: a whole run with each speed-up of survey_cracks.tuning switched off in turn."""
    rows = []
    for setting, row in result["settings"].items():
        costs = row.get("costs_without") or {}
        rows.append([f"`SURVEY_CRACKS_TUNING={setting}`", row["seconds"], ", ".join(map(str, row["rounds_seconds"])),
                     row["peak_rss_gib"], ", ".join(map(str, row["rounds_peak_rss_gib"])), costs.get("seconds"),
                     costs.get("peak_rss_gib"), {True: "yes", False: "no"}.get(row.get("shows_beyond_noise"))])
    return "\n\n".join([
        table(["setting", "median s", "rounds (s)", "median peak RSS (GiB)", "rounds (GiB)", "s lost without it",
               "GiB added without it", "beyond the `on` runs' spread"], rows),
        (f"{result['raster_megapixels']} MP procedural orthomosaic, mask mode, shipped model; {result['rounds']} rounds, "
         f"settings in rotated order; {result['cpu']}, torch {result['torch']}."),
    ])


def photo_throughput(result: dict, table: Callable[..., str]) -> str:
    """bench/photo_throughput.py: `run` over folders of photos against a bare ResNet18 trunk, per checkout."""
    rows = []
    for name, entry in result["sets"].items():
        for label, mine in entry["by_repo"].items():
            m = mine["median"]
            rows.append([f"{name} ({entry['size']})", entry["photos"], label, m["photos_per_s"], m["megapixels_per_s"],
                         m["bare_photos_per_s"], m["ratio_vs_bare"],
                         ", ".join(f"{x['ratio_vs_bare']:.3f}" for x in mine["rounds"]), m["peak_rss_gib"],
                         mine["network_pixel_waste"], mine["files_per_photo"]])
    labels = list(result["repos"])
    speedups = []
    if len(labels) == 2:  # the second checkout's photos/s over the first's, round by round (same conditions)
        first, second = labels
        for name, entry in result["sets"].items():
            pairs = zip(entry["by_repo"][first]["rounds"], entry["by_repo"][second]["rounds"])
            ratios = [b["photos_per_s"] / a["photos_per_s"] for a, b in pairs]
            ordered = sorted(ratios)
            speedups.append([f"{name} ({entry['size']})", round(ordered[len(ordered) // 2], 2),
                             ", ".join(f"{r:.2f}" for r in ratios)])
    repos = "; ".join(f"{label}: {r['commit']}" for label, r in result["repos"].items())
    machine = result["machine"]
    return "\n\n".join([
        table(["photos", "count", "code", "run photos/s", "run MP/s", "bare trunk photos/s", "run / bare (median)",
               "single rounds", "peak RSS GiB", "network px / image px", "files per photo"], rows),
        (f"`{result['command'].strip()}`: {result['rounds']} interleaved rounds (bare, run, bare per checkout); "
         f"checkouts {repos}; {machine['cores']} cores ({machine['cpu']}), bf16 native: {machine['bf16_native']}, "
         f"torch {machine['torch']}."),
        *([table(["photos", f"{labels[1]} / {labels[0]} photos/s (median)", "single rounds"], speedups)] if speedups else []),
        *([photo_throughput_orthomosaic(result["orthomosaic"], labels, table)] if "orthomosaic" in result else []),
    ])


def photo_throughput_orthomosaic(entry: dict, labels: list[str], table: Callable[..., str]) -> str:
    """The orthomosaic rows of bench/photo_throughput.py --orthomosaic-mp: each checkout's `run` on one raster."""
    rows = [[f"{entry['raster']} ({entry['megapixels']:.0f} MP)", label, mine["median"]["megapixels_per_s"],
             mine["median"]["ratio_vs_first"], ", ".join(f"{x['ratio_vs_first']:.3f}" for x in mine["rounds"]),
             mine["median"]["peak_rss_gib"]] for label, mine in entry["by_repo"].items()]
    return table(["orthomosaic", "code", "run MP/s (median)", f"/ {labels[0]} in the same round (median)",
                  "single rounds", "peak RSS GiB"], rows)


def photo_profile(result: dict, table: Callable[..., str]) -> str:
    """bench/photo_profile.py: a collection run's start-up phases and per-photo stages beside the trunk."""
    machine = result["machine"]
    return "\n\n".join([
        table(["start-up and end of one run", "seconds (median)"], [[k, v] for k, v in result["startup_seconds"].items()]),
        table(["per photo (one task slot, 1 thread)", "ms (median)"], [[k, v] for k, v in result["per_photo_ms"].items()]),
        (f"`{result['command'].strip()}`: {result['photos']} photos of {result['size']}, {result['rounds']} rounds; "
         f"{machine['cores']} cores ({machine['cpu']}), bf16 native: {machine['bf16_native']}."),
        *([result["note"]] if "note" in result else []),
    ])


def photo_gil(result: dict, table: Callable[..., str]) -> str:
    """bench/photo_gil.py: the network alone and beside a thread that traces photos, in one process."""
    rows = [[i + 1, r["network_alone_ms"], r["network_beside_tracing_ms"], r["tracing_alone_ms"],
             r["tracing_beside_network_ms"]] for i, r in enumerate(result["rounds"])]
    return "\n\n".join([
        table(["round", "network alone, ms a photo", "network beside tracing", "tracing alone", "tracing beside network"],
              rows),
        f"`{result['command'].strip()}`: {result['photos']} photos of {result['size']}, one torch thread, GIL switch "
        f"interval {result['switch_s'] * 1000:g} ms.",
    ])


def photo_batch(result: dict, table: Callable[..., str]) -> str:
    """bench/photo_batch.py: the product's graph in batches of equal-shaped photos, two task threads."""
    rows = [[size, batch, row["median_ms"], ", ".join(str(x) for x in row["rounds"])]
            for size, entry in result["sizes"].items() for batch, row in entry.items()]
    machine = result["machine"]
    return "\n\n".join([
        table(["window", "photos a batch", "ms a photo, both threads (median)", "single rounds"], rows),
        f"`{result['command'].strip()}`: {result['threads']} threads of one torch thread each, {result['rounds']} "
        f"interleaved rounds; {machine['cores']} cores ({machine['cpu']}), {machine['compute']}.",
    ])


def photo_memory(result: dict, table: Callable[..., str]) -> str:
    """bench/photo_memory.py: peak RSS of a collection run against its number of photos."""
    rows = [[f"{r['photos']:,}", r["peak_rss_gib"], r["seconds"], r["photos_per_s"], r["photos_ok"], r["files_per_photo"]]
            for r in result["runs"]]
    return "\n\n".join([
        table([f"photos ({result['size']})", "peak RSS GiB (process tree)", "seconds", "photos/s", "photos ok",
               "files per photo"], rows),
        f"`{result['command'].strip()}`: {result['machine']['cores']} cores ({result['machine']['cpu']}).",
    ])


def finetune_mask(result: dict, table: Callable[..., str]) -> str:
    """bench/finetune_mask.py: before / after a mask fine-tune, on a procedural structure and a real held-out source."""
    parts = []
    for key, title in (("procedural", "Procedural board-formed concrete (joints labelled `not_crack`)"),
                       ("real", "uavcrack_bridges, held out by source (adapting a model that never saw it)")):
        part = result.get(key)
        if not part:
            continue
        where = (f"{part['mosaics']}; fine-tuned on two, scored on the third" if key == "procedural"
                 else f"adapted on {part['adaptation']}; scored on {part['held_out']}")
        parts += [f"**{title}**: {where}. `{part['command']}` took {part['finetune_seconds']} s.", part["markdown"].strip()]
    models = (f"; the procedural part adapts {result['model']}, the real part {result['real_model']}"
              if result.get("real_model") else "")
    parts.append(f"Each model at its own calibrated mask threshold; {result['machine']}{models}. "
                 f"Command: `{result['command']}`.")
    return "\n\n".join(parts)


def mask_bridges_shipped(result: dict, table: Callable[..., str]) -> str:
    """bench/mask_bridges.py: the shipped model on uavcrack_bridges (never trained on it), overall and by map."""
    def cell(figures: dict) -> str:
        return f"{figures['precision']} / {figures['recall']} / {figures['f1']}"

    rows = [[name, r["groups"], r["images"], cell(r["pixel@0px"]), cell(r["pixel@2px"]), cell(r["pixel@5px"]),
             " / ".join(str(r["centreline@2px"][k]) for k in ("completeness", "correctness", "quality"))]
            for name, r in result["rows"].items()]
    return "\n\n".join([
        table(["tiles of", "groups", "tiles", "pixel P / R / F1 @0 px", "@2 px", "@5 px", "centreline compl. / corr. / quality @2 px"], rows),
        (f"{result['model']} (sha256 {result['sha256'][:12]}…) at its mask threshold {result['threshold']}, "
         f"**not trained on this source**; {result['held_out']}; {result['seconds']} s on {result['threads']} threads "
         f"({result['cpu']}). Command: `{result['command']}`."),
    ])


def mask_retrain(result: dict, table: Callable[..., str]) -> str:
    """bench/mask_retrain.py: the shipped model and re-trained candidates, by source and by map, with each verdict."""
    from survey_cracks.outputs.tables import comparison_model_name, model_comparison_tables

    models = result["models"]
    tables = [table(headers, rows) for headers, rows in model_comparison_tables(result)]
    described = "; ".join(f"{comparison_model_name(name)}: `{m['path']}` (sha256 {m['sha256'][:12]}…, "
                          f"mask threshold {m['threshold']})" for name, m in models.items())
    verdicts = "; ".join(
        f"**{name}**: existing sources within one point **{'yes' if v['existing_within_one_point'] else 'no'}**, new "
        f"source improved **{'yes' if v['new_source_improved'] else 'no'}** (maps {v['maps_improved']}), ship "
        f"**{'yes' if v['ship'] else 'no'}**" for name, v in result["verdicts"].items())
    reused = (f"; the scores of {', '.join(map(comparison_model_name, result['reused']))} are an earlier run's "
              "(`--reuse`: same weights, same images)") if result.get("reused") else ""
    return "\n\n".join([
        *tables,
        (f"{described}. Test splits of `{result['config']}`. Rule: {result['rule']}. {verdicts}. "
         f"{result['seconds']} s on {result['threads']} threads ({result['cpu']}){reused}. "
         f"Command: `{result['command']}`."),
    ])


def joints_check(result: dict, table: Callable[..., str]) -> str:
    """bench/joints_check.py: each mask model on procedural mosaics whose joints are labelled not_crack."""
    rows = []
    for name, m in result["models"].items():
        f = m["figures"]
        p2, p5, c = f["pixel@2px"], f["pixel@5px"], f["centreline@5px"]
        rows.append([f"`{name}` ({m['sha256'][:12]}…)", m["threshold"], p2["precision"], p2["recall"], p2["f1"],
                     f"**{p5['precision']}**", p5["recall"], p5["f1"], c["quality"], f.get("cell_ap@64px")])
    return "\n\n".join([
        table(["model", "threshold", "pixel P@2", "R@2", "F1@2", "**P@5**", "R@5", "F1@5", "centreline quality@5",
               "cell AP (64 px)"], rows),
        f"{result['mosaics']}. {result['seconds']} s ({result['cpu']}, {result['threads']} threads). "
        f"Command: `{result['command']}`.",
    ])


def finetune_mask_timing(result: dict, table: Callable[..., str]) -> str:
    """bench/finetune_mask_timing.py: one line, the practical target of a mask fine-tune on three 7 MP mosaics."""
    verdict = ("within the 20 min target" if result["within_20_min"] else
               f"**over the 20 min target** (stopped at {result['limit_seconds']} s)" if result["stopped_at_limit"] else
               f"**failed** (exit {result['returncode']})")
    share = next((line.split(":")[-1].strip() for line in result["tail"] if "Percent of CPU" in line), "?")
    return (f"`{result['command']}` on {result['mosaics']}: {result['finetune_seconds']} s for "
            f"{result['steps_reached']} of {result['steps_planned']} steps ({result['seconds_per_step']} s/step, "
            f"before/after included), peak RSS {result['peak_rss_mb']} MB, {verdict}; {result['cores']} cores "
            f"({result['cpu']}), the run got {share} of one core (`/usr/bin/time -v`). "
            f"Command: `{PRODUCERS['finetune_mask_timing']}`.")
def engine_profile(result: dict, table: Callable[..., str]) -> str:
    """bench/engine_profile.py: the engine's glue share, and the network's self CPU time by op class."""
    classes = [[name, f"{c['ms']:.0f}", f"{c['share']:.1%}"] for name, c in result["profile"]["classes"].items()]
    ops = [[name, c["class"], f"{c['ms']:.1f}", f"{c['share']:.1%}"] for name, c in list(result["profile"]["ops"].items())[:8]]
    return "\n\n".join([
        (f"`{result['engine']}` on a {result['window_px']}² window, {result['threads']} thread(s), "
         f"{result['machine']['cpu']}: `engine.segment` {result['engine_s']:.3f} s, the network alone "
         f"({result['network_precision']} eager) {result['network_s']:.3f} s: glue **{result['glue_share']:.1%}** "
         f"(medians of {len(result['rounds'])} interleaved rounds)."),
        table(["op class (network, eager)", "ms per pass", "share"], classes),
        table(["op", "class", "ms per pass", "share"], ops),
    ])


def engine_table(result: dict, table: Callable[..., str]) -> str:
    """bench/engine_table.py: each engine x precision on this machine, as `engine: auto` chose (the table
    `survey-cracks info --engines` prints)."""
    from survey_cracks.models.engine_choice import EngineChoice, choice_table

    fields = ("engine", "precision", "key", "trials", "window_px", "measured_at")
    choice = EngineChoice.from_json(json.dumps({name: result[name] for name in fields}))
    libraries = ", ".join(f"{k} {v}" for k, v in result["key"]["libraries"].items())
    return "\n\n".join([
        choice_table(choice),
        (f"`{result['command']}` at {result['measured_at']}: {result['window_px']}² windows, "
         f"{result['key']['threads']} thread(s) on {result['key']['cpu']} ({result['cores']} cores), {libraries}. "
         f"Agreement: the share of the validation images' pixels within one level of eager torch's at the same "
         f"precision (fp32 for int8: the reference); {result['agreement_needed']:.1%} needed, and pixel F1@2 within "
         f"0.002 of the reference's."),
    ])


def engine_agreement(result: dict, table: Callable[..., str]) -> str:
    """bench/engine_agreement.py: each engine's heatmap levels against eager torch's."""
    rows = [[r["engine"], r["precision"], f"{r['vs_torch_same_precision']:.4%}", f"{r['vs_torch_fp32']:.4%}"]
            for r in result["rows"]]
    return "\n\n".join([
        table(["engine", "precision", "within one level of the reference (torch at that precision; fp32 for int8)",
               "within one level of torch fp32"],
              rows),
        f"`{result['command']}`: {result['images']}, {result['pixels']:,} pixels; {result['cpu']}.",
    ])


def margin_check(result: dict, table: Callable[..., str]) -> str:
    """bench/margin_check.py: each margin's centre levels against the whole image's, judged by the equal-outputs rule."""
    rows = [[f"{r['margin_px']} px", f"{r['within_one']:.3%}", str(r["max_levels"]), f"{r['pixels']:,}",
             f"{r['network_px_per_core_px_at_1024']:.3f}", "meets" if r["meets"] else "fails"] for r in result["rows"]]
    return "\n\n".join([
        table(["margin", "pixels within one level of the whole image's", "largest move (levels)", "pixels",
               "network px per kept px (1024 px core)", f"rule (≥ {result['agreement_needed']:.1%})"], rows),
        (f"`{result['command']}`: {result['images']}, {result['cores']} cores of {result['core_px']} px, "
         f"`{result['engine']}` on {result['cpu']}; the model's stored margin is {result['stored_margin_px']} px."),
    ])


def loso_mask(result: dict, table: Callable[..., str]) -> str:
    """bench/loso_mask.py: the mask model's leave-one-source-out table, by the renderer the card and CLI use."""
    from survey_cracks.training.loso_mask_table import loso_mask_markdown  # on the path since _markdown_table

    return f"{loso_mask_markdown(result)}\n\n{result['threads']} threads ({result['cpu']})."


RENDERERS: dict[str, Callable[[dict, Callable[..., str]], str]] = {
    "edge_throughput": edge_throughput, "install_sizes": install_sizes, "segment_throughput": segment_throughput,
    "tuning": tuning, "finetune_mask": finetune_mask, "mask_bridges_shipped": mask_bridges_shipped,
    "mask_retrain": mask_retrain, "mask_retrain_more": mask_retrain, "joints_check": joints_check,
    "finetune_mask_timing": finetune_mask_timing, "photo_throughput": photo_throughput,
    "photo_throughput_scale": photo_throughput, "photo_throughput_ab488": photo_throughput, "photo_profile_before": photo_profile,
    "photo_throughput_tracing": photo_throughput, "photo_throughput_before_after": photo_throughput,
    "photo_batch": photo_batch, "photo_throughput_recheck": photo_throughput,
    "photo_memory": photo_memory, "photo_memory_streamed": photo_memory, "photo_gil": photo_gil, "photo_gil_switch": photo_gil, "engine_profile_before": engine_profile,
    "engine_profile_after": engine_profile,
    "engine_table": engine_table, "engine_agreement": engine_agreement, "margin_check": margin_check,
    "segment_throughput_engine": segment_throughput, "segment_throughput_windows": segment_throughput,
    "segment_throughput_windows_large": segment_throughput,
    "segment_throughput_windows_400": segment_throughput, "segment_throughput_400": segment_throughput,
    "loso_mask": loso_mask,
}


def render(name: str, repository: Path) -> str:
    """The Markdown that replaces ``<!-- bench-table: name -->``."""
    if name not in RENDERERS:
        raise ValueError(f"bench-table: no renderer for {name!r} (known: {', '.join(sorted(RENDERERS))})")
    path = repository / "bench" / "results" / f"{name}.json"
    if not path.is_file():
        return f"*{path.relative_to(repository)}: not measured yet: run `{PRODUCERS[name]}`.*"
    try:
        result = json.loads(path.read_text())
        return RENDERERS[name](result, _markdown_table(repository))
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: cannot render its table ({type(error).__name__}: {error})") from error


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    repository = _repository(config)
    # a placeholder the pattern does not read would stay an invisible HTML comment: fail the build instead
    stray = [line for line in re.findall(r"^<!-- bench-table.*$", markdown, re.MULTILINE) if not PLACEHOLDER.fullmatch(line)]
    if stray:
        raise ValueError(f"{getattr(getattr(page, 'file', None), 'src_path', 'a page')}: {stray[0]!r} is not "
                         "`<!-- bench-table: NAME -->` (NAME of a-z, 0-9 and _)")
    return PLACEHOLDER.sub(lambda match: render(match.group(1), repository), markdown)
