"""Self-labels of the EMA teacher (CUPS self-training): test-time augmentation over scales and a
flip, confident instances only, and class-wise semantic thresholds relative to each class's best."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from cups_ros.core.panoptic import IGNORE_CLASS
from cups_ros.features.preprocessing import patch_multiple_size, preprocess
from cups_ros.model.network import NetworkOutputs, PanopticTrackingNet
from cups_ros.model.postprocess import PostProcessConfig, group_instances, upsample_outputs


@torch.no_grad()
def tta_outputs(
    network: PanopticTrackingNet, images: Tensor, scales: Sequence[float], flip: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean semantic probabilities, centre heatmap and offsets (pixels) over the augmentations, at
    the size of ``images`` (B x H x W x 3 uint8)."""
    normalised = preprocess(images)
    height, width = normalised.shape[-2:]
    mirror_offsets = torch.tensor([-1.0, 1.0], device=images.device).view(1, 2, 1, 1)
    passes: list[tuple[Tensor, Tensor, Tensor]] = []
    for scale in scales:
        size = patch_multiple_size(height, width, network.backbone.patch_size, scale)
        scaled = F.interpolate(normalised, size=size, mode="bilinear", align_corners=False, antialias=True)
        for flipped in (False, True) if flip else (False,):
            outputs = network(scaled.flip(-1) if flipped else scaled)
            up = upsample_outputs(NetworkOutputs(*(o.float() for o in outputs)), (height, width))
            probabilities = torch.softmax(up.semantic_logits, dim=1)
            if flipped:
                passes.append(
                    (
                        probabilities.flip(-1),
                        up.centre_heatmap.flip(-1),
                        up.centre_offsets.flip(-1) * mirror_offsets,
                    )
                )
            else:
                passes.append((probabilities, up.centre_heatmap, up.centre_offsets))
    probabilities, heatmap, offsets = (torch.stack(parts).mean(dim=0) for parts in zip(*passes, strict=True))
    return probabilities, heatmap, offsets


@torch.no_grad()
def self_labels(
    teacher: PanopticTrackingNet,
    images: Tensor,
    thing_classes: Sequence[int],
    scales: Sequence[float],
    flip: bool,
    instance_score: float,
    semantic_factor: float,
    postprocess: PostProcessConfig,
    instance_score_relative: bool = False,
) -> tuple[Tensor, Tensor]:
    """(semantic B x H x W, instance B x H x W) self-labels; IGNORE_CLASS where not confident, and on
    thing pixels outside a kept instance (as in the pseudo-labels).

    instance_score_relative: an instance is kept when its score reaches ``instance_score`` times the
    best score of its class in the image (the semantic rule's form) instead of ``instance_score``
    itself."""
    probabilities, heatmap, offsets = tta_outputs(teacher, images, scales, flip)
    semantic_labels, instance_labels = [], []
    thing_lookup = torch.zeros(probabilities.shape[1], dtype=torch.bool, device=images.device)
    if thing_classes:
        thing_lookup[list(thing_classes)] = True
    for index in range(probabilities.shape[0]):
        dense = group_instances(
            probabilities[index], heatmap[index], offsets[index], thing_classes, postprocess
        )
        semantic = dense.semantic.clone()
        keep = torch.zeros_like(semantic, dtype=torch.bool)
        for class_id in torch.unique(semantic).tolist():
            in_class = semantic == class_id
            best = dense.semantic_confidence[in_class].max()
            keep |= in_class & (dense.semantic_confidence > semantic_factor * best)
        instance = torch.zeros_like(dense.instance)
        next_id = 1
        best_of_class: dict[int, float] = {}
        for class_id, score in zip(dense.classes.tolist(), dense.scores.tolist(), strict=True):
            best_of_class[class_id] = max(score, best_of_class.get(class_id, 0.0))
        for position in range(len(dense.classes)):
            threshold = instance_score
            if instance_score_relative:
                threshold *= best_of_class[int(dense.classes[position])]
            if float(dense.scores[position]) < threshold:
                continue
            mask = dense.instance == position + 1
            instance[mask] = next_id
            semantic[mask] = dense.classes[position]
            keep |= mask
            next_id += 1
        semantic[~keep | (thing_lookup[semantic] & (instance == 0))] = IGNORE_CLASS
        semantic_labels.append(semantic)
        instance_labels.append(instance)
    return torch.stack(semantic_labels), torch.stack(instance_labels)
