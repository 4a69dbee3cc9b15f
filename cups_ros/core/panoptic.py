"""Panoptic maps with the Cityscapes id codec: id = class * 1000 + instance; stuff has instance 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LABEL_DIVISOR = 1000
IGNORE_CLASS = 255
MAX_INSTANCE_ID = LABEL_DIVISOR - 1


def encode_panoptic_id(class_id: np.ndarray | int, instance_id: np.ndarray | int) -> np.ndarray:
    """int32 panoptic ids; raises if a class or instance id cannot be represented."""
    classes = np.asarray(class_id, dtype=np.int64)
    instances = np.asarray(instance_id, dtype=np.int64)
    if classes.size and (classes.min() < 0 or classes.max() > IGNORE_CLASS):
        raise ValueError(f"class ids must lie in [0, {IGNORE_CLASS}], got {classes.min()}..{classes.max()}")
    if instances.size and (instances.min() < 0 or instances.max() > MAX_INSTANCE_ID):
        raise ValueError(
            f"instance ids must lie in [0, {MAX_INSTANCE_ID}], got {instances.min()}..{instances.max()}"
        )
    return (classes * LABEL_DIVISOR + instances).astype(np.int32)


def decode_panoptic_id(panoptic_id: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, instance ids) of panoptic ids."""
    ids = np.asarray(panoptic_id, dtype=np.int64)
    return (ids // LABEL_DIVISOR).astype(np.int32), (ids % LABEL_DIVISOR).astype(np.int32)


@dataclass(frozen=True)
class Segment:
    """One segment of a panoptic map: a stuff region or a thing instance."""

    panoptic_id: int
    class_id: int
    instance_id: int
    area: int

    @property
    def is_instance(self) -> bool:
        return self.instance_id > 0


@dataclass(frozen=True)
class PanopticMap:
    """HxW int32 panoptic ids; pixels of class IGNORE_CLASS are void."""

    ids: np.ndarray

    def __post_init__(self) -> None:
        if self.ids.ndim != 2:
            raise ValueError(f"panoptic map must be HxW, got shape {self.ids.shape}")
        if self.ids.dtype != np.int32:
            raise ValueError(f"panoptic map must be int32, got {self.ids.dtype}")
        if self.ids.size and (
            self.ids.min() < 0 or self.ids.max() > IGNORE_CLASS * LABEL_DIVISOR + MAX_INSTANCE_ID
        ):
            raise ValueError("panoptic map holds ids outside the codec's range")

    @classmethod
    def from_semantic_instance(cls, semantic: np.ndarray, instance: np.ndarray | None = None) -> PanopticMap:
        """From a class map and an instance map (0 = no instance, i.e. stuff or unassigned)."""
        if instance is None:
            instance = np.zeros_like(semantic)
        if semantic.shape != instance.shape:
            raise ValueError(f"semantic {semantic.shape} and instance {instance.shape} maps differ in shape")
        return cls(encode_panoptic_id(semantic, instance))

    @classmethod
    def void(cls, height: int, width: int) -> PanopticMap:
        return cls(np.full((height, width), IGNORE_CLASS * LABEL_DIVISOR, dtype=np.int32))

    @property
    def semantic(self) -> np.ndarray:
        return decode_panoptic_id(self.ids)[0]

    @property
    def instance(self) -> np.ndarray:
        return decode_panoptic_id(self.ids)[1]

    @property
    def void_mask(self) -> np.ndarray:
        return self.ids // LABEL_DIVISOR == IGNORE_CLASS

    def segments(self, include_void: bool = False) -> list[Segment]:
        """Segments in ascending id order, with their pixel areas."""
        ids, areas = np.unique(self.ids, return_counts=True)
        segments = []
        for panoptic_id, area in zip(ids.tolist(), areas.tolist(), strict=True):
            class_id, instance_id = divmod(panoptic_id, LABEL_DIVISOR)
            if class_id == IGNORE_CLASS and not include_void:
                continue
            segments.append(Segment(panoptic_id, class_id, instance_id, area))
        return segments


def panoptic_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Cityscapes/COCO panoptic PNG encoding: id = R + 256 G + 256^2 B (lossless for int32 ids)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= 256**3):
        raise ValueError("panoptic ids must lie in [0, 256^3) for the RGB encoding")
    return np.stack([ids % 256, (ids // 256) % 256, ids // 256**2], axis=-1).astype(np.uint8)


def panoptic_from_rgb(rgb: np.ndarray) -> np.ndarray:
    """Inverse of panoptic_to_rgb (RGB channel order, as loaded and converted from OpenCV's BGR)."""
    rgb = np.asarray(rgb, dtype=np.int64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"panoptic PNG must be HxWx3, got shape {rgb.shape}")
    return (rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]).astype(np.int32)
