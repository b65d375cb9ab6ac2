"""The collection layout: a survey of photos as one GeoPackage, one table and a heatmap per photo.

A road-scan survey is tens of thousands of photos; a folder of ten files per photo is half a
million files and no one layer to open. Here a survey's photos go into ``collection/``:

- ``cracks.gpkg``: layers ``cracks`` (polygons) and ``centrelines``, every feature with a ``photo``
  column, in each photo's pixel coordinates (x = column, y = -row); layer ``photos``: a row per photo
  (counts, crack length, max width, score, metrics, as summary.csv has them for rasters; a point in
  EPSG:4326 where the photo's EXIF has a GPS position); the
  QGIS styles embedded, so it opens styled;
- ``photos.csv``: the same table;
- ``heatmaps/<photo>.png``: crack probability as 8-bit levels (`vectors.heatmap`: level / 250, 255
  outside the photo), PNG-compressed; none with ``--no-heatmaps``;
- ``photos.jsonl``: the journal, a line per finished photo (its report and what it was made from):
  how a killed or later run knows which photos are done; ``report.json``: the collection's totals.

Features are appended as photos finish (`CollectionWriter.add`, flushed every few photos): memory
holds one flush's features, never the survey's.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from survey_cracks.deliver.outcomes import SUMMARY_COLUMNS, RasterOutcome
from survey_cracks.outputs import GPKG, atomic_write
from survey_cracks.outputs.qgis_styles import embed_layer_styles

COLLECTION = "collection"  # the survey's folder in OUT that holds the collection
JOURNAL = "photos.jsonl"
PHOTOS_CSV = "photos.csv"
PHOTO_CHANGES_CSV = "photo_changes.csv"  # `compare`: OUT/<survey>/, beside changes.csv
HEATMAPS = "heatmaps"
LAYERS = {"cracks": "MultiPolygon", "centrelines": "LineString"}
PHOTO_COLUMNS = ["photo", *[c for c in SUMMARY_COLUMNS if c not in ("survey", "raster")], "max_width", "score",
                 "network_px", "heatmap", "longitude", "latitude", "time", "position"]
EXIF, FRAME_CSV = "exif", "frame positions"  # where a photo's position came from (column "position")


@dataclass(frozen=True)
class FramePosition:
    """Where a photo was taken, EPSG:4326, and (from a CSV of frame positions) when; ``source``: EXIF or FRAME_CSV."""

    lon: float
    lat: float
    time: str | None = None
    source: str = FRAME_CSV


def apply_positions(rows: Iterator[dict[str, Any]], positions: dict[str, FramePosition]) -> Iterator[dict[str, Any]]:
    """``rows`` with the position of each photo in ``positions`` (which wins over its EXIF)."""
    for row in rows:
        position = positions.get(row["photo"])
        yield row if position is None else row | {"longitude": position.lon, "latitude": position.lat,
                                                  "time": position.time, "position": position.source}


def table_positions(folder: Path) -> dict[str, FramePosition]:
    """The positions photos.csv gives (photo -> position), with where each came from: what a rewrite keeps."""
    path = folder / PHOTOS_CSV
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype={"photo": str, "time": str, "position": str})
    if "position" not in table.columns:  # written before positions had a source: EXIF was the only one
        table["position"], table["time"] = EXIF, None
    table = table[table["longitude"].notna() & table["latitude"].notna()]
    return {row.photo: FramePosition(float(row.longitude), float(row.latitude),
                                     row.time if isinstance(row.time, str) else None,
                                     row.position if isinstance(row.position, str) else EXIF)
            for row in table.itertuples()}


def is_collection(outcome: RasterOutcome) -> bool:
    """Whether a manifest entry is a survey's collection of photos rather than one raster."""
    return outcome.raster == COLLECTION


def heatmap_name(photo: str) -> str:
    return f"{HEATMAPS}/{photo}.png"


