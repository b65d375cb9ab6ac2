"""Inference engines: ONNX Runtime gives PyTorch's scores; ``auto`` picks by what the hardware runs fast."""

import numpy as np
import pytest
import torch

from survey_cracks.models import hardware
from survey_cracks.models.engines import resolve_engine
from survey_cracks.models.network import CrackClassifier, ModelMeta, build_model, save_checkpoint
from survey_cracks.models.onnx_engine import OnnxCrackClassifier, cached_onnx
from tests.conftest import run_in_fresh_python


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_CRACKS_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model(), ModelMeta(patch_size=64, threshold=0.4))
    return path


def test_onnxruntime_scores_equal_pytorch_fp32(checkpoint):
    patches = np.random.default_rng(1).integers(0, 256, (70, 64, 64, 3), dtype=np.uint8)
    expected = CrackClassifier(checkpoint, device="cpu", precision="fp32").predict(patches, 32)
    onnx = OnnxCrackClassifier(checkpoint, threads=1)
    got = onnx.predict(patches, 32)
    assert got.shape == (70,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert onnx.meta.threshold == 0.4 and onnx.meta.patch_size == 64


def test_onnx_conversion_is_cached_per_model_file(checkpoint, tmp_path):
    first = cached_onnx(checkpoint)
    assert first.parent == tmp_path / "cache" / "onnx" and first.stat().st_size > 1_000_000
    assert first.name.endswith(".fp32.onnx") and first.with_name(first.name + ".json").is_file()  # the export's report beside it
    stamp = first.stat().st_mtime_ns
    assert cached_onnx(checkpoint) == first and first.stat().st_mtime_ns == stamp  # not converted again
    assert not list(first.parent.glob(".*partial"))  # no temp file left behind


def test_auto_engine_is_onnxruntime_only_for_fp32_on_cpu(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert resolve_engine("auto", "cpu", "auto") == "onnxruntime"
    assert resolve_engine("auto", "cpu", "bf16") == "torch"  # bf16 asked for: PyTorch runs it
    assert resolve_engine("auto", "cuda", "auto") == "torch"
    monkeypatch.setattr(hardware, "cuda_device_count", lambda: 1)
    assert resolve_engine("auto", "auto", "auto") == "torch"  # a GPU: PyTorch on CUDA
    monkeypatch.setattr(hardware, "cuda_device_count", lambda: 0)
    assert resolve_engine("auto", "auto", "auto") == "onnxruntime"
    assert resolve_engine("torch", "cpu", "fp32") == "torch"
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert resolve_engine("auto", "cpu", "auto") == "torch"
    assert resolve_engine("auto", "cpu", "fp32") == "onnxruntime"


def test_onnxruntime_worker_path_never_imports_torch(checkpoint, tmp_path):
    cached_onnx(checkpoint)  # converted here (that needs torch); a worker then needs numpy and onnxruntime only
    script = f"""
import sys
import numpy as np
from survey_cracks.models.checkpoint import file_sha256
from survey_cracks.models.engines import ModelSpec, compute_of, load_engine
path = {str(checkpoint)!r}
assert compute_of("cpu", "fp32", "auto") == "cpu fp32 onnxruntime"  # what run.json records, asked of each worker
classifier = load_engine(ModelSpec(path, file_sha256(path), device="cpu", precision="fp32"))
scores = classifier.predict(np.zeros((2, 64, 64, 3), dtype=np.uint8))
assert scores.shape == (2,), scores
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    assert run_in_fresh_python(script) == "ok"


def test_local_workers_leave_glibc_malloc_adaptive_ask_for_huge_pages_and_cap_the_gdal_cache(monkeypatch):
    """Dask's own pre-spawn environment (MALLOC_TRIM_THRESHOLD_=65536) costs the network a fifth of its speed."""
    import os

    from survey_cracks.config import InferenceConfig
    from survey_cracks.inference.cluster import dask_client

    # A variable already in the environment wins over Dask's pre-spawn settings, and a Dask nanny
    # writes its settings into this process's environment: another test's cluster leaves them.
    for key in ("MALLOC_TRIM_THRESHOLD_", "GDAL_CACHEMAX", "THP_MEM_ALLOC_ENABLE"):
        monkeypatch.delenv(key, raising=False)
    config = InferenceConfig(workers=1, torch_threads=1, gdal_cache_mb=48)
    with dask_client(config) as client:
        seen = next(iter(client.run(lambda: dict(os.environ)).values()))
    assert seen["GDAL_CACHEMAX"] == "48"
    assert "MALLOC_TRIM_THRESHOLD_" not in seen
    assert seen["THP_MEM_ALLOC_ENABLE"] == "1"  # PyTorch's large blocks on transparent huge pages


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (runs where one is)")
def test_cuda_fp16_gives_the_cpu_fp32_levels_within_one_level():
    """What `auto` runs on a GPU (fp16 autocast) against the model's own fp32 arithmetic on the CPU, on real
    validation images when ../shared is there: within one level on >= 99.9 % of the pixels, the rule for CPU engines."""
    from survey_cracks.edge.runtime import pad_to_stride
    from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256
    from survey_cracks.models.engine_choice import AGREEMENT, level_agreement
    from survey_cracks.models.engines import ModelSpec, load_engine
    from survey_cracks.models.verify import validation_images

    sha256 = file_sha256(SHIPPED_MODEL)
    gpu = load_engine(ModelSpec(str(SHIPPED_MODEL), sha256, device="auto"))
    cpu = load_engine(ModelSpec(str(SHIPPED_MODEL), sha256, device="cpu", precision="fp32", engine="torch"))
    assert gpu.compute == "cuda fp16 torch"
    got, wanted = [], []
    for image in validation_images(4)[0]:
        rgb = pad_to_stride(image.rgb, 128)
        got.append(gpu.segment(rgb)[0])
        wanted.append(cpu.segment(rgb)[0])
        assert got[-1].dtype == np.uint8 and got[-1].shape == wanted[-1].shape
    assert level_agreement(got, wanted) >= AGREEMENT
