"""Edge exports (ONNX fp32/fp16/int8, TorchScript) checked on real images; the torch-free runtime; `stream`.

Exports are of the shipped model, made once per module at each precision and checked on
3 validation images of ../shared/data (the sample road scans when it is absent).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from survey_cracks.cli.main import cli
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256, read_meta
from survey_cracks.synthetic import render_scene
from survey_cracks.vectors.heatmap import probability_of
from tests.conftest import SHARED_DATA, run_in_fresh_python

VERIFY_IMAGES = 3


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Shipped-model exports by (format, precision), made on first use."""
    from survey_cracks.models.export import export_model

    folder, made = tmp_path_factory.mktemp("exports"), {}

    def get(fmt: str, precision: str):
        if (fmt, precision) not in made:
            out = folder / f"crack_{precision}.{'onnx' if fmt == 'onnx' else 'pt'}"
            made[fmt, precision] = export_model(None, out, fmt, precision, verify_images=VERIFY_IMAGES)
        return made[fmt, precision]

    return get


def _frames(count: int, height: int, width: int) -> list[np.ndarray]:
    return [cv2.cvtColor(render_scene(height, width, seed=i % 4)[0], cv2.COLOR_RGB2BGR) for i in range(count)]


def _video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


# ------------------------------------------------------------------------------------------ export


