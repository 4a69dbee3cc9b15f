"""TensorRT engines built from our ONNX files and cached beside them (the Autoware / Isaac ROS way).

An engine only runs on the GPU model, TensorRT version and settings it was built for, and building
takes minutes on a vehicle computer, so it is built once and reused while nothing it depends on
changed. The cache key hashes everything it depends on: the ONNX bytes (external data included),
the TensorRT version, the GPU name and compute capability, the precision, the input shapes and the
workspace limit. Files beside ``model_280x560.onnx``::

    model_280x560.<key>.engine         the serialized engine (written atomically)
    model_280x560.<key>.engine.json    sidecar: the key's fields, the engine's sha256, the network config

The sidecar is written after the engine and names the engine's sha256, so an engine is reused only
with a sidecar that matches the key and the engine's bytes; a killed build, a truncated engine or a
hand-edited sidecar leads to a rebuild. Stale engines: those built from other ONNX bytes (the file at
this path was re-exported) are removed, since nothing can use them again; engines for the same ONNX
bytes with another precision, GPU or TensorRT version are kept (a shared folder may serve several
machines, and fp16 and fp32 may both be in use).

The cache logic here is plain Python (tested without TensorRT by injecting the build function and
the device information); only ``build_serialized_engine`` and ``cuda_device_info`` touch TensorRT
and CUDA, and ``tensorrt`` is imported only when they run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from cups_ros.core.config import to_dict
from cups_ros.core.files import write_bytes_atomic, write_json_atomic
from cups_ros.runtime.export import INPUT_NAME, onnx_file_sha256, read_onnx_metadata

CACHE_FORMAT = "cups_ros.tensorrt_engine/1"
ENGINE_SUFFIX = ".engine"
SIDECAR_SUFFIX = ".json"
KEY_LENGTH = 16
"""Hex digits of the key's sha256 in file names (64 bits: no collisions among a folder's engines)."""

_log = logging.getLogger(__name__)


class TensorRTUnavailableError(ImportError):
    """The ``tensorrt`` package (or a CUDA device) is missing."""


class TensorRTBuildError(RuntimeError):
    """TensorRT could not parse the ONNX file or build an engine from it."""


def import_tensorrt() -> ModuleType:
    """The tensorrt module, or an error that says what to install and what to use instead."""
    try:
        import tensorrt
    except ImportError as error:
        raise TensorRTUnavailableError(
            "TensorRT engines need the Python package 'tensorrt' (TensorRT 10, from NVIDIA's package "
            f"index, on a machine with an NVIDIA GPU), which cannot be imported: {error}. "
            "Use the onnxruntime backend instead (its CUDA / TensorRT providers where installed)."
        ) from error
    return tensorrt


@dataclasses.dataclass(frozen=True)
class TensorRTSettings:
    """How to build an engine (each field is part of the cache key or picks the device)."""

    precision: Literal["fp32", "fp16"] = "fp32"
    workspace_bytes: int = 1 << 30
    """Builder workspace limit (MemoryPoolType.WORKSPACE); 1 GiB suits Orin and desktop GPUs."""
    max_batch: int = 1
    """The engine's optimisation profile covers batch 1..max_batch (tuned for batch 1)."""
    device_index: int = 0

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16"):
            raise ValueError(f"TensorRT precision must be fp32 or fp16, got {self.precision!r}")
        if self.workspace_bytes < 1 << 20:
            raise ValueError(f"TensorRT workspace must be at least 1 MiB, got {self.workspace_bytes} bytes")
        if self.max_batch < 1:
            raise ValueError(f"TensorRT max_batch must be >= 1, got {self.max_batch}")


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """The GPU an engine is built for (engines are specific to the compute capability and model)."""

    name: str
    compute_capability: str
    """'8.7' (Orin), '9.0' (H100), ..."""


@dataclasses.dataclass(frozen=True)
class EngineCacheKey:
    """Everything a serialized engine depends on."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    workspace_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class CachedEngine:
    """Where the engine for a key is, and whether this call had to build it."""

    engine_path: Path
    sidecar_path: Path
    key: EngineCacheKey
    built: bool


BuildFunction = Callable[[Path, EngineCacheKey, TensorRTSettings], bytes]
"""(ONNX path, key, settings) -> serialized engine bytes."""


def cache_key(
    onnx_path: str | Path, settings: TensorRTSettings, tensorrt_version: str, device: DeviceInfo
) -> EngineCacheKey:
    """The key of the engine for this ONNX file (hashed with its external data) and these settings."""
    onnx_path = Path(onnx_path)
    height, width = read_onnx_metadata(onnx_path, verify_external_data=False).input_size
    return EngineCacheKey(
        onnx_sha256=onnx_file_sha256(onnx_path),
        tensorrt_version=tensorrt_version,
        gpu_name=device.name,
        compute_capability=device.compute_capability,
        precision=settings.precision,
        min_shape=(1, 3, height, width),
        opt_shape=(1, 3, height, width),
        max_shape=(settings.max_batch, 3, height, width),
        workspace_bytes=settings.workspace_bytes,
    )


def engine_path_for(onnx_path: str | Path, key: EngineCacheKey) -> Path:
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.{key.digest[:KEY_LENGTH]}{ENGINE_SUFFIX}")


def sidecar_path_for(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + SIDECAR_SUFFIX)


def read_sidecar(sidecar_path: Path) -> dict[str, Any] | None:
    """The sidecar's contents, or None when it is missing, unreadable or of another format."""
    try:
        content = json.loads(sidecar_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict) or content.get("format") != CACHE_FORMAT:
        return None
    return content


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def is_valid_engine(engine_path: Path, key: EngineCacheKey) -> bool:
    """True when the engine exists and its sidecar names this key and the engine's exact bytes."""
    sidecar = read_sidecar(sidecar_path_for(engine_path))
    if sidecar is None or not engine_path.is_file():
        return False
    if sidecar.get("key") != key.as_dict():
        return False
    if sidecar.get("engine_bytes") != engine_path.stat().st_size:
        return False
    return sidecar.get("engine_sha256") == _file_sha256(engine_path)


