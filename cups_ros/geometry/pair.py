"""Geometry of a frame pair (t, t+1): the one entry point later stages call.

Each frame's disparity is computed once: a sequence passes frame t+1's FrameGeometry on as the
next pair's frame t (SequenceGeometry does this with a small cache).
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

import numpy as np

from cups_ros.core.frame import StereoFrame
from cups_ros.geometry.config import GeometryConfig
from cups_ros.geometry.flow import DisFlowEstimator, FlowResult, OpticalFlowEstimator, compute_flow
from cups_ros.geometry.scene_flow import depth_from_disparity, points_from_depth, scene_flow_from_points
from cups_ros.geometry.stereo import (
    DisparityEstimator,
    DisparityResult,
    SgbmDisparityEstimator,
    compute_disparity,
)
from cups_ros.geometry.timing import timed


@dataclass
class FrameGeometry:
    """What one stereo frame gives on its own: disparity, depth in range, camera-frame points."""

    disparity: DisparityResult
    depth: np.ndarray  # metres, 0 = invalid
    valid_depth: np.ndarray  # disparity valid and depth inside [min_depth, max_depth]
    points: np.ndarray  # HxWx3 (X right, Y down, Z forward), 0 where not valid_depth
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class FramePairGeometry:
    """Geometry of frames t and t+1; scene flow is expressed in frame t's camera frame."""

    frame_t: FrameGeometry
    frame_t1: FrameGeometry
    flow: FlowResult
    scene_flow: np.ndarray  # HxWx3 metres, P_{t+1}(x + flow(x)) - P_t(x); 0 where invalid
    scene_flow_valid: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage of this call

    @property
    def disparity_t(self) -> np.ndarray:
        return self.frame_t.disparity.disparity

    @property
    def depth_t(self) -> np.ndarray:
        return self.frame_t.depth

    @property
    def valid_depth_t(self) -> np.ndarray:
        return self.frame_t.valid_depth

    @property
    def points_t(self) -> np.ndarray:
        return self.frame_t.points

    @property
    def disparity_t1(self) -> np.ndarray:
        return self.frame_t1.disparity.disparity

    @property
    def depth_t1(self) -> np.ndarray:
        return self.frame_t1.depth

    @property
    def valid_depth_t1(self) -> np.ndarray:
        return self.frame_t1.valid_depth

    @property
    def flow_forward(self) -> np.ndarray:
        return self.flow.forward

    @property
    def flow_backward(self) -> np.ndarray:
        return self.flow.backward

    @property
    def flow_valid(self) -> np.ndarray:
        """Forward flow that passes the forward-backward test and lands inside the image."""
        return self.flow.valid_forward

    @property
    def occlusion_forward(self) -> np.ndarray:
        return self.flow.occlusion_forward


def _warn_if_range_too_short(frame: StereoFrame, config: GeometryConfig) -> None:
    searched = config.stereo.disparity_range(frame.width)
    nearest = frame.camera.fx * frame.camera.baseline / config.scene_flow.min_depth
    if nearest > searched:
        warnings.warn(
            f"stereo searches {searched} px of disparity but min_depth {config.scene_flow.min_depth} m is "
            f"{nearest:.0f} px on this rig: near objects will be mismatched; raise "
            "stereo.max_disparity_fraction or stereo.num_disparities",
            stacklevel=3,
        )


def compute_frame_geometry(
    frame: StereoFrame, config: GeometryConfig | None = None, stereo: DisparityEstimator | None = None
) -> FrameGeometry:
    """Disparity (with its checks), depth kept in range, and 3D points of one stereo frame."""
    config = config or GeometryConfig()
    if stereo is None:
        _warn_if_range_too_short(frame, config)
        stereo = SgbmDisparityEstimator(config.stereo)
    disparity = compute_disparity(frame.left, frame.right, config.stereo, stereo)
    timings = dict(disparity.timings)
    with timed(timings, "depth_points"):
        depth, valid_depth = depth_from_disparity(
            disparity.disparity, frame.camera, config.scene_flow.min_depth, config.scene_flow.max_depth
        )
        points = points_from_depth(depth, frame.camera)
    return FrameGeometry(disparity, depth, valid_depth, points, timings)


