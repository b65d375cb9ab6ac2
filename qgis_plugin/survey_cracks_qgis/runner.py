"""Everything the plugin does that QGIS need not be present for (no qgis, no survey_cracks import).

QGIS's Python has no torch, so the plugin never imports the product: it finds the product's
``survey-cracks`` executable (a configured virtualenv or executable, else PATH), builds the
same command line a user would type, runs it as a subprocess, turns its log and progress
bars into a percentage, and afterwards lists the layers each raster's output folder holds,
with the style files the product wrote beside them. The QGIS-facing modules (provider,
algorithms, settings dialog) only translate between these functions and QGIS.
"""

from __future__ import annotations

import codecs
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

PRODUCT = "survey-cracks"
EDGE = "survey-cracks-edge"
SETTINGS_KEY = "survey_cracks/product_path"  # QgsSettings key: a virtualenv folder or the survey-cracks executable
MODES = ("auto", "mask", "dense", "patch")

INSTALL_FIX = ("install it in a virtualenv outside QGIS (python3 -m venv ~/survey-cracks-venv && "
               "~/survey-cracks-venv/bin/pip install <path to the survey_cracks repository>), then give that folder "
               "in Plugins > Survey cracks > Settings (or put a link to its survey-cracks on PATH)")
NOT_INSTALLED = f"survey_cracks is not installed where QGIS can find it (no {PRODUCT} on PATH, none configured): {INSTALL_FIX}"
EDGE_ONLY = (f"only the edge runtime ({EDGE}, ONNX Runtime) is installed; it draws crack maps over images and video but "
             f"writes no georeferenced heatmap or crack layers, so this needs the full product ({PRODUCT}, with torch): "
             f"{INSTALL_FIX}")

# Variables QGIS sets for its own Python and GDAL that would make the product's Python or its
# rasterio wheel load QGIS's modules and data files instead of its own.
QGIS_ONLY_ENV = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "GDAL_DATA", "GDAL_DRIVER_PATH", "PROJ_LIB", "PROJ_DATA",
                 "QT_PLUGIN_PATH")


class ProductMissing(Exception):
    """No usable ``survey-cracks``: the message says what was looked for and how to install it."""


# ---------------------------------------------------------------------------------------------- finding the product

def _executable_in(folder: Path, name: str) -> Path | None:
    """``name`` in a virtualenv folder (bin/ or Scripts/) or in a bin folder itself."""
    for candidate in (folder / "bin" / name, folder / "Scripts" / f"{name}.exe", folder / name, folder / f"{name}.exe"):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True)
class Runtime:
    """Where the product is: ``product`` (survey-cracks) and ``edge`` (survey-cracks-edge), each a path or None."""

    product: str | None
    edge: str | None
    source: str  # "settings", "PATH" or "" (nothing found)
    problem: str = ""  # a configured path that holds no survey-cracks

    def describe(self) -> str:
        """One paragraph for the settings dialog: what runs, found where, and what is missing."""
        if self.problem:
            return self.problem
        if self.product:
            where = "the configured path" if self.source == "settings" else "PATH"
            return f"Using the full product: {self.product} (from {where}). Detect, evaluate and compare run with it."
        if self.edge:
            return f"Found only {self.edge}: {EDGE_ONLY}"
        return NOT_INSTALLED

    def require_product(self) -> str:
        """The survey-cracks executable, or ProductMissing with the one message that says how to fix it."""
        if self.problem:
            raise ProductMissing(self.problem)
        if self.product:
            return self.product
        raise ProductMissing(EDGE_ONLY if self.edge else NOT_INSTALLED)


def find_runtime(configured: str = "", which: Callable[[str], str | None] = shutil.which) -> Runtime:
    """The product from ``configured`` (a virtualenv folder, its bin folder or the survey-cracks executable), else PATH."""
    configured = (configured or "").strip()
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            edge = _executable_in(path.parent, EDGE)
            if path.name.startswith(EDGE):
                return Runtime(None, str(path), "settings")
            return Runtime(str(path), str(edge) if edge else None, "settings")
        if path.is_dir():
            product, edge = _executable_in(path, PRODUCT), _executable_in(path, EDGE)
            if product or edge:
                return Runtime(str(product) if product else None, str(edge) if edge else None, "settings")
        return Runtime(None, None, "settings", f"the configured path {configured} holds no {PRODUCT} executable "
                                               f"(expected a virtualenv folder with bin/{PRODUCT}, or the executable): {INSTALL_FIX}")
    product, edge = which(PRODUCT), which(EDGE)
    return Runtime(product, edge, "PATH" if (product or edge) else "")


