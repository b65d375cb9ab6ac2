"""The QGIS plugin's plain-Python side (qgis_plugin/survey_cracks_qgis/runner.py), without QGIS.

Finding the product, the command lines it builds (parsed by the product's own click commands),
the checks before a run (worded as the product words them), progress from the product's output,
running and cancelling the subprocess, and the layers listed from an output folder.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import stat
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from survey_cracks.cli.main import cli
from survey_cracks.errors import RasterError
from survey_cracks.io.raster import inspect_raster
from tests.conftest import write_geotiff

PLUGIN_ROOT = Path(__file__).resolve().parents[2] / "qgis_plugin"
sys.path.insert(0, str(PLUGIN_ROOT))

from survey_cracks_qgis import runner
from survey_cracks_qgis.runner import (
    CANCELLED,
    DetectParameters,
    LineSplitter,
    Progress,
    RasterFacts,
    check_output,
    check_raster,
    find_runtime,
)

PLUGIN = PLUGIN_ROOT / "survey_cracks_qgis"


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


# ---------------------------------------------------------------------------------------------- finding the product

def test_a_configured_virtualenv_folder_or_executable_is_used(tmp_path):
    product = _executable(tmp_path / "venv" / "bin" / "survey-cracks")
    edge = _executable(tmp_path / "venv" / "bin" / "survey-cracks-edge")
    for configured in (tmp_path / "venv", tmp_path / "venv" / "bin", product):
        found = find_runtime(str(configured), which=lambda name: None)
        assert (found.product, found.edge, found.source) == (str(product), str(edge), "settings")
        assert found.require_product() == str(product)
        assert "Using the full product" in found.describe() and "configured path" in found.describe()


def test_without_a_setting_survey_cracks_is_found_on_path():
    found = find_runtime("", which={"survey-cracks": "/opt/sc/bin/survey-cracks"}.get)
    assert (found.product, found.source) == ("/opt/sc/bin/survey-cracks", "PATH")
    assert "(from PATH)" in found.describe()


def test_nothing_installed_gives_one_message_with_the_fix():
    found = find_runtime("", which=lambda name: None)
    with pytest.raises(runner.ProductMissing) as missing:
        found.require_product()
    assert str(missing.value) == found.describe() == runner.NOT_INSTALLED
    assert "python3 -m venv" in runner.NOT_INSTALLED and "Settings" in runner.NOT_INSTALLED


def test_the_edge_runtime_alone_cannot_detect_and_says_so(tmp_path):
    found = find_runtime("", which={"survey-cracks-edge": "/usr/bin/survey-cracks-edge"}.get)
    assert found.product is None and found.edge == "/usr/bin/survey-cracks-edge"
    assert "Found only /usr/bin/survey-cracks-edge" in found.describe()
    with pytest.raises(runner.ProductMissing, match="needs the full product"):
        found.require_product()


def test_a_configured_path_without_the_product_is_reported_not_replaced_by_path(tmp_path):
    found = find_runtime(str(tmp_path), which={"survey-cracks": "/elsewhere/survey-cracks"}.get)
    assert found.product is None
    with pytest.raises(runner.ProductMissing, match=f"the configured path {tmp_path} holds no survey-cracks"):
        found.require_product()


def test_the_product_runs_without_qgis_python_and_gdal_variables():
    env = runner.product_env({"PATH": "/bin", "PYTHONPATH": "/usr/share/qgis/python", "PYTHONHOME": "C:/OSGeo4W",
                              "GDAL_DATA": "/qgis/gdal", "PROJ_LIB": "/qgis/proj", "HOME": "/root"})
    assert env == {"PATH": "/bin", "HOME": "/root", "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8",
                   "SURVEY_CRACKS_PROGRESS": "bars"}  # bars through the pipe: the dialog's percentage comes from them


# ---------------------------------------------------------------------------------------------- command lines

def _parse(command: list[str]) -> dict:
    """The product's own click command parses the plugin's command line: the options it got, by name."""
    name, args = command[1], command[2:]
    with cli.commands[name].make_context(name, list(args)) as context:
        return context.params


def test_detect_passes_only_what_differs_from_the_products_defaults():
    command = runner.detect_command("/v/bin/survey-cracks", DetectParameters(inputs=["/d/a.tif"], out="/o"))
    assert command == ["/v/bin/survey-cracks", "run", "/d/a.tif", "--out", "/o"]
    params = _parse(command)
    assert params["inputs"] == ("/d/a.tif",) and str(params["out"]) == "/o"
    assert params["threshold"] is params["scale"] is params["mode"] is params["model_path"] is None


def test_detect_with_every_option_is_what_the_cli_accepts():
    chosen = DetectParameters(inputs=["/d/a.tif", "/d/survey"], out="/o", model="/m/mine.safetensors", threshold=0.35,
                              scale=2.0, mode="mask")
    command = runner.detect_command("survey-cracks", chosen)
    assert command == ["survey-cracks", "run", "/d/a.tif", "/d/survey", "--out", "/o", "--model", "/m/mine.safetensors",
                       "--threshold", "0.35", "--scale", "2", "--mode", "mask"]
    params = _parse(command)
    assert (params["threshold"], params["scale"], params["mode"], str(params["model_path"])) == (0.35, 2.0, "mask",
                                                                                               "/m/mine.safetensors")


def test_evaluate_and_compare_are_the_cli_commands(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    rules = tmp_path / "rules.yaml"
    rules.write_text("{}\n")
    assert runner.evaluate_command("sc", str(new)) == ["sc", "evaluate", str(new)]
    command = runner.evaluate_command("sc", str(new), 0.2, str(tmp_path / "assets.gpkg"), str(rules))
    assert command == ["sc", "evaluate", str(new), "--threshold", "0.2", "--assets", str(tmp_path / "assets.gpkg"),
                       "--rules", str(rules)]
    assert _parse(command)["threshold"] == 0.2
    command = runner.compare_command("sc", str(old), str(new), None, str(rules))
    assert command == ["sc", "compare", str(old), str(new), "--rules", str(rules)]
    params = _parse(command)
    assert (params["old_out"], params["new_out"], params["rules_path"]) == (old, new, rules)


# ---------------------------------------------------------------------------------------------- checks before a run

@pytest.mark.parametrize(("bands", "dtype"), [(5, "uint8"), (3, "float32"), (2, "uint8")])
def test_raster_checks_say_what_the_product_says(tmp_path, bands, dtype):
    path = write_geotiff(tmp_path / "bad.tif", np.zeros((8, 8, bands), dtype=dtype))
    with pytest.raises(RasterError) as product:
        inspect_raster(path)
    errors, _ = check_raster(RasterFacts("bad", str(path), bands, dtype, "EPSG:32631"))
    expected = product.value.message.replace(" (it is undefined)", "")  # QGIS does not name band 2's interpretation
    assert errors[0] == expected


def test_good_rasters_pass_and_a_missing_crs_is_a_warning(tmp_path):
    path = write_geotiff(tmp_path / "ok.tif", np.zeros((8, 8, 3), dtype="uint8"))
    assert check_raster(RasterFacts("ok", str(path), 3, "uint8", "EPSG:32631")) == ([], [])
    assert check_raster(RasterFacts("ok", str(path), 4, "uint16", "EPSG:27700")) == ([], [])
    assert check_raster(RasterFacts("ok", str(path), 2, "uint8", "EPSG:27700", alpha_bands=(2,))) == ([], [])
    errors, warnings = check_raster(RasterFacts("ok", str(path), 1, "uint8", ""))
    assert errors == []
    assert warnings == [f"{path}: no CRS: processed in pixel coordinates, so its layers will not line up with georeferenced ones"]


def test_a_layer_that_is_not_a_file_or_is_gone_is_refused(tmp_path):
    errors, _ = check_raster(RasterFacts("wms", "", 3, "uint8", "EPSG:3857"))
    assert errors[0].startswith("wms: not a raster file")
    errors, _ = check_raster(RasterFacts("gone", str(tmp_path / "gone.tif"), 3, "uint8", "EPSG:3857"))
    assert errors == [f"{tmp_path / 'gone.tif'}: file not found — check the path"]


def test_output_folder_checks(tmp_path):
    assert check_output(str(tmp_path / "new")) is None
    assert check_output(str(tmp_path)) is None
    assert check_output("") == "no output folder given — choose one"
    missing = tmp_path / "no" / "out"
    assert check_output(str(missing)) == (f"{missing}: parent folder {missing.parent} does not exist — "
                                          "create it, or choose another output folder")
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in check_output(str(tmp_path / "file"))
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        assert check_output(str(locked / "out")) == f"{locked}: not writable — check its permissions, or choose another output folder"


# ---------------------------------------------------------------------------------------------- progress

# What `survey-cracks run` printed for two rasters, one up to date (bars as tqdm draws them, \r-separated).
TRANSCRIPT = (
    "model crack_resnet18.safetensors (sha256 fb65974ac408, heads patch+mask, shipped init); mode mask, threshold 0.100\n"
    "3 rasters: 2 to compute, 1 up to date or unreadable\n"
    "road_scans/scan_001: up to date\n"
    "dask: 1 workers at tcp://127.0.0.1:44831; dashboard http://127.0.0.1:38755/status\n"
    "[1/2] bridge_deck/bridge_deck_ortho (new)\n"
    "\rsegmenting bridge_deck_ortho.tif:   0%|          | 0/6 [00:00<?, ?window/s]"
    "\rsegmenting bridge_deck_ortho.tif:  50%|#####     | 3/6 [00:02<00:02,  1.4window/s]"
    "\rsegmenting bridge_deck_ortho.tif: 100%|##########| 6/6 [00:04<00:00,  1.4window/s]\x1b[A\r          \r"
    "bridge_deck/bridge_deck_ortho: done in 6.7 s\n"
    "model on cpu bf16 torch\n"
    "[2/2] quay_wall/quay_wall_ortho (changed: model)\n"
    "\rsegmenting quay_wall_ortho.tif:  44%|####      | 4/9 [00:03<00:04,  1.2window/s]\r"
    "quay_wall/quay_wall_ortho: done in 7.5 s\n"
    "finished: 2 computed, 1 up to date, 0 failed; OUT holds 3 rasters\n"
    "2 of 3 rasters done (2 computed, 1 up to date, 0 failed); outputs in out/\n"
)


def _feed(chunks: list[bytes]) -> tuple[list[str], list[float], Progress]:
    splitter, progress, lines, percents = LineSplitter(), Progress(), [], []
    for chunk in chunks:
        for text in splitter.feed(chunk):
            lines.append(text)
            if (percent := progress.line(text)) is not None:
                percents.append(percent)
    lines += splitter.close()
    return lines, percents, progress


def test_progress_rises_through_each_rasters_share_and_ends_at_100():
    lines, percents, progress = _feed([TRANSCRIPT.encode()])
    assert percents == [23.8, 47.5, 68.4, 95.0, 100.0]  # 95 % over the two rasters, 5 % for the reports
    assert percents == sorted(percents)
    assert progress.rasters == [("road_scans", "scan_001"), ("bridge_deck", "bridge_deck_ortho"), ("quay_wall", "quay_wall_ortho")]
    assert progress.errors == []
    shown = [line for line in lines if not runner.is_bar(line)]
    assert shown[0].startswith("model crack_resnet18") and "[1/2] bridge_deck/bridge_deck_ortho (new)" in shown
    assert not any("%|" in line or "\x1b" in line for line in shown)


def test_lines_survive_any_chunking_even_inside_a_utf8_character():
    data = TRANSCRIPT.replace("done in 6.7 s", "done in 6.7 s — ü").encode()
    whole, percents, progress = _feed([data])
    for size in (1, 2, 7):
        lines, again, other = _feed([data[i:i + size] for i in range(0, len(data), size)])
        assert (lines, again, other.rasters) == (whole, percents, progress.rasters)
    assert "bridge_deck/bridge_deck_ortho: done in 6.7 s — ü" in whole


def test_failures_and_usage_errors_are_collected():
    progress = Progress()
    progress.line("1 raster: 1 to compute, 0 up to date or unreadable")  # the count in the singular is read too
    assert progress.todo == 1
    for line in ("1 raster: 1 to compute, 0 up to date or unreadable", "[1/1] s/broken (new)",
                 "FAILED /d/s/broken.tif: unsupported band layout (5 bands) — give an RGB, RGBA or single-band raster",
                 "error: out: parent folder / does not exist — create it, or choose another --out"):
        progress.line(line)
    assert progress.rasters == [] and len(progress.errors) == 2 and progress.errors[0].startswith("FAILED /d/s/broken.tif")


# ---------------------------------------------------------------------------------------------- running and cancelling

def test_run_product_streams_every_line_and_returns_the_exit_code():
    script = "import sys; print('[1/1] s/r (new)'); sys.stderr.write('bar:  50%|#\\r'); print('s/r: done in 1 s'); sys.exit(1)"
    lines: list[str] = []
    code = runner.run_product([sys.executable, "-c", script], lines.append, lambda: False)
    assert code == 1
    assert "[1/1] s/r (new)" in lines and "s/r: done in 1 s" in lines and "bar:  50%|#" in lines


def test_cancelling_ends_the_product_and_the_processes_it_started(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              "print('[1/1] s/r (new)', flush=True)\n"
              "time.sleep(60)\n")
    lines: list[str] = []
    started = time.monotonic()
    code = runner.run_product([sys.executable, "-c", script], lines.append, lambda: bool(lines), grace_s=2)
    assert code == CANCELLED and time.monotonic() - started < 20
    child = int(pid_file.read_text())
    for _ in range(50):  # the child (a Dask worker, in the product) is gone too
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"child {child} outlived the cancelled product")


# ---------------------------------------------------------------------------------------------- layers to load

def _raster_folder(out: Path, survey: str, raster: str, centrelines: int | None, status: str = "ok") -> Path:
    folder = out / survey / raster
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps({"status": status, "counts": {"centrelines": centrelines}}))
    for name in ("heatmap.tif", "cracks.gpkg", "heatmap.qml", "cracks.qml", "centrelines.qml"):
        (folder / name).write_text("")
    return folder


def test_each_raster_gets_a_group_of_its_layers_with_the_products_styles(tmp_path):
    mask = _raster_folder(tmp_path, "quay_wall", "quay_wall_ortho", 186)
    _raster_folder(tmp_path, "road_scans", "scan_001", None)  # patch mode: no centrelines
    _raster_folder(tmp_path, "road_scans", "scan_002", None, status="error")
    groups = runner.run_groups(str(tmp_path), [("quay_wall", "quay_wall_ortho"), ("road_scans", "scan_001"),
                                               ("road_scans", "scan_002")])
    assert [name for name, _ in groups] == ["quay_wall / quay_wall_ortho", "road_scans / scan_001"]
    layers = groups[0][1]
    assert [(s.name, s.provider, s.role) for s in layers] == [("centrelines", "ogr", "centrelines"), ("cracks", "ogr", "cracks"),
                                                              ("heatmap", "gdal", "heatmap")]
    assert layers[0].uri == f"{mask / 'cracks.gpkg'}|layername=centrelines"
    assert [s.style for s in layers] == [str(mask / f"{n}.qml") for n in ("centrelines", "cracks", "heatmap")]
    assert [s.name for s in groups[1][1]] == ["cracks", "heatmap"]


def test_rasters_in_a_run_folder_leave_out_work_folders(tmp_path):
    _raster_folder(tmp_path, "b", "r2", 1)
    _raster_folder(tmp_path, "a", "r1", 1)
    _raster_folder(tmp_path, "a", ".r3.partial", 1)
    assert runner.rasters_in(str(tmp_path)) == [("a", "r1"), ("b", "r2")]


def test_layers_read_from_a_run_folder_are_recognised(tmp_path):
    run = tmp_path / "run"
    assert runner.source_under(f"{run / 'quay_wall' / 'q' / 'cracks.gpkg'}|layername=cracks", str(run))
    assert runner.source_under(str(run / "quay_wall" / "q" / "heatmap.tif"), str(run) + "/")
    assert not runner.source_under(str(tmp_path / "run2" / "heatmap.tif"), str(run))
    assert not runner.source_under("url=https://tiles.example/wms", str(run))
    assert not runner.source_under("", str(run)) and not runner.source_under(str(run / "x.tif"), "")


# ---------------------------------------------------------------------------------------------- the plugin package

def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_plugin_never_imports_the_product_and_its_logic_never_imports_qgis():
    for path in PLUGIN.glob("*.py"):
        assert "survey_cracks" not in _imports(path), f"{path.name} imports survey_cracks (QGIS's Python has not got it)"
    assert not {"qgis", "PyQt5"} & _imports(PLUGIN / "runner.py")
    assert not {"qgis", "PyQt5"} & _imports(PLUGIN / "__init__.py")  # classFactory imports qgis when QGIS calls it


def test_make_plugin_zip_holds_one_installable_folder(tmp_path):
    spec = importlib.util.spec_from_file_location("plugin_package", PLUGIN_ROOT / "package.py")
    package = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(package)
    target = package.build(tmp_path)
    names = zipfile.ZipFile(target).namelist()
    assert {n.split("/")[0] for n in names} == {"survey_cracks_qgis"}
    assert {"survey_cracks_qgis/metadata.txt", "survey_cracks_qgis/icon.png", "survey_cracks_qgis/LICENSE",
            "survey_cracks_qgis/__init__.py", "survey_cracks_qgis/runner.py"} <= set(names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    metadata = zipfile.ZipFile(target).read("survey_cracks_qgis/metadata.txt").decode()
    for key in ("name=", "qgisMinimumVersion=", "description=", "version=", "author=", "email=", "about=",
                "repository=", "hasProcessingProvider=yes", "icon=icon.png"):
        assert key in metadata
    assert target.name == f"survey_cracks_qgis-{metadata.split('version=')[1].split()[0]}.zip"
