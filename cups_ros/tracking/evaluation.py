"""The tracker scored on simulated sequences: STQ / AQ, HOTA (trackeval) and identity switches.

Two inputs: ground-truth instances (each frame's thing segments with shuffled per-frame ids, so only
the association is tested) and network predictions (pseudo-classes, scored after the split-wide
Hungarian class matching of cups_ros.eval.split, as every network score of the project is).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.ndimage

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, MAX_INSTANCE_ID
from cups_ros.eval.hota import MaskTrackingAccumulator
from cups_ros.eval.panoptic_quality import CITYSCAPES_NUM_TRAIN_IDS, CITYSCAPES_THING_TRAIN_IDS
from cups_ros.eval.split import evaluate_pseudo_panoptic
from cups_ros.eval.stq import SegmentationTrackingQuality
from cups_ros.geometry.flow import DisFlowEstimator
from cups_ros.model.postprocess import DetectedInstance, PanopticPrediction
from cups_ros.sim.dataset import SimFrame, SimSequence
from cups_ros.tracking.config import TrackerConfig
from cups_ros.tracking.tracker import MultiObjectTracker, TrackedFrame

FlowSource = Literal["none", "gt", "dis"]
FLOW_SOURCES: tuple[FlowSource, ...] = ("none", "gt", "dis")
SWITCH_IOU = 0.5

FramePredict = Callable[[SimFrame], PanopticPrediction]


def prediction_from_panoptic(
    panoptic: np.ndarray,
    thing_classes: Iterable[int],
    rng: np.random.Generator | None = None,
    embedding_dimension: int = 0,
) -> PanopticPrediction:
    """The thing segments (thing class, instance > 0) of a panoptic map as one frame's detections.

    Their ids are renumbered 1..n, in random order when ``rng`` is given, so that ground-truth track
    ids cannot leak into the tracker; score 1; embeddings empty, or random unit vectors of
    ``embedding_dimension`` (uninformative, to check that such embeddings do no harm).
    """
    ids = np.asarray(panoptic).astype(np.int64)
    classes, instances = ids // LABEL_DIVISOR, ids % LABEL_DIVISOR
    thing = np.isin(classes, np.asarray(list(thing_classes), dtype=np.int64)) & (instances > 0)
    segments, inverse = np.unique(ids[thing], return_inverse=True)
    count = int(segments.size)
    if count > MAX_INSTANCE_ID:
        raise ValueError(f"{count} segments in one frame, more than the codec's {MAX_INSTANCE_ID}")
    new_ids = (rng.permutation(count) if rng is not None else np.arange(count)) + 1
    labels = np.zeros(ids.shape, dtype=np.int32)
    labels[thing] = new_ids[inverse]
    output = ids.copy()
    output[thing] = classes[thing] * LABEL_DIVISOR + labels[thing]
    segment_classes = np.zeros(count + 1, dtype=np.int64)
    segment_classes[new_ids] = segments // LABEL_DIVISOR
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    rows, columns = np.indices(ids.shape)
    centre_x = np.bincount(labels.ravel(), weights=columns.ravel(), minlength=count + 1)
    centre_y = np.bincount(labels.ravel(), weights=rows.ravel(), minlength=count + 1)
    windows = scipy.ndimage.find_objects(labels, max_label=count)
    detections = []
    for index, window in enumerate(windows):
        instance_id = index + 1
        if window is None:
            continue
        row_slice, column_slice = window
        embedding = np.zeros(0, dtype=np.float32)
        if embedding_dimension and rng is not None:
            vector = rng.normal(size=embedding_dimension)
            embedding = (vector / np.linalg.norm(vector)).astype(np.float32)
        detections.append(
            DetectedInstance(
                instance_id=instance_id,
                class_id=int(segment_classes[instance_id]),
                score=1.0,
                area=int(areas[instance_id]),
                box=(column_slice.start, row_slice.start, column_slice.stop - 1, row_slice.stop - 1),
                centre=(
                    float(centre_x[instance_id] / areas[instance_id]),
                    float(centre_y[instance_id] / areas[instance_id]),
                ),
                embedding=embedding,
            )
        )
    semantic = np.clip(classes, 0, IGNORE_CLASS).astype(np.uint8)
    return PanopticPrediction(output.astype(np.int32), semantic, detections)


def invert_forward_flow(forward: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Flow on the next frame pointing back into this one, from this frame's forward flow.

    Each valid (visible in the next frame) pixel is splatted to its nearest target pixel with the
    negated vector; pixels nobody lands on take the vector of the nearest pixel that got one
    (scipy's distance transform).
    """
    height, width = forward.shape[:2]
    rows, columns = np.nonzero(valid)
    vectors = forward[rows, columns].astype(np.float32)
    target_columns = np.rint(columns + vectors[:, 0]).astype(np.int64)
    target_rows = np.rint(rows + vectors[:, 1]).astype(np.int64)
    inside = (target_columns >= 0) & (target_columns < width) & (target_rows >= 0) & (target_rows < height)
    backward = np.zeros((height, width, 2), dtype=np.float32)
    filled = np.zeros((height, width), dtype=bool)
    backward[target_rows[inside], target_columns[inside]] = -vectors[inside]
    filled[target_rows[inside], target_columns[inside]] = True
    if not filled.any():
        return backward
    if not filled.all():
        _, (nearest_rows, nearest_columns) = scipy.ndimage.distance_transform_edt(
            ~filled, return_distances=True, return_indices=True
        )
        backward = backward[nearest_rows, nearest_columns]
    return backward