def product_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the product's subprocess: QGIS's own Python and GDAL variables removed, output unbuffered,
    progress bars on although the output is a pipe (`Progress` reads the percentage from them)."""
    env = {k: v for k, v in environ.items() if k not in QGIS_ONLY_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    env["SURVEY_CRACKS_PROGRESS"] = "bars"
    env["PYTHONIOENCODING"] = "utf-8"
    return env


# ---------------------------------------------------------------------------------------------- command lines

@dataclass
class DetectParameters:
    """What the Detect cracks dialog asks for; None/defaults leave the product's own default."""

    inputs: list[str]
    out: str
    model: str | None = None  # None: the shipped model
    threshold: float | None = None  # None: the model's calibrated threshold
    scale: float = 1.0
    mode: str = "auto"


def detect_command(executable: str, p: DetectParameters) -> list[str]:
    """``survey-cracks run INPUTS --out OUT [...]``: only what differs from the product's defaults is passed."""
    command = [executable, "run", *p.inputs, "--out", p.out]
    if p.model:
        command += ["--model", p.model]
    if p.threshold is not None:
        command += ["--threshold", _number(p.threshold)]
    if p.scale != 1.0:  # the product refuses --scale outside mask mode, so 1 is never passed
        command += ["--scale", _number(p.scale)]
    if p.mode != "auto":
        command += ["--mode", p.mode]
    return command


def evaluate_command(executable: str, out: str, threshold: float | None = None, assets: str | None = None,
                     rules: str | None = None) -> list[str]:
    """``survey-cracks evaluate OUT [--threshold T] [--assets A] [--rules R]``."""
    return [executable, "evaluate", out, *_options(threshold=threshold, assets=assets, rules=rules)]


def compare_command(executable: str, old_out: str, new_out: str, assets: str | None = None,
                    rules: str | None = None) -> list[str]:
    """``survey-cracks compare OLD_OUT NEW_OUT [--assets A] [--rules R]``."""
    return [executable, "compare", old_out, new_out, *_options(assets=assets, rules=rules)]


def _options(**values: float | str | None) -> list[str]:
    options: list[str] = []
    for name, value in values.items():
        if value is not None and value != "":
            options += [f"--{name}", _number(value) if isinstance(value, float) else str(value)]
    return options


def _number(value: float) -> str:
    return f"{value:g}"


# ---------------------------------------------------------------------------------------------- checks before a run

# QGIS's raster data type numbers (Qgis.DataType) as the product names them.
QGIS_DATA_TYPES = {1: "uint8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32", 7: "float64"}


@dataclass
class RasterFacts:
    """What QGIS knows of an input raster layer, before the product opens it."""

    name: str
    path: str  # the file; "" when the layer is not a local file (a WMS, a database raster)
    bands: int
    data_type: str  # "uint8", "uint16", ... (QGIS_DATA_TYPES)
    crs: str  # authid, "" when none
    alpha_bands: tuple[int, ...] = ()  # 1-based bands whose colour interpretation is alpha


def check_raster(facts: RasterFacts) -> tuple[list[str], list[str]]:
    """(errors, warnings) for one input raster, worded as the product words them (survey_cracks.io.raster.inspect_raster)."""
    errors: list[str] = []
    warnings: list[str] = []
    where = facts.path or facts.name
    if not facts.path:
        errors.append(f"{facts.name}: not a raster file (the product reads files, folders and URLs) — "
                      "save the layer as a GeoTIFF (Export > Save As) and run on that")
        return errors, warnings
    if not Path(facts.path).exists() and "://" not in facts.path and not facts.path.startswith("/vsi"):
        errors.append(f"{where}: file not found — check the path")
        return errors, warnings
    if facts.bands == 2 and 2 not in facts.alpha_bands:
        errors.append(f"{where}: 2-band raster whose second band is not alpha: grey + what? — keep the grey band "
                      "(gdal_translate -b 1 in.tif out.tif), or, if band 2 is the footprint, mark it as alpha "
                      "(gdal_translate -colorinterp_2 alpha in.tif out.tif)")
    elif facts.bands not in (1, 2, 3, 4):
        errors.append(f"{where}: unsupported band layout ({facts.bands} bands) — give an RGB, RGBA or single-band "
                      "raster (e.g. gdal_translate -b 1 -b 2 -b 3)")
    if facts.data_type not in ("uint8", "uint16"):
        errors.append(f"{where}: unsupported data type {facts.data_type} — convert to 8- or 16-bit "
                      "(gdal_translate -ot Byte -scale)")
    if not facts.crs:
        warnings.append(f"{where}: no CRS: processed in pixel coordinates, so its layers will not line up with "
                        "georeferenced ones")
    return errors, warnings


