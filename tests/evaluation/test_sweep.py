"""The threshold the annotations favour (evaluation.sweep): counts summed over rasters, best F1, the command."""

from __future__ import annotations

import numpy as np
import pytest

from survey_cracks.evaluation.sweep import ThresholdSweep, survey_sweep

THRESHOLDS = (0.0, 0.25, 0.5, 0.75, 1.0)


def sweep(predicted, correct, reached, annotated) -> ThresholdSweep:
    return ThresholdSweep(THRESHOLDS, tuple(predicted), tuple(correct), tuple(reached), annotated, 2)


def test_best_threshold_is_the_highest_f1_and_the_one_in_use_is_scored_too():
    s = sweep([100, 60, 30, 10, 0], [20, 18, 15, 8, 0], [20, 18, 14, 6, 0], 20)
    f1 = s.f1()
    # at 0.5: precision 15/30, recall 14/20 -> F1 0.583; at 0.75: 8/10 and 6/20 -> 0.436; at 0.25: 0.3 and 0.9 -> 0.45
    assert f1[2] == pytest.approx(2 * 0.5 * 0.7 / 1.2) and np.isnan(f1[4])  # nothing predicted at 1.0
    advice = s.advice(in_use=0.25)
    assert advice is not None and advice.best == 0.5 and advice.best_f1 == pytest.approx(f1[2])
    assert advice.in_use_f1 == pytest.approx(f1[1]) and advice.better
    assert advice.command("/data/out") == "survey-cracks evaluate /data/out --threshold 0.50"
    assert advice.as_dict("/data/out")["command"] == "survey-cracks evaluate /data/out --threshold 0.50"
    # already at the best: no command to run
    same = s.advice(in_use=0.5)
    assert same is not None and not same.better and same.as_dict("o")["command"] is None


def test_a_survey_sums_counts_not_f1s_and_round_trips_through_json():
    a = sweep([10, 5, 2, 1, 0], [5, 4, 2, 1, 0], [5, 4, 2, 1, 0], 5)
    b = sweep([1000, 500, 200, 100, 0], [100, 90, 80, 10, 0], [100, 95, 70, 10, 0], 100)
    total = survey_sweep([a, None, b])
    assert total is not None and total.predicted == (1010, 505, 202, 101, 0) and total.annotated == 105
    assert ThresholdSweep.from_dict(total.as_dict()) == total
    assert survey_sweep([None]) is None
    assert sweep([0] * 5, [0] * 5, [0] * 5, 0).advice(0.5) is None  # nothing annotated: no advice