def photo_row(outcome: RasterOutcome, score: float | None, network_px: int | None, heatmap: bool,
              position: tuple[float, float] | None = None) -> dict[str, Any]:
    """A photo's line in ``photos.csv`` and the ``photos`` layer: summary.csv's columns, the photo's name first;
    ``position``: its EXIF GPS (longitude, latitude), EPSG:4326."""
    row = outcome.summary_row()
    row.pop("survey")
    lon, lat = position if position is not None else (None, None)
    return {"photo": row.pop("raster"), **row, "max_width": outcome.counts.max_width, "score": score,
            "network_px": network_px, "heatmap": heatmap_name(outcome.raster) if heatmap and outcome.status == "ok" else "",
            "longitude": lon, "latitude": lat, "time": None, "position": EXIF if position is not None else ""}


class CollectionWriter:
    """Appends photos' vectors to ``folder``/cracks.gpkg in flushes, and their journal lines after them.

    The journal line of a photo is written only after its features are in the GeoPackage, so a
    kill leaves at worst features of photos the journal does not list: `start` deletes those.
    """

    def __init__(self, folder: Path, flush_photos: int = 32, flush_features: int = 20_000) -> None:
        self.folder, self.gpkg, self.journal = folder, folder / GPKG, folder / JOURNAL
        self.flush_photos, self.flush_features = flush_photos, flush_features
        # each layer's frames since the last flush, with their photo's name: the ``photo`` column is added once per
        # flush (per photo, a GeoDataFrame's assign and column selection cost the client ~1 ms)
        self.frames: dict[str, list[tuple[str, gpd.GeoDataFrame]]] = {name: [] for name in LAYERS}
        self.lines: list[str] = []
        self.features = 0

    def start(self, keep: set[str]) -> None:
        """Ready to append: features of photos not in ``keep`` (redone now, or cut off by a kill) deleted; a torn last
        journal line ended, so that the next line is not appended to it (and lost with it)."""
        (self.folder / HEATMAPS).mkdir(parents=True, exist_ok=True)
        if self.journal.is_file() and self.journal.stat().st_size:
            with open(self.journal, "rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
        if not self.gpkg.is_file():
            return
        with sqlite3.connect(self.gpkg) as db:
            db.execute("CREATE TEMP TABLE keep (photo TEXT PRIMARY KEY)")
            db.executemany("INSERT INTO keep VALUES (?)", [(p,) for p in keep])
            tables = {row[0] for row in db.execute("SELECT table_name FROM gpkg_contents")}
            for layer in LAYERS:
                if layer in tables:
                    db.execute(f'DELETE FROM "{layer}" WHERE photo NOT IN (SELECT photo FROM keep)')

    def add(self, photo: str, polygons: gpd.GeoDataFrame, lines: gpd.GeoDataFrame | None, journal_line: dict) -> None:
        for name, frame in (("cracks", polygons), ("centrelines", lines)):
            if frame is not None and len(frame):
                self.frames[name].append((photo, frame))
                self.features += len(frame)
        self.lines.append(json.dumps(journal_line))
        if len(self.lines) >= self.flush_photos or self.features >= self.flush_features:
            self.flush()

    def flush(self) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'crs' was not provided")
            for name, frames in self.frames.items():
                if frames:
                    frame = pd.concat([f for _, f in frames], ignore_index=True)
                    names = np.array([photo for photo, _ in frames], dtype=object)
                    frame.insert(0, "photo", np.repeat(names, [len(f) for _, f in frames]))
                    pyogrio.write_dataframe(frame, self.gpkg, layer=name, driver="GPKG", append=self.gpkg.is_file()
                                            and name in pyogrio.list_layers(self.gpkg)[:, 0], geometry_type=LAYERS[name],
                                            promote_to_multi=LAYERS[name].startswith("Multi"))
                    frames.clear()
        if self.lines:
            with open(self.journal, "a") as fh:
                fh.write("".join(line + "\n" for line in self.lines))
                fh.flush()
                os.fsync(fh.fileno())
        self.lines.clear()
        self.features = 0

    def finish(self, rows: Iterator[dict[str, Any]], empty: dict[str, gpd.GeoDataFrame]) -> None:
        """The ``photos`` layer and photos.csv from ``rows``; empty layers for what no photo had; the styles."""
        self.flush()
        present = set(pyogrio.list_layers(self.gpkg)[:, 0]) if self.gpkg.is_file() else set()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'crs' was not provided")
            for name, frame in empty.items():
                if name not in present:
                    pyogrio.write_dataframe(frame.assign(photo="")[["photo", *frame.columns]], self.gpkg, layer=name,
                                            driver="GPKG", geometry_type=LAYERS[name], append=self.gpkg.is_file())
        table = pd.DataFrame(list(rows), columns=PHOTO_COLUMNS)
        with atomic_write(self.folder / PHOTOS_CSV) as tmp:
            table.to_csv(tmp, index=False, quoting=csv.QUOTE_MINIMAL)
        table = table.astype({c: "string" for c in ("error", "warnings", "annotation_error", "reason", "time", "position")})
        if table["longitude"].notna().any():  # photos with EXIF GPS: a point each, so the collection opens on a map
            located = table["longitude"].notna()
            points = gpd.points_from_xy(table["longitude"].where(located, 0.0), table["latitude"].where(located, 0.0))
            table = gpd.GeoDataFrame(table, geometry=gpd.GeoSeries(points).where(located.to_numpy(), None), crs="EPSG:4326")
        pyogrio.write_dataframe(table, self.gpkg, layer="photos", driver="GPKG")
        embed_layer_styles(self.gpkg, {"cracks": "cracks.qml", "centrelines": "centrelines.qml"})


def read_journal(folder: Path) -> dict[str, dict[str, Any]]:
    """Each finished photo's last journal line (photo name -> line); a torn last line (a kill) is skipped.

    Holds every line (about 8 KiB a photo): for a pass over the photos, `iter_journal` holds one.
    """
    return dict(iter_journal(folder))


def iter_journal(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each finished photo's last journal line, one at a time, in the order the photos first appear.

    Two passes over the file: the first keeps only where each photo's last whole line starts, so memory
    grows with the number of photos by a name and an offset (not by their reports, ~8 KiB each).
    """
    path = folder / JOURNAL
    if not path.is_file():
        return
    last: dict[str, int] = {}
    with open(path, "rb") as fh:
        offset = 0
        for line in fh:
            entry = _journal_line(line)
            if entry is not None:
                last[entry["report"]["raster"]] = offset
            offset += len(line)
        for name, start in last.items():
            fh.seek(start)
            entry = _journal_line(fh.readline())
            assert entry is not None  # parsed in the first pass
            yield name, entry


def _journal_line(line: bytes) -> dict[str, Any] | None:
    try:
        return json.loads(line)
    except ValueError:  # a torn last line (a kill): not JSON, or cut inside a UTF-8 character
        return None


def failed_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows of photos.csv of photos that failed (they have no journal line), as `photo_row` made them."""
    path = folder / PHOTOS_CSV
    if not path.is_file():
        return []
    table = pd.read_csv(path)
    table = table[table["status"] != "ok"].astype(object)
    return table.where(table.notna(), None).to_dict("records")


def compact_journal(folder: Path, keep: set[str]) -> None:
    """Rewrite the journal with the last lines of the photos in ``keep`` only (photos redone or gone are dropped),
    atomically, a line at a time."""
    with atomic_write(folder / JOURNAL) as tmp, open(tmp, "w") as fh:
        for name, entry in iter_journal(folder):
            if name in keep:
                fh.write(json.dumps(entry) + "\n")


__all__ = ["COLLECTION", "EXIF", "FRAME_CSV", "CollectionWriter", "FramePosition", "apply_positions", "table_positions", "HEATMAPS", "JOURNAL", "PHOTO_CHANGES_CSV", "PHOTOS_CSV", "compact_journal", "failed_rows", "heatmap_name",
           "is_collection", "iter_journal", "photo_row", "read_journal"]