def find_cached_engine(onnx_path: str | Path, key: EngineCacheKey) -> Path | None:
    engine_path = engine_path_for(onnx_path, key)
    return engine_path if is_valid_engine(engine_path, key) else None


@contextlib.contextmanager
def _build_lock(engine_path: Path) -> Iterator[None]:
    """One builder per engine at a time (two nodes starting together would both build otherwise)."""
    lock_path = engine_path.with_name(engine_path.name + ".lock")
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_engine(engine_path: Path) -> None:
    for path in (
        engine_path,
        sidecar_path_for(engine_path),
        engine_path.with_name(engine_path.name + ".lock"),
    ):
        path.unlink(missing_ok=True)


def _remove_leftovers(engine_path: Path) -> None:
    """Temporary folders of killed builds of this engine (atomic_path's ``.<name>.*.tmp``)."""
    for name in (engine_path.name, sidecar_path_for(engine_path).name):
        for leftover in engine_path.parent.glob(f".{name}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)


def remove_stale_engines(onnx_path: str | Path, key: EngineCacheKey) -> list[Path]:
    """Engines beside the ONNX file built from other ONNX bytes (or without a readable sidecar)."""
    onnx_path = Path(onnx_path)
    keep = engine_path_for(onnx_path, key)
    removed = []
    for engine_path in sorted(onnx_path.parent.glob(f"{onnx_path.stem}.*{ENGINE_SUFFIX}")):
        if engine_path == keep:
            continue
        sidecar = read_sidecar(sidecar_path_for(engine_path))
        if sidecar is not None and sidecar.get("key", {}).get("onnx_sha256") == key.onnx_sha256:
            continue  # same model, other precision / GPU / TensorRT: still usable elsewhere
        _remove_engine(engine_path)
        removed.append(engine_path)
        _log.info("removed stale TensorRT engine %s", engine_path)
    return removed


def ensure_engine(
    onnx_path: str | Path,
    settings: TensorRTSettings | None = None,
    *,
    build: BuildFunction | None = None,
    device: DeviceInfo | None = None,
    tensorrt_version: str | None = None,
    force_rebuild: bool = False,
) -> CachedEngine:
    """The cached engine for this ONNX file and settings, built (and stored) when there is none.

    build, device and tensorrt_version default to TensorRT and the CUDA device of the settings;
    tests and tools inject them.
    """
    onnx_path = Path(onnx_path)
    settings = settings or TensorRTSettings()
    metadata = read_onnx_metadata(onnx_path)
    if tensorrt_version is None:
        tensorrt_version = str(import_tensorrt().__version__)
    device = device or cuda_device_info(settings.device_index)
    build = build or build_serialized_engine
    key = cache_key(onnx_path, settings, tensorrt_version, device)
    engine_path = engine_path_for(onnx_path, key)
    sidecar_path = sidecar_path_for(engine_path)
    with _build_lock(engine_path):
        if not force_rebuild and is_valid_engine(engine_path, key):
            _log.info("reusing TensorRT engine %s", engine_path)
            return CachedEngine(engine_path, sidecar_path, key, built=False)
        remove_stale_engines(onnx_path, key)
        _remove_leftovers(engine_path)
        sidecar_path.unlink(missing_ok=True)  # invalidate first: no old sidecar beside a new engine
        _log.info("building TensorRT engine %s (%s, %s)", engine_path, settings.precision, device.name)
        start = time.perf_counter()
        serialized = build(onnx_path, key, settings)
        if not serialized:
            raise TensorRTBuildError(f"building a TensorRT engine from {onnx_path} returned nothing")
        write_bytes_atomic(engine_path, serialized)
        write_json_atomic(
            sidecar_path,
            {
                "format": CACHE_FORMAT,
                "key": key.as_dict(),
                "cache_key": key.digest,
                "engine_sha256": hashlib.sha256(serialized).hexdigest(),
                "engine_bytes": len(serialized),
                "onnx_file": onnx_path.name,
                "network_config": to_dict(metadata.network_config),
                "input_size": list(metadata.input_size),
                "source_model_sha256": metadata.source_model_sha256,
                "build_seconds": round(time.perf_counter() - start, 3),
            },
        )
    return CachedEngine(engine_path, sidecar_path, key, built=True)


# --- the parts that need TensorRT and a GPU -------------------------------------------------------


def cuda_device_info(device_index: int = 0) -> DeviceInfo:
    """Name and compute capability of a CUDA device (through torch, which every runtime has)."""
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("TensorRT engines need a CUDA device; torch sees none")
    major, minor = torch.cuda.get_device_capability(device_index)
    return DeviceInfo(torch.cuda.get_device_name(device_index), f"{major}.{minor}")


def build_serialized_engine(onnx_path: Path, key: EngineCacheKey, settings: TensorRTSettings) -> bytes:
    """TensorRT 10: ONNX parser -> network -> builder config (workspace, FP16) -> serialized engine."""
    trt = import_tensorrt()
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    with torch.cuda.device(settings.device_index):
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        # parse_from_file (not parse) so external data beside the ONNX file is found.
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(index)) for index in range(parser.num_errors))
            raise TensorRTBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, key.workspace_bytes)
        if key.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT_NAME, key.min_shape, key.opt_shape, key.max_shape)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    return bytes(serialized)
