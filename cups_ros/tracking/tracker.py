"""Online multi-object tracker: per-frame instances (PanopticPrediction) -> persistent track ids.

Each frame, every live track's mask is predicted into the frame: tracks seen in the previous frame by
the optical flow when it is given (pulled with ``pull_by_flow``), all others (lost tracks, whose
pixels the flow no longer describes) and all tracks without flow by shifting the mask with the
constant-velocity estimate of the box centre. A cost of mask IoU, embedding cosine similarity and
class agreement, with gates, is solved by Hungarian assignment (scipy ``linear_sum_assignment``),
then the life cycle advances: TENTATIVE -> CONFIRMED (``confirm_hits`` matches within
``confirm_window`` frames) -> LOST (unmatched, kept ``max_age`` frames and still matchable) -> REMOVED.
An unmatched tentative track stays tentative (unpublished that frame) while it can still reach
``confirm_hits`` inside its window, and is removed as soon as it cannot; it never becomes LOST.

Input: the instances' pixels are those with panoptic id ``class_id * 1000 + instance_id`` (as the
shared post-processing writes them), instance ids unique in the frame. Output: those pixels become
``track class * 1000 + track id`` (the track's class is the majority of its detections' classes,
so with class gating simply its class), or void when the detection is not published.

Speed: masks are kept at 1/``mask_stride`` resolution as crops around the object, so the IoUs of a
track with every detection cost one bincount over its crop; the only full-resolution work is one
table lookup that writes the track ids into the panoptic map. Instances of fewer than
``MIN_MASK_PIXELS`` pixels at that resolution are compared by the IoU of their boxes instead.

Track ids: 1, 2, ... in order of birth and never reused while fewer than ``max_track_id`` (999, the
panoptic codec's class * 1000 + id) tracks have been started since ``reset``. Beyond that, ids of
removed tracks are reused, the one removed longest ago first; when every id is held by a live track,
the longest-lost track is removed to free its id, and when all of them are active the detection stays
untracked (void in the output, counted in ``TrackCounts.untracked``).
"""

from __future__ import annotations

import copy
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import scipy.ndimage
from scipy.optimize import linear_sum_assignment

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, MAX_INSTANCE_ID
from cups_ros.core.track import Track, TrackState
from cups_ros.model.postprocess import DetectedInstance, PanopticPrediction
from cups_ros.pseudo.video import pull_by_flow
from cups_ros.tracking.config import TrackerConfig

_GATED = 1e6  # cost of a pair that may not match (linear_sum_assignment needs finite costs)
STEADY_SIZE_CHANGE = 1.5  # per frame, see _steady
MIN_MASK_PIXELS = 8  # low-resolution pixels; smaller masks are compared by their full-resolution boxes


@dataclass(frozen=True)
class TrackCounts:
    """What happened in one frame: detections that continued a track, tracks started, tracks that
    became lost, tracks removed, and detections left without a track (low score or no free id)."""

    matched: int = 0
    new: int = 0
    lost: int = 0
    removed: int = 0
    untracked: int = 0


@dataclass
class TrackedFrame:
    """One frame's result: panoptic ids with track ids as instances, the tracks seen in this frame."""

    panoptic: np.ndarray
    """H x W int32, class * 1000 + track id for published detections; stuff as predicted; void
    (255 * 1000) where the prediction had void or a detection that is not published."""
    tracks: list[Track]
    """Tracks matched or started in this frame and published (copies; their mask is None, the pixels
    are in ``panoptic``)."""
    counts: TrackCounts
    frame_index: int
    stamp_ns: int

    def mask(self, track: Track) -> np.ndarray:
        """H x W bool pixels of one published track (computed on demand: full resolution)."""
        return self.panoptic == track.class_id * LABEL_DIVISOR + track.track_id


