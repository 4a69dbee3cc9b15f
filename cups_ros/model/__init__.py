"""The panoptic-tracking network, its model file and the one post-processing every runtime shares."""

from cups_ros.model.config import NetworkConfig
from cups_ros.model.model_file import ModelFileError, load_model, model_metadata, read_model_file, save_model
from cups_ros.model.network import (
    OUTPUT_NAMES,
    OUTPUT_STRIDE,
    NetworkOutputs,
    PanopticTrackingNet,
    output_size,
)
from cups_ros.model.postprocess import (
    DetectedInstance,
    PanopticPrediction,
    PostProcessConfig,
    outputs_from_numpy,
    postprocess,
)

__all__ = [
    "OUTPUT_NAMES",
    "OUTPUT_STRIDE",
    "DetectedInstance",
    "ModelFileError",
    "NetworkConfig",
    "NetworkOutputs",
    "PanopticPrediction",
    "PanopticTrackingNet",
    "PostProcessConfig",
    "load_model",
    "model_metadata",
    "output_size",
    "outputs_from_numpy",
    "postprocess",
    "read_model_file",
    "save_model",
]
