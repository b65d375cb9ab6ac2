"""Leave-one-source-out of the mask model: the held-out source never reaches a training batch, and the table says so."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.config import DataSource, MaskSchedule, MaskTrainConfig
from survey_cracks.errors import ConfigError
from survey_cracks.training import loso_mask, segment
from survey_cracks.training.card import model_card
from survey_cracks.training.loso_mask import calibration_subset, default_holdouts, leave_one_source_out_mask, related_sources
from survey_cracks.training.loso_mask_table import loso_mask_markdown
from survey_cracks.training.segment import load_images
from tests.conftest import mask_folder

STEPS = {"decoder_steps": 3, "joint_steps": 2, "batch_size": 2, "crop_size": 64, "checkpoint_every": 100}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loso_sources")
    mask_folder(root / "roads", 6)
    mask_folder(root / "roads_test", 3)
    mask_folder(root / "walls", 8)
    return root


def _config(root: Path, out: Path, init: Path) -> MaskTrainConfig:
    return MaskTrainConfig(
        sources=[DataSource(name="roads", kind="mask_folder", root=root / "roads", split={"val": 0.3, "test": 0.0}),
                 DataSource(name="roads_test", kind="mask_folder", root=root / "roads_test", role="test"),
                 DataSource(name="walls", kind="mask_folder", root=root / "walls", split={"val": 0.25, "test": 0.25})],
        init="shipped", init_path=init, decoder_channels=8, schedule=MaskSchedule(**STEPS), workers=1, out_dir=out,
    )


@pytest.fixture(scope="module")
def loso_run(sources, tiny_model, tmp_path_factory):
    """One LOSO run (roads with roads_test, then walls, then the reference) with every training crop's source recorded."""
    out = tmp_path_factory.mktemp("loso_out")
    config = _config(sources, out, tiny_model)
    seen: dict[str, set[str]] = defaultdict(set)
    current: list[str] = []
    real_fit, real_crop = loso_mask.fit_mask, segment.sample_crop

    def fit(config, **kwargs):
        current.append(Path(config.out_dir).name)
        return real_fit(config, **kwargs)

    def crop(image, *args, **kwargs):
        seen[current[-1]].add(image.source)
        return real_crop(image, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loso_mask, "fit_mask", fit)
        patch.setattr(segment, "sample_crop", crop)
        result = leave_one_source_out_mask(config, ["roads", "walls"], decoder_steps=4, joint_steps=2, progress=False,
                                           log=lambda _: None, command="survey-cracks train-mask --loso")
    return config, result, seen, current


def test_held_out_sources_never_reach_a_training_batch(loso_run):
    config, result, seen, runs = loso_run
    assert runs == ["all_sources", "without_roads", "without_walls"]
    assert seen["without_roads"] == {"walls"}  # roads_test goes out with roads
    assert seen["without_walls"] == {"roads"}
    assert seen["all_sources"] == {"roads", "walls"}
    roads, walls = result.rows
    assert roads.sources_held_out == ["roads", "roads_test"] and roads.trained_on == ["walls"]
    assert walls.trained_on == ["roads"] and walls.trunk_saw == []
    images = load_images(config, progress=False)
    # every labelled image of the held-out source is scored, not only its test split
    assert roads.all_images["images"] == 9 and roads.test_split["images"] == 3
    assert walls.all_images["images"] == sum(im.source == "walls" for im in images) == 8
    assert walls.test_split["images"] == sum(im.source == "walls" and im.split == "test" for im in images) > 0
    for row in result.rows:
        assert set(row.all_images) >= {"pixel@0px", "pixel@2px", "pixel@5px", "centreline@2px"}
    assert result.schedule["decoder_steps"] == 4 and result.schedule["joint_steps"] == 2


def test_json_has_the_rows_and_reference_and_a_resumed_run_trains_nothing(loso_run, monkeypatch):
    config, _, _, _ = loso_run
    written = json.loads((Path(config.out_dir) / "loso_mask.json").read_text())
    assert [r["held_out"] for r in written["rows"]] == ["roads", "walls"]
    assert set(written["reference"]["sets"]) == {"roads", "walls"}
    assert written["reference"]["sets"]["roads"]["images"] == 3  # roads_test: the test split
    assert "trunk" in written["notes"][0]

    def no_training(*args, **kwargs):
        raise AssertionError("a source already done was trained again")

    monkeypatch.setattr(loso_mask, "fit_mask", no_training)
    again = leave_one_source_out_mask(config, ["roads", "walls"], decoder_steps=4, joint_steps=2, progress=False,
                                      log=lambda _: None)
    assert again.to_json()["rows"] == written["rows"]
    table = loso_mask_markdown(written)
    assert "| roads + roads_test | 9 |" in table and "| walls | 8 |" in table
    assert "survey-cracks train-mask --loso" in table


def test_calibration_subset_takes_at_most_n_per_source_spread_over_the_names(sources, tiny_model, tmp_path):
    config = _config(sources, tmp_path, tiny_model)
    images = load_images(config, progress=False)
    subset = calibration_subset(images, 2)
    assert {im.source for im in subset} == {im.source for im in images}
    assert all(sum(im.source == s for im in subset) == min(2, sum(im.source == s for im in images)) for s in {"roads", "walls"})
    assert calibration_subset(images, None) == images


def test_holdouts_default_to_mask_sources_with_test_images(sources, tiny_model, tmp_path):
    config = _config(sources, tmp_path, tiny_model)
    assert default_holdouts(config, load_images(config, progress=False)) == ["roads", "walls"]
    assert related_sources(config, "roads") == ["roads", "roads_test"]
    with pytest.raises(ConfigError, match="not in the config"):
        related_sources(config, "bridges")


def test_a_mask_model_start_is_refused(sources, tiny_mask_model, tmp_path):
    with pytest.raises(ConfigError, match="mask model"):
        leave_one_source_out_mask(_config(sources, tmp_path, tiny_mask_model), ["walls"], progress=False, log=lambda _: None)


def test_the_mask_card_shows_the_loso_table(loso_run, tiny_mask_model, tmp_path):
    config, _, _, _ = loso_run
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_mask_model.parent, run_dir)
    card = model_card(run_dir, run_dir / tiny_mask_model.name, "survey-cracks train-mask --config c.yaml")
    assert "Leave one source out" not in card
    shutil.copy(Path(config.out_dir) / "loso_mask.json", run_dir / "loso_mask.json")
    card = model_card(run_dir, run_dir / tiny_mask_model.name, "survey-cracks train-mask --config c.yaml")
    assert "## Leave one source out" in card and "| roads + roads_test | 9 |" in card


def test_cli_loso_writes_json_and_table(sources, tiny_model, tmp_path):
    config = _config(sources, tmp_path / "out", tiny_model).model_dump(mode="json")
    (tmp_path / "mask.yaml").write_text(json.dumps(config))
    args = ["train-mask", "--config", str(tmp_path / "mask.yaml"), "--loso", "--holdout", "walls", "--loso-val", "2", "--quiet"]
    bad = CliRunner().invoke(cli, [*args, "--loso-steps", "3"])
    assert bad.exit_code == 2 and "DECODER,JOINT" in bad.output
    result = CliRunner().invoke(cli, [*args, "--loso-steps", "2,1"])
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out" / "loso_mask.json").read_text())
    assert [r["held_out"] for r in written["rows"]] == ["walls"]
    assert written["command"].endswith("--loso --loso-steps 2,1 --holdout walls --loso-val 2")
    assert written["val_per_source"] == 2
    assert (tmp_path / "out" / "loso_mask.md").read_text().startswith("| held out |")
