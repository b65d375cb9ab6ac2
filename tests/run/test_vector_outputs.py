"""A raster folder's vector files as GIS tools open them."""

import json

import geopandas as gpd
from shapely.geometry import LineString, box

from survey_cracks.outputs import CENTRELINES_GEOJSON, GEOJSON, write_vectors


def test_geojson_layers_are_named_after_what_they_hold_not_the_temp_file(tmp_path):
    polygons = gpd.GeoDataFrame({"area": [1.0]}, geometry=[box(0, 0, 1, 1)])
    lines = gpd.GeoDataFrame({"length": [1.0]}, geometry=[LineString([(0, 0), (1, 1)])])
    write_vectors(polygons, lines, tmp_path)
    assert json.loads((tmp_path / GEOJSON).read_text())["name"] == "cracks"
    assert json.loads((tmp_path / CENTRELINES_GEOJSON).read_text())["name"] == "centrelines"
    assert not list(tmp_path.glob(".partial*"))