class IdentitySwitchCounter:
    """A switch: a ground-truth track's matched predicted id (IoU >= 0.5, so at most one) differs from
    its match in the last frame where it had one. Ids are whole panoptic ids (class * 1000 + track)."""

    def __init__(self, thing_classes: Iterable[int], iou: float = SWITCH_IOU) -> None:
        self.thing_classes = np.array(sorted({int(c) for c in thing_classes}), dtype=np.int64)
        self.iou = iou
        self.switches = 0
        self.frames = 0
        self.matches = 0
        self._last_match: dict[tuple[Hashable, int], int] = {}

    def _segments(self, ids: np.ndarray) -> np.ndarray:
        return np.isin(ids // LABEL_DIVISOR, self.thing_classes) & (ids % LABEL_DIVISOR > 0)

    def update(self, gt_ids: np.ndarray, pred_ids: np.ndarray, sequence_id: Hashable = 0) -> None:
        gt = np.asarray(gt_ids).astype(np.int64).ravel()
        pred = np.asarray(pred_ids).astype(np.int64).ravel()
        self.frames += 1
        gt_segment, pred_segment = self._segments(gt), self._segments(pred)
        gt_unique, gt_areas = np.unique(gt[gt_segment], return_counts=True)
        pred_unique, pred_areas = np.unique(pred[pred_segment], return_counts=True)
        both = gt_segment & pred_segment
        offset = (IGNORE_CLASS + 1) * LABEL_DIVISOR
        keys, intersections = np.unique(gt[both] * offset + pred[both], return_counts=True)
        gt_of_pair, pred_of_pair = keys // offset, keys % offset
        unions = (
            gt_areas[np.searchsorted(gt_unique, gt_of_pair)]
            + pred_areas[np.searchsorted(pred_unique, pred_of_pair)]
            - intersections
        )
        iou = intersections / unions
        matched = np.flatnonzero(iou >= self.iou)
        matched = matched[np.argsort(-iou[matched], kind="stable")]  # IoU exactly 0.5 may pair twice
        used_gt: set[int] = set()
        used_pred: set[int] = set()
        for gt_id, pred_id in zip(gt_of_pair[matched].tolist(), pred_of_pair[matched].tolist(), strict=True):
            if gt_id in used_gt or pred_id in used_pred:
                continue
            used_gt.add(gt_id)
            used_pred.add(pred_id)
            key = (sequence_id, gt_id)
            previous = self._last_match.get(key)
            if previous is not None and previous != pred_id:
                self.switches += 1
            self._last_match[key] = pred_id
            self.matches += 1

    @property
    def per_100_frames(self) -> float:
        return 100.0 * self.switches / self.frames if self.frames else math.nan


class AssociationScores:
    """HOTA (class-agnostic, trackeval) and identity switches of class-matched panoptic maps."""

    def __init__(self, thing_classes: Iterable[int] = CITYSCAPES_THING_TRAIN_IDS) -> None:
        things = tuple(thing_classes)
        self.hota = MaskTrackingAccumulator(things, class_aware=False)
        self.switches = IdentitySwitchCounter(things)

    def update(self, gt_ids: np.ndarray, pred_ids: np.ndarray, sequence_id: Hashable) -> None:
        self.hota.update(gt_ids, pred_ids, sequence_id)
        self.switches.update(gt_ids, pred_ids, sequence_id)

    def summary(self) -> dict[str, Any]:
        result = self.hota.compute().per_class.get("all")
        scores: dict[str, Any] = {
            "id_switches": self.switches.switches,
            "id_switches_per_100_frames": self.switches.per_100_frames,
        }
        if result is not None:
            scores.update(
                {
                    "HOTA": result.hota,
                    "DetA": result.deta,
                    "AssA": result.assa,
                    "IDF1": result.idf1,
                    "MOTA": result.mota,
                    "trackeval_IDSW": result.idsw,
                }
            )
        return scores


@dataclass
class TimedTracker:
    """The tracker with the wall time of each update (the figure the evaluation reports beside)."""

    tracker: MultiObjectTracker
    milliseconds: list[float] = field(default_factory=list)

    def update(self, prediction: PanopticPrediction, flow: np.ndarray | None, stamp_ns: int) -> TrackedFrame:
        start = time.perf_counter()
        tracked = self.tracker.update(prediction, flow, stamp_ns)
        self.milliseconds.append((time.perf_counter() - start) * 1e3)
        return tracked

    def summary(self) -> dict[str, float]:
        if not self.milliseconds:
            return {}
        ordered = sorted(self.milliseconds)
        return {
            "tracker_median_ms": statistics.median(ordered),
            "tracker_p95_ms": ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)],
        }


