"""Typed configuration of the simulator (config/sim.yaml), loaded with cups_ros.core.config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cups_ros.core.camera import CameraModel
from cups_ros.core.config import ConfigError, load_config


@dataclass(frozen=True)
class RigConfig:
    """Rectified stereo rig; defaults are Cityscapes geometry at 1024 wide (fx 2262 at 2048, B 0.209 m)."""

    width: int = 1024
    height: int = 512
    fx: float = 1131.0
    baseline: float = 0.209
    mount_height: float = 1.4
    fps: float = 10.0

    def camera_model(self) -> CameraModel:
        return CameraModel(
            fx=self.fx,
            fy=self.fx,
            cx=(self.width - 1) / 2.0,
            cy=(self.height - 1) / 2.0,
            baseline=self.baseline,
            width=self.width,
            height=self.height,
        )


@dataclass(frozen=True)
class SensorConfig:
    """Image formation after the noise-free render: exposure, vignetting, optics blur, noise."""

    noise_sigma: float = 1.5
    shot_noise: float = 0.04
    exposure_jitter: float = 0.06
    stereo_gain_difference: float = 0.05
    vignetting: float = 0.25
    blur_sigma: float = 0.6


@dataclass(frozen=True)
class HardCaseConfig:
    """Knobs for cases known to break stereo/flow/segmentation."""

    textureless_wall_probability: float = 0.1
    thin_poles: int = 4
    far_objects: int = 3


@dataclass(frozen=True)
class SplitConfig:
    sequences: int
    frames: int
    towns: list[str]


def _default_splits() -> dict[str, SplitConfig]:
    towns = ["oldtown", "suburb", "downtown"]
    return {
        "train": SplitConfig(sequences=20, frames=30, towns=towns),
        "val": SplitConfig(sequences=4, frames=30, towns=towns),
        "test": SplitConfig(sequences=4, frames=30, towns=[*towns, "dusk"]),
        "sample": SplitConfig(sequences=1, frames=20, towns=["oldtown"]),
    }


@dataclass(frozen=True)
class SimConfig:
    """Everything a sequence depends on besides its seed and town."""

    rig: RigConfig = field(default_factory=RigConfig)
    sensor: SensorConfig = field(default_factory=SensorConfig)
    hard_cases: HardCaseConfig = field(default_factory=HardCaseConfig)
    splits: dict[str, SplitConfig] = field(default_factory=_default_splits)
    max_depth: float = 300.0
    traffic_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.rig.width < 16 or self.rig.height < 16:
            raise ConfigError(f"rig: image {self.rig.width}x{self.rig.height} is too small")
        if self.rig.fps <= 0:
            raise ConfigError(f"rig.fps must be positive, got {self.rig.fps}")
        for name, split in self.splits.items():
            if split.sequences < 0 or split.frames < 1:
                raise ConfigError(f"splits.{name}: needs sequences >= 0 and frames >= 1")

    def with_resolution(self, width: int, height: int) -> SimConfig:
        """The same rig at another image size (field of view kept)."""
        from dataclasses import replace

        rig = replace(self.rig, width=width, height=height, fx=self.rig.fx * width / self.rig.width)
        return replace(self, rig=rig)


def load_sim_config(path: str | Path | None = None) -> SimConfig:
    """Defaults when path is None, else the YAML file (plain or ROS parameter form)."""
    if path is None:
        return SimConfig()
    return load_config(SimConfig, path)
