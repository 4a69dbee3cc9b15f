"""Typed configuration of the geometry stage (config/geometry.yaml), loaded with cups_ros.core.config."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cups_ros.core.config import ConfigError, load_config

StereoMode = Literal["sgbm", "sgbm_3way", "hh", "hh4"]
DisPreset = Literal["ultrafast", "fast", "medium"]
Sampling = Literal["nearest", "bilinear"]


@dataclass(frozen=True)
class StereoConfig:
    """OpenCV StereoSGBM and the checks that turn its output into disparity we trust.

    The search range is scaled to the image width so one file serves every resolution: at the
    default 0.0625, 1024 px wide gives 64 px (Cityscapes rig: down to 3.7 m) and KITTI's 1242 px
    gives 80 px (down to 4.8 m), both nearer than the 5.5 m CUPS keeps.
    """

    num_disparities: int = 0  # 0: derived from the image width with max_disparity_fraction
    max_disparity_fraction: float = 0.0625
    block_size: int = 5
    p1_per_pixel: int = 8  # P1 = p1_per_pixel * channels * block_size**2 (OpenCV's recipe)
    p2_per_pixel: int = 32
    uniqueness_ratio: int = 10
    speckle_window_size: int = 100
    speckle_range: int = 2
    pre_filter_cap: int = 63
    mode: StereoMode = "sgbm_3way"
    grey: bool = True  # match grey images: faster and, on KITTI, fewer outliers than RGB
    pad_left_border: bool = True  # else SGBM leaves the first num_disparities columns empty
    left_right_check: bool = True
    left_right_max_difference: float = 1.0  # px between d_L(x) and d_R(x - d_L(x))
    remove_edges: bool = True
    edge_max_range: float = 2.0  # px of disparity spread allowed inside the window
    edge_radius: int = 2  # window (2r+1)^2 around each pixel

    def __post_init__(self) -> None:
        if self.num_disparities < 0 or self.num_disparities % 16:
            raise ConfigError(
                f"stereo.num_disparities must be 0 or a positive multiple of 16, got {self.num_disparities}"
            )
        if self.num_disparities == 0 and not 0 < self.max_disparity_fraction <= 1:
            raise ConfigError(
                f"stereo.max_disparity_fraction must lie in (0, 1], got {self.max_disparity_fraction}"
            )
        if self.block_size < 1 or self.block_size % 2 == 0:
            raise ConfigError(f"stereo.block_size must be odd and positive, got {self.block_size}")
        if self.left_right_max_difference < 0 or self.edge_max_range <= 0 or self.edge_radius < 0:
            raise ConfigError("stereo: left_right_max_difference >= 0, edge_max_range > 0, edge_radius >= 0")

    def disparity_range(self, width: int) -> int:
        """Number of disparities searched at this image width (a multiple of 16, as SGBM needs)."""
        if self.num_disparities:
            return self.num_disparities
        return max(16, math.ceil(self.max_disparity_fraction * width / 16) * 16)


@dataclass(frozen=True)
class FlowConfig:
    """OpenCV DIS optical flow and the forward-backward test (UnFlow, Meister et al. 2018).

    A pixel is consistent when |f + b(x+f)|^2 < alpha (|f|^2 + |b(x+f)|^2) + beta: a fixed
    tolerance for small motions plus one growing with the motion, UnFlow's 0.01 and 0.5 px^2.
    """

    preset: DisPreset = "medium"
    # 0 keeps the preset's value; set to trade speed for accuracy without a new preset.
    finest_scale: int = 0
    patch_size: int = 0
    patch_stride: int = 0
    gradient_descent_iterations: int = 0
    variational_refinement_iterations: int = -1  # -1 keeps the preset's
    consistency_alpha: float = 0.01
    consistency_beta: float = 0.5

    def __post_init__(self) -> None:
        for name in ("finest_scale", "patch_size", "patch_stride", "gradient_descent_iterations"):
            if getattr(self, name) < 0:
                raise ConfigError(f"flow.{name} must be >= 0 (0 keeps the preset's value)")
        if self.consistency_alpha < 0 or self.consistency_beta < 0:
            raise ConfigError("flow.consistency_alpha and flow.consistency_beta must be >= 0")


@dataclass(frozen=True)
class SceneFlowConfig:
    """Depth range kept (CUPS keeps 5.5..70 m: nearer is rarely matched, farther too noisy)."""

    min_depth: float = 5.5
    max_depth: float = 70.0
    sampling: Sampling = "bilinear"  # how frame t+1's points are read at the flow target

    def __post_init__(self) -> None:
        if not 0 < self.min_depth < self.max_depth:
            raise ConfigError(
                f"scene_flow: need 0 < min_depth < max_depth, got {self.min_depth}..{self.max_depth}"
            )


@dataclass(frozen=True)
class GeometryConfig:
    """Everything the geometry of a frame pair depends on."""

    stereo: StereoConfig = field(default_factory=StereoConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    scene_flow: SceneFlowConfig = field(default_factory=SceneFlowConfig)


def load_geometry_config(path: str | Path | None = None) -> GeometryConfig:
    """Defaults when path is None, else the YAML file (plain or ROS parameter form)."""
    if path is None:
        return GeometryConfig()
    return load_config(GeometryConfig, path)
