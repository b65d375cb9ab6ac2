"""Edge export and fine-tuning on a user's survey, with the small test checkpoint."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.models.network import load_checkpoint


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_export_of_a_patch_classifier_matches_pytorch(tiny_model, tmp_path, fmt, suffix):
    out = tmp_path / f"model{suffix}"
    result = CliRunner().invoke(cli, ["export", "--model", str(tiny_model), "--format", fmt, "--out", str(out),
                                      "--verify-images", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    check = report["check"]  # on real (or, without ../shared, the sample) images with crack masks, not noise
    assert out.is_file() and check["image_count"] == 2 and check["max_abs_difference"] < 1e-3
    assert check["pixel_f1_pytorch"] is None and check["patch_f1_export"] == check["patch_f1_pytorch"]  # no decoder
    assert check["mean_abs_difference"] <= check["max_abs_difference"] and check["patch_label_agreement"] == 1.0
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    assert sidecar["model"]["patch_size"] == 64 and sidecar["model"]["heads"] == ["patch"] and "threshold" in sidecar["model"]
    assert not list(tmp_path.glob(".*partial"))


def test_onnx_of_a_patch_classifier_runs_with_dynamic_batch(tiny_model, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    CliRunner().invoke(cli, ["export", "--model", str(tiny_model), "--out", str(out), "--no-verify"])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["patch_probability"]
    for n in (1, 5):
        probs = session.run(None, {"images": np.zeros((n, 64, 64, 3), np.uint8)})[0]
        assert probs.shape == (n, 1, 1) and ((probs >= 0) & (probs <= 1)).all()


def test_finetune_on_a_user_survey(tiny_model, tmp_path):
    """A survey folder of road scans with masks adapts the model; the checkpoint records its start."""
    import rasterio

    from survey_cracks.synthetic import render_scene

    survey = tmp_path / "my_survey"
    survey.mkdir()
    for seed in range(4):
        rgb, mask = render_scene(160, 192, seed=100 + seed, surface="asphalt")
        profile = {"driver": "PNG", "width": 192, "height": 160, "dtype": "uint8"}
        with rasterio.open(survey / f"scan{seed}.png", "w", count=3, **profile) as dst:
            dst.write(np.moveaxis(rgb, -1, 0))
        with rasterio.open(survey / f"scan{seed}.mask.png", "w", count=1, **profile) as dst:
            dst.write(mask, 1)
    out = tmp_path / "tuned.safetensors"
    result = CliRunner().invoke(cli, ["finetune", str(survey), "--out", str(out), "--model", str(tiny_model),
                                      "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "initialisation: survey_cracks model tiny.safetensors" in result.output
    model, meta = load_checkpoint(out)
    assert meta.provenance["init"] == "shipped" and meta.patch_size == 64
    assert meta.provenance["sources"][0]["name"] == "my_survey"
    metrics = json.loads((tmp_path / "tuned_run" / "metrics.json").read_text())
    assert metrics["sets"]["val/my_survey"]["patches"] > 0  # a held-out raster, not held-out patches
    card = (tmp_path / "tuned_run" / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: tuned.safetensors, fine-tuned from `tiny.safetensors` on survey `my_survey`")
    assert "shipped crack classifier" not in card and "`survey-cracks finetune " in card


def test_finetune_without_annotations_is_a_clear_error(tiny_model, tmp_path):
    empty = tmp_path / "survey"
    empty.mkdir()
    (empty / "a.png").write_bytes(b"")
    result = CliRunner().invoke(cli, ["finetune", str(empty), "--out", str(tmp_path / "m.safetensors"),
                                      "--model", str(tiny_model)])
    assert result.exit_code == 2 and "no annotated rasters" in result.output


def _write_scan(folder, name, seed, height=160, width=192, line_at=None):
    """A synthetic road scan and its mask; ``line_at``: also a dark crack down the whole image at that column."""
    import rasterio

    from survey_cracks.synthetic import render_scene

    rgb, mask = render_scene(height, width, seed=seed, surface="asphalt")
    if line_at is not None:
        rgb[:, line_at : line_at + 4] //= 3
        mask[:, line_at : line_at + 4] = 255
    profile = {"driver": "PNG", "width": width, "height": height, "dtype": "uint8"}
    with rasterio.open(folder / f"{name}.png", "w", count=3, **profile) as dst:
        dst.write(np.moveaxis(rgb, -1, 0))
    with rasterio.open(folder / f"{name}.mask.png", "w", count=1, **profile) as dst:
        dst.write(mask, 1)


def test_finetune_on_a_single_annotated_raster_holds_out_a_strip(tiny_model, tmp_path):
    """One raster: validation is a strip of it, and no training patch shares a pixel with it."""
    from survey_cracks.config import DataSource, SplitFractions
    from survey_cracks.io.raster import inspect_raster
    from survey_cracks.io.sources import list_items
    from survey_cracks.training.data import _part_grid

    survey = tmp_path / "one_scan"
    survey.mkdir()
    _write_scan(survey, "scan0", seed=100, height=320, width=256, line_at=126)
    out = tmp_path / "tuned.safetensors"
    result = CliRunner().invoke(cli, ["finetune", str(survey), "--out", str(out), "--model", str(tiny_model),
                                      "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "one annotated raster" in result.output
    metrics = json.loads((tmp_path / "tuned_run" / "metrics.json").read_text())
    assert metrics["sets"]["val/one_scan"]["patches"] > 0
    counts = metrics["patch_counts"]["one_scan"]
    assert min(counts["train"].values()) > 0 and min(counts["val"].values()) > 0  # both classes in both
    card = (tmp_path / "tuned_run" / "MODEL_CARD.md").read_text()
    assert "single annotated raster holds out the\nend strip" in card
    # Training and validation windows lie on either side of one cut: no pixel in common.
    source = DataSource(name="one_scan", kind="survey", root=survey, split=SplitFractions(val=0.2, test=0.0))
    items = {i.split: i for i in list_items(source, 0)}
    assert sorted(items) == ["train", "val"] and {i.path for i in items.values()} == {survey / "scan0.png"}
    rows = {}
    for split, item in items.items():
        grid, (row0, col0) = _part_grid(item, 256, 320, 64, 32)
        rows[split] = (row0 + grid.rows.min(), row0 + grid.rows.max() + 64)
        assert col0 == 0 and grid.width == 256
    assert rows["train"][0] == 0 and rows["val"][1] == 320 and rows["train"][1] <= rows["val"][0]
    assert inspect_raster(survey / "scan0.png").height == 320


def test_finetune_on_a_single_raster_too_small_to_split_is_a_clear_error(tiny_model, tmp_path):
    survey = tmp_path / "tiny_scan"
    survey.mkdir()
    _write_scan(survey, "scan0", seed=101, height=96, width=96)
    result = CliRunner().invoke(cli, ["finetune", str(survey), "--out", str(tmp_path / "m.safetensors"),
                                      "--model", str(tiny_model), "--epochs", "1", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "tiny_scan" in result.output and "second annotated raster" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------- model card


def _run_folder(tmp_path, provenance, sets):
    from survey_cracks.models.network import ModelMeta, build_model, save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    checkpoint = run / "tuned.safetensors"
    save_checkpoint(checkpoint, build_model(), ModelMeta(patch_size=128, threshold=0.42, provenance=provenance), half=True)
    history = [{"epoch": 1, "train_loss": 0.3, "val_f1": 0.8, "val_ap": 0.9, "seconds": 60.0, "weights_sha256": "ab" * 32}]
    (run / "metrics.json").write_text(json.dumps({"sets": sets, "history": history}))
    return run, checkpoint


ROW = {"images": 1, "patches": 40, "precision": 0.9, "recall": 0.8, "f1": 0.85, "ap": 0.9}
FINETUNE_PROVENANCE = {
    "init": "shipped", "init_detail": "survey_cracks model crack_resnet18.safetensors (sha256 0123456789ab)",
    "sources": [{"name": "o6_finetune", "kind": "survey", "root": "data/o6_finetune", "role": "split",
                 "patches": {"train": {"crack": 30, "no_crack": 60}, "val": {"crack": 10, "no_crack": 30}}}],
    "patch_size": 128, "stride": 64, "epochs_run": 4, "best_epoch": 2, "train_seconds": 600.0,
    "schedule": {"keep": "best_val_f1"}, "seed": 0, "precision": "fp32", "machine": "test cpu", "torch": "x",
}


def test_card_of_a_finetuned_model_says_what_it_is_and_only_its_own_sources(tmp_path):
    from survey_cracks.models.network import SHIPPED_MODEL, file_sha256
    from survey_cracks.training.card import model_card

    run, checkpoint = _run_folder(tmp_path, FINETUNE_PROVENANCE, {"val/o6_finetune": ROW})
    card = model_card(run, checkpoint, "survey-cracks finetune o6_finetune --out tuned.safetensors",
                      finetuned_from=SHIPPED_MODEL)
    title = card.splitlines()[0]
    assert title == "# Model card: tuned.safetensors, fine-tuned from `crack_resnet18.safetensors` on survey `o6_finetune`"
    assert f"`crack_resnet18.safetensors` (sha256 {file_sha256(SHIPPED_MODEL)[:12]}), the shipped crack model" in card
    assert "| o6_finetune | survey | `data/o6_finetune` | train | 30 | 60 |" in card
    assert "| val/o6_finetune | 1 | 40 | 0.9 | 0.8 | 0.85 | 0.9 |" in card
    assert "optimistic" in card  # no test set: the figures are the validation split's
    assert file_sha256(checkpoint) in card and "`tuned.safetensors`" in card
    # Nothing about data it was not trained on, and it is not "the shipped classifier" itself.
    for claim in ("DeepCrack", "CrackForest", "Brickwork", "quay-wall", "Quay-wall", "site o6",
                  "survey_cracks/weights/", "# Model card: survey_cracks shipped"):
        assert claim not in card, claim


def test_card_without_the_base_path_uses_the_provenance(tmp_path):
    from survey_cracks.training.card import model_card

    provenance = {**FINETUNE_PROVENANCE, "init_detail": "survey_cracks model base.safetensors (sha256 0123456789ab)"}
    run, checkpoint = _run_folder(tmp_path, provenance, {"val/o6_finetune": ROW})
    card = model_card(run, checkpoint, "survey-cracks train --config c.yaml")
    assert card.startswith("# Model card: tuned.safetensors, fine-tuned from survey_cracks model base.safetensors on")
    assert "shipped" not in card.split("## Data")[0].replace("It is not the shipped model", "")


def test_card_of_a_model_trained_from_scratch_is_unchanged(tmp_path):
    from survey_cracks.training.card import model_card

    provenance = {**FINETUNE_PROVENANCE, "init": "scratch", "init_detail": "random init (asked for)",
                  "sources": [{"name": "deepcrack", "kind": "mask_folder", "root": "d", "role": "split",
                               "patches": {"train": {"crack": 3, "no_crack": 4}}}]}
    run, checkpoint = _run_folder(tmp_path, provenance, {"test/deepcrack": ROW})
    card = model_card(run, checkpoint, "survey-cracks train --config configs/train.yaml --ship")
    assert card.startswith("# Model card: survey_cracks shipped crack classifier")
    assert "| deepcrack | DeepCrack (Liu et al. 2019): non-commercial research and education only | train | 3 | 4 |" in card


# ------------------------------------------------------------------------------------------ --help


def test_every_config_file_named_in_a_help_text_exists():
    import re
    from pathlib import Path

    import click

    repo = Path(__file__).resolve().parents[2]

    def commands(group, path):
        for name, command in group.commands.items():
            yield [*path, name], command
            if isinstance(command, click.Group):
                yield from commands(command, [*path, name])

    named = {}
    for path, _ in [([], cli), *commands(cli, [])]:
        result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=1000)
        assert result.exit_code == 0, (path, result.output)
        for match in re.findall(r"configs/[\w./-]+?\.ya?ml", result.output):
            named.setdefault(match, []).append(" ".join(path) or "survey-cracks")
    assert "configs/train.yaml" in named  # the scan finds what is there
    missing = {name: where for name, where in named.items() if not (repo / name).is_file()}
    assert not missing, f"--help names config files that do not exist: {missing}"


# --------------------------------------------------------------------------------- export parity


def test_export_that_disagrees_with_pytorch_is_not_published(tiny_model, tmp_path, monkeypatch):
    from survey_cracks.errors import OutputError
    from survey_cracks.models import export

    real = export.check_export

    def against_shifted_reference(exported, reference, meta, images, origin):
        shifted = lambda rgb: tuple(None if m is None else m + 0.01 for m in reference(rgb))  # noqa: E731
        return real(exported, shifted, meta, images, origin)

    monkeypatch.setattr(export, "check_export", against_shifted_reference)
    out = tmp_path / "m.pt"
    with pytest.raises(OutputError, match="m.pt: export disagrees with PyTorch"):
        export.export_model(tiny_model, out, "torchscript", verify_images=1)
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
