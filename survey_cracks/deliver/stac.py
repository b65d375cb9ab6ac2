"""A STAC catalogue of a run, so catalogues and dashboards can index the results.

``OUT/catalog.json`` is the root Catalog; each survey is a child Catalog
(``OUT/<survey>/catalog.json``) and each raster an Item (``OUT/<survey>/<raster>/item.json``)
whose assets are its heatmap (COG), cracks.gpkg and report.json, plus the survey's
GeoPackage. A survey's collection of photos is one Item (``OUT/<survey>/collection/item.json``),
not one per photo: its cracks.gpkg, photos.csv, heatmaps/ folder and report.json, its geometry
the photos' positions where they have any. Items carry the processing extension (``processing:software``,
``processing:lineage``) and, under ``survey_cracks:``, the model's sha256, the hash of
the resolved config, the threshold and the crack figures. The item ``datetime`` is
when the run finished: the rasters carry no acquisition time. Rasters without
georeferencing get a null geometry, as STAC allows.

Validation (:func:`validate_catalog`) never goes to the network: pystac ships the
core JSON schemas (Catalog, Item, GeoJSON) and validates against those; extension
schemas are not shipped by pystac or any package, so they are listed as skipped
instead of fetched.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import pandas as pd
import shapely
from pyproj import CRS

from survey_cracks.deliver.assets import footprint
from survey_cracks.deliver.collection import HEATMAPS, PHOTOS_CSV, is_collection
from survey_cracks.deliver.run_record import RunRecord
from survey_cracks.outputs import GPKG, HEATMAP, STAC_ITEM, write_text

if TYPE_CHECKING:
    from survey_cracks.deliver.product import SurveyProduct

PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
CATALOG = "catalog.json"


def config_sha256(record: RunRecord) -> str:
    """Hash of the resolved config as run.json holds it (sorted keys): same settings, same hash."""
    text = json.dumps(record.config.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _stac_io() -> Any:
    import pystac

    class AtomicStacIO(pystac.stac_io.DefaultStacIO):
        """Every file written under a temp name, then renamed."""

        def write_text_to_href(self, href: str, txt: str) -> None:
            path = Path(href)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, txt)

    return AtomicStacIO()


def _properties(record: RunRecord, outcome: Any, version: str, config_hash: str) -> dict[str, Any]:
    return {
        "title": f"{outcome.survey}/{outcome.raster}",
        "processing:software": {"survey_cracks": version},
        "processing:lineage": f"survey-cracks run, {record.mode} mode, threshold {record.threshold:g}, "
                              f"model sha256 {record.model_sha256}",
        "survey_cracks:model_sha256": record.model_sha256,
        "survey_cracks:config_sha256": config_hash,
        "survey_cracks:threshold": record.threshold,
        "survey_cracks:mode": record.mode,
        "survey_cracks:polygons": outcome.counts.polygons,
        "survey_cracks:crack_length": outcome.counts.crack_length,
        "survey_cracks:unit": outcome.counts.unit,
        "survey_cracks:source": outcome.source,
    }


def _item(record: RunRecord, product: "SurveyProduct", outcome: Any, version: str, config_hash: str) -> Any:
    import pystac

    folder = record.folder(outcome)
    geometry = bbox = None
    if outcome.georeferenced:
        shape = gpd.GeoSeries([footprint(folder / HEATMAP)], crs=CRS.from_user_input(outcome.info.crs))
        shape = shape.to_crs("EPSG:4326").simplify(1e-7)
        geometry, bbox = shapely.geometry.mapping(shape.iloc[0]), list(shape.total_bounds)
    item = pystac.Item(
        id=f"{outcome.survey}-{outcome.raster}", geometry=geometry, bbox=bbox,
        datetime=datetime.fromisoformat(record.finished_at) if record.finished_at else datetime.now(),
        properties=_properties(record, outcome, version, config_hash),
        stac_extensions=[PROCESSING_SCHEMA],
    )
    return item


def _raster_assets(item: Any, product: "SurveyProduct") -> None:
    """A raster's files, relative to its item.json (added once the item has its place: pystac rewrites relative
    asset hrefs when an item moves)."""
    import pystac

    item.add_asset("heatmap", pystac.Asset("./heatmap.tif", title="crack probability 0..1 (uint8 COG, scale 1/250, nodata 255)",
                                           media_type=pystac.MediaType.COG, roles=["data"]))
    item.add_asset("cracks", pystac.Asset("./cracks.gpkg", title="crack polygons and centrelines",
                                          media_type=pystac.MediaType.GEOPACKAGE, roles=["data"]))
    item.add_asset("report", pystac.Asset("./report.json", title="counts, timings and metrics",
                                          media_type=pystac.MediaType.JSON, roles=["metadata"]))
    item.add_asset("survey", pystac.Asset(f"../{product.gpkg.name}", title="the survey's GeoPackage (cracks, centrelines, assets)",
                                          media_type=pystac.MediaType.GEOPACKAGE, roles=["data"]))


def _collection_item(record: RunRecord, outcome: Any, version: str, config_hash: str) -> Any:
    """A collection of photos as one item: its GeoPackage, photos.csv, heatmaps/ folder and report.json; its
    geometry the photos' positions (EXIF GPS or --frame-positions) where they have any, else null."""
    import pystac

    folder = record.folder(outcome)
    table = pd.read_csv(folder / PHOTOS_CSV, usecols=["longitude", "latitude"])
    photos = len(table)
    table = table.dropna()
    geometry = bbox = None
    if len(table):
        points = shapely.MultiPoint(table[["longitude", "latitude"]].to_numpy())
        geometry = shapely.geometry.mapping(points if len(table) > 1 else points.geoms[0])
        bbox = list(shapely.bounds(points))
    item = pystac.Item(
        id=f"{outcome.survey}-{outcome.raster}", geometry=geometry, bbox=bbox,
        datetime=datetime.fromisoformat(record.finished_at) if record.finished_at else datetime.now(),
        properties=_properties(record, outcome, version, config_hash) | {
            "title": f"{outcome.survey}: {photos} photos", "survey_cracks:photos": photos},
        stac_extensions=[PROCESSING_SCHEMA],
    )
    return item


