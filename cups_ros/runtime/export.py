"""The network as ONNX files (one per fixed input size, dynamic batch) that every runtime can open.

Each file carries what a runtime needs besides the weights in its ``metadata_props``: the network
config (classes, thing classes, names), the input size and the hash of the model it came from, so a
deployed ONNX file (or the TensorRT engine built from it) never needs the torch model file.

Exporter: torch 2.13's default, ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript).
It handles the ViT's bicubic position-embedding interpolation (traced at the fixed grid of each
size), keeps the batch dimension dynamic and gives static spatial output shapes, so the TorchScript
exporter (``dynamo=False``) is not needed.

Models over protobuf's 2 GB limit (or with ``external_data=True``) keep their weights in
``<name>.onnx.data`` beside the file; its sha256 is in the metadata, so a data file that does not
belong to its ONNX file is refused instead of silently giving other weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import onnx
import torch
from google.protobuf.message import DecodeError
from onnx.external_data_helper import (
    ExternalDataInfo,
    convert_model_to_external_data,
    uses_external_data,
    write_external_data_tensors,
)

from cups_ros.core.config import ConfigError, from_dict, to_dict
from cups_ros.core.files import atomic_path
from cups_ros.model.config import PATCH_SIZE, NetworkConfig
from cups_ros.model.network import OUTPUT_NAMES, PanopticTrackingNet

ONNX_FORMAT = "cups_ros.onnx/1"
INPUT_NAME = "images"
DEFAULT_OPSET = 18
EXTERNAL_DATA_THRESHOLD_BYTES = 1_800_000_000
"""Weights above this go to external data: protobuf refuses messages over 2 GiB (graph included)."""

METADATA_FORMAT = "cups_ros.format"
METADATA_NETWORK_CONFIG = "cups_ros.network_config"
METADATA_INPUT_SIZE = "cups_ros.input_size"
METADATA_OUTPUT_NAMES = "cups_ros.output_names"
METADATA_SOURCE_MODEL = "cups_ros.source_model_sha256"
METADATA_EXTERNAL_DATA = "cups_ros.external_data_sha256"

_log = logging.getLogger(__name__)


class OnnxModelError(ValueError):
    """An ONNX file that cannot be used; the message names the file and the reason."""


@dataclasses.dataclass(frozen=True)
class OnnxMetadata:
    """What a runtime reads from an exported file before it runs it."""

    path: Path
    network_config: NetworkConfig
    input_size: tuple[int, int]
    """(height, width) the file was exported for."""
    source_model_sha256: str
    opset: int
    external_data: tuple[Path, ...]
    """Files holding weights outside the ONNX file (empty when all weights are inside)."""

    @property
    def thing_classes(self) -> list[int]:
        return list(self.network_config.thing_classes)

    @property
    def class_names(self) -> list[str]:
        return self.network_config.names


def onnx_file_name(input_size: tuple[int, int]) -> str:
    height, width = input_size
    return f"model_{height}x{width}.onnx"


def parse_size(text: str) -> tuple[int, int]:
    """'280x560' -> (280, 560); both sides must be multiples of the patch size."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"input size {text!r} is not HEIGHTxWIDTH (for example 280x560)") from None
    check_input_size((height, width))
    return height, width


def check_input_size(size: tuple[int, int]) -> None:
    for side in size:
        if side < PATCH_SIZE or side % PATCH_SIZE:
            raise ValueError(f"input size {size[0]}x{size[1]}: both sides must be multiples of {PATCH_SIZE}")


