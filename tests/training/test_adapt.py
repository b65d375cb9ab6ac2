"""Mask-level fine-tuning (`training.adapt`) on a tiny procedural survey, from the tiny mask model of conftest."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

from survey_cracks.cli.main import cli
from survey_cracks.models.network import load_checkpoint, normalise
from survey_cracks.synthetic import render_scene
from survey_cracks.training.segment import MaskImage, mask_loss, mask_metrics
from tests.conftest import write_geotiff

STEPS = {"decoder_steps": 4, "joint_steps": 12, "batch_size": 2, "crop_size": 128, "checkpoint_every": 8,
         "lr": 0.002, "patience": None, "scale_jitter": [1.0, 1.0]}


@pytest.fixture
def survey(tmp_path):
    """Three annotated rasters of one structure: 2 train, 1 held out (val-fraction 0.34)."""
    folder = tmp_path / "wall"
    folder.mkdir()
    for seed in range(3):
        rgb, mask = render_scene(160, 192, seed=300 + seed, surface="concrete", n_cracks=2)
        write_geotiff(folder / f"tile{seed}.tif", rgb)
        Image.fromarray(mask).save(folder / f"tile{seed}.mask.png")
    return folder


def _config(tmp_path, **schedule) -> str:
    path = tmp_path / "adapt.yaml"
    path.write_text(yaml.safe_dump({"schedule": {**STEPS, **schedule}, "workers": 2}))
    return str(path)


def _pixel_loss(checkpoint, images) -> float:
    model, meta = load_checkpoint(checkpoint)
    total = 0.0
    with torch.inference_mode():
        for image in images:
            batch = normalise(torch.from_numpy(np.ascontiguousarray(image.image)).permute(2, 0, 1)[None], meta)
            logits, _ = model.segment(batch)
            target = torch.from_numpy(image.target)[None, None].float()
            total += float(mask_loss(logits, target, torch.zeros_like(target), 1.0))
    return total / len(images)


def test_mask_finetune_lowers_pixel_loss_changes_the_decoder_and_reports_before_after(tiny_mask_model, survey, tmp_path):
    from survey_cracks.training.adapt import adapt_config
    from survey_cracks.training.segment import load_images

    out = tmp_path / "adapted.safetensors"
    result = CliRunner().invoke(cli, ["finetune", str(survey), "--out", str(out), "--model", str(tiny_mask_model),
                                      "--config", _config(tmp_path), "--val-fraction", "0.34", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "initialisation: all of" in result.output and "decoder included" in result.output
    base, _ = load_checkpoint(tiny_mask_model)
    tuned, meta = load_checkpoint(out)
    changed = {k for k, v in tuned.state_dict().items() if v.is_floating_point() and not torch.equal(v, base.state_dict()[k])}
    assert any(k.startswith(("fpn.", "mask_head.")) for k in changed) and any(k.startswith("layer4.") for k in changed)
    # BatchNorm statistics of the trunk stay as they were (small data).
    assert not any(k.endswith(("running_mean", "running_var")) and not k.startswith("mask_head") for k in changed)
    assert meta.has_mask and 0 < meta.mask_threshold < 1
    images = load_images(adapt_config([survey], out, tiny_mask_model, 0.34), progress=False)
    train = [im for im in images if im.split == "train"]
    assert len(train) == 2 and _pixel_loss(out, train) < _pixel_loss(tiny_mask_model, train)
    table = json.loads(out.with_name("adapted.before_after.json").read_text())
    assert len(table["rasters"]) == 1 and table["before"]["sha256"] != table["after"]["sha256"]
    for row in (table["before"], table["after"]):
        assert set(row["figures"]) >= {"pixel@2px", "pixel@5px", "centreline@5px", "cell_ap@64px"}
    assert "| before: `" in out.with_name("adapted.before_after.md").read_text()
    card = (tmp_path / "adapted_run" / "MODEL_CARD.md").read_text()
    assert f"adapted from {tiny_mask_model.name}" in card and "`wall`" in card and "Before / after" in card


def test_a_killed_mask_finetune_resumes_to_the_same_weights(tiny_mask_model, survey, tmp_path):
    from survey_cracks.training.adapt import finetune_mask

    config = _config(tmp_path)
    whole, _ = finetune_mask([survey], tmp_path / "a.safetensors", tiny_mask_model, config, val_fraction=0.34,
                             progress=False, log=lambda _: None)

    def killed_after_first_checkpoint(line: str) -> None:
        if line.startswith('{"step": 8'):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune_mask([survey], tmp_path / "b.safetensors", tiny_mask_model, config, val_fraction=0.34, progress=False,
                      log=killed_after_first_checkpoint)
    assert not (tmp_path / "b.safetensors").exists()
    logged: list[str] = []
    resumed, _ = finetune_mask([survey], tmp_path / "b.safetensors", tiny_mask_model, config, val_fraction=0.34,
                               resume=True, progress=False, log=logged.append)
    assert "resumed at step 8 of 16" in logged
    a, b = load_checkpoint(whole)[0].state_dict(), load_checkpoint(resumed)[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_not_crack_pixels_are_weighted_negatives_and_ignore_pixels_count_nowhere():
    logits = torch.zeros(1, 1, 4, 4)
    target = torch.zeros(1, 1, 4, 4)
    ignore = torch.zeros(1, 1, 4, 4)
    negative = torch.zeros(1, 1, 4, 4)
    negative[..., 0, :] = 1
    hot = logits.clone()
    hot[..., 0, 0] = 5.0  # a confident crack on a joint
    plain = hot.clone()
    plain[..., 0, 0], plain[..., 3, 3] = 0.0, 5.0  # the same mistake on ordinary background
    weighted = float(mask_loss(hot, target, ignore, 0.0, negative, 5.0))
    assert weighted > float(mask_loss(plain, target, ignore, 0.0, negative, 5.0)) * 1.5
    ignore[..., 0, 0] = 1  # the joint pixel ignored: its logit no longer matters
    assert float(mask_loss(hot, target, ignore, 1.0, negative, 5.0)) == pytest.approx(
        float(mask_loss(logits, target, ignore, 1.0, negative, 5.0)))


def test_ignored_pixels_leave_mask_metrics_unchanged(tiny_mask_model):
    model, meta = load_checkpoint(tiny_mask_model)
    rgb, mask = render_scene(128, 160, seed=7, surface="concrete", n_cracks=1)
    ignore = np.zeros(mask.shape, bool)
    ignore[:, :40] = True
    target = (mask > 0).astype(np.uint8)
    wrong = target.copy()
    wrong[:, :40] = 1 - wrong[:, :40]  # the annotation is nonsense where it is ignored
    scores = [mask_metrics(model, meta, [MaskImage("s", "a", "val", rgb, t, ignore, True)], 0.5, cell=32)
              for t in (target, wrong)]
    assert scores[0] == scores[1]
