"""Training targets and losses of the panoptic-tracking network, with ignore and DropLoss.

Targets come from panoptic label maps (class * 1000 + instance id; class 255 is ignore). Centre and
offset targets follow Panoptic-DeepLab; DropLoss (CUPS) in its bottom-up form removes the centre
penalty inside confident predicted objects that match no pseudo-label instance (IoU < 0.4), so the
network may find objects the pseudo-labels missed. The embedding loss pulls together the instances
of one pseudo-track seen in different frames of a batch and pushes apart all others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from cups_ros.core.panoptic import IGNORE_CLASS
from cups_ros.model.network import NetworkOutputs
from cups_ros.model.postprocess import PostProcessConfig, group_instances


@dataclass
class LossConfig:
    """Loss weights and target shapes (config/train.yaml ``loss``)."""

    semantic_weight: float = 1.0
    centre_weight: float = 200.0  # Panoptic-DeepLab
    offset_weight: float = 0.1  # offsets in output-grid pixels (Panoptic-DeepLab: 0.01 at full size)
    embedding_weight: float = 1.0
    centre_sigma: float = 2.0
    """Gaussian sigma of the centre targets in output-grid pixels (8 px at 1/4 in Panoptic-DeepLab)."""
    drop_loss: bool = True
    drop_iou: float = 0.4  # CUPS
    drop_score: float = 0.5
    embedding_temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.centre_sigma <= 0:
            raise ValueError("loss.centre_sigma must be > 0")
        if not 0.0 < self.drop_iou <= 1.0:
            raise ValueError("loss.drop_iou must lie in (0, 1]")
        if self.embedding_temperature <= 0:
            raise ValueError("loss.embedding_temperature must be > 0")


@dataclass
class Targets:
    """Targets at the output grid (B x h x w) plus the semantic labels at input size."""

    semantic: Tensor  # B x H x W long, IGNORE_CLASS = ignore
    instance: Tensor  # B x h x w long, 0 = no instance
    heatmap: Tensor  # B x 1 x h x w
    offsets: Tensor  # B x 2 x h x w
    ignore: Tensor  # B x h x w bool: no instance loss (label ignore)
    track_keys: list[dict[int, int]]
    """Per image: instance id (grid) -> a key shared by the same pseudo-track across frames."""


def grid_labels(labels: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Nearest sampling of B x H x W integer maps at the centres of the output grid's cells."""
    return F.interpolate(labels[:, None].float(), size=grid_size, mode="nearest")[:, 0].long()


def make_targets(
    semantic: Tensor,
    instance: Tensor,
    track_keys: Sequence[dict[int, int]],
    grid_size: tuple[int, int],
    sigma: float,
) -> Targets:
    """semantic and instance at input size (B x H x W); instances are the thing segments (id > 0)."""
    batch = semantic.shape[0]
    height, width = grid_size
    grid_instance = grid_labels(instance, grid_size)
    grid_semantic = grid_labels(semantic, grid_size)
    heatmap = torch.zeros((batch, 1, height, width), device=semantic.device)
    offsets = torch.zeros((batch, 2, height, width), device=semantic.device)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=semantic.device, dtype=torch.float32),
        torch.arange(width, device=semantic.device, dtype=torch.float32),
        indexing="ij",
    )
    kept_keys: list[dict[int, int]] = []
    for index in range(batch):
        keys: dict[int, int] = {}
        for instance_id in torch.unique(grid_instance[index]).tolist():
            if instance_id == 0:
                continue
            mask = grid_instance[index] == instance_id
            centre_y, centre_x = ys[mask].mean(), xs[mask].mean()
            gaussian = torch.exp(-((xs - centre_x) ** 2 + (ys - centre_y) ** 2) / (2 * sigma**2))
            heatmap[index, 0] = torch.maximum(heatmap[index, 0], gaussian)
            offsets[index, 0][mask] = centre_x - xs[mask]
            offsets[index, 1][mask] = centre_y - ys[mask]
            keys[instance_id] = track_keys[index].get(instance_id, -1)
        kept_keys.append(keys)
    ignore = (grid_semantic == IGNORE_CLASS) & (grid_instance == 0)
    return Targets(semantic, grid_instance, heatmap, offsets, ignore, kept_keys)