def state_dict_sha256(network: torch.nn.Module) -> str:
    """A hash of the weights, the source hash of a network that has no model file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _export_program(network: PanopticTrackingNet, input_size: tuple[int, int], opset: int) -> onnx.ModelProto:
    """The ONNX graph for one fixed input size; batch 2 in the example so torch.export keeps it dynamic."""
    device = next(network.parameters()).device
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, *input_size, generator=generator).to(device)
    batch = torch.export.Dim("batch", min=1, max=1024)
    # Quieter: "torchvision is not installed" (we never use it) and the per-pass INFO lines.
    quieter = {
        "torch.onnx._internal.exporter._registration": logging.ERROR,
        "onnx_ir": logging.WARNING,
        "onnxscript": logging.WARNING,
    }
    levels = {name: logging.getLogger(name).level for name in quieter}
    for name, level in quieter.items():
        logging.getLogger(name).setLevel(level)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
            program = torch.onnx.export(
                network,
                (example,),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=opset,
                dynamo=True,
                dynamic_shapes={"images": {0: batch}},
                optimize=True,
                verbose=False,
            )
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    return program.model_proto


def _set_metadata(proto: onnx.ModelProto, values: dict[str, str]) -> None:
    kept = [entry for entry in proto.metadata_props if entry.key not in values]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in values.items():
        proto.metadata_props.add(key=key, value=value)


def _initializer_bytes(proto: onnx.ModelProto) -> int:
    return sum(len(tensor.raw_data) for tensor in proto.graph.initializer)


def _hash_files(paths: Iterable[Path]) -> str:
    """sha256 over the files' contents in order (not their names: a renamed file is the same model)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())
    return digest.hexdigest()


def export_onnx(
    network: PanopticTrackingNet,
    path: str | Path,
    input_sizes: Sequence[tuple[int, int]] | None = None,
    opset: int = DEFAULT_OPSET,
    external_data: bool | None = None,
    source_model_sha256: str | None = None,
) -> list[Path]:
    """One checked ONNX file per input size, written atomically; returns their paths.

    path: a folder (files named ``model_HxW.onnx``) or, with a single size, a ``.onnx`` file.
    input_sizes: (height, width) pairs, multiples of 14; None: the network's configured size.
    external_data: None: only when the weights exceed the protobuf limit.
    source_model_sha256: the model file's hash for the metadata; None: a hash of the weights.
    """
    config = network.config
    sizes = (
        [tuple(size) for size in input_sizes] if input_sizes else [(config.input_height, config.input_width)]
    )
    for size in sizes:
        check_input_size(size)
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"input sizes repeat: {sizes}")
    path = Path(path)
    if path.suffix == ".onnx":
        if len(sizes) != 1:
            raise ValueError(f"{path} is one file but {len(sizes)} input sizes were asked for: give a folder")
        targets = [path]
    else:
        targets = [path / onnx_file_name(size) for size in sizes]
    source_model_sha256 = source_model_sha256 or state_dict_sha256(network)
    was_training = network.training
    network.eval()
    written = []
    try:
        for size, target in zip(sizes, targets, strict=True):
            proto = _export_program(network, size, opset)
            network_config = dataclasses.replace(config, input_height=size[0], input_width=size[1])
            metadata = {
                METADATA_FORMAT: ONNX_FORMAT,
                METADATA_NETWORK_CONFIG: json.dumps(to_dict(network_config), sort_keys=True),
                METADATA_INPUT_SIZE: f"{size[0]}x{size[1]}",
                METADATA_OUTPUT_NAMES: ",".join(OUTPUT_NAMES),
                METADATA_SOURCE_MODEL: source_model_sha256,
            }
            use_external = (
                _initializer_bytes(proto) > EXTERNAL_DATA_THRESHOLD_BYTES
                if external_data is None
                else external_data
            )
            _write_onnx(proto, target, metadata, use_external)
            written.append(target)
            _log.info("exported %s", target)
    finally:
        network.train(was_training)
    return written


def _write_onnx(proto: onnx.ModelProto, target: Path, metadata: dict[str, str], external: bool) -> None:
    """Write, check and only then move into place (the data file first, then the ONNX file)."""
    data_target = target.with_name(target.name + ".data")
    with atomic_path(target) as temporary:
        if external:
            data_name = data_target.name
            convert_model_to_external_data(
                proto, all_tensors_to_one_file=True, location=data_name, size_threshold=1024
            )
            write_external_data_tensors(proto, str(temporary.parent))
            metadata = {**metadata, METADATA_EXTERNAL_DATA: _hash_files([temporary.parent / data_name])}
        _set_metadata(proto, metadata)
        onnx.save_model(proto, temporary)
        check_onnx_file(temporary)
        if external:
            data = temporary.parent / data_target.name
            data.chmod(temporary.stat().st_mode & 0o777)  # onnx creates it 0600; match the ONNX file
            os.replace(data, data_target)
    if not external and data_target.exists():
        data_target.unlink()  # left by an earlier export of the same name with external data


