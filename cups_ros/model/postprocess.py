"""Head outputs -> panoptic prediction: centre peaks, offset grouping, majority class, panoptic merge.

The one post-processing of the project: every runtime (torch, onnxruntime, TensorRT) hands its raw
outputs here, so their panoptic maps agree whenever their logits do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, MAX_INSTANCE_ID
from cups_ros.model.network import NetworkOutputs


@dataclass
class PostProcessConfig:
    """Thresholds of the grouping (config/network.yaml ``postprocess``)."""

    centre_threshold: float = 0.06
    nms_kernel: int = 25
    """Centre peaks: local maxima in this window (pixels of the network input). 0.06 / 25 (was 0.1 /
    13) chosen on 30 train-split frames with the 800-step bootstrap model: smaller windows split
    objects into several centres (thing PQ 1.4 -> 3.1 there; the val split was not used)."""
    top_k: int = 64
    min_instance_area: int = 32
    """Pixels of the network input; smaller instances become void."""
    min_score: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.centre_threshold < 1.0:
            raise ValueError(f"postprocess.centre_threshold must lie in [0, 1), got {self.centre_threshold}")
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"postprocess.nms_kernel must be odd and >= 1, got {self.nms_kernel}")
        if not 1 <= self.top_k <= MAX_INSTANCE_ID:
            raise ValueError(f"postprocess.top_k must lie in [1, {MAX_INSTANCE_ID}], got {self.top_k}")


@dataclass
class DetectedInstance:
    """One instance of a frame, in the coordinates of the output size."""

    instance_id: int
    class_id: int
    score: float
    area: int
    box: tuple[int, int, int, int]
    """x_min, y_min, x_max, y_max (inclusive) in output pixels."""
    centre: tuple[float, float]
    embedding: np.ndarray = field(repr=False)


@dataclass
class PanopticPrediction:
    """Per-frame output: class * 1000 + instance id (0 for stuff), semantic classes, instances."""

    panoptic: np.ndarray
    semantic: np.ndarray
    instances: list[DetectedInstance]

    @property
    def instance_ids(self) -> np.ndarray:
        return (self.panoptic % LABEL_DIVISOR).astype(np.int32)

    def masks(self) -> np.ndarray:
        """N x H x W bool, in the order of ``instances``."""
        ids = self.instance_ids
        if not self.instances:
            return np.zeros((0, *ids.shape), bool)
        return np.stack([ids == instance.instance_id for instance in self.instances])


@dataclass
class DenseInstances:
    """Grouping result at the network input size, before resizing (what self-training needs)."""

    semantic: Tensor  # H x W long
    semantic_confidence: Tensor  # H x W
    instance: Tensor  # H x W long, 0 = none
    classes: Tensor  # N
    scores: Tensor  # N
    centres: Tensor  # N x 2 (x, y)


def upsample_outputs(outputs: NetworkOutputs, size: tuple[int, int]) -> NetworkOutputs:
    """Head outputs resized to ``size`` (bilinear); offsets rescaled to its pixels; embedding not
    renormalised (instance means are)."""
    grid_height, grid_width = outputs.semantic_logits.shape[-2:]
    scale = torch.tensor([size[1] / grid_width, size[0] / grid_height], dtype=torch.float32)
    resize = lambda tensor: F.interpolate(tensor.float(), size=size, mode="bilinear", align_corners=False)  # noqa: E731
    return NetworkOutputs(
        semantic_logits=resize(outputs.semantic_logits),
        centre_heatmap=resize(outputs.centre_heatmap),
        centre_offsets=resize(outputs.centre_offsets)
        * scale.view(1, 2, 1, 1).to(outputs.centre_offsets.device),
        embedding=resize(outputs.embedding),  # normalised per instance after averaging, not per pixel
    )


def find_centres(heatmap: Tensor, config: PostProcessConfig) -> tuple[Tensor, Tensor]:
    """Peaks of a 1 x H x W heatmap: (N x 2 (x, y) long, N scores), strongest first."""
    pooled = F.max_pool2d(heatmap[None], config.nms_kernel, stride=1, padding=config.nms_kernel // 2)[0]
    peaks = (heatmap == pooled) & (heatmap > config.centre_threshold)
    scores = heatmap[peaks]
    coordinates = torch.nonzero(peaks[0])  # (y, x)
    order = torch.argsort(scores, descending=True)[: config.top_k]
    return coordinates[order].flip(1), scores[order]


def group_instances(
    semantic_probabilities: Tensor,
    heatmap: Tensor,
    offsets: Tensor,
    thing_classes: Sequence[int],
    config: PostProcessConfig,
) -> DenseInstances:
    """One image (C x H x W probabilities, 1 x H x W heatmap, 2 x H x W offsets in pixels)."""
    confidence, semantic = semantic_probabilities.max(dim=0)
    height, width = semantic.shape
    device = semantic.device
    instance = torch.zeros((height, width), dtype=torch.long, device=device)
    empty = torch.zeros(0, device=device)
    thing_lookup = torch.zeros(semantic_probabilities.shape[0], dtype=torch.bool, device=device)
    if thing_classes:
        thing_lookup[list(thing_classes)] = True
    is_thing = thing_lookup[semantic]
    centres, centre_scores = find_centres(heatmap, config)
    if not len(centres) or not bool(is_thing.any()):
        return DenseInstances(semantic, confidence, instance, empty.long(), empty, empty.reshape(0, 2))
    ys, xs = torch.nonzero(is_thing, as_tuple=True)
    targets = torch.stack([xs + offsets[0, ys, xs], ys + offsets[1, ys, xs]], dim=1)
    nearest = torch.cdist(targets, centres.float()).argmin(dim=1)
    # Per-centre statistics in one pass (bincount), not one full-image mask per centre.
    count, num_classes = len(centres), semantic_probabilities.shape[0]
    pixel_classes = semantic[ys, xs]
    areas = torch.bincount(nearest, minlength=count)
    votes = torch.bincount(nearest * num_classes + pixel_classes, minlength=count * num_classes)
    classes = votes.view(count, num_classes).argmax(dim=1)
    class_probability = semantic_probabilities[classes[nearest], ys, xs]
    mean_probability = torch.bincount(nearest, weights=class_probability, minlength=count) / areas.clamp(
        min=1
    )
    scores = centre_scores * mean_probability
    kept = (areas >= config.min_instance_area) & (scores >= config.min_score)
    new_ids = torch.zeros(count + 1, dtype=torch.long, device=device)
    new_ids[1:][kept] = torch.arange(1, int(kept.sum()) + 1, device=device)
    instance[ys, xs] = new_ids[nearest + 1]
    return DenseInstances(
        semantic, confidence, instance, classes[kept], scores[kept].float(), centres[kept].float()
    )


def dense_to_prediction(
    dense: DenseInstances,
    embedding: Tensor | None,
    thing_classes: Sequence[int],
    output_size: tuple[int, int],
) -> PanopticPrediction:
    """Panoptic merge at the input size, resized (nearest) to ``output_size`` (height, width)."""
    semantic = dense.semantic.clone()
    classes_of_ids = torch.cat([torch.tensor([0], device=semantic.device), dense.classes])
    has_instance = dense.instance > 0
    semantic[has_instance] = classes_of_ids[dense.instance[has_instance]]
    thing_lookup = torch.zeros(256, dtype=torch.bool, device=semantic.device)
    if thing_classes:
        thing_lookup[list(thing_classes)] = True
    void = thing_lookup[semantic] & ~has_instance
    panoptic = semantic * LABEL_DIVISOR + dense.instance
    panoptic[void] = IGNORE_CLASS * LABEL_DIVISOR
    panoptic_np = panoptic.cpu().numpy().astype(np.int32)
    semantic_np = np.where(void.cpu().numpy(), IGNORE_CLASS, semantic.cpu().numpy()).astype(np.uint8)
    in_height, in_width = panoptic_np.shape
    out_height, out_width = output_size
    if (in_height, in_width) != (out_height, out_width):
        panoptic_np = cv2.resize(panoptic_np, (out_width, out_height), interpolation=cv2.INTER_NEAREST)
        semantic_np = cv2.resize(semantic_np, (out_width, out_height), interpolation=cv2.INTER_NEAREST)
    scale_x, scale_y = out_width / in_width, out_height / in_height
    instance_map = panoptic_np % LABEL_DIVISOR
    count = len(dense.classes)
    vectors = np.zeros((count, 0), np.float32)
    if embedding is not None and count:
        sums = torch.zeros((count + 1, embedding.shape[0]), device=embedding.device)
        sums.index_add_(0, dense.instance.reshape(-1), embedding.reshape(embedding.shape[0], -1).T.float())
        vectors = F.normalize(sums[1:], dim=1).cpu().numpy().astype(np.float32)
    areas = np.bincount(instance_map.reshape(-1), minlength=count + 1)
    windows = scipy.ndimage.find_objects(instance_map, max_label=count)
    instances = []
    for index, window in enumerate(windows):
        if window is None:
            continue  # vanished in the resize
        centre_x, centre_y = dense.centres[index].tolist()
        rows, columns = window
        instances.append(
            DetectedInstance(
                instance_id=index + 1,
                class_id=int(dense.classes[index]),
                score=float(dense.scores[index]),
                area=int(areas[index + 1]),
                box=(columns.start, rows.start, columns.stop - 1, rows.stop - 1),
                centre=(centre_x * scale_x, centre_y * scale_y),
                embedding=vectors[index],
            )
        )
    return PanopticPrediction(panoptic_np, semantic_np, instances)


def postprocess(
    outputs: NetworkOutputs,
    thing_classes: Sequence[int],
    input_size: tuple[int, int],
    output_size: tuple[int, int],
    config: PostProcessConfig | None = None,
) -> list[PanopticPrediction]:
    """Batched head outputs (torch tensors) -> one PanopticPrediction per image at ``output_size``."""
    config = config or PostProcessConfig()
    with torch.no_grad():
        upsampled = upsample_outputs(outputs, input_size)
        probabilities = torch.softmax(upsampled.semantic_logits, dim=1)
        predictions = []
        for index in range(probabilities.shape[0]):
            dense = group_instances(
                probabilities[index],
                upsampled.centre_heatmap[index],
                upsampled.centre_offsets[index],
                thing_classes,
                config,
            )
            predictions.append(
                dense_to_prediction(dense, upsampled.embedding[index], thing_classes, output_size)
            )
    return predictions


def outputs_from_numpy(arrays: Sequence[np.ndarray]) -> NetworkOutputs:
    """Outputs of an exported runtime (in OUTPUT_NAMES order) as torch tensors."""
    return NetworkOutputs(*(torch.from_numpy(np.ascontiguousarray(array)) for array in arrays))
