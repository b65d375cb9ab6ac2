"""What a raster's run says beside its outputs rather than instead of them: an unusable annotation, a suspicious threshold.

An annotation is optional ground truth: when it cannot be used the crack map is still
worth the night's compute, so the raster is written without metrics and the problem is
one warning line (and ``annotation_error`` in report.json and summary.csv), never a FAILED raster.
A threshold that makes most of the footprint a crack gives one polygon over the image:
legal, but almost never meant, so it is said once per raster.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from survey_cracks.config import EvaluateConfig
from survey_cracks.errors import AnnotationError
from survey_cracks.io.annotations import Truth, load_truth
from survey_cracks.io.raster import RasterInfo
from survey_cracks.vectors.heatmap import read_probability

# Above this share of the valid footprint at or over the threshold, the threshold is called out.
MOST_OF_THE_FOOTPRINT = 0.5
SAMPLE_SIDE = 1024  # the share is read from an overview this size: exact enough, and milliseconds


def optional_truth(raster: Path, info: RasterInfo, config: EvaluateConfig, annotation: Path | None
                   ) -> tuple[Truth | None, str | None]:
    """The annotation as ground truth, or None and the one line that says why it was not used and how to fix it."""
    if annotation is None:
        return None, None
    try:
        return load_truth(raster, info, config, annotation), None
    except AnnotationError as error:
        fix = f"{error.fix}, " if error.fix else "fix it, "
        return None, (f"annotation {annotation} not used, the crack map is written without metrics: {error.problem} — "
                      f"{fix}then put the fixed file back as {annotation.name} beside {Path(raster).name} and run again")


def crack_share(heatmap: Path, threshold: float) -> float:
    """Share of the heatmap's valid pixels at or above ``threshold`` (from an overview; 0 when none is valid)."""
    with rasterio.open(heatmap) as src:
        factor = max(1, int(np.ceil(max(src.width, src.height) / SAMPLE_SIDE)))
        probability = read_probability(src, out_shape=(max(1, src.height // factor), max(1, src.width // factor)))
    valid = np.isfinite(probability)
    return float((probability[valid] >= threshold).mean()) if valid.any() else 0.0


def threshold_warning(heatmap: Path, threshold: float) -> str | None:
    """One line when ``threshold`` makes most of the valid footprint a crack, else None."""
    share = crack_share(heatmap, threshold)
    if share <= MOST_OF_THE_FOOTPRINT:
        return None
    return (f"threshold {threshold:g} makes {share:.0%} of the valid footprint a crack (polygons cover most of the image) — "
            "was it meant? the model's calibrated threshold is used when --threshold is left out")


__all__ = ["MOST_OF_THE_FOOTPRINT", "crack_share", "optional_truth", "threshold_warning"]