def drop_loss_mask(
    outputs: NetworkOutputs, targets: Targets, thing_classes: Sequence[int], config: LossConfig
) -> Tensor:
    """B x h x w bool: pixels of confident predicted objects that overlap no target instance."""
    dropped = torch.zeros_like(targets.ignore)
    if not config.drop_loss or not thing_classes:
        return dropped
    grouping = PostProcessConfig(centre_threshold=config.drop_score, nms_kernel=5, min_instance_area=4)
    with torch.no_grad():
        probabilities = torch.softmax(outputs.semantic_logits.detach().float(), dim=1)
        for index in range(probabilities.shape[0]):
            dense = group_instances(
                probabilities[index],
                outputs.centre_heatmap[index].detach().float(),
                outputs.centre_offsets[index].detach().float(),
                thing_classes,
                grouping,
            )
            target = targets.instance[index]
            for predicted_id in range(1, len(dense.classes) + 1):
                mask = dense.instance == predicted_id
                overlapped = target[mask]
                best_iou = 0.0
                for target_id in torch.unique(overlapped[overlapped > 0]).tolist():
                    target_mask = target == target_id
                    intersection = float((mask & target_mask).sum())
                    best_iou = max(best_iou, intersection / float((mask | target_mask).sum()))
                if best_iou < config.drop_iou:
                    dropped[index] |= mask
    return dropped


def embedding_loss(embedding: Tensor, targets: Targets, temperature: float) -> Tensor:
    """Supervised contrastive loss on instance mean embeddings: same track key = positive."""
    vectors, keys = [], []
    for index, instance_keys in enumerate(targets.track_keys):
        for instance_id, key in instance_keys.items():
            mask = targets.instance[index] == instance_id
            vectors.append(F.normalize(embedding[index][:, mask].mean(dim=1), dim=0))
            keys.append(key if key >= 0 else -(len(keys) + 1))  # unknown track: unique
    if len(vectors) < 2:
        return embedding.sum() * 0.0
    stacked = torch.stack(vectors)
    key_tensor = torch.tensor(keys, device=embedding.device)
    similarity = stacked @ stacked.T / temperature
    self_mask = torch.eye(len(keys), dtype=torch.bool, device=embedding.device)
    positives = (key_tensor[:, None] == key_tensor[None, :]) & ~self_mask
    anchors = positives.any(dim=1)
    if not bool(anchors.any()):
        # No track seen twice: spread the instances apart (uniformity term) so the head still learns.
        return torch.logsumexp(similarity.masked_fill(self_mask, float("-inf")), dim=1).mean() * temperature
    log_probability = similarity - torch.logsumexp(
        similarity.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True
    )
    mean_positive = (log_probability * positives).sum(dim=1)[anchors] / positives.sum(dim=1)[anchors]
    return -mean_positive.mean()


def panoptic_losses(
    outputs: NetworkOutputs,
    targets: Targets,
    thing_classes: Sequence[int],
    config: LossConfig,
) -> dict[str, Tensor]:
    """Weighted losses and their total ("loss"); semantic at input size, the rest on the grid."""
    logits = F.interpolate(
        outputs.semantic_logits, size=targets.semantic.shape[-2:], mode="bilinear", align_corners=False
    )
    valid = targets.semantic != IGNORE_CLASS
    if bool(valid.any()):
        semantic = F.cross_entropy(logits, targets.semantic, ignore_index=IGNORE_CLASS)
    else:
        semantic = logits.sum() * 0.0
    dropped = drop_loss_mask(outputs, targets, thing_classes, config)
    centre_weight = (~(targets.ignore | dropped)).float()[:, None]
    centre = (
        (outputs.centre_heatmap - targets.heatmap) ** 2 * centre_weight
    ).sum() / centre_weight.sum().clamp(min=1.0)
    instance_pixels = (targets.instance > 0).float()[:, None]
    offset = (
        torch.abs(outputs.centre_offsets - targets.offsets) * instance_pixels
    ).sum() / instance_pixels.sum().clamp(min=1.0)
    embedding = embedding_loss(outputs.embedding, targets, config.embedding_temperature)
    losses = {
        "semantic": semantic * config.semantic_weight,
        "centre": centre * config.centre_weight,
        "offset": offset * config.offset_weight,
        "embedding": embedding * config.embedding_weight,
    }
    losses["loss"] = sum(losses.values())  # type: ignore[assignment]
    losses["dropped_fraction"] = dropped.float().mean().detach()
    return losses
