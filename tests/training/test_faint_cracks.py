"""Faint-crack augmentation fades a crack toward its surroundings, keeps it visible and leaves the rest alone."""

import numpy as np

from survey_cracks.training.faint_cracks import fade_cracks


def _crop(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(120, 150, (96, 96, 3), dtype=np.uint8)
    target = np.zeros((96, 96), np.uint8)
    target[47:50, 8:88] = 1
    rgb[target == 1] = 40  # a dark crack
    return rgb, target


def test_a_faded_crack_is_fainter_but_still_darker_than_its_surface():
    for seed in range(20):
        rgb, target = _crop(seed)
        out = fade_cracks(rgb, target, np.random.default_rng(seed))
        before, after = rgb[target == 1].mean(), out[target == 1].mean()
        surface = rgb[20:40].mean()
        assert before < after < surface, seed
        contrast_left = (surface - after) / (surface - before)
        assert 0.3 <= contrast_left <= 0.75, seed  # 30-65 % of the contrast taken, never all of it


def test_pixels_away_from_the_crack_are_untouched_and_a_crackless_crop_is_returned_as_is():
    rgb, target = _crop(1)
    out = fade_cracks(rgb, target, np.random.default_rng(1))
    assert np.array_equal(out[:40], rgb[:40]) and np.array_equal(out[57:], rgb[57:])
    empty = np.zeros_like(target)
    assert fade_cracks(rgb, empty, np.random.default_rng(1)) is rgb


def test_training_crops_are_faded_only_when_asked_and_keep_their_labels():
    from survey_cracks.training.segment import MaskImage, sample_crop

    ratios = []
    for seed in range(20):
        rgb, target = _crop(seed)
        image = MaskImage("s", "a", "train", rgb, target, np.zeros(target.shape, bool), True)
        plain = sample_crop(image, 64, np.random.default_rng(seed), (1.0, 1.0), True, faint_cracks=0.0)
        faded = sample_crop(image, 64, np.random.default_rng(seed), (1.0, 1.0), True, faint_cracks=1.0)
        assert np.array_equal(plain[1], faded[1]) and plain[1].any()  # same crop, same crack label
        crack = faded[1] == 1
        contrast = [float(c[0][~crack].mean() - c[0][crack].mean()) for c in (plain, faded)]
        ratios.append(contrast[1] / contrast[0])
    assert 0.2 < np.median(ratios) < 0.8  # after lighting and noise the crack keeps a part of its contrast
