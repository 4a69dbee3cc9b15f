"""Panoptic Quality (PQ = SQ x RQ) over a whole split, as cityscapesscripts' evalPanopticSemanticLabeling.

The protocol (Kirillov et al. 2019, COCO/Cityscapes panoptic evaluation), in our codec:
- a segment is one panoptic id; pixels of class IGNORE_CLASS (any instance) are void;
- in the ground truth, a thing-class pixel with instance 0 is that class's crowd region (iscrowd=1);
- a ground-truth and a predicted segment of the same class match when IoU > 0.5, where the union leaves
  out the predicted segment's pixels on ground-truth void; crowd regions are never matched;
- unmatched non-crowd ground-truth segments are false negatives; an unmatched predicted segment is a
  false positive unless more than half of it lies on void plus its class's crowd region;
- per class PQ = sum IoU / (TP + FP/2 + FN/2); averages run over classes with TP + FP + FN > 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, MAX_INSTANCE_ID

NUM_CLASS_IDS = IGNORE_CLASS + 1
VOID_ID = IGNORE_CLASS * LABEL_DIVISOR
# Every id of the codec is below this, so gt * PAIR_OFFSET + pred is a unique pair key.
PAIR_OFFSET = IGNORE_CLASS * LABEL_DIVISOR + MAX_INSTANCE_ID + 1
MATCH_IOU = 0.5
IGNORED_FRACTION = 0.5

# Cityscapes train ids: person, rider, car, truck, bus, train, motorcycle, bicycle.
CITYSCAPES_THING_TRAIN_IDS = tuple(range(11, 19))
CITYSCAPES_NUM_TRAIN_IDS = 19


@dataclass(frozen=True)
class QualityScores:
    """PQ, SQ, RQ averaged over ``n`` classes (nan when no class counts)."""

    pq: float
    sq: float
    rq: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pq": _json_float(self.pq),
            "sq": _json_float(self.sq),
            "rq": _json_float(self.rq),
            "n": self.n,
        }


@dataclass(frozen=True)
class ClassQuality:
    """One class's PQ/SQ/RQ and the counts they come from."""

    class_id: int
    is_thing: bool
    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int
    iou_sum: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "is_thing": self.is_thing,
            "pq": self.pq,
            "sq": self.sq,
            "rq": self.rq,
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "iou_sum": self.iou_sum,
        }


