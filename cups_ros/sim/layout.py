"""Procedural street layout: road, sidewalks, buildings, vegetation, street furniture and traffic.

All randomness comes from one numpy Generator seeded by the sequence seed, so a seed fully determines
the scene. Moving agents are drawn with rejection sampling so that none drives through another.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cups_ros.sim.config import SimConfig
from cups_ros.sim.motion import EgoMotion, Path, SpeedProfile, Trajectory
from cups_ros.sim.scene import (
    BICYCLE,
    BOX,
    BUILDING,
    BUS,
    CAR,
    ELLIPSOID,
    FENCE,
    PERSON,
    POLE,
    RIDER,
    SIDEWALK,
    TRAFFIC_LIGHT,
    TRAFFIC_SIGN,
    TRUCK,
    VEGETATION,
    WALL,
    Material,
    PrimitiveTable,
    Scene,
    SceneObject,
    freeze,
    tilt,
)
from cups_ros.sim.se3 import pose_ypr
from cups_ros.sim.towns import TownStyle

LANE_WIDTH = 3.2
PARKING_WIDTH = 2.2
CURB_HEIGHT = 0.15
CROSS_HALF_WIDTH = 3.6
CROSS_SIDEWALK = 3.0

CAR_COLOURS = (
    (0.85, 0.85, 0.86), (0.08, 0.08, 0.09), (0.55, 0.56, 0.58), (0.32, 0.33, 0.35), (0.12, 0.18, 0.35),
    (0.55, 0.08, 0.07), (0.75, 0.75, 0.72), (0.2, 0.3, 0.22), (0.62, 0.5, 0.35), (0.15, 0.35, 0.6),
)  # fmt: skip
CLOTH_COLOURS = (
    (0.1, 0.1, 0.12), (0.2, 0.22, 0.35), (0.45, 0.1, 0.1), (0.75, 0.72, 0.65), (0.3, 0.3, 0.3),
    (0.15, 0.3, 0.2), (0.6, 0.45, 0.3), (0.85, 0.85, 0.85), (0.55, 0.6, 0.8), (0.7, 0.55, 0.1),
)  # fmt: skip
SKIN_COLOURS = ((0.87, 0.72, 0.6), (0.7, 0.52, 0.4), (0.45, 0.32, 0.24), (0.95, 0.8, 0.7))


@dataclass
class _Agent:
    """Footprint of a (possibly moving) thing for conflict checks: circles along its heading."""

    trajectory: Trajectory | None
    fixed: tuple[float, float, float] | None  # x, z, yaw
    circle_offsets: tuple[float, ...]
    radius: float

    def circles(self, times: np.ndarray) -> np.ndarray:
        """(T, C, 2) circle centres (x, z)."""
        if self.trajectory is not None:
            x, z, yaw = self.trajectory.positions(times)
        else:
            assert self.fixed is not None
            x, z, yaw = (np.full(times.shape, v) for v in self.fixed)
        offsets = np.asarray(self.circle_offsets)
        cx = x[:, None] + offsets[None, :] * np.sin(yaw)[:, None]
        cz = z[:, None] + offsets[None, :] * np.cos(yaw)[:, None]
        return np.stack([cx, cz], axis=-1)


class _Builder:
    """Accumulates primitives, materials and objects while the layout is drawn."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.table = PrimitiveTable()
        self.materials: list[Material] = []
        self.material_index: dict[Material, int] = {}
        self.objects: list[SceneObject] = [SceneObject("world", 0, 0)]
        self.next_track_id = 1

    def material(self, kind: str, tint: tuple[float, ...], texture: str | None = None, **extra: float) -> int:
        key = Material(kind, tuple(float(c) for c in tint), texture, **extra)  # type: ignore[arg-type]
        if key not in self.material_index:
            self.material_index[key] = len(self.materials)
            self.materials.append(key)
        return self.material_index[key]

    def box(self, owner: int, center: tuple, half: tuple, material: int, class_id: int, **kw: object) -> None:
        self.table.add(owner, BOX, center, half, material, class_id, **kw)  # type: ignore[arg-type]

    def ellipsoid(self, owner: int, center: tuple, radii: tuple, material: int, class_id: int) -> None:
        self.table.add(owner, ELLIPSOID, center, radii, material, class_id)

    def thing(self, name: str, class_id: int, trajectory: Trajectory | None, fixed: np.ndarray | None) -> int:
        if self.next_track_id > 999:
            raise ValueError("more than 999 tracks in one sequence (panoptic codec limit)")
        scene_object = SceneObject(
            name, class_id, self.next_track_id, fixed if fixed is not None else np.eye(4), trajectory
        )
        self.next_track_id += 1
        self.objects.append(scene_object)
        return len(self.objects) - 1

    def jitter(self, colour: tuple[float, ...], amount: float = 0.06) -> tuple[float, float, float]:
        c = np.clip(np.asarray(colour) * (1.0 + self.rng.uniform(-amount, amount, 3)), 0.0, 1.0)
        return (float(c[0]), float(c[1]), float(c[2]))