@pytest.mark.parametrize("fmt,precision", [("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("torchscript", "fp32")])
def test_export_keeps_pytorch_accuracy_on_real_images(exports, fmt, precision):
    result = exports(fmt, precision)
    check = result.check
    real = SHARED_DATA.is_dir()
    assert check.image_count == VERIFY_IMAGES
    assert ("validation images" in check.images) if real else ("sample road scans" in check.images), check.images
    # Real images with cracks: the F1s are meaningful, and the export keeps PyTorch's within a point.
    assert check.pixel_f1_pytorch > 0.5 and check.patch_f1_pytorch > 0.5
    assert check.f1_loss_points <= 1.0 and not check.f1_loss_over_limit and not result.f1_loss_over_limit
    assert 0 <= check.mean_abs_difference <= check.max_abs_difference
    if precision == "fp32":
        assert check.max_abs_difference < 1e-3 and check.pixel_label_agreement == 1.0 and check.patch_label_agreement == 1.0
    else:
        assert check.pixel_label_agreement > 0.99 and check.patch_label_agreement > 0.95
    report = json.loads(result.report.read_text())  # beside the file
    assert result.report == result.file.with_name(result.file.name + ".json") and report["check"]["pixel_f1_export"] == check.pixel_f1_export
    assert report["source_sha256"] == file_sha256(SHIPPED_MODEL) == result.source_sha256
    assert report["export"]["precision"] == precision and report["model"]["heads"] == ["patch", "mask"]
    assert not list(result.file.parent.glob(".*partial*"))  # published by rename, no temp left


def test_onnx_export_takes_uint8_with_dynamic_batch_and_sides_and_carries_its_metadata(exports):
    import onnx
    import onnxruntime as ort

    from survey_cracks.edge.runtime import EdgeModel

    result = exports("onnx", "int8")
    props = {p.key: p.value for p in onnx.load(str(result.file)).metadata_props}
    meta, facts = json.loads(props["survey_cracks"]), json.loads(props["survey_cracks.export"])
    shipped = read_meta(SHIPPED_MODEL)
    assert meta["heads"] == ["patch", "mask"] and meta["classes"] == ["no_crack", "crack"] and meta["patch_size"] == 128
    assert meta["threshold"] == shipped.threshold and meta["mask_threshold"] == shipped.mask_threshold and meta["provenance"]
    assert facts["source_sha256"] == file_sha256(SHIPPED_MODEL) and facts["precision"] == "int8"
    session = ort.InferenceSession(str(result.file), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    for shape in ((1, 128, 128, 3), (3, 160, 224, 3)):
        mask, patch = session.run(None, {"images": np.zeros(shape, np.uint8)})
        assert mask.shape == shape[:3] and patch.shape == (shape[0], shape[1] // 32 - 3, shape[2] // 32 - 3)
    model = EdgeModel(result.file, threads=1)
    assert model.meta.precision == "int8" and model.meta.map_threshold == shipped.mask_threshold
    assert model.patch_scores(np.zeros((5, 128, 128, 3), np.uint8)).shape == (5,)
    odd = render_scene(100, 150, seed=3)[0]  # not a multiple of 32: padded by reflection, cropped back
    assert model.crack_map(odd).shape == (100, 150)


def test_torchscript_export_runs_on_any_multiple_of_32(exports):
    import torch

    loaded = torch.jit.load(str(exports("torchscript", "fp32").file))
    mask, patch = loaded(torch.zeros(2, 192, 256, 3, dtype=torch.uint8))
    assert tuple(mask.shape) == (2, 192, 256) and tuple(patch.shape) == (2, 3, 5)


def test_export_cli_prints_the_check_and_refuses_bad_combinations(exports, tmp_path):
    out = tmp_path / "m.pt"
    result = CliRunner().invoke(cli, ["export", "--format", "torchscript", "--precision", "int8", "--out", str(out)])
    assert result.exit_code == 2 and "TorchScript exports fp32 only" in result.output and not out.exists()
    result = CliRunner().invoke(cli, ["export", "--out", str(tmp_path / "missing" / "m.onnx"), "--no-verify"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_export_without_shared_data_checks_on_the_sample_scans(tmp_path, monkeypatch):
    from survey_cracks.models import verify

    monkeypatch.setattr(verify, "MASK_CONFIG", tmp_path / "absent.yaml")
    images, origin = verify.validation_images(2)
    assert len(images) == 2 and "sample road scans" in origin
    assert images[0].rgb.dtype == np.uint8 and images[0].truth.dtype == bool and images[0].truth.any()
    monkeypatch.setattr(verify, "SAMPLE_SCANS", tmp_path / "absent")  # an installed package: procedural scenes
    images, origin = verify.validation_images(2)
    assert len(images) == 2 and "procedural road scans" in origin and images[1].truth.any()


def test_an_export_over_the_f1_limit_is_flagged(exports):
    from survey_cracks.edge.runtime import EdgeModel
    from survey_cracks.models.verify import check_export, validation_images

    model = EdgeModel(exports("onnx", "fp32").file)
    images, origin = validation_images(2)
    blind = lambda rgb: (np.zeros(rgb.shape[:2], np.float32), model.maps(rgb)[1])  # noqa: E731  (finds no crack pixel)
    check = check_export(blind, model.maps, read_meta(SHIPPED_MODEL), images, origin)
    assert check.pixel_f1_export == 0.0 and check.f1_loss_points > 1 and check.f1_loss_over_limit


# --------------------------------------------------------------------------------- without torch


def test_edge_runtime_never_imports_torch(exports, tmp_path):
    model = exports("onnx", "int8").file
    images = tmp_path / "photos"
    images.mkdir()
    for i, frame in enumerate(_frames(2, 120, 160)):
        cv2.imwrite(str(images / f"p{i}.jpg"), frame)
    script = f"""
import sys
from pathlib import Path
import numpy as np
import survey_cracks.edge as edge
from survey_cracks.edge.cli import cli
model = edge.EdgeModel({str(model)!r}, threads=1)
found = model.detect(np.full((96, 130, 3), 120, np.uint8))   # one image
assert found.probability.shape == (96, 130) and 0.0 <= found.crack_fraction <= 1.0
assert edge.run_images(model, [Path({str(images)!r})], Path({str(tmp_path / 'found')!r}), progress=False) == 2  # a folder
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    assert run_in_fresh_python(script) == "ok"
    lines = (tmp_path / "found" / "images.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == ["p0.jpg", "p1.jpg"]
    assert (tmp_path / "found" / "p0.overlay.png").is_file()


# ------------------------------------------------------------------------------------------ stream


def test_stream_writes_the_overlay_video_and_one_json_line_per_frame(exports, tmp_path):
    video = _video(tmp_path / "flight.mp4", _frames(10, 120, 160))
    out = tmp_path / "live"
    result = CliRunner().invoke(cli, ["stream", str(video), "--model", str(exports("onnx", "int8").file), "--out", str(out),
                                      "--no-realtime", "--threads", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(10))
    assert records[3]["time_s"] == pytest.approx(0.3) and all(r["dropped_before"] == 0 for r in records)
    assert all(0.0 <= r["crack_fraction"] <= 1.0 and r["latency_ms"] > 0 for r in records)
    boxes = [c["box"] for r in records for c in r["cracks"]]
    assert boxes and all(0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 120 for x0, y0, x1, y1 in boxes)  # procedural cracks found
    written = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    ok, first = written.read()
    written.release()
    assert ok and first.shape == (120, 160, 3)
    summary = json.loads((out / "stream.json").read_text())
    assert summary["frames_read"] == summary["frames_processed"] == 10 and summary["frames_dropped"] == 0
    assert summary["precision"] == "int8" and not list(out.glob(".*"))


def test_reader_keeps_only_the_newest_frame_and_counts_the_dropped():
    from survey_cracks.edge.stream import LatestFrameReader

    class Capture:
        def __init__(self) -> None:
            self.frames = [np.full((4, 4, 3), i, np.uint8) for i in range(20)]

        def read(self):
            return (True, self.frames.pop(0)) if self.frames else (False, None)

    reader = LatestFrameReader(Capture(), fps=10.0, live=False, pace=False)
    reader.start()
    reader.join(timeout=10)  # the model never asked: everything but the newest frame is dropped, not queued
    frame = reader.take()
    assert frame.index == 19 and int(frame.bgr[0, 0, 0]) == 19 and frame.time_s == pytest.approx(1.9)
    assert reader.dropped == 19 and reader.read == 20 and reader.take() is None


@pytest.mark.parametrize("source,expected", [
    ("missing.mp4", "missing.mp4: video file not found"),
    ("garbage.mp4", "garbage.mp4: cannot be opened as a video"),
    ("97", "camera 97: camera cannot be opened"),
])
def test_stream_on_a_bad_source_is_a_one_line_error_naming_it(exports, tmp_path, monkeypatch, source, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.mp4").write_bytes(b"not a video at all" * 100)
    result = CliRunner().invoke(cli, ["stream", source, "--model", str(exports("onnx", "int8").file), "--quiet"])
    assert result.exit_code == 2 and expected in result.output, result.output


def test_edge_model_refuses_a_wrong_model_file_with_the_fix(exports, tmp_path):
    import onnx

    from survey_cracks.edge.runtime import EdgeModel
    from survey_cracks.errors import ModelFileError

    with pytest.raises(ModelFileError, match="training checkpoint, not an export — export it first"):
        EdgeModel(SHIPPED_MODEL)
    (tmp_path / "junk.onnx").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match=r"junk.onnx: not a loadable ONNX model \(Protobuf parsing failed\) — make one with `survey-cracks export"):
        EdgeModel(tmp_path / "junk.onnx")
    bare = onnx.load(str(exports("onnx", "int8").file))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ModelFileError, match="bare.onnx: ONNX file has no survey_cracks metadata"):
        EdgeModel(tmp_path / "bare.onnx")
    result = CliRunner().invoke(cli, ["stream", "x.mp4", "--model", str(tmp_path / "nope.onnx")])
    assert result.exit_code == 2 and "nope.onnx: model file not found" in result.output


# ------------------------------------------------------------------------------ run --precision int8


def test_int8_engine_runs_the_cached_int8_export(exports, tmp_path, monkeypatch):
    from survey_cracks.errors import ConfigError
    from survey_cracks.models.engines import ModelSpec, compute_of, load_engine, resolve_engine

    monkeypatch.setenv("SURVEY_CRACKS_CACHE", str(tmp_path))
    sha256 = file_sha256(SHIPPED_MODEL)
    (tmp_path / "onnx").mkdir()
    made = exports("onnx", "int8")  # what cached_onnx would make on first use (tested for fp32 in test_engines)
    shutil.copy(made.file, tmp_path / "onnx" / f"{sha256}.int8.onnx")

    assert resolve_engine("auto", "auto", "int8") == "onnxruntime" and compute_of("cpu", "int8", "auto") == "cpu int8 onnxruntime"
    with pytest.raises(ConfigError, match="int8 runs on ONNX Runtime"):
        resolve_engine("torch", "cpu", "int8")
    window = render_scene(192, 256, seed=4)[0]
    maps = {}
    for precision, engine in (("fp32", "torch"), ("int8", "auto")):
        spec = ModelSpec(str(SHIPPED_MODEL), sha256, device="cpu", precision=precision, engine=engine)
        maps[precision] = load_engine(spec).segment(window)
    (mask32, dense32), (mask8, dense8) = ((probability_of(levels), dense) for levels, dense in (maps["fp32"], maps["int8"]))
    threshold = read_meta(SHIPPED_MODEL).mask_threshold
    assert mask8.shape == mask32.shape == (192, 256) and dense8.shape == dense32.shape
    assert np.mean((mask8 >= threshold) == (mask32 >= threshold)) > 0.99
    assert not list((tmp_path / "onnx").glob("*.fp32.onnx"))  # int8 asked for, int8 ran
