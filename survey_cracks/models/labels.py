"""The patch classifier's label rule, on dense maps: which 128 px patches of a mask are crack, clean or neither.

It lives with the model because it defines what the patch head's score means: training
(`training.segment`) fits the head to it and the export check (`models.verify`) scores
exports by it, so both must read one rule.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

IGNORE = -100  # the label of a patch that is neither crack nor clean (cross-entropy's ignore_index)


def dense_patch_labels(target: torch.Tensor, ignore: torch.Tensor, patch: int, min_center_px: int) -> torch.Tensor:
    """The classifier's label rule at every 128 px patch of a crop, 32 px apart (as `CrackNet.dense_logits`).

    1: at least ``min_center_px`` crack pixels in the central half; 0: no crack and no
    unsupervised pixel anywhere in the patch; else `IGNORE`.
    """
    quarter = patch // 4
    centre = F.avg_pool2d(target[:, :, quarter:-quarter, quarter:-quarter], patch // 2, stride=32) * (patch // 2) ** 2
    whole = F.avg_pool2d(target, patch, stride=32)
    unknown = F.avg_pool2d(ignore, patch, stride=32)
    labels = torch.full_like(whole, IGNORE, dtype=torch.long)
    labels[(whole == 0) & (unknown == 0)] = 0
    labels[centre >= min_center_px] = 1
    return labels[:, 0]


__all__ = ["IGNORE", "dense_patch_labels"]