# ----------------------------------------------------------------------------------------------------
# Object models (object frame: origin on the ground under the centre, y up, z forward, x left)


def add_car(b: _Builder, owner: int, length: float, width: float, colour: tuple, sport: bool = False) -> None:
    """Body, cabin with glass, four disc wheels: reads as a car at a glance."""
    body_bottom, body_height = 0.28, 0.72 if not sport else 0.6
    paint = b.material("paint", colour, "fine", variant=int(b.rng.integers(0, 1000)))
    cabin = b.material("cabin", colour, "glass")
    rubber = b.material("surface", (0.06, 0.06, 0.065), "fine")
    b.box(
        owner, (0.0, body_bottom + body_height / 2, 0.0), (width / 2, body_height / 2, length / 2), paint, CAR
    )
    cabin_length = length * (0.27 if not sport else 0.23)
    cabin_height = 0.62 if not sport else 0.45
    b.box(
        owner,
        (0.0, body_bottom + body_height + cabin_height / 2, -0.08 * length),
        (width / 2 - 0.1, cabin_height / 2, cabin_length),
        cabin,
        CAR,
    )
    for side in (-1.0, 1.0):
        for end in (-1.0, 1.0):
            b.ellipsoid(
                owner,
                (side * (width / 2 - 0.1), 0.32, end * (length / 2 - 0.78)),
                (0.13, 0.32, 0.32),
                rubber,
                CAR,
            )


def add_truck(b: _Builder, owner: int, colour: tuple, bus: bool) -> None:
    """Bus: one long box with a window band; truck: cab plus cargo box."""
    rubber = b.material("surface", (0.06, 0.06, 0.065), "fine")
    if bus:
        length, width, height = float(b.rng.uniform(10.5, 12.5)), 2.5, 3.0
        body = b.material("bus", colour, "fine")
        b.box(owner, (0.0, 0.35 + height / 2, 0.0), (width / 2, height / 2, length / 2), body, BUS)
        wheel_z = (length / 2 - 2.2, -(length / 2 - 3.0))
        class_id = BUS
    else:
        length, width = float(b.rng.uniform(6.0, 8.0)), 2.3
        cargo = b.material("surface", b.jitter((0.85, 0.85, 0.83)), "concrete")
        cab = b.material("cabin", colour, "glass")
        b.box(owner, (0.0, 0.45 + 1.35, -0.9), (width / 2, 1.35, length / 2 - 0.9), cargo, TRUCK)
        b.box(owner, (0.0, 0.45 + 1.0, length / 2 - 0.9), (width / 2 - 0.05, 1.0, 0.9), cab, TRUCK)
        wheel_z = (length / 2 - 1.0, -(length / 2 - 1.5))
        class_id = TRUCK
    for side in (-1.0, 1.0):
        for z in wheel_z:
            b.ellipsoid(owner, (side * (width / 2 - 0.15), 0.45, z), (0.16, 0.45, 0.45), rubber, class_id)


