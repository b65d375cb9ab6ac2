"""Training: labelling rules on hand-made masks and boxes, a real short fit, data-source errors."""

import numpy as np
import pytest

from survey_cracks.config import DataSource, LabelRule, TrainConfig, load_config
from survey_cracks.errors import DataSourceError
from survey_cracks.io.sources import yolo_to_pixel_boxes
from survey_cracks.models.network import load_checkpoint
from survey_cracks.io.sources import list_items, split_of
from survey_cracks.training.labels import label_from_boxes, label_from_mask
from survey_cracks.training.train import weights_sha256

RULE = LabelRule(center_fraction=0.5, min_center_crack_px=10, box_center_overlap=0.15)


def test_mask_rule_centre_crack_margin_and_clean():
    mask = np.zeros((64, 64), bool)
    assert label_from_mask(mask, RULE) == 0
    mask[32, 16:48] = True  # 32 px through the centre
    assert label_from_mask(mask, RULE) == 1
    margin = np.zeros((64, 64), bool)
    margin[2, :] = True  # crack only in the border band: ambiguous
    assert label_from_mask(margin, RULE) is None
    few = np.zeros((64, 64), bool)
    few[30, 30:35] = True  # 5 px in the centre: below min_center_crack_px
    assert label_from_mask(few, RULE) is None


def test_box_rule():
    window = (0.0, 0.0, 64.0, 64.0)
    assert label_from_boxes(window, np.zeros((0, 4)), RULE) == 0
    thin = np.array([[10.0, 28.0, 60.0, 36.0]])  # thin box across the centre
    assert label_from_boxes(window, thin, RULE) == 1
    corner = np.array([[0.0, 0.0, 8.0, 8.0]])  # touches the patch, not the centre
    assert label_from_boxes(window, corner, RULE) is None
    far = np.array([[100.0, 100.0, 120.0, 120.0]])
    assert label_from_boxes(window, far, RULE) == 0


def test_yolo_parsing():
    boxes = yolo_to_pixel_boxes(["0 0.5 0.5 0.25 0.5", ""], 256, 256)
    assert boxes.tolist() == [[96.0, 64.0, 160.0, 192.0]]
    with pytest.raises(ValueError, match="line 1"):
        yolo_to_pixel_boxes(["0 0.5 0.5"], 256, 256)
    with pytest.raises(ValueError, match="normalised"):
        yolo_to_pixel_boxes(["0 1.5 0.5 0.2 0.2"], 256, 256)


def test_split_is_by_group_and_deterministic(tmp_path):
    source = DataSource(name="s", kind="mask_folder", root=tmp_path, group_regex=r"^(.+)-\d+$")
    from survey_cracks.io.sources import group_of

    assert group_of("IMG_1-3", source) == "IMG_1"
    assert split_of("IMG_1", source, 0) == split_of("IMG_1", source, 0)
    test_only = DataSource(name="t", kind="mask_folder", root=tmp_path, role="test")
    assert split_of("anything", test_only, 0) == "test"


def test_short_training_lowers_loss_and_round_trips(tiny_fit, tiny_model):
    result, _ = tiny_fit
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    model, meta = load_checkpoint(tiny_model)
    assert meta.patch_size == 64
    assert 0.0 < meta.threshold < 1.0
    assert meta.provenance["init"] == "scratch"
    # Always answering "crack" would score F1 = 2p/(1+p) ~ 0.35 at this prevalence.
    assert result.history[-1]["val_f1"] > 0.6


