"""Network configuration (config/network.yaml ``network``), validated once when loaded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from cups_ros.core.config import ConfigError
from cups_ros.features.backbone import FeatureBackboneConfig

PATCH_SIZE = 14


@dataclass
class NetworkConfig:
    """The panoptic-tracking network: a ViT-S/14 backbone, a simple feature pyramid and four heads."""

    num_classes: int = 27
    thing_classes: list[int] = field(default_factory=list)
    """Pseudo-classes that are things (from the pseudo-label dataset's thing_stuff.json)."""
    class_names: list[str] = field(default_factory=list)
    """Empty: c00..c{K-1} (DESIGN.md)."""
    input_height: int = 280
    input_width: int = 560
    """The deployed input size; both multiples of the patch size (14)."""
    pyramid_channels: int = 128
    head_channels: int = 64
    embedding_dim: int = 16
    backbone_trainable: Literal["frozen", "last_blocks", "full"] = "frozen"
    trainable_blocks: int = 2
    """With backbone_trainable: last_blocks, how many of the last transformer blocks train."""
    backbone: FeatureBackboneConfig = field(default_factory=FeatureBackboneConfig)

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.num_classes > 254:
            raise ConfigError(f"network.num_classes must lie in [1, 254], got {self.num_classes}")
        bad = [c for c in self.thing_classes if not 0 <= c < self.num_classes]
        if bad:
            raise ConfigError(f"network.thing_classes {bad} outside 0..{self.num_classes - 1}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise ConfigError(
                f"network.class_names has {len(self.class_names)} names for {self.num_classes} classes"
            )
        for name in ("input_height", "input_width"):
            value = getattr(self, name)
            if value < PATCH_SIZE or value % PATCH_SIZE:
                raise ConfigError(f"network.{name} must be a positive multiple of {PATCH_SIZE}, got {value}")
        for name in ("pyramid_channels", "head_channels", "embedding_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"network.{name} must be >= 1")
        if self.trainable_blocks < 0:
            raise ConfigError("network.trainable_blocks must be >= 0")

    @property
    def names(self) -> list[str]:
        return self.class_names or [f"c{index:02d}" for index in range(self.num_classes)]

    def with_classes(self, num_classes: int, thing_classes: list[int]) -> NetworkConfig:
        return dataclasses.replace(self, num_classes=num_classes, thing_classes=sorted(thing_classes))
