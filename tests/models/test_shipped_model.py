"""The packaged model: present, within size, loaded by default, and still good on real data."""

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.models.network import SHIPPED_MODEL, CrackClassifier, file_sha256, read_meta


def test_shipped_model_is_packaged_with_its_metadata():
    assert SHIPPED_MODEL.is_file() and SHIPPED_MODEL.stat().st_size <= 25 * 2**20
    meta = read_meta(SHIPPED_MODEL)
    assert meta.patch_size == 128 and 0 < meta.threshold < 1
    assert meta.heads == ("patch", "mask") and 0 < meta.mask_threshold < 1 and meta.min_margin_px >= 32
    assert meta.provenance["init"] == "shipped"  # the decoder was trained on the shipped classifier's trunk
    names = {s["name"] for s in meta.provenance["sources"]}
    assert {"deepcrack", "crackforest", "brickwork", "quaywall", "masonry"} <= names
    card = (SHIPPED_MODEL.parents[2] / "MODEL_CARD.md").read_text()
    assert file_sha256(SHIPPED_MODEL) in card


def test_the_shipped_model_trained_on_bridges_and_names_the_model_it_replaced():
    meta = read_meta(SHIPPED_MODEL)
    assert "uavcrack_bridges" in meta.trained_on and "deepcrack_test" not in meta.trained_on  # a test source is scored only
    before = SHIPPED_MODEL.with_name("crack_resnet18_mask_v1.safetensors")
    assert "uavcrack_bridges" not in read_meta(before).trained_on
    assert file_sha256(before)[:12] in meta.provenance["init_detail"]  # fine-tuned from it
    card = (SHIPPED_MODEL.parents[2] / "MODEL_CARD.md").read_text()
    assert f"kept in the repository as `survey_cracks/weights/{before.name}`" in card


def test_evaluating_on_a_config_that_holds_out_a_source_the_model_trained_on_says_so():
    from survey_cracks.config import MaskTrainConfig, load_config
    from survey_cracks.training.segment import trained_on_test_sources

    root = SHIPPED_MODEL.parents[2] / "configs"
    whole = load_config(MaskTrainConfig, root / "mask.yaml")  # uavcrack_bridges: role test, every tile
    by_map = load_config(MaskTrainConfig, root / "mask_bridges.yaml")  # split by map, as the model trained
    assert trained_on_test_sources(whole, read_meta(SHIPPED_MODEL)) == ["uavcrack_bridges"]
    assert trained_on_test_sources(by_map, read_meta(SHIPPED_MODEL)) == []
    assert trained_on_test_sources(whole, read_meta(SHIPPED_MODEL.with_name("crack_resnet18_mask_v1.safetensors"))) == []


def test_run_uses_the_shipped_model_without_model_flag(tmp_path):
    from pathlib import Path

    scan = Path(__file__).parents[2] / "sample_surveys" / "road_scans" / "scan_001.jpg"
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(scan), "--out", str(out), "--workers", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    run = json.loads((out / "run.json").read_text())
    assert run["model"]["sha256"] == file_sha256(SHIPPED_MODEL)
    assert run["mode"] == "mask" and run["model"]["threshold"] == pytest.approx(read_meta(SHIPPED_MODEL).mask_threshold)
    # A photo without a world file runs in the collection layout: its line in photos.csv carries its metrics.
    with open(out / "road_scans" / "collection" / "photos.csv", newline="") as table:
        (row,) = [r for r in csv.DictReader(table) if r["photo"] == "scan_001"]
    assert row["status"] == "ok" and float(row["cell_recall"]) >= 0


@pytest.mark.shared
def test_shipped_model_on_held_out_deepcrack_images(needs_shared):
    """Patch-level F1 on a slice of DeepCrack's official test split, cut by the training code's own rule."""
    from survey_cracks.config import DataSource, TrainConfig
    from survey_cracks.evaluation.metrics import scores_at
    from survey_cracks.io.sources import list_items
    from survey_cracks.training.data import _patches_of

    config = TrainConfig(sources=[DataSource(name="t", kind="mask_folder", root=needs_shared / "deepcrack" / "test",
                                             role="test")])
    items = list_items(config.sources[0], 0)[::12]
    patches, labels = zip(*(_patches_of(item, config.tiling, config.labels) for item in items))
    patches, labels = np.concatenate(patches), np.concatenate(labels)
    classifier = CrackClassifier(device="cpu")
    scores = classifier.predict(patches)
    f1 = scores_at(scores, labels, classifier.meta.threshold).f1
    assert len(labels) > 300 and f1 > 0.88


@pytest.mark.shared
def test_shipped_model_masks_on_held_out_deepcrack_images(needs_shared):
    """Pixel F1 at 2 px on a slice of DeepCrack's official test split, at the shipped mask threshold."""
    from survey_cracks.config import DataSource, MaskTrainConfig
    from survey_cracks.models.network import load_checkpoint
    from survey_cracks.training.segment import load_images, mask_metrics

    config = MaskTrainConfig(sources=[DataSource(name="t", kind="mask_folder", root=needs_shared / "deepcrack" / "test",
                                                 role="test")])
    images = load_images(config, progress=False)[::6]
    model, meta = load_checkpoint(SHIPPED_MODEL)
    figures = mask_metrics(model, meta, images, meta.mask_threshold)
    assert len(images) >= 35 and figures["pixel@2px"]["f1"] >= 0.80
    assert figures["centreline@2px"]["completeness"] >= 0.7
