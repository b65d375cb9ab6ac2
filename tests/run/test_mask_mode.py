"""The crack-mask network and its window path: one trunk pass per window, per-pixel output.

A small mask model is trained here (`tiny_mask_model`) on procedural cracks through the
product's own `fit_mask`, starting from the tiny patch classifier of conftest.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from click.testing import CliRunner
from PIL import Image
from rasterio.windows import Window

from survey_cracks.cli.main import cli
from survey_cracks.config import RunConfig
from survey_cracks.io.raster import inspect_raster, open_raster, read_context
from survey_cracks.models.checkpoint import read_meta
from survey_cracks.models.labels import dense_patch_labels
from survey_cracks.models.network import load_checkpoint, normalise
from survey_cracks.synthetic import render_scene
from survey_cracks.tiling import context_windows
from survey_cracks.training.segment import fit_mask, mask_loss
from survey_cracks.training.train import weights_sha256
from survey_cracks.vectors.heatmap import NODATA, SCALE, read_probability
from tests.conftest import mask_config as _mask_config
from tests.conftest import write_geotiff


def test_mask_checkpoint_says_what_it_has(tiny_mask_model, tiny_model):
    meta = read_meta(tiny_mask_model)
    assert meta.heads == ("patch", "mask") and meta.decoder_channels == 8
    assert 0 < meta.mask_threshold < 1 and meta.min_margin_px >= 32
    assert meta.provenance["init"] == "shipped" and "tiny.safetensors" in meta.provenance["init_detail"]
    # the patch classifier it started from is still a valid, patch-only checkpoint
    assert read_meta(tiny_model).heads == ("patch",)


def test_dense_head_is_the_patch_classifier_at_every_patch_position(tiny_mask_model):
    model, meta = load_checkpoint(tiny_mask_model)
    size = meta.patch_size
    rng = np.random.default_rng(0)
    patch = normalise(torch.from_numpy(rng.integers(0, 256, (2, 3, size, size), dtype=np.uint8)), meta)
    with torch.inference_mode():
        _, dense = model.segment(patch)
        np.testing.assert_allclose(dense[:, :, 0, 0].numpy(), model(patch).numpy(), atol=1e-5)
        # On a larger window each dense position is the head applied to the pooled trunk cells of that patch.
        window = normalise(torch.from_numpy(rng.integers(0, 256, (1, 3, 192, 256), dtype=np.uint8)), meta)
        deepest = model.trunk(window)[-1]
        _, dense = model.segment(window)
        cells = size // 32
        assert dense.shape[-2:] == (192 // 32 - cells + 1, 256 // 32 - cells + 1)
        for i in range(dense.shape[-2]):
            for j in range(dense.shape[-1]):
                pooled = deepest[:, :, i : i + cells, j : j + cells].mean(dim=(2, 3))
                np.testing.assert_allclose(dense[:, :, i, j].numpy(), model.fc(pooled).numpy(), atol=1e-4)


def test_old_patch_checkpoint_loads_into_the_network_unchanged(tiny_model):
    model, meta = load_checkpoint(tiny_model)
    assert meta.heads == ("patch",) and model.decoder_channels == 0
    mask, dense = model.segment(torch.zeros(1, 3, 128, 128))
    assert mask is None and dense.shape == (1, 2, 3, 3)


def test_context_windows_tile_the_raster_once_and_read_only_what_their_cores_need():
    windows = context_windows(700, 300, 256, 64)  # cores 256, 256, 188 wide and 256, 44 high
    cover = np.zeros((300, 700), np.int32)
    for w in windows:
        cover[int(w.core.row_off) : int(w.core.row_off + w.core.height), int(w.core.col_off) : int(w.core.col_off + w.core.width)] += 1
        expected_width = 192 + 128 if w.core.col_off == 512 else 256 + 128  # the last core, 188 px, rounded up to 32
        expected_height = 64 + 128 if w.core.row_off == 256 else 256 + 128
        assert (w.read.width, w.read.height) == (expected_width, expected_height)
        assert w.core.col_off % 32 == 0 and w.core.row_off % 32 == 0
        assert w.read.col_off == w.core.col_off - 64 and w.read.row_off == w.core.row_off - 64
    assert (cover == 1).all()
    small = context_windows(100, 70, 1024, 32)  # a small image: one window, rounded up to the trunk's stride
    assert len(small) == 1 and (small[0].read.width, small[0].read.height) == (128 + 64, 96 + 64)
    with pytest.raises(ValueError):
        context_windows(100, 100, 100, 32)


def test_read_context_mirrors_past_the_edge(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    path = write_geotiff(tmp_path / "r.tif", rgb)
    info = inspect_raster(path)
    with open_raster(path) as src:
        window_rgb, valid = read_context(src, info, Window(-8, -4, 70, 52))
    assert window_rgb.shape == (52, 70, 3) and valid.sum() == 40 * 50
    np.testing.assert_array_equal(window_rgb[4:44, 8:58], rgb)
    np.testing.assert_array_equal(window_rgb[3, 8:58], rgb[0])  # mirrored, not a flat fill
    np.testing.assert_array_equal(window_rgb[4:44, 7], rgb[:, 0])


def test_dense_patch_labels_follow_the_classifier_rule():
    target = torch.zeros(1, 1, 128, 128)
    ignore = torch.zeros(1, 1, 128, 128)
    assert dense_patch_labels(target, ignore, 128, 24).tolist() == [[[0]]]
    target[0, 0, 64, 40:80] = 1  # 40 crack pixels, 24 or more inside the central half
    assert dense_patch_labels(target, ignore, 128, 24).tolist() == [[[1]]]
    target[:] = 0
    target[0, 0, 2, 0:40] = 1  # a crack in the border only: ambiguous
    assert dense_patch_labels(target, ignore, 128, 24).tolist() == [[[-100]]]
    target[:] = 0
    ignore[0, 0, 10:20, 10:20] = 1  # unsupervised pixels: never a confident negative
    assert dense_patch_labels(target, ignore, 128, 24).tolist() == [[[-100]]]


def test_mask_loss_ignores_unsupervised_pixels():
    logits = torch.full((1, 1, 8, 8), 5.0)
    target = torch.zeros(1, 1, 8, 8)
    ignore = torch.ones(1, 1, 8, 8)
    assert float(mask_loss(logits, target, ignore, 1.0)) < 1e-6 + 1.0  # only Dice's constant part, no BCE
    ignore[:] = 0
    assert float(mask_loss(logits, target, ignore, 0.0)) > 4.0  # confident and wrong everywhere


def test_resumed_mask_training_gives_the_same_weights(tiny_model, mask_source, tmp_path):
    straight = fit_mask(_mask_config(mask_source, tmp_path / "a", tiny_model), progress=False, log=lambda _: None)

    class Killed(Exception):
        pass

    def kill_at_first_checkpoint(line: str) -> None:
        if line.startswith("{") and json.loads(line)["step"] == 10:
            raise Killed

    with pytest.raises(Killed):
        fit_mask(_mask_config(mask_source, tmp_path / "b", tiny_model), progress=False, log=kill_at_first_checkpoint)
    resumed_log: list[str] = []
    resumed = fit_mask(_mask_config(mask_source, tmp_path / "b", tiny_model), resume=True, progress=False,
                       log=resumed_log.append)
    assert any("resumed at step 10" in line for line in resumed_log)
    a, _ = load_checkpoint(straight.checkpoint)
    b, _ = load_checkpoint(resumed.checkpoint)
    assert weights_sha256(a) == weights_sha256(b)
    assert straight.metrics["sets"] == resumed.metrics["sets"]


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def test_constant_raster_gives_a_constant_heatmap_without_seams(tiny_mask_model, tmp_path):
    rgb = np.full((300, 520, 3), 140, np.uint8)
    (tmp_path / "survey").mkdir()
    write_geotiff(tmp_path / "survey" / "flat.tif", rgb)
    # Cores of 128 px: 12 windows, each core read with 160 px of context (a barely trained model's
    # edge effects reach further than a trained one's, whose margin is measured at training).
    code, output = _run("run", tmp_path / "survey", "--out", tmp_path / "out", "--model", tiny_mask_model,
                        "--window", 128, "--margin", 160, "--workers", 1, "--quiet")
    assert code == 0, output
    with rasterio.open(tmp_path / "out" / "survey" / "flat" / "heatmap.tif") as src:
        heat = read_probability(src)
    assert heat.shape == (300, 520) and (heat >= 0).all()
    assert float(heat.max() - heat.min()) <= SCALE + 1e-7, (heat.min(), heat.max())  # at most one stored level apart


def test_margin_below_what_the_model_needs_is_a_usage_error(tiny_mask_model, tmp_path):
    write_geotiff(tmp_path / "a.tif", np.full((64, 64, 3), 100, np.uint8))
    code, output = _run("run", tmp_path / "a.tif", "--out", tmp_path / "out", "--model", tiny_mask_model, "--margin", 0)
    assert code == 2 and "margin_px 0 is below" in output
    code, output = _run("run", tmp_path / "a.tif", "--out", tmp_path / "out", "--model", tiny_mask_model, "--margin", 40)
    assert code == 2 and "multiples of 32" in output


def test_patch_only_checkpoint_runs_in_patch_and_dense_mode_not_mask(tiny_model, tmp_path):
    rgb, _ = render_scene(160, 224, seed=5)
    (tmp_path / "s").mkdir()
    write_geotiff(tmp_path / "s" / "r.tif", rgb)
    for mode in ("auto", "dense"):
        code, output = _run("run", tmp_path / "s", "--out", tmp_path / mode, "--model", tiny_model, "--mode", mode, "--quiet")
        assert code == 0, output
        run = json.loads((tmp_path / mode / "run.json").read_text())
        assert run["mode"] == ("patch" if mode == "auto" else "dense")
        with rasterio.open(tmp_path / mode / "s" / "r" / "heatmap.tif") as src:
            heat = read_probability(src)
        assert heat.shape == (160, 224) and 0 <= heat.min() and heat.max() <= 1
    code, output = _run("run", tmp_path / "s", "--out", tmp_path / "mask", "--model", tiny_model, "--mode", "mask")
    assert code == 2 and "no mask decoder" in output


def test_run_config_has_the_window_settings():
    config = RunConfig()
    assert config.inference.mode == "auto" and config.inference.window_px % 32 == 0
    with pytest.raises(Exception):
        RunConfig.model_validate({"inference": {"window_px": 1000}})


def test_mask_mode_end_to_end_writes_pixel_outputs_centrelines_and_metrics(tiny_mask_model, tmp_path):
    import sqlite3

    import geopandas as gpd
    import pyogrio

    rgb, mask = render_scene(320, 400, seed=11, surface="concrete", n_cracks=2)
    survey = tmp_path / "deck"
    survey.mkdir()
    write_geotiff(survey / "ortho.tif", rgb, transform=rasterio.transform.from_origin(500000.0, 5700000.0, 0.002, 0.002))
    Image.fromarray(mask).save(survey / "ortho.mask.png")
    outputs = {}
    for window in (128, 256):
        out = tmp_path / f"out{window}"
        code, output = _run("run", survey, "--out", out, "--model", tiny_mask_model, "--window", window, "--quiet")
        assert code == 0, output
        outputs[window] = out / "deck" / "ortho"
    folder = outputs[128]
    for name in ("heatmap.tif", "cracks.gpkg", "cracks.geojson", "centrelines.geojson", "heatmap.qml", "cracks.qml",
                 "centrelines.qml", "report.json"):
        assert (folder / name).is_file(), name
    assert {name for name, _ in pyogrio.list_layers(folder / "cracks.gpkg")} >= {"cracks", "centrelines"}
    with sqlite3.connect(folder / "cracks.gpkg") as db:
        styled = dict(db.execute("SELECT f_table_name, useAsDefault FROM layer_styles").fetchall())
    assert styled == {"cracks": 1, "centrelines": 1}
    lines = gpd.read_file(folder / "cracks.gpkg", layer="centrelines")
    polygons = gpd.read_file(folder / "cracks.gpkg", layer="cracks")
    assert lines.crs.to_epsg() == 32631 and set(lines["unit"]) <= {"m"}
    assert {"length", "mean_width", "max_width", "crack_id"} <= set(lines.columns)
    assert {"length", "mean_width", "max_width"} <= set(polygons.columns)
    report = json.loads((folder / "report.json").read_text())
    assert report["counts"]["mode"] == "mask" and report["counts"]["centrelines"] == len(lines)
    assert {"pixel_0px", "pixel_2px", "pixel_5px", "centreline_2px", "object", "cell"} <= set(report["metrics"])
    with rasterio.open(folder / "heatmap.tif") as src:
        assert src.dtypes[0] == "uint8" and src.scales == (SCALE,) and src.crs.to_epsg() == 32631
        heat = read_probability(src)
    assert len(np.unique(np.round(heat, 3))) > 50  # per-pixel values, not a few patch plateaus
    # The windows are cut differently, the map is the same: no seams at window borders.
    with rasterio.open(outputs[256] / "heatmap.tif") as src:
        other = read_probability(src)
    assert np.quantile(np.abs(heat - other), 0.999) < 0.03
    run = json.loads((tmp_path / "out128" / "run.json").read_text())
    assert run["mode"] == "mask" and run["window"]["core_px"] == 128 and run["window"]["margin_px"] >= 32


def test_processing_scale_keeps_outputs_on_the_raster_grid(tiny_mask_model, tmp_path):
    rgb, _ = render_scene(150, 230, seed=4, surface="concrete", n_cracks=1)
    (tmp_path / "s").mkdir()
    transform = rasterio.transform.from_origin(500000.0, 5700000.0, 0.004, 0.004)
    write_geotiff(tmp_path / "s" / "r.tif", rgb, transform=transform)
    flat = tmp_path / "flat"
    flat.mkdir()
    write_geotiff(flat / "f.tif", np.full((150, 230, 3), 120, np.uint8), transform=transform)
    heat = {}
    for scale in ("1", "1.5", "2"):
        out = tmp_path / f"out{scale}"
        code, output = _run("run", tmp_path / "s", flat, "--out", out, "--model", tiny_mask_model, "--scale", scale,
                            "--window", 128, "--margin", 160, "--quiet")
        assert code == 0, output
        with rasterio.open(out / "s" / "r" / "heatmap.tif") as src:
            assert (src.width, src.height) == (230, 150) and src.transform == transform
            heat[scale] = read_probability(src)
        with rasterio.open(out / "flat" / "f" / "heatmap.tif") as src:
            constant = read_probability(src)
        assert float(constant.max() - constant.min()) <= SCALE + 1e-7, scale  # no seams at any scale
        report = json.loads((out / "s" / "r" / "report.json").read_text())
        assert report["counts"]["processing_scale"] == float(scale)
    assert (heat["2"] >= 0).all() and not np.array_equal(heat["1"], heat["2"])
    # From the GSD: 4 mm pixels processed at 2 mm -> scale 2.
    code, output = _run("run", tmp_path / "s", "--out", tmp_path / "gsd", "--model", tiny_mask_model,
                        "--target-gsd", "0.002", "--quiet")
    assert code == 0, output
    assert json.loads((tmp_path / "gsd" / "s" / "r" / "report.json").read_text())["counts"]["processing_scale"] == 2.0


def test_head_finetune_of_a_mask_model_fits_the_patch_head_and_keeps_trunk_and_decoder(tiny_mask_model, tmp_path):
    survey = tmp_path / "my_survey"
    survey.mkdir()
    for seed in range(3):
        rgb, mask = render_scene(160, 192, seed=200 + seed, surface="asphalt")
        Image.fromarray(rgb).save(survey / f"scan{seed}.png")
        Image.fromarray(mask).save(survey / f"scan{seed}.mask.png")
    out = tmp_path / "tuned.safetensors"
    code, output = _run("finetune", survey, "--out", out, "--model", tiny_mask_model, "--adapt", "head", "--epochs", 2,
                        "--quiet")
    assert code == 0, output
    assert "the patch head alone is fitted" in output
    base, base_meta = load_checkpoint(tiny_mask_model)
    tuned, meta = load_checkpoint(out)
    assert meta.heads == ("patch", "mask") and meta.mask_threshold == base_meta.mask_threshold
    assert meta.min_margin_px == base_meta.min_margin_px
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    for key, value in base_state.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(value.half(), tuned_state[key].half()), key  # trunk and decoder untouched (stored in fp16)
    assert not torch.equal(base_state["fc.weight"], tuned_state["fc.weight"])
    card = (tmp_path / "tuned_run" / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: tuned.safetensors, fine-tuned from")


def test_onnxruntime_window_graph_gives_pytorch_maps(tiny_mask_model):
    from survey_cracks.models.checkpoint import file_sha256
    from survey_cracks.models.engines import ModelSpec, load_engine

    window = render_scene(192, 256, seed=9)[0]
    maps = {}
    for engine in ("torch", "onnxruntime"):
        spec = ModelSpec(str(tiny_mask_model), file_sha256(tiny_mask_model), device="cpu", precision="fp32", engine=engine)
        maps[engine] = load_engine(spec).segment(window)
    (mask_t, dense_t), (mask_o, dense_o) = maps["torch"], maps["onnxruntime"]
    assert mask_t.shape == mask_o.shape == (192, 256) and dense_t.shape == dense_o.shape
    assert mask_t.dtype == mask_o.dtype == np.uint8  # heatmap levels, made inside the graph (ONNX: from its float map)
    assert np.abs(mask_o.astype(int) - mask_t.astype(int)).max() <= 1
    np.testing.assert_allclose(dense_o, dense_t, atol=1e-3)


def test_evaluation_reads_only_the_splits_it_scores(mask_source, tiny_model, tmp_path):
    from survey_cracks.training.segment import load_images

    config = _mask_config(mask_source, tmp_path, tiny_model)
    every = load_images(config, progress=False)
    val = load_images(config, progress=False, splits=("val",))
    assert {im.split for im in every} == {"train", "val"}
    assert {im.split for im in val} == {"val"} and [im.name for im in val] == [im.name for im in every if im.split == "val"]


def test_window_crossed_by_the_footprint_edge_runs_the_network_on_its_valid_part_only(tiny_mask_model, tmp_path, monkeypatch):
    """Beyond the margin nothing changes a valid pixel's score: the network sees the crop, and the
    levels it gives inside the footprint are those of the whole read (to the margin's tolerance)."""
    from survey_cracks.inference.dispatch import model_spec, segment_window
    from survey_cracks.models.checkpoint import file_sha256
    from survey_cracks.models.engines import load_engine

    rgb = render_scene(256, 1024, seed=5)[0]
    valid = np.zeros((256, 1024), bool)
    valid[:, :150] = True  # the footprint ends 150 px into a 512 px core
    rgb[~valid] = 0
    path = write_geotiff(tmp_path / "edge.tif", rgb, mask=valid)
    info = inspect_raster(path)
    margin = 160
    window = context_windows(info.width, info.height, 512, margin)[0]
    spec = model_spec(tiny_mask_model, file_sha256(tiny_mask_model), RunConfig().inference)
    engine = load_engine(spec)
    seen = []
    whole_segment = engine.segment
    monkeypatch.setattr(engine, "segment", lambda window_rgb: seen.append(window_rgb.shape) or whole_segment(window_rgb))
    trims = []
    monkeypatch.setattr("survey_cracks.inference.dispatch.trim_heap", lambda: trims.append(1))
    maps = segment_window(info, window, spec, keep_mask=True)
    read = (int(window.read.height), int(window.read.width))
    # valid core columns 0-149 are read columns 160-309; + 160 px of margin -> 470, on the 32 px lattice: 480
    assert seen == [(read[0], 480, 3)] and read[1] == 832
    assert trims == [1], "a pass of a shape of its own gives its heap back"
    with open_raster(path) as src:
        whole_rgb, whole_valid = read_context(src, info, window.read)
    whole_mask, _ = whole_segment(whole_rgb)
    core = (slice(margin, margin + int(window.core.height)), slice(margin, margin + int(window.core.width)))
    inside = whole_valid[core]
    assert maps is not None and (maps.levels[~inside] == NODATA).all()
    difference = np.abs(maps.levels[inside].astype(int) - whole_mask[core][inside].astype(int))
    assert difference.max() <= 2, np.bincount(difference.ravel())
