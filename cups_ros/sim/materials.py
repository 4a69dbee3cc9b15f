"""Surface appearance: photo textures tinted per material plus procedural, box-filtered details
(windows, lane markings, lights, sign symbols) that stay crisp near and do not alias far away.

Shading is vectorised over all pixels of one material kind at once, with per-pixel parameter
columns, so its cost does not grow with the number of primitives.
"""

from __future__ import annotations

import numpy as np

from cups_ros.sim.scene import Material
from cups_ros.sim.textures import texture_bank

GLASS = np.array([0.11, 0.13, 0.16], dtype=np.float32)
WHITE_PAINT = np.array([0.86, 0.86, 0.84], dtype=np.float32)
KINDS = (
    "surface",
    "flat",
    "facade",
    "sidewalk",
    "paint",
    "cabin",
    "bus",
    "sign",
    "tlight",
    "fence",
    "foliage",
)


def pulse_coverage(coord, period, start, width, footprint):  # type: ignore[no-untyped-def]
    """Fraction of the pixel footprint [c - f/2, c + f/2] covered by the periodic interval
    [start, start + width] (mod period): an exact box filter, so thin stripes fade instead of aliasing.
    period/start/width may be scalars or per-point arrays."""
    inverse = np.float32(1.0) / np.asarray(period, dtype=np.float32)

    def integral(x):  # type: ignore[no-untyped-def]
        cells = np.floor(x * inverse)
        return cells * width + np.clip(x - cells * period - start, 0.0, width)

    half = np.maximum(footprint, 1e-4) * np.float32(0.5)
    return ((integral(coord + half) - integral(coord - half)) / (2 * half)).astype(np.float32, copy=False)


def interval_coverage(coord, low, high, footprint):  # type: ignore[no-untyped-def]
    """Box-filtered indicator of low <= coord <= high (bounds scalars or per-point arrays)."""
    half = np.maximum(footprint, 1e-4) * 0.5
    covered = np.clip(np.minimum(coord + half, high) - np.maximum(coord - half, low), 0.0, None)
    return (covered / (2 * half)).astype(np.float32)


def _hash(*values: np.ndarray | int | float) -> np.ndarray:
    """Deterministic per-cell pseudo-random numbers in [0, 1) (no RNG state, same in every view)."""
    total = np.zeros(np.broadcast(*[np.asarray(v) for v in values]).shape, dtype=np.float64)
    for factor, value in zip((12.9898, 78.233, 37.719, 4.581), values, strict=False):
        total = total + factor * np.asarray(value, dtype=np.float64)
    return np.mod(np.sin(total) * 43758.5453, 1.0)


def _mix(base: np.ndarray, colour: np.ndarray | tuple, weight: np.ndarray) -> np.ndarray:
    colour = np.asarray(colour, dtype=np.float32)
    weight = weight[:, None]
    return base * (1.0 - weight) + colour * weight


def _facade_layout(material: Material) -> tuple[float, ...]:
    """(floor height, window spacing, width, height, sill, ground floor height, glass) of a facade."""
    rng = np.random.default_rng(material.variant)
    glass = material.scale < 0
    floor = float(rng.uniform(3.0, 3.6))
    spacing = float(rng.uniform(2.4, 3.6))
    width = spacing - 0.25 if glass else float(rng.uniform(0.9, min(1.6, spacing - 0.6)))
    height = floor - 0.35 if glass else float(rng.uniform(1.3, 1.8))
    sill = (floor - height) / 2 if glass else float(rng.uniform(0.8, 1.0))
    ground = float(rng.uniform(3.6, 4.4))
    return floor, spacing, width, height, sill, ground, float(glass)


class MaterialTable:
    """Per-material columns (kind, tint, texture, variant, facade layout) of a scene."""

    def __init__(self, materials: list[Material]) -> None:
        self.kind = np.array([KINDS.index(m.kind) for m in materials], dtype=np.int8)
        self.tint = np.array([m.tint for m in materials], dtype=np.float32).reshape(-1, 3)
        self.texture_names = sorted({m.texture for m in materials if m.texture is not None})
        self.texture = np.array(
            [self.texture_names.index(m.texture) if m.texture is not None else -1 for m in materials],
            dtype=np.int16,
        )
        self.variant = np.array([m.variant for m in materials], dtype=np.int64)
        self.facade = np.zeros((len(materials), 7), dtype=np.float32)
        for index, m in enumerate(materials):
            if m.kind == "facade":
                self.facade[index] = _facade_layout(m)


