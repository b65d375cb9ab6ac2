"""Threshold calibration: max F1, and which threshold wins when several give it."""

import numpy as np
import pytest

from survey_cracks.evaluation.metrics import choose_threshold, scores_at


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


def test_pixel_counts_at_zero_and_two_pixels_tolerance():
    from survey_cracks.evaluation.pixel_metrics import pixel_scores, tolerant_counts

    truth = np.zeros((20, 40), bool)
    truth[10, 5:35] = True  # a 1 px line, 30 px long
    predicted = np.zeros_like(truth)
    predicted[11, 5:35] = True  # the same line one pixel lower
    predicted[2, 0:10] = True  # and 10 px of a false line far away
    exact = tolerant_counts(predicted, truth, 0)
    assert exact.tolist() == [0, 40, 30, 0]  # no pixel overlaps exactly
    near = tolerant_counts(predicted, truth, 2)
    assert near.tolist() == [30, 10, 0, 30]
    scores = pixel_scores(near)
    assert scores["precision"] == 0.75 and scores["recall"] == 1.0 and scores["f1"] == round(2 * 0.75 / 1.75, 4)
    counted = np.zeros_like(truth)
    counted[:, :20] = True  # only the left half is counted; the neighbourhood still sees the rest
    assert tolerant_counts(predicted, truth, 2, counted).tolist() == [15, 10, 0, 15]


def test_centreline_measures_on_wide_cracks_count_length_not_area():
    from survey_cracks.evaluation.pixel_metrics import centreline_counts, centreline_scores

    truth = np.zeros((40, 80), bool)
    truth[18:23, 10:70] = True  # a 5 px wide crack, 60 px long
    predicted = np.zeros_like(truth)
    predicted[19:22, 10:70] = True  # found, but drawn 3 px wide: pixel recall suffers, centreline completeness not
    predicted[5, 20:40] = True  # a false 20 px line
    scores = centreline_scores(centreline_counts(predicted, truth, 2))
    assert scores["completeness"] >= 0.95
    assert 0.6 < scores["correctness"] < 0.8  # ~56-60 of ~76-80 skeleton pixels are on the crack
    assert scores["quality"] < scores["completeness"]
