"""``engine: auto`` by measurement: every installed engine's levels against the reference, the cached choice and
its invalidation, the fallback of an engine that cannot run."""

import importlib.util
import logging
import sys

import numpy as np
import pytest

from survey_cracks.models import engine_choice, hardware
from survey_cracks.models.checkpoint import SHIPPED_MODEL, file_sha256
from survey_cracks.models.engine_choice import (
    AGREEMENT, CANDIDATES, NOT_FOR_AUTO, EngineChoice, Trial, choose_engine, level_agreement, measure,
)
from survey_cracks.models.engines import ModelSpec, load_engine
from survey_cracks.models.verify import validation_images
from survey_cracks.edge.runtime import pad_to_stride


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_CRACKS_CACHE", str(tmp_path))
    return tmp_path


def _installed(engine: str) -> bool:
    return importlib.util.find_spec(engine) is not None


@pytest.mark.slow
@pytest.mark.parametrize("engine,precision", [c for c in CANDIDATES if c[0] != "torch"])
def test_each_installed_engine_gives_the_reference_levels_within_one_level(engine, precision, cache):
    """On validation images (real ones with ../shared): levels within one step of the reference's (eager PyTorch
    at the same precision; fp32 for int8) on >= 99.9 % of the pixels."""
    module = {"inductor": "torch._inductor"}.get(engine, engine)
    if not _installed(module):
        pytest.skip(f"{engine} is not installed")
    sha256 = file_sha256(SHIPPED_MODEL)
    reference_engine, reference_precision = engine_choice.reference(precision)
    reference = load_engine(ModelSpec(str(SHIPPED_MODEL), sha256, device="cpu", precision=reference_precision,
                                      engine=reference_engine))
    tried = load_engine(ModelSpec(str(SHIPPED_MODEL), sha256, device="cpu", precision=precision, engine=engine))
    assert tried.compute == f"cpu {precision} {engine}"
    wanted, got = [], []
    for image in validation_images(3)[0]:
        rgb = pad_to_stride(image.rgb, 128)
        wanted.append(reference.segment(rgb)[0])
        got.append(tried.segment(rgb)[0])
        assert got[-1].dtype == np.uint8 and got[-1].shape == wanted[-1].shape and got[-1].max() <= 250
    agreement = level_agreement(got, wanted)
    if (engine, precision) == ("openvino", "bf16"):
        # Its own bf16 kernels round differently: 99.913 % with the mask model shipped before bridges, 99.885 %
        # with today's (AMD EPYC, 2026-12-07). Auto never runs it, and on request it stays within a level on all
        # but ~0.12 % of the pixels.
        assert (engine, precision) in NOT_FOR_AUTO and agreement >= 0.998
    elif precision == "int8":
        # Calibrated static int8 is a quantisation, not a runtime: 98.37 % of 12 validation images' pixels within a
        # level of fp32 (AMD EPYC, 2026-12-07), so `auto` measures it and refuses it (test below: the rule).
        assert reference_precision == "fp32" and agreement >= 0.97
    else:
        assert agreement >= AGREEMENT