def check_output(out: str) -> str | None:
    """Why ``out`` cannot be the run's output folder (the product's wording), or None."""
    path = Path(out).expanduser()
    if not out:
        return "no output folder given — choose one"
    if path.exists() and not path.is_dir():
        return f"{path}: is a file, not a folder — choose another output folder"
    if not path.parent.exists():
        return f"{path}: parent folder {path.parent} does not exist — create it, or choose another output folder"
    target = path if path.exists() else path.parent
    if not os.access(target, os.W_OK | os.X_OK):
        return f"{target}: not writable — check its permissions, or choose another output folder"
    return None


def check_folder(folder: str, what: str) -> str | None:
    """Why ``folder`` (an input folder, a run's output) cannot be used, or None."""
    if not folder:
        return f"no {what} given — choose one"
    if not Path(folder).expanduser().is_dir():
        return f"{folder}: no such folder — choose the {what}"
    return None


# ---------------------------------------------------------------------------------------------- progress

BAR = re.compile(r"^(?P<desc>[^\r\n]*?):\s*(?P<percent>\d{1,3})%\|")  # a tqdm bar: "segmenting x.tif:  33%|###  | 3/9 [...]"
COUNT = re.compile(r"^(?P<rasters>\d+) rasters?: (?P<todo>\d+) to compute")  # "1 raster: ..." too
START = re.compile(r"^\[(?P<number>\d+)/(?P<todo>\d+)\] (?P<survey>[^/]+)/(?P<raster>.+) \((?P<reason>[^()]*)\)$")
DONE = re.compile(r"^(?P<survey>[^/:]+)/(?P<raster>[^:]+): (?:done in .*|up to date)$")
FINISHED = re.compile(r"^finished: ")
FAILED = re.compile(r"^(FAILED |error: )")


@dataclass
class Progress:
    """A run's percentage from its output lines, and the rasters it finished (done or up to date).

    Between ``[i/n]`` lines the raster's own bars (segmenting, tracing, heatmap) move the
    percentage within its share; the last 5 % is the reports the run writes at its end.
    """

    todo: int = 0
    number: int = 0
    percent: float = 0.0
    rasters: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def line(self, text: str) -> float | None:
        """Take one output line; the new percentage when it moved, else None."""
        text = text.strip()
        before = self.percent
        if m := COUNT.match(text):
            self.todo = int(m["todo"])
        elif m := START.match(text):
            self.number, self.todo = int(m["number"]), int(m["todo"])
            self._set((self.number - 1) / self.todo)
        elif m := DONE.match(text):
            if (m["survey"], m["raster"]) not in self.rasters:
                self.rasters.append((m["survey"], m["raster"]))
            if self.todo and self.number:
                self._set(self.number / self.todo)
        elif m := BAR.match(text):
            if self.todo and self.number:
                self._set((self.number - 1 + int(m["percent"]) / 100) / self.todo)
        elif FINISHED.match(text):
            self.percent = 100.0
        elif FAILED.match(text):
            self.errors.append(text)
        return self.percent if self.percent != before else None

    def _set(self, fraction: float) -> None:
        self.percent = max(self.percent, round(95.0 * min(fraction, 1.0), 1))


def is_bar(text: str) -> bool:
    """A progress bar's redraw (not worth a line in the log)."""
    return bool(BAR.match(text.strip())) or not text.strip()


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # nested bars move the cursor (ESC[A)


class LineSplitter:
    """Bytes from the subprocess to whole lines; a bar's redraws end in \\r, log lines in \\n."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._rest = ""

    def feed(self, chunk: bytes) -> list[str]:
        text = self._rest + self._decoder.decode(chunk)
        parts = re.split(r"\r\n|\r|\n", ANSI.sub("", text))
        self._rest = parts.pop()
        return parts

    def close(self) -> list[str]:
        text = self._rest + self._decoder.decode(b"", final=True)
        self._rest = ""
        return [text] if text else []


# ---------------------------------------------------------------------------------------------- running

CANCELLED = -1000  # run_product's return value when it was cancelled


def run_product(command: list[str], on_line: Callable[[str], None], is_cancelled: Callable[[], bool],
                env: Mapping[str, str] | None = None, cwd: str | None = None, poll_s: float = 0.2,
                grace_s: float = 5.0) -> int:
    """Run ``command``, each output line (stdout and stderr) to ``on_line``; its exit code, or CANCELLED.

    It runs in its own process group, so cancelling ends it and every process it started (the
    Dask workers): SIGTERM, then SIGKILL after ``grace_s``. The product builds each raster in a
    hidden ``.<raster>.partial`` folder and renames it into place when complete, so a killed run
    leaves finished rasters whole and nothing half-written under a raster's name; the next run
    resumes the partial one.
    """
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=dict(env if env is not None else product_env(os.environ)), cwd=cwd, **_own_group(),
    )
    chunks: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        while chunk := process.stdout.read1(65536) if hasattr(process.stdout, "read1") else process.stdout.read(4096):
            chunks.put(chunk)
        chunks.put(None)

    reader = threading.Thread(target=read, name="survey-cracks output", daemon=True)
    reader.start()
    splitter = LineSplitter()
    while True:
        if is_cancelled():
            end_process_tree(process, grace_s)
            reader.join(timeout=grace_s)
            process.stdout.close()  # type: ignore[union-attr]
            return CANCELLED
        try:
            chunk = chunks.get(timeout=poll_s)
        except queue.Empty:
            continue
        if chunk is None:
            break
        for text in splitter.feed(chunk):
            on_line(text)
    for text in splitter.close():
        on_line(text)
    process.stdout.close()  # type: ignore[union-attr]
    return process.wait()


def _own_group() -> dict[str, object]:
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    return {"start_new_session": True}


def end_process_tree(process: subprocess.Popen, grace_s: float = 5.0) -> None:  # type: ignore[type-arg]
    """End ``process`` and everything in its process group: politely, then by force."""
    if sys.platform == "win32":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True, check=False)
        process.wait(timeout=grace_s)
        return
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)  # anything of the group still alive (the Dask workers too)?
            except ProcessLookupError:
                process.wait()
                return
            process.poll()
            time.sleep(0.05)
    process.wait()


# ---------------------------------------------------------------------------------------------- outputs to load

@dataclass(frozen=True)
class LayerSpec:
    """One layer to add to the project: QGIS data source, provider, and the product's style for it."""

    name: str
    uri: str
    provider: str  # "gdal" (raster) or "ogr" (vector)
    style: str | None  # the .qml the product wrote beside the outputs (the GeoPackage also stores it)
    role: str  # "heatmap", "cracks", "centrelines", "changes"


