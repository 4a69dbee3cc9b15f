"""Vectorised ray caster: a z-buffer over analytic primitives, each cast only inside its projected
bounding rectangle, then one shading pass over the visible pixels.

Rays are (x', y', 1) in camera coordinates, so every hit parameter is exactly the z-depth. Surface
colour depends only on the surface point (object-space texture coordinates, view-independent
Lambertian light), so the left view, the right view and the next frame see the same colour at the same
point: what stereo and flow need, and what makes the ground-truth checks exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cups_ros.core.camera import CameraModel
from cups_ros.sim.materials import MaterialTable, shade_ground, shade_sky, shade_surfaces
from cups_ros.sim.scene import BOX, ELLIPSOID, SKY, TERRAIN, Scene
from cups_ros.sim.se3 import invert

NEAR = 0.05
SKY_ID = -1
GROUND_ID = 0
_CORNER_SIGNS = np.array(
    [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64
)
_EDGES = np.array(
    [(a, b) for a in range(8) for b in range(a + 1, 8) if np.sum(_CORNER_SIGNS[a] != _CORNER_SIGNS[b]) == 1]
)


@dataclass
class RenderedView:
    """One camera's render: z-depth (inf = sky), primitive index + 1 (0 ground, -1 sky), colour, and
    the camera-frame points moved by per-primitive transforms (for optical flow) when asked."""

    depth: np.ndarray
    primitive: np.ndarray
    image: np.ndarray | None
    moved_points: np.ndarray | None
    terrain: np.ndarray | None = None


class Renderer:
    """Renders a scene for one camera model; holds the per-pixel ray grid."""

    def __init__(self, scene: Scene, camera: CameraModel, max_depth: float = 300.0) -> None:
        self.scene = scene
        self.materials = MaterialTable(scene.materials)
        self.camera = camera
        self.max_depth = max_depth
        self.ray_x = ((np.arange(camera.width) - camera.cx) / camera.fx).astype(np.float32)
        self.ray_y = ((np.arange(camera.height) - camera.cy) / camera.fy).astype(np.float32)

    # ------------------------------------------------------------------------------------------------
    def _rectangles(self, camera_from_primitive: np.ndarray) -> np.ndarray:
        """(P, 4) pixel rectangles [x0, x1, y0, y1) covering each primitive's box; empty when culled."""
        cam = self.camera
        corners_local = _CORNER_SIGNS[None, :, :] * self.scene.half_sizes[:, None, :]
        corners = np.einsum("pij,pkj->pki", camera_from_primitive[:, :3, :3], corners_local)
        corners += camera_from_primitive[:, None, :3, 3]
        a, b = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]
        za, zb = a[..., 2], b[..., 2]
        crossing = (za - NEAR) * (zb - NEAR) < 0
        with np.errstate(divide="ignore", invalid="ignore"):
            fraction = np.where(crossing, (NEAR - za) / (zb - za), 0.0)
        clipped = a + fraction[..., None] * (b - a)
        points = np.concatenate([corners, clipped], axis=1)
        usable = np.concatenate([corners[..., 2] >= NEAR, crossing], axis=1)
        z = np.where(usable, np.maximum(points[..., 2], NEAR), 1.0)
        u = np.where(usable, cam.fx * points[..., 0] / z + cam.cx, np.nan)
        v = np.where(usable, cam.fy * points[..., 1] / z + cam.cy, np.nan)
        rects = np.zeros((len(points), 4), dtype=np.int64)
        visible = usable.any(axis=1) & (corners[..., 2].min(axis=1) < self.max_depth)
        if visible.any():
            with np.errstate(invalid="ignore"):
                x0 = np.floor(np.nanmin(u[visible], axis=1)) - 1
                x1 = np.ceil(np.nanmax(u[visible], axis=1)) + 2
                y0 = np.floor(np.nanmin(v[visible], axis=1)) - 1
                y1 = np.ceil(np.nanmax(v[visible], axis=1)) + 2
            rects[visible, 0] = np.clip(x0, 0, cam.width)
            rects[visible, 1] = np.clip(x1, 0, cam.width)
            rects[visible, 2] = np.clip(y0, 0, cam.height)
            rects[visible, 3] = np.clip(y1, 0, cam.height)
        return rects

    def _nearest_depth(self, camera_from_primitive: np.ndarray) -> np.ndarray:
        """Lower bound of each primitive's z-depth: its centre's z minus its bounding radius."""
        radius = np.linalg.norm(self.scene.half_sizes, axis=1)
        return camera_from_primitive[:, 2, 3] - radius

    def _ground(self, world_from_camera: np.ndarray) -> np.ndarray:
        """Depth of the y = 0 world plane per pixel (inf where the ray does not reach it)."""
        rotation = world_from_camera[:3, :3]
        height = world_from_camera[1, 3]
        down = rotation[1, 0] * self.ray_x[None, :] + rotation[1, 1] * self.ray_y[:, None] + rotation[1, 2]
        with np.errstate(divide="ignore"):
            depth = np.float32(-height) / down
        return np.where((depth > 0) & (depth < self.max_depth), depth, np.inf).astype(np.float32)

    def _cast(self, index: int, camera_from_primitive: np.ndarray, rect: np.ndarray) -> np.ndarray:
        """Hit depth (inf for a miss) of one primitive over its rectangle."""
        x0, x1, y0, y1 = rect
        rotation = camera_from_primitive[:3, :3]
        origin = -rotation.T @ camera_from_primitive[:3, 3]
        half = self.scene.half_sizes[index]
        rx = self.ray_x[None, x0:x1]
        ry = self.ray_y[y0:y1, None]
        directions = [
            np.float32(rotation[0, i]) * rx + np.float32(rotation[1, i]) * ry + np.float32(rotation[2, i])
            for i in range(3)
        ]
        if self.scene.kinds[index] == BOX:
            near = np.full((y1 - y0, x1 - x0), -np.inf, dtype=np.float32)
            far = np.full((y1 - y0, x1 - x0), np.inf, dtype=np.float32)
            with np.errstate(divide="ignore", invalid="ignore"):
                for i in range(3):
                    inverse = np.float32(1.0) / directions[i]
                    centre = np.float32(-origin[i]) * inverse
                    spread = np.float32(half[i]) * np.abs(inverse)
                    np.maximum(near, centre - spread, out=near)
                    np.minimum(far, centre + spread, out=far)
            hit = (near <= far) & (near > NEAR)
            return np.where(hit, near, np.inf)
        scaled_origin = origin / half
        scaled = [directions[i] / np.float32(half[i]) for i in range(3)]
        a = scaled[0] ** 2 + scaled[1] ** 2 + scaled[2] ** 2
        b = sum(np.float32(scaled_origin[i]) * scaled[i] for i in range(3))
        c = np.float32(scaled_origin @ scaled_origin - 1.0)
        discriminant = b * b - a * c
        with np.errstate(invalid="ignore"):
            depth = (-b - np.sqrt(discriminant)) / a
        return np.where((discriminant >= 0) & (depth > NEAR), depth, np.inf)

    # ------------------------------------------------------------------------------------------------
    def render(
        self,
        world_from_camera: np.ndarray,
        world_from_primitive: np.ndarray,
        shade: bool = True,
        point_transforms: np.ndarray | None = None,
    ) -> RenderedView:
        """Renders one view. point_transforms: (P + 1, 4, 4) camera-frame transforms applied to the
        hit points of the ground (index 0) and of each primitive (index p + 1)."""
        cam = self.camera
        camera_from_world = invert(world_from_camera)
        camera_from_primitive = camera_from_world[None] @ world_from_primitive
        rects = self._rectangles(camera_from_primitive)
        depth = self._ground(world_from_camera)
        primitive = np.where(np.isfinite(depth), GROUND_ID, SKY_ID).astype(np.int32)
        active = np.flatnonzero((rects[:, 1] > rects[:, 0]) & (rects[:, 3] > rects[:, 2]))
        # Front to back, so that a primitive entirely behind what is already drawn costs one max().
        nearest = self._nearest_depth(camera_from_primitive)
        active = active[np.argsort(nearest[active], kind="stable")]
        for index in active.tolist():
            x0, x1, y0, y1 = rects[index]
            depth_view = depth[y0:y1, x0:x1]
            if nearest[index] > depth_view.max():
                continue
            hit = self._cast(index, camera_from_primitive[index], rects[index])
            closer = hit < depth_view
            np.copyto(depth_view, hit, where=closer)
            np.copyto(primitive[y0:y1, x0:x1], np.int32(index + 1), where=closer)
        if not shade and point_transforms is None:
            return RenderedView(depth, primitive, None, None)
        terrain = np.zeros(primitive.shape, dtype=bool)

        image = np.zeros((cam.height, cam.width, 3), dtype=np.float32) if shade else None
        moved = (
            np.zeros((cam.height, cam.width, 3), dtype=np.float32) if point_transforms is not None else None
        )
        lighting = self.scene.lighting
        sun_world = np.asarray(lighting["sun"], dtype=np.float64)
        sun_camera = camera_from_world[:3, :3] @ sun_world
        up_camera = camera_from_world[:3, :3] @ np.array([0.0, 1.0, 0.0])
        ambient = float(lighting["ambient"])  # type: ignore[arg-type]
        sun_strength = float(lighting["sun_strength"])  # type: ignore[arg-type]

        def light(normals: np.ndarray) -> np.ndarray:
            """View-independent Lambertian light for camera-frame unit normals (N, 3)."""
            facing_up = normals @ up_camera.astype(np.float32)
            diffuse = np.clip(normals @ sun_camera.astype(np.float32), 0.0, None)
            return (ambient * (0.8 + 0.2 * facing_up) + sun_strength * diffuse).astype(np.float32)

        def points_at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            z = depth[rows, cols]
            return np.stack([self.ray_x[cols] * z, self.ray_y[rows] * z, z], axis=1)

        # Ground.
        rows, cols = np.nonzero(primitive == GROUND_ID)
        if rows.size:
            points = points_at(rows, cols)
            world = points @ world_from_camera[:3, :3].T.astype(np.float32) + world_from_camera[:3, 3].astype(
                np.float32
            )
            layout = self.scene.layout
            terrain[rows, cols] = (np.abs(world[:, 0]) >= layout["road_half_width"]) & (
                np.abs(world[:, 2] - layout["z_cross"]) >= layout["cross_half_width"]
            )
            if image is not None:
                z = points[:, 2]
                ray_norm = np.sqrt(self.ray_x[cols] ** 2 + self.ray_y[rows] ** 2 + 1.0)
                cosine = np.clip(
                    np.abs(up_camera[0] * self.ray_x[cols] + up_camera[1] * self.ray_y[rows] + up_camera[2])
                    / ray_norm,
                    0.02,
                    1.0,
                )
                footprint = z * ray_norm / cam.fx
                albedo, _ = shade_ground(
                    world[:, 0], world[:, 2], footprint, footprint / cosine, self.scene.layout
                )
                normal = np.tile(up_camera.astype(np.float32), (rows.size, 1))
                image[rows, cols] = albedo * light(normal)[:, None]
            if moved is not None and point_transforms is not None:
                m = point_transforms[0].astype(np.float32)
                moved[rows, cols] = points @ m[:3, :3].T + m[:3, 3]

        # Primitives, all at once: pixels grouped by primitive with one radix sort (int16 keys).
        flat = primitive.reshape(-1)
        order = np.argsort(flat.astype(np.int16), kind="stable")
        counts = np.bincount(flat + 1, minlength=len(self.scene.kinds) + 2)
        first = counts[0] + counts[1]  # sky and ground come first
        pixels = order[first:]
        if pixels.size:
            owner = flat[pixels] - 1
            rows, cols = np.divmod(pixels, cam.width)
            points = points_at(rows, cols)
            if moved is not None and point_transforms is not None:
                compact = point_transforms[:, :3, :].astype(np.float32)[owner + 1]
                moved.reshape(-1, 3)[pixels] = (
                    np.einsum("nij,nj->ni", compact[:, :, :3], points) + compact[:, :, 3]
                )
            if image is not None:
                rotation = camera_from_primitive[:, :3, :3].astype(np.float32)[owner]
                translation = camera_from_primitive[:, :3, 3].astype(np.float32)[owner]
                local = np.einsum("nji,nj->ni", rotation, points - translation)
                half = self.scene.half_sizes.astype(np.float32)[owner]
                ellipsoid = self.scene.kinds[owner] == ELLIPSOID
                scaled = np.abs(local) / half
                axis = np.argmax(np.where(ellipsoid[:, None], np.abs(local) / half**2, scaled), axis=1)
                picked = np.take_along_axis(local, axis[:, None], axis=1)[:, 0]
                sign = np.where(picked >= 0, np.float32(1), np.float32(-1))
                normal_local = np.zeros_like(local)
                normal_local[np.arange(len(axis)), axis] = sign
                if ellipsoid.any():
                    curved = local[ellipsoid] / half[ellipsoid] ** 2
                    normal_local[ellipsoid] = curved / (np.linalg.norm(curved, axis=1, keepdims=True) + 1e-9)
                shifted = local + half
                u = np.where(axis == 0, shifted[:, 2], shifted[:, 0])
                v = np.where(axis == 1, shifted[:, 2], shifted[:, 1])
                normal_camera = np.einsum("nij,nj->ni", rotation, normal_local)
                ray_norm = np.sqrt(self.ray_x[cols] ** 2 + self.ray_y[rows] ** 2 + 1.0)
                cosine = (
                    np.abs(
                        normal_camera[:, 0] * self.ray_x[cols]
                        + normal_camera[:, 1] * self.ray_y[rows]
                        + normal_camera[:, 2]
                    )
                    / ray_norm
                )
                footprint = points[:, 2] * ray_norm / cam.fx / np.sqrt(np.clip(cosine, 0.05, 1.0))
                material = self.scene.material_ids[owner]
                albedo = shade_surfaces(self.materials, material, axis, sign, u, v, half, footprint)
                image.reshape(-1, 3)[pixels] = albedo * light(normal_camera)[:, None]

        if image is not None:
            tint = np.asarray(lighting["tint"], dtype=np.float32)
            image *= tint
            horizon = np.asarray(lighting["sky_horizon"], dtype=np.float32)
            finite = np.isfinite(depth)
            haze = np.where(finite, 1.0 - np.exp(-np.where(finite, depth, 0.0) / 450.0), 0.0).astype(
                np.float32
            )
            image += (horizon - image) * haze[..., None] * 0.8
            rows, cols = np.nonzero(primitive == SKY_ID)
            if rows.size:
                directions = np.stack(
                    [self.ray_x[cols], self.ray_y[rows], np.ones(rows.size, np.float32)], axis=1
                )
                image[rows, cols] = shade_sky(
                    directions @ world_from_camera[:3, :3].T.astype(np.float32), lighting
                )
        return RenderedView(depth, primitive, image, moved, terrain)


def semantic_and_instance(scene: Scene, view: RenderedView) -> tuple[np.ndarray, np.ndarray]:
    """Train-id and track-id maps of a rendered view (sky 10; ground road/terrain by position)."""
    class_lut = np.concatenate([[SKY, 0], scene.class_ids]).astype(np.uint8)
    track_lut = np.concatenate([[0, 0], scene.track_ids]).astype(np.int32)
    semantic = class_lut[view.primitive + 1]
    if view.terrain is not None:
        semantic[view.terrain] = TERRAIN
    instance = track_lut[view.primitive + 1]
    return semantic, instance
