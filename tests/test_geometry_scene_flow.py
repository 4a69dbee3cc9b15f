"""Depth, 3D points and scene flow: hand-worked geometry, an analytic moving plane, and a real
texture on a plane rendered into two stereo pairs, whose known 3D motion must come back."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cups_ros.core import CameraModel, StereoFrame
from cups_ros.geometry import (
    GeometryConfig,
    SequenceGeometry,
    SgbmDisparityEstimator,
    StereoConfig,
    compute_frame_pair_geometry,
    depth_from_disparity,
    points_from_depth,
    scene_flow_from_points,
)
from cups_ros.geometry.reference import read_rgb

# KITTI-like rig at half width: disparity 32 px at 12 m.
CAMERA = CameraModel(fx=720.0, fy=720.0, cx=319.5, cy=159.5, baseline=0.54, width=640, height=320)
PLANE_DEPTH = 12.0
MOTION = np.array([0.3, 0.1, -1.0])  # metres, in the camera frame (right, down, towards the camera)
STEREO = StereoConfig(num_disparities=80)  # covers the 5.5 m CUPS keeps on this rig


def test_points_follow_the_pinhole_model():
    depth = np.zeros((CAMERA.height, CAMERA.width), np.float32)
    depth[160, 320] = 10.0  # half a pixel right of and below the principal point (319.5, 159.5)
    depth[87, 463] = 20.0  # up and to the right: X > 0, Y < 0 (Y points down)
    points = points_from_depth(depth, CAMERA)
    assert points[160, 320] == pytest.approx([0.5 * 10 / 720, 0.5 * 10 / 720, 10.0])
    assert points[87, 463] == pytest.approx([143.5 * 20 / 720, -72.5 * 20 / 720, 20.0])
    assert not points[0, 0].any()  # invalid depth gives a zero point


def test_depth_range_is_kept():
    disparity = np.array([[0.0, 100.0, 70.0, 10.0, 5.0]], np.float32)  # fx*B = 388.8
    depth, valid = depth_from_disparity(disparity, CAMERA, 5.5, 70.0)
    assert valid.tolist() == [[False, False, True, True, False]]  # 3.9 m and 77.8 m are out
    assert depth[0, 2] == pytest.approx(388.8 / 70.0) and depth[0, 4] == 0.0


def plane_flow(depth_t: float, motion: np.ndarray) -> np.ndarray:
    """Optical flow of a fronto-parallel plane at depth_t translated by motion, from projection."""
    u = np.arange(CAMERA.width, dtype=np.float64)[None, :]
    v = np.arange(CAMERA.height, dtype=np.float64)[:, None]
    x, y = (u - CAMERA.cx) * depth_t / CAMERA.fx, (v - CAMERA.cy) * depth_t / CAMERA.fy
    depth_t1 = depth_t + motion[2]
    u1 = CAMERA.fx * (x + motion[0]) / depth_t1 + CAMERA.cx
    v1 = CAMERA.fy * (y + motion[1]) / depth_t1 + CAMERA.cy
    return np.stack(np.broadcast_arrays(u1 - u, v1 - v), axis=-1).astype(np.float32)


@pytest.mark.parametrize("sampling", ["bilinear", "nearest"])
def test_analytic_plane_gives_its_motion_and_validity_propagates(sampling):
    shape = (CAMERA.height, CAMERA.width)
    focal_baseline = CAMERA.fx * CAMERA.baseline
    disparity_t = np.full(shape, focal_baseline / PLANE_DEPTH, np.float32)
    disparity_t1 = np.full(shape, focal_baseline / (PLANE_DEPTH + MOTION[2]), np.float32)
    disparity_t1[100:140, 300:340] = 0.0  # no stereo match there at t+1
    disparity_t[:20, :20] = focal_baseline / 80.0  # beyond max_depth at t
    flow = plane_flow(PLANE_DEPTH, MOTION)
    flow_valid = np.ones(shape, bool)
    flow_valid[200:210, 100:110] = False  # failed the forward-backward test
    depth_t, valid_t = depth_from_disparity(disparity_t, CAMERA, 5.5, 70.0)
    depth_t1, valid_t1 = depth_from_disparity(disparity_t1, CAMERA, 5.5, 70.0)
    points_t, points_t1 = points_from_depth(depth_t, CAMERA), points_from_depth(depth_t1, CAMERA)
    scene_flow, valid = scene_flow_from_points(
        points_t, valid_t, points_t1, valid_t1, flow, flow_valid, sampling
    )
    # Nearest sampling reads the point up to half a pixel away: 0.5 px * Z / fx = 8 mm here.
    tolerance = 2e-3 if sampling == "bilinear" else 1e-2
    assert np.abs(scene_flow[valid] - MOTION).max() < tolerance
    target_x = np.arange(CAMERA.width)[None, :] + flow[..., 0]
    target_y = np.arange(CAMERA.height)[:, None] + flow[..., 1]
    inside = (
        (target_x >= 0) & (target_x <= CAMERA.width - 1) & (target_y >= 0) & (target_y <= CAMERA.height - 1)
    )
    lands_in_hole = (target_x > 301) & (target_x < 338) & (target_y > 101) & (target_y < 138)
    assert not valid[lands_in_hole].any() and not valid[~inside].any()
    assert not valid[:20, :20].any() and not valid[200:210, 100:110].any()
    assert valid[inside & ~lands_in_hole].mean() > 0.98
    assert not scene_flow[~valid].any()


def render_plane(texture: np.ndarray, depth: float, offset: np.ndarray, view: str) -> np.ndarray:
    """What a camera of the rig sees of a textured plane at depth, slid sideways by offset (metres).

    Exact projection: pixel u of the left camera sees X = (u - cx) Z / fx; the right camera sits at
    X = baseline, so its pixel u sees X = baseline + (u - cx) Z / fx.
    """
    pixels_per_metre = 45.0
    u = np.arange(CAMERA.width, dtype=np.float64)[None, :]
    v = np.arange(CAMERA.height, dtype=np.float64)[:, None]
    x = (u - CAMERA.cx) * depth / CAMERA.fx + (CAMERA.baseline if view == "right" else 0.0)
    y = (v - CAMERA.cy) * depth / CAMERA.fy
    map_x = (x - offset[0]) * pixels_per_metre + texture.shape[1] / 2 + 0 * y
    map_y = (y - offset[1]) * pixels_per_metre + texture.shape[0] / 2 + 0 * x
    return cv2.remap(
        texture,
        map_x.astype(np.float32),
        map_y.astype(np.float32),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )


def plane_frame(texture: np.ndarray, index: int) -> StereoFrame:
    depth = PLANE_DEPTH + index * MOTION[2]
    offset = index * MOTION[:2]
    left, right = (render_plane(texture, depth, offset, view) for view in ("left", "right"))
    return StereoFrame(left, right, CAMERA, stamp_ns=index * 100_000_000, sequence="plane", index=index)


@pytest.fixture(scope="module")
def texture(shared_data: Path) -> np.ndarray:
    return read_rgb(shared_data / "middlebury2014_motorcycle" / "im0.png")


def test_rendered_moving_plane_end_to_end(texture):
    config = GeometryConfig(stereo=STEREO)
    geometry = compute_frame_pair_geometry(plane_frame(texture, 0), plane_frame(texture, 1), config)
    assert np.median(geometry.depth_t[geometry.valid_depth_t]) == pytest.approx(PLANE_DEPTH, rel=0.02)
    assert np.median(geometry.depth_t1[geometry.valid_depth_t1]) == pytest.approx(
        PLANE_DEPTH + MOTION[2], rel=0.02
    )
    motion = geometry.scene_flow[geometry.scene_flow_valid]
    median = np.median(motion, axis=0)
    valid_share = geometry.scene_flow_valid.mean()
    print(
        f"rendered plane: scene flow median {np.round(median, 3)} (truth {MOTION}), valid {valid_share:.3f}"
    )
    assert median == pytest.approx(MOTION, abs=0.05)
    assert np.percentile(np.linalg.norm(motion - MOTION, axis=1), 90) < 0.1
    assert geometry.scene_flow_valid.mean() > 0.6
    assert geometry.points_t.shape == geometry.scene_flow.shape == (CAMERA.height, CAMERA.width, 3)
    assert {"stereo_t", "stereo_t1", "flow_forward", "flow_backward", "scene_flow", "total"} <= set(
        geometry.timings
    )


class CountingSgbm:
    """SGBM behind the DisparityEstimator protocol, counting how often frames are matched."""

    def __init__(self) -> None:
        self.inner = SgbmDisparityEstimator(STEREO)
        self.calls = 0

    def estimate(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.estimate(left, right)


def test_sequence_matches_each_frame_once(texture):
    frames = [plane_frame(texture, index) for index in range(3)]
    stereo = CountingSgbm()
    sequence = SequenceGeometry(GeometryConfig(stereo=STEREO), stereo=stereo)
    first = sequence.pair(frames[0], frames[1])
    second = sequence.pair(frames[1], frames[2])
    assert stereo.calls == 2 * 3  # left + mirrored right view, once per frame
    assert second.frame_t is first.frame_t1
    direct = compute_frame_pair_geometry(
        frames[1], frames[2], GeometryConfig(stereo=STEREO), geometry_t=first.frame_t1
    )
    assert np.array_equal(direct.scene_flow_valid, second.scene_flow_valid)
    cropped = StereoFrame(frames[1].left[:, :320], frames[1].right[:, :320], CAMERA.scaled(320, 320), 1)
    with pytest.raises(ValueError, match="same camera"):
        compute_frame_pair_geometry(frames[0], cropped)


def test_too_short_search_range_is_reported(texture):
    with pytest.warns(UserWarning, match="min_depth"):
        compute_frame_pair_geometry(plane_frame(texture, 0), plane_frame(texture, 1), GeometryConfig())
