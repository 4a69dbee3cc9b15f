"""Rigid transforms as 4x4 float64 matrices.

World frame (right-handed): x to the LEFT of the road direction, y up, z forward along the road;
yaw is about +y, so a positive yaw turns left. Camera frame: x right, y down, z forward.
"""

from __future__ import annotations

import numpy as np

# Camera axes (x right, y down, z forward) expressed in the body/world axes (x left, y up, z forward).
CAMERA_FROM_WORLD_AXES = np.diag([-1.0, -1.0, 1.0])


def rotation_ypr(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """Rotation: yaw about +y (left turn positive), then pitch about x, then roll about z."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    r_yaw = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    r_pitch = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return r_yaw @ r_pitch @ r_roll


def pose(rotation: np.ndarray, translation: np.ndarray | tuple[float, float, float]) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = translation
    return matrix


def pose_ypr(
    position: np.ndarray | tuple[float, float, float], yaw: float, pitch: float = 0.0, roll: float = 0.0
) -> np.ndarray:
    return pose(rotation_ypr(yaw, pitch, roll), position)


def invert(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform without a general matrix inverse."""
    inverse = np.eye(4)
    rotation_t = matrix[:3, :3].T
    inverse[:3, :3] = rotation_t
    inverse[:3, 3] = -rotation_t @ matrix[:3, 3]
    return inverse


def camera_pose_from_body(body_pose: np.ndarray) -> np.ndarray:
    """World-from-camera pose of a camera looking along the body's +z with image y pointing down."""
    camera = body_pose.copy()
    camera[:3, :3] = body_pose[:3, :3] @ CAMERA_FROM_WORLD_AXES
    return camera
