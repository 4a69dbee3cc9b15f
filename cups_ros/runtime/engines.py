"""Inference engines: the network run by torch, onnxruntime or TensorRT behind one interface.

Every engine takes normalised images B x 3 x H x W (float32, at its input size) and returns the raw
head outputs as torch tensors, which the one shared post-processing turns into panoptic maps; so the
runtimes can be swapped (and compared) without touching anything downstream.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from cups_ros.core.config import ConfigError, from_dict
from cups_ros.model.config import NetworkConfig
from cups_ros.model.model_file import load_model
from cups_ros.model.network import OUTPUT_NAMES, NetworkOutputs, PanopticTrackingNet
from cups_ros.model.postprocess import outputs_from_numpy
from cups_ros.runtime.export import INPUT_NAME, OnnxModelError, check_input_size, read_onnx_metadata
from cups_ros.runtime.tensorrt import (
    TensorRTSettings,
    TensorRTUnavailableError,
    ensure_engine,
    import_tensorrt,
    read_sidecar,
    sidecar_path_for,
)

Backend = Literal["torch", "onnxruntime", "tensorrt"]
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
ACCELERATED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

_log = logging.getLogger(__name__)


class InferenceEngine(abc.ABC):
    """Normalised images -> NetworkOutputs; ``network_config`` tells the classes and thing classes."""

    name: str
    input_size: tuple[int, int]
    """(height, width) the engine runs at (the Predictor resizes to it)."""
    network_config: NetworkConfig

    @abc.abstractmethod
    def infer(self, images: np.ndarray | Tensor) -> NetworkOutputs:
        """B x 3 x H x W float32 at ``input_size`` -> raw head outputs (torch tensors, any device)."""

    def close(self) -> None:
        """Release sessions and device memory (engines are also freed when garbage collected)."""
        return None

    def __enter__(self) -> InferenceEngine:
        return self

    def __exit__(self, *exception: object) -> None:
        self.close()

    def _check_images(self, images: np.ndarray | Tensor, any_size: bool = False) -> None:
        shape = tuple(images.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"{self.name}: expected B x 3 x H x W images, got shape {shape}")
        if not any_size and shape[2:] != tuple(self.input_size):
            raise ValueError(
                f"{self.name}: runs at {self.input_size[0]}x{self.input_size[1]}, got images of "
                f"{shape[2]}x{shape[3]} (the Predictor resizes; or export this size)"
            )


class TorchEngine(InferenceEngine):
    """The PyTorch network itself (the reference the exported runtimes are checked against)."""

    def __init__(
        self,
        network: PanopticTrackingNet,
        device: str | torch.device | None = None,
        input_size: tuple[int, int] | None = None,
    ) -> None:
        """device: None keeps the network where it is, otherwise it is moved there; input_size: the
        size the Predictor resizes to (None: the configured one; any multiple of 14 runs)."""
        self.network = network.eval() if device is None else network.to(device).eval()
        self.device = next(self.network.parameters()).device
        self.input_size = input_size or (network.config.input_height, network.config.input_width)
        check_input_size(self.input_size)
        self.network_config = dataclasses.replace(
            network.config, input_height=self.input_size[0], input_width=self.input_size[1]
        )
        self.name = f"torch-{self.device.type}"

    def infer(self, images: np.ndarray | Tensor) -> NetworkOutputs:
        """Any multiple-of-14 size works here; outputs stay on the network's device."""
        self._check_images(images, any_size=True)
        with torch.no_grad():  # not inference_mode: callers may update the outputs in place
            outputs = self.network(torch.as_tensor(images, dtype=torch.float32).to(self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # so timings measure the work, not its launch
        return NetworkOutputs(*outputs)


def select_providers(
    providers: str | list[str] | None, onnx_path: Path, fp16: bool = False
) -> list[str | tuple[str, dict[str, Any]]]:
    """onnxruntime providers: None or 'cpu': CPU only; 'auto': TensorRT and CUDA where installed
    (TensorRT with its engine cache beside the ONNX file), then CPU; a list: those, if available."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if providers is None or providers == "cpu":
        return ["CPUExecutionProvider"]
    if providers == "auto":
        chosen: list[str | tuple[str, dict[str, Any]]] = []
        if "TensorrtExecutionProvider" in available:
            cache = onnx_path.parent / "onnxruntime_tensorrt_cache"
            options = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
            chosen.append(("TensorrtExecutionProvider", {**options, "trt_fp16_enable": fp16}))
        if "CUDAExecutionProvider" in available:
            chosen.append("CUDAExecutionProvider")
        return [*chosen, "CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [providers]
    missing = [provider for provider in providers if provider not in available]
    if missing:
        raise ValueError(
            f"onnxruntime providers {missing} are not available here (available: {available}); "
            "install onnxruntime-gpu for CUDA / TensorRT, or use providers='auto'"
        )
    return list(providers)


class OnnxRuntimeEngine(InferenceEngine):
    """An exported ONNX file in onnxruntime (CPU here; CUDA / TensorRT providers on GPU machines)."""

    def __init__(
        self,
        path: str | Path,
        providers: str | list[str] | None = None,
        threads: int | None = None,
        fp16: bool = False,
    ) -> None:
        """threads: intra-op threads (None: onnxruntime's default, all cores); fp16: TensorRT provider."""
        import onnxruntime

        self.path = Path(path)
        self.metadata = read_onnx_metadata(self.path)
        self.network_config = self.metadata.network_config
        self.input_size = self.metadata.input_size
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=select_providers(providers, self.path, fp16)
            )
        except Exception as error:  # onnxruntime raises its own pybind exception types
            raise OnnxModelError(f"onnxruntime cannot load ONNX file {self.path}: {error}") from error
        names = tuple(output.name for output in self.session.get_outputs())
        if set(names) != set(OUTPUT_NAMES) or self.session.get_inputs()[0].name != INPUT_NAME:
            raise OnnxModelError(f"ONNX file {self.path} has outputs {names}, expected {OUTPUT_NAMES}")
        self.providers = self.session.get_providers()
        self.name = f"onnxruntime-{self.providers[0].removesuffix('ExecutionProvider').lower()}"
        _log.info("onnxruntime session for %s on %s", self.path, self.providers)

    def infer(self, images: np.ndarray | Tensor) -> NetworkOutputs:
        self._check_images(images)
        if isinstance(images, Tensor):
            images = images.detach().cpu().numpy()
        feed = {INPUT_NAME: np.ascontiguousarray(images, dtype=np.float32)}
        return outputs_from_numpy(self.session.run(list(OUTPUT_NAMES), feed))

    def close(self) -> None:
        self.__dict__.pop("session", None)


class TensorRTEngine(InferenceEngine):
    """A serialized TensorRT 10 engine, run on torch CUDA tensors (no pycuda / cuda-python needed)."""

    def __init__(
        self, engine_path: str | Path, device_index: int = 0, network_config: NetworkConfig | None = None
    ) -> None:
        """network_config: None reads it from the engine's sidecar (written by ensure_engine)."""
        self.engine_path = Path(engine_path)
        trt = import_tensorrt()
        if not torch.cuda.is_available():
            raise TensorRTUnavailableError(f"TensorRT engine {self.engine_path} needs a CUDA device")
        if not self.engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine {self.engine_path} does not exist")
        if network_config is None:
            network_config = _sidecar_network_config(self.engine_path)
        self.network_config = network_config
        self.device = torch.device("cuda", device_index)
        self._logger = trt.Logger(trt.Logger.WARNING)
        with torch.cuda.device(self.device):
            self._runtime = trt.Runtime(self._logger)
            self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
            if self._engine is None:
                raise RuntimeError(
                    f"TensorRT cannot load engine {self.engine_path} (built for another TensorRT version "
                    "or GPU?): rebuild it from the ONNX file"
                )
            self._context = self._engine.create_execution_context()
        names = {self._engine.get_tensor_name(index) for index in range(self._engine.num_io_tensors)}
        if not {INPUT_NAME, *OUTPUT_NAMES} <= names:
            raise RuntimeError(f"TensorRT engine {self.engine_path} has tensors {sorted(names)}")
        self._dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self._output_dtypes = {
            name: self._dtypes[self._engine.get_tensor_dtype(name)] for name in OUTPUT_NAMES
        }
        shape = tuple(self._engine.get_tensor_shape(INPUT_NAME))
        self.input_size = (int(shape[2]), int(shape[3]))
        self.name = "tensorrt"

    def infer(self, images: np.ndarray | Tensor) -> NetworkOutputs:
        self._check_images(images)
        tensor = torch.as_tensor(images).to(self.device, torch.float32).contiguous()
        with torch.cuda.device(self.device):
            self._context.set_input_shape(INPUT_NAME, tuple(tensor.shape))
            self._context.set_tensor_address(INPUT_NAME, tensor.data_ptr())
            outputs = []
            for name in OUTPUT_NAMES:
                shape = tuple(self._context.get_tensor_shape(name))
                output = torch.empty(shape, dtype=self._output_dtypes[name], device=self.device)
                self._context.set_tensor_address(name, output.data_ptr())
                outputs.append(output)
            stream = torch.cuda.current_stream(self.device)
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT engine {self.engine_path} failed to run")
            stream.synchronize()
        return NetworkOutputs(*(output.float() for output in outputs))

    def close(self) -> None:
        for name in ("_context", "_engine", "_runtime"):
            self.__dict__.pop(name, None)


def _sidecar_network_config(engine_path: Path) -> NetworkConfig:
    sidecar = read_sidecar(sidecar_path_for(engine_path))
    if sidecar is None or "network_config" not in sidecar:
        raise ValueError(
            f"TensorRT engine {engine_path} has no readable sidecar {sidecar_path_for(engine_path).name} "
            "with the network config: build it with ensure_engine or pass network_config"
        )
    try:
        return from_dict(NetworkConfig, sidecar["network_config"])
    except ConfigError as error:
        raise ValueError(f"sidecar of TensorRT engine {engine_path}: {error}") from error


def open_engine(
    source: PanopticTrackingNet | str | Path,
    backend: Backend = "torch",
    *,
    device: str | None = None,
    providers: str | list[str] | None = None,
    threads: int | None = None,
    tensorrt_settings: TensorRTSettings | None = None,
) -> InferenceEngine:
    """An engine for a network or a file.

    torch: a PanopticTrackingNet or a model file (.pt); onnxruntime: an exported .onnx file;
    tensorrt: a .engine file, or an .onnx file whose cached engine is built on first use.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
    if isinstance(source, PanopticTrackingNet):
        if backend != "torch":
            raise ValueError(
                f"backend {backend} runs exported files: export the network with export_onnx first"
            )
        return TorchEngine(source, device)
    path = Path(source)
    if backend == "torch":
        return TorchEngine(load_model(path, device or "cpu"))
    if backend == "onnxruntime":
        if path.suffix != ".onnx":
            raise ValueError(f"the onnxruntime backend needs an .onnx file, got {path}")
        return OnnxRuntimeEngine(path, providers, threads)
    settings = tensorrt_settings or TensorRTSettings()
    if path.suffix == ".onnx":
        path = ensure_engine(path, settings).engine_path
    return TensorRTEngine(path, settings.device_index)
