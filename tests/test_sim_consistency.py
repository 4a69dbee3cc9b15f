"""Ground-truth consistency of the simulator: stereo, flow, tracks, determinism, split seeds."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from cups_ros.core.panoptic import decode_panoptic_id
from cups_ros.sim.config import SimConfig
from cups_ros.sim.generate import SPLIT_SEED_BLOCKS, GeneratedFrame, SequenceGenerator, checksum, split_seeds

WIDTH, HEIGHT, FRAMES = 256, 128, 4


def small_config() -> SimConfig:
    return SimConfig().with_resolution(WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def sequence() -> tuple[SequenceGenerator, list[GeneratedFrame]]:
    generator = SequenceGenerator(small_config(), split_seeds("sample", 1)[0], "oldtown", FRAMES)
    return generator, list(generator)


def stereo_warp_error(frame: GeneratedFrame) -> float:
    """Mean |left - right warped by the GT disparity| in grey levels on non-occluded pixels."""
    height, width = frame.depth.shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    warped = cv2.remap(frame.right_clean, xs - frame.disparity, ys, cv2.INTER_LINEAR)
    valid = cv2.erode(frame.stereo_valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    diff = np.abs(warped.astype(np.float32) - frame.left_clean.astype(np.float32)).mean(axis=2)
    return float(diff[valid].mean())


def flow_warp_error(frame: GeneratedFrame, following: GeneratedFrame) -> float:
    """Mean |frame t - frame t+1 warped by the GT flow| in grey levels on non-occluded pixels."""
    height, width = frame.depth.shape
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    warped = cv2.remap(
        following.left_clean, xs + frame.flow[..., 0], ys + frame.flow[..., 1], cv2.INTER_LINEAR
    )
    valid = cv2.erode(frame.flow_valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    diff = np.abs(warped.astype(np.float32) - frame.left_clean.astype(np.float32)).mean(axis=2)
    return float(diff[valid].mean())


def test_same_seed_gives_identical_bytes() -> None:
    first = [checksum(f) for f in SequenceGenerator(small_config(), 123, "suburb", 2)]
    second = [checksum(f) for f in SequenceGenerator(small_config(), 123, "suburb", 2)]
    other = [checksum(f) for f in SequenceGenerator(small_config(), 124, "suburb", 2)]
    assert first == second
    assert first != other


def test_splits_never_share_seeds() -> None:
    seeds = {split: set(split_seeds(split, 1000)) for split in SPLIT_SEED_BLOCKS}
    names = list(seeds)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not seeds[a] & seeds[b], (a, b)


def test_disparity_is_fx_baseline_over_depth(sequence) -> None:  # type: ignore[no-untyped-def]
    generator, frames = sequence
    camera = generator.camera
    for frame in frames:
        finite = np.isfinite(frame.depth)
        assert finite.mean() > 0.3
        np.testing.assert_allclose(
            frame.disparity[finite], camera.fx * camera.baseline / frame.depth[finite], rtol=1e-5
        )
        assert np.all(frame.disparity[~finite] == 0)


def test_right_image_warped_by_disparity_reproduces_left(sequence) -> None:  # type: ignore[no-untyped-def]
    _, frames = sequence
    errors = [stereo_warp_error(frame) for frame in frames]
    print(f"stereo warp mean abs error (noise-free): {np.mean(errors):.2f} grey levels")
    assert frames[0].stereo_valid.mean() > 0.7
    assert np.mean(errors) < 4.0
    # The check can fail: a one-pixel disparity error is clearly worse.
    shifted = frames[0]
    wrong = GeneratedFrame(**{**shifted.__dict__, "disparity": shifted.disparity + 1.5})
    assert stereo_warp_error(wrong) > 1.5 * np.mean(errors)


def test_next_frame_warped_by_flow_reproduces_frame(sequence) -> None:  # type: ignore[no-untyped-def]
    _, frames = sequence
    errors = [flow_warp_error(a, b) for a, b in itertools.pairwise(frames)]
    print(f"flow warp mean abs error (noise-free): {np.mean(errors):.2f} grey levels")
    assert frames[0].flow_valid.mean() > 0.6
    assert np.mean(errors) < 5.0
    zero = GeneratedFrame(**{**frames[0].__dict__, "flow": np.zeros_like(frames[0].flow)})
    assert flow_warp_error(zero, frames[1]) > 1.5 * errors[0]


def test_tracks_keep_their_class_and_follow_their_pose(sequence) -> None:  # type: ignore[no-untyped-def]
    generator, frames = sequence
    camera = generator.camera
    class_of: dict[int, int] = {}
    checked = inside = 0
    for frame in frames:
        classes, tracks = decode_panoptic_id(frame.panoptic)
        for track in np.unique(tracks[tracks > 0]).tolist():
            seen = np.unique(classes[tracks == track]).tolist()
            assert len(seen) == 1, f"track {track} has classes {seen}"
            assert class_of.setdefault(track, seen[0]) == seen[0]
            assert frame.classes[track] == seen[0]
            mask = tracks == track
            if mask.sum() < 40:
                continue
            # Project the object's centre (0.8 m above its ground point) with the camera pose.
            centre_world = frame.object_poses[track] @ np.array([0.0, 0.8, 0.0, 1.0])
            centre = np.linalg.inv(frame.camera_pose) @ centre_world
            if centre[2] <= 0.5:
                continue
            u = camera.fx * centre[0] / centre[2] + camera.cx
            v = camera.fy * centre[1] / centre[2] + camera.cy
            rows, cols = np.nonzero(mask)
            checked += 1
            inside += bool(cols.min() - 3 <= u <= cols.max() + 3 and rows.min() - 3 <= v <= rows.max() + 3)
    print(f"projected track centres inside their masks' boxes: {inside}/{checked}")
    assert checked >= 5
    assert inside >= 0.85 * checked


def test_moving_flags_match_pose_changes(sequence) -> None:  # type: ignore[no-untyped-def]
    generator, frames = sequence
    dt = 1.0 / generator.config.rig.fps
    for a, b in itertools.pairwise(frames):
        for track, moving in a.moving.items():
            speed = np.linalg.norm(b.object_poses[track][:3, 3] - a.object_poses[track][:3, 3]) / dt
            assert moving == (speed > 0.05)
    assert any(a for a in frames[0].moving.values()) and not all(frames[0].moving.values())
