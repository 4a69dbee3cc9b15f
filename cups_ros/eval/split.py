"""Scores of unsupervised panoptic video over a split: Hungarian matching of the pseudo-classes to
the ground-truth classes over the whole split (CUPS's protocol), then PQ, mIoU and STQ.

The same function scores pseudo-labels (stage 1) and network output (stage 2), so the two are
compared on exactly the same terms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.eval.matching import ClassMapping, match_pseudo_classes
from cups_ros.eval.panoptic_quality import (
    CITYSCAPES_NUM_TRAIN_IDS,
    CITYSCAPES_THING_TRAIN_IDS,
    PanopticQualityAccumulator,
    PanopticQualityResult,
)
from cups_ros.eval.semantic import ConfusionMatrix, SemanticResult, semantic_scores
from cups_ros.eval.stq import SegmentationTrackingQuality, STQResult

# (sequence name, ground-truth panoptic ids, predicted panoptic ids of pseudo-classes), frames in order.
FramePairs = Callable[[], Iterator[tuple[str, np.ndarray, np.ndarray]]]


@dataclass
class SplitScores:
    panoptic: PanopticQualityResult
    semantic: SemanticResult
    stq: STQResult
    mapping: ClassMapping
    frames: int

    def summary(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "PQ": self.panoptic.all.pq,
            "PQ_things": self.panoptic.things.pq,
            "PQ_stuff": self.panoptic.stuff.pq,
            "SQ": self.panoptic.all.sq,
            "RQ": self.panoptic.all.rq,
            "mIoU": self.semantic.miou,
            "STQ": self.stq.stq,
            "AQ": self.stq.aq,
        }


def evaluate_pseudo_panoptic(
    frame_pairs: FramePairs,
    num_pseudo_classes: int,
    pseudo_thing_classes: Iterable[int],
    num_gt_classes: int = CITYSCAPES_NUM_TRAIN_IDS,
    gt_thing_classes: Iterable[int] = CITYSCAPES_THING_TRAIN_IDS,
) -> SplitScores:
    """Two passes over ``frame_pairs()``: the split's confusion for the matching, then the scores."""
    gt_things = tuple(gt_thing_classes)
    confusion = ConfusionMatrix(num_gt_classes, num_pseudo_classes)
    for _, gt_ids, pred_ids in frame_pairs():
        confusion.update_panoptic(gt_ids, pred_ids)
    mapping = match_pseudo_classes(
        confusion, pseudo_thing_classes=list(pseudo_thing_classes), gt_thing_classes=gt_things
    )
    panoptic = PanopticQualityAccumulator(gt_things, classes=range(num_gt_classes))
    semantic = ConfusionMatrix(num_gt_classes)
    stq = SegmentationTrackingQuality(num_gt_classes, gt_things)
    remappers: dict[str, Any] = {}
    frames = 0
    for name, gt_ids, pred_ids in frame_pairs():
        remapper = remappers.setdefault(name, mapping.panoptic_remapper())
        remapped = remapper(pred_ids)
        panoptic.update(gt_ids, remapped)
        semantic.update(gt_ids // LABEL_DIVISOR, remapped // LABEL_DIVISOR)
        stq.update(gt_ids, remapped, name)
        frames += 1
    return SplitScores(panoptic.compute(), semantic_scores(semantic), stq.compute(), mapping, frames)
