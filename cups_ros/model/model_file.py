"""The model file: one torch file with the network's weights and everything needed to rebuild it.

Written atomically; a file that is truncated, not a model, or from another format version is
refused with a ModelFileError naming the file and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from cups_ros.core.config import ConfigError, from_dict, to_dict
from cups_ros.core.files import write_bytes_atomic
from cups_ros.features.vit import VitArchitecture
from cups_ros.model.config import NetworkConfig
from cups_ros.model.network import PanopticTrackingNet

MODEL_FORMAT = "cups_ros.panoptic_tracking_net/1"


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the reason."""


def save_model(
    network: PanopticTrackingNet, path: str | Path, metadata: dict[str, Any] | None = None
) -> None:
    """Weights (float32, on CPU), network config, backbone architecture and free-form metadata."""
    state = {
        "format": MODEL_FORMAT,
        "network_config": to_dict(network.config),
        "architecture": dataclasses.asdict(network.backbone.architecture),
        "state_dict": {key: value.detach().float().cpu() for key, value in network.state_dict().items()},
        "metadata": metadata or {},
    }
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The raw contents, checked for format; raises ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds (IndexError on text, OSError, ...)
        raise ModelFileError(f"model file {path} is corrupt or not a torch file: {error}") from error
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise ModelFileError(f"model file {path} is not a {MODEL_FORMAT} file (found {found!r})")
    return state


def load_model(path: str | Path, device: str = "cpu") -> PanopticTrackingNet:
    """The network of a model file in eval mode; raises ModelFileError."""
    state = read_model_file(path)
    try:
        config = from_dict(NetworkConfig, state["network_config"])
        architecture = VitArchitecture(**state["architecture"])
    except (ConfigError, TypeError, KeyError) as error:
        raise ModelFileError(f"model file {path} has an invalid configuration: {error}") from error
    with torch.device("meta"):
        network = PanopticTrackingNet(config, architecture=architecture)
    try:
        network.load_state_dict(state["state_dict"], strict=True, assign=True)
    except (RuntimeError, KeyError) as error:
        raise ModelFileError(f"model file {path} does not fit its network: {error}") from error
    network.set_backbone_trainable()
    return network.to(device).eval()


def model_metadata(path: str | Path) -> dict[str, Any]:
    return dict(read_model_file(path).get("metadata", {}))
