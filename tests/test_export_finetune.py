"""Edge export and fine-tuning on a user's survey, with the small test checkpoint."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.model import load_checkpoint


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_export_matches_pytorch(tiny_model, tmp_path, fmt, suffix):
    out = tmp_path / f"model{suffix}"
    result = CliRunner().invoke(cli, ["export", "--model", str(tiny_model), "--format", fmt, "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert out.is_file() and report["max_abs_difference_vs_pytorch"] < 1e-3
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["patch_size"] == 64 and "threshold" in sidecar
    assert not list(tmp_path.glob(".*partial"))


def test_onnx_runs_with_dynamic_batch(tiny_model, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "m.onnx"
    CliRunner().invoke(cli, ["export", "--model", str(tiny_model), "--out", str(out)])
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        probs = session.run(None, {"patches": np.zeros((n, 3, 64, 64), np.float32)})[0]
        assert probs.shape == (n,) and ((probs >= 0) & (probs <= 1)).all()


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


def test_finetune_without_annotations_is_a_clear_error(tiny_model, tmp_path):
    empty = tmp_path / "survey"
    empty.mkdir()
    (empty / "a.png").write_bytes(b"")
    result = CliRunner().invoke(cli, ["finetune", str(empty), "--out", str(tmp_path / "m.safetensors"),
                                      "--model", str(tiny_model)])
    assert result.exit_code == 2 and "no annotated rasters" in result.output