def test_resume_continues_a_killed_run(synthetic_patch_set, tmp_path):
    from survey_cracks.config import Schedule, TilingConfig
    from survey_cracks.training.train import fit

    ps = synthetic_patch_set
    base = dict(sources=[DataSource(name="synthetic", kind="mask_folder", root=tmp_path)], init="scratch",
                tiling=TilingConfig(patch_size=64), workers=2, augment=False, precision="fp32")
    first = TrainConfig(**base, schedule=Schedule(epochs=1, head_epochs=0, batch_size=16, samples_per_epoch=64))
    fit(ps, ps.where("train"), ps.where("val"), first, tmp_path, progress=False, log=lambda _: None)
    logs: list[str] = []
    second = TrainConfig(**base, schedule=Schedule(epochs=2, head_epochs=0, batch_size=16, samples_per_epoch=64))
    result = fit(ps, ps.where("train"), ps.where("val"), second, tmp_path, resume=True, progress=False, log=logs.append)
    assert any("resumed after epoch 1" in line for line in logs)
    assert [h["epoch"] for h in result.history] == [1, 2]
    # Seeded and exact: an uninterrupted run ends with the same weights, epoch by epoch.
    whole = fit(ps, ps.where("train"), ps.where("val"), second, tmp_path / "whole", progress=False, log=lambda _: None)
    fingerprints = [h["weights_sha256"] for h in result.history]
    assert [h["weights_sha256"] for h in whole.history] == fingerprints
    assert len(set(fingerprints)) == 2 and all(len(f) == 64 for f in fingerprints)
    last, _ = load_checkpoint(tmp_path / "whole" / "last.safetensors")
    assert weights_sha256(last) == fingerprints[-1]


def test_keep_last_runs_the_whole_schedule_and_keeps_its_last_epoch(synthetic_patch_set, tmp_path):
    from survey_cracks.config import Schedule, TilingConfig
    from survey_cracks.training.train import fit

    ps = synthetic_patch_set
    config = TrainConfig(
        sources=[DataSource(name="synthetic", kind="mask_folder", root=tmp_path)], init="scratch",
        tiling=TilingConfig(patch_size=64), workers=2, augment=False, precision="fp32",
        schedule=Schedule(epochs=3, head_epochs=0, batch_size=16, samples_per_epoch=64, patience=1, keep="last"),
    )
    result = fit(ps, ps.where("train"), ps.where("val"), config, tmp_path, progress=False, log=lambda _: None)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]  # patience 1 does not stop it
    assert result.best_epoch == 2  # zero-based: the last epoch
    assert weights_sha256(result.model) == result.history[-1]["weights_sha256"]


