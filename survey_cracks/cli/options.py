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


def out_dir_opt(what: str):  # type: ignore[no-untyped-def]
    """--out-dir of a training command: where ``what`` go, the config's out_dir by default."""
    return click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help=f"Where {what} go.  [default: out_dir of the config]")


def resume_opt(what: str):  # type: ignore[no-untyped-def]
    """--resume of a training command that checkpoints as it goes (``what``: from which checkpoint)."""
    return click.option("--resume", is_flag=True, help=f"Continue a killed run from its last {what}.")


ship_opt = click.option("--ship", is_flag=True, help="Store the final weights in fp16 (the packaged model is shipped this way).")


class WindowPx(click.ParamType):
    """``--window``: a core in pixels (a multiple of 32, 128-8192; the config checks it) or ``auto``."""

    name = "PX|auto"

    def convert(self, value, param, ctx):  # type: ignore[no-untyped-def]
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of pixels nor auto", param, ctx)


WINDOW_PX = WindowPx()