def add_pedestrian(b: _Builder, owner: int, height: float, walking: bool) -> None:
    """Upright narrow figure: legs and arms swing about hip and shoulder while walking."""
    shirt = b.material("surface", b.jitter(CLOTH_COLOURS[b.rng.integers(len(CLOTH_COLOURS))]), "fine")
    trousers = b.material("surface", b.jitter(CLOTH_COLOURS[b.rng.integers(len(CLOTH_COLOURS))]), "fine")
    skin = b.material("surface", SKIN_COLOURS[b.rng.integers(len(SKIN_COLOURS))], "fine")
    hip, shoulder = 0.48 * height, 0.8 * height
    amplitude = 0.45 if walking else 0.0
    for side, phase in ((-1.0, 0.0), (1.0, np.pi)):
        b.box(
            owner, (side * 0.095, hip / 2, 0.0), (0.075, hip / 2, 0.085), trousers, PERSON,
            swing=(amplitude, (side * 0.095, hip, 0.0), phase),
        )  # fmt: skip
        b.box(
            owner, (side * 0.25, shoulder - 0.15 * height, 0.0), (0.05, 0.15 * height, 0.055), shirt, PERSON,
            swing=(amplitude * 0.7, (side * 0.25, shoulder, 0.0), phase + np.pi),
        )  # fmt: skip
    b.box(
        owner,
        (0.0, (hip + shoulder) / 2 + 0.02, 0.0),
        (0.19, (shoulder - hip) / 2 + 0.02, 0.115),
        shirt,
        PERSON,
    )
    b.ellipsoid(owner, (0.0, height - 0.115, 0.0), (0.095, 0.118, 0.11), skin, PERSON)


def add_bicycle(b: _Builder, owner: int) -> None:
    frame = b.material("surface", b.jitter(CLOTH_COLOURS[b.rng.integers(len(CLOTH_COLOURS))]), "fine")
    tyre = b.material("surface", (0.05, 0.05, 0.05), "fine")
    for z in (-0.52, 0.52):
        b.ellipsoid(owner, (0.0, 0.34, z), (0.022, 0.34, 0.34), tyre, BICYCLE)
    b.box(owner, (0.0, 0.55, 0.0), (0.025, 0.05, 0.45), frame, BICYCLE)
    b.box(owner, (0.0, 0.72, -0.18), (0.025, 0.2, 0.03), frame, BICYCLE)
    b.box(owner, (0.0, 0.9, 0.45), (0.25, 0.02, 0.02), frame, BICYCLE)


def add_rider(b: _Builder, owner: int, height: float) -> None:
    shirt = b.material("surface", b.jitter(CLOTH_COLOURS[b.rng.integers(len(CLOTH_COLOURS))]), "fine")
    trousers = b.material("surface", b.jitter(CLOTH_COLOURS[b.rng.integers(len(CLOTH_COLOURS))]), "fine")
    skin = b.material("surface", SKIN_COLOURS[b.rng.integers(len(SKIN_COLOURS))], "fine")
    seat = 0.95
    for side, phase in ((-1.0, 0.0), (1.0, np.pi)):
        b.box(
            owner, (side * 0.12, seat - 0.25, 0.05), (0.065, 0.25, 0.075), trousers, RIDER,
            swing=(0.5, (side * 0.12, seat, 0.05), phase),
        )  # fmt: skip
    b.box(owner, (0.0, seat + 0.3, 0.12), (0.18, 0.3, 0.11), shirt, RIDER, rotation=tilt(0.35))
    for side in (-1.0, 1.0):
        b.box(owner, (side * 0.22, seat + 0.25, 0.32), (0.045, 0.045, 0.22), shirt, RIDER, rotation=tilt(0.5))
    b.ellipsoid(owner, (0.0, seat + 0.68, 0.32), (0.095, 0.115, 0.11), skin, RIDER)
    del height


def add_tree(b: _Builder, x: float, z: float, scale: float) -> None:
    bark = b.material("surface", b.jitter((0.33, 0.26, 0.2)), "stone")
    leaves = b.material("foliage", b.jitter((0.28, 0.42, 0.16), 0.15), "leaves")
    trunk = float(b.rng.uniform(2.2, 3.4)) * scale
    b.box(0, (x, trunk / 2, z), (0.13 * scale, trunk / 2, 0.13 * scale), bark, VEGETATION)
    radii = tuple(float(r) * scale for r in b.rng.uniform((1.4, 1.6, 1.4), (2.6, 3.0, 2.6)))
    b.ellipsoid(0, (x, trunk + radii[1] * 0.75, z), radii, leaves, VEGETATION)
    if b.rng.random() < 0.6:
        radii2 = tuple(r * 0.7 for r in radii)
        b.ellipsoid(
            0, (x + radii[0] * 0.4, trunk + radii[1] * 1.2, z - radii[2] * 0.3), radii2, leaves, VEGETATION
        )


