"""Motion-instance pseudo-labels: ego-motion, rigid clustering, ensemble, input checks, matching."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cups_ros.core.camera import CameraModel
from cups_ros.core.frame import StereoFrame
from cups_ros.geometry.flow import FlowResult
from cups_ros.geometry.pair import FrameGeometry, FramePairGeometry
from cups_ros.geometry.stereo import DisparityResult
from cups_ros.pseudo.masks import mask_iou, match_instances
from cups_ros.pseudo.motion import MotionConfig, MotionInstanceSegmenter, kabsch

H, W = 256, 512
CAMERA = CameraModel(fx=565.5, fy=565.5, cx=255.5, cy=127.5, baseline=0.209, width=W, height=H)


def se3(yaw_deg: float, t: tuple[float, float, float]) -> np.ndarray:
    a = np.radians(yaw_deg)
    out = np.eye(4)
    out[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    out[:3, 3] = t
    return out


EGO = se3(0.3, (0.02, 0.0, -0.5))  # camera drives forward 0.5 m and turns slightly
BOX_MOTION = EGO @ se3(1.0, (0.4, 0.0, 0.1))  # the box moves sideways in the world


def scene_depth(with_box: bool) -> tuple[np.ndarray, np.ndarray]:
    """Depth of a ground plane (camera 1.5 m high) under a wall at 40 m, and a box mask at 12 m."""
    v, _u = np.mgrid[0:H, 0:W].astype(np.float64)
    depth = np.full((H, W), 40.0)
    below = v > CAMERA.cy + 1
    depth[below] = np.minimum(40.0, 1.5 * CAMERA.fy / (v[below] - CAMERA.cy))
    box = np.zeros((H, W), bool)
    if with_box:
        box[100:150, 200:280] = True
        depth[box] = 12.0
    return depth, box


def make_pair(
    points: np.ndarray, target: np.ndarray, valid: np.ndarray, camera: CameraModel
) -> FramePairGeometry:
    """A FramePairGeometry carrying given points and t+1 correspondences (what the segmenter reads)."""
    depth = np.where(valid, points[..., 2], 0).astype(np.float32)
    disparity = camera.depth_to_disparity(depth)
    zeros = np.zeros(valid.shape, bool)
    disp = DisparityResult(disparity, valid.copy(), valid.copy(), zeros, zeros, zeros)
    frame = FrameGeometry(disp, depth, valid.copy(), np.where(valid[..., None], points, 0).astype(np.float32))
    flow = np.zeros((*valid.shape, 2), np.float32)
    flow_result = FlowResult(flow, flow, valid.copy(), zeros, zeros, 0.01, 0.5)
    scene_flow = np.where(valid[..., None], target - points, 0).astype(np.float32)
    return FramePairGeometry(frame, frame, flow_result, scene_flow, valid.copy())


def synthetic_pair(
    with_box: bool = True, noise_px: float = 0.1, seed: int = 0
) -> tuple[FramePairGeometry, np.ndarray]:
    rng = np.random.default_rng(seed)
    depth, box = scene_depth(with_box)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)

    def noisy(z: np.ndarray) -> np.ndarray:
        d = CAMERA.fx * CAMERA.baseline / z + rng.normal(0, noise_px, z.shape)
        return CAMERA.fx * CAMERA.baseline / d

    z = noisy(depth)
    points = np.stack([(u - CAMERA.cx) * z / CAMERA.fx, (v - CAMERA.cy) * z / CAMERA.fy, z], -1)
    clean = np.stack([(u - CAMERA.cx) * depth / CAMERA.fx, (v - CAMERA.cy) * depth / CAMERA.fy, depth], -1)
    target = clean @ EGO[:3, :3].T + EGO[:3, 3]
    target[box] = clean[box] @ BOX_MOTION[:3, :3].T + BOX_MOTION[:3, 3]
    # Depth noise of frame t+1 along its viewing ray.
    zt1 = target[..., 2]
    target *= (noisy(zt1) / zt1)[..., None]
    valid = (depth >= 5.5) & (depth <= 70)
    return make_pair(points.astype(np.float32), target.astype(np.float32), valid, CAMERA), box


def test_kabsch_recovers_a_known_transform() -> None:
    rng = np.random.default_rng(1)
    p = rng.normal(size=(50, 3))
    q = p @ BOX_MOTION[:3, :3].T + BOX_MOTION[:3, 3]
    np.testing.assert_allclose(kabsch(p, q), BOX_MOTION, atol=1e-9)
    three = kabsch(p[None, :3], q[None, :3])[0]  # the minimal sample of RANSAC
    np.testing.assert_allclose(three, BOX_MOTION, atol=1e-9)


def test_synthetic_box_is_found_and_ego_motion_recovered() -> None:
    pair, box = synthetic_pair()
    result = MotionInstanceSegmenter().segment(pair, seed=0, camera=CAMERA)
    assert np.linalg.norm(result.ego_motion[:3, 3] - EGO[:3, 3]) < 0.02
    rotation_error = np.arccos(np.clip((np.trace(result.ego_motion[:3, :3].T @ EGO[:3, :3]) - 1) / 2, -1, 1))
    assert np.degrees(rotation_error) < 0.05
    assert len(result) == 1
    assert mask_iou(result.masks, box[None])[0, 0] > 0.9
    # A flat box does not pin down its SE(3) (in-plane rotation trades against translation), so the
    # motion is checked by what it does to the box's points.
    p = pair.frame_t.points[box].astype(np.float64)
    moved = p @ result.motions[0][:3, :3].T + result.motions[0][:3, 3]
    expected = p @ BOX_MOTION[:3, :3].T + BOX_MOTION[:3, 3]
    assert np.median(np.linalg.norm(moved - expected, axis=1)) < 0.1
    assert result.masks.dtype == bool and result.scores.dtype == np.float32
    assert result.motions.shape == (1, 4, 4) and 0 < result.scores[0] <= 1
    assert {"ego_motion", "clustering", "masks", "total"} <= set(result.timings)


def test_camera_is_recovered_from_the_pair_when_not_given() -> None:
    pair, box = synthetic_pair()
    result = MotionInstanceSegmenter().segment(pair, seed=0)
    assert len(result) == 1 and mask_iou(result.masks, box[None])[0, 0] > 0.9


def test_static_scene_with_moving_camera_gives_no_instances() -> None:
    pair, _ = synthetic_pair(with_box=False)
    segmenter = MotionInstanceSegmenter()
    assert len(segmenter.segment(pair, seed=3, camera=CAMERA)) == 0
    assert len(segmenter.segment_ensemble(pair, camera=CAMERA)) == 0


def test_ensemble_keeps_the_consensus_mask() -> None:
    pair, box = synthetic_pair()
    result = MotionInstanceSegmenter(MotionConfig(ensemble_runs=4)).segment_ensemble(pair, camera=CAMERA)
    assert len(result) == 1
    assert mask_iou(result.masks, box[None])[0, 0] > 0.9
    assert result.scores[0] > 0


def test_same_seed_same_result_and_seeds_differ_only_in_noise() -> None:
    pair, _ = synthetic_pair()
    segmenter = MotionInstanceSegmenter()
    a, b = segmenter.segment(pair, seed=7, camera=CAMERA), segmenter.segment(pair, seed=7, camera=CAMERA)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.motions, b.motions)
    np.testing.assert_array_equal(a.ego_motion, b.ego_motion)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_bad_inputs_raise_clear_errors() -> None:
    pair, _ = synthetic_pair()
    segmenter = MotionInstanceSegmenter()
    nan_points = pair.frame_t.points.copy()
    nan_points[120, 240] = np.nan
    bad = replace(pair, frame_t=replace(pair.frame_t, points=nan_points))
    with pytest.raises(ValueError, match="points"):
        segmenter.segment(bad, camera=CAMERA)
    empty = replace(pair, scene_flow_valid=np.zeros_like(pair.scene_flow_valid))
    with pytest.raises(ValueError, match="scene_flow_valid"):
        segmenter.segment(empty, camera=CAMERA)
    with pytest.raises(ValueError, match="scene_flow shape"):
        segmenter.segment(replace(pair, scene_flow=pair.scene_flow[:-1]), camera=CAMERA)
    with pytest.raises(ValueError, match="scene_flow_valid shape"):
        segmenter.segment(replace(pair, scene_flow_valid=pair.scene_flow_valid[:, :-1]), camera=CAMERA)


def test_config_checks_and_loads_from_a_mapping() -> None:
    assert MotionConfig.from_dict({"ensemble_runs": 4}).ensemble_runs == 4
    with pytest.raises(ValueError, match="unknown MotionConfig keys: ensemble_run"):
        MotionConfig.from_dict({"ensemble_run": 4})
    with pytest.raises(ValueError, match="moving_threshold"):
        MotionConfig(inlier_threshold=5, moving_threshold=4)


def test_match_instances_counts_and_ignores() -> None:
    gt = np.zeros((3, 10, 10), bool)
    gt[0, :5, :5] = True
    gt[1, 5:, 5:] = True
    gt[2, :2, 8:] = True  # a small object: ignored
    pred = np.zeros((3, 10, 10), bool)
    pred[0, :5, :4] = True  # IoU 0.8 with gt 0
    pred[1, :2, 8:] = True  # matches the ignored one only
    pred[2, 6:, :3] = True  # matches nothing
    result = match_instances(pred, gt, 0.5, gt_ignore=np.array([False, False, True]))
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 1, 1)
    assert result.ignored_predictions == 1
    empty = match_instances(np.zeros((0, 10, 10), bool), gt)
    assert empty.false_negatives == 3 and empty.true_positives == 0


@pytest.mark.slow
def test_simulator_moving_objects_are_found() -> None:
    """Frames 0 and 1 of the val split's first sequence, rendered here with exact ground truth."""
    import itertools

    from cups_ros.geometry import GeometryConfig, SequenceGeometry
    from cups_ros.sim.config import SimConfig
    from cups_ros.sim.generate import SequenceGenerator, sequence_seed

    config = SimConfig()
    plan = config.splits["val"]
    generator = SequenceGenerator(config, sequence_seed("val", 0), plan.towns[0], plan.frames, parallel=False)
    frame_t, frame_t1 = itertools.islice(iter(generator), 2)
    camera = generator.camera
    stereo = [
        StereoFrame(f.left, f.right, camera, f.index * 100_000_000, "sim", "val_0000", f.index)
        for f in (frame_t, frame_t1)
    ]
    pair = SequenceGeometry(GeometryConfig()).pair(*stereo)
    result = MotionInstanceSegmenter().segment(pair, seed=0, camera=camera)
    instance = frame_t.panoptic % 1000
    moving = [t for t, m in frame_t.moving.items() if m and (instance == t).any()]
    gt = np.stack([instance == t for t in moving])
    big = gt.reshape(len(gt), -1).sum(1) >= 1000
    found = match_instances(result.masks, gt, 0.5, gt_ignore=~big)
    assert found.true_positives >= 1 and found.false_positives == 0
    # Frame 0 of val_0000: the large moving object is found with a precise mask.
    assert mask_iou(result.masks, gt[big]).max() >= 0.5
    # The static world: no predicted pixel outside moving objects beyond a thin margin.
    outside = result.masks.any(0) & ~gt.any(0)
    assert outside.sum() <= 0.1 * max(result.masks.any(0).sum(), 1)


