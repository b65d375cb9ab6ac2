"""The survey's heatmaps as one VRT and its QGIS project (deliver.qgis_project), from hand-made heatmaps."""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from pyproj import CRS
from rasterio.transform import from_origin
from shapely.geometry import box

from survey_cracks.deliver.assets import GroundScale
from survey_cracks.deliver.outcomes import RasterOutcome
from survey_cracks.deliver.product import RasterLayers, SurveyProduct
from survey_cracks.deliver.qgis_project import write_heatmaps_vrt, write_qgis_project
from survey_cracks.vectors.heatmap import NODATA, SCALE


def heatmap(folder: Path, x0: float, y0: float, value: int, res: float, crs: str | None = "EPSG:32631") -> RasterLayers:
    folder.mkdir(parents=True)
    with rasterio.open(folder / "heatmap.tif", "w", driver="GTiff", width=40, height=30, count=1, dtype="uint8", crs=crs,
                       transform=from_origin(x0, y0, res, res), nodata=NODATA) as dst:
        dst.write(np.full((1, 30, 40), value, np.uint8))
        dst.scales = (SCALE,)
    frame = gpd.GeoDataFrame({"id": []}, geometry=[], crs=crs)
    return RasterLayers(RasterOutcome(survey="s", raster=folder.name, source=""), folder, folder / "missing.tif", frame, None,
                        box(x0, y0 - 30 * res, x0 + 40 * res, y0))


def product(tmp_path: Path, rasters: list[RasterLayers], crs: CRS | None) -> SurveyProduct:
    frame = gpd.GeoDataFrame({"id": []}, geometry=[])
    return SurveyProduct("s", tmp_path, crs, GroundScale(1.0 if crs else None, 0.1 if crs else None), rasters, [], "", None, frame)


def test_vrt_places_each_heatmap_on_one_grid_at_the_finest_resolution(tmp_path):
    a = heatmap(tmp_path / "a", 1000.0, 2000.0, 10, 0.1)
    b = heatmap(tmp_path / "b", 1004.0, 1998.0, 200, 0.2)  # right of a, lower, twice as coarse
    path = write_heatmaps_vrt(product(tmp_path, [a, b], CRS.from_epsg(32631)))
    assert path == tmp_path / "heatmaps.vrt" and "relativeToVRT=\"1\"" in path.read_text()
    with rasterio.open(path) as vrt:
        assert vrt.crs == CRS.from_epsg(32631) and vrt.res == (0.1, 0.1) and vrt.nodata == NODATA
        assert vrt.bounds == (1000.0, 1992.0, 1012.0, 2000.0) and vrt.descriptions == ("crack probability",)
        data = vrt.read(1)
    assert (data[:30, :40] == 10).all() and (data[20:80, 40:120] == 200).all() and data[60, 10] == NODATA


def test_no_vrt_for_pixel_coordinate_scans_and_a_project_of_unchecked_extra_scans(tmp_path):
    scans = [heatmap(tmp_path / name, 0.0, 0.0, 5, 1.0, crs=None) for name in ("scan_1", "scan_2")]
    survey = product(tmp_path, scans, None)
    assert write_heatmaps_vrt(survey) is None and not (tmp_path / "heatmaps.vrt").exists()
    with zipfile.ZipFile(write_qgis_project(survey)) as archive:
        root = ET.fromstring(archive.read("s.qgs"))
    groups = root.find("layer-tree-group").findall("layer-tree-group")
    # stacked at (0, 0): only the first scan is shown; no centrelines layer without centrelines (patch mode)
    assert [(g.get("name"), g.get("checked")) for g in groups] == [("scan_1", "Qt::Checked"), ("scan_2", "Qt::Unchecked")]
    assert [layer.get("name") for layer in groups[0].findall("layer-tree-layer")] == ["scan_1 cracks", "scan_1 heatmap"]
    assert all(layer.findtext("datasource").startswith("./scan_") for layer in root.find("projectlayers"))