def shade_surfaces(
    table: MaterialTable,
    material: np.ndarray,
    axis: np.ndarray,
    sign: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    half: np.ndarray,
    footprint: np.ndarray,
) -> np.ndarray:
    """Albedo (N, 3) of N surface points; material: material index per point; axis/sign name the
    face (0 x, 1 y, 2 z; +1/-1); u/v: surface coordinates in metres from the face's corner;
    half: the primitive's half size per point (N, 3)."""
    bank = texture_bank()
    detail = np.ones(u.shape, dtype=np.float32)
    texture = table.texture[material]
    for index, name in enumerate(table.texture_names):
        chosen = np.flatnonzero(texture == index)
        if chosen.size:
            detail[chosen] = bank[name].sample(u[chosen], v[chosen], footprint[chosen])
    albedo = table.tint[material] * detail[:, None]
    kind = table.kind[material]
    for kind_index in np.unique(kind).tolist():
        name = KINDS[kind_index]
        if name in ("surface", "flat"):
            continue
        idx = np.flatnonzero(kind == kind_index)
        m = material[idx]
        args = (albedo[idx], axis[idx], sign[idx], u[idx], v[idx], half[idx], footprint[idx])
        if name == "facade":
            albedo[idx] = _facade(table.facade[m], table.variant[m], *args)
        elif name == "sidewalk":
            albedo[idx] = _sidewalk(table.tint[m], detail[idx], *args)
        elif name == "paint":
            albedo[idx] = _car_body(table.variant[m], *args)
        elif name == "cabin":
            albedo[idx] = _car_cabin(*args)
        elif name == "bus":
            albedo[idx] = _bus(*args)
        elif name == "sign":
            albedo[idx] = _sign(table.variant[m], *args)
        elif name == "tlight":
            albedo[idx] = _traffic_light(table.variant[m], *args)
        elif name == "fence":
            albedo[idx] = _fence(table.tint[m], *args)
        elif name == "foliage":
            albedo[idx] = args[0] * (0.75 + 0.25 * np.clip(detail[idx], 0.0, 1.6))[:, None]
    return albedo


SKY_REFLECTION = np.array([0.72, 0.78, 0.88], dtype=np.float32)


def _environment(u, v, footprint, offset):  # type: ignore[no-untyped-def]
    """Baked reflection of the surroundings on glossy surfaces (car paint, glass), in [0, ~1.2]: a
    smooth sky/horizon part plus high-frequency foliage/building detail, as seen in real clear coats
    and windows. It is a function of the surface point only (not of the viewpoint), so the left and
    right views and the next frame still agree exactly, unlike a true specular reflection."""
    bank = texture_bank()
    sky = bank["clouds"].sample(u * 0.25 + offset, v * 0.6, footprint * 0.6)
    detail = bank["leaves"].sample(u * 0.7 + 0.37 * offset, v * 1.1, footprint * 1.1)
    return np.clip(0.45 + 0.2 * (sky - 1.0) + 0.45 * (detail - 1.0), 0.02, 1.2).astype(np.float32)


def _facade(params, variant, albedo, axis, sign, u, v, half, footprint):  # type: ignore[no-untyped-def]
    """Floors of windows with frames, a taller ground floor with shop windows, a plain roof."""
    floor, spacing, width, height, sill, ground, glass_facade = (params[:, i] for i in range(7))
    vertical = axis != 1
    above = v - ground
    column = np.floor(u / spacing)
    row = np.floor(above / floor)
    upper = (above > 0) & vertical
    window = pulse_coverage(u, spacing, (spacing - width) / 2, width, footprint) * pulse_coverage(
        above, floor, sill, height, footprint
    )
    frame = pulse_coverage(u, spacing, (spacing - width) / 2 - 0.1, width + 0.2, footprint) * pulse_coverage(
        above, floor, sill - 0.1, height + 0.2, footprint
    )
    window, frame = window * upper, frame * upper
    albedo = albedo * (1.0 - 0.25 * frame[:, None]) + 0.1 * frame[:, None]
    # Glass only where a window covers the pixel: per-pane tone, lit panes, the street reflected.
    panes = np.flatnonzero(window > 0)
    if panes.size:
        column, row, variant = column[panes], row[panes], variant[panes]
        jitter = _hash(column, row, variant).astype(np.float32)
        lit = (_hash(column, row, 3.0) > 0.8).astype(np.float32)
        glass = GLASS[None, :] * (0.7 + 0.9 * jitter[:, None]) + 0.12 * lit[:, None]
        glass = np.where(glass_facade[panes, None] > 0, glass * np.float32([0.9, 1.05, 1.25]) + 0.05, glass)
        environment = _environment(u[panes], v[panes], footprint[panes], (variant % 97).astype(np.float32))
        glass = glass + (0.22 * environment)[:, None] * SKY_REFLECTION
        cover = window[panes, None]
        albedo[panes] = albedo[panes] * (1.0 - cover) + glass * cover
    shop = (
        pulse_coverage(u, 6.0, 0.6, 4.2, footprint)
        * interval_coverage(v, 0.5, ground - 0.6, footprint)
        * vertical
    )
    shops = np.flatnonzero(shop > 0)
    if shops.size:
        environment = _environment(u[shops], v[shops], footprint[shops], np.float32(11.0))
        glass = GLASS * 1.2 + (0.25 * environment)[:, None] * SKY_REFLECTION
        cover = shop[shops, None]
        albedo[shops] = albedo[shops] * (1.0 - cover) + glass * cover
    roof = (axis == 1) & (sign > 0)
    return np.where(roof[:, None], albedo.mean(1, keepdims=True) * np.float32(0.55), albedo)