def test_anisotropic_refinement_uses_lateral_evidence() -> None:
    """Far points with large depth noise along their rays: the Mahalanobis Gauss-Newton fit recovers
    the motion far better than isotropic Kabsch, which the depth noise dominates."""
    from cups_ros.pseudo.motion import _apply, _noise_model, _refine_se3

    rng = np.random.default_rng(3)
    n = 2000
    uv = rng.uniform([-400, -150], [400, 150], size=(n, 2))
    z = rng.uniform(20, 60, size=n)
    p = np.stack([uv[:, 0] * z / 1131.0, uv[:, 1] * z / 1131.0, z], 1)
    truth = se3(0.2, (0.05, 0.0, -0.6))
    q = _apply(truth, p.astype(np.float32)).astype(np.float64)
    ray = q / np.linalg.norm(q, axis=1, keepdims=True)
    q = q + ray * rng.normal(0, 0.02 * z[:, None] ** 2 / 10, size=(n, 1))  # depth noise ~ Z^2
    p32, q32 = p.astype(np.float32), q.astype(np.float32)
    noise = _noise_model(p32, q32, 1131.0, 1131.0 * 0.209, MotionConfig())
    iso = kabsch(p, q)
    aniso = _refine_se3(iso, p32, q32, noise, 1e6, 5)
    assert np.linalg.norm(aniso[:3, 3] - truth[:3, 3]) < 0.5 * np.linalg.norm(iso[:3, 3] - truth[:3, 3])
    assert np.linalg.norm(aniso[:3, 3] - truth[:3, 3]) < 0.05


