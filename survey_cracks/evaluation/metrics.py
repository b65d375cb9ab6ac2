"""Precision, recall and F1 from counts, and threshold choice from scores.

Shared by the training report (patch level) and the survey report (cell, object
and pixel level), so every figure the product prints is computed the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Scores:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if (self.tp + self.fp) else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if (self.tp + self.fn) else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 2 * p * r / (p + r) if (p + r) else 0.0

    def __add__(self, other: "Scores") -> "Scores":
        return Scores(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict[str, float | int | None]:
        out: dict[str, float | int | None] = dict(asdict(self))
        for name in ("precision", "recall", "f1"):
            value = getattr(self, name)
            out[name] = None if value is None else round(value, 4)
        return out


def scores_at(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> Scores:
    predicted = probabilities >= threshold
    truth = labels.astype(bool)
    return Scores(
        tp=int(np.sum(predicted & truth)), fp=int(np.sum(predicted & ~truth)), fn=int(np.sum(~predicted & truth))
    )


F1_TIE_TOLERANCE = 1e-9  # F1 values this close count as equal when choosing a threshold


def choose_threshold(
    probabilities: np.ndarray,
    labels: np.ndarray,
    mode: Literal["max_f1", "target_recall"] = "max_f1",
    target_recall: float = 0.9,
) -> float:
    """Operating threshold on validation data: max F1, or the highest one reaching a recall.

    ``max_f1``: the candidates are the validation scores (a threshold ``t`` predicts
    crack for ``score >= t``). On a small validation set many of them often give the
    same, maximal F1 (equal within ``F1_TIE_TOLERANCE``); among those the one
    **nearest 0.5** is returned (on an exact tie in distance, the lower one), the same
    rule as the mask threshold (``training/segment.py``). Taking the lowest tied one
    would push the operating point to the edge of the tied range (a calibrated 0.51
    became 0.17 on a small survey) although nothing on the validation data asks
    for it. With a single class in ``labels`` there is nothing to calibrate: 0.5.
    """
    from sklearn.metrics import precision_recall_curve

    if labels.sum() == 0 or labels.sum() == len(labels):
        return 0.5
    precision, recall, thresholds = precision_recall_curve(labels, probabilities)
    precision, recall = precision[:-1], recall[:-1]
    if mode == "target_recall":
        ok = np.flatnonzero(recall >= target_recall)
        return float(thresholds[ok[-1]]) if ok.size else float(thresholds[0])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    tied = np.flatnonzero(f1 >= f1.max() - F1_TIE_TOLERANCE)
    # thresholds ascend, so argmin picks the lower of two equally near ones.
    return float(thresholds[tied[int(np.argmin(np.abs(thresholds[tied] - 0.5)))]])


def average_precision(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import average_precision_score

    if labels.sum() == 0:
        return None
    return float(average_precision_score(labels, probabilities))


def save_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str) -> None:
    """One PR curve per named set, with its average precision in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (probabilities, labels) in curves.items():
        if labels.sum() == 0:
            continue
        precision, recall, _ = precision_recall_curve(labels, probabilities)
        ap = average_precision(probabilities, labels)
        ax.plot(recall, precision, label=f"{name} (AP {ap:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
