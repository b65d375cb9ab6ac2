"""Run the QGIS plugin's Detect cracks inside a headless QGIS project, check what it loads, render the map.

Needs Debian's QGIS (apt-get install qgis qgis-providers python3-qgis) and runs with the system
Python, not the project's virtualenv; the plugin runs the product from that virtualenv itself:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 bench/qgis_plugin_check.py \\
        --product "$PWD/.venv" --out /tmp/plugin_check --png docs/qgis_plugin.png

It loads the plugin from qgis_plugin/ (or --plugins, e.g. a profile's python/plugins with the
zip unpacked), points its setting at --product, runs survey_cracks:detect_cracks on the quay
wall sample through processing.run in a project, and checks: the group "quay_wall /
quay_wall_ortho" holds heatmap, cracks and centrelines, valid, in the raster's CRS, with the
product's styles (singlebandpseudocolor; graduatedSymbol; singleSymbol #005ac8); the task's
progress rose to 100. Evaluate against annotations at 0.3 then replaces that group's layers (no
second group). Then it cancels a second run into another folder as soon as the raster
starts, and checks that the product and its Dask workers are gone and that no raster folder
was left half-written (only the hidden .partial work folder). Prints a JSON summary; exit 0
when every check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GDAL_PAM_ENABLED", "NO")  # no .aux.xml beside the sample survey
sys.path.append("/usr/share/qgis/python/plugins")  # QGIS's processing plugin

from qgis.core import (
    QgsApplication,
    QgsLayerTreeGroup,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsSettings,
)
from qgis.PyQt.QtGui import QColor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qgis_check import render_png

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_surveys" / "quay_wall" / "quay_wall_ortho.tif"
GROUP = "quay_wall / quay_wall_ortho"


class Recorder(QgsProcessingFeedback):
    """Keeps the progress values and log lines; with ``cancel_above``, cancels the run writing into ``out``
    once its progress passes that (the raster is then half segmented) and notes the product's session id."""

    def __init__(self, cancel_above: float | None = None, out: str = "") -> None:
        super().__init__()
        self.out = out
        self.cancel_above = cancel_above
        self.percents: list[float] = []
        self.lines: list[str] = []
        self.session: int | None = None
        self.progressChanged.connect(self.progressed)

    def progressed(self, percent: float) -> None:
        self.percents.append(percent)
        if self.cancel_above is not None and percent > self.cancel_above and not self.isCanceled():
            self.session = product_session(self.out)
            self.cancel()

    def pushInfo(self, info: str) -> None:
        self.lines.append(info)

    def reportError(self, error: str, fatalError: bool = False) -> None:
        self.lines.append(f"ERROR {error}")