def test_image_residual_sees_far_lateral_motion_the_3d_metric_misses() -> None:
    """A point at 45 m moving 0.1 m sideways (~2.5 px): well inside its 3D depth noise, but many
    sigmas off in pixels; the static world (true ego-motion) stays at the noise level."""
    from cups_ros.pseudo.motion import _apply, _image_r2, _noise_model, _residual2

    cfg = MotionConfig()
    rng = np.random.default_rng(5)
    n = 500
    uv = rng.uniform([-400, -150], [400, 150], size=(n, 2))
    z = rng.uniform(40, 50, size=n)
    p = np.stack([uv[:, 0] * z / 1131.0, uv[:, 1] * z / 1131.0, z], 1).astype(np.float32)
    q_static = _apply(EGO, p)
    q_moving = q_static + np.float32([0.1, 0.0, 0.0])
    fb = 1131.0 * 0.209
    r2_static = _image_r2(EGO, p, q_static, 1131.0, 1131.0, fb, cfg)
    r2_moving = _image_r2(EGO, p, q_moving, 1131.0, 1131.0, fb, cfg)
    r2_3d = _residual2(q_moving - _apply(EGO, p), _noise_model(p, q_moving, 1131.0, fb, cfg))
    assert np.abs(r2_static).max() < 1e-3
    assert np.median(np.sqrt(r2_moving)) > 2 * cfg.moving_threshold
    assert np.median(np.sqrt(r2_3d)) < cfg.moving_threshold
    # Depth noise at t alone (along the ray, no motion) is absorbed by the parallax term.
    p_noisy = p * np.float32(1.05)
    assert np.median(_image_r2(EGO, p_noisy, q_static, 1131.0, 1131.0, fb, cfg)) < 1.0


