"""Optical flow: a known shift of a real image, photometric consistency on real KITTI frames, and
the forward-backward test on hand-made flow fields."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cups_ros.geometry import (
    DisFlowEstimator,
    FlowConfig,
    OpticalFlowEstimator,
    compute_flow,
    flow_target_inside,
    forward_backward_consistent,
    warp_by_flow,
)
from cups_ros.geometry.reference import endpoint_error, read_rgb

# Measured with the default configuration (DIS medium, OpenCV 5.0): shift EPE 0.07 px; KITTI 000139:
# 79.5 % valid, warp error 0.26 of the unwarped one on those pixels.
SHIFT_MAX_EPE = 0.15
KITTI_VALID_RANGE = (0.65, 0.95)
KITTI_MAX_PHOTOMETRIC_RATIO = 0.35


def test_known_shift_of_a_real_image(shared_data: Path):
    image = read_rgb(shared_data / "kitti2015_stereo_pair" / "image_2" / "000046_10.png")
    dx, dy = 7, 3
    frame_t = image[20 : 20 + 320, 100 : 100 + 1000]
    frame_t1 = image[
        20 - dy : 20 - dy + 320, 100 - dx : 100 - dx + 1000
    ]  # frame_t1[y+3, x+7] = frame_t[y, x]
    result = compute_flow(frame_t, frame_t1)
    truth = np.broadcast_to(np.array([dx, dy], np.float32), result.forward.shape)
    interior = np.zeros(frame_t.shape[:2], bool)
    interior[10:-10, 10:-10] = True
    forward_epe = endpoint_error(result.forward, truth, interior)
    backward_epe = endpoint_error(result.backward, -truth, interior)
    print(f"shift (7, 3): forward EPE {forward_epe:.3f} px, backward {backward_epe:.3f} px")
    assert forward_epe < SHIFT_MAX_EPE and backward_epe < SHIFT_MAX_EPE
    assert result.valid_forward[interior].mean() > 0.9
    assert result.valid_backward[interior].mean() > 0.9
    # The last 7 columns and 3 rows move out of the picture; a margin absorbs the flow's error.
    assert result.out_of_frame_forward[:-4, -5:].mean() > 0.9
    assert result.out_of_frame_forward[:-10, :-10].mean() < 0.01


def test_kitti_consecutive_frames_warp_back_onto_frame_t(shared_data: Path):
    folder = shared_data / "kitti2015_consecutive"
    frame_t, frame_t1 = read_rgb(folder / "000139_10.png"), read_rgb(folder / "000139_11.png")
    result = compute_flow(frame_t, frame_t1)
    grey_t = cv2.cvtColor(frame_t, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey_t1 = cv2.cvtColor(frame_t1, cv2.COLOR_RGB2GRAY).astype(np.float32)
    warped_error = np.abs(warp_by_flow(grey_t1, result.forward) - grey_t)
    unwarped_error = np.abs(grey_t1 - grey_t)
    valid = result.valid_forward
    rejected = result.occlusion_forward
    ratio = warped_error[valid].mean() / unwarped_error[valid].mean()
    print(
        f"KITTI 000139: valid {valid.mean():.3f} occluded {rejected.mean():.3f} "
        f"out of frame {result.out_of_frame_forward.mean():.3f}; warp/no-warp error {ratio:.3f}"
    )
    assert KITTI_VALID_RANGE[0] < valid.mean() < KITTI_VALID_RANGE[1]
    assert ratio < KITTI_MAX_PHOTOMETRIC_RATIO
    # The test rejects the vectors that explain the images worse.
    assert warped_error[rejected].mean() > 1.5 * warped_error[valid].mean()
    assert not (valid & rejected).any() and not (valid & result.out_of_frame_forward).any()


def test_forward_backward_test_on_hand_made_fields():
    forward = np.zeros((20, 40, 2), np.float32)
    forward[..., 0] = 3.0
    backward = np.zeros_like(forward)
    backward[..., 0] = -3.0
    backward[:, 20:25] = [5.0, 0.0]  # t+1 pixels 20..24 came from elsewhere (an occluder)
    consistent = forward_backward_consistent(forward, backward, alpha=0.01, beta=0.5)
    # Frame t pixels 17..21 land on 20..24 (they are occluded at t+1); the rest round-trip to zero.
    assert not consistent[:, 17:22].any()
    assert consistent[:, :16].all() and consistent[:, 23:37].all()
    inside = flow_target_inside(forward)
    assert inside[:, :37].all() and not inside[:, 37:].any()  # x + 3 > 39 leaves the image
    # The tolerance grows with the motion: a 1 px round-trip error passes at 50 px, not at 3 px.
    fast, fast_back = (
        np.full((4, 200, 2), [50.0, 0.0], np.float32),
        np.full((4, 200, 2), [-51.0, 0.0], np.float32),
    )
    assert forward_backward_consistent(fast, fast_back, 0.01, 0.5)[:, :100].all()
    slow_back = np.full_like(forward, [-4.0, 0.0])
    assert not forward_backward_consistent(forward, slow_back, 0.01, 0.5)[:, :30].any()


def test_dis_estimator_satisfies_the_protocol_and_presets_apply():
    estimator = DisFlowEstimator(FlowConfig(preset="ultrafast", patch_size=12))
    assert isinstance(estimator, OpticalFlowEstimator)
    image = np.zeros((48, 64, 3), np.uint8)
    assert estimator.estimate(image, image).shape == (48, 64, 2)
    with pytest.raises(ValueError):
        FlowConfig(patch_size=-1)
