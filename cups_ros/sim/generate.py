"""Sequences of frames with exact ground truth: stereo images, depth, disparity, flow, panoptic tracks.

Seeds: every split owns a disjoint block of seeds (``sequence_seed``), so train, val, test and sample
never share a scene.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.special import ndtri

from cups_ros.core.camera import CameraModel
from cups_ros.core.panoptic import encode_panoptic_id
from cups_ros.sim.config import SensorConfig, SimConfig
from cups_ros.sim.layout import build_scene
from cups_ros.sim.renderer import NEAR, RenderedView, Renderer, semantic_and_instance
from cups_ros.sim.scene import Scene
from cups_ros.sim.se3 import camera_pose_from_body, invert
from cups_ros.sim.textures import texture_bank
from cups_ros.sim.towns import town as town_style

SPLIT_SEED_BLOCKS = {"train": 1_000_000, "val": 2_000_000, "test": 3_000_000, "sample": 4_000_000}
SEEDS_PER_SPLIT = 1_000_000
# Depth agreement that counts a pixel as visible in the other view / next frame.
VISIBILITY_TOLERANCE = 0.01
MOVING_SPEED = 0.05  # m/s


def sequence_seed(split: str, index: int) -> int:
    """Seed of sequence ``index`` of a split; blocks of a million per split never overlap."""
    if split not in SPLIT_SEED_BLOCKS:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLIT_SEED_BLOCKS)})")
    if not 0 <= index < SEEDS_PER_SPLIT:
        raise ValueError(f"sequence index {index} outside [0, {SEEDS_PER_SPLIT})")
    return SPLIT_SEED_BLOCKS[split] + index


def split_seeds(split: str, count: int) -> list[int]:
    return [sequence_seed(split, index) for index in range(count)]


@dataclass
class GeneratedFrame:
    """One frame with all ground truth. depth: z in metres, inf for sky; disparity: pixels, 0 for sky;
    flow: (dx, dy) to the next frame; *_valid: the point is seen (not occluded, inside the image) in
    the right view / the next frame; instance: track ids (0 for stuff)."""

    index: int
    stamp_ns: int
    left: np.ndarray
    right: np.ndarray
    left_clean: np.ndarray
    right_clean: np.ndarray
    depth: np.ndarray
    disparity: np.ndarray
    flow: np.ndarray
    flow_valid: np.ndarray
    stereo_valid: np.ndarray
    semantic: np.ndarray
    instance: np.ndarray
    panoptic: np.ndarray
    camera_pose: np.ndarray
    object_poses: dict[int, np.ndarray] = field(default_factory=dict)
    moving: dict[int, bool] = field(default_factory=dict)
    classes: dict[int, int] = field(default_factory=dict)


def to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


# Standard normal quantiles of 65536 equally likely cells: indexing it with random 16-bit integers
# gives Gaussian noise (tails cut at 4.3 sigma) about three times faster than a normal generator.
_NORMAL_TABLE = ndtri((np.arange(65536, dtype=np.float64) + 0.5) / 65536).astype(np.float32)


class SensorModel:
    """Exposure (slowly varying, different per camera), vignetting, optics blur and noise."""

    def __init__(self, config: SensorConfig, camera: CameraModel, seed: int) -> None:
        self.config = config
        rng = np.random.default_rng([seed, 7])
        self.seed = seed
        self.phase = float(rng.uniform(0, 2 * np.pi))
        self.right_gain = 1.0 + config.stereo_gain_difference * float(rng.choice((-1.0, 1.0)))
        ys, xs = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float32)
        radius2 = ((xs - camera.cx) ** 2 + (ys - camera.cy) ** 2) / (camera.cx**2 + camera.cy**2)
        vignette = (1.0 - config.vignetting * radius2).astype(np.float32)
        self.vignette = np.repeat(vignette[..., None], 3, axis=2)

    def apply(self, image: np.ndarray, frame: int, camera_index: int, time_s: float) -> np.ndarray:
        """uint8 camera image from a noise-free render (linear, 0..1 float)."""
        cfg = self.config
        gain = 1.0 + cfg.exposure_jitter * np.sin(0.7 * time_s + self.phase)
        if camera_index == 1:
            gain *= self.right_gain
        out = cv2.multiply(image, self.vignette, scale=255.0 * gain)
        if cfg.blur_sigma > 0:
            out = cv2.GaussianBlur(out, (0, 0), cfg.blur_sigma)
        rng = np.random.default_rng([self.seed, frame, camera_index])
        cells = np.frombuffer(rng.bytes(2 * out.size), dtype=np.uint16).reshape(out.shape)
        noise = _NORMAL_TABLE[cells]
        # Read noise plus photon (shot) noise growing with the signal, in grey levels.
        signal = cv2.max(out, 0.0)
        sigma = cv2.sqrt(cv2.addWeighted(signal, cfg.shot_noise, signal, 0.0, cfg.noise_sigma**2))
        out = cv2.add(out, cv2.multiply(noise, sigma))
        # Saturating round to nearest.
        return cv2.convertScaleAbs(cv2.max(out, 0.0))


class SequenceGenerator:
    """Renders a seeded scene frame by frame; poses are analytic, so frame t + 1 is exact."""

    def __init__(
        self, config: SimConfig, seed: int, town: str, frames: int, parallel: bool | None = None
    ) -> None:
        """parallel: render right views in a helper process (default: when the machine has two or
        more cores). Processes that already run one sequence per core (``write_split`` with workers)
        pass False."""
        self.config = config
        self.parallel = (os.cpu_count() or 1) >= 2 if parallel is None else parallel
        self._helper_ready = False
        self.town_name = town
        self.seed = seed
        self.town = town_style(town)
        self.frames = frames
        self.camera = config.rig.camera_model()
        self.scene: Scene = build_scene(seed, self.town, config, frames)
        self.renderer = Renderer(self.scene, self.camera, config.max_depth)
        self.sensor = SensorModel(config.sensor, self.camera, seed)
        right_offset = np.eye(4)
        right_offset[0, 3] = self.camera.baseline
        self.right_offset = right_offset

    def time(self, index: int) -> float:
        return index / self.config.rig.fps

    def stamp_ns(self, index: int) -> int:
        return round(self.time(index) * 1e9) + 1_000_000_000

    def camera_pose(self, index: int) -> np.ndarray:
        """World-from-left-camera pose at frame ``index``."""
        body = self.scene.ego.body_pose(self.time(index), self.config.rig.mount_height)
        return camera_pose_from_body(body)

    def _point_transforms(
        self, index: int, primitive_now: np.ndarray, primitive_next: np.ndarray
    ) -> np.ndarray:
        camera_now, camera_next = self.camera_pose(index), self.camera_pose(index + 1)
        next_from_now = invert(camera_next)
        world = next_from_now @ camera_now
        primitive_motion = primitive_next @ np.linalg.inv(primitive_now)
        per_primitive = next_from_now[None] @ primitive_motion @ camera_now[None]
        return np.concatenate([world[None], per_primitive], axis=0)

    def _flow(self, index: int, view: RenderedView, next_depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cam = self.camera
        moved = view.moved_points
        assert moved is not None
        height, width = view.depth.shape
        us = np.arange(width, dtype=np.float32)[None, :]
        vs = np.arange(height, dtype=np.float32)[:, None]
        z = moved[..., 2]
        sky = ~np.isfinite(view.depth)
        if sky.any():
            # Points at infinity move with the camera rotation only.
            rotation = (invert(self.camera_pose(index + 1)) @ self.camera_pose(index))[:3, :3].astype(
                np.float32
            )
            rows, cols = np.nonzero(sky)
            directions = np.stack(
                [self.renderer.ray_x[cols], self.renderer.ray_y[rows], np.ones(rows.size, np.float32)], 1
            )
            moved = moved.copy()
            moved[rows, cols] = directions @ rotation.T
            z = moved[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u_next = np.float32(cam.fx) * moved[..., 0] / z + np.float32(cam.cx)
            v_next = np.float32(cam.fy) * moved[..., 1] / z + np.float32(cam.cy)
        flow = np.stack([u_next - us, v_next - vs], axis=-1).astype(np.float32)
        ahead = z > NEAR
        flow[~ahead] = 0.0
        column = (
            np.rint(u_next).astype(np.int64, copy=False)
            if ahead.all()
            else np.rint(np.where(ahead, u_next, -1))
        )
        row = np.rint(np.where(ahead, v_next, -1))
        inside = ahead & (column >= 0) & (column < width) & (row >= 0) & (row < height)
        column_index = np.clip(column, 0, width - 1).astype(np.int64)
        row_index = np.clip(row, 0, height - 1).astype(np.int64)
        seen_depth = next_depth[row_index, column_index]
        with np.errstate(invalid="ignore"):
            agree = np.where(
                sky, ~np.isfinite(seen_depth), np.abs(seen_depth - z) <= VISIBILITY_TOLERANCE * z + 0.02
            )
        return flow, inside & agree

    def _stereo_valid(self, depth: np.ndarray, disparity: np.ndarray, right_depth: np.ndarray) -> np.ndarray:
        height, width = depth.shape
        column = np.rint(np.arange(width, dtype=np.float32)[None, :] - disparity).astype(np.int64)
        inside = (column >= 0) & (column < width) & np.isfinite(depth)
        seen = right_depth[np.arange(height)[:, None], np.clip(column, 0, width - 1)]
        with np.errstate(invalid="ignore"):
            return inside & (np.abs(seen - depth) <= VISIBILITY_TOLERANCE * depth + 0.02)

    def __iter__(self) -> Iterator[GeneratedFrame]:
        return self.frames_from(0)

    def right_view(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Right camera at frame ``index``: depth, noise-free uint8 image, sensor uint8 image."""
        pose = self.camera_pose(index) @ self.right_offset
        view = self.renderer.render(pose, self.scene.primitive_poses(self.time(index))[0], shade=True)
        assert view.image is not None
        noisy = self.sensor.apply(view.image, index, 1, self.time(index))
        return view.depth, to_uint8(view.image), noisy

    def frames_from(self, start: int) -> Iterator[GeneratedFrame]:
        """Frames start..frames-1 (each needs the geometry of the next frame for its flow mask).

        With ``parallel``, the right view of frame t is rendered by the helper process while this one
        renders the left view of frame t and finishes the ground truth of frame t - 1: the two cores
        work at once (threads would not, the renderer holds the GIL too much). The helper runs the same
        code on the same inputs, so the frames are identical either way."""
        key = self._helper_key()
        primitive_poses = {start: self.scene.primitive_poses(self.time(start))}
        pending: tuple[int, RenderedView, tuple] | None = None
        for index in range(start, self.frames + 1):
            right: Future | tuple | None = None
            if index < self.frames:
                if key is not None:
                    right = _helper().submit(_helper_right_view, key, index)
                else:
                    right = self.right_view(index)
            primitive_poses[index + 1] = self.scene.primitive_poses(self.time(index + 1))
            now = primitive_poses[index][0]
            if index == self.frames:
                view = self.renderer.render(self.camera_pose(index), now, shade=False)
            else:
                transforms = self._point_transforms(index, now, primitive_poses[index + 1][0])
                view = self.renderer.render(
                    self.camera_pose(index), now, shade=True, point_transforms=transforms
                )
            if pending is not None:
                yield self._finish(*pending, next_depth=view.depth)
            if right is None:
                break
            pending = (
                index,
                view,
                (
                    right.result() if isinstance(right, Future) else right,
                    primitive_poses[index][1],
                    primitive_poses[index + 1][1],
                ),
            )
            primitive_poses.pop(index - 1, None)

    def _helper_key(self) -> tuple | None:
        if not self.parallel:
            return None
        key = (pickle.dumps(self.config), self.seed, self.town_name, self.frames)
        if not self._helper_ready:
            _helper().submit(_helper_generator, key).result()
            self._helper_ready = True
        return key

    def _finish(self, index: int, view: RenderedView, extra: tuple, next_depth: np.ndarray) -> GeneratedFrame:
        cam = self.camera
        (right_depth, right_clean, right_noisy), objects_now, objects_next = extra
        assert view.image is not None
        time_s = self.time(index)
        depth = view.depth
        disparity = cam.depth_to_disparity(depth)
        semantic, instance = semantic_and_instance(self.scene, view)
        flow, flow_valid = self._flow(index, view, next_depth)
        stereo_valid = self._stereo_valid(depth, disparity, right_depth)
        object_poses: dict[int, np.ndarray] = {}
        moving: dict[int, bool] = {}
        classes: dict[int, int] = {}
        dt = 1.0 / self.config.rig.fps
        for object_index, scene_object in enumerate(self.scene.objects):
            if scene_object.track_id == 0:
                continue
            now = objects_now[object_index]
            later = objects_next[object_index]
            object_poses[scene_object.track_id] = now
            moving[scene_object.track_id] = bool(
                np.linalg.norm(later[:3, 3] - now[:3, 3]) / dt > MOVING_SPEED
            )
            classes[scene_object.track_id] = scene_object.class_id
        return GeneratedFrame(
            index=index,
            stamp_ns=self.stamp_ns(index),
            left=self.sensor.apply(view.image, index, 0, time_s),
            right=right_noisy,
            left_clean=to_uint8(view.image),
            right_clean=right_clean,
            depth=depth,
            disparity=disparity,
            flow=flow,
            flow_valid=flow_valid,
            stereo_valid=stereo_valid,
            semantic=semantic,
            instance=instance,
            panoptic=encode_panoptic_id(semantic, instance),
            camera_pose=self.camera_pose(index),
            object_poses=object_poses,
            moving=moving,
            classes=classes,
        )


