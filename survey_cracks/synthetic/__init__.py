"""Procedural survey imagery: concrete and asphalt with cracks and look-alikes.

The project ships no third-party imagery, so sample surveys, test fixtures and
benchmark rasters are drawn here. Every random quantity comes from a seed, and the
texture is a function of *global* pixel coordinates (hashed lattices, value noise
and vector features rasterised into padded windows), so a raster drawn window by
window is identical to one drawn in a single piece: that is what lets
:func:`write_orthomosaic` make 400-megapixel rasters in bounded memory.

Cracks are dark, tortuous, branching and irregular. Confusers that a classifier
must learn to reject are drawn with the same machinery but never enter the crack
mask: straight joints and formwork lines, stains, soft shadows, tyre marks, paint
lines, moss specks and bugholes.

Annotation convention: crack lines carry a ``width`` column that is always in the
map units of the *raster* CRS (metres for a projected CRS), whatever CRS the
geometries themselves are written in, because a width in degrees is meaningless.

Modules, in the order the data flows: ``noise`` (global-coordinate value noise),
``cracks`` (crack polylines), ``features`` (footprint and confusers), ``scene``
(every vector feature of one image, and a later date of it), ``render`` (one
window's pixels) and ``survey`` (the public makers below).
"""

from survey_cracks.synthetic.cracks import crack_lines
from survey_cracks.synthetic.noise import Surface
from survey_cracks.synthetic.scene import LaterDate
from survey_cracks.synthetic.survey import render_scene, write_orthomosaic

__all__ = ["LaterDate", "Surface", "crack_lines", "render_scene", "write_orthomosaic"]
