"""Segmentation and Tracking Quality: STQ = sqrt(AQ x SQ) (Weber et al. 2021, "STEP").

Follows deeplab2's numpy ``segmentation_and_tracking_quality.STQuality`` exactly, vectorised:
- SQ is the class mIoU (called IoU in deeplab2) from a per-sequence confusion matrix whose
  ground-truth ignore rows are dropped, averaged over classes with a non-empty union;
- AQ weighs, for every ground-truth tube (thing class, instance > 0, over a whole sequence), each
  overlapping predicted tube's IoU by their intersection; crowd pixels (thing class, instance 0 in the
  ground truth) take no part, neither for the ground truth nor for the predictions;
- the split's AQ sums over all tubes of all sequences, its IoU uses the summed confusion matrix.

Maps are panoptic ids ``class * label_divisor + instance``: our codec by default (label_divisor 1000,
ignore class 255); ``from_bit_shift`` reads deeplab2's ``(class << bit_shift) + instance``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR

_EPSILON = 1e-15


@dataclass(frozen=True)
class STQResult:
    """Split-wide STQ, AQ and IoU (= SQ), and the same per sequence (in first-seen order)."""

    stq: float
    aq: float
    iou: float
    stq_per_sequence: dict[Hashable, float]
    aq_per_sequence: dict[Hashable, float]
    iou_per_sequence: dict[Hashable, float]
    length_per_sequence: dict[Hashable, int]

    def to_dict(self) -> dict[str, Any]:
        def clean(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "stq": clean(self.stq),
            "aq": clean(self.aq),
            "iou": clean(self.iou),
            "per_sequence": {
                str(sequence): {
                    "stq": clean(self.stq_per_sequence[sequence]),
                    "aq": clean(self.aq_per_sequence[sequence]),
                    "iou": clean(self.iou_per_sequence[sequence]),
                    "length": self.length_per_sequence[sequence],
                }
                for sequence in self.length_per_sequence
            },
        }


@dataclass
class _SequenceState:
    confusion: np.ndarray
    length: int = 0
    # Per-frame (ids, pixel counts) of tubes and of (gt tube, predicted tube) overlaps, summed at the end.
    gt_tubes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    pred_tubes: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    overlaps: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


def _summed(ids: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    unique_ids, inverse = np.unique(np.concatenate(ids), return_inverse=True)
    return unique_ids, np.bincount(inverse, weights=np.concatenate(counts)).astype(np.int64)


def _mean_iou(confusion: np.ndarray) -> float:
    intersections = confusion.diagonal().astype(np.float64)
    unions = confusion.sum(axis=0) + confusion.sum(axis=1) - intersections
    num_classes = np.count_nonzero(unions)
    if num_classes == 0:
        return math.nan  # deeplab2 gives 0/0 here too
    return float(np.sum(intersections / np.maximum(unions, _EPSILON)) / num_classes)


class SegmentationTrackingQuality:
    """Accumulates STQ over frames of one or more sequences (frames of a sequence in order)."""

    def __init__(
        self,
        num_classes: int,
        thing_classes: Iterable[int],
        ignore_class: int = IGNORE_CLASS,
        label_divisor: int = LABEL_DIVISOR,
    ) -> None:
        self.num_classes = num_classes
        self.thing_classes = np.array(sorted({int(c) for c in thing_classes}), dtype=np.int64)
        self.ignore_class = ignore_class
        self.label_divisor = label_divisor
        if ignore_class >= num_classes:
            # The ignore class gets the extra last row/column.
            self._matrix_size = num_classes + 1
            self._kept_rows = np.arange(num_classes)
        else:
            self._matrix_size = num_classes
            self._kept_rows = np.array([c for c in range(num_classes) if c != ignore_class])
        self._sequences: dict[Hashable, _SequenceState] = {}

    @classmethod
    def from_bit_shift(
        cls, num_classes: int, thing_classes: Iterable[int], ignore_label: int, bit_shift: int
    ) -> SegmentationTrackingQuality:
        """For deeplab2's encoding, panoptic = (class << bit_shift) + instance."""
        return cls(num_classes, thing_classes, ignore_class=ignore_label, label_divisor=1 << bit_shift)

    def reset(self) -> None:
        self._sequences.clear()

    def _semantic_index(self, classes: np.ndarray, name: str) -> np.ndarray:
        if self.ignore_class > self.num_classes:
            classes = np.where(classes == self.ignore_class, self.num_classes, classes)
        if classes.size and (classes.min() < 0 or classes.max() >= self._matrix_size):
            raise ValueError(
                f"{name} classes must lie in [0, {self.num_classes}) or be the ignore class "
                f"{self.ignore_class}"
            )
        return classes

    def update(self, gt_ids: np.ndarray, pred_ids: np.ndarray, sequence_id: Hashable = 0) -> None:
        """Adds one frame of ``sequence_id``: ground-truth and predicted panoptic maps."""
        if np.shape(gt_ids) != np.shape(pred_ids):
            raise ValueError(f"ground truth {np.shape(gt_ids)} and prediction {np.shape(pred_ids)} differ")
        gt = np.asarray(gt_ids).astype(np.int64).ravel()
        pred = np.asarray(pred_ids).astype(np.int64).ravel()
        if (gt.size and gt.min() < 0) or (pred.size and pred.min() < 0):
            raise ValueError("panoptic ids must be non-negative")
        gt_classes, gt_instances = gt // self.label_divisor, gt % self.label_divisor
        pred_classes = pred // self.label_divisor

        state = self._sequences.get(sequence_id)
        if state is None:
            state = _SequenceState(np.zeros((self._matrix_size, self._matrix_size), dtype=np.int64))
            self._sequences[sequence_id] = state
        size = self._matrix_size
        cells = self._semantic_index(gt_classes, "ground-truth") * size + self._semantic_index(
            pred_classes, "predicted"
        )
        state.confusion += np.bincount(cells, minlength=size * size).reshape(size, size)
        state.length += 1

        gt_thing = np.isin(gt_classes, self.thing_classes)
        crowd = gt_thing & (gt_instances == 0)
        gt_tube = gt_thing & ~crowd
        pred_tube = np.isin(pred_classes, self.thing_classes) & ~crowd
        state.gt_tubes.append(np.unique(gt[gt_tube], return_counts=True))
        state.pred_tubes.append(np.unique(pred[pred_tube], return_counts=True))
        both = gt_tube & pred_tube
        pair_offset = int(pred.max()) + 1 if pred.size else 1
        pair_keys, pair_counts = np.unique(gt[both] * pair_offset + pred[both], return_counts=True)
        state.overlaps.append((pair_keys // pair_offset, pair_keys % pair_offset, pair_counts))

    @staticmethod
    def _association(state: _SequenceState) -> tuple[float, int]:
        """(sum over gt tubes of their AQ terms, number of gt tubes) for one sequence."""
        gt_ids, gt_sizes = _summed([ids for ids, _ in state.gt_tubes], [n for _, n in state.gt_tubes])
        pred_ids, pred_sizes = _summed([ids for ids, _ in state.pred_tubes], [n for _, n in state.pred_tubes])
        if not state.overlaps or gt_ids.size == 0:
            return 0.0, int(gt_ids.size)
        pair_gt = np.concatenate([g for g, _, _ in state.overlaps])
        pair_pred = np.concatenate([p for _, p, _ in state.overlaps])
        pair_counts = np.concatenate([n for _, _, n in state.overlaps])
        pair_offset = int(pred_ids.max()) + 1 if pred_ids.size else 1
        keys, inverse = np.unique(pair_gt * pair_offset + pair_pred, return_inverse=True)
        true_positive = np.bincount(inverse, weights=pair_counts)
        gt_size = gt_sizes[np.searchsorted(gt_ids, keys // pair_offset)].astype(np.float64)
        pred_size = pred_sizes[np.searchsorted(pred_ids, keys % pair_offset)].astype(np.float64)
        false_positive = pred_size - true_positive
        false_negative = gt_size - true_positive
        iou = true_positive / (true_positive + false_positive + false_negative)
        return float(np.sum(true_positive * iou / gt_size)), int(gt_ids.size)

    def compute(self) -> STQResult:
        """STQ, AQ and IoU over everything seen, and per sequence."""
        aq_sums, tube_counts, ious, lengths = {}, {}, {}, {}
        total_confusion = np.zeros((self._matrix_size, self._matrix_size), dtype=np.int64)
        for sequence_id, state in self._sequences.items():
            aq_sums[sequence_id], tube_counts[sequence_id] = self._association(state)
            confusion = np.zeros_like(state.confusion)
            confusion[self._kept_rows] = state.confusion[self._kept_rows]  # ground-truth ignore rows out
            total_confusion += confusion
            ious[sequence_id] = _mean_iou(confusion)
            lengths[sequence_id] = state.length

        aq = sum(aq_sums.values()) / max(sum(tube_counts.values()), _EPSILON)
        iou = _mean_iou(total_confusion) if self._sequences else math.nan
        aq_per_sequence = {s: aq_sums[s] / max(tube_counts[s], _EPSILON) for s in aq_sums}
        stq_per_sequence = {s: math.sqrt(aq_per_sequence[s] * ious[s]) for s in aq_sums}
        return STQResult(
            stq=math.sqrt(aq * iou),
            aq=aq,
            iou=iou,
            stq_per_sequence=stq_per_sequence,
            aq_per_sequence=aq_per_sequence,
            iou_per_sequence=ious,
            length_per_sequence=lengths,
        )
