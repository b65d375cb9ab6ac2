"""Open a raster's `survey-cracks suggest` layer in headless QGIS, as an annotator would, and render it.

Needs Debian's PyQGIS and runs with the system Python, not the project's virtualenv:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 bench/qgis_suggest_check.py out/demo/quay_wall/quay_wall_ortho [--png s.png]

Checks that ``suggest.gpkg`` (layer ``suggestions``) loads as a valid layer in the raster's CRS,
styled by the product's style from the GeoPackage (a categorised renderer on ``reason_kind``,
not QGIS's single symbol), and draws it over the source raster and the heatmap into a PNG.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("GDAL_PAM_ENABLED", "NO")  # no .aux.xml beside the sample surveys

sys.path.insert(0, str(Path(__file__).resolve().parent))
from qgis.core import QgsRasterLayer, QgsVectorLayer  # noqa: E402
from qgis_check import headless_qgis, render_png  # noqa: E402


def main() -> int:
    args, app = headless_qgis(__doc__, "folder", "OUT/<survey>/<raster>", "suggest_map.png")
    report = json.loads((args.folder / "report.json").read_text())
    source = QgsRasterLayer(report["source"], "imagery")
    heatmap = QgsRasterLayer(str(args.folder / "heatmap.tif"), "heatmap")
    layer = QgsVectorLayer(f"{args.folder / 'suggest.gpkg'}|layername=suggestions", "suggestions", "ogr")
    renderer = layer.renderer().type() if layer.isValid() and layer.renderer() else ""
    categories = [c.value() for c in layer.renderer().categories()] if renderer == "categorizedSymbol" else []
    problems = []
    if not layer.isValid():
        problems.append("suggest.gpkg|layername=suggestions is not a valid layer")
    if renderer != "categorizedSymbol" or layer.renderer().classAttribute() != "reason_kind":
        problems.append(f"renderer {renderer!r}: not the product's style")
    if layer.isValid() and layer.crs() != heatmap.crs():
        problems.append(f"CRS {layer.crs().authid()} is not the heatmap's {heatmap.crs().authid()}")
    render_png([layer, heatmap, source], heatmap, args.png)
    print(json.dumps({"features": layer.featureCount(), "renderer": renderer, "categories": categories,
                      "labels": layer.labelsEnabled(), "crs": layer.crs().authid(), "png": str(args.png),
                      "problems": problems}, indent=1))
    app.exitQgis()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
