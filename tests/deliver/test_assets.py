"""Per-asset figures, crack types and condition classes on hand-built geometries.

Every expected number is worked out in the test from the shapes drawn, not read
back from the code.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from shapely.geometry import LineString, box

from survey_cracks.deliver.assets import GroundScale, assets_in_crs, figures_frame, load_assets, measure_assets
from survey_cracks.deliver.condition import AssetRules, CrackTypeRules, load_rules, width_verdict
from survey_cracks.deliver.crack_types import angle_to_axis, axis_angle, classify, count_junctions, line_angle, network_lines
from survey_cracks.errors import AssetError, ConfigError

CRS = "EPSG:32631"
X0, Y0 = 500000.0, 5700000.0  # a UTM origin: metres


def at(geom):
    return shapely.affinity.translate(geom, X0, Y0)


def frames(assets, lines, polygons, widths):
    asset_frame = gpd.GeoDataFrame({"asset_id": [a[0] for a in assets], "material": [a[1] for a in assets]},
                                   geometry=[at(a[2]) for a in assets], crs=CRS)
    line_frame = gpd.GeoDataFrame({"length": [g.length for g in lines], "mean_width": [w[0] for w in widths],
                                   "max_width": [w[1] for w in widths]}, geometry=[at(g) for g in lines], crs=CRS)
    crack_frame = gpd.GeoDataFrame({"length": [0.0] * len(polygons)}, geometry=[at(p) for p in polygons], crs=CRS)
    return asset_frame, line_frame, crack_frame


def test_length_density_area_width_and_class_of_one_panel():
    # A 10 m x 2 m deck panel (area 20 m²), axis along x, fully surveyed.
    panel = box(0, 0, 10, 2)
    lines = [LineString([(1, 1), (7, 1)]),          # 6 m along the axis, inside
             LineString([(8, 0.2), (8, 1.8)]),      # 1.6 m across, inside
             LineString([(9, 1.5), (12, 1.5)])]     # 3 m, of which 1 m (x 9..10) inside
    widths = [(0.001, 0.002), (0.0005, 0.0008), (0.0004, 0.0004)]  # (mean, max) in metres
    polygons = [box(1, 0.99, 7, 1.01),                # 6 x 0.02 = 0.12 m²
                box(9, 1.49, 12, 1.51)]               # 1 x 0.02 = 0.02 m² inside the panel
    assets, line_frame, crack_frame = frames([("P1", "concrete", panel)], lines, polygons, widths)
    figures, assigned = measure_assets(assets, crack_frame, line_frame, at(box(-5, -5, 20, 20)),
                                       GroundScale(1.0, 0.0002), AssetRules())
    p = figures[0]
    assert p.area == pytest.approx(20.0) and p.surveyed_area == pytest.approx(20.0)
    assert p.length == pytest.approx(6 + 1.6 + 1)                       # 8.6 m
    assert p.density == pytest.approx(8.6 / 20)                          # 0.43 m/m²
    assert p.cracked_area == pytest.approx(0.12 + 0.02)
    assert p.cracked_share == pytest.approx(0.14 / 20)
    assert p.crack_count == 2
    assert p.mean_width == pytest.approx((6 * 0.001 + 1.6 * 0.0005 + 1 * 0.0004) / 8.6, rel=1e-4)
    assert p.max_width == pytest.approx(0.002)
    assert p.type_lengths["longitudinal"] == pytest.approx(7.0) and p.type_lengths["transverse"] == pytest.approx(1.6)
    assert p.dominant_type == "longitudinal" and p.unit == "m"
    assert p.width_uncertainty == pytest.approx(0.0002)  # ±1 px at 0.2 mm GSD, in the table's unit (m)
    # widest crack 2 mm measured at 0.2 mm GSD: 1.8-2.2 mm, all above 1.3 mm -> AASHTO CS3
    assert p.width_class.startswith("CS3") and p.condition_state == 3 and p.condition == p.width_class
    assert assigned.asset_id == ["P1", "P1", "P1"]
    assert assigned.crack_type == ["longitudinal", "transverse", "longitudinal"]


def test_only_the_surveyed_part_of_an_asset_counts_and_pavement_density_class():
    # A 4 m x 4 m road segment of which the imagery covers the left half (8 m²).
    segment = box(0, 0, 4, 4)
    lines = [LineString([(0.5, 1), (1.5, 1)]), LineString([(3, 1), (3.9, 1)])]  # 1 m inside the imagery, 0.9 m outside
    assets, line_frame, crack_frame = frames([("R7", "pavement", segment)], lines, [], [(0.01, 0.02)] * 2)
    figures, _ = measure_assets(assets, crack_frame, line_frame, at(box(0, 0, 2, 4)), GroundScale(1.0, 0.004), AssetRules())
    r = figures[0]
    assert r.area == pytest.approx(16.0) and r.surveyed_area == pytest.approx(8.0)
    assert r.length == pytest.approx(1.0) and r.density == pytest.approx(1 / 8)      # 0.125 m/m² > 0.1: high
    assert r.density_class.startswith("high density")
    # 20 mm at 4 mm GSD: 16-24 mm, inside 10-75 mm: medium severity (state 2); density high (state 3) is worse
    assert r.width_class.startswith("medium severity") and r.condition_state == 3


def test_width_class_unresolved_when_the_gsd_is_too_coarse():
    rule = AssetRules().materials["concrete"].width
    # one pixel wide at 5 mm GSD: 0-10 mm, which spans the 0.3 mm limit: no guess
    verdict = width_verdict(rule, 0.005, 0.005)
    assert not verdict.resolved and verdict.name == "unresolved at 5 mm GSD: 0.0-10.0 mm spans the 0.3 mm limit"
    # 0.5 mm measured at 0.1 mm GSD: 0.4-0.6 mm, CS2
    assert width_verdict(rule, 0.0005, 0.0001).name.startswith("CS2")
    # no crack found where a pixel is finer than the first limit: the best state
    assert width_verdict(rule, None, 0.0002).state == 1
    # no crack found at 5 mm GSD says so instead of a confident CS1: a 1 mm crack can hide in a pixel
    coarse = width_verdict(rule, None, 0.005)
    assert not coarse.resolved and coarse.name == "unresolved at 5 mm GSD: no crack found, but the 0.3 mm limit is finer than a pixel"
    # a pavement's 10 mm limit is resolved at 5 mm GSD: no crack is low severity
    assert width_verdict(AssetRules().materials["pavement"].width, None, 0.005).state == 1


def test_pixel_coordinates_give_figures_in_px_and_no_class():
    assets, line_frame, crack_frame = frames([("scan", "concrete", box(0, -100, 200, 0))],
                                             [LineString([(10, -50), (110, -50)])], [], [(3.0, 5.0)])
    for frame in (assets, line_frame, crack_frame):
        frame.set_crs(None, allow_override=True, inplace=True)
    figures, _ = measure_assets(assets, crack_frame, line_frame, at(box(0, -100, 200, 0)), GroundScale(None, None), AssetRules())
    s = figures[0]
    assert s.unit == "px" and s.length == pytest.approx(100) and s.density == pytest.approx(100 / 20000)
    assert s.width_class == "unresolved: no ground scale (pixel coordinates)" and s.condition == "unresolved"
    assert s.width_uncertainty == 1.0 and "width_uncertainty" in figures_frame(figures, None).columns  # ±1 px


# ---------------------------------------------------------------------------------- crack types


def test_axis_is_the_long_side_of_the_minimum_rotated_rectangle():
    assert axis_angle(box(0, 0, 10, 2)) == pytest.approx(0) or axis_angle(box(0, 0, 10, 2)) == pytest.approx(180)
    assert axis_angle(box(0, 0, 2, 10)) == pytest.approx(90)
    rotated = shapely.affinity.rotate(box(0, 0, 10, 2), 30, origin=(0, 0))
    assert angle_to_axis(axis_angle(rotated), 30) == pytest.approx(0, abs=1e-6)


def test_direction_types_against_the_axis():
    rules = CrackTypeRules()
    zigzag = LineString([(0, 0), (1, 0.3), (2, -0.3), (3, 0.3), (4, 0)])  # wanders, overall course along x
    lines = np.array([zigzag, LineString([(0, 0), (0, 3)]), LineString([(0, 0), (1, 1)]),
                      LineString([(0, 0), (np.cos(np.radians(25)), np.sin(np.radians(25)))]),
                      LineString([(0, 0), (np.cos(np.radians(35)), np.sin(np.radians(35)))]),
                      LineString([(0, 0), (-1, 3)])], dtype=object)  # 108.4 deg: 71.6 off the x axis
    assert line_angle(zigzag) == pytest.approx(0, abs=1e-6)
    along = classify(lines, 0.0, np.zeros(len(lines), bool), rules)
    assert along == ["longitudinal", "transverse", "diagonal", "longitudinal", "diagonal", "transverse"]
    # the same lines on an asset whose axis is vertical swap longitudinal and transverse
    across = classify(lines, 90.0, np.zeros(len(lines), bool), rules)
    assert across == ["transverse", "longitudinal", "diagonal", "transverse", "diagonal", "longitudinal"]


def test_network_is_dense_branching_not_one_crack_with_side_branches():
    rules = CrackTypeRules()  # >= 3 junctions and <= 0.5 m of centreline per junction
    # a '#' of four 0.3 m strokes: 4 crossings, 1.2 m of line -> 0.3 m per junction: network
    hash_ = [LineString([(0.1, 0), (0.1, 0.3)]), LineString([(0.2, 0), (0.2, 0.3)]),
             LineString([(0, 0.1), (0.3, 0.1)]), LineString([(0, 0.2), (0.3, 0.2)])]
    assert count_junctions(np.array(hash_, dtype=object)) == 4
    # a 10 m crack with three 0.2 m side branches (T junctions on its middle): 3 junctions, 10.6 m -> 3.5 m each
    long = [LineString([(10, 0), (20, 0)])] + [LineString([(x, 0), (x, 0.2)]) for x in (12, 15, 18)]
    lines = np.array(hash_ + long + [LineString([(30, 0), (31, 0)])], dtype=object)
    assert count_junctions(np.array(long, dtype=object)) == 3
    flags = network_lines(lines, rules, metric=True)
    assert flags.tolist() == [True] * 4 + [False] * 4 + [False]
    assert classify(lines, 0.0, flags, rules)[:5] == ["network"] * 4 + ["longitudinal"]


# ---------------------------------------------------------------------------------- files


def test_asset_file_errors_name_the_file_and_the_fix(tmp_path):
    no_id = tmp_path / "no_id.geojson"
    gpd.GeoDataFrame({"name": ["a"]}, geometry=[at(box(0, 0, 1, 1))], crs=CRS).to_file(no_id)
    with pytest.raises(AssetError, match=r"no_id.geojson: no id column .* add a column 'asset_id'"):
        load_assets(no_id)
    lines = tmp_path / "lines.gpkg"
    gpd.GeoDataFrame({"asset_id": ["a"]}, geometry=[at(LineString([(0, 0), (1, 1)]))], crs=CRS).to_file(lines)
    with pytest.raises(AssetError, match="must be polygons"):
        load_assets(lines)
    with pytest.raises(AssetError, match="not found"):
        load_assets(tmp_path / "missing.gpkg")
    (tmp_path / "broken.gpkg").write_text("not a geopackage")
    with pytest.raises(AssetError, match="not a readable vector file"):
        load_assets(tmp_path / "broken.gpkg")
    no_crs = tmp_path / "no_crs.gpkg"
    gpd.GeoDataFrame({"id": [1]}, geometry=[at(box(0, 0, 1, 1))]).to_file(no_crs)
    assets = load_assets(no_crs)
    assert assets["asset_id"].tolist() == ["1"]
    with pytest.raises(AssetError, match="no CRS but the survey is georeferenced .* ogr2ogr -a_srs"):
        assets_in_crs(assets, gpd.GeoSeries(crs=CRS).crs, no_crs)
    # any CRS is reprojected to the survey's
    wgs = tmp_path / "wgs.geojson"
    gpd.GeoDataFrame({"asset_id": ["a"]}, geometry=[at(box(0, 0, 10, 10))], crs=CRS).to_crs("EPSG:4326").to_file(wgs)
    moved = assets_in_crs(load_assets(wgs), gpd.GeoSeries(crs=CRS).crs, wgs)
    assert moved.geometry.iloc[0].area == pytest.approx(100, rel=1e-3)


def test_rule_file_is_validated(tmp_path):
    good = tmp_path / "rules.yaml"
    good.write_text("default_material: pavement\ncrack_types: {longitudinal_max_deg: 20}\n")
    rules = load_rules(good)
    assert rules.default_material == "pavement" and rules.crack_types.longitudinal_max_deg == 20
    bad = tmp_path / "bad.yaml"
    bad.write_text("materials: {concrete: {width: {classes: [{name: a, state: 1, upper: 1.0}, {name: b, state: 2, upper: 0.5}]}}}\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_rules(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("crack_type: {}\n")
    with pytest.raises(ConfigError, match="crack_type"):
        load_rules(typo)


def test_union_area_equals_the_full_union_whether_or_not_polygons_meet():
    from survey_cracks.deliver.assets import union_area

    rng = np.random.default_rng(3)
    apart = [shapely.box(x, 0, x + 1, 5) for x in range(0, 40, 2)]  # never meet
    crossing = [shapely.box(*xy, *(xy + rng.uniform(1, 4, 2))) for xy in rng.uniform(0, 10, (30, 2))]  # many overlap
    ring = shapely.Point(50, 50).buffer(10).difference(shapely.Point(50, 50).buffer(8))
    inner = shapely.Point(50, 50).buffer(3)  # in the ring's hole: boxes meet, polygons do not
    for polygons in (apart, crossing, apart + crossing + [ring, inner], []):
        polygons = np.array(polygons, dtype=object)
        expected = float(shapely.area(shapely.union_all(polygons))) if len(polygons) else 0.0
        assert union_area(polygons) == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert union_area(np.array(crossing, dtype=object)) < sum(g.area for g in crossing), "overlaps counted once"


def test_clipped_cuts_only_what_crosses_the_area_and_keeps_the_rest():
    from survey_cracks.deliver.assets import clipped

    area = shapely.box(0, 0, 10, 10)
    inside, crossing, outside = shapely.box(2, 2, 3, 3), shapely.box(8, 8, 12, 12), shapely.box(20, 20, 21, 21)
    parts = clipped(np.array([inside, crossing, outside], dtype=object), area)
    assert parts[0] is inside
    assert shapely.equals(parts[1], shapely.box(8, 8, 10, 10)) and shapely.is_empty(parts[2])