def _sidewalk(tint, detail, albedo, axis, sign, u, v, half, footprint):  # type: ignore[no-untyped-def]
    top = (axis == 1) & (sign > 0)
    seams = 1.0 - 0.35 * np.maximum(
        pulse_coverage(u, 0.6, 0.0, 0.02, footprint), pulse_coverage(v, 0.6, 0.0, 0.02, footprint)
    )
    return np.where(top[:, None], albedo * seams[:, None], tint * 1.15 * detail[:, None])


def _car_body(variant, albedo, axis, sign, u, v, half, footprint):  # type: ignore[no-untyped-def]
    width = 2 * half[:, 0]
    # Clear coat: the surroundings reflected (stronger on the roof/bonnet, which face the sky), plus
    # road dust rising towards the sills; a black car is then not a textureless hole.
    environment = _environment(u, v, footprint, (variant % 89).astype(np.float32))
    strength = np.where(axis == 1, np.float32(0.2), np.float32(0.11))
    dust = interval_coverage(v, -1.0, 0.45, footprint) * 0.5 + 0.5
    albedo = albedo * (1.0 - 0.15 * dust)[:, None] + (strength * environment)[:, None] * SKY_REFLECTION
    albedo = albedo + (0.05 * dust * np.clip(environment, 0.0, 1.0))[:, None]
    ends = axis == 2
    corner = np.maximum(
        interval_coverage(u, 0.08, 0.45, footprint),
        interval_coverage(u, width - 0.45, width - 0.08, footprint),
    )
    top = 2 * half[:, 1]
    lamp_band = interval_coverage(v, top - 0.28, top - 0.1, footprint) * corner * ends
    front = sign > 0
    lamp_colour = np.where(front[:, None], np.float32([0.95, 0.93, 0.85]), np.float32([0.75, 0.05, 0.04]))
    albedo = albedo * (1.0 - lamp_band[:, None]) + lamp_colour * lamp_band[:, None]
    grille = (
        interval_coverage(v, 0.12, 0.32, footprint) * interval_coverage(u, 0.5, width - 0.5, footprint) * ends
    )
    albedo = _mix(albedo, (0.06, 0.06, 0.07), grille * 0.8)
    sides = axis == 0
    skirt = interval_coverage(v, 0.0, 0.12, footprint) * sides
    seams = pulse_coverage(u, 1.15, 0.0, 0.015, footprint) * sides * 0.5
    return _mix(albedo, (0.05, 0.05, 0.05), np.maximum(skirt, seams))


def _car_cabin(albedo, axis, sign, u, v, half, footprint):  # type: ignore[no-untyped-def]
    height = 2 * half[:, 1]
    along = 2 * np.where(axis == 0, half[:, 2], half[:, 0])
    glass_v = interval_coverage(v, 0.06, height - 0.07, footprint)
    glass_u = interval_coverage(u, 0.1, along - 0.1, footprint)
    pillar = interval_coverage(u, along / 2 - 0.06, along / 2 + 0.06, footprint) * (axis == 0)
    glass = glass_v * glass_u * (1.0 - pillar) * (axis != 1)
    reflection = GLASS[None, :] * (0.6 + 0.5 * (v / np.maximum(height, 1e-3)))[:, None]
    reflection = reflection + (0.28 * _environment(u, v, footprint, 3.0 * axis))[:, None] * SKY_REFLECTION
    return albedo * (1.0 - glass[:, None]) + reflection * glass[:, None]