def test_mask_grows_over_pixels_without_scene_flow() -> None:
    """A 12 px strip of the box has no valid scene flow (but valid depth): the mask still covers it."""
    pair, box = synthetic_pair()
    holes = box.copy()
    holes[:, :268] = False  # the box's right 12 columns lose their scene flow
    valid = pair.scene_flow_valid & ~holes
    pair = replace(pair, scene_flow_valid=valid)
    grown = MotionInstanceSegmenter().segment(pair, seed=0, camera=CAMERA)
    plain = MotionInstanceSegmenter(MotionConfig(grow_iterations=0)).segment(pair, seed=0, camera=CAMERA)
    assert len(grown) == 1
    assert mask_iou(grown.masks, box[None])[0, 0] > 0.95
    assert mask_iou(grown.masks, box[None])[0, 0] > mask_iou(plain.masks, box[None]).max() + 0.1


def test_flat_horizontal_masks_are_rejected() -> None:
    """A patch of road (points on the ground plane) is no object; a vertical box face is kept."""
    segmenter = MotionInstanceSegmenter()
    pair, box = synthetic_pair()
    prep = segmenter._prepare(pair, CAMERA)
    road = np.zeros((H, W), bool)
    road[200:250, 100:300] = True
    assert segmenter._flat(road, prep)
    assert not segmenter._flat(box, prep)
