"""The mask card says which weights it holds and how the model compares with the one it replaces."""

from survey_cracks.training.card import _comparison_section, _decoder_phase, _kept


def _row(f1: float) -> dict:
    pixel = {"precision": f1, "recall": f1, "f1": f1}
    return {"images": 3, "pixel@2px": pixel, "pixel@5px": pixel, "centreline@2px": {"quality": f1}}


def test_kept_names_the_best_validation_step_only_with_patience():
    history = [{"step": 0, "val": {"f1": 0.5}}, {"step": 300, "val": {"f1": 0.7}}, {"step": 600, "val": {"f1": 0.6}}]
    assert _kept({"patience": 2}, history) == "the weights of step 300 are kept (the best validation pixel F1@2, 0.7)"
    assert _kept({"patience": None}, history) == "the last step's weights are kept"


def test_fine_tune_without_decoder_phase_says_nothing_of_it():
    assert _decoder_phase({"decoder_steps": 0}) == ""
    assert _decoder_phase({"decoder_steps": 2400}).startswith("2400 steps of the decoder alone")


def test_comparison_rows_pair_each_source_before_and_after():
    comparison = {
        "config": "configs/mask_bridges.yaml", "command": "python bench/mask_retrain.py --candidate m", "rule": "the rule",
        "verdicts": {"mask_bridges": {"existing_within_one_point": True, "new_source_improved": True,
                                      "maps_improved": "2 of 3", "ship": True}},
        "models": {"current": {"threshold": 0.1, "patch": None, "rows": {
                       "masonry": _row(0.8), "uavcrack_bridges": _row(0.5), "uavcrack_bridges map ck1": _row(0.4)}},
                   "mask_bridges": {"threshold": 0.15, "patch": None, "rows": {
                       "masonry": _row(0.81), "uavcrack_bridges": _row(0.6), "uavcrack_bridges map ck1": _row(0.45)}}},
    }
    text = "\n".join(_comparison_section(comparison))
    assert "| masonry | 3 | before | 0.8 | 0.8 | 0.8 | 0.8 | 0.8 |" in text
    assert "| uavcrack_bridges | 3 | **mask_bridges** | 0.6 | 0.6 | 0.6 | 0.6 | 0.6 |" in text
    assert "| ck1 | 3 | 0.4 | 0.45 |" in text  # maps: one row each, a column per model
    assert "maps improved: 2 of 3" in text and "`python bench/mask_retrain.py --candidate m`" in text
    assert _comparison_section(None) == []
