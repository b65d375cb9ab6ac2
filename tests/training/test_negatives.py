"""Synthetic straight look-alikes are drawn as hard negatives and never hide or relabel a crack."""

import numpy as np

from survey_cracks.training.negatives import draw_straight_negatives


def _crop(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(100, 160, (128, 128, 3), dtype=np.uint8)
    target = np.zeros((128, 128), np.uint8)
    target[60:63, 10:118] = 1  # a crack across the crop
    return rgb, target


def test_each_draw_changes_the_image_where_it_marks_negatives():
    for seed in range(40):
        rgb, target = _crop(seed)
        out, negative = draw_straight_negatives(rgb, target, np.random.default_rng(seed))
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert negative.shape == target.shape and negative.dtype == bool
        assert 0 < negative.mean() < 0.9, seed  # a line's worth of pixels, not the whole crop
        changed = np.abs(out.astype(int) - rgb.astype(int)).max(axis=2) > 3
        assert changed[negative].mean() > 0.3, seed  # the marked pixels are where something was drawn


def test_a_crack_stays_darker_than_its_surroundings_under_any_feature():
    for seed in range(40):
        rgb, target = _crop(seed)
        rgb[target == 1] = 40  # a dark crack
        out, _ = draw_straight_negatives(rgb, target, np.random.default_rng(seed))
        crack = out[target == 1].mean()
        beside = out[55:58, 10:118].mean()
        assert crack < beside, seed  # never painted over: paint is only laid where no crack is


def test_the_same_generator_state_draws_the_same_feature():
    rgb, target = _crop(0)
    a = draw_straight_negatives(rgb, target, np.random.default_rng(7))
    b = draw_straight_negatives(rgb, target, np.random.default_rng(7))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_training_crops_carry_drawn_negatives_only_when_asked_and_never_where_ignored():
    from survey_cracks.training.segment import MaskImage, sample_crop

    rgb, target = _crop(1)
    ignore = np.zeros(target.shape, bool)
    ignore[:, :20] = True
    image = MaskImage("s", "a", "train", rgb, target, ignore, True)
    plain = sample_crop(image, 96, np.random.default_rng(3), (1.0, 1.0), True, synthetic_negatives=0.0)
    drawn = sample_crop(image, 96, np.random.default_rng(3), (1.0, 1.0), True, synthetic_negatives=1.0)
    assert not plain[3].any()
    assert drawn[3].any() and not (drawn[3] & drawn[2]).any()
    assert np.array_equal(plain[1], drawn[1])  # the crack label is the same crop's, untouched
