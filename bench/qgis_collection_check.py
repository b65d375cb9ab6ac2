"""Open a photo collection's cracks.gpkg in headless QGIS, as an analyst would, and render it.

Needs Debian's PyQGIS and runs with the system Python, not the project's virtualenv:

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 bench/qgis_collection_check.py OUT/<survey>/collection [--png map.png]

Checks that the ``cracks`` and ``centrelines`` layers load valid with the product's style from the
GeoPackage's own layer_styles table (renderer not QGIS's default singleSymbol for cracks), that each is
one layer holding every photo's features (its ``photo`` column has every photo with cracks in
photos.csv), that the ``photos`` table loads; then draws cracks and centrelines of one photo (a
QGIS subset filter on ``photo``, as a user filters the layer) into a PNG over that photo's extent.
Prints a JSON report; exit code 1 when a check fails.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from qgis.core import QgsRectangle, QgsVectorLayer  # noqa: E402
from qgis_check import headless_qgis, render_png  # noqa: E402


def main() -> int:
    args, app = headless_qgis(__doc__, "folder", "OUT/<survey>/collection", "qgis_collection.png")
    gpkg = args.folder / "cracks.gpkg"
    rows = list(csv.DictReader(open(args.folder / "photos.csv")))
    with_cracks = sorted(r["photo"] for r in rows if r["status"] == "ok" and int(float(r["polygons"] or 0)) > 0)
    problems, layers = [], {}
    for name in ("cracks", "centrelines", "photos"):
        layer = QgsVectorLayer(f"{gpkg}|layername={name}", name, "ogr")
        if not layer.isValid():
            problems.append(f"{name}: not valid")
            continue
        layers[name] = layer
    for name in ("cracks", "centrelines"):
        layer = layers.get(name)
        if layer is None:
            continue
        message, loaded = layer.loadDefaultStyle()  # QGIS does this on opening: the style stored in the GeoPackage
        renderer = layer.renderer().type() if layer.renderer() else ""
        photos = sorted({f["photo"] for f in layer.getFeatures()})
        layers[name] = layer
        print(json.dumps({"layer": name, "features": layer.featureCount(), "photos": len(photos), "renderer": renderer,
                          "style_loaded": loaded, "style_message": message}))
        if not loaded or (name == "cracks" and renderer == "singleSymbol"):
            problems.append(f"{name}: the product's style is not applied ({message}, renderer {renderer})")
        if name == "cracks" and photos != with_cracks:
            problems.append(f"cracks: photos {photos[:5]}... differ from photos.csv's {with_cracks[:5]}...")
    if "photos" in layers and layers["photos"].featureCount() != len(rows):
        problems.append(f"photos: {layers['photos'].featureCount()} rows, photos.csv has {len(rows)}")
    if with_cracks and "cracks" in layers:
        photo = with_cracks[0]
        row = next(r for r in rows if r["photo"] == photo)
        drawn = [layers[n] for n in ("centrelines", "cracks") if n in layers]
        for layer in drawn:
            layer.setSubsetString(f"\"photo\" = '{photo}'")
        extent = QgsRectangle(0, -float(row["height"]), float(row["width"]), 0)
        render_png(drawn, layers["cracks"], args.png, extent=extent)
        print(json.dumps({"png": str(args.png), "photo": photo}))
    print(json.dumps({"problems": problems}))
    app.exitQgis()
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
