"""Regenerate the bundled sample surveys (procedural imagery, the project's own).

Everything here is drawn by ``survey_cracks.synthetic`` from fixed seeds, so the
files are reproducible and carry no third-party licence. Run from the repository
root::

    python sample_surveys/make_samples.py [--out sample_surveys]

It writes two georeferenced orthomosaics with vector crack annotations and asset
layers, a later date of the bridge deck (grown and new cracks, another grid) in
later/, and six close-range road scans with crack masks; see sample_surveys/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import geopandas as gpd
from shapely.geometry import box

from survey_cracks.synthetic import LaterDate, render_scene, write_orthomosaic

# (file stem, surface, seed, n_cracks): one scan has no cracks at all, only look-alikes.
ROAD_SCANS: list[tuple[str, str, int, int | None]] = [
    ("scan_001", "asphalt", 101, 2),
    ("scan_002", "concrete", 102, 2),
    ("scan_003", "asphalt", 103, 3),
    ("scan_004", "concrete", 114, 0),
    ("scan_005", "asphalt", 105, 1),
    ("scan_006", "concrete", 106, 3),
]
SCAN_SIZE = (480, 640)  # height, width


def write_assets(path: Path, ids: list[str], boxes: list[tuple[float, float, float, float]], material: str, crs: str,
                 store_crs: str | None = None) -> Path:
    """Asset polygons with an asset_id and a material, stored in ``store_crs`` (any CRS works)."""
    frame = gpd.GeoDataFrame({"asset_id": ids, "material": [material] * len(ids)}, geometry=[box(*b) for b in boxes], crs=crs)
    if store_crs:
        frame = frame.to_crs(store_crs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    frame.to_file(path)
    return path


def make_quay_wall(out: Path) -> list[Path]:
    """Concrete quay wall, UTM 31N at 5 mm, cracks as lines in EPSG:4326 (tests reprojection); four wall panels."""
    folder = out / "quay_wall"
    tif, ann = folder / "quay_wall_ortho.tif", folder / "quay_wall_ortho.cracks.geojson"
    x0, y1 = 500000.0, 5700000.0  # 15 m x 12.5 m: panels of 7.5 m x 6.25 m, stored in lon/lat
    panels = [(x0 + i * 7.5, y1 - (j + 1) * 6.25, x0 + (i + 1) * 7.5, y1 - j * 6.25) for j in range(2) for i in range(2)]
    assets = write_assets(folder / "assets.geojson", ["QW-A1", "QW-A2", "QW-B1", "QW-B2"], panels, "concrete",
                          "EPSG:32631", "EPSG:4326")
    write_orthomosaic(
        tif,
        3000,
        2500,
        seed=20240611,
        crs="EPSG:32631",
        origin=(500000.0, 5700000.0),
        gsd=0.005,
        annotation_path=ann,
        annotation_crs="EPSG:4326",
        block=512,
        compress="JPEG",
        surface="concrete",
    )
    return [tif, ann, assets]


def make_bridge_deck(out: Path, later: LaterDate | None = None) -> list[Path]:
    """Asphalt-surfaced bridge deck, British National Grid at 4 mm, polygon annotations; four lanes (pavement).

    ``later``: the same deck at a later date, into ``out/later/bridge_deck``.
    """
    folder = out / ("later" if later else "") / "bridge_deck"
    tif, ann = folder / "bridge_deck_ortho.tif", folder / "bridge_deck_ortho.cracks.gpkg"
    x0, y1 = 530120.0, 180340.0  # 8 m x 6.4 m, traffic runs along y (the paint line): four lanes of 2 m x 6.4 m
    lanes = [(x0 + k * 2.0, y1 - 6.4, x0 + (k + 1) * 2.0, y1) for k in range(4)]
    folder.mkdir(parents=True, exist_ok=True)
    assets = write_assets(folder / "assets.gpkg", [f"lane-{k + 1}" for k in range(4)], lanes, "pavement", "EPSG:27700")
    write_orthomosaic(
        tif,
        2000,
        1600,
        seed=20240923,
        crs="EPSG:27700",
        origin=(530120.0, 180340.0),
        gsd=0.004,
        annotation_path=ann,
        block=512,
        compress="JPEG",
        surface="asphalt",
        annotation_geometry="polygons",
        later=later,
    )
    return [tif, ann, assets]


def make_road_scans(out: Path) -> list[Path]:
    """Close-range photos (plain JPEG, no georeferencing) with 0/255 PNG masks beside them."""
    folder = out / "road_scans"
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for stem, surface, seed, n_cracks in ROAD_SCANS:
        rgb, mask = render_scene(*SCAN_SIZE, seed=seed, surface=surface, n_cracks=n_cracks)  # type: ignore[arg-type]
        jpg, png = folder / f"{stem}.jpg", folder / f"{stem}.mask.png"
        if not cv2.imwrite(str(jpg), np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"could not write {jpg}")
        if not cv2.imwrite(str(png), mask, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise OSError(f"could not write {png}")
        written += [jpg, png]
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            "Regenerate the bundled sample surveys deterministically (fixed seeds): "
            "quay_wall/ (3000x2500 GeoTIFF, EPSG:32631, irregular footprint, crack lines "
            "as GeoJSON in EPSG:4326), bridge_deck/ (2000x1600 GeoTIFF, EPSG:27700, crack "
            "polygons as GeoPackage), later/bridge_deck/ (the deck at a later date: three cracks grown, one new, "
            "another grid) and road_scans/ (six 640x480 JPEGs with .mask.png). "
            "All imagery is procedural (survey_cracks.synthetic)."
        )
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder to write into (default: the folder holding this script, sample_surveys/)",
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    files = (make_quay_wall(args.out) + make_bridge_deck(args.out) + make_bridge_deck(args.out, LaterDate())
             + make_road_scans(args.out))
    total = sum(p.stat().st_size for p in files)
    for p in files:
        print(f"{p.stat().st_size / 1e6:7.2f} MB  {p}")
    print(f"{len(files)} files, {total / 1e6:.1f} MB, in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
