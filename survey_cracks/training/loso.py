"""Leave-one-source-out: how well the model carries to a domain it has not seen.

For each held-out source, a model is trained on every other source's training
split (same config, shorter schedule) and tested on all labelled patches of the
held-out source, at the threshold calibrated on the other sources' validation data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from survey_cracks.config import TrainConfig
from survey_cracks.training.data import build_patch_set
from survey_cracks.training.train import evaluate_sets, fit


def leave_one_source_out(
    config: TrainConfig,
    holdouts: list[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    out_dir = Path(config.out_dir)
    patch_set = build_patch_set(config, cache_dir=out_dir.parent / "cache", progress=progress)
    trainable = [s.name for s in config.sources if s.role == "split"]
    rows = []
    for held in holdouts or trainable:
        related = [name for name in patch_set.source_names if name == held or name.startswith(f"{held}_")]
        train_idx = patch_set.where("train", exclude=related)
        val_idx = patch_set.where("val", exclude=related)
        test_idx = np.flatnonzero(np.isin(patch_set.source, [patch_set.source_names.index(n) for n in related]))
        log(f"held out {held}: train {len(train_idx)} / val {len(val_idx)} / test {len(test_idx)} patches")
        result = fit(patch_set, train_idx, val_idx, config, out_dir / f"without_{held}", progress=progress, log=log)
        table, _ = evaluate_sets(result.model, result.meta, patch_set, {held: test_idx})
        row = {"held_out": held, "trained_on": [n for n in trainable if n not in related], "epochs": len(result.history),
               "threshold": round(result.threshold, 4), **table[held]}
        rows.append(row)
        log(json.dumps(row))
    (out_dir / "loso.json").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "loso.json").write_text(json.dumps(rows, indent=2))
    return rows


def loso_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| held-out source | trained on | patches | precision | recall | F1 | AP |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['held_out']} | {', '.join(r['trained_on'])} | {r['patches']} | {r['precision']} | {r['recall']} | {r['f1']} | {r['ap']} |")
    return "\n".join(lines)
