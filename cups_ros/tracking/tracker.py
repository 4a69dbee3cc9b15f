"""Online multi-object tracker: per-frame instances (PanopticPrediction) -> persistent track ids.

Each frame, every live track's mask is predicted into the frame: tracks seen in the previous frame by
the optical flow when it is given (the previous frame's track map pulled through it), all others
(lost tracks, whose pixels the flow no longer describes) and all tracks without flow by shifting the
mask with the constant-velocity estimate. A cost of mask IoU, embedding cosine similarity, class
agreement and predicted-centre distance, with gates, is solved by one Hungarian assignment (scipy
``linear_sum_assignment``) over the pairs found by mask or embedding and, after those, the pairs
found by position alone. Then the life cycle advances: TENTATIVE -> CONFIRMED (``confirm_hits``
matches within ``confirm_window`` frames) -> LOST (unmatched, kept ``max_age`` frames and still
matchable) -> REMOVED. An unmatched tentative track stays tentative (unpublished that frame) while it
can still reach ``confirm_hits`` inside its window, and is removed as soon as it cannot; it never
becomes LOST. A track whose predicted box has left the image is removed.

Velocity: the displacement of the box centre between matches, or of the box edge away from the image
border while the border cuts the box; none while the box changes size by more than
STEADY_SIZE_CHANGE a frame (cut by an occluder). With flow, a track matched in consecutive frames
whose box changed size takes the median flow on its detection's pixels instead (the object's own
motion, which the centre of a box that occluders cut misstates).

Input: the instances' pixels are those with panoptic id ``class_id * 1000 + instance_id`` (as the
shared post-processing writes them), instance ids unique in the frame, boxes holding their pixels.
Output: those pixels become ``track class * 1000 + track id`` (the track's class is the majority of
its detections' classes, so with class gating simply its class), or void when the detection is not
published.

Speed: masks are kept at 1/``mask_stride`` resolution as crops around the object, so the IoUs of a
track with every detection cost one bincount over its crop (one joint bincount for all the tracks the
flow brought); the only full-resolution work is one table lookup that writes the track ids into the
panoptic map. Detections of fewer than ``full_resolution_area`` pixels, which the low resolution
renders badly or not at all, are compared at full resolution over their own pixels (through the flow
where the track was seen in the previous frame), tracks keeping such masks at full resolution; masks
below ``MIN_MASK_PIXELS`` at the low resolution that still meet are compared by their boxes.

Track ids: 1, 2, ... in order of birth and never reused while fewer than ``max_track_id`` (999, the
panoptic codec's class * 1000 + id) tracks have been started since ``reset``. Beyond that, ids of
removed tracks are reused, the one removed longest ago first; when every id is held by a live track,
the longest-lost track is removed to free its id, and when all of them are active the detection stays
untracked (void in the output, counted in ``TrackCounts.untracked``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import scipy.ndimage
from scipy.optimize import linear_sum_assignment

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, MAX_INSTANCE_ID
from cups_ros.core.track import Track, TrackState
from cups_ros.model.postprocess import DetectedInstance, PanopticPrediction
from cups_ros.tracking.config import TrackerConfig

STEADY_SIZE_CHANGE = 1.5  # per frame, see _steady
RIGID_SIZE_CHANGE = 1.05  # see update: within it, a box centre displacement is the object's motion
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
    """A mask as a crop and its top-left corner, in pixels of its resolution (1/mask_stride, or full
    for the fine masks of small objects); the corner is a float so sub-pixel constant-velocity
    shifts accumulate."""

    mask: np.ndarray
    top: float
    left: float
    area: int = field(init=False)

    def __post_init__(self) -> None:
        self.area = int(np.count_nonzero(self.mask))
        self._padded: np.ndarray | None = None

    def padded(self) -> np.ndarray:
        """The mask with a one-pixel False border (made once)."""
        if self._padded is None:
            height, width = self.mask.shape
            self._padded = np.zeros((height + 2, width + 2), dtype=bool)
            self._padded[1:-1, 1:-1] = self.mask
        return self._padded

    def centre(self) -> tuple[float, float]:
        """(x, y) of the crop's centre in low-resolution pixels."""
        height, width = self.mask.shape
        return (self.left + width / 2.0, self.top + height / 2.0)


