"""Crack type of a centreline: longitudinal, transverse, diagonal or network.

The *main axis* of an asset is the direction of the long side of its minimum rotated
rectangle (a road segment's direction of travel, a deck panel's span, a wall's run).
A centreline's *direction* is the length-weighted mean of its segments' directions as
axes (angles doubled, so 10° and 190° agree and a zigzag keeps its overall course).
Its angle to the main axis, 0-90°, decides:

* **longitudinal**: at most ``longitudinal_max_deg`` (30°);
* **transverse**: at least ``transverse_min_deg`` (60°);
* **diagonal**: in between;
* **network** (alligator / map cracking), before any of these: the line belongs to a
  connected crack (centrelines that touch) with at least ``network_min_junctions`` (3)
  junctions — points where three or more centreline branches meet — and at most
  ``network_max_spacing_m`` (0.5 m; ``network_max_spacing_px`` without georeferencing)
  of centreline per junction: dense branching, not one long crack with a few side
  branches.

Angles are measured in the coordinates given, which must be metric (or pixels): a
projected CRS, never degrees.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import shapely

from survey_cracks.deliver.condition import CrackTypeRules
from survey_cracks.io.geometry import touching_groups

CrackType = Literal["longitudinal", "transverse", "diagonal", "network"]
CRACK_TYPES: tuple[CrackType, ...] = ("longitudinal", "transverse", "diagonal", "network")
_TOUCH = 1e-6  # map units: line ends this close meet


def axis_angle(geometry: shapely.Geometry) -> float:
    """Direction (degrees, 0-180) of the long side of a geometry's minimum rotated rectangle."""
    rectangle = shapely.minimum_rotated_rectangle(geometry)
    xy = shapely.get_coordinates(rectangle)
    if len(xy) < 4:  # degenerate: a line or a point
        xy = shapely.get_coordinates(geometry)
        d = xy[-1] - xy[0]
        return float(np.degrees(np.arctan2(d[1], d[0])) % 180)
    sides = np.diff(xy[:3], axis=0)
    long = sides[int(np.argmax(np.hypot(sides[:, 0], sides[:, 1])))]
    return float(np.degrees(np.arctan2(long[1], long[0])) % 180)


def line_angle(line: shapely.Geometry) -> float:
    """Length-weighted mean direction (degrees, 0-180) of a (multi)line's segments, taken as axes."""
    total = 0j
    for part in shapely.get_parts(line):
        d = np.diff(shapely.get_coordinates(part), axis=0)
        length = np.hypot(d[:, 0], d[:, 1])
        total += np.sum(length * np.exp(2j * np.arctan2(d[:, 1], d[:, 0])))
    return float(np.degrees(np.angle(total) / 2) % 180)


def angle_to_axis(angle: float, axis: float) -> float:
    """Smallest angle (0-90°) between two axes given in degrees."""
    d = abs(angle - axis) % 180
    return float(min(d, 180 - d))


def direction_type(angle: float, axis: float, rules: CrackTypeRules) -> CrackType:
    off = angle_to_axis(angle, axis)
    if off <= rules.longitudinal_max_deg:
        return "longitudinal"
    if off >= rules.transverse_min_deg:
        return "transverse"
    return "diagonal"


def network_lines(lines: np.ndarray, rules: CrackTypeRules, metric: bool) -> np.ndarray:
    """Which lines belong to a densely branching connected crack (see the module docstring)."""
    n = len(lines)
    flags = np.zeros(n, dtype=bool)
    if n < 2:
        return flags
    spacing = rules.network_max_spacing_m if metric else rules.network_max_spacing_px
    for members in touching_groups(lines, distance=_TOUCH):
        if len(members) < 3:
            continue
        junctions = count_junctions(lines[members])
        length = float(shapely.length(lines[members]).sum())
        if junctions >= rules.network_min_junctions and length / junctions <= spacing:
            flags[members] = True
    return flags


def count_junctions(lines: np.ndarray) -> int:
    """Points where three or more branches meet, after noding (a T counts: its bar is split there)."""
    noded = shapely.get_parts(shapely.node(shapely.multilinestrings(shapely.get_parts(lines))))
    ends = np.concatenate([shapely.get_coordinates(shapely.get_point(noded, i)) for i in (0, -1)])
    _, degree = np.unique(np.round(ends / _TOUCH).astype(np.int64), axis=0, return_counts=True)
    return int(np.count_nonzero(degree >= 3))


def classify(lines: np.ndarray, axis: float, network: np.ndarray, rules: CrackTypeRules) -> list[CrackType]:
    """Type of each line against ``axis`` (degrees); ``network`` flags (from network_lines) come first."""
    return ["network" if net else direction_type(line_angle(line), axis, rules) for line, net in zip(lines, network)]
