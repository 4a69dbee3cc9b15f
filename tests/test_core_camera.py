"""CameraModel from CameraInfo and KITTI calibration, against the real KITTI 2011_09_26 calibration."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from cups_ros.core import CameraModel, CameraModelError, StereoFrame, StereoFrameError
from cups_ros.core.camera import camera_model_from_kitti_calib

KITTI_BASELINE_M = 0.5327  # from P_rect_02 / P_rect_03 of 2011_09_26, as the KITTI devkit states


def camera_info(p: list[float], width: int = 1242, height: int = 375) -> SimpleNamespace:
    """Duck-typed like both rosbags' and rclpy's sensor_msgs/CameraInfo (fields p, width, height)."""
    return SimpleNamespace(p=np.asarray(p, dtype=np.float64), width=width, height=height)


def test_kitti_calib_file_gives_published_baseline(shared_data):
    calib = shared_data / "kitti2015_stereo_pair" / "calib" / "calib_cam_to_cam_2011_09_26.txt"
    camera = camera_model_from_kitti_calib(calib)
    assert camera.baseline == pytest.approx(KITTI_BASELINE_M, abs=1e-4)
    assert camera.fx == pytest.approx(721.5377)
    assert (camera.width, camera.height) == (1242, 375)


def test_camera_info_of_kitti_pair_gives_same_baseline(shared_data):
    calib = shared_data / "kitti2015_stereo_pair" / "calib" / "calib_cam_to_cam_2011_09_26.txt"
    rows = {
        line.split(":")[0]: [float(v) for v in line.split(":")[1].split()]
        for line in calib.read_text().splitlines()
        if line.startswith("P_rect_0")
    }
    camera = CameraModel.from_camera_info(camera_info(rows["P_rect_02"]), camera_info(rows["P_rect_03"]))
    assert camera.baseline == pytest.approx(KITTI_BASELINE_M, abs=1e-4)


def test_camera_info_round_trip_through_projection_matrices():
    camera = CameraModel(fx=1100.0, fy=1100.0, cx=511.5, cy=255.5, baseline=0.21, width=1024, height=512)
    left, right = camera.projection_matrices()
    rebuilt = CameraModel.from_camera_info(
        camera_info(left.ravel().tolist(), 1024, 512), camera_info(right.ravel().tolist(), 1024, 512)
    )
    assert rebuilt == camera
    depth = np.array([[10.0, 0.0, np.inf]], dtype=np.float32)
    disparity = camera.depth_to_disparity(depth)
    np.testing.assert_allclose(disparity, [[1100 * 0.21 / 10.0, 0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(camera.disparity_to_depth(disparity), [[10.0, 0.0, 0.0]], rtol=1e-6)


@pytest.mark.parametrize(
    ("left", "right", "message"),
    [
        (
            [700, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0],
            [700, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0],
            "zero baseline",
        ),
        ([0] * 12, [700, 0, 600, -350, 0, 700, 170, 0, 0, 0, 1, 0], "all zeros"),
        (
            [700, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0],
            [700, 0, 600, 350, 0, 700, 170, 0, 0, 0, 1, 0],
            "swapped",
        ),
        (
            [700, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0],
            [710, 0, 600, -350, 0, 700, 170, 0, 0, 0, 1, 0],
            "fx differs",
        ),
        (
            [700, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0],
            [700, 0, 600, -350, 0, 700, 190, 0, 0, 0, 1, 0],
            "cy differs",
        ),
        (
            [700, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0],
            [700, 0, 600, -350, 0, 700, 170, 200, 0, 0, 1, 0],
            "vertical",
        ),
        (
            [700, 5, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0],
            [700, 0, 600, -350, 0, 700, 170, 0, 0, 0, 1, 0],
            "rectified form",
        ),
        (
            [np.nan, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0],
            [700, 0, 600, -350, 0, 700, 170, 0, 0, 0, 1, 0],
            "non-finite",
        ),
    ],
)
def test_non_rectified_or_degenerate_pairs_are_rejected_by_name(left, right, message):
    with pytest.raises(CameraModelError, match=message):
        CameraModel.from_camera_info(camera_info(left), camera_info(right))


def test_camera_infos_of_different_sizes_are_rejected():
    p = [700, 0, 600, 0, 0, 700, 170, 0, 0, 0, 1, 0]
    with pytest.raises(CameraModelError, match="sizes differ"):
        CameraModel.from_camera_info(camera_info(p, 640, 480), camera_info(p, 320, 240))


def test_missing_calibration_keys_name_the_key(tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text("P_rect_02: 700 0 600 0 0 700 170 0 0 0 1 0\n")
    with pytest.raises(CameraModelError, match="P_rect_03"):
        camera_model_from_kitti_calib(calib)


def test_scaled_camera_keeps_pixel_centres_and_disparity_scale():
    camera = CameraModel(fx=1000.0, fy=1000.0, cx=511.5, cy=255.5, baseline=0.2, width=1024, height=512)
    half = camera.scaled(512, 256)
    assert (half.fx, half.cx, half.cy) == (500.0, 255.5, 127.5)
    assert half.baseline == camera.baseline


def test_stereo_frame_names_what_is_wrong():
    camera = CameraModel(fx=100.0, fy=100.0, cx=31.5, cy=23.5, baseline=0.1, width=64, height=48)
    image = np.zeros((48, 64, 3), np.uint8)
    StereoFrame(left=image, right=image, camera=camera, stamp_ns=0)
    with pytest.raises(StereoFrameError, match="stereo sizes differ"):
        StereoFrame(left=image, right=np.zeros((24, 32, 3), np.uint8), camera=camera, stamp_ns=0)
    with pytest.raises(StereoFrameError, match="uint8"):
        StereoFrame(left=image.astype(np.float32), right=image, camera=camera, stamp_ns=0)
    with pytest.raises(StereoFrameError, match="camera model"):
        StereoFrame(left=image, right=image, camera=camera.scaled(32, 24), stamp_ns=0)