def test_missing_and_malformed_sources(tmp_path):
    missing = DataSource(name="gone", kind="mask_folder", root=tmp_path / "nope")
    with pytest.raises(DataSourceError, match="not found"):
        list_items(missing, 0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    from tests.conftest import write_geotiff

    write_geotiff(tmp_path / "images" / "a.png", np.zeros((8, 8, 3), np.uint8), driver="PNG")
    no_mask = DataSource(name="m", kind="mask_folder", root=tmp_path)
    with pytest.raises(DataSourceError, match="mask missing"):
        list_items(no_mask, 0)
    yolo = tmp_path / "y"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    write_geotiff(yolo / "images" / "t.png", np.zeros((8, 8, 3), np.uint8), driver="PNG")
    (yolo / "labels" / "t.txt").write_text("0 0.5\n")
    with pytest.raises(DataSourceError, match="malformed YOLO"):
        list_items(DataSource(name="y", kind="yolo_boxes", root=yolo), 0)


def test_config_rejects_unknown_keys(tmp_path):
    from survey_cracks.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("sources: []\nschedul: {}\n")
    with pytest.raises(ConfigError, match="schedul"):
        load_config(TrainConfig, path)


def test_shipped_training_config_reads_shared_sources(needs_shared):
    from pathlib import Path

    config = load_config(TrainConfig, Path(__file__).parents[2] / "configs" / "train.yaml")
    names = [s.name for s in config.sources]
    assert {"deepcrack", "crackforest", "brickwork", "quaywall"} <= set(names)
    quay = next(s for s in config.sources if s.name == "quaywall")
    items = list_items(quay, config.seed)
    # Site o6 (exclude_groups) is not among the items; without the exclusion it would be.
    import csv

    with open(quay.root / quay.group_csv, newline="") as fh:
        o6 = {row["stem"] for row in csv.DictReader(fh) if row[quay.group_column] == "o6"}
    assert items and o6
    assert not any(i.path.stem in o6 for i in items)
    unfiltered = list_items(quay.model_copy(update={"exclude_groups": []}), config.seed)
    assert any(i.path.stem in o6 for i in unfiltered)
    # Tiles of one photo never straddle splits.
    from collections import defaultdict

    splits = defaultdict(set)
    from survey_cracks.io.sources import group_of

    for item in items:
        splits[group_of(item.path.stem, quay)].add(item.split)
    assert all(len(s) == 1 for s in splits.values())


def test_evaluate_checkpoint_scores_held_out_splits_at_the_stored_threshold(
    tiny_model, synthetic_patch_set, monkeypatch, tmp_path
):
    from survey_cracks.config import Schedule, TilingConfig
    from survey_cracks.models.network import CrackClassifier
    from survey_cracks.training import train as train_module

    monkeypatch.setattr(train_module, "build_patch_set", lambda config, cache_dir=None, progress=True: synthetic_patch_set)
    config = TrainConfig(sources=[DataSource(name="synthetic", kind="mask_folder", root=tmp_path)],
                         tiling=TilingConfig(patch_size=64), schedule=Schedule(epochs=1), out_dir=tmp_path / "run")
    table = train_module.evaluate_checkpoint(config, tiny_model, progress=False)

    val = synthetic_patch_set.where("val")
    assert set(table) >= {"val/synthetic"} and table["val/synthetic"]["patches"] == len(val)
    classifier = CrackClassifier(tiny_model, device="cpu", precision="auto")  # the precision evaluate uses
    predicted = classifier.predict(synthetic_patch_set.patches[val], 128) >= classifier.meta.threshold
    truth = synthetic_patch_set.labels[val] == 1
    tp = int((predicted & truth).sum())
    row = table["val/synthetic"]
    assert (row["tp"], row["fp"], row["fn"]) == (tp, int((predicted & ~truth).sum()), int((~predicted & truth).sum()))
    assert row["f1"] == pytest.approx(2 * tp / (2 * tp + row["fp"] + row["fn"]), abs=1e-4)


def _survey_with_one_mask(folder, crack: bool):
    """A 192 x 256 image with a mask beside it: a vertical crack line, or an all-clean mask."""
    from tests.conftest import write_geotiff

    folder.mkdir(exist_ok=True)
    write_geotiff(folder / "scan.png", np.full((192, 256, 3), 128, np.uint8), driver="PNG")
    mask = np.zeros((192, 256, 1), np.uint8)
    if crack:
        mask[:, 126:130] = 255
    write_geotiff(folder / "scan.mask.png", mask, driver="PNG")


def test_patch_cache_is_rebuilt_when_an_annotation_changes(tmp_path):
    from survey_cracks.config import SplitFractions, TilingConfig
    from survey_cracks.training.data import _cache_key, build_patch_set

    survey = tmp_path / "survey"
    _survey_with_one_mask(survey, crack=True)
    config = TrainConfig(
        sources=[DataSource(name="s", kind="survey", root=survey, split=SplitFractions(val=0.0, test=0.0))],
        tiling=TilingConfig(patch_size=64), workers=1,
    )
    cache = tmp_path / "cache"
    first = build_patch_set(config, cache_dir=cache, progress=False)
    assert first.labels.sum() > 0
    key = _cache_key(config)
    assert _cache_key(config) == key  # nothing changed: the cache is reused
    assert build_patch_set(config, cache_dir=cache, progress=False).labels.tolist() == first.labels.tolist()

    _survey_with_one_mask(survey, crack=False)  # the annotation is corrected: no crack after all
    assert _cache_key(config) != key
    second = build_patch_set(config, cache_dir=cache, progress=False)
    assert len(second) > 0 and second.labels.sum() == 0
    assert len(list(cache.glob("patches-*.npz"))) == 2


def test_cache_key_covers_every_input_file_of_each_source_kind(tmp_path):
    import os

    from survey_cracks.training.data import _cache_key

    for sub in ("images", "masks", "labels", "crack", "no_crack"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "a.txt").write_text("x")
    (tmp_path / "sites.csv").write_text("stem,site\n")
    for kind, edited in (("mask_folder", "masks"), ("mask_folder", "images"), ("yolo_boxes", "labels"),
                         ("class_folders", "no_crack")):
        config = TrainConfig(sources=[DataSource(name="s", kind=kind, root=tmp_path)])
        key = _cache_key(config)
        target = tmp_path / edited / "a.txt"
        stat = target.stat()
        os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # same size, newer
        assert _cache_key(config) != key, (kind, edited)
    csv_source = DataSource(name="s", kind="yolo_boxes", root=tmp_path, group_csv="sites.csv")
    key = _cache_key(TrainConfig(sources=[csv_source]))
    (tmp_path / "sites.csv").write_text("stem,site\na,o6\n")
    assert _cache_key(TrainConfig(sources=[csv_source])) != key
