"""Self-enhanced copy-paste (CUPS): objects cut from the batch's labels, later from the model's own
confident predictions, pasted at random scales and places into the batch's images and labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from cups_ros.train.config import CopyPasteConfig


@dataclass
class PasteObject:
    image: Tensor  # h x w x 3 uint8
    mask: Tensor  # h x w bool
    class_id: int


def cut_objects(images: Tensor, instance: Tensor, classes: Tensor, min_area: int) -> list[PasteObject]:
    """The instances of a batch (B x H x W ids, B x H x W classes) as tight crops."""
    objects = []
    for index in range(images.shape[0]):
        for instance_id in torch.unique(instance[index]).tolist():
            if instance_id == 0:
                continue
            mask = instance[index] == instance_id
            if int(mask.sum()) < min_area:
                continue
            ys, xs = torch.nonzero(mask, as_tuple=True)
            window = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
            class_id = int(torch.mode(classes[index][mask]).values)
            objects.append(PasteObject(images[index][window].clone(), mask[window].clone(), class_id))
    return objects


def _resized(obj: PasteObject, scale: float) -> PasteObject:
    height, width = obj.mask.shape
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    image = F.interpolate(
        obj.image.permute(2, 0, 1)[None].float(), size=size, mode="bilinear", align_corners=False
    )
    mask = F.interpolate(obj.mask[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5
    return PasteObject(image[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8), mask, obj.class_id)


def paste_objects(
    images: Tensor,
    semantic: Tensor,
    instance: Tensor,
    objects: list[PasteObject],
    config: CopyPasteConfig,
    rng: np.random.Generator,
) -> tuple[Tensor, Tensor, Tensor, list[set[int]]]:
    """Copies of the batch with objects pasted on top; also each image's pasted instance ids
    (new ids above the image's own, so they never share a pseudo-track key)."""
    images, semantic, instance = images.clone(), semantic.clone(), instance.clone()
    pasted_ids: list[set[int]] = [set() for _ in range(images.shape[0])]
    if not config.enabled or not objects:
        return images, semantic, instance, pasted_ids
    height, width = semantic.shape[-2:]
    for index in range(images.shape[0]):
        count = int(rng.integers(config.min_objects, config.max_objects + 1))
        next_id = int(instance[index].max()) + 1
        for _ in range(count):
            obj = _resized(
                objects[int(rng.integers(len(objects)))],
                float(rng.uniform(config.min_scale, config.max_scale)),
            )
            obj_height, obj_width = obj.mask.shape
            if obj_height > height or obj_width > width or int(obj.mask.sum()) < config.min_area:
                continue
            top = int(rng.integers(0, height - obj_height + 1))
            left = int(rng.integers(0, width - obj_width + 1))
            window = (slice(top, top + obj_height), slice(left, left + obj_width))
            mask = obj.mask
            images[index][window][mask] = obj.image[mask]
            semantic[index][window][mask] = obj.class_id
            instance[index][window][mask] = next_id
            pasted_ids[index].add(next_id)
            next_id += 1
    return images, semantic, instance, pasted_ids
