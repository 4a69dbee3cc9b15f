"""Semantic segmentation scores (per-class IoU, mIoU, pixel accuracy) from a split-wide confusion matrix.

The same matrix, with pseudo-classes as columns, feeds the Hungarian matching of pseudo-classes to
ground-truth classes (``cups_ros.eval.matching``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR


class ConfusionMatrix:
    """Pixel counts ``counts[gt_class, pred_class]`` over a split.

    Ground-truth pixels of ``IGNORE_CLASS`` are left out. A prediction of ``IGNORE_CLASS`` (void) on a
    valid pixel is counted in the extra last column: it is missed for its ground-truth class but a
    false positive of no class.
    """

    def __init__(self, num_gt_classes: int, num_pred_classes: int | None = None) -> None:
        if num_gt_classes <= 0 or num_gt_classes > IGNORE_CLASS:
            raise ValueError(f"num_gt_classes must lie in [1, {IGNORE_CLASS}], got {num_gt_classes}")
        self.num_gt_classes = num_gt_classes
        self.num_pred_classes = num_gt_classes if num_pred_classes is None else num_pred_classes
        if self.num_pred_classes <= 0 or self.num_pred_classes > IGNORE_CLASS:
            raise ValueError(f"num_pred_classes must lie in [1, {IGNORE_CLASS}], got {self.num_pred_classes}")
        self.counts = np.zeros((self.num_gt_classes, self.num_pred_classes + 1), dtype=np.int64)

    @property
    def void_column(self) -> int:
        return self.num_pred_classes

    @property
    def overlap(self) -> np.ndarray:
        """(num_pred_classes, num_gt_classes) pixel overlaps, void predictions left out."""
        return self.counts[:, : self.num_pred_classes].T.copy()

    def update(self, gt_classes: np.ndarray, pred_classes: np.ndarray) -> None:
        """Adds one frame of class maps (same shape)."""
        if np.shape(gt_classes) != np.shape(pred_classes):
            raise ValueError(
                f"ground truth {np.shape(gt_classes)} and prediction {np.shape(pred_classes)} differ"
            )
        gt = np.asarray(gt_classes).astype(np.int64).ravel()
        pred = np.asarray(pred_classes).astype(np.int64).ravel()
        valid = gt != IGNORE_CLASS
        gt, pred = gt[valid], pred[valid]
        if gt.size and (gt.min() < 0 or gt.max() >= self.num_gt_classes):
            raise ValueError(
                f"ground-truth classes must lie in [0, {self.num_gt_classes}) or be {IGNORE_CLASS}"
            )
        predicted_void = pred == IGNORE_CLASS
        if ((pred < 0) | ((pred >= self.num_pred_classes) & ~predicted_void)).any():
            raise ValueError(
                f"predicted classes must lie in [0, {self.num_pred_classes}) or be {IGNORE_CLASS}"
            )
        pred = np.where(predicted_void, self.void_column, pred)
        columns = self.num_pred_classes + 1
        self.counts += np.bincount(gt * columns + pred, minlength=self.num_gt_classes * columns).reshape(
            self.num_gt_classes, columns
        )

    def update_panoptic(self, gt_ids: np.ndarray, pred_ids: np.ndarray) -> None:
        """Adds one frame of panoptic maps (our codec); only their class parts count."""
        self.update(np.asarray(gt_ids) // LABEL_DIVISOR, np.asarray(pred_ids) // LABEL_DIVISOR)

    def merge(self, other: ConfusionMatrix) -> None:
        if other.counts.shape != self.counts.shape:
            raise ValueError(
                f"confusion matrices differ in shape: {self.counts.shape} vs {other.counts.shape}"
            )
        self.counts += other.counts


@dataclass(frozen=True)
class SemanticResult:
    """mIoU over classes present in ground truth or prediction; per-class IoU is nan for absent classes."""

    miou: float
    iou_per_class: np.ndarray
    pixel_accuracy: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "miou": None if math.isnan(self.miou) else self.miou,
            "pixel_accuracy": None if math.isnan(self.pixel_accuracy) else self.pixel_accuracy,
            "iou_per_class": {
                str(c): float(v) for c, v in enumerate(self.iou_per_class.tolist()) if not math.isnan(v)
            },
        }


def semantic_scores(confusion: ConfusionMatrix) -> SemanticResult:
    """IoU = TP / (TP + FP + FN) per class, its mean, and the share of valid pixels labelled right."""
    if confusion.num_pred_classes != confusion.num_gt_classes:
        raise ValueError(
            f"semantic scores need predictions in ground-truth classes: {confusion.num_pred_classes} "
            f"predicted vs {confusion.num_gt_classes} ground-truth classes (match pseudo-classes first)"
        )
    counts = confusion.counts
    square = counts[:, : confusion.num_gt_classes]
    true_positive = np.diag(square).astype(np.float64)
    gt_total = counts.sum(axis=1)
    pred_total = square.sum(axis=0)
    union = gt_total + pred_total - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
    present = ~np.isnan(iou)
    miou = float(iou[present].mean()) if present.any() else math.nan
    total = counts.sum()
    pixel_accuracy = float(true_positive.sum() / total) if total else math.nan
    return SemanticResult(miou=miou, iou_per_class=iou, pixel_accuracy=pixel_accuracy)
