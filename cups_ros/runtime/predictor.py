"""RGB frames -> panoptic predictions at the frames' own size, through any inference engine.

preprocess (ImageNet normalisation) -> resize to the engine's input size -> engine.infer -> the shared
post-processing -> PanopticPrediction at the original size, with the time of each stage.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from cups_ros.features.preprocessing import preprocess
from cups_ros.model.network import NetworkOutputs
from cups_ros.model.postprocess import PanopticPrediction, PostProcessConfig, postprocess
from cups_ros.runtime.engines import InferenceEngine


def resize_images(images: Tensor, size: tuple[int, int]) -> Tensor:
    """B x 3 x H x W to ``size`` (bilinear, antialiased when shrinking), the resize of every runtime.

    The same resize as cups_ros.features.resize_to_patch_multiple, so the deployed network sees
    frames as training saw them.
    """
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)


@dataclasses.dataclass
class StageTimings:
    """Wall time of each stage of one predict call, in milliseconds."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclasses.dataclass
class PredictorResult:
    predictions: list[PanopticPrediction]
    """One per input frame, at the frame's size."""
    timings: StageTimings
    outputs: NetworkOutputs
    """The engine's raw outputs (for parity checks and self-training)."""

    @property
    def prediction(self) -> PanopticPrediction:
        return self.predictions[0]


class Predictor:
    """Engine + shared post-processing; classes come from the engine (NetworkConfig or ONNX metadata)."""

    def __init__(self, engine: InferenceEngine, postprocess_config: PostProcessConfig | None = None) -> None:
        self.engine = engine
        self.postprocess_config = postprocess_config or PostProcessConfig()
        self.thing_classes = list(engine.network_config.thing_classes)
        self.class_names = engine.network_config.names

    @property
    def input_size(self) -> tuple[int, int]:
        return self.engine.input_size

    def prepare(self, images: np.ndarray | Tensor) -> Tensor:
        """HxWx3 or BxHxWx3 uint8 RGB -> normalised B x 3 x h x w at the engine's input size."""
        return resize_images(preprocess(images), self.input_size)

    def predict(self, images: np.ndarray | Tensor) -> PredictorResult:
        """One frame (HxWx3) or a batch of same-size frames (BxHxWx3), uint8 RGB."""
        start = time.perf_counter()
        original_size = (int(images.shape[-3]), int(images.shape[-2]))
        prepared = self.prepare(images)
        preprocessed = time.perf_counter()
        outputs = self.engine.infer(prepared)
        inferred = time.perf_counter()
        predictions = postprocess(
            outputs, self.thing_classes, self.input_size, original_size, self.postprocess_config
        )
        finished = time.perf_counter()
        timings = StageTimings(
            preprocess_ms=(preprocessed - start) * 1e3,
            inference_ms=(inferred - preprocessed) * 1e3,
            postprocess_ms=(finished - inferred) * 1e3,
        )
        return PredictorResult(predictions, timings, outputs)

    __call__ = predict


def differing_pixels(first: PanopticPrediction, second: PanopticPrediction) -> int:
    """Pixels whose panoptic id differs (0 for identical maps)."""
    return int(np.count_nonzero(first.panoptic != second.panoptic))


def predictions_equal(first: PanopticPrediction, second: PanopticPrediction) -> bool:
    """Same panoptic map, semantic map and instance classes (what parity checks compare)."""
    return (
        np.array_equal(first.panoptic, second.panoptic)
        and np.array_equal(first.semantic, second.semantic)
        and [instance.class_id for instance in first.instances]
        == [instance.class_id for instance in second.instances]
    )


def max_abs_differences(first: NetworkOutputs, second: NetworkOutputs) -> dict[str, float]:
    """Largest absolute difference per output (same shapes required)."""
    differences = {}
    for name, left, right in zip(first._fields, first, second, strict=True):
        if left.shape != right.shape:
            raise ValueError(f"output {name}: shapes {tuple(left.shape)} and {tuple(right.shape)} differ")
        differences[name] = float((left.detach().float().cpu() - right.detach().float().cpu()).abs().max())
    return differences
