"""Fusion of semantic pseudo-classes and instance masks into one panoptic pseudo-label (CUPS rules).

Instances take the majority thing pseudo-class under their mask; thing pixels without an instance
are ignore (the network must not learn "car without an instance"); stuff keeps its class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, encode_panoptic_id


@dataclass(frozen=True)
class PseudoInstance:
    """One instance of a panoptic pseudo-label; instance_id is the pseudo-track id once tracked."""

    instance_id: int
    class_id: int
    score: float
    area: int
    source: str  # "motion" or "depth"

    def to_json(self) -> dict[str, object]:
        return {
            "instance_id": self.instance_id,
            "class_id": self.class_id,
            "score": round(float(self.score), 4),
            "area": self.area,
            "source": self.source,
        }


@dataclass
class PanopticPseudoLabel:
    panoptic: np.ndarray  # HxW int32, class * 1000 + instance id; class 255 = ignore
    instances: list[PseudoInstance] = field(default_factory=list)
    dropped_instances: int = 0  # masks with no thing pseudo-class under them

    @property
    def semantic(self) -> np.ndarray:
        return (self.panoptic // LABEL_DIVISOR).astype(np.uint8)


def fuse_panoptic(
    labels: np.ndarray,
    instance_masks: np.ndarray,
    scores: np.ndarray,
    thing_classes: np.ndarray,
    sources: list[str] | None = None,
    instance_ids: list[int] | None = None,
) -> PanopticPseudoLabel:
    """labels: HxW pseudo-classes 0..K-1 (IGNORE_CLASS allowed); masks N x H x W bool, disjoint
    or not (earlier masks win overlaps); thing_classes (K,) bool. Ids default to 1..N."""
    labels = np.asarray(labels)
    thing_classes = np.asarray(thing_classes, bool)
    count = len(instance_masks)
    if instance_masks.ndim != 3 or instance_masks.shape[1:] != labels.shape:
        raise ValueError(f"instance masks {instance_masks.shape} do not match the label map {labels.shape}")
    if len(scores) != count:
        raise ValueError(f"{len(scores)} scores for {count} instance masks")
    sources = sources or ["motion"] * count
    instance_ids = instance_ids or list(range(1, count + 1))
    if len(sources) != count or len(instance_ids) != count:
        raise ValueError("sources and instance_ids need one entry per instance mask")
    num_classes = len(thing_classes)
    valid = labels < num_classes
    is_thing = np.zeros(labels.shape, bool)
    is_thing[valid] = thing_classes[labels[valid]]
    semantic = np.where(valid, labels, IGNORE_CLASS).astype(np.int64)
    semantic[is_thing] = IGNORE_CLASS  # thing pixels without an instance
    instance = np.zeros(labels.shape, np.int64)
    taken = np.zeros(labels.shape, bool)
    instances: list[PseudoInstance] = []
    dropped = 0
    for mask, score, source, instance_id in zip(instance_masks, scores, sources, instance_ids, strict=True):
        free = mask & ~taken
        under = labels[free & is_thing]
        if under.size == 0:
            dropped += 1
            continue
        class_id = int(np.bincount(under, minlength=num_classes).argmax())
        semantic[free] = class_id
        instance[free] = instance_id
        taken |= free
        instances.append(PseudoInstance(int(instance_id), class_id, float(score), int(free.sum()), source))
    return PanopticPseudoLabel(encode_panoptic_id(semantic, instance), instances, dropped)
