"""Named town styles (textures, building heights, vegetation, traffic, time of day) for domain shift."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TownStyle:
    """Everything that differs between towns; numbers are ranges sampled per sequence."""

    name: str
    facade_textures: tuple[str, ...]
    facade_tints: tuple[tuple[int, int, int], ...]
    building_height: tuple[float, float]
    building_gap_probability: float
    vegetation_density: float  # trees per 10 m of sidewalk
    terrain_verge: bool  # grass strip between sidewalk and buildings
    cars_per_100m: float
    parked_per_100m: float
    pedestrians_per_100m: float
    cyclists: int
    sun_elevation_deg: float
    sun_azimuth_deg: float
    sun_strength: float
    ambient: float
    sky_zenith: tuple[int, int, int]
    sky_horizon: tuple[int, int, int]
    light_tint: tuple[float, float, float]
    lanes_per_direction: int
    sidewalk_width: float


TOWNS: dict[str, TownStyle] = {
    "oldtown": TownStyle(
        name="oldtown",
        facade_textures=("brick", "plaster", "brick", "stone"),
        facade_tints=((182, 120, 95), (215, 200, 170), (200, 170, 140), (170, 165, 160), (225, 215, 195)),
        building_height=(9.0, 18.0),
        building_gap_probability=0.15,
        vegetation_density=0.25,
        terrain_verge=False,
        cars_per_100m=5.0,
        parked_per_100m=9.0,
        pedestrians_per_100m=10.0,
        cyclists=2,
        sun_elevation_deg=40.0,
        sun_azimuth_deg=-35.0,
        sun_strength=0.75,
        ambient=0.5,
        sky_zenith=(95, 140, 205),
        sky_horizon=(200, 215, 230),
        light_tint=(1.0, 0.98, 0.94),
        lanes_per_direction=1,
        sidewalk_width=3.5,
    ),
    "suburb": TownStyle(
        name="suburb",
        facade_textures=("plaster", "brick", "wood"),
        facade_tints=((230, 225, 210), (190, 150, 120), (200, 210, 215), (235, 220, 180)),
        building_height=(5.0, 9.0),
        building_gap_probability=0.5,
        vegetation_density=0.6,
        terrain_verge=True,
        cars_per_100m=2.5,
        parked_per_100m=4.0,
        pedestrians_per_100m=4.0,
        cyclists=2,
        sun_elevation_deg=55.0,
        sun_azimuth_deg=30.0,
        sun_strength=0.8,
        ambient=0.45,
        sky_zenith=(80, 130, 210),
        sky_horizon=(190, 210, 235),
        light_tint=(1.0, 1.0, 0.97),
        lanes_per_direction=1,
        sidewalk_width=2.5,
    ),
    "downtown": TownStyle(
        name="downtown",
        facade_textures=("concrete", "stone", "glass", "plaster"),
        facade_tints=((160, 160, 165), (190, 185, 175), (120, 135, 150), (210, 205, 195)),
        building_height=(18.0, 45.0),
        building_gap_probability=0.05,
        vegetation_density=0.12,
        terrain_verge=False,
        cars_per_100m=9.0,
        parked_per_100m=10.0,
        pedestrians_per_100m=16.0,
        cyclists=3,
        sun_elevation_deg=30.0,
        sun_azimuth_deg=60.0,
        sun_strength=0.6,
        ambient=0.55,
        sky_zenith=(150, 165, 185),
        sky_horizon=(210, 212, 215),
        light_tint=(0.97, 0.99, 1.0),
        lanes_per_direction=2,
        sidewalk_width=4.0,
    ),
    "dusk": TownStyle(
        name="dusk",
        facade_textures=("brick", "plaster", "stone"),
        facade_tints=((182, 120, 95), (215, 200, 170), (170, 165, 160)),
        building_height=(8.0, 20.0),
        building_gap_probability=0.2,
        vegetation_density=0.3,
        terrain_verge=False,
        cars_per_100m=5.0,
        parked_per_100m=8.0,
        pedestrians_per_100m=6.0,
        cyclists=1,
        sun_elevation_deg=8.0,
        sun_azimuth_deg=-70.0,
        sun_strength=0.55,
        ambient=0.3,
        sky_zenith=(60, 70, 120),
        sky_horizon=(235, 160, 110),
        light_tint=(1.0, 0.8, 0.62),
        lanes_per_direction=1,
        sidewalk_width=3.0,
    ),
}


def town(name: str) -> TownStyle:
    try:
        return TOWNS[name]
    except KeyError:
        raise ValueError(f"unknown town {name!r} (known: {', '.join(TOWNS)})") from None
