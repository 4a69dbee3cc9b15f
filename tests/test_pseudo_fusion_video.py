"""Thing/stuff split, panoptic fusion and pseudo-tracks on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from cups_ros.core.panoptic import IGNORE_CLASS, decode_panoptic_id
from cups_ros.pseudo.fusion import fuse_panoptic
from cups_ros.pseudo.thing_stuff import ThingStuffCounts
from cups_ros.pseudo.video import PseudoTrackPropagator, VideoConfig, mask_iou, pull_by_flow, smooth_labels


def box(height: int, width: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_thing_stuff_split_by_share_inside_instances_adds_up_over_frames() -> None:
    labels = np.zeros((10, 10), np.uint8)  # class 0: road
    labels[2:6, 2:6] = 1  # class 1: car, 16 px
    labels[8:, :] = 2  # class 2: building, 20 px
    instance = box(10, 10, 2, 2, 4)[None]
    counts = ThingStuffCounts.empty(3)
    counts.update(labels, instance)
    counts.update(labels, np.zeros((0, 10, 10), bool))  # a frame without instances halves the share
    np.testing.assert_array_equal(counts.total, [128, 32, 40])
    np.testing.assert_array_equal(counts.inside_instances, [0, 16, 0])
    np.testing.assert_allclose(counts.shares(), [0, 0.5, 0])
    np.testing.assert_array_equal(counts.thing_classes(0.08), [False, True, False])
    assert not counts.thing_classes(0.5).any()
    again = ThingStuffCounts.from_json(counts.to_json())
    np.testing.assert_array_equal((again + again).total, 2 * counts.total)
    with pytest.raises(ValueError, match="psi"):
        counts.thing_classes(1.5)
    with pytest.raises(ValueError, match="do not match"):
        counts.update(labels, np.zeros((1, 5, 5), bool))


def test_fusion_majority_class_ignore_for_orphan_thing_pixels_and_stuff_kept() -> None:
    labels = np.zeros((8, 8), np.uint8)  # 0 stuff
    labels[0:4, 0:4] = 1  # thing class 1 ...
    labels[0, 0] = 2  # ... with one pixel of thing class 2 and one of stuff
    labels[0, 1] = 0
    labels[6:, 6:] = 1  # thing pixels with no instance: ignore
    thing = np.array([False, True, True])
    mask = box(8, 8, 0, 0, 4)
    result = fuse_panoptic(labels, mask[None], np.array([0.9]), thing, ["motion"], [7])
    classes, instances = decode_panoptic_id(result.panoptic)
    assert (classes[mask] == 1).all() and (instances[mask] == 7).all()  # majority thing class
    assert (classes[6:, 6:] == IGNORE_CLASS).all()
    assert (classes[4:6, :] == 0).all() and (instances[~mask] == 0).all()
    assert result.instances[0].class_id == 1 and result.instances[0].area == 16
    # A mask over stuff only has no thing class to take: dropped and counted.
    stuff_only = fuse_panoptic(labels, box(8, 8, 4, 0, 2)[None], np.array([0.5]), thing)
    assert stuff_only.instances == [] and stuff_only.dropped_instances == 1
    with pytest.raises(ValueError, match="scores"):
        fuse_panoptic(labels, mask[None], np.array([0.1, 0.2]), thing)


def test_pull_by_flow_moves_a_mask_and_iou() -> None:
    mask = box(20, 20, 5, 5, 4)
    flow = np.zeros((20, 20, 2), np.float32)
    flow[..., 0] = -3.0  # this frame's pixel x sees the other frame at x - 3
    moved = pull_by_flow(mask, flow)
    np.testing.assert_array_equal(moved, box(20, 20, 5, 8, 4))
    assert mask_iou(mask[None], moved[None])[0, 0] == pytest.approx(4 / 28)
    with pytest.raises(ValueError, match="does not fit"):
        pull_by_flow(mask, flow[:10])


def test_tracks_persist_under_motion_survive_a_short_gap_and_end_after_the_window() -> None:
    tracker = PseudoTrackPropagator(VideoConfig(match_iou=0.4, window=3))
    flow = np.zeros((40, 40, 2), np.float32)
    flow[..., 0] = -2.0  # everything moves 2 px right per frame
    car, person = box(40, 40, 5, 5, 8), box(40, 40, 25, 25, 6)
    assert tracker.step(np.stack([car, person]), None) == [1, 2]
    car2, person2 = np.roll(car, 2, axis=1), np.roll(person, 2, axis=1)
    assert tracker.step(np.stack([person2, car2]), flow) == [2, 1]  # order does not matter
    car3 = np.roll(car2, 2, axis=1)
    assert tracker.step(car3[None], flow) == [1]  # person occluded for one frame
    person4 = np.roll(person2, 4, axis=1)
    assert tracker.step(np.stack([np.roll(car3, 2, axis=1), person4]), flow) == [1, 2]
    empty = np.zeros((0, 40, 40), bool)
    for _ in range(3):
        tracker.step(empty, flow)
    assert tracker.tracks == {}
    assert tracker.step(car[None], flow) == [3]  # a new track, not a recycled one
    far = box(40, 40, 30, 0, 5)
    assert tracker.step(far[None], None) == [4]  # None starts over: nothing to match


def test_smoothing_takes_the_neighbours_when_they_agree() -> None:
    labels = np.zeros((6, 6), np.uint8)
    labels[2, 2] = 5  # flicker at t only
    previous, following = np.zeros_like(labels), np.zeros_like(labels)
    zero = np.zeros((6, 6, 2), np.float32)
    smoothed = smooth_labels(labels, previous, zero, following, zero)
    assert (smoothed == 0).all()
    following[2, 2] = 5  # t and t+1 agree: kept
    assert smooth_labels(labels, previous, zero, following, zero)[2, 2] == 5
    assert smooth_labels(labels, None, None, following, zero)[2, 2] == 5  # first frame: unchanged


def test_overlapping_motion_masks_become_disjoint_with_their_scores() -> None:
    from cups_ros.pseudo.pipeline import disjoint_masks

    a, b, c = box(10, 10, 0, 0, 4), box(10, 10, 2, 2, 4), box(10, 10, 1, 1, 2)  # c lies inside a
    masks, scores = disjoint_masks(np.stack([a, b, c]), np.array([0.5, 0.9, 0.1], np.float32))
    np.testing.assert_allclose(scores, [0.9, 0.5])  # c lost every pixel, and its score with it
    np.testing.assert_array_equal(masks[0], b)
    np.testing.assert_array_equal(masks[1], a & ~b)
    empty_masks, empty_scores = disjoint_masks(np.zeros((0, 10, 10), bool), np.zeros(0, np.float32))
    assert empty_masks.shape == (0, 10, 10) and empty_scores.shape == (0,)