def raster_folder(out: str, survey: str, raster: str) -> Path:
    return Path(out) / survey / raster


def raster_layers(folder: Path) -> list[LayerSpec]:
    """The layers of one raster's output folder, top first: centrelines (mask mode), crack polygons, heatmap."""
    report = _read_json(folder / "report.json")
    if report.get("status", "ok") != "ok":
        return []
    layers: list[LayerSpec] = []
    gpkg = folder / "cracks.gpkg"
    centrelines = (report.get("counts") or {}).get("centrelines")
    if gpkg.exists() and centrelines is not None:
        layers.append(LayerSpec("centrelines", f"{gpkg}|layername=centrelines", "ogr", _style(folder, "centrelines"), "centrelines"))
    if gpkg.exists():
        layers.append(LayerSpec("cracks", f"{gpkg}|layername=cracks", "ogr", _style(folder, "cracks"), "cracks"))
    if (folder / "heatmap.tif").exists():
        layers.append(LayerSpec("heatmap", str(folder / "heatmap.tif"), "gdal", _style(folder, "heatmap"), "heatmap"))
    return layers


def run_groups(out: str, rasters: Iterable[tuple[str, str]]) -> list[tuple[str, list[LayerSpec]]]:
    """(group name "survey / raster", its layers) for each raster a run finished, in the run's order."""
    groups = []
    for survey, raster in rasters:
        layers = raster_layers(raster_folder(out, survey, raster))
        if layers:
            groups.append((f"{survey} / {raster}", layers))
    return groups


def rasters_in(out: str) -> list[tuple[str, str]]:
    """(survey, raster) of every finished raster folder in a run's output folder (hidden work folders left out)."""
    return [(report.parent.parent.name, report.parent.name) for report in sorted(Path(out).glob("*/*/report.json"))
            if not report.parent.name.startswith(".")]


def change_layers(new_out: str) -> list[tuple[str, list[LayerSpec]]]:
    """The ``changes`` layer of each survey GeoPackage in a compared run (its style is stored in the GeoPackage)."""
    groups = []
    for gpkg in sorted(Path(new_out).glob("*/*.gpkg")):
        if gpkg.stem == gpkg.parent.name and _has_layer(gpkg, "changes"):
            groups.append((f"{gpkg.stem} changes", [LayerSpec(f"{gpkg.stem} changes", f"{gpkg}|layername=changes",
                                                              "ogr", None, "changes")]))
    return groups


def source_under(source: str, folder: str) -> bool:
    """Whether a layer's data source (a path, or ``path|layername=...``) is a file inside ``folder``."""
    path = source.split("|")[0]
    if not path or not folder:
        return False
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, ValueError):
        return False


def _has_layer(gpkg: Path, name: str) -> bool:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{gpkg}?mode=ro", uri=True) as db:
            return db.execute("SELECT 1 FROM gpkg_contents WHERE table_name = ?", (name,)).fetchone() is not None
    except sqlite3.Error:
        return False


def _style(folder: Path, name: str) -> str | None:
    qml = folder / f"{name}.qml"
    return str(qml) if qml.exists() else None


def _read_json(path: Path) -> dict:  # type: ignore[type-arg]
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