def external_data_files(proto: onnx.ModelProto, folder: Path) -> tuple[Path, ...]:
    """The data files the graph's tensors point to (initializers and constant attributes)."""
    tensors = list(proto.graph.initializer)
    for node in proto.graph.node:
        for attribute in node.attribute:
            tensors += [attribute.t] if attribute.HasField("t") else []
            tensors += list(attribute.tensors)
    locations = {ExternalDataInfo(tensor).location for tensor in tensors if uses_external_data(tensor)}
    return tuple(folder / location for location in sorted(locations))


def _load_without_data(path: Path) -> onnx.ModelProto:
    if not path.is_file():
        raise OnnxModelError(f"ONNX file {path} does not exist")
    try:
        return onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as error:
        raise OnnxModelError(f"ONNX file {path} is corrupt or not an ONNX model: {error}") from error


def read_onnx_metadata(path: str | Path, verify_external_data: bool = True) -> OnnxMetadata:
    """The metadata of a file written by export_onnx; raises OnnxModelError naming the file.

    verify_external_data: also compare the data files' sha256 with the one recorded at export.
    """
    path = Path(path)
    proto = _load_without_data(path)
    values = {entry.key: entry.value for entry in proto.metadata_props}
    if values.get(METADATA_FORMAT) != ONNX_FORMAT:
        raise OnnxModelError(
            f"ONNX file {path} is not a cups_ros export ({METADATA_FORMAT} is "
            f"{values.get(METADATA_FORMAT)!r}, expected {ONNX_FORMAT!r}): export it with training/export.py"
        )
    try:
        network_config = from_dict(NetworkConfig, json.loads(values[METADATA_NETWORK_CONFIG]))
        input_size = parse_size(values[METADATA_INPUT_SIZE])
        output_names = tuple(values[METADATA_OUTPUT_NAMES].split(","))
    except (KeyError, ValueError, ConfigError, TypeError) as error:
        raise OnnxModelError(f"ONNX file {path} has invalid cups_ros metadata: {error}") from error
    if output_names != OUTPUT_NAMES:
        raise OnnxModelError(
            f"ONNX file {path} has outputs {output_names}, this version needs {OUTPUT_NAMES}"
        )
    data_files = external_data_files(proto, path.parent)
    missing = [str(data) for data in data_files if not data.is_file()]
    if missing:
        raise OnnxModelError(f"ONNX file {path} keeps its weights in {', '.join(missing)}, which is missing")
    recorded = values.get(METADATA_EXTERNAL_DATA)
    if verify_external_data and recorded and _hash_files(data_files) != recorded:
        raise OnnxModelError(
            f"external data {', '.join(map(str, data_files))} does not belong to ONNX file {path} "
            "(sha256 differs from the one recorded at export): export again"
        )
    opset = next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), 0)
    return OnnxMetadata(
        path=path,
        network_config=network_config,
        input_size=input_size,
        source_model_sha256=values.get(METADATA_SOURCE_MODEL, ""),
        opset=opset,
        external_data=data_files,
    )


def check_onnx_file(path: str | Path) -> OnnxMetadata:
    """onnx.checker (path-based, so external data and > 2 GB files work) plus our metadata."""
    path = Path(path)
    metadata = read_onnx_metadata(path)
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError, OSError) as error:
        raise OnnxModelError(f"ONNX file {path} fails onnx.checker: {error}") from error
    return metadata


def onnx_file_sha256(path: str | Path) -> str:
    """sha256 of the ONNX file and every external data file it uses (what a TensorRT engine depends on)."""
    path = Path(path)
    proto = _load_without_data(path)
    data_files = external_data_files(proto, path.parent)
    missing = [str(data) for data in data_files if not data.is_file()]
    if missing:
        raise OnnxModelError(f"ONNX file {path} keeps its weights in {', '.join(missing)}, which is missing")
    return _hash_files([path, *data_files])