def _collection_assets(item: Any, folder: Path) -> None:
    """The collection's files, relative to its item.json (see `_raster_assets`)."""
    import pystac

    item.add_asset("cracks", pystac.Asset(f"./{GPKG}", title="crack polygons and centrelines of every photo (a photo "
                                          "column), and the photos layer", media_type=pystac.MediaType.GEOPACKAGE,
                                          roles=["data"]))
    item.add_asset("photos", pystac.Asset(f"./{PHOTOS_CSV}", title="one row per photo: counts, length, width, score, "
                                          "metrics", media_type="text/csv", roles=["metadata"]))
    if (folder / HEATMAPS).is_dir() and any((folder / HEATMAPS).iterdir()):
        item.add_asset("heatmaps", pystac.Asset(f"./{HEATMAPS}/", title="crack probability per photo, <photo>.png, 8-bit "
                                                "levels (level / 250; 255 outside the photo)", roles=["data"]))
    item.add_asset("report", pystac.Asset("./report.json", title="the collection's totals and metrics",
                                          media_type=pystac.MediaType.JSON, roles=["metadata"]))


def write_catalog(record: RunRecord, products: list["SurveyProduct"]) -> Path:
    """OUT/catalog.json with a child catalogue per survey and an item per raster (see the module docstring)."""
    import pystac

    version = metadata.version("survey_cracks")
    config_hash = config_sha256(record)
    root = pystac.Catalog(id="survey-cracks-run", description=f"survey_cracks outputs in {record.out.name}",
                          title=f"survey_cracks run {record.finished_at}")
    root.set_self_href(str(record.out / CATALOG))
    children: dict[str, Any] = {}

    def child_of(survey: str, rasters: int) -> Any:
        if survey not in children:
            children[survey] = pystac.Catalog(id=survey, description=f"survey {survey}: {rasters} rasters")
            root.add_child(children[survey])
            children[survey].set_self_href(str(record.out / survey / CATALOG))  # after add_child, which places it by pystac's layout
        return children[survey]

    for product in products:
        child = child_of(product.survey, len(product.rasters))
        for raster in product.rasters:
            item = _item(record, product, raster.outcome, version, config_hash)
            child.add_item(item)
            item.set_self_href(str(raster.folder / STAC_ITEM))
            _raster_assets(item, product)
    for outcome in record.outcomes:  # a collection of photos: one item, not one per photo
        if is_collection(outcome) and outcome.status == "ok":
            item = _collection_item(record, outcome, version, config_hash)
            child_of(outcome.survey, 0).add_item(item)
            item.set_self_href(str(record.folder(outcome) / STAC_ITEM))
            _collection_assets(item, record.folder(outcome))
    root.save(pystac.CatalogType.SELF_CONTAINED, stac_io=_stac_io())
    return record.out / CATALOG


def validate_catalog(path: Path) -> list[str]:
    """Validate every object of the catalogue offline; returns the extension schemas that could not be checked.

    Raises pystac's STACValidationError on an invalid object.
    """
    import pystac
    from pystac.validation.stac_validator import JsonSchemaSTACValidator

    class OfflineValidator(JsonSchemaSTACValidator):
        """pystac's validator with its bundled core schemas; extension schemas not at hand are skipped, never fetched."""

        def __init__(self) -> None:
            super().__init__()
            self.skipped: set[str] = set()

        def validate_extension(self, stac_dict: dict[str, Any], stac_object_type: Any, stac_version: str,
                               extension_id: str, href: str | None = None) -> Any:
            if extension_id not in self.schema_cache:
                self.skipped.add(extension_id)
                return None
            return super().validate_extension(stac_dict, stac_object_type, stac_version, extension_id, href)

    # Each object is given the validator (STACObject.validate's public argument) instead of registering it
    # process-wide with set_validator: nothing to restore afterwards, and other threads keep pystac's default.
    validator = OfflineValidator()
    for catalog, _, items in pystac.Catalog.from_file(str(path)).walk():  # every catalogue and collection, recursively
        catalog.validate(validator=validator)
        for item in items:
            item.validate(validator=validator)
    return sorted(validator.skipped)
