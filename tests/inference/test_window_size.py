"""``window_px: auto``: the window grows with the memory budget, fits it, and leaves the heatmap as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest

from survey_cracks.config import InferenceConfig, RunConfig, load_config
from survey_cracks.errors import ConfigError
from survey_cracks.inference import window_size
from survey_cracks.inference.dispatch import model_spec, segment_window
from survey_cracks.inference.window_size import (
    DOCUMENTED_BYTES_PER_PX,
    GIB,
    WindowMemory,
    cap_to_raster,
    choose_window,
    resolve_window,
    window_memory,
    working_set_bytes,
)
from survey_cracks.io.raster import inspect_raster
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256, read_meta
from survey_cracks.models.engines import ModelSpec
from survey_cracks.synthetic import render_scene
from survey_cracks.tiling import context_windows
from tests.conftest import write_geotiff


def test_the_window_grows_with_the_budget_and_its_tasks_fit_it():
    margin, tasks = 128, 2
    cores = []
    for budget in (0.1, 0.25, 0.5, 0.8, 1.0, 2.0, 4.0, 16.0):
        choice = choose_window(DOCUMENTED_BYTES_PER_PX, budget, tasks, margin)
        assert choice.core_px % 32 == 0 and 128 <= choice.core_px <= 8192
        if choice.limited_by == "budget":
            # fits, and 32 px more would not
            assert tasks * working_set_bytes(DOCUMENTED_BYTES_PER_PX, choice.core_px, margin) <= budget * GIB
            assert tasks * working_set_bytes(DOCUMENTED_BYTES_PER_PX, choice.core_px + 32, margin) > budget * GIB
            assert choice.task_gib * tasks <= budget
        cores.append(choice.core_px)
    assert cores == sorted(cores) and len(set(cores)) > 4, cores
    # more tasks at once, or more bytes per pixel: a smaller window
    assert choose_window(DOCUMENTED_BYTES_PER_PX, 1.0, 4, margin).core_px < choose_window(DOCUMENTED_BYTES_PER_PX, 1.0, 2, margin).core_px
    assert choose_window(400.0, 1.0, 2, margin).core_px < choose_window(200.0, 1.0, 2, margin).core_px
    # the network's pixels per kept pixel fall as the window grows
    ratios = [choose_window(DOCUMENTED_BYTES_PER_PX, b, tasks, margin).network_px_per_core_px for b in (0.25, 1.0, 4.0)]
    assert ratios == sorted(ratios, reverse=True) and ratios[-1] > 1.0


def test_bounds_and_the_raster_cap():
    tiny = choose_window(DOCUMENTED_BYTES_PER_PX, 0.01, 2, 128)
    assert tiny.core_px == 128 and tiny.limited_by == "smallest window"
    huge = choose_window(DOCUMENTED_BYTES_PER_PX, 500.0, 1, 128)
    assert huge.core_px == 8192 and huge.limited_by == "largest window"
    capped = cap_to_raster(choose_window(DOCUMENTED_BYTES_PER_PX, 4.0, 2, 128), 700, 500)
    assert capped.core_px == 704 and capped.limited_by == "raster size"
    given = resolve_window(InferenceConfig(window_px=1024), ModelSpec("m", "0"), 128)
    assert cap_to_raster(given, 700, 500).core_px == 1024 and given.record()["how"] == "set"
    assert given.network_px_per_core_px == pytest.approx(1280**2 / 1024**2, abs=1e-3)


def test_window_px_is_auto_or_a_multiple_of_32_in_range(tmp_path):
    assert InferenceConfig(window_px="auto").window_px == "auto"
    for bad in (1000, 96, 8224, "big"):
        with pytest.raises(ConfigError):
            load_config(RunConfig, None, {"inference.window_px": bad})
    with pytest.raises(ConfigError):
        load_config(RunConfig, None, {"inference.memory_budget_gib": 0})


def test_the_working_set_is_measured_once_and_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("SURVEY_CRACKS_CACHE", str(tmp_path))
    monkeypatch.setenv("SURVEY_CRACKS_MEASURE_ENGINES", "1")
    monkeypatch.setattr(window_size.hardware, "cuda_device_count", lambda: 0)
    calls = []

    def fake(spec):
        calls.append(spec)
        return WindowMemory(123.0, "measured", ((100, 1000), (200, 13300)), "cpu fp32 torch")

    monkeypatch.setattr(window_size, "measure_in_fresh_process", fake)
    spec = ModelSpec("model.safetensors", "ab" * 32)
    assert window_memory(spec).bytes_per_px == 123.0 and window_memory(spec).source == "measured"
    assert len(calls) == 1  # the second answer came from the cache
    assert json.loads(window_size.memory_path(spec).read_text())["bytes_per_px"] == 123.0
    config = InferenceConfig(window_px="auto", memory_budget_gib=1.0, workers=1, threads_per_worker=2)
    choice = resolve_window(config, spec, 128)
    assert choice == choose_window(123.0, 1.0, 2, 128) and choice.record()["bytes_source"] == "measured"
    # another precision is another measurement
    window_memory(ModelSpec("model.safetensors", "ab" * 32, precision="fp32"))
    assert len(calls) == 2


def test_a_failed_measurement_falls_back_to_the_documented_figure(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("SURVEY_CRACKS_CACHE", str(tmp_path))
    monkeypatch.setenv("SURVEY_CRACKS_MEASURE_ENGINES", "1")
    monkeypatch.setattr(window_size.hardware, "cuda_device_count", lambda: 0)

    def broken(spec):
        raise ValueError("engine exploded")

    monkeypatch.setattr(window_size, "measure_in_fresh_process", broken)
    memory = window_memory(ModelSpec("model.safetensors", "cd" * 32))
    assert memory.source == "documented" and memory.bytes_per_px == DOCUMENTED_BYTES_PER_PX
    assert "engine exploded" in caplog.text


@pytest.mark.slow
def test_the_measurement_runs_the_engine_in_a_fresh_process():
    spec = model_spec(SHIPPED_MODEL, file_sha256(SHIPPED_MODEL), InferenceConfig(precision="fp32", engine="torch"))
    memory = window_size.measure_in_fresh_process(spec)
    pixels = [p for p, _ in memory.points]
    assert memory.source == "measured" and pixels == sorted(pixels) and len(pixels) == len(window_size.MEASURED_CORES)
    assert 20 < memory.bytes_per_px < 5000, memory  # activations of a ResNet18 + FPN: hundreds of bytes per pixel


def _levels(info, core: int, margin: int, spec) -> np.ndarray:
    levels = np.zeros((info.height, info.width), np.int16)
    for window in context_windows(info.width, info.height, core, margin):
        maps = segment_window(info, window, spec, keep_mask=True)
        c = maps.core
        levels[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] = maps.levels
    return levels


def test_the_auto_window_gives_the_heatmap_of_1024_px_windows(tmp_path):
    """Cores tile the raster with context past the model's margin: the window's size moves no level by more than
    one step, except on at most 0.1 % of the pixels (bf16 sums in another order)."""
    rgb, _ = render_scene(1400, 1500, seed=3)
    info = inspect_raster(write_geotiff(tmp_path / "ortho.tif", rgb))
    margin = max(32, read_meta(SHIPPED_MODEL).min_margin_px)
    config = InferenceConfig(window_px="auto", memory_budget_gib=0.35, workers=1, threads_per_worker=2)
    spec = model_spec(SHIPPED_MODEL, file_sha256(SHIPPED_MODEL), config)
    auto = resolve_window(config, spec, margin)
    assert auto.how == "auto" and auto.core_px not in (1024, 128) and auto.core_px % 32 == 0
    reference, ours = _levels(info, 1024, margin, spec), _levels(info, auto.core_px, margin, spec)
    within_one = np.mean(np.abs(reference - ours) <= 1)
    assert within_one >= 0.999, (auto.core_px, within_one, np.bincount(np.abs(reference - ours).ravel()))
