"""What a run writes, under which names, and the one way this package writes a file.

A raster's folder ``OUT/<survey>/<raster>/`` holds `OUTPUT_NAMES` (anything else there is
the user's and is kept). Every file is written through `atomic_write`: under a hidden
temp name in the same folder, renamed over the final name only when complete, so a
reader (or a run started after a kill) never sees half a file. A raster's folder as a
whole is built under `work_folder` and put in place by `replace_folder`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from survey_cracks.outputs.qgis_styles import STYLES, embed_layer_styles

if TYPE_CHECKING:  # writers take frames; this module stays cheap to import (model workers save checkpoints with it)
    import geopandas as gpd

HEATMAP, GPKG, GEOJSON, REPORT = "heatmap.tif", "cracks.gpkg", "cracks.geojson", "report.json"
CENTRELINES_GEOJSON = "centrelines.geojson"
CRACK_MASK = "crack_mask.tif"  # with run --write-mask: 1 crack, 0 none, 255 outside the footprint
STAC_ITEM = "item.json"  # written into the raster's folder by the run's deliverables (stac.py)
# Every name a raster folder gets from the pipeline; any other file there is the user's and is kept (`replace_folder`).
OUTPUT_NAMES = frozenset({HEATMAP, CRACK_MASK, GPKG, GEOJSON, CENTRELINES_GEOJSON, REPORT, STAC_ITEM,
                          *(p.name for p in STYLES.glob("*.qml"))})
# QGIS sidecar styles of a raster folder; centrelines only in mask mode.
RASTER_STYLES = ("heatmap.qml", "cracks.qml")
CENTRELINE_STYLE = "centrelines.qml"
Layer = tuple[str, "gpd.GeoDataFrame", str]  # (layer name, frame, geometry type)


def work_folder(final: Path) -> Path:
    """Where the raster folder ``final`` is built (and, after a kill, what a rerun resumes from)."""
    return final.with_name(f".{final.name}.partial")


def temp_name(path: Path) -> Path:
    """The hidden temp name `atomic_write` uses for ``path``: same folder and extension, this process's own."""
    return path.with_name(f".partial.{os.getpid()}.{path.name}")


@contextlib.contextmanager
def atomic_write(path: Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path to write ``path``'s content to; on success it replaces ``path``, on error it is removed.

    ``fsync``: the content is on disk before the rename (for files a rerun trusts after a power cut).
    """
    path = Path(path)
    tmp = temp_name(path)
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, fsync: bool = False) -> None:
    with atomic_write(path, fsync) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any, fsync: bool = False) -> None:
    """Atomic: a reader never sees half a file."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n", fsync)


def write_gpkg(path: Path, layers: list[Layer], styles: dict[str, str]) -> None:
    """A GeoPackage of ``layers`` with their QGIS styles (layer -> .qml in survey_cracks/outputs/styles) inside."""
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # pixel-coordinate outputs
        for layer, frame, geometry_type in layers:
            frame.to_file(tmp, driver="GPKG", layer=layer, engine="pyogrio", geometry_type=geometry_type,
                          promote_to_multi=geometry_type.startswith("Multi"))
        embed_layer_styles(tmp, {layer: styles[layer] for layer, _, _ in layers})


def add_gpkg_layer(path: Path, layer: Layer, style: str) -> None:
    """Add (or replace) one styled layer in an existing GeoPackage, working on a copy renamed into place."""
    name, frame, geometry_type = layer
    with atomic_write(path) as tmp, warnings.catch_warnings():
        shutil.copy(path, tmp)
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        frame.to_file(tmp, driver="GPKG", layer=name, engine="pyogrio", geometry_type=geometry_type,
                      promote_to_multi=geometry_type.startswith("Multi"))
        embed_layer_styles(tmp, {name: style})


def write_geojson(path: Path, frame: gpd.GeoDataFrame, geometry_type: str, layer: str) -> None:
    """``layer`` is the collection's ``name``: given, since GDAL would name it after the temp file written."""
    with atomic_write(path) as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        frame.to_file(tmp, driver="GeoJSON", engine="pyogrio", layer=layer, geometry_type=geometry_type,
                      promote_to_multi=geometry_type.startswith("Multi"))


def write_vectors(polygons: gpd.GeoDataFrame, lines: gpd.GeoDataFrame | None, folder: Path) -> None:
    """A raster folder's vectors: cracks.gpkg (layers 'cracks' and, in mask mode, 'centrelines'),
    cracks.geojson, centrelines.geojson, and the QGIS sidecar styles."""
    layers: list[Layer] = [("cracks", polygons, "MultiPolygon")]
    if lines is not None:
        layers.append(("centrelines", lines, "LineString"))
    for layer, frame, geometry_type in layers:
        write_geojson(folder / (GEOJSON if layer == "cracks" else CENTRELINES_GEOJSON), frame, geometry_type, layer)
    write_gpkg(folder / GPKG, layers, {layer: f"{layer}.qml" for layer, _, _ in layers})
    for style in RASTER_STYLES + ((CENTRELINE_STYLE,) if lines is not None else ()):
        shutil.copy(STYLES / style, folder / style)


def replace_folder(work: Path, final: Path) -> None:
    """Put a finished ``work`` folder in place of ``final``; the user's own files in ``final`` move along.

    They are hard-linked (copied across file systems) into ``work`` first, so at every moment
    they exist in one folder or the other; what the pipeline writes (`OUTPUT_NAMES`) is replaced.
    """
    if final.exists():
        for path in final.iterdir():
            if path.name in OUTPUT_NAMES or (work / path.name).exists():
                continue
            if path.is_dir():
                shutil.copytree(path, work / path.name)
                continue
            try:
                os.link(path, work / path.name)
            except OSError:
                shutil.copy2(path, work / path.name)
        shutil.rmtree(final)
    work.rename(final)


def remove_outputs(folder: Path) -> None:
    """Delete what the pipeline wrote into ``folder``; the folder goes too unless the user's own files are in it."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name in OUTPUT_NAMES:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()


__all__ = ["CENTRELINES_GEOJSON", "GEOJSON", "GPKG", "HEATMAP", "OUTPUT_NAMES", "REPORT", "STAC_ITEM", "add_gpkg_layer",
           "atomic_write", "remove_outputs", "replace_folder", "temp_name", "work_folder", "write_geojson", "write_gpkg",
           "write_json", "write_text", "write_vectors"]
