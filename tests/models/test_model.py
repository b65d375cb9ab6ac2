import json

import numpy as np
import pytest
import torch

from survey_cracks.errors import ModelFileError
from survey_cracks.models import hardware
from survey_cracks.models.network import (
    IMAGENET_FILE,
    CrackClassifier,
    ModelMeta,
    autocast_dtype,
    build_model,
    find_imagenet_weights,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)


def test_checkpoint_round_trips_weights_and_metadata(tmp_path):
    model = build_model()
    meta = ModelMeta(patch_size=96, threshold=0.37, provenance={"init": "scratch", "epochs": 3})
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta.patch_size == 96 and loaded_meta.threshold == pytest.approx(0.37)
    assert loaded_meta.provenance == {"init": "scratch", "epochs": 3}
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert not list(tmp_path.glob("*.partial"))


def test_half_precision_checkpoint_is_smaller_and_close(tmp_path):
    model = build_model()
    full, half = tmp_path / "f.safetensors", tmp_path / "h.safetensors"
    save_checkpoint(full, model, ModelMeta())
    save_checkpoint(half, model, ModelMeta(), half=True)
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded, _ = load_checkpoint(half)
    weight = loaded.state_dict()["conv1.weight"]
    assert weight.dtype == torch.float32
    assert torch.allclose(weight, model.state_dict()["conv1.weight"], atol=1e-3)


@pytest.mark.parametrize(
    "content,match",
    [(b"", "not a valid model file"), (b"\x00" * 64, "not a valid model file")],
)
def test_corrupt_model_file(tmp_path, content, match):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match) as info:
        load_checkpoint(path)
    assert str(path) in info.value.message


def test_foreign_safetensors_and_missing_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="no survey_cracks metadata"):
        read_meta(path)
    with pytest.raises(ModelFileError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_pickle_file_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(build_model().state_dict(), path)
    with pytest.raises(ModelFileError):
        load_checkpoint(path)


def test_wrong_metadata_format(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"survey_cracks": json.dumps({"format": "other"})})
    with pytest.raises(ModelFileError, match="not a survey_cracks checkpoint"):
        read_meta(path)


def test_imagenet_file_is_hash_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert find_imagenet_weights() is None
    fake = tmp_path / "hub" / "checkpoints" / IMAGENET_FILE
    fake.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(1)}, fake)
    with pytest.raises(ModelFileError, match="sha256"):
        find_imagenet_weights()


def test_classifier_scores_are_probabilities(tmp_path):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model(), ModelMeta(patch_size=64))
    classifier = CrackClassifier(path, device="cpu", precision="fp32")
    scores = classifier.predict(np.random.default_rng(0).integers(0, 255, (5, 64, 64, 3), dtype=np.uint8))
    assert scores.shape == (5,) and ((scores >= 0) & (scores <= 1)).all()
    bf16 = CrackClassifier(path, device="cpu", precision="bf16")
    assert bf16.amp_dtype == torch.bfloat16


def test_auto_precision_uses_bf16_only_where_the_cpu_runs_it_natively(monkeypatch):
    # Emulated bf16 ran ResNet18 at 13.7 patches/s against ~110 in fp32 on an AVX2-only CPU.
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype(cpu, "auto") is None
    assert autocast_dtype(cpu, "bf16") == torch.bfloat16  # asked for explicitly
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype(cpu, "auto") == torch.bfloat16
    assert autocast_dtype(cpu, "fp32") is None
    assert autocast_dtype(cuda, "auto") == torch.float16 and autocast_dtype(cuda, "bf16") == torch.bfloat16


def test_batch_norms_folded_for_inference_give_the_same_maps():
    """The engine folds each BatchNorm into its convolution: trunk, blocks, shortcuts and mask head alike."""
    from survey_cracks.models.network import fold_batch_norms

    torch.manual_seed(0)
    model = build_model(decoder_channels=16)
    for module in model.modules():  # statistics far from the identity, so a missed fold shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.inference_mode():
        mask, dense = model.segment(x)
        folded = fold_batch_norms(model)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        mask_folded, dense_folded = folded.segment(x)
    assert torch.allclose(mask, mask_folded, atol=1e-4, rtol=1e-4)
    assert torch.allclose(dense, dense_folded, atol=1e-4, rtol=1e-4)
