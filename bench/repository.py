"""What the bench scripts share about the repository: its root, how results name its files, the pre-bridges model.

Imported by the scripts beside it (``python bench/X.py`` puts this folder on the path), as
``qgis_check`` is by the QGIS checks.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The mask model shipped before uavcrack_bridges was added to training (sha256 fb65974ac408): what the
# held-out-by-source benchmarks score or adapt, as the shipped model has trained on that source since.
BEFORE_BRIDGES = ROOT / "survey_cracks" / "weights" / "crack_resnet18_mask_v1.safetensors"


def shown(path: Path) -> str:
    """A path as the repository names it (no machine's folders in published results); a link in it is kept as named."""
    for form in (path.absolute(), path.resolve()):
        if form.is_relative_to(ROOT):
            return str(form.relative_to(ROOT))
    return path.name
