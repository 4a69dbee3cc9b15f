"""Depth-edge instances of static objects (MBPS style) and their merge behind motion instances."""

from __future__ import annotations

import numpy as np
import pytest

from cups_ros.core.camera import CameraModel
from cups_ros.core.panoptic import decode_panoptic_id
from cups_ros.pseudo.depth_instances import (
    DepthInstanceConfig,
    depth_edge_instances,
    mask_iou_matrix,
    merge_instances,
)
from cups_ros.pseudo.masks import match_instances

HEIGHT, WIDTH = 120, 200
CAMERA = CameraModel(fx=200.0, fy=200.0, cx=99.5, cy=59.5, baseline=0.2, width=WIDTH, height=HEIGHT)
THING_CLASSES = range(11, 19)  # Cityscapes train ids person .. bicycle


def recall(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """(ground truths matched at IoU >= 0.5, ground truths)."""
    result = match_instances(pred, gt, 0.5)
    return result.true_positives, result.true_positives + result.false_negatives


def road_scene() -> np.ndarray:
    """A road plane 1.5 m below the camera, sky (inf) above the horizon, a wall at 60 m."""
    rows = np.arange(HEIGHT, dtype=np.float32)[:, None] - CAMERA.cy
    road = np.where(rows > 0, CAMERA.fy * 1.5 / np.maximum(rows, 1e-3), np.inf)
    depth = np.broadcast_to(road, (HEIGHT, WIDTH)).astype(np.float32).copy()
    depth[20:60, :] = 60.0
    return depth


def box(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[rows, cols] = True
    return mask


def best_ious(pred: np.ndarray, truth: list[np.ndarray]) -> np.ndarray:
    return mask_iou_matrix(pred, np.stack(truth)).max(axis=0)


def test_two_boxes_at_different_depths_give_two_instances() -> None:
    depth = road_scene()
    near, far = box(slice(40, 90), slice(20, 80)), box(slice(45, 85), slice(120, 180))
    depth[near], depth[far] = 10.0, 20.0
    pred = depth_edge_instances(depth, near | far, CAMERA)
    assert pred.shape == (2, HEIGHT, WIDTH)
    assert (best_ious(pred, [near, far]) > 0.9).all()
    assert pred.sum(axis=0).max() == 1  # disjoint


def test_touching_cars_three_metres_apart_are_split() -> None:
    depth = road_scene()
    left, right = box(slice(40, 90), slice(20, 100)), box(slice(40, 90), slice(100, 180))
    depth[left], depth[right] = 12.0, 15.0
    thing = left | right
    pred = depth_edge_instances(depth, thing, CAMERA)
    assert len(pred) == 2
    assert (best_ious(pred, [left, right]) > 0.9).all()
    # Boundary reclamation gives the cut pixels back: almost the whole thing mask is covered.
    assert pred.any(axis=0)[thing].mean() > 0.97
    # Without the depth step it is one object.
    depth[thing] = 12.0
    assert len(depth_edge_instances(depth, thing, CAMERA)) == 1


def test_small_far_and_near_objects_are_dropped() -> None:
    depth = road_scene()
    tiny = box(slice(50, 55), slice(10, 20))  # 50 px < 64
    distant = box(slice(50, 60), slice(40, 60))  # 200 px at 70+ m: out of range
    near = box(slice(40, 90), slice(120, 180))  # 3000 px at 3 m: nearer than 5.5 m
    small_surface = box(slice(60, 70), slice(80, 100))  # 200 px at 8 m: 0.32 m^2 < 0.65
    depth[tiny], depth[distant], depth[near], depth[small_surface] = 20.0, 80.0, 3.0, 8.0
    pred = depth_edge_instances(depth, tiny | distant | near | small_surface, CAMERA)
    assert len(pred) == 0
    relaxed = DepthInstanceConfig(min_surface=0.0)
    assert len(depth_edge_instances(depth, small_surface, CAMERA, relaxed)) == 1


def test_invalid_depth_inside_an_object_is_tolerated() -> None:
    depth = road_scene()
    car = box(slice(40, 90), slice(40, 140))
    depth[car] = 15.0
    depth[60:62, 60:120] = 0.0  # a stereo hole across the car
    pred = depth_edge_instances(depth, car, CAMERA)
    assert len(pred) == 1 and best_ious(pred, [car])[0] > 0.9


def test_merge_keeps_motion_first_and_drops_duplicates() -> None:
    moving = box(slice(40, 90), slice(20, 80))
    duplicate = box(slice(42, 90), slice(22, 82))
    parked = box(slice(40, 90), slice(120, 180))
    overlapping = box(slice(40, 90), slice(70, 115))  # 10 of its 45 columns lie in the moving one
    sliver = box(slice(40, 90), slice(78, 81))  # mostly inside: a duplicate piece
    masks, sources = merge_instances(
        moving[None], np.stack([duplicate, parked, overlapping, sliver]), overlap=0.5
    )
    assert list(sources) == ["motion", "depth", "depth"]
    assert masks.sum(axis=0).max() == 1
    assert (masks[0] == moving).all() and (masks[1] == parked).all()
    assert (masks[2] == (overlapping & ~moving)).all()
    # Nothing to merge: shapes still come out right.
    empty, empty_sources = merge_instances(np.zeros((0, 8, 8), bool), np.zeros((0, 8, 8), bool))
    assert empty.shape == (0, 8, 8) and len(empty_sources) == 0


def test_merge_drops_remainders_below_min_area() -> None:
    moving = box(slice(40, 90), slice(20, 80))
    overlapping = box(slice(40, 90), slice(55, 82))  # 25 of 27 columns are taken... 2 x 50 = 100 px left
    _, sources = merge_instances(moving[None], overlapping[None], overlap=0.95, min_area=64)
    assert list(sources) == ["motion", "depth"]
    _, sources = merge_instances(moving[None], overlapping[None], overlap=0.95, min_area=101)
    assert list(sources) == ["motion"]


def test_bad_input_is_named() -> None:
    depth = road_scene()
    thing = np.zeros((HEIGHT, WIDTH), bool)
    with_nan = depth.copy()
    with_nan[5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        depth_edge_instances(with_nan, thing, CAMERA)
    with pytest.raises(ValueError, match="thing_mask has shape"):
        depth_edge_instances(depth, thing[:-1], CAMERA)
    with pytest.raises(ValueError, match="camera model"):
        depth_edge_instances(depth[:, :-1], thing[:, :-1], CAMERA)
    with pytest.raises(ValueError, match="negative"):
        depth_edge_instances(-depth, thing, CAMERA)
    with pytest.raises(ValueError, match="HxW"):
        depth_edge_instances(depth[None], thing, CAMERA)
    with pytest.raises(ValueError, match="depth masks"):
        merge_instances(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 5), bool))
    with pytest.raises(ValueError, match="edge_threshold"):
        DepthInstanceConfig(edge_threshold=0.0)


def test_instance_recall_counts_matches() -> None:
    a, b = box(slice(0, 10), slice(0, 10)), box(slice(20, 30), slice(20, 30))
    assert recall(np.stack([a]), np.stack([a, b])) == (1, 2)
    assert recall(np.zeros((0, HEIGHT, WIDTH), bool), np.stack([a])) == (0, 1)


@pytest.fixture(scope="module")
def sim_frame():
    from cups_ros.sim.config import SimConfig
    from cups_ros.sim.generate import SequenceGenerator, sequence_seed

    generator = SequenceGenerator(
        SimConfig().with_resolution(512, 256), sequence_seed("sample", 0), "oldtown", 1
    )
    return generator.camera, next(iter(generator))


def test_parked_cars_of_a_simulated_frame_are_recovered(sim_frame) -> None:
    camera, frame = sim_frame
    classes, tracks = decode_panoptic_id(frame.panoptic)
    thing = np.isin(classes, list(THING_CLASSES))
    static = [
        tracks == track
        for track in np.unique(tracks[thing & (tracks > 0)])
        # 250 px at 512x256 is 1000 px at the default 1024x512
        if (tracks == track).sum() >= 250 and not frame.moving[int(track)]
    ]
    assert len(static) >= 2, "the sample scene should show parked cars"
    pred = depth_edge_instances(frame.depth, thing, camera)
    recalled, total = recall(pred, np.stack(static))
    assert recalled >= 0.6 * total, f"{recalled}/{total} static things recovered"