@dataclass
class _CropMask:
    """A mask at 1/stride resolution as a crop and its top-left corner in the low-resolution frame;
    the corner is a float so sub-pixel constant-velocity shifts accumulate."""

    mask: np.ndarray
    top: float
    left: float
    area: int = field(init=False)

    def __post_init__(self) -> None:
        self.area = int(np.count_nonzero(self.mask))

    def centre(self) -> tuple[float, float]:
        """(x, y) of the crop's centre in low-resolution pixels."""
        height, width = self.mask.shape
        return (self.left + width / 2.0, self.top + height / 2.0)


@dataclass
class _TrackRecord:
    """The tracker's own state of a track, beside the public Track it publishes."""

    track: Track
    crop: _CropMask
    matched_box: tuple[float, float, float, float]
    """Box of the last matched detection (the velocity estimate compares box centres)."""
    size: float = 0.0
    """Larger side of the box as last seen whole (kept while the box is cut by occluders): the
    position gates' scale."""
    velocity: tuple[float, float] = (0.0, 0.0)
    """(dx, dy) of the box centre in full-resolution pixels per frame."""
    class_votes: dict[int, int] = field(default_factory=dict)

    def vote(self, class_id: int) -> None:
        """Majority class over the matched detections, ties to the newest (matters only without
        class gating: with it, a track keeps its first class)."""
        self.class_votes[class_id] = self.class_votes.get(class_id, 0) + 1
        best = max(self.class_votes.values())
        if self.class_votes[class_id] == best:
            self.track.class_id = class_id
        elif self.class_votes.get(self.track.class_id, 0) < best:
            self.track.class_id = max(self.class_votes, key=self.class_votes.__getitem__)


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """P x Q IoU of inclusive pixel boxes (x_min, y_min, x_max, y_max)."""
    first = np.asarray(first, dtype=np.float64).reshape(-1, 4)
    second = np.asarray(second, dtype=np.float64).reshape(-1, 4)
    x_min = np.maximum(first[:, None, 0], second[None, :, 0])
    y_min = np.maximum(first[:, None, 1], second[None, :, 1])
    x_max = np.minimum(first[:, None, 2], second[None, :, 2])
    y_max = np.minimum(first[:, None, 3], second[None, :, 3])
    intersection = np.clip(x_max - x_min + 1, 0, None) * np.clip(y_max - y_min + 1, 0, None)

    def area(boxes: np.ndarray) -> np.ndarray:
        return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)

    union = area(first)[:, None] + area(second)[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)


def _overlaps(crop: _CropMask, labels: np.ndarray, count: int) -> tuple[np.ndarray, int]:
    """Pixels of the crop on each label 1..count of a label map, and its pixels inside the map."""
    top, left = round(crop.top), round(crop.left)
    height, width = crop.mask.shape
    rows, columns = labels.shape
    row_start, column_start = max(top, 0), max(left, 0)
    row_stop, column_stop = min(top + height, rows), min(left + width, columns)
    if row_start >= row_stop or column_start >= column_stop:
        return np.zeros(count), 0
    mask = crop.mask[row_start - top : row_stop - top, column_start - left : column_stop - left]
    hits = labels[row_start:row_stop, column_start:column_stop][mask]
    return np.bincount(hits, minlength=count + 1)[1:], int(hits.size)


