"""Training configuration (config/train.yaml), validated once when loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cups_ros.core.config import ConfigError, load_config
from cups_ros.model.config import PATCH_SIZE, NetworkConfig
from cups_ros.model.losses import LossConfig
from cups_ros.model.postprocess import PostProcessConfig


@dataclass
class AugmentationConfig:
    crop_height: int = 280
    crop_width: int = 560
    """Training crops; multiples of 14 (the network's patch)."""
    min_scale: float = 0.8
    max_scale: float = 1.25
    """Resolution jitter: the frame is resized to scale x (crop size) before the random crop."""
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.03

    def __post_init__(self) -> None:
        for name in ("crop_height", "crop_width"):
            if getattr(self, name) % PATCH_SIZE or getattr(self, name) < PATCH_SIZE:
                raise ConfigError(f"augmentation.{name} must be a positive multiple of {PATCH_SIZE}")
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError("augmentation: need 0 < min_scale <= max_scale")


@dataclass
class CopyPasteConfig:
    """Self-enhanced copy-paste (CUPS): pseudo-label objects first, then the model's own."""

    enabled: bool = True
    min_objects: int = 1
    max_objects: int = 8
    min_scale: float = 0.25
    max_scale: float = 1.5
    own_predictions_after: int = 1000
    """Steps of pasting pseudo-label objects before the model's own confident predictions."""
    own_score: float = 0.75
    min_area: int = 64

    def __post_init__(self) -> None:
        if not 0 <= self.min_objects <= self.max_objects:
            raise ConfigError("copy_paste: need 0 <= min_objects <= max_objects")
        if not 0 < self.min_scale <= self.max_scale:
            raise ConfigError("copy_paste: need 0 < min_scale <= max_scale")


@dataclass
class TrainerConfig:
    """Lightning trainer settings: the same file runs on a CPU, one GPU or many (DDP)."""

    accelerator: Literal["cpu", "gpu", "cuda", "auto"] = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: Literal["auto", "ddp", "ddp_find_unused_parameters_true"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    num_workers: int = 2
    log_every_steps: int = 10
    checkpoint_every_steps: int = 100
    loggers: list[Literal["csv", "tensorboard"]] = field(default_factory=lambda: ["csv"])
    progress: bool = True


@dataclass
class BootstrapConfig:
    """Stage 2: training on the pseudo-labels (config/train.yaml ``bootstrap``)."""

    steps: int = 8000  # CUPS
    batch_size: int = 16  # per device; even (frames come in pairs of one pseudo-track window)
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    gradient_clip: float = 1.0
    warmup_steps: int = 100
    pair_gap: int = 2
    """Frames of a pair lie at most this far apart (the embedding loss's positives)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.batch_size % 2:
            raise ConfigError(f"bootstrap.batch_size must be even and >= 2, got {self.batch_size}")
        if self.steps < 1 or self.pair_gap < 1:
            raise ConfigError("bootstrap.steps and bootstrap.pair_gap must be >= 1")


@dataclass
class SelfTrainConfig:
    """Stage 3: self-training with an EMA teacher and TTA self-labels (CUPS), heads only."""

    rounds: int = 3
    steps_per_round: int = 500
    batch_size: int = 16
    learning_rate: float = 1e-5
    weight_decay: float = 1e-5
    gradient_clip: float = 1.0
    ema_momentum: float = 0.999
    tta_scales: list[float] = field(default_factory=lambda: [0.5, 0.75, 1.0])
    tta_flip: bool = True
    instance_score: float = 0.7
    instance_score_relative: bool = True
    """Keep an instance when its score >= instance_score x the best of its class in the image. CUPS's
    absolute 0.7 is for Mask R-CNN class scores; the bottom-up score (centre peak x class probability)
    sits far lower (bootstrap model on train frames: median 0.08, none >= 0.7), so an absolute 0.7
    would keep no instance and self-training would unlearn them."""
    semantic_factor: float = 0.5
    """A pixel keeps its self-label if its score > factor x its class's maximum in the image."""
    pair_gap: int = 2
    seed: int = 1

    def __post_init__(self) -> None:
        if not 0.0 < self.ema_momentum < 1.0:
            raise ConfigError("self_train.ema_momentum must lie in (0, 1)")
        if not self.tta_scales or min(self.tta_scales) <= 0:
            raise ConfigError("self_train.tta_scales must be positive")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ConfigError("self_train.batch_size must be even and >= 2")


@dataclass
class TrainConfig:
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    postprocess: PostProcessConfig = field(default_factory=PostProcessConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    copy_paste: CopyPasteConfig = field(default_factory=CopyPasteConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    self_train: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)


def load_train_config(path: str | Path | None) -> TrainConfig:
    return load_config(TrainConfig, path) if path else TrainConfig()