# The helper process (one per process that asks for it; spawned, so no state is inherited) and the
# generators it holds, keyed by (pickled config, seed, town, frames).
_HELPER: ProcessPoolExecutor | None = None
_HELPER_GENERATORS: dict[tuple, SequenceGenerator] = {}


def _helper() -> ProcessPoolExecutor:
    global _HELPER
    if _HELPER is None:
        _HELPER = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    return _HELPER


def start_helper() -> None:
    """Starts the right-view helper process now (it takes about a second to import and build the
    textures), so that the first frames do not wait for it."""
    _helper().submit(texture_bank).result()


def _helper_generator(key: tuple) -> SequenceGenerator:
    generator = _HELPER_GENERATORS.get(key)
    if generator is None:
        if len(_HELPER_GENERATORS) >= 2:
            _HELPER_GENERATORS.pop(next(iter(_HELPER_GENERATORS)))
        config_bytes, seed, town, frames = key
        generator = SequenceGenerator(pickle.loads(config_bytes), seed, town, frames, parallel=False)
        _HELPER_GENERATORS[key] = generator
    return generator


def _helper_right_view(key: tuple, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _helper_generator(key).right_view(index)


def generate_sequence(
    config: SimConfig, seed: int, town: str = "oldtown", frames: int = 10, start: int = 0
) -> Iterator[GeneratedFrame]:
    """Frames ``start..frames-1`` of the sequence with this seed and town."""
    return SequenceGenerator(config, seed, town, frames).frames_from(start)


def checksum(frame: GeneratedFrame) -> int:
    """CRC of a frame's images and labels, for determinism checks."""
    value = 0
    for array in (frame.left, frame.right, frame.depth, frame.flow, frame.panoptic):
        value = zlib.crc32(np.ascontiguousarray(array).tobytes(), value)
    return value
