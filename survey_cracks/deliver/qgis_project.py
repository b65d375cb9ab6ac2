"""A survey that opens with one double-click: ``OUT/<survey>/<survey>.qgz`` and ``heatmaps.vrt``.

The raster folders hold styled layers (the .qml sidecars and the GeoPackages' layer_styles),
but a GIS analyst still had to add each raster's heatmap, cracks and centrelines by hand,
raster by raster. The project lists them all, grouped per raster (cracks and centrelines
over the heatmap over the imagery when the source is a local file), with the survey's
assets on top, each styled with the product's own .qml (embedded, so the project does not
depend on sidecars). Paths are relative to the project, so OUT can be moved or shared as a
folder. The .qgs XML comes from a Jinja2 template (templates/survey.qgs.j2), zipped as QGIS
saves a .qgz.

``heatmaps.vrt`` is every heatmap of the survey as one raster (one layer to style, to
sample, to clip), written as GDAL VRT XML from the heatmaps' own grids: the Python GDAL
bindings are not a dependency and ``gdalbuildvrt`` may be missing. It needs one CRS and
north-up grids; pixel-coordinate scans are separate images, not a mosaic, and get none.
"""

from __future__ import annotations

import os
import uuid
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio
from pyproj import CRS

from survey_cracks.deliver.product import SurveyProduct
from survey_cracks.outputs import GPKG, HEATMAP, atomic_write, write_text
from survey_cracks.outputs.qgis_styles import STYLES
from survey_cracks.vectors.heatmap import DESCRIPTION, NODATA, SCALE, UNITS

TEMPLATES = Path(__file__).parent / "templates"
HEATMAPS_VRT = "heatmaps.vrt"


@dataclass(frozen=True)
class ProjectLayer:
    """One layer of the project: where it is (relative to the project), how QGIS reads it and its style."""

    name: str
    kind: str  # "raster" or "vector"
    provider: str  # "gdal" or "ogr"
    source: str
    crs: str | None  # WKT; None: pixel coordinates
    style: str  # the .qml's elements, embedded in the maplayer
    geometry: str | None = None
    id: str = field(default_factory=lambda: f"layer_{uuid.uuid4().hex}")


@dataclass(frozen=True)
class LayerGroup:
    name: str
    layers: list[ProjectLayer]
    visible: bool = True


@cache
def embedded_style(qml: str) -> str:
    """The children of a .qml's ``<qgis>`` root: what a .qgs maplayer element holds for its style."""
    root = ET.fromstring((STYLES / qml).read_text())
    return "".join(ET.tostring(child, encoding="unicode") for child in root)


def _relative(path: Path, start: Path) -> str:
    return "./" + Path(os.path.relpath(path, start)).as_posix()


def _crs_of(path: Path) -> str | None:
    with rasterio.open(path) as src:
        return src.crs.to_wkt() if src.crs else None


def raster_group(product: SurveyProduct, index: int) -> LayerGroup:
    """One raster's layers, topmost first: centrelines, cracks, heatmap and, when a local file, its imagery."""
    raster = product.rasters[index]
    name, folder = raster.outcome.raster, raster.folder
    crs = _crs_of(folder / HEATMAP)
    gpkg = _relative(folder / GPKG, product.folder)
    layers = []
    if raster.lines is not None:
        layers.append(ProjectLayer(f"{name} centrelines", "vector", "ogr", f"{gpkg}|layername=centrelines", crs,
                                   embedded_style("centrelines.qml"), "Line"))
    layers.append(ProjectLayer(f"{name} cracks", "vector", "ogr", f"{gpkg}|layername=cracks", crs,
                               embedded_style("cracks.qml"), "Polygon"))
    layers.append(ProjectLayer(f"{name} heatmap", "raster", "gdal", _relative(folder / HEATMAP, product.folder), crs,
                               embedded_style("heatmap.qml")))
    if raster.source.is_file():
        layers.append(ProjectLayer(f"{name} imagery", "raster", "gdal", _relative(raster.source.resolve(), product.folder),
                                   crs, ""))
    return LayerGroup(name, layers)


def crs_xml(wkt: str | None) -> str:
    """A ``<spatialrefsys>`` QGIS reads (its WKT, and the authority code when there is one); empty for pixel coordinates."""
    if not wkt:
        return "<spatialrefsys nativeFormat=\"Wkt\"><wkt></wkt></spatialrefsys>"
    crs = CRS.from_wkt(wkt)
    authority = crs.to_authority()
    authid = f"<authid>{':'.join(authority)}</authid>" if authority else ""
    return f'<spatialrefsys nativeFormat="Wkt"><wkt>{escape(crs.to_wkt())}</wkt>{authid}</spatialrefsys>'


