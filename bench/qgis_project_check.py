"""Open a survey's QGIS project in headless QGIS, as an analyst's double-click would, and render it.

Needs Debian's PyQGIS and runs with the system Python, not the project's virtualenv:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 bench/qgis_project_check.py OUT/<survey>/<survey>.qgz [--png map.png]

It reads ``<survey>.qgz`` with ``QgsProject.read`` and checks that every layer is valid
(its relative path resolved), styled by the product's .qml (renderer types: pseudocolour
heatmaps, graduated/categorised or rule-based vectors, not QGIS's defaults) and in a group
of the layer tree (one per raster, and the assets), then draws the project's visible layers,
in the project's layer order, over their full extent into a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GDAL_PAM_ENABLED", "NO")  # no .aux.xml beside the sample surveys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qgis.core import QgsProject, QgsRasterLayer, QgsRectangle
from qgis_check import headless_qgis, render_png

# What the product's styles make of each layer; QGIS's defaults would be singleSymbol / multibandcolor / singlebandgray.
STYLED = {"heatmap": {"singlebandpseudocolor"}, "cracks": {"graduatedSymbol"}, "centrelines": {"graduatedSymbol", "categorizedSymbol",
          "singleSymbol", "RuleRenderer"}, "assets": {"categorizedSymbol", "graduatedSymbol", "RuleRenderer"}}


def renderer_type(layer) -> str:
    renderer = layer.renderer()
    return renderer.type() if renderer is not None else ""


def check(path: Path) -> dict:
    """Every layer of the project: valid, styled, grouped; problems listed (empty: the project is good)."""
    project = QgsProject.instance()
    if not project.read(str(path)):
        return {"project": str(path), "problems": [f"QGIS cannot read it: {project.error()}"], "layers": []}
    root = project.layerTreeRoot()
    problems, layers = [], []
    for layer in project.mapLayers().values():
        node = root.findLayer(layer.id())
        group = node.parent().name() if node is not None and node.parent() is not None else None
        kind = next((k for k in STYLED if layer.name().endswith(k)), "imagery")
        rtype = renderer_type(layer)
        layers.append({"name": layer.name(), "valid": layer.isValid(), "renderer": rtype, "group": group,
                       "source": layer.source()})
        if not layer.isValid():
            problems.append(f"{layer.name()}: not valid ({layer.source()})")
        if kind in STYLED and rtype not in STYLED[kind]:
            problems.append(f"{layer.name()}: renderer {rtype}, not the product's style")
        if not group:
            problems.append(f"{layer.name()}: in no group")
    if not layers:
        problems.append("no layers")
    return {"project": str(path), "groups": [g.name() for g in root.children()], "layers": layers, "problems": problems}


def render(png: Path, width: int) -> None:
    """The visible layers in the layer tree's order, over the extent of the project's heatmaps."""
    project = QgsProject.instance()
    root = project.layerTreeRoot()
    visible = [layer for layer in root.layerOrder() if root.findLayer(layer.id()).isVisible()]
    heatmaps = [layer for layer in visible if isinstance(layer, QgsRasterLayer) and layer.name().endswith("heatmap")]
    reference = heatmaps[0]
    extent = QgsRectangle(reference.extent())
    for layer in heatmaps[1:]:
        extent.combineExtentWith(layer.extent())
    render_png(visible, reference, png, width, extent)


def render_layout(png: Path, width_mm: float = 260, dpi: int = 72) -> None:
    """The map beside the project's legend (its layer tree: groups, layers, their styles' classes), as a screenshot shows it."""
    from qgis.core import (
        QgsLayout,
        QgsLayoutExporter,
        QgsLayoutItemLegend,
        QgsLayoutItemMap,
        QgsLayoutPoint,
        QgsLayoutSize,
        QgsUnitTypes,
    )

    project = QgsProject.instance()
    root = project.layerTreeRoot()
    heatmaps = [layer for layer in root.layerOrder() if isinstance(layer, QgsRasterLayer) and layer.name().endswith("heatmap")]
    extent = QgsRectangle(heatmaps[0].extent())
    for layer in heatmaps[1:]:
        extent.combineExtentWith(layer.extent())
    map_w = width_mm * 0.62
    map_h = map_w * extent.height() / extent.width()
    layout = QgsLayout(project)
    layout.initializeDefaults()
    page = layout.pageCollection().page(0)
    page.setPageSize(QgsLayoutSize(width_mm, map_h + 10, QgsUnitTypes.LayoutMillimeters))
    item = QgsLayoutItemMap(layout)
    item.attemptMove(QgsLayoutPoint(5, 5, QgsUnitTypes.LayoutMillimeters))
    item.attemptResize(QgsLayoutSize(map_w, map_h, QgsUnitTypes.LayoutMillimeters))
    item.setCrs(heatmaps[0].crs())
    item.setExtent(extent)
    layout.addLayoutItem(item)
    legend = QgsLayoutItemLegend(layout)
    legend.setTitle(project.title())
    legend.setLinkedMap(item)
    legend.setAutoUpdateModel(False)  # the imagery's band entries say nothing: left out of the legend
    for node in legend.model().rootGroup().findLayers():
        if node.name().endswith("imagery"):
            node.parent().removeChildNode(node)
    layout.addLayoutItem(legend)
    legend.attemptMove(QgsLayoutPoint(map_w + 8, 5, QgsUnitTypes.LayoutMillimeters))
    legend.updateLegend()
    layout.refresh()
    legend.adjustBoxSize()
    page.setPageSize(QgsLayoutSize(width_mm, max(map_h, legend.sizeWithUnits().height()) + 10, QgsUnitTypes.LayoutMillimeters))
    settings = QgsLayoutExporter.ImageExportSettings()
    settings.dpi = dpi
    QgsLayoutExporter(layout).exportToImage(str(png), settings)


def main() -> int:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--width", type=int, default=900)
        parser.add_argument("--legend", action="store_true", help="draw the project's legend (groups, layers, classes) beside the map")

    args, app = headless_qgis(__doc__, "project", "OUT/<survey>/<survey>.qgz", "qgis_project.png", options)
    try:
        result = check(args.project)
        if not result["problems"]:
            if args.legend:
                render_layout(args.png, dpi=max(30, round(args.width / 260 * 25.4)))
            else:
                render(args.png, args.width)
            result["png"] = str(args.png)
        print(json.dumps(result, indent=1))
        return 1 if result["problems"] else 0
    finally:
        app.exitQgis()


if __name__ == "__main__":
    sys.exit(main())
