"""Scene description: analytic primitives (boxes, ellipsoids) grouped into posed objects.

A scene is plain data: a primitive table (numpy arrays, for the vectorised renderer) and a list of
objects with their trajectories. Static world structure belongs to object 0 (identity pose); every
thing (car, pedestrian, rider, bicycle) is its own object with a track id that is stable over the
sequence. Limbs swing about a pivot as the agent walks, so primitives carry their own time-varying
pose and optical flow stays exact for them too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cups_ros.sim.motion import EgoMotion, Trajectory
from cups_ros.sim.se3 import pose, pose_ypr, rotation_ypr

BOX = 0
ELLIPSOID = 1

# Cityscapes train ids.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 0, 1, 2, 3, 4, 5, 6, 7
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(8, 19)
IGNORE = 255
CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
    "bicycle",
)  # fmt: skip
THING_CLASSES = (PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE)


@dataclass(frozen=True)
class Material:
    """How a primitive looks: a shading kind, a base colour (0..1 RGB), a detail texture and a variant
    number that seeds procedural details (window layout, sign symbol)."""

    kind: str
    tint: tuple[float, float, float]
    texture: str | None = None
    variant: int = 0
    scale: float = 1.0


@dataclass
class SceneObject:
    """A rigid group of primitives; ``trajectory`` None means a fixed pose."""

    name: str
    class_id: int
    track_id: int
    fixed_pose: np.ndarray = field(default_factory=lambda: np.eye(4))
    trajectory: Trajectory | None = None
    stride: float = 1.4  # metres per gait cycle, for limb swing

    def pose_and_distance(self, t: float) -> tuple[np.ndarray, float]:
        if self.trajectory is None:
            return self.fixed_pose, 0.0
        x, z, yaw, travelled = self.trajectory.state(t)
        return pose_ypr((x, self.trajectory.base_height, z), yaw), travelled


@dataclass
class PrimitiveTable:
    """Column store of primitives, appended to while building and frozen into arrays for rendering."""

    kinds: list[int] = field(default_factory=list)
    half_sizes: list[tuple[float, float, float]] = field(default_factory=list)
    offsets: list[np.ndarray] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)
    materials: list[int] = field(default_factory=list)
    class_ids: list[int] = field(default_factory=list)
    swing_amplitudes: list[float] = field(default_factory=list)
    swing_pivots: list[tuple[float, float, float]] = field(default_factory=list)
    swing_phases: list[float] = field(default_factory=list)

    def add(
        self,
        owner: int,
        kind: int,
        center: tuple[float, float, float],
        half_size: tuple[float, float, float],
        material: int,
        class_id: int,
        rotation: np.ndarray | None = None,
        swing: tuple[float, tuple[float, float, float], float] | None = None,
    ) -> None:
        self.kinds.append(kind)
        self.half_sizes.append(tuple(float(h) for h in half_size))  # type: ignore[arg-type]
        self.offsets.append(pose(np.eye(3) if rotation is None else rotation, center))
        self.owners.append(owner)
        self.materials.append(material)
        self.class_ids.append(class_id)
        amplitude, pivot, phase = swing if swing is not None else (0.0, (0.0, 0.0, 0.0), 0.0)
        self.swing_amplitudes.append(amplitude)
        self.swing_pivots.append(pivot)
        self.swing_phases.append(phase)


@dataclass
class Scene:
    """A sequence's world: primitives, objects, materials, ego motion and road layout numbers."""

    objects: list[SceneObject]
    materials: list[Material]
    kinds: np.ndarray
    half_sizes: np.ndarray
    offsets: np.ndarray
    owners: np.ndarray
    material_ids: np.ndarray
    class_ids: np.ndarray
    swing_amplitudes: np.ndarray
    swing_pivots: np.ndarray
    swing_phases: np.ndarray
    ego: EgoMotion
    layout: dict[str, float]
    lighting: dict[str, object]

    @property
    def track_ids(self) -> np.ndarray:
        """Track id of every primitive (0 for stuff)."""
        return np.array([self.objects[o].track_id for o in self.owners], dtype=np.int32)

    def object_poses(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """World poses (O, 4, 4) of all objects and their travelled distances (O,) at time t."""
        poses = np.empty((len(self.objects), 4, 4))
        travelled = np.zeros(len(self.objects))
        for index, scene_object in enumerate(self.objects):
            poses[index], travelled[index] = scene_object.pose_and_distance(t)
        return poses, travelled

    def primitive_poses(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """World poses (P, 4, 4) of all primitives at time t, limb swing included; and object poses."""
        object_poses, travelled = self.object_poses(t)
        strides = np.array([o.stride for o in self.objects])
        phase = 2.0 * np.pi * travelled[self.owners] / strides[self.owners] + self.swing_phases
        angle = self.swing_amplitudes * np.sin(phase)
        swing = np.tile(np.eye(4), (len(angle), 1, 1))
        cos, sin = np.cos(angle), np.sin(angle)
        swing[:, 1, 1], swing[:, 1, 2], swing[:, 2, 1], swing[:, 2, 2] = cos, -sin, sin, cos
        pivot = self.swing_pivots
        # T(pivot) R T(-pivot): rotation about the pivot point.
        swing[:, :3, 3] = pivot - np.einsum("pij,pj->pi", swing[:, :3, :3], pivot)
        local = swing @ self.offsets
        return object_poses[self.owners] @ local, object_poses


def freeze(
    table: PrimitiveTable,
    objects: list[SceneObject],
    materials: list[Material],
    ego: EgoMotion,
    layout: dict[str, float],
    lighting: dict[str, object],
) -> Scene:
    return Scene(
        objects=objects,
        materials=materials,
        kinds=np.array(table.kinds, dtype=np.int8),
        half_sizes=np.array(table.half_sizes, dtype=np.float64).reshape(-1, 3),
        offsets=np.array(table.offsets, dtype=np.float64).reshape(-1, 4, 4),
        owners=np.array(table.owners, dtype=np.int32),
        material_ids=np.array(table.materials, dtype=np.int32),
        class_ids=np.array(table.class_ids, dtype=np.int32),
        swing_amplitudes=np.array(table.swing_amplitudes, dtype=np.float64),
        swing_pivots=np.array(table.swing_pivots, dtype=np.float64).reshape(-1, 3),
        swing_phases=np.array(table.swing_phases, dtype=np.float64),
        ego=ego,
        layout=layout,
        lighting=lighting,
    )


def tilt(pitch: float) -> np.ndarray:
    """Rotation about the object's x axis (leaning a rider forward)."""
    return rotation_ypr(0.0, pitch, 0.0)
