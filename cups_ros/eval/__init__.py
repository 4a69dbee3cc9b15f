"""Evaluation metrics: PQ/SQ/RQ, mIoU, Hungarian matching of pseudo-classes, STQ/AQ, HOTA/CLEAR/IDF1.

Every metric accumulates over a whole split (``update`` per frame, ``compute`` once) and is checked in
tests/test_eval_*.py against an independent implementation (cityscapesscripts, deeplab2's reference
figures, trackeval, motmetrics' published figures).
"""

from cups_ros.eval.hota import (
    MaskTrackingAccumulator,
    TrackingEvaluation,
    TrackingFrame,
    TrackingResult,
    TrackingScores,
    box_iou_xywh,
    evaluate_tracking,
    trackeval_sequence_data,
)
from cups_ros.eval.matching import ClassMapping, PanopticRemapper, match_pseudo_classes
from cups_ros.eval.panoptic_quality import (
    CITYSCAPES_NUM_TRAIN_IDS,
    CITYSCAPES_THING_TRAIN_IDS,
    ClassQuality,
    PanopticQualityAccumulator,
    PanopticQualityResult,
    QualityScores,
    panoptic_quality,
)
from cups_ros.eval.semantic import ConfusionMatrix, SemanticResult, semantic_scores
from cups_ros.eval.stq import SegmentationTrackingQuality, STQResult

__all__ = [
    "CITYSCAPES_NUM_TRAIN_IDS",
    "CITYSCAPES_THING_TRAIN_IDS",
    "ClassMapping",
    "ClassQuality",
    "ConfusionMatrix",
    "MaskTrackingAccumulator",
    "PanopticQualityAccumulator",
    "PanopticQualityResult",
    "PanopticRemapper",
    "QualityScores",
    "STQResult",
    "SegmentationTrackingQuality",
    "SemanticResult",
    "TrackingEvaluation",
    "TrackingFrame",
    "TrackingResult",
    "TrackingScores",
    "box_iou_xywh",
    "evaluate_tracking",
    "match_pseudo_classes",
    "panoptic_quality",
    "semantic_scores",
    "trackeval_sequence_data",
]
