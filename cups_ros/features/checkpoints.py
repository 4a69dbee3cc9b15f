"""Official DINO (v1) and DINOv2 checkpoints: reading, key normalisation, architecture inference.

Accepted layouts: the released backbone files (``dinov2_vits14_pretrain.pth``,
``dinov2_vits14_reg4_pretrain.pth``, ``dino_deitsmall16_pretrain.pth``, ``dino_deitsmall8_pretrain.pth``,
other ViT sizes with the standard MLP) and training checkpoints that wrap them (``teacher`` / ``model``
/ ``state_dict`` entries, ``module.`` / ``backbone.`` prefixes, chunked ``blocks.C.N.`` blocks).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cups_ros.features.vit import DinoVisionTransformer, VitArchitecture

HEAD_DIM = 64
"""Every DINO/DINOv2 ViT (S, B, L, g) uses 64 channels per head; the weights do not record the count."""

OFFICIAL_INTERPOLATE_OFFSET = 0.1
CONTAINER_KEYS = ("teacher", "model", "state_dict", "student")
STRIPPED_PREFIXES = ("module.", "backbone.", "encoder.")
IGNORED_KEY_PREFIXES = ("mask_token", "head.", "dino_head.", "ibot_head.")
"""Present in official files but unused for features (masked-token training, projection heads)."""
_CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")
_BLOCK_INDEX = re.compile(r"^blocks\.(\d+)\.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit; the message names the file and the keys."""


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """Loads a checkpoint file (tensors only, no pickled code) and returns its backbone state dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch file: {error}") from error
    try:
        return normalise_keys(content)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from None


def normalise_keys(content: Any) -> dict[str, Tensor]:
    """Unwraps training containers and renames keys to the official released-backbone layout."""
    if not isinstance(content, dict):
        raise CheckpointError(f"expected a state dict, found {type(content).__name__}")
    for container in CONTAINER_KEYS:
        if container in content and isinstance(content[container], dict):
            content = content[container]
            break
    if any(isinstance(key, str) and key.startswith("teacher.") for key in content):
        content = {k.removeprefix("teacher."): v for k, v in content.items() if k.startswith("teacher.")}
    state_dict: dict[str, Tensor] = {}
    for key, value in content.items():
        if not isinstance(value, Tensor):
            continue
        for prefix in STRIPPED_PREFIXES:
            key = key.removeprefix(prefix)
        state_dict[key] = value
    if any(_CHUNKED_BLOCK.match(key) for key in state_dict):
        state_dict = {_CHUNKED_BLOCK.sub(r"blocks.\1.", key): value for key, value in state_dict.items()}
    if "patch_embed.proj.weight" not in state_dict:
        sample = ", ".join(sorted(state_dict)[:8])
        raise CheckpointError(f"no patch_embed.proj.weight: not a DINO/DINOv2 ViT (keys: {sample}, ...)")
    return state_dict


def infer_architecture(state_dict: dict[str, Tensor], num_heads: int | None = None) -> VitArchitecture:
    """The ViT the weights were trained in, from tensor shapes (the head count from HEAD_DIM)."""
    if any(".mlp.w12." in key for key in state_dict):
        raise CheckpointError("SwiGLU feed-forward blocks (ViT-g) are not supported; use a ViT-S/B/L")
    embed_dim, channels, patch_size, patch_width = state_dict["patch_embed.proj.weight"].shape
    if channels != 3 or patch_size != patch_width:
        raise CheckpointError(
            f"patch_embed.proj.weight has shape {tuple(state_dict['patch_embed.proj.weight'].shape)}"
        )
    for required in ("pos_embed", "cls_token", "blocks.0.mlp.fc1.weight"):
        if required not in state_dict:
            raise CheckpointError(f"missing key {required}")
    block_indices = {int(m.group(1)) for key in state_dict if (m := _BLOCK_INDEX.match(key))}
    position_count = state_dict["pos_embed"].shape[1] - 1
    grid = round(position_count**0.5)
    if grid * grid != position_count:
        raise CheckpointError(f"pos_embed holds {position_count} patch positions, not a square grid")
    registers = state_dict.get("register_tokens")
    return VitArchitecture(
        patch_size=int(patch_size),
        embed_dim=int(embed_dim),
        depth=max(block_indices) + 1,
        num_heads=num_heads or int(embed_dim) // HEAD_DIM,
        mlp_hidden_dim=int(state_dict["blocks.0.mlp.fc1.weight"].shape[0]),
        pos_embed_grid=grid,
        num_register_tokens=int(registers.shape[1]) if registers is not None else 0,
        layer_scale="blocks.0.ls1.gamma" in state_dict,
        # The official hub builds register models with a size-based, antialiased interpolation.
        interpolate_offset=0.0 if registers is not None else OFFICIAL_INTERPOLATE_OFFSET,
        interpolate_antialias=registers is not None,
    )


def empty_backbone(architecture: VitArchitecture) -> DinoVisionTransformer:
    """The ViT without allocated or initialised weights (load_weights assigns them): fast to build."""
    with torch.device("meta"):
        return DinoVisionTransformer(architecture)


def load_weights(model: DinoVisionTransformer, state_dict: dict[str, Tensor], source: str) -> None:
    """Strict load (tensors assigned, not copied) naming every missing, unexpected or mis-shaped key.

    Keys an official file holds but features never use (mask_token, projection heads) are ignored.
    """
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith(IGNORED_KEY_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} != {tuple(expected[key].shape)}"
        for key in sorted(set(expected) & set(state_dict))
        if state_dict[key].shape != expected[key].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched)}")
    if problems:
        raise CheckpointError(f"{source} does not fit the ViT: " + " | ".join(problems))
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True, assign=True)


def backbone_from_state_dict(
    state_dict: dict[str, Tensor], source: str, num_heads: int | None = None
) -> DinoVisionTransformer:
    """Builds the ViT the official-layout weights describe and loads them."""
    try:
        architecture = infer_architecture(state_dict, num_heads)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None
    model = empty_backbone(architecture)
    load_weights(model, state_dict, source)
    return model.eval()


def load_checkpoint_backbone(path: str | Path, num_heads: int | None = None) -> DinoVisionTransformer:
    """An official DINO / DINOv2 checkpoint file as a ready (eval-mode) backbone."""
    return backbone_from_state_dict(read_checkpoint(path), f"checkpoint {path}", num_heads)


def official_dinov2_state_dict(model: DinoVisionTransformer) -> dict[str, Tensor]:
    """The model's weights as an official DINOv2 release file holds them (with its unused mask_token)."""
    state_dict = {key: value.detach().clone() for key, value in model.state_dict().items()}
    if model.architecture.layer_scale:
        state_dict["mask_token"] = torch.zeros(1, model.embed_dim)
    return state_dict
