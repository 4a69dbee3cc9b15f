"""Images in the form the backbone was trained on: ImageNet-normalised, sides a multiple of the patch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess(rgb_uint8: np.ndarray | Tensor) -> Tensor:
    """HxWx3 or BxHxWx3 uint8 RGB -> Bx3xHxW float32 normalised with the ImageNet mean and std, on
    the images' device."""
    images = torch.as_tensor(rgb_uint8)
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 RGB images, got {images.dtype}")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected HxWx3 or BxHxWx3 RGB images, got shape {tuple(images.shape)}")
    images = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return ((images - mean) / std).contiguous()


def patch_multiple_size(height: int, width: int, patch_size: int = 14, scale: float = 1.0) -> tuple[int, int]:
    """The scaled size rounded to the nearest multiple of the patch size (at least one patch)."""
    return (
        max(patch_size, round(height * scale / patch_size) * patch_size),
        max(patch_size, round(width * scale / patch_size) * patch_size),
    )


def resize_to_patch_multiple(images: Tensor, patch_size: int = 14, scale: float = 1.0) -> Tensor:
    """Bx3xHxW resized (bilinear, antialiased) so both sides are multiples of the patch size."""
    size = patch_multiple_size(images.shape[-2], images.shape[-1], patch_size, scale)
    if size == tuple(images.shape[-2:]):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


def pad_to_patch_multiple(
    images: Tensor, patch_size: int = 14, value: float = 0.0
) -> tuple[Tensor, tuple[int, int]]:
    """Bx3xHxW padded at the bottom and right; returns the padding (rows, columns) to crop back.

    On normalised images ``value=0`` is the ImageNet mean colour.
    """
    rows = -images.shape[-2] % patch_size
    columns = -images.shape[-1] % patch_size
    if rows or columns:
        images = F.pad(images, (0, columns, 0, rows), value=value)
    return images, (rows, columns)
