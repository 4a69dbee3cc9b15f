"""Depth, 3D points and scene flow from disparity and optical flow.

Camera frame of the left camera: X right, Y down, Z forward, metres. Invalid depth is 0 and
invalid points / scene flow are 0 with a False mask beside them, so arrays stay finite.
"""

from __future__ import annotations

import cv2
import numpy as np

from cups_ros.core.camera import CameraModel
from cups_ros.geometry.config import Sampling
from cups_ros.geometry.sampling import (
    inside_image,
    keep_valid,
    pixel_grid,
    remap_zero_outside,
    sampling_maps,
)


def depth_from_disparity(
    disparity: np.ndarray, camera: CameraModel, min_depth: float, max_depth: float
) -> tuple[np.ndarray, np.ndarray]:
    """(depth in metres, valid) keeping only [min_depth, max_depth]: CUPS's range of trusted depth."""
    depth = camera.disparity_to_depth(disparity)
    valid = (depth >= min_depth) & (depth <= max_depth)
    depth[~valid] = 0.0
    return depth, valid


def points_from_depth(depth: np.ndarray, camera: CameraModel) -> np.ndarray:
    """HxWx3 float32 camera-frame points: X = (u - cx) Z / fx, Y = (v - cy) Z / fy; 0 where depth is 0."""
    grid_x, grid_y = pixel_grid(*depth.shape)
    z = np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)
    x = (grid_x - np.float32(camera.cx)) * (z / np.float32(camera.fx))
    y = (grid_y - np.float32(camera.cy)) * (z / np.float32(camera.fy))
    return cv2.merge([x, y, z])


def sample_at_flow_target(
    values: np.ndarray, valid: np.ndarray, flow: np.ndarray, sampling: Sampling = "bilinear"
) -> tuple[np.ndarray, np.ndarray]:
    """values (HxWxC) read at x + flow(x), and where that reading is backed by valid pixels only.

    Bilinear reads count as valid only when every neighbour with a non-zero weight is valid, so no
    invalid point (0) is ever mixed in; targets outside the image are invalid.
    """
    map_x, map_y = sampling_maps(flow)
    interpolation = cv2.INTER_LINEAR if sampling == "bilinear" else cv2.INTER_NEAREST
    sampled = remap_zero_outside(values, map_x, map_y, interpolation)
    if sampling == "bilinear":
        # OpenCV weights come in steps of 1/1024 (1/32 px grid), so 1e-4 means "no invalid neighbour".
        invalid_weight = cv2.remap(
            (~valid).astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        sampled_valid = invalid_weight < 1e-4
    else:
        sampled_valid = remap_zero_outside(valid.view(np.uint8), map_x, map_y, cv2.INTER_NEAREST).view(bool)
    sampled_valid &= inside_image(map_x, map_y)
    return keep_valid(sampled, sampled_valid), sampled_valid


def scene_flow_from_points(
    points_t: np.ndarray,
    valid_t: np.ndarray,
    points_t1: np.ndarray,
    valid_t1: np.ndarray,
    flow_forward: np.ndarray,
    flow_valid: np.ndarray,
    sampling: Sampling = "bilinear",
) -> tuple[np.ndarray, np.ndarray]:
    """3D motion of each pixel of frame t: P_{t+1}(x + flow(x)) - P_t(x), in frame t's camera frame.

    Valid only where depth is valid at t, the flow is trusted (consistent, in frame) and depth is
    valid at the flow target in t+1. The camera's own motion is included (no ego-motion removed).
    """
    target_points, target_valid = sample_at_flow_target(points_t1, valid_t1, flow_forward, sampling)
    valid = valid_t & flow_valid & target_valid
    return keep_valid((target_points - points_t).astype(np.float32, copy=False), valid), valid
