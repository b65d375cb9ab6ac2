"""Hard-negative mining: what is mined, from which images, cached, and how crops are cut around it."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from survey_cracks.config import DataSource, MaskSchedule, MaskTrainConfig
from survey_cracks.training.mining import MiningRule, elongation, false_positives, mine
from survey_cracks.training.segment import MaskImage, sample_crop


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probability, crack label and ignore mask of a 64 x 96 image with one of each case."""
    prob = np.zeros((64, 96), np.float32)
    target = np.zeros((64, 96), np.uint8)
    ignore = np.zeros((64, 96), bool)
    target[10, 5:40] = 1  # a labelled crack ...
    prob[8:13, 5:40] = 0.9  # ... found, with a rim: not false
    prob[10, 40:45] = 0.8  # its end runs on within 5 px: not false either
    prob[30:33, 10:60] = 0.7  # a straight line far from it: false, 150 px
    prob[50:56, 70:76] = 0.6  # a blob: false, 36 px
    prob[55:57, 5:8] = 0.9  # a speck of 6 px: too small
    prob[40:48, 80:90] = 0.9  # in an ignored area: not supervised, not mined
    ignore[38:50, 78:92] = True
    prob[20:24, 60:64] = 0.29  # under the threshold
    return prob, target, ignore


def test_mined_pixels_are_the_above_threshold_pixels_away_from_labels():
    prob, target, ignore = _scene()
    mined = false_positives(prob, target, ignore, MiningRule(threshold=0.3, clearance_px=5, min_component_px=16))
    expected = np.zeros_like(ignore)
    expected[30:33, 10:60] = True
    expected[50:56, 70:76] = True
    assert np.array_equal(mined, expected)
    # Below the clearance the crack's own rim counts as false; a lower threshold takes the faint square too.
    loose = false_positives(prob, target, ignore, MiningRule(threshold=0.25, clearance_px=0, min_component_px=16))
    assert loose[8, 20] and loose[21, 61] and not loose[10, 20] and not loose[44, 85]


def test_the_straightness_rule_keeps_lines_and_drops_blobs():
    prob, target, ignore = _scene()
    mined = false_positives(prob, target, ignore, MiningRule(threshold=0.3, min_component_px=16, min_elongation=4))
    assert mined[31, 30] and not mined[52, 72]
    labels = np.zeros((40, 40), np.int32)
    labels[5, 2:38] = 1  # a 1 px line, 36 long
    labels[20:30, 20:30] = 2  # a square
    ratio = elongation(labels, 3)
    assert ratio[1] == pytest.approx(36, rel=0.05) and ratio[2] == pytest.approx(1.0, abs=0.01)


def _image(split: str, source: str = "s", value: int = 0) -> MaskImage:
    rgb = np.full((64, 96, 3), value, np.uint8)
    _, target, ignore = _scene()
    return MaskImage(source, f"{split}{value}", split, rgb, target, ignore, True)


