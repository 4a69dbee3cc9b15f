"""Disparity against independent ground truth: KITTI 2015 (lidar), Middlebury 2014 (structured
light), FlyingThings3D (rendered, with occlusion masks); the checks on hand-made rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from cups_ros.core import StereoFrame, camera_model_from_kitti_calib
from cups_ros.geometry import (
    DisparityEstimator,
    SgbmDisparityEstimator,
    StereoConfig,
    compute_disparity,
    compute_frame_geometry,
    disparity_edges,
    left_right_consistent,
    right_view_disparity,
)
from cups_ros.geometry.config import GeometryConfig
from cups_ros.geometry.reference import (
    bad_pixel_rate,
    endpoint_error,
    kitti_d1,
    read_kitti_disparity,
    read_pfm,
    read_rgb,
)
from cups_ros.geometry.stereo import fill_from_background, occluded_in_right_view

# Measured with the default configuration (OpenCV 5.0.0): KITTI 000046 D1 0.76 % at density 0.85 (LR
# check alone 1.00 %, no check 1.77 %); Middlebury Motorcycle bad-2.0 1.8 % at density 0.90;
# FlyingThings A-0032-0006 EPE 3.25 px at density 0.70, occlusion precision 0.80, recall 0.82.
# The bounds leave a margin for other OpenCV builds while still failing on a real regression.
KITTI_MAX_D1 = 0.010
KITTI_MIN_DENSITY = 0.80
MIDDLEBURY_MAX_BAD2 = 0.03
MIDDLEBURY_MIN_DENSITY = 0.85
FLYINGTHINGS_MAX_EPE = 4.0
FLYINGTHINGS_MIN_DENSITY = 0.60
OCCLUSION_MIN_PRECISION = 0.75
OCCLUSION_MIN_RECALL = 0.75


@pytest.fixture(scope="module")
def kitti(shared_data: Path) -> tuple[StereoFrame, np.ndarray]:
    folder = shared_data / "kitti2015_stereo_pair"
    camera = camera_model_from_kitti_calib(folder / "calib" / "calib_cam_to_cam_2011_09_26.txt")
    frame = StereoFrame(
        read_rgb(folder / "image_2" / "000046_10.png"),
        read_rgb(folder / "image_3" / "000046_10.png"),
        camera,
        0,
    )
    return frame, read_kitti_disparity(folder / "disp_occ_0" / "000046_10.png")


def test_kitti_d1_is_low_and_depth_matches_lidar(kitti):
    frame, truth = kitti
    geometry = compute_frame_geometry(frame, GeometryConfig())
    score = kitti_d1(geometry.disparity.disparity, truth, truth > 0)
    print(f"KITTI 000046 D1 {score.error_rate:.4f} density {score.density:.3f}")
    assert score.error_rate < KITTI_MAX_D1
    assert score.density > KITTI_MIN_DENSITY
    # Depth in range agrees with the lidar-derived depth: the camera model is applied correctly.
    truth_depth = frame.camera.disparity_to_depth(truth)
    both = geometry.valid_depth & (truth > 0)
    relative = np.abs(geometry.depth[both] - truth_depth[both]) / truth_depth[both]
    assert np.median(relative) < 0.03
    assert geometry.depth[both].min() >= 5.5 and geometry.depth[both].max() <= 70.0


def test_kitti_left_right_check_removes_outliers(kitti):
    frame, truth = kitti
    sgbm = SgbmDisparityEstimator(StereoConfig())
    raw = sgbm.estimate(frame.left, frame.right)
    right = right_view_disparity(sgbm, frame.left, frame.right)
    checked = np.where(left_right_consistent(raw, right, 1.0), raw, 0)
    without, with_check = kitti_d1(raw, truth, truth > 0), kitti_d1(checked, truth, truth > 0)
    print(f"KITTI D1 without LR check {without.error_rate:.4f}, with {with_check.error_rate:.4f}")
    assert with_check.error_rate < 0.75 * without.error_rate
    assert with_check.density > 0.85  # it removes outliers, not the bulk


def test_middlebury_motorcycle_bad2_on_non_occluded_pixels(shared_data: Path):
    folder = shared_data / "middlebury2014_motorcycle"
    calib = dict(
        line.split("=", 1) for line in (folder / "calib.txt").read_text().splitlines() if "=" in line
    )
    num_disparities = -(-int(calib["ndisp"]) // 16) * 16  # the published search range, as SGBM needs it
    truth = read_pfm(folder / "disp0GT.pfm")
    non_occluded = (cv2.imread(str(folder / "mask0nocc.png"), cv2.IMREAD_GRAYSCALE) == 255) & np.isfinite(
        truth
    )
    result = compute_disparity(
        read_rgb(folder / "im0.png"),
        read_rgb(folder / "im1.png"),
        StereoConfig(num_disparities=num_disparities),
    )
    score = bad_pixel_rate(result.disparity, truth, non_occluded, 2.0)
    print(f"Middlebury Motorcycle bad-2.0 {score.error_rate:.4f} density {score.density:.3f}")
    assert score.error_rate < MIDDLEBURY_MAX_BAD2
    assert score.density > MIDDLEBURY_MIN_DENSITY


def test_flyingthings_epe_and_occlusion_against_rendered_truth(shared_data: Path):
    folder = shared_data / "sceneflow_sample"
    name = "A-0032-0006.png"
    truth = read_pfm(folder / "disparity" / "left" / name.replace(".png", ".pfm"))
    occluded = cv2.imread(str(folder / "occlusion" / "left" / name), cv2.IMREAD_GRAYSCALE) > 0
    result = compute_disparity(
        read_rgb(folder / "RGB_cleanpass" / "left" / name),
        read_rgb(folder / "RGB_cleanpass" / "right" / name),
        StereoConfig(num_disparities=144),  # ground truth reaches 130 px
    )
    scored = ~occluded & result.valid
    epe = endpoint_error(result.disparity, truth, scored)
    density = scored.sum() / (~occluded).sum()

    def precision_recall(estimate: np.ndarray) -> tuple[float, float]:
        hits = (estimate & occluded).sum()
        return hits / estimate.sum(), hits / occluded.sum()

    precision, recall = precision_recall(result.occlusion)
    naive_precision, naive_recall = precision_recall(result.unconfirmed)
    print(
        f"FlyingThings EPE {epe:.2f} px density {density:.3f}; occlusion P {precision:.3f} R {recall:.3f}"
        f" (unconfirmed pixels: P {naive_precision:.3f} R {naive_recall:.3f})"
    )
    assert epe < FLYINGTHINGS_MAX_EPE
    assert density > FLYINGTHINGS_MIN_DENSITY
    assert precision > OCCLUSION_MIN_PRECISION and recall > OCCLUSION_MIN_RECALL
    assert precision > 2 * naive_precision  # textureless holes are not taken for occlusion


def test_left_right_check_on_hand_made_rows():
    # Left row: background at disparity 2, a foreground block at disparity 5 on x = 10..14.
    left = np.full((1, 24), 2.0, np.float32)
    left[0, 10:15] = 5.0
    # Right row as the same scene gives it: the block lands at x - 5 = 5..9, background at x - 2.
    right = np.full((1, 24), 2.0, np.float32)
    right[0, 5:10] = 5.0
    consistent = left_right_consistent(left, right, 1.0)
    assert consistent[0, 10:15].all()  # foreground confirmed
    # Background at x = 7..9 maps to right x = 5..7, where the right view sees the block: occluded.
    assert not consistent[0, 7:10].any()
    assert consistent[0, 2:7].all() and consistent[0, 15:].all()
    assert not consistent[0, :2].any()  # lands outside the right image
    corrupted = left.copy()
    corrupted[0, 18] = 4.5  # a mismatch: the right view says 2 there
    assert not left_right_consistent(corrupted, right, 1.0)[0, 18]


def test_occlusion_and_edges_on_a_hand_made_step():
    disparity = np.full((3, 30), 2.0, np.float32)
    disparity[:, 15:22] = 8.0
    valid = np.ones_like(disparity, bool)
    valid[:, 9:15] = False  # the hole SGBM leaves left of a foreground object
    filled = fill_from_background(np.where(valid, disparity, 0).astype(np.float32), valid)
    assert np.all(filled[:, 9:15] == 2.0)  # holes take the background, not the foreground
    hidden = occluded_in_right_view(filled, 1.0)
    # The block (x = 15..21) covers right-image x = 7..13; background x lands at x - 2, so x = 9..14
    # are hidden. The 1 px tolerance against subpixel noise spares the two nearest the boundary.
    assert hidden[:, 11:15].all() and not hidden[:, 3:9].any() and not hidden[:, 15:].any()
    assert hidden[:, :2].all()  # outside the right image
    edges = disparity_edges(disparity, np.ones_like(valid), max_range=2.0, radius=1)
    assert set(np.flatnonzero(edges[1])) == {14, 15, 21, 22}


class CountingEstimator:
    """A plug-in estimator (as a learned network would be) that counts its calls."""

    def __init__(self) -> None:
        self.inner = SgbmDisparityEstimator(StereoConfig(num_disparities=32))
        self.calls = 0

    def estimate(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner.estimate(left, right)


def test_any_estimator_plugs_in_and_the_checks_apply_to_it():
    estimator = CountingEstimator()
    assert isinstance(estimator, DisparityEstimator)
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (64, 128, 3), dtype=np.uint8), (3, 3), 0)
    left, right = texture[:, :112].copy(), texture[:, 8:120].copy()  # right[x - 8] = left[x]
    result = compute_disparity(left, right, replace(StereoConfig(), num_disparities=32), estimator)
    assert estimator.calls == 2  # left view, then the mirrored pair for the right view
    assert np.median(result.disparity[result.valid]) == pytest.approx(8.0, abs=0.1)
