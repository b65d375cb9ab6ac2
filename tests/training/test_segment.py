"""evaluate-mask's figures by group (map or photo) of a source."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.config import MaskTrainConfig
from survey_cracks.errors import ConfigError
from survey_cracks.training.segment import evaluate_mask_checkpoint
from tests.io.test_sources import bridges_source, fake_bridges


def test_figures_by_group_add_up_to_the_source(tmp_path):
    fake_bridges(tmp_path / "bridges")
    config = MaskTrainConfig(sources=[bridges_source(tmp_path / "bridges")], workers=1)
    figures = evaluate_mask_checkpoint(config, progress=False, by_group=("uavcrack_bridges",))
    overall = figures["sets"]["test/uavcrack_bridges"]
    groups = figures["groups"]["test/uavcrack_bridges"]
    assert set(groups) == {"ckjx0sami000h3968gna85a4n", "ckrgo06f07nvs0y7ramr8h7pi", "20160222_081011", "IMG_0412"}
    assert overall["images"] == 6 == sum(g["images"] for g in groups.values())  # duplicates dropped
    for key in ("predicted_px", "annotated_px"):
        assert sum(g["pixel@0px"][key] for g in groups.values()) == overall["pixel@0px"][key]
    assert overall["pixel@0px"]["annotated_px"] == 6 * 2 * 28
    with pytest.raises(ConfigError, match="not in the config"):
        evaluate_mask_checkpoint(config, progress=False, by_group=("nope",))


def test_cli_by_group_writes_groups(tmp_path):
    fake_bridges(tmp_path / "bridges")
    (tmp_path / "mask.yaml").write_text(json.dumps({"workers": 1, "sources": [
        {**bridges_source(tmp_path / "bridges").model_dump(mode="json"), "root": "bridges"}]}))
    out = tmp_path / "figures.json"
    result = CliRunner().invoke(cli, ["evaluate-mask", "--config", str(tmp_path / "mask.yaml"), "--by-group",
                                      "uavcrack_bridges", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["groups"]["test/uavcrack_bridges"]) == 4
