"""Groups of geometries that touch, transitively: one helper for every module that merges or groups shapes.

Here, in the lowest room that needs it (annotations merge touching shapes), so that vectors and
deliver use the same code. An STRtree finds the touching pairs, scipy's connected_components the groups.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def touching_groups(geometries: Any, distance: float = 0.0) -> list[np.ndarray]:
    """Indices of each group of geometries that intersect (or lie within ``distance``), transitively.

    Groups come in the order of their first member, members in ascending order, so a caller that
    rebuilds its list from the groups keeps the input order.
    """
    geometries = np.asarray(geometries, dtype=object)
    n = len(geometries)
    if n == 0:
        return []
    tree = shapely.STRtree(geometries)
    if distance > 0:
        left, right = tree.query(geometries, predicate="dwithin", distance=distance)
    else:
        left, right = tree.query(geometries, predicate="intersects")
    graph = coo_matrix((np.ones(left.size, dtype=np.int8), (left, right)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)  # numbered in the order of each group's first member
    order = np.argsort(labels, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(labels[order])) + 1)