@dataclass
class _FineDetection:
    """A small detection's pixels at full resolution: its mask in its box, and the pixel coordinates."""

    crop: _CropMask
    rows: np.ndarray
    columns: np.ndarray
    bounds: tuple[int, int, int, int]
    """First row, first column, last row, last column of the pixels (at most: of the box)."""
    sources: np.ndarray | None = None
    """2 x N: rows and columns where the flow takes its pixels in the previous frame (rounded),
    computed once when needed."""

    vectors: np.ndarray | None = None
    """N x 2: the flow on its pixels, read once when needed."""

    def flow_vectors(self, flow: np.ndarray) -> np.ndarray:
        if self.vectors is None:
            self.vectors = flow[self.rows, self.columns]
        return self.vectors

    def sources_by_flow(self, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.sources is None:
            vectors = self.flow_vectors(flow)
            moved = np.stack([self.rows + vectors[:, 1], self.columns + vectors[:, 0]])
            self.sources = np.rint(moved).astype(np.int64)
        return self.sources[0], self.sources[1]

    def source_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """(first row, first column), (last row, last column) of the sources (after sources_by_flow)."""
        assert self.sources is not None
        return self.sources.min(axis=1), self.sources.max(axis=1)


def _hits(crop: _CropMask, scale: int, rows: np.ndarray, columns: np.ndarray) -> int:
    """How many of the full-resolution pixels (rows, columns) fall on the crop, a mask at 1/scale
    resolution (low-resolution pixel i samples full-resolution pixel i * scale)."""
    if not crop.area:
        return 0
    if scale > 1:
        half = scale // 2
        rows, columns = (rows + half) // scale, (columns + half) // scale
    padded = crop.padded()  # a False border: pixels outside the crop are clipped onto it
    height, width = padded.shape
    rows = rows - (round(crop.top) - 1)
    columns = columns - (round(crop.left) - 1)
    np.minimum(np.maximum(rows, 0, out=rows), height - 1, out=rows)
    np.minimum(np.maximum(columns, 0, out=columns), width - 1, out=columns)
    return int(np.count_nonzero(padded[rows, columns]))


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
    """(dx, dy) of the object in full-resolution pixels per frame (see the module docstring)."""
    fine: _CropMask | None = None
    """Full-resolution mask of the last matched detection when it was small (below
    ``full_resolution_area``), in full-resolution pixels, else None."""
    fine_in_previous_frame: bool = False
    """True: ``fine`` lies where the track was in the previous frame and this frame's flow leads there;
    False: ``fine`` has been moved into this frame by the velocity."""
    pulled_label: int = 0
    """This frame: the track's label in the flow-pulled map of the previous frame's tracks, or 0."""
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


def _assign(cost: np.ndarray, allowed: np.ndarray, unmatched: float) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs among the allowed ones, where each row or column left unpaired
    costs ``unmatched`` (every allowed pair must cost less than two of those): the cheapest set of
    pairs, not the most pairs first. Leaving both of a pair's sides unpaired instead of pairing them
    changes the total by 2 x unmatched - cost, so scipy's Hungarian solver on those gains (0 where not
    allowed) finds it without padding the matrix."""
    if not allowed.any():
        return []
    rows, columns = linear_sum_assignment(np.where(allowed, cost - 2.0 * unmatched, 0.0))
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


def _copied(track: Track) -> Track:
    """A shallow copy of a track (copy.copy's work without its generic machinery)."""
    clone = object.__new__(Track)
    clone.__dict__.update(track.__dict__)
    return clone


def _steady(before: tuple[float, ...], after: tuple[float, ...], factor: float = STEADY_SIZE_CHANGE) -> bool:
    """Whether a box kept its size within ``factor`` on both axes: when it did not (by the default
    STEADY_SIZE_CHANGE), the object was more likely cut by an occluder (or fragmented) than moved,
    and its centre displacement says nothing about its velocity."""
    for low, high in ((0, 2), (1, 3)):
        ratio = (after[high] - after[low] + 1) / max(before[high] - before[low] + 1, 1e-9)
        if not 1 / factor <= ratio <= factor:
            return False
    return True


def _float_box(box: tuple[int, int, int, int] | tuple[float, ...]) -> tuple[float, float, float, float]:
    return (float(box[0]), float(box[1]), float(box[2]), float(box[3]))


def _moved(box: tuple[float, float, float, float], dx: float, dy: float) -> tuple[float, float, float, float]:
    return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


def _at_border(box: tuple[float, ...], size: tuple[int, int]) -> bool:
    height, width = size
    return box[0] <= 0 or box[1] <= 0 or box[2] >= width - 1 or box[3] >= height - 1


def _box_motion(
    before: tuple[float, ...], after: tuple[float, ...], size: tuple[int, int], frames: int
) -> tuple[float, float] | None:
    """(dx, dy) per frame of an object by its box over ``frames`` frames: per axis, by the edge
    away from the image border where the box touches one (the image cuts it there), else by the
    centre; None where on either axis the box's extent changed by more than STEADY_SIZE_CHANGE (cut
    by an occluder or fragmented rather than moved) or both ends touch the border."""
    height, width = size
    result = [0.0, 0.0]
    for axis, limit in ((0, width), (1, height)):
        low_before, high_before = before[axis], before[axis + 2]
        low_after, high_after = after[axis], after[axis + 2]
        at_low = low_before <= 0 or low_after <= 0
        at_high = high_before >= limit - 1 or high_after >= limit - 1
        if at_low and not at_high:
            result[axis] = (high_after - high_before) / frames
        elif at_high and not at_low:
            result[axis] = (low_after - low_before) / frames
        elif at_low:
            return None
        else:
            ratio = (high_after - low_after + 1) / max(high_before - low_before + 1, 1e-9)
            if not 1 / STEADY_SIZE_CHANGE <= ratio <= STEADY_SIZE_CHANGE:
                return None
            result[axis] = (low_after + high_after - low_before - high_before) / (2 * frames)
    return (result[0], result[1])


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
        self._pulled: np.ndarray | None = None
        self._grid: np.ndarray | None = None
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
        return [_copied(record.track) for record in self._records]

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
        fine = self._fine_detections(prediction, detection_areas)
        matches = self._associate(instances, embeddings, labels, detection_areas, fine, flow_to_previous)
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
            if record.fine_in_previous_frame:
                self._shift_fine(record)  # unmatched: into this frame by the velocity after all
            if self._outside(track.box):
                track.state = TrackState.REMOVED  # predicted out of the image: it left
            elif track.state is TrackState.TENTATIVE:
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

        updated = self._updated_embeddings(matched_detections, embeddings)
        for column, record in matched_detections.items():
            crop = self._crop(labels, detection_windows, column)
            motion = None
            if (
                small_flow is not None
                and flow_to_previous is not None
                and record.track.frames_since_update == 0
                and not _steady(record.matched_box, _float_box(instances[column].box), RIGID_SIZE_CHANGE)
            ):
                motion = self._flow_motion(crop, fine.get(column), small_flow, flow_to_previous)
            self._continue(
                record, instances[column], updated[column], crop, fine.get(column), motion, stamp_ns
            )

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
            matched_detections[column] = self._start(
                track_id, instance, embeddings[column], crop, fine.get(column), stamp_ns
            )
            new += 1

        panoptic, published = self._output(prediction, matched_detections)
        self._remember_labels(labels, matched_detections)
        counts = TrackCounts(matched=len(matches), new=new, lost=lost, removed=removed, untracked=untracked)
        return TrackedFrame(panoptic, published, counts, self._frame_index, stamp_ns)

    def _outside(self, box: tuple[float, float, float, float]) -> bool:
        """Whether a box lies wholly outside the image."""
        assert self._image_size is not None
        height, width = self._image_size
        x_min, y_min, x_max, y_max = box
        return x_max < 0 or y_max < 0 or x_min > width - 1 or y_min > height - 1

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

    def _fine_detections(
        self, prediction: PanopticPrediction, detection_areas: np.ndarray
    ) -> dict[int, _FineDetection]:
        """The detections below full_resolution_area pixels (judged by the low-resolution area, then
        counted at full resolution in the box), with their full-resolution masks."""
        threshold, stride = self.config.full_resolution_area, self.config.mask_stride
        if not threshold or stride == 1:
            return {}
        result = {}
        panoptic = prediction.panoptic
        for column in np.flatnonzero(detection_areas * stride * stride < threshold).tolist():
            instance = prediction.instances[column]
            x_min, y_min, x_max, y_max = (int(value) for value in instance.box)
            x_min, y_min = max(x_min, 0), max(y_min, 0)
            key = instance.class_id * LABEL_DIVISOR + instance.instance_id
            mask = panoptic[y_min : y_max + 1, x_min : x_max + 1] == key
            rows, columns = np.nonzero(mask)
            if 0 < rows.size < threshold:
                height, width = mask.shape  # the box: the pixels' bounds
                bounds = (y_min, x_min, y_min + height - 1, x_min + width - 1)
                result[column] = _FineDetection(
                    _CropMask(mask, float(y_min), float(x_min)), rows + y_min, columns + x_min, bounds
                )
        return result

    # --- prediction into this frame ----------------------------------------------------------------

    def _pull(self, labels: np.ndarray, small_flow: np.ndarray) -> np.ndarray:
        """labels of the previous frame brought into this one: out(x) = labels(x + flow(x)), nearest
        sample, 0 outside (cups_ros.pseudo.video.pull_by_flow, with the pixel grid kept)."""
        height, width = labels.shape
        if self._grid is None or self._grid.shape[:2] != (height, width):
            columns, rows = np.meshgrid(
                np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
            )
            self._grid = np.dstack([columns, rows])
        return cv2.remap(
            labels,
            self._grid + small_flow,
            None,
            cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

    def _shift(self, record: _TrackRecord) -> None:
        """Constant velocity: mask and box move by the velocity."""
        velocity_x, velocity_y = record.velocity
        stride = self.config.mask_stride
        record.crop.left += velocity_x / stride
        record.crop.top += velocity_y / stride
        record.track.box = _moved(record.track.box, velocity_x, velocity_y)

    def _predict(self, small_flow: np.ndarray | None) -> None:
        by_flow: dict[int, _TrackRecord] = {}
        seen: set[int] = set()
        self._pulled = None
        for record in self._records:
            record.pulled_label = 0
        if small_flow is not None and self._previous_labels is not None:
            if small_flow.shape[:2] != self._previous_labels.shape:
                raise ValueError("flow and frame resolution disagree")
            pulled = self._pull(self._previous_labels, small_flow)
            self._pulled = pulled
            windows = scipy.ndimage.find_objects(pulled, max_label=len(self._previous_records))
            stride = self.config.mask_stride
            for slot, (record, window) in enumerate(zip(self._previous_records, windows, strict=False)):
                if record.track.state is TrackState.REMOVED:
                    continue
                seen.add(id(record))  # its full-resolution mask is compared through the flow
                if window is None:
                    continue
                rows, columns = window
                old_centre = record.crop.centre() if record.crop.area else None
                record.crop = _CropMask(pulled[window] == slot + 1, float(rows.start), float(columns.start))
                record.pulled_label = slot + 1
                if old_centre is not None:
                    new_centre = record.crop.centre()
                    shift_x = (new_centre[0] - old_centre[0]) * stride
                    shift_y = (new_centre[1] - old_centre[1]) * stride
                else:
                    shift_x, shift_y = record.velocity
                record.track.box = _moved(record.track.box, shift_x, shift_y)
                by_flow[id(record)] = record
        for record in self._records:
            if id(record) not in by_flow:
                self._shift(record)
            if record.fine is not None:
                if id(record) in seen:
                    record.fine_in_previous_frame = True
                else:
                    self._shift_fine(record)

    def _flow_motion(
        self, crop: _CropMask, fine: _FineDetection | None, small_flow: np.ndarray, flow: np.ndarray
    ) -> tuple[float, float] | None:
        """(dx, dy) a detection's pixels moved since the previous frame by the flow (minus its median
        on them, in full-resolution pixels), or None without pixels: the object's own motion, which
        its box centre misstates while occluders cut it differently from frame to frame."""
        if fine is not None:
            vectors, scale = fine.flow_vectors(flow), 1.0
        elif crop.area:
            height, width = crop.mask.shape
            top, left = int(crop.top), int(crop.left)
            vectors = small_flow[top : top + height, left : left + width][crop.mask]
            scale = float(self.config.mask_stride)
        else:
            return None
        middle = len(vectors) // 2
        median = np.partition(vectors, middle, axis=0)[middle]
        return (-float(median[0]) * scale, -float(median[1]) * scale)

    @staticmethod
    def _shift_fine(record: _TrackRecord) -> None:
        assert record.fine is not None
        record.fine.left += record.velocity[0]
        record.fine.top += record.velocity[1]
        record.fine_in_previous_frame = False

    # --- association -------------------------------------------------------------------------------

    def _associate(
        self,
        instances: list[DetectedInstance],
        embeddings: list[np.ndarray | None],
        labels: np.ndarray,
        detection_areas: np.ndarray,
        fine: dict[int, _FineDetection],
        flow: np.ndarray | None,
    ) -> list[tuple[int, int]]:
        """(track row, detection column) pairs: one gated Hungarian assignment on IoU, embedding,
        class and predicted-centre distance, in which pairs found by position alone only take the
        tracks and detections that the pairs found by mask or embedding leave over."""
        records, config = self._records, self.config
        count = len(instances)
        if not records or not count:
            return []
        intersections = np.zeros((len(records), count))
        track_areas = np.zeros(len(records))
        pulled = self._pulled
        if pulled is not None:  # the tracks the flow brought into this frame, all at once
            joint = pulled.astype(np.int64).ravel() * (count + 1) + labels.ravel()
            histogram = np.bincount(joint, minlength=(len(self._previous_records) + 1) * (count + 1))
            histogram = histogram.reshape(-1, count + 1)
        for row, record in enumerate(records):
            if pulled is not None and record.pulled_label:
                intersections[row] = histogram[record.pulled_label, 1:]
                track_areas[row] = record.crop.area
            elif record.crop.area:
                intersections[row], track_areas[row] = _overlaps(record.crop, labels, count)
        unions = track_areas[:, None] + detection_areas[None, :] - intersections
        iou = np.where(unions > 0, intersections / np.maximum(unions, 1), 0.0)
        track_boxes = np.array([record.track.box for record in records], dtype=np.float64)
        detection_boxes = np.array([instance.box for instance in instances], dtype=np.float64)
        too_small = (track_areas < MIN_MASK_PIXELS)[:, None] | (detection_areas < MIN_MASK_PIXELS)[None, :]
        if too_small.any():
            iou = np.where(too_small, box_iou(track_boxes, detection_boxes), iou)
        track_classes = np.array([record.track.class_id for record in records])
        detection_classes = np.array([instance.class_id for instance in instances])
        same_class = track_classes[:, None] == detection_classes[None, :]
        if fine:
            self._fine_ious(iou, fine, flow, same_class if config.gate_classes else np.ones_like(same_class))

        # Centre distance in gate sizes: the larger side of the detection's box or of the track's
        # as last seen whole, at least min_gate_size.
        detection_centres = (detection_boxes[:, :2] + detection_boxes[:, 2:]) / 2.0
        track_centres = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2.0
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

        if config.gate_classes:
            class_allowed = same_class
        else:
            class_allowed = np.ones_like(same_class)
            cost = cost + np.where(same_class, 0.0, config.class_mismatch_cost)
        iou_route = (iou >= config.min_iou) & (iou > 0)
        by_mask = class_allowed & (cost <= config.max_cost) & (iou_route | embedding_route)
        # One assignment for both routes (a greedy masks-then-positions order swaps neighbours whose
        # masks barely overlap): every pair without embeddings to compare pays position_weight per
        # gate size of centre distance (at most max_centre_distance of it), and pairs found by
        # position alone pay `priority` on top, more than any mask pair can cost; leaving a track or a
        # detection unpaired costs `unmatched`, so that position pairs only take what the mask pairs
        # leave over and never break one up.
        weight, reach = config.position_weight, config.max_centre_distance
        cost = cost + np.where(both, 0.0, weight * np.minimum(distance_in_gates, reach))
        class_term = 0.0 if config.gate_classes else config.class_mismatch_cost
        spread = class_term + weight * reach + 1.0  # position costs above `priority`, and a margin
        priority = config.max_cost + weight * reach + spread + 1.0
        unmatched = (priority + spread) / 2.0
        allowed = by_mask
        if config.position_matching:
            by_position = class_allowed & near & ~dissimilar & ~by_mask
            position_cost = priority + weight * distance_in_gates
            if not config.gate_classes:
                position_cost = position_cost + np.where(same_class, 0.0, class_term)
            cost = np.where(by_position, position_cost, cost)
            allowed = by_mask | by_position
        return _assign(cost, allowed, unmatched)

    def _fine_ious(
        self,
        iou: np.ndarray,
        fine: dict[int, _FineDetection],
        flow: np.ndarray | None,
        candidates: np.ndarray,
    ) -> None:
        """The IoU columns of the small detections, at full resolution: a detection's pixels (brought
        into the previous frame by the flow where the track's full-resolution mask lies there) counted
        on each track's mask, the full-resolution one or else the low-resolution one. candidates:
        tracks x detections that may match at all (class)."""
        stride = self.config.mask_stride
        masks: dict[int, tuple[_CropMask, int, float, bool, int, int, int, int] | None] = {}
        for column, detection in fine.items():
            iou[:, column] = 0.0
            area = detection.rows.size
            bounds: dict[bool, tuple[np.ndarray, np.ndarray, int, int, int, int]] = {}
            for row in np.flatnonzero(candidates[:, column]).tolist():
                if row not in masks:
                    record = self._records[row]
                    crop, scale = (record.fine, 1) if record.fine is not None else (record.crop, stride)
                    height, width = crop.mask.shape
                    top, left = round(crop.top) * scale, round(crop.left) * scale
                    masks[row] = (
                        (
                            crop,
                            scale,
                            float(crop.area * scale * scale),
                            record.fine is not None and record.fine_in_previous_frame and flow is not None,
                            top - scale,
                            top + height * scale,
                            left - scale,
                            left + width * scale,
                        )
                        if crop.area
                        else None
                    )
                entry = masks[row]
                if entry is None:
                    continue
                crop, scale, track_area, by_flow, first_row, last_row, first_column, last_column = entry
                if by_flow not in bounds:
                    if by_flow:
                        assert flow is not None
                        rows, columns = detection.sources_by_flow(flow)
                        (row_min, column_min), (row_max, column_max) = detection.source_bounds()
                    else:
                        rows, columns = detection.rows, detection.columns
                        row_min, column_min, row_max, column_max = detection.bounds
                    bounds[by_flow] = (rows, columns, row_min, row_max, column_min, column_max)
                rows, columns, row_min, row_max, column_min, column_max = bounds[by_flow]
                if (
                    first_row > row_max
                    or last_row < row_min
                    or first_column > column_max
                    or last_column < column_min
                ):
                    continue
                hits = _hits(crop, scale, rows, columns)
                if hits:
                    iou[row, column] = hits / (area + track_area - hits)

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
        fine: _FineDetection | None,
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
        record = _TrackRecord(track, crop, box, size=_side(box), fine=None if fine is None else fine.crop)
        record.vote(track.class_id)
        self._records.append(record)
        return record

    def _updated_embeddings(
        self, matched: dict[int, _TrackRecord], embeddings: list[np.ndarray | None]
    ) -> dict[int, np.ndarray | None]:
        """Per matched detection, its track's next embedding: momentum x the track's + (1 - momentum)
        x the detection's, renormalised, where both have one of the same length, else the
        detection's (all pairs at once)."""
        result = {column: embeddings[column] for column in matched}
        pairs = [
            (column, old, new)
            for column, record in matched.items()
            if (new := embeddings[column]) is not None
            and (old := record.track.embedding) is not None
            and old.shape == new.shape
        ]
        if pairs:
            momentum = self.config.embedding_momentum
            mixed = momentum * np.stack([old for _, old, _ in pairs]) + (1.0 - momentum) * np.stack(
                [new for *_, new in pairs]
            )
            norms = np.sqrt(np.einsum("ij,ij->i", mixed, mixed))
            usable = np.isfinite(norms) & (norms > 1e-12)
            mixed /= np.where(usable, norms, 1.0).astype(mixed.dtype)[:, None]
            for (column, _, _), vector, good in zip(pairs, mixed, usable, strict=True):
                if good:
                    result[column] = vector
        return result

    def _continue(
        self,
        record: _TrackRecord,
        instance: DetectedInstance,
        embedding: np.ndarray | None,
        crop: _CropMask,
        fine: _FineDetection | None,
        motion: tuple[float, float] | None,
        stamp_ns: int,
    ) -> None:
        config, track = self.config, record.track
        box = (float(instance.box[0]), float(instance.box[1]), float(instance.box[2]), float(instance.box[3]))
        assert self._image_size is not None
        if _steady(record.matched_box, box) and not _at_border(box, self._image_size):
            record.size = _side(box)
        displacement = motion or _box_motion(
            record.matched_box, box, self._image_size, track.frames_since_update + 1
        )
        if displacement is not None:
            weight = 1.0 if track.hits == 1 else config.velocity_smoothing
            record.velocity = (
                weight * displacement[0] + (1.0 - weight) * record.velocity[0],
                weight * displacement[1] + (1.0 - weight) * record.velocity[1],
            )
        record.matched_box = box
        if not crop.area:
            crop = _CropMask(crop.mask, box[1] / config.mask_stride, box[0] / config.mask_stride)
        record.crop = crop
        record.fine = None if fine is None else fine.crop
        record.fine_in_previous_frame = False
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
            track.embedding = embedding
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
                published.append(_copied(record.track))
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
