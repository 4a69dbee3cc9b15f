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
        return self._shade(
            world_from_camera,
            camera_from_world,
            camera_from_primitive,
            depth,
            primitive,
            shade,
            point_transforms,
        )

    def _shade(
        self,
        world_from_camera: np.ndarray,
        camera_from_world: np.ndarray,
        camera_from_primitive: np.ndarray,
        depth: np.ndarray,
        primitive: np.ndarray,
        shade: bool,
        point_transforms: np.ndarray | None,
    ) -> RenderedView:
        """Colour (once per visible surface point) and moved points of a resolved z-buffer.

        Pixels are grouped by owner with one radix sort (sky, ground, then primitive by primitive), so
        that every per-primitive quantity is a scalar over a contiguous run: no per-pixel gathers of
        rotations or transforms."""
        cam = self.camera
        height, width = depth.shape
        scene = self.scene
        count = len(scene.kinds)
        flat = primitive.reshape(-1)
        order = np.argsort(flat.astype(np.int16), kind="stable")
        counts = np.bincount(flat + 1, minlength=count + 2)
        bounds = np.concatenate([[0], np.cumsum(counts)])
        rows, cols = np.divmod(order, width)
        rx = self.ray_x[cols]
        ry = self.ray_y[rows]
        z = depth.reshape(-1)[order]
        sky_end, ground_end = int(bounds[1]), int(bounds[2])
        ray_norm = np.sqrt(rx * rx + ry * ry + np.float32(1.0))

        terrain = np.zeros(flat.shape, dtype=bool)
        image = np.empty((height * width, 3), dtype=np.float32) if shade else None
        moved = np.zeros((height * width, 3), dtype=np.float32) if point_transforms is not None else None
        lighting = scene.lighting
        rotation_w = world_from_camera[:3, :3].astype(np.float32)
        sun_camera = (camera_from_world[:3, :3] @ np.asarray(lighting["sun"], dtype=np.float64)).astype(
            np.float32
        )
        up_camera = (camera_from_world[:3, :3] @ np.array([0.0, 1.0, 0.0])).astype(np.float32)
        ambient = np.float32(lighting["ambient"])  # type: ignore[arg-type]
        sun_strength = np.float32(lighting["sun_strength"])  # type: ignore[arg-type]
        tint = np.asarray(lighting["tint"], dtype=np.float32)
        horizon = np.asarray(lighting["sky_horizon"], dtype=np.float32)

        def finish(albedo: np.ndarray, light: np.ndarray, depth_run: np.ndarray) -> np.ndarray:
            """Lit, tinted colour with aerial haze towards the horizon colour."""
            haze = (np.float32(0.8) * (np.float32(1.0) - np.exp(depth_run * np.float32(-1.0 / 450.0))))[
                :, None
            ]
            colour = albedo * (light[:, None] * tint)
            return colour + (horizon - colour) * haze

        # Ground.
        g = slice(sky_end, ground_end)
        if ground_end > sky_end:
            gz = z[g]
            px, py = rx[g] * gz, ry[g] * gz
            wx = (
                rotation_w[0, 0] * px
                + rotation_w[0, 1] * py
                + rotation_w[0, 2] * gz
                + np.float32(world_from_camera[0, 3])
            )
            wz = (
                rotation_w[2, 0] * px
                + rotation_w[2, 1] * py
                + rotation_w[2, 2] * gz
                + np.float32(world_from_camera[2, 3])
            )
            layout = scene.layout
            terrain[order[g]] = (np.abs(wx) >= layout["road_half_width"]) & (
                np.abs(wz - layout["z_cross"]) >= layout["cross_half_width"]
            )
            if image is not None:
                facing = up_camera[0] * rx[g] + up_camera[1] * ry[g] + up_camera[2]
                cosine = np.clip(np.abs(facing) / ray_norm[g], 0.02, 1.0)
                footprint = gz * ray_norm[g] / np.float32(cam.fx)
                albedo, _ = shade_ground(wx, wz, footprint, footprint / cosine, layout)
                light = ambient * np.float32(0.8 + 0.2 * float(up_camera @ up_camera)) + sun_strength * max(
                    float(up_camera @ sun_camera), 0.0
                )
                image[order[g]] = finish(albedo, np.full(gz.shape, light, np.float32), gz)
            if moved is not None and point_transforms is not None:
                m = point_transforms[0].astype(np.float32)
                moved[order[g]] = np.stack([px, py, gz], axis=1) @ m[:3, :3].T + m[:3, 3]

        # Primitives: one contiguous run of pixels each.
        total = int(bounds[-1]) - ground_end
        if total:
            pixels = order[ground_end:]
            if image is not None:
                u = np.empty(total, np.float32)
                v = np.empty(total, np.float32)
                axis = np.empty(total, np.int64)
                sign = np.empty(total, np.float32)
                footprint = np.empty(total, np.float32)
                light = np.empty(total, np.float32)
            visible = np.flatnonzero(counts[2:])
            rotations = camera_from_primitive[:, :3, :3].astype(np.float32)
            translations = camera_from_primitive[:, :3, 3].astype(np.float32)
            halves = scene.half_sizes.astype(np.float32)
            fx = np.float32(cam.fx)
            for index in visible.tolist():
                a, b = int(bounds[index + 2]), int(bounds[index + 3])
                run = slice(a, b)
                out = slice(a - ground_end, b - ground_end)
                zr, xr, yr = z[run], rx[run], ry[run]
                px, py = xr * zr, yr * zr
                if moved is not None and point_transforms is not None:
                    m = point_transforms[index + 1].astype(np.float32)
                    moved[order[run]] = np.stack(
                        [
                            m[0, 0] * px + m[0, 1] * py + m[0, 2] * zr + m[0, 3],
                            m[1, 0] * px + m[1, 1] * py + m[1, 2] * zr + m[1, 3],
                            m[2, 0] * px + m[2, 1] * py + m[2, 2] * zr + m[2, 3],
                        ],
                        axis=1,
                    )
                if image is None:
                    continue
                r, t, half = rotations[index], translations[index], halves[index]
                dx, dy, dz = px - t[0], py - t[1], zr - t[2]
                local = [r[0, k] * dx + r[1, k] * dy + r[2, k] * dz for k in range(3)]
                ellipsoid = scene.kinds[index] == ELLIPSOID
                weights = half * half if ellipsoid else half
                score = [np.abs(local[k]) / weights[k] for k in range(3)]
                ax = np.where(
                    (score[0] >= score[1]) & (score[0] >= score[2]), 0, np.where(score[1] >= score[2], 1, 2)
                )
                picked = np.where(ax == 0, local[0], np.where(ax == 1, local[1], local[2]))
                sg = np.where(picked >= 0, np.float32(1), np.float32(-1))
                if ellipsoid:
                    curved = [local[k] / weights[k] for k in range(3)]
                    inverse = np.float32(1.0) / (
                        np.sqrt(curved[0] ** 2 + curved[1] ** 2 + curved[2] ** 2) + np.float32(1e-9)
                    )
                    normal_local = [c * inverse for c in curved]
                    normal = [
                        r[c, 0] * normal_local[0] + r[c, 1] * normal_local[1] + r[c, 2] * normal_local[2]
                        for c in range(3)
                    ]
                else:
                    normal = [r[c][ax] * sg for c in range(3)]
                u[out] = np.where(ax == 0, local[2] + half[2], local[0] + half[0])
                v[out] = np.where(ax == 1, local[2] + half[2], local[1] + half[1])
                axis[out] = ax
                sign[out] = sg
                norm = ray_norm[run]
                cosine = np.abs(normal[0] * xr + normal[1] * yr + normal[2]) / norm
                footprint[out] = zr * norm / fx / np.sqrt(np.clip(cosine, 0.05, 1.0))
                facing = normal[0] * up_camera[0] + normal[1] * up_camera[1] + normal[2] * up_camera[2]
                diffuse = normal[0] * sun_camera[0] + normal[1] * sun_camera[1] + normal[2] * sun_camera[2]
                light[out] = ambient * (
                    np.float32(0.8) + np.float32(0.2) * facing
                ) + sun_strength * np.maximum(diffuse, np.float32(0.0))
            if image is not None:
                repeats = counts[2:]
                material = np.repeat(scene.material_ids, repeats)
                half_per_pixel = np.repeat(halves, repeats, axis=0)
                albedo = shade_surfaces(self.materials, material, axis, sign, u, v, half_per_pixel, footprint)
                image[pixels] = finish(albedo, light, z[ground_end:])

        if image is not None and sky_end:
            directions = np.stack([rx[:sky_end], ry[:sky_end], np.ones(sky_end, np.float32)], axis=1)
            image[order[:sky_end]] = shade_sky(directions @ rotation_w.T, lighting)
        return RenderedView(
            depth,
            primitive,
            image.reshape(height, width, 3) if image is not None else None,
            moved.reshape(height, width, 3) if moved is not None else None,
            terrain.reshape(height, width),
        )


def semantic_and_instance(scene: Scene, view: RenderedView) -> tuple[np.ndarray, np.ndarray]:
    """Train-id and track-id maps of a rendered view (sky 10; ground road/terrain by position)."""
    class_lut = np.concatenate([[SKY, 0], scene.class_ids]).astype(np.uint8)
    track_lut = np.concatenate([[0, 0], scene.track_ids]).astype(np.int32)
    semantic = class_lut[view.primitive + 1]
    if view.terrain is not None:
        semantic[view.terrain] = TERRAIN
    instance = track_lut[view.primitive + 1]
    return semantic, instance