def add_street_lamp(b: _Builder, x: float, z: float, side: float, half_width: float = 0.08) -> None:
    metal = b.material("surface", (0.35, 0.36, 0.37), "fine")
    height = float(b.rng.uniform(6.5, 8.0))
    b.box(0, (x, height / 2, z), (half_width, height / 2, half_width), metal, POLE)
    b.box(0, (x - side * 0.8, height - 0.05, z), (0.8, 0.05, 0.05), metal, POLE)
    b.box(0, (x - side * 1.5, height - 0.12, z), (0.25, 0.08, 0.14), metal, POLE)


def add_sign(b: _Builder, x: float, z: float) -> None:
    metal = b.material("surface", (0.45, 0.46, 0.47), "fine")
    plate = b.material("sign", (0.9, 0.9, 0.9), "fine", variant=int(b.rng.integers(0, 3)))
    height = float(b.rng.uniform(2.0, 2.6))
    b.box(0, (x, height / 2, z), (0.035, height / 2, 0.035), metal, POLE)
    b.box(0, (x, height + 0.3, z - 0.05), (0.32, 0.32, 0.02), plate, TRAFFIC_SIGN)


def add_traffic_light(b: _Builder, x: float, z: float) -> None:
    metal = b.material("surface", (0.2, 0.21, 0.22), "fine")
    housing = b.material("tlight", (0.08, 0.08, 0.08), "fine", variant=int(b.rng.integers(0, 3)))
    b.box(0, (x, 1.7, z), (0.07, 1.7, 0.07), metal, POLE)
    b.box(0, (x, 3.0, z - 0.22), (0.17, 0.45, 0.14), housing, TRAFFIC_LIGHT)


# ----------------------------------------------------------------------------------------------------