@dataclass(frozen=True)
class PanopticQualityResult:
    """PQ over all, thing and stuff classes, and per class (classes with TP + FP + FN > 0 only)."""

    all: QualityScores
    things: QualityScores
    stuff: QualityScores
    per_class: dict[int, ClassQuality]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (nan becomes None)."""
        return {
            "all": self.all.to_dict(),
            "things": self.things.to_dict(),
            "stuff": self.stuff.to_dict(),
            "per_class": {str(c): q.to_dict() for c, q in sorted(self.per_class.items())},
        }


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else value


def _lookup(sorted_keys: np.ndarray, keys: np.ndarray, values: np.ndarray, default: int = 0) -> np.ndarray:
    """values[i] where sorted_keys[i] == key, else default: a vectorised dict.get."""
    if sorted_keys.size == 0:
        return np.full(keys.shape, default, dtype=values.dtype)
    index = np.clip(np.searchsorted(sorted_keys, keys), 0, sorted_keys.size - 1)
    return np.where(sorted_keys[index] == keys, values[index], default)


def _canonical_ids(panoptic_ids: np.ndarray, name: str) -> np.ndarray:
    """Flat int64 ids with every void pixel set to VOID_ID; rejects ids outside the codec."""
    ids = np.asarray(panoptic_ids)
    if not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} panoptic ids must be integers, got {ids.dtype}")
    ids = ids.astype(np.int64).ravel()
    if ids.size and (ids.min() < 0 or ids.max() >= PAIR_OFFSET):
        raise ValueError(f"{name} panoptic ids must lie in [0, {PAIR_OFFSET}), got {ids.min()}..{ids.max()}")
    return np.where(ids // LABEL_DIVISOR == IGNORE_CLASS, VOID_ID, ids)


class PanopticQualityAccumulator:
    """Accumulates PQ counts frame by frame over a split; ``compute`` gives the split's PQ/SQ/RQ.

    ``thing_classes`` decides crowd regions (thing class, instance 0, in the ground truth) and the
    things/stuff averages. ``classes``, when given, plays the role of cityscapesscripts' categories:
    only these are averaged, and a predicted segment of another class is an error.
    """

    def __init__(self, thing_classes: Iterable[int], classes: Iterable[int] | None = None) -> None:
        self.thing_classes = frozenset(int(c) for c in thing_classes)
        self.classes = None if classes is None else tuple(sorted({int(c) for c in classes}))
        self._is_thing = np.zeros(NUM_CLASS_IDS, dtype=bool)
        for class_id in self.thing_classes:
            if not 0 <= class_id < IGNORE_CLASS:
                raise ValueError(f"thing class {class_id} outside [0, {IGNORE_CLASS})")
            self._is_thing[class_id] = True
        self._allowed_pred = np.ones(NUM_CLASS_IDS, dtype=bool)
        if self.classes is not None:
            self._allowed_pred[:] = False
            self._allowed_pred[list(self.classes)] = True
        self.reset()

    def reset(self) -> None:
        self.iou_sum = np.zeros(NUM_CLASS_IDS, dtype=np.float64)
        self.tp = np.zeros(NUM_CLASS_IDS, dtype=np.int64)
        self.fp = np.zeros(NUM_CLASS_IDS, dtype=np.int64)
        self.fn = np.zeros(NUM_CLASS_IDS, dtype=np.int64)
        self.num_frames = 0

    def merge(self, other: PanopticQualityAccumulator) -> None:
        """Adds another accumulator's counts (for splits evaluated in parallel)."""
        self.iou_sum += other.iou_sum
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.num_frames += other.num_frames

    def update(self, gt_ids: np.ndarray, pred_ids: np.ndarray) -> None:
        """Adds one frame: ground-truth and predicted panoptic maps (same shape, our codec)."""
        if np.shape(gt_ids) != np.shape(pred_ids):
            raise ValueError(f"ground truth {np.shape(gt_ids)} and prediction {np.shape(pred_ids)} differ")
        gt = _canonical_ids(gt_ids, "ground-truth")
        pred = _canonical_ids(pred_ids, "predicted")

        # Intersections of every (gt segment, predicted segment) pair that overlaps.
        pair_keys, pair_counts = np.unique(gt * PAIR_OFFSET + pred, return_counts=True)
        pair_gt, pair_pred = pair_keys // PAIR_OFFSET, pair_keys % PAIR_OFFSET
        gt_segments, gt_inverse = np.unique(pair_gt, return_inverse=True)
        gt_areas = np.bincount(gt_inverse, weights=pair_counts).astype(np.int64)
        pred_segments, pred_inverse = np.unique(pair_pred, return_inverse=True)
        pred_areas = np.bincount(pred_inverse, weights=pair_counts).astype(np.int64)
        on_void = pair_gt == VOID_ID
        pred_void_overlap = _lookup(pair_pred[on_void], pred_segments, pair_counts[on_void])

        gt_classes = gt_segments // LABEL_DIVISOR
        pred_classes = pred_segments // LABEL_DIVISOR
        gt_is_crowd = self._is_thing[gt_classes] & (gt_segments % LABEL_DIVISOR == 0)
        gt_real = gt_segments != VOID_ID
        pred_real = pred_segments != VOID_ID
        unknown = pred_real & ~self._allowed_pred[pred_classes]
        if unknown.any():
            raise ValueError(
                f"predicted classes {sorted(set(pred_classes[unknown].tolist()))} are not evaluated"
            )

        # Matches: same class, neither void, gt not crowd, IoU > 0.5 (unique by construction).
        pair_gt_index = np.searchsorted(gt_segments, pair_gt)
        pair_pred_index = np.searchsorted(pred_segments, pair_pred)
        candidate = (
            gt_real[pair_gt_index]
            & pred_real[pair_pred_index]
            & ~gt_is_crowd[pair_gt_index]
            & (pair_gt // LABEL_DIVISOR == pair_pred // LABEL_DIVISOR)
        )
        union = (
            pred_areas[pair_pred_index]
            + gt_areas[pair_gt_index]
            - pair_counts
            - pred_void_overlap[pair_pred_index]
        )
        iou = np.where(candidate, pair_counts / np.maximum(union, 1), 0.0)
        matched = candidate & (iou > MATCH_IOU)
        matched_classes = pair_gt[matched] // LABEL_DIVISOR
        np.add.at(self.tp, matched_classes, 1)
        np.add.at(self.iou_sum, matched_classes, iou[matched])

        gt_matched = np.zeros(gt_segments.size, dtype=bool)
        gt_matched[pair_gt_index[matched]] = True
        pred_matched = np.zeros(pred_segments.size, dtype=bool)
        pred_matched[pair_pred_index[matched]] = True

        missed = gt_real & ~gt_matched & ~gt_is_crowd
        np.add.at(self.fn, gt_classes[missed], 1)

        # A predicted segment mostly on void or on its class's crowd region is no false positive.
        crowd_keys = (pred_classes * LABEL_DIVISOR) * PAIR_OFFSET + pred_segments
        crowd_overlap = np.where(self._is_thing[pred_classes], _lookup(pair_keys, crowd_keys, pair_counts), 0)
        ignored = (pred_void_overlap + crowd_overlap) / pred_areas > IGNORED_FRACTION
        false_positive = pred_real & ~pred_matched & ~ignored
        np.add.at(self.fp, pred_classes[false_positive], 1)
        self.num_frames += 1

    def compute(self) -> PanopticQualityResult:
        """PQ/SQ/RQ per class and averaged over all / thing / stuff classes that have any count."""
        counted = self.tp + self.fp + self.fn > 0
        candidates = np.arange(IGNORE_CLASS) if self.classes is None else np.array(self.classes, dtype=int)
        evaluated = [int(c) for c in candidates if counted[c]]
        per_class: dict[int, ClassQuality] = {}
        for class_id in evaluated:
            tp, fp, fn = int(self.tp[class_id]), int(self.fp[class_id]), int(self.fn[class_id])
            iou_sum = float(self.iou_sum[class_id])
            denominator = tp + 0.5 * fp + 0.5 * fn
            per_class[class_id] = ClassQuality(
                class_id=class_id,
                is_thing=bool(self._is_thing[class_id]),
                pq=iou_sum / denominator,
                sq=iou_sum / tp if tp else 0.0,
                rq=tp / denominator,
                tp=tp,
                fp=fp,
                fn=fn,
                iou_sum=iou_sum,
            )

        def average(selected: list[ClassQuality]) -> QualityScores:
            if not selected:
                return QualityScores(math.nan, math.nan, math.nan, 0)
            n = len(selected)
            return QualityScores(
                pq=sum(q.pq for q in selected) / n,
                sq=sum(q.sq for q in selected) / n,
                rq=sum(q.rq for q in selected) / n,
                n=n,
            )

        qualities = list(per_class.values())
        return PanopticQualityResult(
            all=average(qualities),
            things=average([q for q in qualities if q.is_thing]),
            stuff=average([q for q in qualities if not q.is_thing]),
            per_class=per_class,
        )


def panoptic_quality(
    gt_maps: Iterable[np.ndarray], pred_maps: Iterable[np.ndarray], thing_classes: Iterable[int]
) -> PanopticQualityResult:
    """PQ of paired ground-truth and predicted panoptic maps (a split)."""
    accumulator = PanopticQualityAccumulator(thing_classes)
    for gt_ids, pred_ids in zip(gt_maps, pred_maps, strict=True):
        accumulator.update(gt_ids, pred_ids)
    return accumulator.compute()