def _bus(albedo, axis, sign, u, v, half, footprint):  # type: ignore[no-untyped-def]
    vertical = axis != 1
    band = interval_coverage(v, 1.1, 2.6, footprint) * vertical
    pillars = 1.0 - pulse_coverage(u, 1.3, 0.0, 0.12, footprint)
    glass = GLASS + (0.25 * _environment(u, v, footprint, 5.0 + axis))[:, None] * SKY_REFLECTION
    albedo = albedo * (1.0 - (band * pillars)[:, None]) + glass * (band * pillars)[:, None]
    return _mix(albedo, (0.1, 0.1, 0.1), interval_coverage(v, 0.0, 0.25, footprint) * vertical)


def _sign(variant, albedo, axis, sign, u, v, half, footprint):  # type: ignore[no-untyped-def]
    front = ((axis == 2) & (sign < 0)).astype(np.float32)
    radius = np.hypot(u - half[:, 0], v - half[:, 1])
    back = np.full_like(albedo, 0.45)
    ring = _mix(np.full_like(albedo, 0.92), (0.8, 0.08, 0.06), interval_coverage(radius, 0.2, 0.3, footprint))
    disc = _mix(np.full_like(albedo, 0.1), (0.1, 0.25, 0.7), interval_coverage(radius, -1.0, 0.3, footprint))
    bar = interval_coverage(u - half[:, 0], -0.04, 0.04, footprint) * interval_coverage(
        v - half[:, 1], -0.18, 0.18, footprint
    )
    disc = _mix(disc, (0.95, 0.95, 0.95), bar)
    diamond = np.abs(u - half[:, 0]) + np.abs(v - half[:, 1])
    priority = _mix(
        np.full_like(albedo, 0.9), (0.95, 0.75, 0.05), interval_coverage(diamond, -1.0, 0.2, footprint)
    )
    variant = variant[:, None]
    face = np.where(variant == 0, ring, np.where(variant == 1, disc, priority))
    return face * front[:, None] + back * (1.0 - front[:, None])


def _traffic_light(variant, albedo, axis, sign, u, v, half, footprint):  # type: ignore[no-untyped-def]
    front = (axis == 2) & (sign < 0)
    lamps = ((0.7, (1.0, 0.15, 0.1)), (0.45, (1.0, 0.75, 0.1)), (0.2, (0.2, 1.0, 0.4)))
    for index, (height, colour) in enumerate(lamps):
        radius = np.hypot(u - half[:, 0], v - height)
        lamp = interval_coverage(radius, -1.0, 0.085, footprint) * front
        lit = (variant == index)[:, None]
        albedo = np.where(lit, _mix(albedo, colour, lamp), _mix(albedo, (0.15, 0.15, 0.13), lamp))
    return albedo


def _fence(tint, albedo, axis, sign, u, v, half, footprint):  # type: ignore[no-untyped-def]
    bars = np.maximum(
        pulse_coverage(u, 0.14, 0.0, 0.035, footprint), interval_coverage(v, 0.0, 0.08, footprint)
    )
    # Weathered bars: each bar its own shade, so the pattern is not perfectly periodic (real fences
    # are repainted, rusted and dirty unevenly).
    shade = 0.35 + 1.1 * _hash(np.floor(u / 0.14), 7.0).astype(np.float32)
    return albedo * 1.8 * (1.0 - bars[:, None]) + tint * (0.5 * shade * bars)[:, None]