class FlowProvider:
    """Flow on each frame pointing into the previous one: none, the simulator's (inverted forward
    flow of the previous frame) or OpenCV DIS between the two images."""

    def __init__(self, source: FlowSource) -> None:
        if source not in FLOW_SOURCES:
            raise ValueError(f"unknown flow source {source!r}: one of {', '.join(FLOW_SOURCES)}")
        self.source = source
        self._dis = DisFlowEstimator() if source == "dis" else None

    def __call__(self, previous: SimFrame | None, current: SimFrame) -> np.ndarray | None:
        if previous is None or self.source == "none":
            return None
        if self.source == "gt":
            return invert_forward_flow(previous.flow, previous.flow_valid)
        assert self._dis is not None
        return self._dis.estimate(current.left, previous.left)


def track_sequence(
    sequence: SimSequence, predict: FramePredict, tracker: TimedTracker, flow: FlowProvider
) -> Iterator[tuple[SimFrame, TrackedFrame]]:
    """Every frame of one sequence through predict -> tracker, from a fresh tracker state."""
    tracker.tracker.reset()
    previous: SimFrame | None = None
    for frame in sequence:
        tracked = tracker.update(predict(frame), flow(previous, frame), frame.stamp_ns)
        previous = frame
        yield frame, tracked


def ground_truth_predict(seed: int = 0, embedding_dimension: int = 0) -> FramePredict:
    """Per-frame detections from a frame's ground-truth thing segments, ids shuffled (seeded)."""
    rng = np.random.default_rng(seed)

    def predict(frame: SimFrame) -> PanopticPrediction:
        return prediction_from_panoptic(frame.panoptic, CITYSCAPES_THING_TRAIN_IDS, rng, embedding_dimension)

    return predict


def evaluate_ground_truth_tracking(
    sequences: Iterable[SimSequence],
    config: TrackerConfig | None = None,
    flow: FlowSource = "none",
    embedding_dimension: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """STQ / AQ / IoU, HOTA and identity switches of the tracker fed with ground-truth instances
    (classes are ground truth, so no class matching)."""
    tracker = TimedTracker(MultiObjectTracker(config))
    predict = ground_truth_predict(seed, embedding_dimension)
    provider = FlowProvider(flow)
    stq = SegmentationTrackingQuality(CITYSCAPES_NUM_TRAIN_IDS, CITYSCAPES_THING_TRAIN_IDS)
    association = AssociationScores()
    for sequence in sequences:
        for frame, tracked in track_sequence(sequence, predict, tracker, provider):
            stq.update(frame.panoptic, tracked.panoptic, sequence.name)
            association.update(frame.panoptic, tracked.panoptic, sequence.name)
    result = stq.compute()
    return {
        "frames": association.switches.frames,
        "STQ": result.stq,
        "AQ": result.aq,
        "IoU": result.iou,
        **association.summary(),
        **tracker.summary(),
    }


def evaluate_network_tracking(
    sequences: Iterable[SimSequence],
    predict: Callable[[np.ndarray], PanopticPrediction],
    num_classes: int,
    thing_classes: Iterable[int],
    config: TrackerConfig | None = None,
    flow: FlowSource = "dis",
) -> dict[str, Any]:
    """Network output tracked, then scored after the split-wide Hungarian matching of its
    pseudo-classes to the ground-truth classes: PQ / mIoU / STQ / AQ (cups_ros.eval.split) and HOTA
    and identity switches of the thing instances after that matching."""
    tracker = TimedTracker(MultiObjectTracker(config))
    provider = FlowProvider(flow)
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for sequence in sequences:
        for frame, tracked in track_sequence(sequence, lambda f: predict(f.left), tracker, provider):
            pairs.append((sequence.name, frame.panoptic, tracked.panoptic))
    scores = evaluate_pseudo_panoptic(lambda: iter(pairs), num_classes, list(thing_classes))
    association = AssociationScores()
    remappers: dict[str, Any] = {}
    for name, gt_ids, pred_ids in pairs:
        remapper = remappers.setdefault(name, scores.mapping.panoptic_remapper())
        association.update(gt_ids, remapper(pred_ids), name)
    return {**scores.summary(), "IoU": scores.stq.iou, **association.summary(), **tracker.summary()}
