"""The mask model's leave-one-source-out table, from ``loso_mask.json``.

One renderer for the three places that print it (``train-mask --loso``, the model card and
the documentation's bench tables), so the table reads the same everywhere. It reads the
JSON, not the training objects, so the docs build needs no torch.
"""

from __future__ import annotations

from typing import Any

from survey_cracks.outputs.tables import markdown_table


def _prf(figures: dict[str, Any]) -> str:
    return f"{figures['precision']} / {figures['recall']} / {figures['f1']}"


def _calibration(per_source: int | None) -> str:
    return f" (at most {per_source} of each source, every n-th by name)" if per_source else ""


def loso_mask_markdown(result: dict[str, Any]) -> str:
    """The table (one row per held-out source, its test-split F1 beside the all-sources reference's) and what it means."""
    reference = (result.get("reference") or {}).get("sets", {})
    rows = []
    for row in result["rows"]:
        every, test = row["all_images"], row["test_split"]
        line = every["centreline@2px"]
        ref = reference.get(row["held_out"])
        rows.append([
            " + ".join(row["sources_held_out"]), every["images"], ", ".join(row["trunk_saw"]) or "no",
            _prf(every["pixel@0px"]), _prf(every["pixel@2px"]), _prf(every["pixel@5px"]),
            f"{line['completeness']} / {line['correctness']} / {line['quality']}",
            test["pixel@2px"]["f1"] if test["images"] else None, ref["pixel@2px"]["f1"] if ref else None,
        ])
    table = markdown_table(
        ["held out", "images", "trunk saw", "pixel P / R / F1 @0 px", "@2 px", "@5 px",
         "centreline compl. / corr. / quality @2 px", "F1@2 its test split", "reference F1@2 (all sources)"], rows)
    schedule = result["schedule"]
    parts = [
        table,
        (f"Each row: a mask model trained on every other source's training split ({schedule['decoder_steps']} decoder "
         f"+ {schedule['joint_steps']} joint steps, batches of {schedule['batch_size']}), its threshold calibrated on the "
         f"other sources' validation images{_calibration(result.get('val_per_source'))}, scored on **every labelled "
         "image** of the held-out source. "
         f"Always in training (no pixel masks, never held out): {', '.join(result['always_trained_on']) or 'none'}. "
         "The reference is the same schedule on every source, scored on each source's test split: compare it with "
         "the row's \"its test split\" column (the same images)."),
        *result.get("notes", []),
    ]
    if result.get("command"):
        parts.append(f"Command: `{result['command']}`.")
    return "\n\n".join(parts)