def shade_ground(
    x: np.ndarray, z: np.ndarray, footprint_x: np.ndarray, footprint_z: np.ndarray, layout: dict[str, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Albedo and class id of ground points (world x, z): asphalt with markings, or terrain."""
    from cups_ros.sim.layout import LANE_WIDTH
    from cups_ros.sim.scene import ROAD, TERRAIN

    bank = texture_bank()
    road_half = layout["road_half_width"]
    lanes = int(layout["lanes_per_direction"])
    z_cross, cross_half = layout["z_cross"], layout["cross_half_width"]
    texture_footprint = np.sqrt(footprint_x * footprint_z)
    in_cross = np.abs(z - z_cross) < cross_half
    is_road = (np.abs(x) < road_half) | in_cross
    albedo = np.empty((x.size, 3), dtype=np.float32)
    road_x, road_z, fx_, fz_ = x[is_road], z[is_road], footprint_x[is_road], footprint_z[is_road]
    asphalt = bank["asphalt"].sample(road_x, road_z, texture_footprint[is_road])
    road = np.float32([0.33, 0.33, 0.34]) * layout["asphalt_variant"] * asphalt[:, None]
    main = np.abs(road_z - z_cross) >= cross_half
    edge = lanes * LANE_WIDTH
    # Lines along the road at k * LANE_WIDTH: edges (|k| = lanes) solid, separators dashed (the
    # centre line k = 0 solid double for two lanes per direction); only the nearest line matters.
    k = np.clip(np.rint(road_x / LANE_WIDTH), -lanes, lanes)
    offset = road_x - k * LANE_WIDTH
    near_line = np.flatnonzero((np.abs(offset) < 0.3 + fx_) & main)
    paint = np.zeros(road_x.shape, dtype=np.float32)
    if near_line.size:
        kn, on, fxn, fzn, zn = (
            k[near_line],
            offset[near_line],
            fx_[near_line],
            fz_[near_line],
            road_z[near_line],
        )
        double = (kn == 0) & (lanes > 1)
        single = interval_coverage(on, -0.06, 0.06, fxn)
        pair = np.maximum(interval_coverage(on, -0.2, -0.08, fxn), interval_coverage(on, 0.08, 0.2, fxn))
        dashed = (np.abs(kn) < lanes) & ~double
        paint[near_line] = np.where(
            double, pair, single * np.where(dashed, pulse_coverage(zn, 9.0, 0.0, 3.0, fzn), 1.0)
        )
    near_cross = np.flatnonzero(
        (road_z > z_cross - cross_half - 5.4 - fz_)
        & (road_z < z_cross - cross_half - 1.0 + fz_)
        & (np.abs(road_x) < edge)
    )
    if near_cross.size:
        xn, zn, fxn, fzn = road_x[near_cross], road_z[near_cross], fx_[near_cross], fz_[near_cross]
        zebra_z = interval_coverage(zn, z_cross - cross_half - 4.5, z_cross - cross_half - 1.0, fzn)
        zebra = zebra_z * pulse_coverage(xn, 1.0, 0.0, 0.5, fxn)
        stop = interval_coverage(zn, z_cross - cross_half - 5.4, z_cross - cross_half - 5.0, fzn)
        stop = stop * interval_coverage(xn, -edge, 0.0, fxn)
        paint[near_cross] = np.maximum(paint[near_cross] * (1.0 - zebra_z), np.maximum(zebra, stop))
    road = road * (1.0 - paint[:, None]) + (WHITE_PAINT * (0.9 + 0.1 * asphalt[:, None])) * paint[:, None]
    albedo[is_road] = road
    off_x, off_z = x[~is_road], z[~is_road]
    grass = bank["grass"].sample(off_x, off_z, texture_footprint[~is_road])
    albedo[~is_road] = np.float32([0.3, 0.4, 0.17]) * grass[:, None]
    classes = np.where(is_road, ROAD, TERRAIN).astype(np.int32)
    return albedo, classes


def shade_sky(directions: np.ndarray, lighting: dict[str, object]) -> np.ndarray:
    """Colour of world directions (N, 3) at infinity: gradient plus clouds on a distant plane."""
    horizon = np.asarray(lighting["sky_horizon"], dtype=np.float32)
    zenith = np.asarray(lighting["sky_zenith"], dtype=np.float32)
    norm = np.linalg.norm(directions, axis=1)
    up = np.clip(directions[:, 1] / norm, 0.0, 1.0)
    weight = np.sqrt(up)[:, None]
    colour = horizon[None, :] * (1.0 - weight) + zenith[None, :] * weight
    safe_up = np.maximum(directions[:, 1] / norm, 0.03)
    u = directions[:, 0] / norm / safe_up * 0.35
    v = directions[:, 2] / norm / safe_up * 0.35
    footprint = np.full(u.shape, 0.002, dtype=np.float32) / safe_up**2
    noise = texture_bank()["clouds"].sample(u, v, footprint)
    cover = float(lighting["cloud_cover"])  # type: ignore[arg-type]
    cloud = np.clip((noise - 1.0 - (1.0 - 2 * cover)) * 1.5, 0.0, 1.0) * np.clip(up * 6.0, 0.0, 1.0)
    cloud_colour = np.float32([0.95, 0.95, 0.96]) * (0.85 + 0.15 * np.clip(noise - 1, 0, 1))[:, None]
    return (colour * (1.0 - cloud[:, None]) + cloud_colour * cloud[:, None]).astype(np.float32)