class CountingModel:
    """A stand-in for the network: `_scene`'s probabilities for every image; counts its calls."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        self.seen.append(int(rgb[0, 0, 0]))
        return _scene()[0]


def test_only_training_images_are_mined(tmp_path):
    images = [_image("train", value=1), _image("val", value=2), _image("test", value=3), _image("train", "t", 4)]
    model = CountingModel()
    out, summary = mine(images, model, "sha", MiningRule(threshold=0.3), tmp_path, progress=False)
    assert model.seen == [1, 4]  # the network never saw a held-out image
    assert out[1] is images[1] and out[2] is images[2] and out[1].negative is None and out[2].negative is None
    assert out[0].negative.sum() == 150 + 36 and out[3].negative.sum() == 150 + 36
    assert summary.sources["s"].pixels == 186 and summary.sources["s"].components == 2
    # sources not named are not mined
    model = CountingModel()
    out, summary = mine(images, model, "sha", MiningRule(threshold=0.3), tmp_path / "b", sources={"t"}, progress=False)
    assert model.seen == [4] and out[0].negative is None and set(summary.sources) == {"t"}


def test_annotated_negatives_are_kept_beside_mined_ones(tmp_path):
    image = _image("train", value=1)
    image.negative = np.zeros(image.target.shape, bool)
    image.negative[0, 0] = True
    (out,), _ = mine([image], CountingModel(), "sha", MiningRule(threshold=0.3), tmp_path, progress=False)
    assert out.negative[0, 0] and out.negative.sum() == 187


def test_a_second_run_reads_the_cache_and_a_new_model_or_rule_mines_again(tmp_path):
    images = [_image("train", value=1), _image("train", value=2)]
    first, summary = mine(images, CountingModel(), "sha", MiningRule(threshold=0.3), tmp_path, progress=False)
    assert summary.computed == 2 and summary.cached == 0
    model = CountingModel()
    again, summary = mine(images, model, "sha", MiningRule(threshold=0.3), tmp_path, progress=False)
    assert model.seen == [] and summary.cached == 2
    assert all(np.array_equal(a.negative, b.negative) for a, b in zip(first, again))
    for sha, rule in (("other", MiningRule(threshold=0.3)), ("sha", MiningRule(threshold=0.5))):
        model = CountingModel()
        mine(images, model, sha, rule, tmp_path, progress=False)
        assert model.seen == [1, 2]
    changed = _image("train", value=1)
    changed.target[20, 20] = 1  # the same pixels with another label
    model = CountingModel()
    mine([changed], model, "sha", MiningRule(threshold=0.3), tmp_path, progress=False)
    assert model.seen == [1]


def _big_image(mined: bool) -> MaskImage:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (600, 600, 3), dtype=np.uint8)
    target = np.zeros((600, 600), np.uint8)
    target[100:103, 50:550] = 1
    negative = np.zeros((600, 600), bool)
    if mined:
        negative[500:503, 500:510] = True  # 30 px in a corner: a random 96 px crop rarely holds it
    return MaskImage("s", "a", "train", rgb, target, np.zeros((600, 600), bool), True, negative)


def test_crops_are_cut_around_mined_pixels_at_the_share_asked():
    image = _big_image(mined=True)
    for share in (0.3, 0.7):
        holding = 0
        for seed in range(400):
            _, _, _, negative = sample_crop(image, 96, np.random.default_rng(seed), (1.0, 1.0), True,
                                            mined_negatives=share)
            holding += bool(negative.any())
        assert abs(holding / 400 - share) < 0.07, (share, holding)
    plain = sum(bool(sample_crop(image, 96, np.random.default_rng(s), (1.0, 1.0), True)[3].any()) for s in range(400))
    assert plain / 400 < 0.05  # without mining a crop holds them by chance only


def test_no_mining_share_gives_the_crops_of_before():
    with_mined, without = _big_image(mined=True), _big_image(mined=False)
    for seed in range(30):
        rng_a, rng_b, rng_c = (np.random.default_rng(seed) for _ in range(3))
        a = sample_crop(with_mined, 96, rng_a, (0.7, 1.4), True, 0.2, mined_negatives=0.0)
        b = sample_crop(without, 96, rng_b, (0.7, 1.4), True, 0.2)
        c = sample_crop(without, 96, rng_c, (0.7, 1.4), True, 0.2, mined_negatives=0.5)  # nothing mined: no draw
        for x, y, z in zip(a[:3], b[:3], c[:3]):
            assert np.array_equal(x, y) and np.array_equal(y, z)
        assert rng_a.random() == rng_b.random() == rng_c.random()  # the same numbers were drawn


def test_the_config_validates_mining(tmp_path):
    source = DataSource(name="a", kind="mask_folder", root=tmp_path)
    assert MaskSchedule().mined_negatives == 0.0
    with pytest.raises(ValidationError, match="mined_negatives"):
        MaskSchedule(mined_negatives=1.5)
    with pytest.raises(ValidationError, match="keep_decoder"):
        MaskTrainConfig(sources=[source], schedule=MaskSchedule(mined_negatives=0.3))
    with pytest.raises(ValidationError, match="not a source"):
        MaskTrainConfig(sources=[source], keep_decoder=True, schedule=MaskSchedule(mined_negatives=0.3,
                                                                                   mining_sources=["b"]))
    MaskTrainConfig(sources=[source], keep_decoder=True, schedule=MaskSchedule(mined_negatives=0.3, mining_sources=["a"]))


def test_training_mines_with_its_start_model_once(tiny_mask_model, mask_source, tmp_path):
    """A run mines its training images with the start model; a resumed run finds them in the cache."""
    from survey_cracks.training.segment import fit_mask
    from tests.conftest import mask_config

    config = mask_config(mask_source, tmp_path / "run", tiny_mask_model, decoder_steps=0, joint_steps=4,
                         checkpoint_every=2)
    schedule = config.schedule.model_copy(update={"mined_negatives": 0.5, "mining_min_px": 1})
    config = config.model_copy(update={"keep_decoder": True, "schedule": schedule})
    log: list[str] = []
    first = fit_mask(config, progress=False, log=log.append)
    mining = first.metrics["mining"]
    train = mining["sources"]["synthetic"]["images"]
    assert mining["computed"] == train > 0 and mining["cached"] == 0
    assert any(line.startswith("mined synthetic:") for line in log)
    assert len(list((tmp_path / "run" / "mined").glob("*.npy"))) == train
    resumed = fit_mask(config, resume=True, progress=False, log=lambda _: None)
    assert resumed.metrics["mining"]["computed"] == 0 and resumed.metrics["mining"]["cached"] == train
    assert resumed.metrics["mining"]["sources"] == mining["sources"]
