"""QGIS styles that travel inside a GeoPackage.

QGIS applies a ``.qml`` beside a file only to a layer named like the file, so the second
layer of ``cracks.gpkg`` could not be styled by a sidecar. QGIS also reads a GeoPackage's
``layer_styles`` table (its own schema, the one "Save as default style" writes) and
applies the default style of each layer from it: the styles are written there.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

STYLES = Path(__file__).parent / "styles"

_TABLE = """CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
    f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30), update_time DATETIME)"""


def embed_layer_styles(gpkg: Path, styles: dict[str, str], geometry_column: str = "geom") -> None:
    """Store ``styles`` (layer name -> .qml file name in survey_cracks/outputs/styles) as each layer's default style."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    with sqlite3.connect(gpkg) as db:
        db.execute(_TABLE)
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, last_change) VALUES (?, ?, ?, ?)",
            ("layer_styles", "attributes", "layer_styles", now),
        )
        for layer, qml in styles.items():
            db.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
            db.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, f_geometry_column, styleName,"
                " styleQML, styleSLD, useAsDefault, description, owner, ui, update_time)"
                " VALUES ('', '', ?, ?, ?, ?, '', 1, 'survey_cracks default style', '', NULL, ?)",
                (layer, geometry_column, layer, (STYLES / qml).read_text(), now),
            )
