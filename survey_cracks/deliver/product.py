"""The product of one survey, as the deliverables, the HTML report and the STAC catalogue all read it.

A module of its own so that the writers of each (deliverables, report_html, stac) import
the data they share from below, not from each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import shapely
from pyproj import CRS

from survey_cracks.deliver.assets import AssetFigures, GroundScale, figures_frame
from survey_cracks.deliver.outcomes import RasterOutcome


@dataclass
class RasterLayers:
    """One raster's vectors and footprint, in the survey's CRS."""

    outcome: RasterOutcome
    folder: Path
    source: Path
    cracks: gpd.GeoDataFrame
    lines: gpd.GeoDataFrame | None
    footprint: shapely.Geometry


@dataclass
class SurveyProduct:
    """A survey's rasters, assets and figures, ready to be written."""

    survey: str
    folder: Path
    crs: CRS | None
    scale: GroundScale
    rasters: list[RasterLayers]
    assets: list[AssetFigures]
    asset_source: str  # the asset file, or "raster footprints"
    lines: gpd.GeoDataFrame | None
    cracks: gpd.GeoDataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def gpkg(self) -> Path:
        return self.folder / f"{self.survey}.gpkg"

    def assets_frame(self) -> gpd.GeoDataFrame:
        return figures_frame(self.assets, self.crs)
