"""Build the installable QGIS plugin zip: dist/survey_cracks_qgis-<version>.zip (`make plugin`).

The zip holds one folder, survey_cracks_qgis/, as QGIS's "Install from ZIP" and the plugin
repository expect; caches and compiled files are left out.
"""

from __future__ import annotations

import configparser
import sys
import zipfile
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "survey_cracks_qgis"


def build(dist: Path) -> Path:
    metadata = configparser.ConfigParser()
    metadata.read(PLUGIN / "metadata.txt", encoding="utf-8")
    target = dist / f"{PLUGIN.name}-{metadata['general']['version']}.zip"
    dist.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(PLUGIN.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
                archive.write(path, path.relative_to(PLUGIN.parent).as_posix())
    return target


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "dist")))
