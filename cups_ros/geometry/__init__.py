"""Geometry of stereo video: disparity with left-right check, depth, optical flow both ways with
forward-backward consistency, 3D points and scene flow (the inputs of CUPS pseudo-labelling)."""

from cups_ros.geometry.config import (
    FlowConfig,
    GeometryConfig,
    SceneFlowConfig,
    StereoConfig,
    load_geometry_config,
)
from cups_ros.geometry.flow import (
    DisFlowEstimator,
    FlowResult,
    OpticalFlowEstimator,
    compute_flow,
    flow_target_inside,
    forward_backward_consistent,
    warp_by_flow,
)
from cups_ros.geometry.pair import (
    FrameGeometry,
    FramePairGeometry,
    SequenceGeometry,
    compute_frame_geometry,
    compute_frame_pair_geometry,
)
from cups_ros.geometry.scene_flow import (
    depth_from_disparity,
    points_from_depth,
    sample_at_flow_target,
    scene_flow_from_points,
)
from cups_ros.geometry.stereo import (
    DisparityEstimator,
    DisparityResult,
    SgbmDisparityEstimator,
    compute_disparity,
    disparity_edges,
    left_right_consistent,
    right_view_disparity,
)

__all__ = [
    "DisFlowEstimator",
    "DisparityEstimator",
    "DisparityResult",
    "FlowConfig",
    "FlowResult",
    "FrameGeometry",
    "FramePairGeometry",
    "GeometryConfig",
    "OpticalFlowEstimator",
    "SceneFlowConfig",
    "SequenceGeometry",
    "SgbmDisparityEstimator",
    "StereoConfig",
    "compute_disparity",
    "compute_flow",
    "compute_frame_geometry",
    "compute_frame_pair_geometry",
    "depth_from_disparity",
    "disparity_edges",
    "flow_target_inside",
    "forward_backward_consistent",
    "left_right_consistent",
    "load_geometry_config",
    "points_from_depth",
    "right_view_disparity",
    "sample_at_flow_target",
    "scene_flow_from_points",
    "warp_by_flow",
]
