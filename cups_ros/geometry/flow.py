"""Optical flow t -> t+1 and t+1 -> t with a pluggable estimator (OpenCV DIS by default), and the
forward-backward test that tells which forward vectors can be trusted.

Flow is HxWx2 float32 (dx, dy) in pixels: pixel x of the first image moves to x + flow(x).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from cups_ros.geometry.config import FlowConfig
from cups_ros.geometry.sampling import inside_image, remap_zero_outside, sampling_maps
from cups_ros.geometry.timing import timed

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


@runtime_checkable
class OpticalFlowEstimator(Protocol):
    """Dense flow from one HxWx3 uint8 RGB image to another, HxWx2 float32 (dx, dy) px."""

    def estimate(self, image_from: np.ndarray, image_to: np.ndarray) -> np.ndarray: ...


class DisFlowEstimator:
    """OpenCV Dense Inverse Search on grey images (DIS works on one channel)."""

    def __init__(self, config: FlowConfig | None = None) -> None:
        config = config or FlowConfig()
        self.config = config
        self._dis = cv2.DISOpticalFlow.create(_DIS_PRESETS[config.preset])
        if config.finest_scale:
            self._dis.setFinestScale(config.finest_scale)
        if config.patch_size:
            self._dis.setPatchSize(config.patch_size)
        if config.patch_stride:
            self._dis.setPatchStride(config.patch_stride)
        if config.gradient_descent_iterations:
            self._dis.setGradientDescentIterations(config.gradient_descent_iterations)
        if config.variational_refinement_iterations >= 0:
            self._dis.setVariationalRefinementIterations(config.variational_refinement_iterations)

    def estimate(self, image_from: np.ndarray, image_to: np.ndarray) -> np.ndarray:
        return self.estimate_grey(grey(image_from), grey(image_to))

    def estimate_grey(self, grey_from: np.ndarray, grey_to: np.ndarray) -> np.ndarray:
        """Same as estimate, for callers that already hold the grey images (each is used twice)."""
        return self._dis.calc(grey_from, grey_to, None)


def grey(image: np.ndarray) -> np.ndarray:
    """HxW uint8 luminance of an HxWx3 uint8 RGB image (passes HxW through)."""
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def flow_target_inside(flow: np.ndarray) -> np.ndarray:
    """True where x + flow(x) lands inside the image (pixel centres 0..W-1, 0..H-1)."""
    return inside_image(*sampling_maps(flow))


def warp_by_flow(image: np.ndarray, flow: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """image read at x + flow(x) (backward warping); 0 where the target leaves the image."""
    return remap_zero_outside(image, *sampling_maps(flow), interpolation)


def _consistency_and_inside(
    flow_forward: np.ndarray, flow_backward: np.ndarray, alpha: float, beta: float
) -> tuple[np.ndarray, np.ndarray]:
    map_x, map_y = sampling_maps(flow_forward)
    forward_x, forward_y = cv2.split(flow_forward)
    backward_x, backward_y = cv2.split(remap_zero_outside(flow_backward, map_x, map_y))
    # Per-channel arithmetic: numpy reductions over a last axis of size 2 are several times slower.
    round_trip = (forward_x + backward_x) ** 2 + (forward_y + backward_y) ** 2
    magnitudes = forward_x**2 + forward_y**2 + backward_x**2 + backward_y**2
    return round_trip < alpha * magnitudes + beta, inside_image(map_x, map_y)


def forward_backward_consistent(
    flow_forward: np.ndarray, flow_backward: np.ndarray, alpha: float, beta: float
) -> np.ndarray:
    """UnFlow's test: |f + b(x+f)|^2 < alpha (|f|^2 + |b(x+f)|^2) + beta.

    Where x is occluded at t+1, b(x+f) belongs to the occluder and does not cancel f.
    Targets outside the image read b = 0 and are left to flow_target_inside.
    """
    return _consistency_and_inside(flow_forward, flow_backward, alpha, beta)[0]


@dataclass
class FlowResult:
    """Forward (t -> t+1) and backward (t+1 -> t) flow with their validity.

    valid_forward: consistent and landing inside the image; occlusion_forward: lands inside the image
    but fails the round trip (the usual occlusion estimate); out_of_frame_forward: leaves the image.
    """

    forward: np.ndarray
    backward: np.ndarray
    valid_forward: np.ndarray
    occlusion_forward: np.ndarray
    out_of_frame_forward: np.ndarray
    consistency_alpha: float
    consistency_beta: float
    timings: dict[str, float] = field(default_factory=dict)

    @cached_property
    def valid_backward(self) -> np.ndarray:
        """The same test for the backward flow, computed on first use (scene flow needs only forward)."""
        consistent, inside = _consistency_and_inside(
            self.backward, self.forward, self.consistency_alpha, self.consistency_beta
        )
        return consistent & inside


def compute_flow(
    image_t: np.ndarray,
    image_t1: np.ndarray,
    config: FlowConfig | None = None,
    estimator: OpticalFlowEstimator | None = None,
) -> FlowResult:
    """Forward and backward flow between two HxWx3 uint8 RGB images, with consistency masks."""
    config = config or FlowConfig()
    estimator = estimator or DisFlowEstimator(config)
    timings: dict[str, float] = {}
    if isinstance(estimator, DisFlowEstimator):
        with timed(timings, "grey"):
            grey_t, grey_t1 = grey(image_t), grey(image_t1)
        with timed(timings, "flow_forward"):
            forward = estimator.estimate_grey(grey_t, grey_t1)
        with timed(timings, "flow_backward"):
            backward = estimator.estimate_grey(grey_t1, grey_t)
    else:
        with timed(timings, "flow_forward"):
            forward = estimator.estimate(image_t, image_t1).astype(np.float32)
        with timed(timings, "flow_backward"):
            backward = estimator.estimate(image_t1, image_t).astype(np.float32)
    with timed(timings, "flow_consistency"):
        alpha, beta = config.consistency_alpha, config.consistency_beta
        consistent, inside = _consistency_and_inside(forward, backward, alpha, beta)
    return FlowResult(
        forward=forward,
        backward=backward,
        valid_forward=consistent & inside,
        occlusion_forward=inside & ~consistent,
        out_of_frame_forward=~inside,
        consistency_alpha=alpha,
        consistency_beta=beta,
        timings=timings,
    )