def build_scene(seed: int, style: TownStyle, config: SimConfig, frames: int) -> Scene:
    """The whole world of one sequence, from its seed alone."""
    rng = np.random.default_rng(seed)
    b = _Builder(rng)
    duration = (frames + 1) / config.rig.fps
    lanes = style.lanes_per_direction
    road_half = lanes * LANE_WIDTH + PARKING_WIDTH
    sidewalk = style.sidewalk_width
    verge = float(rng.uniform(2.0, 5.0)) if style.terrain_verge else 0.0
    building_line = road_half + sidewalk + verge
    ego_lane = int(rng.integers(0, lanes))
    ego_x = -(ego_lane + 0.5) * LANE_WIDTH
    ego_speed = float(rng.uniform(4.0, 10.0))
    travel = ego_speed * duration
    z_min, z_far = -45.0, travel + float(rng.uniform(170.0, 230.0))
    z_cross = travel + float(rng.uniform(28.0, 60.0))
    cross_gap = (
        z_cross - CROSS_HALF_WIDTH - CROSS_SIDEWALK - 1.0,
        z_cross + CROSS_HALF_WIDTH + CROSS_SIDEWALK + 1.0,
    )
    ego = EgoMotion(
        x0=ego_x,
        speed=ego_speed,
        weave_amplitude=float(rng.uniform(0.05, 0.35)),
        weave_period=float(rng.uniform(4.0, 9.0)),
        phases=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, 4)),  # type: ignore[arg-type]
    )

    # Sidewalks (top = sidewalk, side facing the road = curb, also sidewalk in Cityscapes).
    paving = b.material("sidewalk", b.jitter((0.62, 0.6, 0.57)), "paving")
    for side in (-1.0, 1.0):
        x_mid = side * (road_half + sidewalk / 2)
        for z0, z1 in ((z_min, z_cross - CROSS_HALF_WIDTH), (z_cross + CROSS_HALF_WIDTH, z_far + 20)):
            b.box(
                0,
                (x_mid, CURB_HEIGHT / 2, (z0 + z1) / 2),
                (sidewalk / 2, CURB_HEIGHT / 2, (z1 - z0) / 2),
                paving,
                SIDEWALK,
            )
        x0, x1 = road_half + sidewalk, 130.0
        for z0, z1 in (
            (z_cross - CROSS_HALF_WIDTH - CROSS_SIDEWALK, z_cross - CROSS_HALF_WIDTH),
            (z_cross + CROSS_HALF_WIDTH, z_cross + CROSS_HALF_WIDTH + CROSS_SIDEWALK),
        ):
            centre = (side * (x0 + x1) / 2, CURB_HEIGHT / 2, (z0 + z1) / 2)
            b.box(0, centre, ((x1 - x0) / 2, CURB_HEIGHT / 2, (z1 - z0) / 2), paving, SIDEWALK)

    # Buildings along the main road, gaps with walls, fences, hedges and trees.
    def facade_material() -> int:
        if rng.random() < config.hard_cases.textureless_wall_probability:
            return b.material("flat", b.jitter(style.facade_tints[rng.integers(len(style.facade_tints))]))
        texture = style.facade_textures[rng.integers(len(style.facade_textures))]
        tint = b.jitter(style.facade_tints[rng.integers(len(style.facade_tints))], 0.1)
        if texture == "glass":
            return b.material("facade", tint, "concrete", variant=int(rng.integers(0, 10_000)), scale=-1.0)
        return b.material("facade", tint, texture, variant=int(rng.integers(0, 10_000)))

    def building(x_center: float, z_center: float, half_x: float, half_z: float, height: float) -> None:
        b.box(0, (x_center, height / 2, z_center), (half_x, height / 2, half_z), facade_material(), BUILDING)

    for side in (-1.0, 1.0):
        z = z_min
        while z < z_far:
            if cross_gap[0] - 4 < z < cross_gap[1]:
                z = cross_gap[1]
                continue
            width = float(rng.uniform(8.0, 22.0))
            width = min(width, cross_gap[0] - z) if z < cross_gap[0] and z + width > cross_gap[0] else width
            if width < 3.0:
                z = cross_gap[1]
                continue
            if rng.random() < style.building_gap_probability:
                add_gap_filler(b, side, building_line, z, width)
            else:
                setback = float(rng.uniform(0.0, 1.5)) if rng.random() < 0.3 else 0.0
                depth = float(rng.uniform(10.0, 16.0))
                height = float(rng.uniform(*style.building_height))
                building(
                    side * (building_line + setback + depth / 2), z + width / 2, depth / 2, width / 2, height
                )
            z += width
        # Buildings along the cross road, on both sides of it.
        for z_side in (-1.0, 1.0):
            x = building_line + 15.0
            while x < 120.0:
                width = float(rng.uniform(10.0, 22.0))
                depth = float(rng.uniform(10.0, 14.0))
                z_center = z_cross + z_side * (CROSS_HALF_WIDTH + CROSS_SIDEWALK + 1.0 + depth / 2)
                building(
                    side * (x + width / 2),
                    z_center,
                    width / 2,
                    depth / 2,
                    float(rng.uniform(*style.building_height)),
                )
                x += width
        building(side * 125.0, z_cross, 3.0, 12.0, float(rng.uniform(*style.building_height)))
    building(0.0, z_far + 25.0, 70.0, 5.0, float(rng.uniform(15.0, 30.0)))  # closes the far end

    # Trees, lamps, signs, traffic lights, thin poles.
    occupied: list[tuple[float, float]] = []

    def free(x: float, z: float, clearance: float) -> bool:
        return all(abs(x - ox) > clearance or abs(z - oz) > clearance for ox, oz in occupied)

    for side in (-1.0, 1.0):
        z = z_min + float(rng.uniform(0, 10))
        while z < z_far:
            if not (cross_gap[0] - 2 < z < cross_gap[1] + 2):
                add_street_lamp(b, side * (road_half + 0.35), z, side)
                occupied.append((side * (road_half + 0.35), z))
            z += float(rng.uniform(22.0, 36.0))
        if style.vegetation_density > 0:
            z = z_min + float(rng.uniform(0, 8))
            while z < z_far:
                x = side * (road_half + sidewalk + verge / 2) if verge > 0 else side * (road_half + 0.9)
                if not (cross_gap[0] - 1 < z < cross_gap[1] + 1) and free(x, z, 2.5):
                    add_tree(b, x, z, float(rng.uniform(0.8, 1.3)))
                    occupied.append((x, z))
                z += float(rng.uniform(0.6, 1.6)) * 10.0 / (style.vegetation_density * 10.0) * 1.0
    for _ in range(int(rng.integers(2, 6))):
        side = float(rng.choice((-1.0, 1.0)))
        x, z = side * (road_half + 0.5), float(rng.uniform(5.0, z_cross - 12.0))
        if free(x, z, 2.0):
            add_sign(b, x, z)
            occupied.append((x, z))
    for side in (-1.0, 1.0):
        add_traffic_light(b, side * (road_half + 0.6), z_cross - CROSS_HALF_WIDTH - 1.0)
    add_sign(b, -(road_half + 0.6), z_cross - CROSS_HALF_WIDTH - 4.0)
    for _ in range(config.hard_cases.thin_poles):
        side = float(rng.choice((-1.0, 1.0)))
        x, z = side * (road_half + 0.25), float(rng.uniform(3.0, z_cross - 10.0))
        if free(x, z, 1.0):
            metal = b.material("surface", (0.5, 0.5, 0.52), "fine")
            height = float(rng.uniform(1.0, 3.5))
            b.box(0, (x, height / 2, z), (0.025, height / 2, 0.025), metal, POLE)
            occupied.append((x, z))

    add_traffic(b, rng, style, config, road_half, ego, duration, travel, z_min, z_far, z_cross, sidewalk)

    sun_elevation = np.radians(style.sun_elevation_deg + rng.uniform(-5, 5))
    sun_azimuth = np.radians(style.sun_azimuth_deg + rng.uniform(-15, 15))
    sun = np.array(
        [
            np.cos(sun_elevation) * np.sin(sun_azimuth),
            np.sin(sun_elevation),
            np.cos(sun_elevation) * np.cos(sun_azimuth),
        ]
    )
    lighting: dict[str, object] = {
        "sun": sun,
        "sun_strength": style.sun_strength,
        "ambient": style.ambient,
        "tint": np.asarray(style.light_tint),
        "sky_zenith": np.asarray(style.sky_zenith) / 255.0,
        "sky_horizon": np.asarray(style.sky_horizon) / 255.0,
        "cloud_cover": float(rng.uniform(0.2, 0.7)),
    }
    layout = {
        "road_half_width": road_half,
        "lanes_per_direction": float(lanes),
        "sidewalk_width": sidewalk,
        "building_line": building_line,
        "z_cross": z_cross,
        "cross_half_width": CROSS_HALF_WIDTH,
        "z_far": z_far,
        "asphalt_variant": float(rng.uniform(0.85, 1.1)),
    }
    return freeze(b.table, b.objects, b.materials, ego, layout, lighting)