def compute_frame_pair_geometry(
    frame_t: StereoFrame,
    frame_t1: StereoFrame,
    config: GeometryConfig | None = None,
    *,
    geometry_t: FrameGeometry | None = None,
    geometry_t1: FrameGeometry | None = None,
    stereo: DisparityEstimator | None = None,
    flow: OpticalFlowEstimator | None = None,
) -> FramePairGeometry:
    """Disparity and depth of both frames, flow both ways with consistency, points and scene flow.

    Pass geometry_t (the previous pair's frame_t1) to skip matching frame t again.
    """
    config = config or GeometryConfig()
    if frame_t.left.shape != frame_t1.left.shape or frame_t.camera != frame_t1.camera:
        raise ValueError(
            "frames t and t+1 must come from the same camera at the same size: "
            f"{frame_t.camera} vs {frame_t1.camera}"
        )
    if stereo is None:
        _warn_if_range_too_short(frame_t, config)
        stereo = SgbmDisparityEstimator(config.stereo)
    flow = flow or DisFlowEstimator(config.flow)
    start = time.perf_counter()
    timings: dict[str, float] = {"stereo_t": 0.0, "stereo_t1": 0.0}
    if geometry_t is None:
        with timed(timings, "stereo_t"):
            geometry_t = compute_frame_geometry(frame_t, config, stereo)
    if geometry_t1 is None:
        with timed(timings, "stereo_t1"):
            geometry_t1 = compute_frame_geometry(frame_t1, config, stereo)
    flow_result = compute_flow(frame_t.left, frame_t1.left, config.flow, flow)
    timings.update(flow_result.timings)
    with timed(timings, "scene_flow"):
        scene_flow, scene_flow_valid = scene_flow_from_points(
            geometry_t.points,
            geometry_t.valid_depth,
            geometry_t1.points,
            geometry_t1.valid_depth,
            flow_result.forward,
            flow_result.valid_forward,
            config.scene_flow.sampling,
        )
    timings["total"] = time.perf_counter() - start
    return FramePairGeometry(geometry_t, geometry_t1, flow_result, scene_flow, scene_flow_valid, timings)


def frame_key(frame: StereoFrame) -> Hashable:
    """Identity of a frame within a stream: same sequence, camera frame, index and stamp."""
    return (frame.sequence, frame.frame_id, frame.index, frame.stamp_ns)


class SequenceGeometry:
    """Pairs of one stream in order, each frame matched once (a small cache of frame geometry).

    Holds the estimators, so OpenCV objects are built once; not thread-safe (OpenCV's DIS is not).
    """

    def __init__(
        self,
        config: GeometryConfig | None = None,
        stereo: DisparityEstimator | None = None,
        flow: OpticalFlowEstimator | None = None,
        cache_size: int = 2,
    ) -> None:
        self.config = config or GeometryConfig()
        self._stereo_given = stereo is not None
        self.stereo = stereo or SgbmDisparityEstimator(self.config.stereo)
        self.flow = flow or DisFlowEstimator(self.config.flow)
        self.cache_size = max(cache_size, 1)
        self._cache: OrderedDict[Hashable, FrameGeometry] = OrderedDict()
        self._checked_widths: set[int] = set()

    def frame_geometry(self, frame: StereoFrame) -> FrameGeometry:
        """Cached FrameGeometry of this frame (computed on first request)."""
        key = frame_key(frame)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if not self._stereo_given and frame.width not in self._checked_widths:
            self._checked_widths.add(frame.width)
            _warn_if_range_too_short(frame, self.config)
        geometry = compute_frame_geometry(frame, self.config, self.stereo)
        self._cache[key] = geometry
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return geometry

    def pair(self, frame_t: StereoFrame, frame_t1: StereoFrame) -> FramePairGeometry:
        """compute_frame_pair_geometry, reusing any frame already matched."""
        timings: dict[str, float] = {}
        with timed(timings, "stereo_t"):
            geometry_t = self.frame_geometry(frame_t)
        with timed(timings, "stereo_t1"):
            geometry_t1 = self.frame_geometry(frame_t1)
        result = compute_frame_pair_geometry(
            frame_t,
            frame_t1,
            self.config,
            geometry_t=geometry_t,
            geometry_t1=geometry_t1,
            stereo=self.stereo,
            flow=self.flow,
        )
        result.timings.update(timings)
        result.timings["total"] += timings["stereo_t"] + timings["stereo_t1"]
        return result
