"""Pseudo-tracks and temporal smoothing for video pseudo-labels (VideoCUPS).

Instance masks of earlier frames are carried into the current frame by optical flow and matched to
the current masks by Hungarian assignment on IoU (scipy); a track unseen for ``window`` frames ends.
Semantic labels are smoothed by a majority vote over frames t-1, t, t+1 warped into frame t.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from cups_ros.core.panoptic import MAX_INSTANCE_ID
from cups_ros.pseudo.masks import mask_iou


@dataclass
class VideoConfig:
    """Pseudo-track propagation and smoothing (config/pseudo_label.yaml ``video``)."""

    match_iou: float = 0.4  # VideoCUPS
    window: int = 3  # frames a track survives unmatched
    smoothing: bool = True  # semantic majority over t-1, t, t+1

    def __post_init__(self) -> None:
        if not 0.0 < self.match_iou <= 1.0:
            raise ValueError(f"video.match_iou must lie in (0, 1], got {self.match_iou}")
        if self.window < 1:
            raise ValueError(f"video.window must be >= 1, got {self.window}")


def pull_by_flow(values: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """values of another frame brought onto this frame: out(x) = values(x + flow(x)), nearest
    sample; flow is defined on this frame's pixels. Outside the other frame: 0."""
    if flow.shape[:2] != values.shape[:2] or flow.shape[2:] != (2,):
        raise ValueError(f"flow {flow.shape} does not fit values {values.shape}")
    height, width = flow.shape[:2]
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = xs + flow[..., 0].astype(np.float32)
    map_y = ys + flow[..., 1].astype(np.float32)
    source = values.astype(np.uint8) if values.dtype == bool else values
    pulled = cv2.remap(source, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return pulled.astype(bool) if values.dtype == bool else pulled


@dataclass
class _TrackMemory:
    mask: np.ndarray  # in the coordinates of the latest frame
    unmatched_frames: int = 0


class PseudoTrackPropagator:
    """Assigns persistent pseudo-track ids to the instance masks of consecutive frames."""

    def __init__(self, config: VideoConfig | None = None) -> None:
        self.config = config or VideoConfig()
        self.tracks: dict[int, _TrackMemory] = {}
        self._next_id = 1

    def _new_id(self) -> int:
        for _ in range(MAX_INSTANCE_ID):
            candidate = self._next_id
            self._next_id = self._next_id % MAX_INSTANCE_ID + 1
            if candidate not in self.tracks:
                return candidate
        raise ValueError(f"more than {MAX_INSTANCE_ID} pseudo-tracks alive at once")

    def step(self, masks: np.ndarray, flow_to_previous: np.ndarray | None) -> list[int]:
        """Track ids for this frame's masks (N x H x W bool). flow_to_previous: HxWx2 on this frame's
        pixels pointing into the previous frame (the backward flow of pair t-1, t); None starts over."""
        if flow_to_previous is None:
            self.tracks.clear()
        else:
            for memory in self.tracks.values():
                memory.mask = pull_by_flow(memory.mask, flow_to_previous)
        track_ids = list(self.tracks)
        iou = mask_iou(np.stack([self.tracks[t].mask for t in track_ids]) if track_ids else masks[:0], masks)
        assigned: dict[int, int] = {}
        if iou.size:
            rows, columns = linear_sum_assignment(-iou)
            for row, column in zip(rows, columns, strict=True):
                if iou[row, column] >= self.config.match_iou:
                    assigned[int(column)] = track_ids[row]
        for track_id in track_ids:
            if track_id not in assigned.values():
                memory = self.tracks[track_id]
                memory.unmatched_frames += 1
                if memory.unmatched_frames >= self.config.window:
                    del self.tracks[track_id]
        result = []
        for index, mask in enumerate(masks):
            track_id = assigned.get(index)
            if track_id is None:
                track_id = self._new_id()
            self.tracks[track_id] = _TrackMemory(mask.copy())
            result.append(track_id)
        return result


def smooth_labels(
    labels: np.ndarray,
    previous: np.ndarray | None,
    flow_to_previous: np.ndarray | None,
    following: np.ndarray | None,
    flow_to_following: np.ndarray | None,
) -> np.ndarray:
    """Majority of the labels at t-1, t, t+1 brought onto frame t by flow; where t-1 and t+1 agree
    they outvote t, otherwise t keeps its label (either neighbour may be absent)."""
    if previous is None or following is None or flow_to_previous is None or flow_to_following is None:
        return labels.copy()
    height, width = labels.shape
    pulled_previous = pull_by_flow(previous, flow_to_previous)
    pulled_following = pull_by_flow(following, flow_to_following)
    inside = np.ones((height, width), np.uint8)
    inside_previous = pull_by_flow(inside, flow_to_previous).astype(bool)
    inside_following = pull_by_flow(inside, flow_to_following).astype(bool)
    agree = (pulled_previous == pulled_following) & inside_previous & inside_following
    return np.where(agree, pulled_previous, labels).astype(labels.dtype)