def add_gap_filler(b: _Builder, side: float, building_line: float, z: float, width: float) -> None:
    """An empty lot: terrain with a wall, fence or hedge along the building line, maybe a tree."""
    rng = b.rng
    x = side * (building_line + 0.2)
    choice = rng.integers(0, 4)
    if choice == 0:
        wall = b.material("surface", b.jitter((0.6, 0.58, 0.55)), "concrete")
        height = float(rng.uniform(1.0, 2.5))
        b.box(0, (x, height / 2, z + width / 2), (0.15, height / 2, width / 2), wall, WALL)
    elif choice == 1:
        fence = b.material("fence", b.jitter((0.3, 0.32, 0.3)), "fine")
        height = float(rng.uniform(1.2, 2.0))
        b.box(0, (x, height / 2, z + width / 2), (0.03, height / 2, width / 2), fence, FENCE)
    elif choice == 2:
        hedge = b.material("foliage", b.jitter((0.22, 0.36, 0.14), 0.1), "leaves")
        height = float(rng.uniform(1.0, 2.2))
        b.box(0, (x + side * 0.5, height / 2, z + width / 2), (0.5, height / 2, width / 2), hedge, VEGETATION)
    if rng.random() < 0.7:
        add_tree(
            b, side * (building_line + float(rng.uniform(3, 8))), z + width / 2, float(rng.uniform(1.0, 1.5))
        )
    # A far building behind the lot keeps the background from being empty sky.
    facade = b.material("flat", b.jitter((0.7, 0.68, 0.64)))
    height = float(rng.uniform(8.0, 20.0))
    b.box(
        0,
        (side * (building_line + 30.0), height / 2, z + width / 2),
        (6.0, height / 2, width / 2 + 2),
        facade,
        BUILDING,
    )