def project_xml(product: SurveyProduct) -> str:
    """The .qgs of a survey (see the module docstring)."""
    import jinja2

    groups = [raster_group(product, i) for i in range(len(product.rasters))]
    if product.crs is None:  # pixel-coordinate scans all sit at (0, 0): one shown at a time, not stacked
        groups = [replace(group, visible=i == 0) for i, group in enumerate(groups)]
    if product.assets and product.gpkg.is_file():
        assets_crs = product.crs.to_wkt() if product.crs is not None else None
        groups.insert(0, LayerGroup("assets", [ProjectLayer("assets", "vector", "ogr", f"./{product.gpkg.name}|layername=assets",
                                                            assets_crs, embedded_style("assets.qml"), "Polygon")],
                                    visible=product.crs is not None))
    bounds = []
    for raster in product.rasters:
        with rasterio.open(raster.folder / HEATMAP) as src:
            bounds.append(tuple(src.bounds))
    extent = (min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds), max(b[3] for b in bounds)) \
        if bounds else (0.0, 0.0, 1.0, 1.0)
    first_crs = next((layer.crs for group in groups for layer in group.layers if layer.kind == "raster"), None)
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False, keep_trailing_newline=True,
                                     undefined=jinja2.StrictUndefined)
    template = environment.get_template("survey.qgs.j2")
    return template.render(title=f"survey_cracks: {product.survey}", groups=groups, extent=extent, project_crs=first_crs,
                           crs_xml=crs_xml)


def write_qgis_project(product: SurveyProduct) -> Path:
    """``<survey>.qgz`` beside the survey's GeoPackage: a zip holding ``<survey>.qgs``, as QGIS writes one."""
    path = product.folder / f"{product.survey}.qgz"
    text = project_xml(product)
    with atomic_write(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{product.survey}.qgs", text)
    return path


def write_heatmaps_vrt(product: SurveyProduct) -> Path | None:
    """``heatmaps.vrt``: the survey's heatmaps as one raster; None (and no file) when they share no CRS or grid axes."""
    path = product.folder / HEATMAPS_VRT
    grids = []
    for raster in product.rasters:
        with rasterio.open(raster.folder / HEATMAP) as src:
            grids.append((raster.folder / HEATMAP, src.crs, src.transform, src.width, src.height, src.block_shapes[0]))
    crss = {g[1].to_wkt() if g[1] else None for g in grids}
    if not grids or None in crss or len(crss) != 1 or any(g[2].b or g[2].d or g[2].e >= 0 for g in grids):
        path.unlink(missing_ok=True)
        return None
    res_x = min(g[2].a for g in grids)
    res_y = min(-g[2].e for g in grids)
    x0 = min(g[2].c for g in grids)
    y0 = max(g[2].f for g in grids)
    x1 = max(g[2].c + g[3] * g[2].a for g in grids)
    y1 = min(g[2].f + g[4] * g[2].e for g in grids)
    width, height = round((x1 - x0) / res_x), round((y0 - y1) / res_y)
    sources = []
    for file, _, t, w, h, (block_y, block_x) in grids:
        dst = (round((t.c - x0) / res_x), round((y0 - t.f) / res_y), round(w * t.a / res_x), round(h * -t.e / res_y))
        sources.append(
            f'    <ComplexSource>\n      <SourceFilename relativeToVRT="1">{escape(os.path.relpath(file, product.folder))}'
            f'</SourceFilename>\n      <SourceBand>1</SourceBand>\n'
            f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" DataType="Byte" BlockXSize="{block_x}" BlockYSize="{block_y}"/>\n'
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
            f'      <DstRect xOff="{dst[0]}" yOff="{dst[1]}" xSize="{dst[2]}" ySize="{dst[3]}"/>\n'
            f'      <NODATA>{NODATA}</NODATA>\n    </ComplexSource>\n')
    text = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n'
            f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(crss.pop() or "")}</SRS>\n'
            f'  <GeoTransform>{x0!r}, {res_x!r}, 0.0, {y0!r}, 0.0, {-res_y!r}</GeoTransform>\n'
            f'  <VRTRasterBand dataType="Byte" band="1">\n    <Description>{DESCRIPTION}</Description>\n'
            f'    <NoDataValue>{NODATA}</NoDataValue>\n    <UnitType>{escape(UNITS)}</UnitType>\n'
            f'    <Offset>0</Offset>\n    <Scale>{SCALE!r}</Scale>\n'
            + "".join(sources) + "  </VRTRasterBand>\n</VRTDataset>\n")
    write_text(path, text)
    return path
