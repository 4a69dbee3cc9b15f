"""DINO / DINOv2 vision transformer in plain torch.

Parameter names follow the official DINOv2 code (``patch_embed.proj``, ``blocks.N.attn.qkv``,
``blocks.N.ls1.gamma``, ``pos_embed``, ``norm``) so official checkpoints load without renaming, and the
position embedding is interpolated exactly as the official code does, so they give the official features.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn


@dataclasses.dataclass(frozen=True)
class VitArchitecture:
    """Everything needed to build the network before its weights are known."""

    patch_size: int = 14
    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_hidden_dim: int = 1536
    pos_embed_grid: int = 37
    """Side of the square patch grid the position embedding was trained for (37 = 518 px / 14)."""
    num_register_tokens: int = 0
    layer_scale: bool = True
    """DINOv2 scales each residual branch by a learned vector; DINO v1 does not."""
    interpolate_offset: float = 0.1
    """Official DINO/DINOv2 pass ``scale_factor=(grid + offset) / M``; 0 passes the target size (HF)."""
    interpolate_antialias: bool = False
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")


DINOV2_VITS14 = VitArchitecture()


@dataclasses.dataclass
class BackboneFeatures:
    """Output of one forward pass; h, w = image height and width divided by the patch size."""

    patch_tokens: Tensor
    """B x h x w x D, after the final layer norm."""
    cls_token: Tensor
    """B x D, after the final layer norm."""
    cls_attention: Tensor | None = None
    """B x heads x h x w: the last block's softmax attention from the CLS token to each patch."""


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens with one strided convolution."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention; fused SDPA unless the attention weights are asked for."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (embed_dim // num_heads) ** -0.5
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, tokens: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        batch, count, dim = tokens.shape
        qkv = self.qkv(tokens).reshape(batch, count, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attention = None
        if return_attention:
            attention = ((query * self.scale) @ key.transpose(-2, -1)).softmax(dim=-1)
            mixed = attention @ value
        else:
            mixed = F.scaled_dot_product_attention(query, key, value)
        return self.proj(mixed.transpose(1, 2).reshape(batch, count, dim)), attention


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(tokens)))


class Block(nn.Module):
    """Pre-norm transformer block (DINOv2 with LayerScale, DINO v1 without)."""

    def __init__(self, architecture: VitArchitecture) -> None:
        super().__init__()
        dim = architecture.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=architecture.layer_norm_eps)
        self.attn = Attention(dim, architecture.num_heads)
        self.ls1: nn.Module = LayerScale(dim) if architecture.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=architecture.layer_norm_eps)
        self.mlp = Mlp(dim, architecture.mlp_hidden_dim)
        self.ls2: nn.Module = LayerScale(dim) if architecture.layer_scale else nn.Identity()

    def forward(self, tokens: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        mixed, attention = self.attn(self.norm1(tokens), return_attention)
        tokens = tokens + self.ls1(mixed)
        tokens = tokens + self.ls2(self.mlp(self.norm2(tokens)))
        return tokens, attention


class DinoVisionTransformer(nn.Module):
    """ViT backbone returning normalised patch tokens at any input size that is a multiple of the patch."""

    def __init__(self, architecture: VitArchitecture = DINOV2_VITS14) -> None:
        super().__init__()
        self.architecture = architecture
        dim = architecture.embed_dim
        self.patch_size = architecture.patch_size
        self.embed_dim = dim
        self.num_heads = architecture.num_heads
        self.patch_embed = PatchEmbed(architecture.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + architecture.pos_embed_grid**2, dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, architecture.num_register_tokens, dim))
            if architecture.num_register_tokens
            else None
        )
        self.blocks = nn.ModuleList(Block(architecture) for _ in range(architecture.depth))
        self.norm = nn.LayerNorm(dim, eps=architecture.layer_norm_eps)

    def interpolate_pos_encoding(
        self, grid_height: int, grid_width: int, image_height: int, image_width: int
    ) -> Tensor:
        """Position embedding for a grid_height x grid_width patch grid, as the official code computes it."""
        trained_count = self.pos_embed.shape[1] - 1
        if grid_height * grid_width == trained_count and image_height == image_width:
            return self.pos_embed
        pos_embed = self.pos_embed.float()
        side = int(math.sqrt(trained_count))
        patch_pos_embed = pos_embed[:, 1:].reshape(1, side, side, self.embed_dim).permute(0, 3, 1, 2)
        offset = self.architecture.interpolate_offset
        if offset:
            # The official kludge: scale factors (not sizes) slightly above the exact ratio.
            size_or_scale: dict = {
                "scale_factor": (float(grid_height + offset) / side, float(grid_width + offset) / side)
            }
        else:
            size_or_scale = {"size": (grid_height, grid_width)}
        patch_pos_embed = F.interpolate(
            patch_pos_embed,
            mode="bicubic",
            antialias=self.architecture.interpolate_antialias,
            **size_or_scale,
        )
        if patch_pos_embed.shape[-2:] != (grid_height, grid_width):
            raise RuntimeError(f"position embedding interpolated to {tuple(patch_pos_embed.shape[-2:])}")
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dim)
        return torch.cat((pos_embed[:, :1], patch_pos_embed), dim=1).to(self.pos_embed.dtype)

    def prepare_tokens(self, images: Tensor) -> Tensor:
        """CLS + (registers) + patch tokens with position embedding, in the official order."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected B x 3 x H x W images, got shape {tuple(images.shape)}")
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"image size {height}x{width} is not a multiple of the patch size {self.patch_size}: "
                "use cups_ros.features.resize_to_patch_multiple or pad_to_patch_multiple"
            )
        tokens = self.patch_embed(images)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.interpolate_pos_encoding(
            height // self.patch_size, width // self.patch_size, height, width
        )
        if self.register_tokens is not None:
            registers = self.register_tokens.expand(tokens.shape[0], -1, -1)
            tokens = torch.cat((tokens[:, :1], registers, tokens[:, 1:]), dim=1)
        return tokens

    def forward_features(self, images: Tensor, return_cls_attention: bool = False) -> BackboneFeatures:
        """Patch tokens (B x h x w x D), CLS token and optionally the last block's CLS-to-patch attention."""
        grid_height, grid_width = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
        tokens = self.prepare_tokens(images)
        attention = None
        for index, block in enumerate(self.blocks):
            is_last = index == len(self.blocks) - 1
            tokens, attention = block(tokens, return_attention=return_cls_attention and is_last)
        tokens = self.norm(tokens)
        first_patch = 1 + (self.register_tokens.shape[1] if self.register_tokens is not None else 0)
        batch = tokens.shape[0]
        cls_attention = None
        if attention is not None:
            cls_attention = attention[:, :, 0, first_patch:].reshape(batch, -1, grid_height, grid_width)
        return BackboneFeatures(
            patch_tokens=tokens[:, first_patch:].reshape(batch, grid_height, grid_width, self.embed_dim),
            cls_token=tokens[:, 0],
            cls_attention=cls_attention,
        )

    def forward(self, images: Tensor) -> Tensor:
        """Patch tokens B x h x w x D (the usual thing a caller wants; see forward_features for more)."""
        return self.forward_features(images).patch_tokens
