"""Thing/stuff split of the semantic pseudo-classes by their share inside instance masks (CUPS psi).

A pseudo-class is a "thing" when a large enough share of its pixels lies inside the (moving or
depth-edge) instance masks of the whole split: cars and people move, roads and buildings never do.
The counts add up over frames and shards, so the split is the same however the work was spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ThingStuffCounts:
    """Per pseudo-class pixel counts: all pixels, and pixels inside an instance mask."""

    total: np.ndarray  # (K,) int64
    inside_instances: np.ndarray  # (K,) int64

    @classmethod
    def empty(cls, num_classes: int) -> ThingStuffCounts:
        return cls(np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64))

    def update(self, labels: np.ndarray, instance_masks: np.ndarray) -> None:
        """labels: HxW pseudo-classes (values >= K are ignored); instance_masks: N x H x W bool."""
        num_classes = len(self.total)
        if instance_masks.ndim != 3 or instance_masks.shape[1:] != labels.shape:
            raise ValueError(
                f"instance masks {instance_masks.shape} do not match the label map {labels.shape}"
            )
        labels = labels.astype(np.int64)
        keep = labels < num_classes
        self.total += np.bincount(labels[keep], minlength=num_classes)[:num_classes]
        union = instance_masks.any(axis=0) & keep
        self.inside_instances += np.bincount(labels[union], minlength=num_classes)[:num_classes]

    def __add__(self, other: ThingStuffCounts) -> ThingStuffCounts:
        return ThingStuffCounts(self.total + other.total, self.inside_instances + other.inside_instances)

    def shares(self) -> np.ndarray:
        """Share of each class's pixels inside instances (0 for classes never seen)."""
        return self.inside_instances / np.maximum(self.total, 1)

    def thing_classes(self, psi: float) -> np.ndarray:
        """(K,) bool: classes whose share inside instances exceeds psi."""
        if not 0.0 <= psi < 1.0:
            raise ValueError(f"psi must lie in [0, 1), got {psi}")
        return self.shares() > psi

    def to_json(self) -> dict[str, list[int]]:
        return {"total": self.total.tolist(), "inside_instances": self.inside_instances.tolist()}

    @classmethod
    def from_json(cls, data: dict[str, list[int]]) -> ThingStuffCounts:
        return cls(np.asarray(data["total"], np.int64), np.asarray(data["inside_instances"], np.int64))