def _assign(cost: np.ndarray, allowed: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs among the allowed ones (scipy's Hungarian solver)."""
    if not allowed.any():
        return []
    rows, columns = linear_sum_assignment(np.where(allowed, cost, _GATED))
    return [
        (int(row), int(column)) for row, column in zip(rows, columns, strict=True) if allowed[row, column]
    ]


def _detection_embeddings(instances: list[DetectedInstance]) -> list[np.ndarray | None]:
    """Unit embedding of each detection, or None (empty, zero, or of another length than the first
    non-empty one of the frame)."""
    dimension = next((instance.embedding.size for instance in instances if instance.embedding.size), 0)
    result: list[np.ndarray | None] = [None] * len(instances)
    if not dimension:
        return result
    columns = [column for column, instance in enumerate(instances) if instance.embedding.size == dimension]
    vectors = np.stack([np.ravel(instances[column].embedding) for column in columns]).astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    usable = np.isfinite(norms) & (norms > 1e-12)
    vectors /= np.where(usable, norms, 1.0)[:, None]
    for row, column in enumerate(columns):
        if usable[row]:
            result[column] = vectors[row]
    return result


def _similarities(
    records: list[_TrackRecord], embeddings: list[np.ndarray | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of track and detection embeddings, and where both have one."""
    shape = (len(records), len(embeddings))
    dimension = next((vector.size for vector in embeddings if vector is not None), 0)
    if not dimension:
        return np.zeros(shape), np.zeros(shape, dtype=bool)
    detection_vectors = np.zeros((len(embeddings), dimension), dtype=np.float32)
    has_detection = np.zeros(len(embeddings), dtype=bool)
    for column, vector in enumerate(embeddings):
        if vector is not None:
            detection_vectors[column], has_detection[column] = vector, True
    track_vectors = np.zeros((len(records), dimension), dtype=np.float32)
    has_track = np.zeros(len(records), dtype=bool)
    for row, record in enumerate(records):
        embedding = record.track.embedding
        if embedding is not None and embedding.size == dimension:
            track_vectors[row], has_track[row] = embedding, True
    similarity = (track_vectors @ detection_vectors.T).astype(np.float64)
    return similarity, has_track[:, None] & has_detection[None, :]


def _subsampled_flow(flow: np.ndarray, stride: int) -> np.ndarray:
    """flow[::stride, ::stride] / stride (in low-resolution pixels); OpenCV's nearest resize picks the
    same samples when the size divides and is several times faster than numpy's strided copy."""
    height, width = flow.shape[:2]
    if height % stride == 0 and width % stride == 0 and flow.dtype == np.float32:
        small = cv2.resize(flow, (width // stride, height // stride), interpolation=cv2.INTER_NEAREST)
    else:
        small = flow[::stride, ::stride].astype(np.float32)
    small *= np.float32(1.0 / stride)
    return small


def _normalised(vector: np.ndarray) -> np.ndarray | None:
    norm = float(np.linalg.norm(vector))
    return None if norm <= 1e-12 or not np.isfinite(norm) else vector / np.float32(norm)


def _steady(before: tuple[float, ...], after: tuple[float, ...]) -> bool:
    """Whether a box kept its size within a factor STEADY_SIZE_CHANGE on both axes: when it did not,
    the object was more likely cut by an occluder (or fragmented) than moved, and its centre
    displacement says nothing about its velocity."""
    for low, high in ((0, 2), (1, 3)):
        ratio = (after[high] - after[low] + 1) / max(before[high] - before[low] + 1, 1e-9)
        if not 1 / STEADY_SIZE_CHANGE <= ratio <= STEADY_SIZE_CHANGE:
            return False
    return True


def _side(box: tuple[float, ...]) -> float:
    return max(box[2] - box[0], box[3] - box[1]) + 1.0


def _box_centre(box: tuple[float, ...]) -> tuple[float, float]:
    return ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)


class MultiObjectTracker:
    """Assigns persistent track ids to the instances of consecutive frames of one camera stream.

    Call ``update`` once per frame in order; ``reset`` before another sequence (or after a jump).
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._identity = np.arange((IGNORE_CLASS + 1) * LABEL_DIVISOR, dtype=np.int32)
        self._detection_table = np.zeros((IGNORE_CLASS + 1) * LABEL_DIVISOR, dtype=np.int32)
        self.reset()

    def reset(self) -> None:
        """Forget every track; ids start again at 1."""
        self._records: list[_TrackRecord] = []
        self._next_id = 1
        self._freed_ids: deque[int] = deque()
        self._previous_labels: np.ndarray | None = None
        self._previous_records: list[_TrackRecord] = []
        self._frame_index = -1
        self._image_size: tuple[int, int] | None = None

    @property
    def frame_index(self) -> int:
        """Index of the last frame given to ``update`` since ``reset`` (-1 before the first)."""
        return self._frame_index

    @property
    def tracks(self) -> list[Track]:
        """Every live track (tentative, confirmed and lost), as copies, boxes as predicted for the
        last frame."""
        return [copy.copy(record.track) for record in self._records]

    # --- one frame ------------------------------------------------------------------------------

    def update(
        self, prediction: PanopticPrediction, flow_to_previous: np.ndarray | None = None, stamp_ns: int = 0
    ) -> TrackedFrame:
        """Tracks of this frame. flow_to_previous: H x W x 2 on this frame's pixels pointing into the
        previous frame (the backward flow of the pair previous -> this), or None."""
        instances = prediction.instances
        self._check_input(prediction, flow_to_previous)
        self._frame_index += 1
        stride = self.config.mask_stride
        labels = self._detection_labels(prediction)
        detection_windows = scipy.ndimage.find_objects(labels, max_label=len(instances))
        detection_areas = np.bincount(labels.ravel(), minlength=len(instances) + 1)[1:]
        small_flow = None if flow_to_previous is None else _subsampled_flow(flow_to_previous, stride)
        self._predict(small_flow)

        embeddings = _detection_embeddings(instances)
        matches = self._associate(instances, embeddings, labels, detection_areas)
        matched_records = {row for row, _ in matches}
        matched_detections = {column: self._records[row] for row, column in matches}

        removed = lost = 0
        survivors: list[_TrackRecord] = []
        for row, record in enumerate(self._records):
            track = record.track
            track.age += 1
            if row in matched_records:
                survivors.append(record)
                continue
            track.frames_since_update += 1
            if track.state is TrackState.TENTATIVE:
                remaining = self.config.confirm_window - track.age
                if track.hits + remaining < self.config.confirm_hits:
                    track.state = TrackState.REMOVED
            elif track.state is TrackState.CONFIRMED:
                track.state = TrackState.LOST
                lost += 1
            if track.state is TrackState.LOST and track.frames_since_update > self.config.max_age:
                track.state = TrackState.REMOVED
            if track.state is TrackState.REMOVED:
                removed += 1
                self._freed_ids.append(track.track_id)
            else:
                survivors.append(record)
        self._records = survivors

        for column, record in matched_detections.items():
            crop = self._crop(labels, detection_windows, column)
            self._continue(record, instances[column], embeddings[column], crop, stamp_ns)

        new = untracked = 0
        order = sorted(
            (column for column in range(len(instances)) if column not in matched_detections),
            key=lambda column: -instances[column].score,
        )
        for column in order:
            instance = instances[column]
            if instance.score < self.config.min_score:
                untracked += 1
                continue
            track_id, freed = self._allocate_id()
            removed += freed
            if track_id is None:
                untracked += 1
                continue
            crop = self._crop(labels, detection_windows, column)
            matched_detections[column] = self._start(track_id, instance, embeddings[column], crop, stamp_ns)
            new += 1

        panoptic, published = self._output(prediction, matched_detections)
        self._remember_labels(labels, matched_detections)
        counts = TrackCounts(matched=len(matches), new=new, lost=lost, removed=removed, untracked=untracked)
        return TrackedFrame(panoptic, published, counts, self._frame_index, stamp_ns)

    def _check_input(self, prediction: PanopticPrediction, flow_to_previous: np.ndarray | None) -> None:
        panoptic = prediction.panoptic
        if panoptic.ndim != 2:
            raise ValueError(f"prediction.panoptic must be H x W, got shape {panoptic.shape}")
        size = (int(panoptic.shape[0]), int(panoptic.shape[1]))
        if self._image_size is not None and size != self._image_size:
            raise ValueError(
                f"frame size changed from {self._image_size} to {size}: call reset() for a new stream"
            )
        self._image_size = size
        if flow_to_previous is not None and flow_to_previous.shape != (*size, 2):
            raise ValueError(f"flow_to_previous must be {(*size, 2)}, got {flow_to_previous.shape}")
        ids = [instance.instance_id for instance in prediction.instances]
        if len(set(ids)) != len(ids) or any(not 1 <= i <= MAX_INSTANCE_ID for i in ids):
            raise ValueError(f"instance ids must be unique and lie in [1, {MAX_INSTANCE_ID}], got {ids}")
        classes = [instance.class_id for instance in prediction.instances]
        if any(not 0 <= c < IGNORE_CLASS for c in classes):
            raise ValueError(f"instance classes must lie in [0, {IGNORE_CLASS}), got {classes}")

    def _detection_labels(self, prediction: PanopticPrediction) -> np.ndarray:
        """Low-resolution map of detection numbers (index + 1; 0 for none), by the panoptic ids
        class_id * 1000 + instance_id of the instances."""
        stride = self.config.mask_stride
        table = self._detection_table  # zeros, patched for this frame and restored
        keys = [instance.class_id * LABEL_DIVISOR + instance.instance_id for instance in prediction.instances]
        table[keys] = np.arange(1, len(keys) + 1, dtype=np.int32)
        try:
            return np.take(table, prediction.panoptic[::stride, ::stride])
        finally:
            table[keys] = 0

    def _crop(self, labels: np.ndarray, windows: list, column: int) -> _CropMask:
        window = windows[column] if column < len(windows) else None
        if window is None:  # too small for the low resolution
            return _CropMask(np.zeros((0, 0), dtype=bool), 0.0, 0.0)
        rows, columns = window
        return _CropMask(labels[window] == column + 1, float(rows.start), float(columns.start))

    # --- prediction into this frame ----------------------------------------------------------------

    def _shift(self, record: _TrackRecord) -> None:
        """Constant velocity: mask and box move by the box centre's velocity."""
        velocity_x, velocity_y = record.velocity
        stride = self.config.mask_stride
        record.crop.left += velocity_x / stride
        record.crop.top += velocity_y / stride
        x_min, y_min, x_max, y_max = record.track.box
        record.track.box = (x_min + velocity_x, y_min + velocity_y, x_max + velocity_x, y_max + velocity_y)

    def _predict(self, small_flow: np.ndarray | None) -> None:
        by_flow: dict[int, _TrackRecord] = {}
        if small_flow is not None and self._previous_labels is not None:
            if small_flow.shape[:2] != self._previous_labels.shape:
                raise ValueError("flow and frame resolution disagree")
            pulled = pull_by_flow(self._previous_labels, small_flow)
            windows = scipy.ndimage.find_objects(pulled, max_label=len(self._previous_records))
            stride = self.config.mask_stride
            for slot, (record, window) in enumerate(zip(self._previous_records, windows, strict=False)):
                if window is None or record.track.state is TrackState.REMOVED:
                    continue
                rows, columns = window
                old_centre = record.crop.centre() if record.crop.area else None
                record.crop = _CropMask(pulled[window] == slot + 1, float(rows.start), float(columns.start))
                if old_centre is not None:
                    new_centre = record.crop.centre()
                    shift_x = (new_centre[0] - old_centre[0]) * stride
                    shift_y = (new_centre[1] - old_centre[1]) * stride
                else:
                    shift_x, shift_y = record.velocity
                x_min, y_min, x_max, y_max = record.track.box
                record.track.box = (x_min + shift_x, y_min + shift_y, x_max + shift_x, y_max + shift_y)
                by_flow[id(record)] = record
        for record in self._records:
            if id(record) not in by_flow:
                self._shift(record)

    # --- association -------------------------------------------------------------------------------

    def _associate(
        self,
        instances: list[DetectedInstance],
        embeddings: list[np.ndarray | None],
        labels: np.ndarray,
        detection_areas: np.ndarray,
    ) -> list[tuple[int, int]]:
        """(track row, detection column) pairs: a gated Hungarian assignment on IoU, embedding and
        class, then one on the predicted position for the tracks and detections it left over."""
        records, config = self._records, self.config
        count = len(instances)
        if not records or not count:
            return []
        intersections = np.zeros((len(records), count))
        track_areas = np.zeros(len(records))
        for row, record in enumerate(records):
            if record.crop.area:
                intersections[row], track_areas[row] = _overlaps(record.crop, labels, count)
        unions = track_areas[:, None] + detection_areas[None, :] - intersections
        iou = np.where(unions > 0, intersections / np.maximum(unions, 1), 0.0)
        track_boxes = np.array([record.track.box for record in records], dtype=np.float64)
        detection_boxes = np.array([instance.box for instance in instances], dtype=np.float64)
        too_small = (track_areas < MIN_MASK_PIXELS)[:, None] | (detection_areas < MIN_MASK_PIXELS)[None, :]
        if too_small.any():
            iou = np.where(too_small, box_iou(track_boxes, detection_boxes), iou)

        # Centre distance in gate sizes: the larger side of the detection's box or of the track's
        # as last seen whole, at least min_gate_size.
        track_centres = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2.0
        detection_centres = (detection_boxes[:, :2] + detection_boxes[:, 2:]) / 2.0
        distance = np.linalg.norm(track_centres[:, None, :] - detection_centres[None, :, :], axis=2)
        track_sides = np.array([record.size for record in records])
        detection_sides = (detection_boxes[:, 2:] - detection_boxes[:, :2]).max(axis=1) + 1
        gate_sizes = np.maximum(
            np.maximum(track_sides[:, None], detection_sides[None, :]), config.min_gate_size
        )
        distance_in_gates = distance / np.maximum(gate_sizes, 1e-9)
        near = distance_in_gates <= config.max_centre_distance
        near_for_embedding = distance_in_gates <= config.embedding_centre_distance

        cost = 1.0 - iou
        similarity, both = _similarities(records, embeddings)
        dissimilar = both & (similarity < config.min_embedding_similarity)
        embedding_route = both & ~dissimilar & near_for_embedding
        if both.any():
            weights = config.iou_weight + config.embedding_weight
            embedding_cost = 1.0 - np.clip(similarity, 0.0, 1.0)
            cost = np.where(
                both, (config.iou_weight * cost + config.embedding_weight * embedding_cost) / weights, cost
            )

        track_classes = np.array([record.track.class_id for record in records])
        detection_classes = np.array([instance.class_id for instance in instances])
        same_class = track_classes[:, None] == detection_classes[None, :]
        if config.gate_classes:
            class_allowed = same_class
        else:
            class_allowed = np.ones_like(same_class)
            cost = cost + np.where(same_class, 0.0, config.class_mismatch_cost)
        iou_route = (iou >= config.min_iou) & (iou > 0)
        allowed = class_allowed & (cost <= config.max_cost) & (iou_route | embedding_route)
        matches = _assign(cost, allowed)
        if not config.position_matching:
            return matches
        # Leftovers (small, fast or reappearing objects whose masks do not overlap): nearest in
        # predicted position, unless their embeddings disagree.
        allowed = class_allowed & near & ~dissimilar
        allowed[[row for row, _ in matches], :] = False
        allowed[:, [column for _, column in matches]] = False
        if config.gate_classes:
            position_cost = distance_in_gates
        else:
            position_cost = distance_in_gates + np.where(same_class, 0.0, config.class_mismatch_cost)
        return matches + _assign(position_cost, allowed)

    # --- track life cycle ----------------------------------------------------------------------------

    def _allocate_id(self) -> tuple[int | None, int]:
        """(a free track id or None, number of lost tracks removed to free one)."""
        if self._next_id <= self.config.max_track_id:
            self._next_id += 1
            return self._next_id - 1, 0
        if self._freed_ids:
            return self._freed_ids.popleft(), 0
        lost = [record for record in self._records if record.track.state is TrackState.LOST]
        if not lost:
            return None, 0
        oldest = max(lost, key=lambda record: record.track.frames_since_update)
        oldest.track.state = TrackState.REMOVED
        self._records.remove(oldest)
        return oldest.track.track_id, 1

    def _start(
        self,
        track_id: int,
        instance: DetectedInstance,
        embedding: np.ndarray | None,
        crop: _CropMask,
        stamp_ns: int,
    ) -> _TrackRecord:
        state = TrackState.CONFIRMED if self.config.confirm_hits <= 1 else TrackState.TENTATIVE
        box = (float(instance.box[0]), float(instance.box[1]), float(instance.box[2]), float(instance.box[3]))
        track = Track(
            track_id=track_id,
            class_id=int(instance.class_id),
            box=box,
            score=float(instance.score),
            state=state,
            last_stamp_ns=stamp_ns,
            embedding=embedding,
        )
        if not crop.area:
            crop = _CropMask(crop.mask, box[1] / self.config.mask_stride, box[0] / self.config.mask_stride)
        record = _TrackRecord(track, crop, box, size=_side(box))
        record.vote(track.class_id)
        self._records.append(record)
        return record

    def _continue(
        self,
        record: _TrackRecord,
        instance: DetectedInstance,
        embedding: np.ndarray | None,
        crop: _CropMask,
        stamp_ns: int,
    ) -> None:
        config, track = self.config, record.track
        box = (float(instance.box[0]), float(instance.box[1]), float(instance.box[2]), float(instance.box[3]))
        if _steady(record.matched_box, box):
            record.size = _side(box)
            centre, matched_centre = _box_centre(box), _box_centre(record.matched_box)
            frames = track.frames_since_update + 1
            displacement = (
                (centre[0] - matched_centre[0]) / frames,
                (centre[1] - matched_centre[1]) / frames,
            )
            weight = 1.0 if track.hits == 1 else config.velocity_smoothing
            record.velocity = (
                weight * displacement[0] + (1.0 - weight) * record.velocity[0],
                weight * displacement[1] + (1.0 - weight) * record.velocity[1],
            )
        record.matched_box = box
        if not crop.area:
            crop = _CropMask(crop.mask, box[1] / config.mask_stride, box[0] / config.mask_stride)
        record.crop = crop
        track.box = box
        track.score = float(instance.score)
        track.hits += 1
        track.frames_since_update = 0
        track.last_stamp_ns = stamp_ns
        if track.state is TrackState.LOST or (
            track.state is TrackState.TENTATIVE and track.hits >= config.confirm_hits
        ):
            track.state = TrackState.CONFIRMED
        if embedding is not None:
            mixed = None
            if track.embedding is not None and track.embedding.shape == embedding.shape:
                momentum = config.embedding_momentum
                mixed = _normalised(momentum * track.embedding + (1.0 - momentum) * embedding)
            track.embedding = embedding if mixed is None else mixed
        record.vote(int(instance.class_id))

    # --- output -----------------------------------------------------------------------------------------

    def _published(self, record: _TrackRecord) -> bool:
        state = record.track.state
        return state is TrackState.CONFIRMED or (
            state is TrackState.TENTATIVE and self.config.publish_tentative
        )

    def _output(
        self, prediction: PanopticPrediction, records_of_detections: dict[int, _TrackRecord]
    ) -> tuple[np.ndarray, list[Track]]:
        """Panoptic ids through one lookup table (detection id -> track id, unpublished -> void)."""
        table = self._identity  # patched for this frame, restored below (no 1 MB copy per frame)
        published: list[Track] = []
        void = IGNORE_CLASS * LABEL_DIVISOR
        keys = []
        for column, instance in enumerate(prediction.instances):
            key = int(instance.class_id) * LABEL_DIVISOR + int(instance.instance_id)
            keys.append(key)
            record = records_of_detections.get(column)
            if record is not None and self._published(record):
                table[key] = record.track.class_id * LABEL_DIVISOR + record.track.track_id
                published.append(copy.copy(record.track))
            else:
                table[key] = void
        try:
            panoptic = np.take(table, prediction.panoptic, mode="clip")
        finally:
            table[keys] = keys
        return panoptic, published

    def _remember_labels(self, labels: np.ndarray, records_of_detections: dict[int, _TrackRecord]) -> None:
        """Low-resolution map of the tracks seen in this frame, which the next frame's flow pulls."""
        lookup = np.zeros(labels.max(initial=0) + 1, dtype=np.uint16)
        self._previous_records = []
        for column, record in records_of_detections.items():
            if column + 1 < lookup.size:
                self._previous_records.append(record)
                lookup[column + 1] = len(self._previous_records)
        self._previous_labels = lookup[labels]
