"""Threshold calibration: max F1, and which threshold wins when several give it."""

import numpy as np
import pytest

from survey_cracks.metrics import choose_threshold, scores_at


def test_tied_max_f1_takes_the_threshold_nearest_one_half_not_the_lowest():
    # t = 0.8: tp 1, fp 0, fn 1 -> F1 2/3; t = 0.17: tp 2, fp 2, fn 0 -> F1 2/3; in between it is lower.
    probabilities = np.array([0.8, 0.6, 0.4, 0.17])
    labels = np.array([1, 0, 0, 1])
    assert scores_at(probabilities, labels, 0.8).f1 == pytest.approx(scores_at(probabilities, labels, 0.17).f1)
    assert choose_threshold(probabilities, labels) == pytest.approx(0.8)


def test_a_small_survey_with_many_tied_thresholds_keeps_its_mid_range_one():
    # t = 0.51: tp 4, fp 0, fn 2 -> F1 0.8; t = 0.17: tp 6, fp 3, fn 0 -> F1 0.8; nothing does better.
    # The lowest of the tied thresholds (the old rule) was 0.17.
    probabilities = np.array([0.9, 0.8, 0.7, 0.51, 0.45, 0.4, 0.3, 0.2, 0.17, 0.1, 0.05])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 1, 1, 0, 0])
    f1 = {t: scores_at(probabilities, labels, t).f1 for t in probabilities}
    assert f1[0.51] == pytest.approx(0.8) and f1[0.17] == pytest.approx(0.8) and max(f1.values()) == pytest.approx(0.8)
    assert choose_threshold(probabilities, labels) == pytest.approx(0.51)


@pytest.mark.parametrize("seed", range(40))
def test_choice_is_a_max_f1_threshold_and_the_one_nearest_one_half(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 30))
    labels = rng.integers(0, 2, n)
    labels[:2] = (0, 1)  # both classes
    probabilities = np.round(rng.random(n), 2)  # coarse scores: ties in score and in F1 are common
    chosen = choose_threshold(probabilities, labels)
    f1 = {t: scores_at(probabilities, labels, t).f1 for t in np.unique(probabilities)}
    best = max(f1.values())
    tied = sorted(t for t, v in f1.items() if v >= best - 1e-9)
    assert f1[chosen] == pytest.approx(best, abs=1e-9)
    expected = min(tied, key=lambda t: (abs(t - 0.5), t))
    assert chosen == pytest.approx(expected)


def test_target_recall_mode_and_single_class_are_unchanged():
    probabilities = np.array([0.9, 0.8, 0.4, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 0])
    assert choose_threshold(probabilities, labels, "target_recall", 0.6) == pytest.approx(0.8)
    assert choose_threshold(probabilities, np.zeros(5, int)) == 0.5
