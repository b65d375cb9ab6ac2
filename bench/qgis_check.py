"""Open a run's outputs in headless QGIS, as an analyst would, and render a map.

Needs Debian's PyQGIS (apt-get install python3-qgis qgis-providers) and runs with the
system Python, not the project's virtualenv:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 bench/qgis_check.py out/demo/quay_wall/quay_wall_ortho [--png map.png]

It checks that heatmap.tif and both layers of cracks.gpkg (cracks, and centrelines in mask
mode) load as valid layers with the raster's CRS, that their styles (the heatmap's .qml
beside it, the layers' styles inside the GeoPackage) were applied by QGIS itself, and draws
them over the source raster into a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# QGIS computes band statistics to style the source raster; without this GDAL saves them
# as X.tif.aux.xml beside the survey (the sample surveys must stay as generated).
os.environ.setdefault("GDAL_PAM_ENABLED", "NO")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # noqa: E402
from qgis.PyQt.QtGui import QColor  # noqa: E402


def headless_qgis(doc: str, target: str, target_help: str, png: str,
                  more_options: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[argparse.Namespace, QgsApplication]:
    """The checks' common start: parse ``target`` (a folder or file of a run) and ``--png``, then QGIS without a GUI.

    Returns the arguments and the started application, which must stay referenced while layers live.
    """
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(target, type=Path, help=target_help)
    parser.add_argument("--png", type=Path, default=Path(png))
    if more_options:
        more_options(parser)
    args = parser.parse_args()
    app = QgsApplication([], False)
    app.initQgis()
    return args, app


def render_png(layers: list, heatmap: QgsRasterLayer, png: Path, width: int = 1000, extent=None) -> QgsMapRendererParallelJob:
    """Draw ``layers`` (top first) over ``extent`` (default: the heatmap's), in its CRS, on white, into ``png``; the finished job."""
    extent = extent or heatmap.extent()
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(heatmap.crs())
    settings.setExtent(extent)
    settings.setOutputSize(QSize(width, max(1, int(width * extent.height() / extent.width()))))
    settings.setBackgroundColor(QColor("white"))
    job = QgsMapRendererParallelJob(settings)
    job.start()
    job.waitForFinished()
    job.renderedImage().save(str(png))
    return job


def main() -> int:
    args, app = headless_qgis(__doc__, "folder", "OUT/<survey>/<raster>", "qgis_map.png", lambda parser: parser.add_argument(
        "--source", type=Path, default=None, help="the input raster, drawn underneath"))
    report = json.loads((args.folder / "report.json").read_text())
    heatmap = QgsRasterLayer(str(args.folder / "heatmap.tif"), "heatmap")
    cracks = QgsVectorLayer(f"{args.folder / 'cracks.gpkg'}|layername=cracks", "cracks", "ogr")
    geojson = QgsVectorLayer(str(args.folder / "cracks.geojson"), "cracks_geojson", "ogr")
    lines = None
    if report["counts"].get("centrelines") is not None:
        lines = QgsVectorLayer(f"{args.folder / 'cracks.gpkg'}|layername=centrelines", "centrelines", "ogr")
    result = {
        "heatmap_valid": heatmap.isValid(),
        "heatmap_crs": heatmap.crs().authid(),
        "heatmap_renderer": heatmap.renderer().type() if heatmap.renderer() else None,
        "cracks_valid": cracks.isValid(),
        "cracks_crs": cracks.crs().authid(),
        "cracks_features": cracks.featureCount(),
        "cracks_renderer": cracks.renderer().type() if cracks.renderer() else None,
        "cracks_fields": [f.name() for f in cracks.fields()],
        "geojson_crs": geojson.crs().authid(),
        "report_crs": report["raster_info"]["crs"],
        "report_polygons": report["counts"]["polygons"],
    }
    if lines is not None:
        symbol = lines.renderer().symbol() if lines.renderer() and hasattr(lines.renderer(), "symbol") else None
        result.update({
            "centrelines_valid": lines.isValid(), "centrelines_crs": lines.crs().authid(),
            "centrelines_features": lines.featureCount(), "report_centrelines": report["counts"]["centrelines"],
            "centrelines_renderer": lines.renderer().type() if lines.renderer() else None,
            "centrelines_colour": symbol.color().name() if symbol else None,
            "centrelines_fields": [f.name() for f in lines.fields()],
        })
    layers = ([lines] if lines is not None else []) + [cracks, heatmap]
    if args.source:
        source = QgsRasterLayer(str(args.source), "source")
        layers.append(source)
    project = QgsProject.instance()
    for layer in layers:
        project.addMapLayer(layer)
    job = render_png(layers, heatmap, args.png)
    result["png"] = str(args.png)
    print(json.dumps(result, indent=1))
    expected_crs = result["report_crs"] or ""
    ok = (result["heatmap_valid"] and result["cracks_valid"] and result["heatmap_crs"] == expected_crs
          and result["cracks_crs"] == expected_crs and result["cracks_features"] == result["report_polygons"]
          and result["heatmap_renderer"] == "singlebandpseudocolor" and result["cracks_renderer"] == "graduatedSymbol")
    if lines is not None:  # the shipped style: a blue single-symbol line (QGIS's random default is not)
        ok = ok and (result["centrelines_valid"] and result["centrelines_crs"] == expected_crs
                     and result["centrelines_features"] == result["report_centrelines"]
                     and result["centrelines_renderer"] == "singleSymbol" and result["centrelines_colour"] == "#005ac8")
    project.removeAllMapLayers()  # layers go before QGIS does (else exitQgis can crash)
    del layers, lines, cracks, heatmap, geojson, job
    app.exitQgis()
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
