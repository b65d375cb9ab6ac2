"""The public makers: a close-range photo with its mask, and a georeferenced orthomosaic with its annotation."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.transform import from_origin
from rasterio.windows import Window

from survey_cracks.synthetic.noise import Surface
from survey_cracks.synthetic.render import _render_window
from survey_cracks.synthetic.scene import LaterDate, _build_scene, _Scene


def render_scene(
    height: int,
    width: int,
    seed: int,
    surface: Surface = "concrete",
    n_cracks: int | None = None,
    confusers: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """One close-range survey photo and its crack mask, for road scans and tests.

    Returns ``(rgb uint8 (H, W, 3), mask uint8 (H, W) in {0, 255})``. The mask marks
    cracks only: confusers are drawn but left out, which is the point of them.
    ``n_cracks=None`` draws 1-3 cracks; 0 gives an all-zero mask.
    """
    if surface not in ("concrete", "asphalt"):
        raise ValueError(f"surface must be 'concrete' or 'asphalt', not {surface!r}")
    scene = _build_scene(
        seed,
        (0.0, 0.0, float(width), float(height)),
        1.0,
        Affine.identity(),
        surface,
        n_cracks,
        confusers,
        False,
        grain=1.6 if surface == "asphalt" else 1.3,
    )
    planes, mask, _ = _render_window(scene, 0, 0, height, width)
    return np.ascontiguousarray(np.moveaxis(planes, 0, 2)), mask

def write_orthomosaic(
    path: str | Path,
    width: int,
    height: int,
    *,
    seed: int,
    crs: str = "EPSG:32631",
    origin: tuple[float, float] = (500000.0, 5700000.0),
    gsd: float = 0.005,
    n_cracks: int | None = None,
    annotation_path: str | Path | None = None,
    annotation_crs: str | None = None,
    block: int = 1024,
    compress: Literal["JPEG", "DEFLATE"] = "JPEG",
    surface: Surface = "concrete",
    annotation_geometry: Literal["lines", "polygons"] = "lines",
    later: LaterDate | None = None,
    label_joints: bool = False,
) -> None:
    """Write a georeferenced, tiled RGB GeoTIFF survey with an irregular footprint.

    Drawn window by window (never the whole raster in memory) so that benchmark
    rasters of hundreds of megapixels can be made anywhere. Pixels outside the
    footprint are 0 and masked in an internal GDAL mask band. Cracks (about 1.2
    per megapixel unless ``n_cracks``) are vectors for the whole extent, so they
    run continuously across tiles; with ``annotation_path`` (.geojson or .gpkg)
    the parts inside the footprint are written as LineStrings with a ``width``
    column in raster-CRS units (or, with ``annotation_geometry="polygons"``, as
    the lines buffered by width/2), in ``annotation_crs`` or the raster CRS.
    ``surface`` picks concrete or asphalt. Same seed, same raster, whatever
    ``block``: texture and vectors depend on global pixel coordinates only.
    ``later`` draws the same site at a later date (LaterDate: grown and new cracks, a
    shifted grid); the annotation then holds the later date's cracks.
    ``label_joints`` adds the joints and formwork lines to the annotation as polygons
    labelled ``not_crack`` (the cracks then carry ``label`` = crack), as a user marks
    the straight look-alikes a model takes for cracks.
    """
    if block % 16 or block <= 0:
        raise ValueError(f"block must be a positive multiple of 16, not {block}")
    if compress not in ("JPEG", "DEFLATE"):
        raise ValueError(f"compress must be 'JPEG' or 'DEFLATE', not {compress!r}")
    if annotation_geometry not in ("lines", "polygons"):
        raise ValueError(f"annotation_geometry must be 'lines' or 'polygons', not {annotation_geometry!r}")
    if annotation_path is not None and Path(annotation_path).suffix.lower() not in _ANNOTATION_DRIVERS:
        raise ValueError(f"annotation_path must end in .geojson or .gpkg, not {Path(annotation_path).name}")
    transform = from_origin(origin[0], origin[1], gsd, gsd)
    bounds = (origin[0], origin[1] - height * gsd, origin[0] + width * gsd, origin[1])
    scene = _build_scene(seed, bounds, gsd, transform, surface, n_cracks, True, True, later=later)
    if later is not None:  # the same site on another grid
        transform = transform * Affine.translation(*later.shift_px)
        scene.transform = transform

    profile: dict[str, object] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    if compress == "JPEG":
        profile.update(compress="JPEG", photometric="YCBCR", jpeg_quality=90)
    else:
        profile.update(compress="DEFLATE", predictor=2, photometric="RGB")

    sub = min(block, 512)  # draw in <= 512 px pieces: bounded float temporaries
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a small block cache: written tiles are flushed, not hoarded (bounded RAM at any size)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=64 * 2**20), rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, height, block):
            bh = min(block, height - row0)
            for col0 in range(0, width, block):
                bw = min(block, width - col0)
                rgb = np.zeros((3, bh, bw), np.uint8)
                valid = np.zeros((bh, bw), np.uint8)
                for r in range(0, bh, sub):
                    for c in range(0, bw, sub):
                        sh, sw = min(sub, bh - r), min(sub, bw - c)
                        img, _, v = _render_window(scene, row0 + r, col0 + c, sh, sw)
                        rgb[:, r : r + sh, c : c + sw] = img
                        valid[r : r + sh, c : c + sw] = v if v is not None else 255
                win = Window(col0, row0, bw, bh)
                dst.write(rgb, window=win)
                dst.write_mask(valid, window=win)

    if annotation_path is not None:
        _write_annotations(scene, Path(annotation_path), crs, annotation_crs, annotation_geometry, label_joints)

_ANNOTATION_DRIVERS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG"}

def _write_annotations(
    scene: _Scene, path: Path, crs: str, annotation_crs: str | None, geometry: Literal["lines", "polygons"],
    label_joints: bool = False,
) -> None:
    """Crack vectors clipped to the footprint, ``width`` in raster-CRS units (and the joints, labelled)."""
    import geopandas as gpd

    driver = _ANNOTATION_DRIVERS[path.suffix.lower()]
    geoms: list[shapely.Geometry] = []
    widths: list[float] = []
    for line, w in scene.cracks:
        g = line if geometry == "lines" else line.buffer(w / 2, quad_segs=4)
        if scene.footprint is not None:
            g = g.intersection(scene.footprint)
        for part in getattr(g, "geoms", [g]):
            if not part.is_empty and part.geom_type in ("LineString", "Polygon"):
                geoms.append(part)
                widths.append(w)
    labels = ["crack"] * len(geoms)
    if label_joints:
        joints = [g for kind in ("joint_fill", "joint_dark", "joint_light") for g in scene.layers[kind].geoms]
        if joints:
            merged = shapely.union_all(joints)
            if scene.footprint is not None:
                merged = merged.intersection(scene.footprint)
            parts = [p for p in getattr(merged, "geoms", [merged]) if p.geom_type == "Polygon" and not p.is_empty]
            geoms += parts
            widths += [float("nan")] * len(parts)
            labels += ["not_crack"] * len(parts)
    columns: dict[str, object] = {"width": np.asarray(widths, float)}
    if label_joints:
        columns["label"] = labels
    gdf = gpd.GeoDataFrame(columns, geometry=geoms, crs=crs)
    if annotation_crs is not None:
        gdf = gdf.to_crs(annotation_crs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    gdf.to_file(path, driver=driver, layer=path.stem if driver == "GPKG" else None)