class _Fake:
    """An engine whose levels are the reference's plus ``offset`` on a share of the pixels, taking ``seconds``."""

    def __init__(self, seconds: float, offset: int = 0, share: float = 0.0) -> None:
        self.seconds, self.offset, self.share = seconds, offset, share

    def segment(self, window):
        import time

        time.sleep(self.seconds)
        levels = (window[..., 0] // 2).astype(np.uint8)
        moved = np.random.default_rng(0).random(levels.shape) < self.share
        return np.where(moved, np.clip(levels.astype(int) + self.offset, 0, 250), levels).astype(np.uint8), None


def test_the_fastest_engine_that_agrees_is_chosen_and_an_absent_one_is_listed(cache):
    """Each candidate is checked against eager torch at its precision: fast but moving levels is refused."""
    fakes = {("torch", "fp32"): _Fake(0.02), ("torch", "bf16"): _Fake(0.015),
             ("inductor", "bf16"): _Fake(0.001, offset=3, share=0.01),  # the fastest, moves levels: refused
             ("onnxruntime", "fp32"): _Fake(0.01, offset=1, share=0.5),  # within one level: agrees
             ("openvino", "fp32"): None, ("openvino", "bf16"): _Fake(0.005, offset=2, share=0.002)}

    def build(engine, precision):
        fake = fakes[(engine, precision)]
        if fake is None:
            raise ImportError("No module named 'openvino'")
        return fake

    choice = measure({"k": 1}, build, measure_s=0.05, window_px=256)
    trials = {(t.engine, t.precision): t for t in choice.trials}
    assert set(trials) == set(CANDIDATES)
    assert (choice.engine, choice.precision) == ("onnxruntime", "fp32")
    assert trials[("torch", "fp32")].agreement == trials[("torch", "bf16")].agreement == 1.0  # the references
    assert trials[("onnxruntime", "fp32")].agreement == 1.0
    assert trials[("inductor", "bf16")].agreement < AGREEMENT and trials[("openvino", "bf16")].agreement < AGREEMENT
    assert not trials[("openvino", "fp32")].available and "openvino" in trials[("openvino", "fp32")].note
    assert trials[("inductor", "bf16")].ms_per_window < trials[("onnxruntime", "fp32")].ms_per_window  # faster, refused


def test_start_up_counts_spread_over_a_worker_s_windows():
    """A faster engine that takes long to start (compilation) loses to one that starts at once."""
    from survey_cracks.models.engine_choice import AMORTISED_WINDOWS

    compiled = Trial("inductor", "bf16", True, 600.0, 2.4, 1.0, start_s=24.0)
    ready = Trial("openvino", "bf16", True, 610.0, 2.4, 1.0, start_s=0.1)
    assert compiled.cost_ms == 600.0 + 24000 / AMORTISED_WINDOWS > ready.cost_ms
    choice_table_text = engine_choice.choice_table(EngineChoice("openvino", "bf16", {}, [compiled, ready]))
    assert "| openvino | bf16 | yes | 610 |" in choice_table_text and "**yes**" in choice_table_text.splitlines()[-1]


def test_the_cached_choice_is_measured_again_when_the_model_the_cpu_or_the_libraries_change(cache, monkeypatch):
    measured = []

    def fake_measure(key, build, measure_s, window_px, mask_threshold=0.5):
        measured.append(key)
        return EngineChoice("onnxruntime", "fp32", key, [Trial("onnxruntime", "fp32", True, 10.0, 1.0, 1.0)])

    monkeypatch.setattr(engine_choice, "measure", fake_measure)
    choose = lambda sha="a" * 64: choose_engine(SHIPPED_MODEL, sha, 1, build=None)  # noqa: E731
    assert choose().engine == "onnxruntime" and len(measured) == 1
    assert choose().engine == "onnxruntime" and len(measured) == 1  # cached: not measured again
    assert len(list((cache / "engine_choice").glob("*.json"))) == 1

    choose("b" * 64)  # another model
    assert len(measured) == 2
    monkeypatch.setattr(hardware, "cpu_name", lambda: "Another CPU")
    choose()
    assert len(measured) == 3
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2"})
    choose()
    assert len(measured) == 4
    versions = engine_choice.library_versions()
    monkeypatch.setattr(engine_choice, "library_versions", lambda: {**versions, "openvino": "9999.0"})
    choose()
    assert len(measured) == 5
    assert [m["cpu"] for m in measured[-3:]] == ["Another CPU"] * 3
    choose()
    assert len(measured) == 5  # the last key is cached in turn


def test_an_engine_that_cannot_run_falls_back_to_torch_with_one_log_line(cache, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed: importing it raises ImportError
    monkeypatch.setattr("survey_cracks.models.engines._ENGINES", {})  # no engine of another test's
    spec = ModelSpec(str(SHIPPED_MODEL), file_sha256(SHIPPED_MODEL), device="cpu", precision="fp32", engine="openvino")
    with caplog.at_level(logging.WARNING, logger="survey_cracks.engines"):
        engine = load_engine(spec)
    assert engine.compute == "cpu fp32 torch"
    lines = [r.getMessage() for r in caplog.records if r.name == "survey_cracks.engines"]
    assert len(lines) == 1 and "openvino" in lines[0] and "falling back to torch" in lines[0]
    assert not list(cache.glob("onnx/*.onnx"))  # it failed before making an export for it


def test_info_engines_prints_the_cached_table(cache, monkeypatch):
    from click.testing import CliRunner

    from survey_cracks.cli.main import cli

    def fake_measure(key, build, measure_s, window_px, mask_threshold=0.5):
        return EngineChoice("openvino", "fp32", key, [Trial("torch", "fp32", True, 700.0, 2.1, 1.0, 0.5),
                                                      Trial("openvino", "fp32", True, 400.0, 3.7, 0.9999, 3.0),
                                                      Trial("openvino", "bf16", False, note="ImportError: absent")])

    monkeypatch.setattr(engine_choice, "measure", fake_measure)
    result = CliRunner().invoke(cli, ["info", "--engines"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| openvino")]
    assert rows[0].split("|")[4].strip() == "400" and "**yes**" in rows[0] and "no: ImportError" in rows[1]
    assert "auto runs: openvino fp32" in result.output


def test_auto_loads_the_measured_choice_and_says_it(cache, monkeypatch):
    """What the workers load and report for run.json (`compute`) is the measured choice, not the heuristic's."""
    monkeypatch.setenv("SURVEY_CRACKS_MEASURE_ENGINES", "1")
    monkeypatch.setattr("survey_cracks.models.engines._ENGINES", {})
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)  # the heuristic alone would say cpu bf16 torch
    monkeypatch.setattr(engine_choice, "measure", lambda key, build, measure_s, window_px, mask_threshold: EngineChoice(
        "torch", "fp32", key, [Trial("torch", "fp32", True, 500.0, 3.0, 1.0)]))
    from survey_cracks.inference.dispatch import warm

    spec = ModelSpec(str(SHIPPED_MODEL), file_sha256(SHIPPED_MODEL), device="cpu")
    assert warm(spec) == "cpu fp32 torch"
    monkeypatch.setenv("SURVEY_CRACKS_MEASURE_ENGINES", "0")
    monkeypatch.setattr("survey_cracks.models.engines._ENGINES", {})
    assert warm(spec) == "cpu bf16 torch"


def test_openvino_is_measured_and_listed_but_not_chosen_by_auto(cache):
    """The fastest window on one thread, agreeing, yet slower in a run's concurrent task slots: listed, not chosen."""
    from survey_cracks.models.engine_choice import NOT_FOR_AUTO

    fakes = {("torch", "fp32"): _Fake(0.02), ("torch", "bf16"): _Fake(0.01), ("inductor", "bf16"): None,
             ("onnxruntime", "fp32"): _Fake(0.015), ("openvino", "fp32"): _Fake(0.012), ("openvino", "bf16"): _Fake(0.001)}

    def build(engine, precision):
        if fakes[(engine, precision)] is None:
            raise ImportError("not here")
        return fakes[(engine, precision)]

    choice = measure({"k": 2}, build, measure_s=0.05, window_px=256)
    trials = {(t.engine, t.precision): t for t in choice.trials}
    assert trials[("openvino", "bf16")].agrees and ("openvino", "bf16") in NOT_FOR_AUTO
    assert trials[("openvino", "bf16")].ms_per_window < trials[("torch", "bf16")].ms_per_window
    assert (choice.engine, choice.precision) == ("torch", "bf16")
    openvino_row = next(line for line in engine_choice.choice_table(choice).splitlines() if line.startswith("| openvino | bf16"))
    assert "not by auto" in openvino_row


def test_an_engine_whose_levels_agree_but_whose_pixel_f1_moves_is_refused(cache, monkeypatch):
    """Equal outputs are both: levels within one step on >= 99.9 % of the pixels and pixel F1 within 0.002. An
    int8 engine that drops 40 px of a 216 px crack moves 0.06 % of the pixels, and F1 by ~0.1: refused."""
    import time

    from survey_cracks.models import verify
    from survey_cracks.models.engine_choice import F1_CHANGE

    truth = np.zeros((256, 256), dtype=bool)
    truth[128, 20:236] = True
    monkeypatch.setattr(verify, "validation_images",
                        lambda count=None: ([verify.LabelledImage("line", np.zeros((256, 256, 3), np.uint8), truth)], "a line"))

    class Line:
        def __init__(self, seconds: float, erased: int) -> None:
            self.seconds, self.erased = seconds, erased

        def segment(self, window):
            time.sleep(self.seconds)
            levels = np.zeros(window.shape[:2], dtype=np.uint8)
            if levels.shape == truth.shape:
                levels[truth] = 250
                levels[128, 20 : 20 + self.erased] = 0
            return levels, None

    fakes = {("torch", "fp32"): Line(0.02, 0), ("torch", "bf16"): Line(0.015, 0), ("onnxruntime", "int8"): Line(0.001, 40)}

    def build(engine, precision):
        if (engine, precision) not in fakes:
            raise ImportError(f"no {engine}")
        return fakes[(engine, precision)]

    choice = measure({"k": 3}, build, measure_s=0.05, window_px=256, mask_threshold=0.5)
    trials = {(t.engine, t.precision): t for t in choice.trials}
    int8 = trials[("onnxruntime", "int8")]
    assert int8.agreement >= AGREEMENT and int8.f1_change < -F1_CHANGE and not int8.agrees
    assert trials[("torch", "fp32")].pixel_f1 == 1.0 and trials[("torch", "bf16")].f1_change == 0.0
    assert (choice.engine, choice.precision) == ("torch", "bf16")
    row = next(line for line in engine_choice.choice_table(choice).splitlines() if line.startswith("| onnxruntime | int8"))
    assert "pixel F1 moved" in row