def product_session(out: str) -> int | None:
    """The session id of the running `survey-cracks run ... --out OUT` (the plugin starts it as a session leader)."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if out.encode() in cmdline and any(b"survey-cracks" in part for part in cmdline):
                return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3])
        except (OSError, ValueError, IndexError):
            continue
    return None


def alive_in_session(session: int) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) == session:
                pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return pids


def layer_facts(layer) -> dict:
    renderer = layer.renderer()
    facts = {"valid": layer.isValid(), "crs": layer.crs().authid(), "renderer": renderer.type() if renderer else None,
             "source": layer.source()}
    if hasattr(layer, "featureCount"):
        facts["features"] = layer.featureCount()
    if renderer is not None and hasattr(renderer, "symbol") and renderer.symbol() is not None:
        facts["colour"] = renderer.symbol().color().name()
    return facts


def grab_window(project, layers, heatmap, png: Path) -> str:
    """The Layers panel (the run's group) beside a map canvas showing it, grabbed as the desktop would show them."""
    from qgis.core import QgsLayerTreeModel
    from qgis.gui import QgsLayerTreeMapCanvasBridge, QgsLayerTreeView, QgsMapCanvas
    from qgis.PyQt.QtCore import QEventLoop, QTimer
    from qgis.PyQt.QtGui import QImage
    from qgis.PyQt.QtWidgets import QSplitter

    window = QSplitter()
    view = QgsLayerTreeView()
    model = QgsLayerTreeModel(project.layerTreeRoot())
    view.setModel(model)
    canvas = QgsMapCanvas()
    canvas.setCanvasColor(QColor("white"))
    bridge = QgsLayerTreeMapCanvasBridge(project.layerTreeRoot(), canvas)
    canvas.setDestinationCrs(heatmap.crs())
    canvas.setLayers(layers)
    window.addWidget(view)
    window.addWidget(canvas)
    window.resize(1040, 560)
    window.setSizes([300, 740])
    window.show()
    canvas.setExtent(heatmap.extent())
    loop = QEventLoop()
    canvas.mapCanvasRefreshed.connect(loop.quit)
    QTimer.singleShot(30000, loop.quit)
    canvas.refresh()
    loop.exec_()
    image = window.grab().toImage().convertToFormat(QImage.Format_Indexed8)
    image.save(str(png))
    del bridge
    return str(png)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--product", required=True, help="the survey_cracks virtualenv (or its survey-cracks)")
    parser.add_argument("--plugins", type=Path, default=ROOT / "qgis_plugin", help="folder holding survey_cracks_qgis/")
    parser.add_argument("--out", type=Path, default=Path("/tmp/qgis_plugin_check"))
    parser.add_argument("--png", type=Path, default=Path("qgis_plugin.png"))
    parser.add_argument("--width", type=int, default=900)
    parser.add_argument("--screenshot", type=Path, default=None,
                        help="also a window grab: the Layers panel beside the map canvas (256 colours, for docs/)")
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    profile = args.out / "profile"  # the plugin's setting goes here, not into the user's QGIS profile
    app = QgsApplication([], True, str(profile))  # widgets (offscreen) for --screenshot
    app.initQgis()
    import processing
    from processing.core.Processing import Processing

    Processing.initialize()
    sys.path.insert(0, str(args.plugins))
    from survey_cracks_qgis.plugin import SurveyCracksPlugin
    from survey_cracks_qgis.runner import SETTINGS_KEY

    plugin = SurveyCracksPlugin(None)
    plugin.initProcessing()
    QgsSettings().setValue(SETTINGS_KEY, args.product)

    project = QgsProject.instance()
    context = QgsProcessingContext()
    context.setProject(project)
    feedback = Recorder()
    started = time.monotonic()
    results = processing.run("survey_cracks:detect_cracks", {"INPUT": [str(SAMPLE)], "OUTPUT": str(args.out / "run")},
                             context=context, feedback=feedback)
    seconds = round(time.monotonic() - started, 1)
    group = project.layerTreeRoot().findGroup(GROUP)
    layers = {node.layer().name(): node.layer() for node in group.findLayers()} if group else {}
    facts = {name: layer_facts(layer) for name, layer in layers.items()}
    report = json.loads((args.out / "run" / "quay_wall" / "quay_wall_ortho" / "report.json").read_text())
    crs = report["raster_info"]["crs"]
    summary = {
        "results": {k: str(v) for k, v in results.items()}, "seconds": seconds,
        "groups": [child.name() for child in project.layerTreeRoot().children()],
        "layers_in_group": [node.layer().name() for node in group.findLayers()] if group else [],
        "layers": facts, "report_crs": crs, "report_counts": {k: report["counts"][k] for k in ("polygons", "centrelines")},
        "progress": {"values": len(feedback.percents), "first": feedback.percents[:1], "last": feedback.percents[-1:],
                     "rising": feedback.percents == sorted(feedback.percents)},
    }
    ok = (summary["layers_in_group"] == ["centrelines", "cracks", "heatmap"]
          and all(f["valid"] and f["crs"] == crs for f in facts.values())
          and facts["heatmap"]["renderer"] == "singlebandpseudocolor"
          and facts["cracks"]["renderer"] == "graduatedSymbol" and facts["cracks"]["features"] == report["counts"]["polygons"]
          and facts["centrelines"]["renderer"] == "singleSymbol" and facts["centrelines"].get("colour") == "#005ac8"
          and facts["centrelines"]["features"] == report["counts"]["centrelines"]
          and summary["progress"]["rising"] and feedback.percents[-1] == 100)

    # The map as the canvas draws it: the group's layers (top first) over the source raster.
    source = QgsRasterLayer(str(SAMPLE), "quay_wall_ortho")
    project.addMapLayer(source, False)
    project.layerTreeRoot().addLayer(source).setExpanded(False)  # underneath the group, as a basemap
    heatmap = layers["heatmap"]
    render_png([*layers.values(), source], heatmap, args.png, args.width)  # as bench/qgis_check.py draws a run
    summary["png"] = str(args.png)

    if args.screenshot:
        summary["screenshot"] = grab_window(project, [*layers.values(), source], heatmap, args.screenshot)

    # Evaluate at another threshold: the group and its layers are replaced, not added beside them.
    evaluating = Recorder()
    processing.run("survey_cracks:evaluate", {"RUN": str(args.out / "run"), "THRESHOLD": 0.3}, context=context,
                   feedback=evaluating)
    root = project.layerTreeRoot()
    group = root.findGroup(GROUP)
    cracks = next(node.layer() for node in group.findLayers() if node.layer().name() == "cracks")
    report = json.loads((args.out / "run" / "quay_wall" / "quay_wall_ortho" / "report.json").read_text())
    summary["evaluate"] = {
        "closed": [line for line in evaluating.lines if line.startswith("closing ")],
        "groups": [child.name() for child in root.children() if isinstance(child, QgsLayerTreeGroup)],
        "layers_in_group": [node.layer().name() for node in group.findLayers()], "layers_in_project": len(project.mapLayers()),
        "threshold": report["counts"]["threshold"], "report_polygons": report["counts"]["polygons"],
        "cracks_features": cracks.featureCount(), "cracks_renderer": cracks.renderer().type(),
    }
    ok = ok and summary["evaluate"]["groups"] == [GROUP] and summary["evaluate"]["layers_in_project"] == 4 \
        and summary["evaluate"]["threshold"] == 0.3 and summary["evaluate"]["cracks_features"] == report["counts"]["polygons"] \
        and summary["evaluate"]["cracks_renderer"] == "graduatedSymbol"

    # Cancelling: a second run into another folder, cancelled while its raster is being segmented.
    cancelled_out = args.out / "cancelled"
    stopper = Recorder(cancel_above=40, out=str(cancelled_out))
    processing.run("survey_cracks:detect_cracks", {"INPUT": [str(SAMPLE)], "OUTPUT": str(cancelled_out)},
                   context=context, feedback=stopper)
    survey = cancelled_out / "quay_wall"
    summary["cancel"] = {
        "session": stopper.session,
        "cancelled_at_percent": stopper.percents[-1:],
        "alive_after": alive_in_session(stopper.session) if stopper.session else None,
        "raster_folder_exists": (survey / "quay_wall_ortho").exists(),
        "in_survey_folder": sorted(p.name for p in survey.iterdir()) if survey.exists() else [],
        "last_lines": stopper.lines[-2:],
    }
    ok = ok and stopper.session is not None and summary["cancel"]["alive_after"] == [] \
        and not summary["cancel"]["raster_folder_exists"]
    summary["ok"] = ok
    print(json.dumps(summary, indent=1))
    sys.stdout.flush()
    project.removeAllMapLayers()
    # QGIS 3.22's exitQgis after processing.run can abort ("double free") in a headless script:
    # everything is written and printed by now, so the process ends without it.
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    sys.exit(main())