def add_traffic(
    b: _Builder,
    rng: np.random.Generator,
    style: TownStyle,
    config: SimConfig,
    road_half: float,
    ego: EgoMotion,
    duration: float,
    travel: float,
    z_min: float,
    z_far: float,
    z_cross: float,
    sidewalk: float,
) -> None:
    """Parked cars, moving cars (lead, oncoming, crossing, turning), pedestrians and cyclists."""
    times = np.linspace(0.0, duration, max(int(duration * 10) + 1, 4))
    ego_path = Path(ego.x0, 0.0, 0.0)
    agents: list[_Agent] = [
        _Agent(Trajectory(ego_path, SpeedProfile(ego.speed)), None, (-2.5, -1.0, 0.3), 1.1)
    ]
    lanes = style.lanes_per_direction
    scale = config.traffic_scale
    stop_line = z_cross - CROSS_HALF_WIDTH - 5.0

    def fits(candidate: _Agent) -> bool:
        mine = candidate.circles(times)
        for other in agents:
            theirs = other.circles(times)
            gap = np.linalg.norm(mine[:, :, None, :] - theirs[:, None, :, :], axis=-1)
            if np.any(gap < candidate.radius + other.radius):
                return False
        return True

    def car_dimensions() -> tuple[float, float]:
        return float(rng.uniform(3.9, 4.9)), float(rng.uniform(1.7, 1.9))

    def place_vehicle(
        name: str, trajectory: Trajectory | None, fixed: tuple[float, float, float] | None
    ) -> bool:
        kind = rng.random()
        big = kind < 0.06
        length, width = (11.5, 2.5) if big else car_dimensions()
        offsets = tuple(np.linspace(-length / 2 + width / 2, length / 2 - width / 2, 3 if not big else 6))
        agent = _Agent(trajectory, fixed, offsets, width / 2 + 0.15)
        if not fits(agent):
            return False
        agents.append(agent)
        fixed_pose = pose_ypr((fixed[0], 0.0, fixed[1]), fixed[2]) if fixed is not None else None
        colour = b.jitter(CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.05)
        if big:
            is_bus = trajectory is not None and rng.random() < 0.6
            owner = b.thing(name, BUS if is_bus else TRUCK, trajectory, fixed_pose)
            add_truck(b, owner, colour, bus=is_bus)
        else:
            owner = b.thing(name, CAR, trajectory, fixed_pose)
            add_car(b, owner, length, width, colour, sport=rng.random() < 0.15)
        return True

    # Parked cars in the parking strips (static things), also far away (hard case: far objects).
    span = z_far - 40.0 - z_min
    for side in (-1.0, 1.0):
        count = int(style.parked_per_100m * span / 100.0 * scale)
        for z in np.sort(rng.uniform(z_min + 5.0, z_far - 40.0, count)):
            if abs(z - z_cross) < CROSS_HALF_WIDTH + 9.0:
                continue
            yaw = 0.0 if (side < 0) == (rng.random() < 0.9) else np.pi
            x = side * (road_half - PARKING_WIDTH / 2 - rng.uniform(0.0, 0.2))
            place_vehicle("parked car", None, (float(x), float(z), float(yaw + rng.uniform(-0.04, 0.04))))
    for _ in range(config.hard_cases.far_objects):
        z = float(rng.uniform(travel + 90.0, z_far - 10.0))
        x = float(rng.choice((-1.0, 1.0)) * (LANE_WIDTH / 2))
        yaw = 0.0 if x < 0 else np.pi
        place_vehicle("far car", Trajectory(Path(x, z, yaw), SpeedProfile(float(rng.uniform(0, 6)))), None)

    # Moving cars.
    moving = max(1, int(style.cars_per_100m * (z_far - z_min) / 100.0 * scale))
    for _ in range(moving * 4):
        if moving <= 0:
            break
        kind = rng.choice(
            ("lead", "oncoming", "crossing", "turn_in", "turn_out"), p=(0.25, 0.35, 0.2, 0.1, 0.1)
        )
        speed = float(rng.uniform(5.0, 12.0))
        lane = int(rng.integers(0, lanes))
        if kind == "lead":
            z0 = float(rng.uniform(8.0, 45.0))
            x = -(lane + 0.5) * LANE_WIDTH
            stop = stop_line if z0 < stop_line - 2 else None
            trajectory = Trajectory(
                Path(x, z0, 0.0), SpeedProfile(speed, stop_at=None if stop is None else stop - z0)
            )
        elif kind == "oncoming":
            x = (lane + 0.5) * LANE_WIDTH
            z0 = float(rng.uniform(travel + 10.0, z_far - 20.0))
            trajectory = Trajectory(Path(x, z0, np.pi), SpeedProfile(speed))
        elif kind == "crossing":
            direction = float(rng.choice((-1.0, 1.0)))
            z = z_cross + direction * LANE_WIDTH / 2  # right-hand traffic: heading +x keeps to +z
            x_at_half = float(rng.uniform(-25.0, 25.0))
            x0 = x_at_half - direction * speed * duration / 2
            trajectory = Trajectory(Path(x0, z, direction * np.pi / 2), SpeedProfile(speed))
        elif kind == "turn_in":
            # From the left part of the cross road, turning right into the oncoming lane towards the ego.
            radius = 4.5
            x_turn = LANE_WIDTH / 2 + radius
            start = float(rng.uniform(0.0, 25.0))
            path = Path(
                x_turn + start,
                z_cross - LANE_WIDTH / 2,
                -np.pi / 2,
                ((start, 0.0), (np.pi / 2 * radius, -1.0 / radius)),
            )
            # heading -x is yaw -pi/2; a right turn lowers the yaw to -pi (heading -z).
            trajectory = Trajectory(path, SpeedProfile(min(speed, 7.0)))
        else:
            # Lead car turning right into the cross road.
            radius = 5.0
            z_turn = z_cross - LANE_WIDTH / 2 - radius
            z0 = (
                float(rng.uniform(travel + 5.0, z_turn - 2.0))
                if z_turn - 2.0 > travel + 5.0
                else z_turn - 2.0
            )
            path = Path(-LANE_WIDTH / 2, z0, 0.0, ((z_turn - z0, 0.0), (np.pi / 2 * radius, -1.0 / radius)))
            trajectory = Trajectory(path, SpeedProfile(min(speed, 7.0)))
        if place_vehicle(f"{kind} car", trajectory, None):
            moving -= 1

    # Pedestrians: walking or standing on sidewalks, crossing at the crosswalk.
    count = int(style.pedestrians_per_100m * (travel + 90.0) / 100.0 * scale) + 2
    placed = 0
    for _ in range(count * 4):
        if placed >= count:
            break
        height = float(rng.uniform(1.5, 1.92))
        if rng.random() < 0.15:
            direction = float(rng.choice((-1.0, 1.0)))
            x0 = -direction * (road_half + 1.0)
            z = z_cross - CROSS_HALF_WIDTH - 2.5 + float(rng.uniform(-1, 1))
            trajectory = Trajectory(
                Path(x0, z, direction * np.pi / 2),
                SpeedProfile(
                    float(rng.uniform(1.1, 1.6)), start_time=float(rng.uniform(-8.0, duration * 0.6))
                ),
            )
            walking = True
        else:
            side = float(rng.choice((-1.0, 1.0)))
            x = side * (road_half + float(rng.uniform(0.7, max(sidewalk - 0.4, 0.8))))
            z0 = float(rng.uniform(-5.0, travel + 80.0))
            walking = rng.random() < 0.8
            yaw = float(rng.choice((0.0, np.pi))) if walking else float(rng.uniform(-np.pi, np.pi))
            speed = float(rng.uniform(1.0, 1.7)) if walking else 0.0
            trajectory = Trajectory(Path(x, z0, yaw), SpeedProfile(speed), base_height=CURB_HEIGHT)
        agent = _Agent(trajectory, None, (0.0,), 0.35)
        if not fits(agent):
            continue
        agents.append(agent)
        owner = b.thing("pedestrian", PERSON, trajectory, None)
        b.objects[owner].stride = 1.3 * height / 1.75
        add_pedestrian(b, owner, height, walking)
        placed += 1

    # Cyclists: a rider and a bicycle sharing one trajectory (two tracks, as Cityscapes labels them).
    for _ in range(round(style.cyclists * scale)):
        for _attempt in range(6):
            direction = float(rng.choice((-1.0, 1.0)))
            x = -direction * (lanes * LANE_WIDTH - 0.55)
            z0 = (
                float(rng.uniform(0.0, travel + 60.0))
                if direction > 0
                else float(rng.uniform(travel + 20, travel + 120))
            )
            trajectory = Trajectory(
                Path(x, z0, 0.0 if direction > 0 else np.pi), SpeedProfile(float(rng.uniform(3.5, 6.0)))
            )
            agent = _Agent(trajectory, None, (-0.5, 0.5), 0.35)
            if fits(agent):
                agents.append(agent)
                bicycle = b.thing("bicycle", BICYCLE, trajectory, None)
                add_bicycle(b, bicycle)
                rider = b.thing("rider", RIDER, trajectory, None)
                b.objects[rider].stride = 2.2
                add_rider(b, rider, 1.75)
                break
