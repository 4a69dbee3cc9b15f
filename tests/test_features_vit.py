"""The plain-torch ViT on random weights: shapes, attention paths, official interpolation, preprocessing."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from cups_ros.features import (
    DINOV2_VITS14,
    IMAGENET_MEAN,
    DinoVisionTransformer,
    VitArchitecture,
    pad_to_patch_multiple,
    patch_multiple_size,
    preprocess,
    resize_to_patch_multiple,
)

SMALL = dataclasses.replace(DINOV2_VITS14, depth=2)


def random_model(architecture: VitArchitecture = SMALL, seed: int = 0) -> DinoVisionTransformer:
    torch.manual_seed(seed)
    model = DinoVisionTransformer(architecture).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    return model


def official_dinov2_interpolate_pos_encoding(
    pos_embed: torch.Tensor, npatch: int, w: int, h: int, patch_size: int, offset: float, antialias: bool
) -> torch.Tensor:
    """facebookresearch/dinov2 DinoVisionTransformer.interpolate_pos_encoding, transcribed (w = height)."""
    N = pos_embed.shape[1] - 1  # noqa: N806
    if npatch == N and w == h:
        return pos_embed
    pos_embed = pos_embed.float()
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0 = w // patch_size
    h0 = h // patch_size
    M = int(math.sqrt(N))  # noqa: N806
    kwargs: dict = {}
    if offset:
        kwargs["scale_factor"] = (float(w0 + offset) / M, float(h0 + offset) / M)
    else:
        kwargs["size"] = (w0, h0)
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, M, M, dim).permute(0, 3, 1, 2),
        mode="bicubic",
        antialias=antialias,
        **kwargs,
    )
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


@pytest.mark.parametrize(("offset", "antialias"), [(0.1, False), (0.0, False), (0.0, True)])
@pytest.mark.parametrize("size", [(224, 224), (224, 448), (518, 518), (518, 504), (462, 1246), (14, 28)])
def test_position_embedding_interpolation_is_the_official_one(
    offset: float, antialias: bool, size: tuple[int, int]
) -> None:
    """Official ViTs use offset 0.1; register ViTs size + antialias; Hugging Face size, no antialias."""
    architecture = dataclasses.replace(SMALL, interpolate_offset=offset, interpolate_antialias=antialias)
    model = random_model(architecture)
    height, width = size
    grid = (height // 14, width // 14)
    ours = model.interpolate_pos_encoding(*grid, height, width)
    reference = official_dinov2_interpolate_pos_encoding(
        model.pos_embed, grid[0] * grid[1], height, width, 14, offset, antialias
    )
    assert ours.shape == (1, 1 + grid[0] * grid[1], 384)
    torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_trained_square_size_uses_the_position_embedding_unchanged() -> None:
    model = random_model()
    assert model.interpolate_pos_encoding(37, 37, 518, 518) is model.pos_embed


def test_forward_features_shapes_at_a_non_square_size() -> None:
    model = random_model()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 224, 448), return_cls_attention=True)
    assert features.patch_tokens.shape == (2, 16, 32, 384)
    assert features.cls_token.shape == (2, 384)
    assert features.cls_attention is not None and features.cls_attention.shape == (2, 6, 16, 32)
    assert model.forward_features(torch.randn(1, 3, 28, 28)).cls_attention is None


def test_explicit_attention_path_equals_the_fused_one_and_is_a_distribution() -> None:
    model = random_model()
    images = torch.randn(1, 3, 140, 196)
    with torch.no_grad():
        fused = model.forward_features(images)
        explicit = model.forward_features(images, return_cls_attention=True)
        tokens = model.prepare_tokens(images)
        for block in model.blocks[:-1]:
            tokens, _ = block(tokens)
        _, attention = model.blocks[-1].attn(model.blocks[-1].norm1(tokens), return_attention=True)
    torch.testing.assert_close(explicit.patch_tokens, fused.patch_tokens, rtol=0, atol=1e-4)
    torch.testing.assert_close(attention.sum(-1), torch.ones(1, 6, 1 + 140 // 14 * 196 // 14))
    torch.testing.assert_close(explicit.cls_attention.flatten(2), attention[:, :, 0, 1:])


def test_register_tokens_sit_between_cls_and_patches_and_are_not_returned() -> None:
    model = random_model(dataclasses.replace(SMALL, num_register_tokens=4))
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 56, 84), return_cls_attention=True)
        tokens = model.prepare_tokens(torch.randn(1, 3, 56, 84))
    assert tokens.shape[1] == 1 + 4 + 4 * 6
    assert features.patch_tokens.shape == (1, 4, 6, 384)
    assert features.cls_attention.shape == (1, 6, 4, 6)


def test_sizes_that_are_not_patch_multiples_are_refused_with_the_fix() -> None:
    with pytest.raises(ValueError, match="resize_to_patch_multiple"):
        random_model()(torch.randn(1, 3, 100, 100))


def test_preprocess_normalises_with_imagenet_statistics() -> None:
    mean_colour = np.round(np.array(IMAGENET_MEAN) * 255).astype(np.uint8)
    batch = preprocess(np.broadcast_to(mean_colour, (2, 5, 7, 3)).copy())
    assert batch.shape == (2, 3, 5, 7) and batch.dtype == torch.float32
    assert batch.abs().max() < 0.01
    assert preprocess(torch.zeros(4, 6, 3, dtype=torch.uint8)).shape == (1, 3, 4, 6)
    with pytest.raises(TypeError):
        preprocess(np.zeros((4, 6, 3), np.float32))


def test_resize_and_pad_give_patch_multiples() -> None:
    images = torch.randn(1, 3, 375, 1242)
    assert patch_multiple_size(375, 1242) == (378, 1246)
    assert resize_to_patch_multiple(images).shape == (1, 3, 378, 1246)
    assert resize_to_patch_multiple(images, scale=0.6).shape == (1, 3, 224, 742)
    padded, (rows, columns) = pad_to_patch_multiple(images)
    assert padded.shape == (1, 3, 378, 1246) and (rows, columns) == (3, 4)
    torch.testing.assert_close(padded[..., :375, :1242], images)
    assert padded[..., 375:, :].abs().max() == 0
