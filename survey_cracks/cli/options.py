"""Options shared by several commands (rasterio's rio/options.py pattern)."""

from __future__ import annotations

from pathlib import Path

import click

config_opt = click.option(
    "--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML config (see configs/). Flags given here override it.",
)
model_opt = click.option(
    "--model", "model_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Checkpoint (.safetensors) to use.  [default: the shipped crack model]",
)
quiet_opt = click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
assets_opt = click.option(
    "--assets", "assets_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Asset polygons (GeoPackage/GeoJSON, any CRS) with an 'asset_id' (or 'id') column and an optional 'material' "
         "(concrete, pavement).  [default: assets.gpkg/.geojson in each survey folder, else each raster's footprint]",
)
rules_opt = click.option(
    "--rules", "rules_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
    help="Asset rules YAML: condition classes per material, crack-type angles, change matching (configs/assets.yaml).  "
         "[default: the built-in rules listed there]",
)
