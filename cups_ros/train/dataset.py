"""Training frames: pseudo-label datasets (stage 1 output) or simulator ground truth (the oracle).

Both give the same thing per frame: the left image and a panoptic label map (class * 1000 + id,
where ids are pseudo-track / track ids, so one id in one sequence is one object over time).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from cups_ros.core.files import write_png_atomic
from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, panoptic_from_rgb
from cups_ros.eval.panoptic_quality import CITYSCAPES_NUM_TRAIN_IDS, CITYSCAPES_THING_TRAIN_IDS
from cups_ros.geometry.reference import read_rgb
from cups_ros.train.config import AugmentationConfig

_log = logging.getLogger(__name__)


class TrainingDataError(ValueError):
    """A training dataset that cannot be used; names the file and what is wrong."""


@dataclass(frozen=True)
class FrameRecord:
    sequence: str
    sequence_index: int
    index: int
    image_path: Path
    label_path: Path


@dataclass(frozen=True)
class LabelSet:
    """The frames of a training set and what their class ids mean."""

    records: list[FrameRecord]
    num_classes: int
    thing_classes: list[int]
    source: str  # "pseudo_labels" or "ground_truth"


def read_panoptic_label(path: Path) -> np.ndarray:
    return panoptic_from_rgb(read_rgb(path))


def _left_images_of_bag(bag: Path, folder: Path, frames: int) -> None:
    """Left images of a bag written once beside its pseudo-labels (bags have no random access)."""
    if folder.is_dir() and len(list(folder.glob("*.png"))) >= frames:
        return
    from cups_ros.io.bag import StereoBagReader

    for index, frame in enumerate(StereoBagReader(bag)):
        path = folder / f"{index:06d}.png"
        if not path.exists():
            write_png_atomic(path, frame.left)


def pseudo_label_set(root: str | Path) -> LabelSet:
    """A stage-1 dataset folder; its sequences' sources (simulator folders or bags) give the images."""
    root = Path(root)
    stuff_path = root / "thing_stuff.json"
    if not stuff_path.is_file():
        raise TrainingDataError(f"{root} is not a finished pseudo-label dataset (no thing_stuff.json)")
    thing_stuff = json.loads(stuff_path.read_text())
    records: list[FrameRecord] = []
    sequences = sorted(p.parent for p in root.glob("*/sequence.json"))
    num_classes = None
    for sequence_index, folder in enumerate(sequences):
        meta = json.loads((folder / "sequence.json").read_text())
        if not meta.get("complete"):
            raise TrainingDataError(f"{folder} is not complete: run pseudo_label.py --steps finalize")
        num_classes = int(meta["num_classes"])
        source = Path(meta["source"])
        if (source / "left").is_dir():
            images = source / "left"
        elif source.exists():
            images = folder / "left"
            _left_images_of_bag(source, images, int(meta["frames"]))
        else:
            raise TrainingDataError(f"{folder}: its source {source} is gone (images are read from it)")
        for index in range(int(meta["frames"])):
            records.append(
                FrameRecord(
                    folder.name,
                    sequence_index,
                    index,
                    images / f"{index:06d}.png",
                    folder / "panoptic" / f"{index:06d}.png",
                )
            )
    if not records or num_classes is None:
        raise TrainingDataError(f"{root} holds no pseudo-labelled sequences")
    thing_classes = [index for index, flag in enumerate(thing_stuff["thing"]) if flag]
    return LabelSet(records, num_classes, thing_classes, "pseudo_labels")


def ground_truth_set(root: str | Path, split: str) -> LabelSet:
    """The simulator's own labels (Cityscapes train ids, track ids): the supervised upper bound."""
    from cups_ros.sim.dataset import load_split

    records = []
    for sequence_index, sequence in enumerate(load_split(root, split)):
        for index in range(len(sequence)):
            records.append(
                FrameRecord(
                    sequence.name,
                    sequence_index,
                    index,
                    sequence.folder / "left" / f"{index:06d}.png",
                    sequence.folder / "panoptic" / f"{index:06d}.png",
                )
            )
    if not records:
        raise TrainingDataError(f"no {split}_* simulator sequences under {root}")
    return LabelSet(records, CITYSCAPES_NUM_TRAIN_IDS, list(CITYSCAPES_THING_TRAIN_IDS), "ground_truth")


def split_label_map(panoptic: np.ndarray, thing_classes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(semantic classes, instance ids of thing segments; 0 elsewhere) of a panoptic label map."""
    semantic = (panoptic // LABEL_DIVISOR).astype(np.int64)
    instance = (panoptic % LABEL_DIVISOR).astype(np.int64)
    is_thing = np.isin(semantic, thing_classes)
    instance[~is_thing] = 0
    semantic[is_thing & (instance == 0)] = IGNORE_CLASS  # a thing without an instance: unknown
    return semantic, instance


def photometric_jitter(image: np.ndarray, config: AugmentationConfig, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and hue jitter of an RGB uint8 image (OpenCV HSV)."""
    result = image.astype(np.float32)
    if config.brightness:
        result *= rng.uniform(1 - config.brightness, 1 + config.brightness)
    if config.contrast:
        mean = result.mean()
        result = (result - mean) * rng.uniform(1 - config.contrast, 1 + config.contrast) + mean
    result = np.clip(result, 0, 255).astype(np.uint8)
    if config.saturation or config.hue:
        hsv = cv2.cvtColor(result, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 1] *= rng.uniform(1 - config.saturation, 1 + config.saturation)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-config.hue, config.hue) * 180.0) % 180.0
        hsv[..., 1] = np.clip(hsv[..., 1], 0, 255)
        result = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return result


def scale_and_crop(
    image: np.ndarray,
    semantic: np.ndarray,
    instance: np.ndarray,
    config: AugmentationConfig,
    rng: np.random.Generator | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize so the frame is scale x crop size (aspect kept by width), random crop (pad: ignore).

    Without rng: scale 1 and a centred crop (evaluation-like)."""
    crop_height, crop_width = config.crop_height, config.crop_width
    scale = rng.uniform(config.min_scale, config.max_scale) if rng is not None else 1.0
    factor = scale * crop_width / image.shape[1]
    height, width = max(1, round(image.shape[0] * factor)), max(1, round(image.shape[1] * factor))
    image = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    )
    semantic = cv2.resize(semantic.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    instance = cv2.resize(instance.astype(np.uint16), (width, height), interpolation=cv2.INTER_NEAREST)
    pad_rows, pad_columns = max(0, crop_height - height), max(0, crop_width - width)
    if pad_rows or pad_columns:
        image = np.pad(image, ((0, pad_rows), (0, pad_columns), (0, 0)))
        semantic = np.pad(semantic, ((0, pad_rows), (0, pad_columns)), constant_values=IGNORE_CLASS)
        instance = np.pad(instance, ((0, pad_rows), (0, pad_columns)))
    spare_rows, spare_columns = image.shape[0] - crop_height, image.shape[1] - crop_width
    top = int(rng.integers(0, spare_rows + 1)) if rng is not None else spare_rows // 2
    left = int(rng.integers(0, spare_columns + 1)) if rng is not None else spare_columns // 2
    window = (slice(top, top + crop_height), slice(left, left + crop_width))
    return image[window], semantic[window].astype(np.int64), instance[window].astype(np.int64)


class PanopticFrames(Dataset):
    """Augmented training frames: uint8 image (H x W x 3), semantic and instance maps, track keys."""

    def __init__(
        self, labels: LabelSet, config: AugmentationConfig, augment: bool = True, seed: int = 0
    ) -> None:
        self.labels = labels
        self.config = config
        self.augment = augment
        self.seed = seed
        self._calls = 0

    def __len__(self) -> int:
        return len(self.labels.records)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        record = self.labels.records[item]
        self._calls += 1
        worker = torch.utils.data.get_worker_info()
        # A new draw on every call (epochs, workers), reproducible from the seed.
        entropy = [self.seed, item, self._calls, worker.id if worker else 0]
        rng = np.random.default_rng(entropy) if self.augment else None
        image = read_rgb(record.image_path)
        panoptic = read_panoptic_label(record.label_path)
        if panoptic.shape != image.shape[:2]:
            raise TrainingDataError(
                f"label {record.label_path} is {panoptic.shape}, "
                f"but image {record.image_path} is {image.shape[:2]}"
            )
        semantic, instance = split_label_map(panoptic, self.labels.thing_classes)
        image, semantic, instance = scale_and_crop(image, semantic, instance, self.config, rng)
        if rng is not None:
            if self.config.flip and rng.random() < 0.5:
                image, semantic, instance = image[:, ::-1], semantic[:, ::-1], instance[:, ::-1]
            image = photometric_jitter(np.ascontiguousarray(image), self.config, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "semantic": torch.from_numpy(np.ascontiguousarray(semantic)),
            "instance": torch.from_numpy(np.ascontiguousarray(instance)),
            "sequence": torch.tensor(record.sequence_index),
            "index": torch.tensor(record.index),
        }


class NearbyFramePairs(Sampler[int]):
    """Indices in pairs (frame, another frame of its sequence at most ``gap`` away), so every batch
    holds the same pseudo-tracks twice. Random with replacement; each DDP rank draws its own pairs."""

    def __init__(
        self, labels: LabelSet, gap: int, seed: int, rank: int | None = None, world_size: int | None = None
    ) -> None:
        """rank / world_size None: those of the process group when iteration starts (Lightning
        creates it inside fit, after the loaders were built)."""
        self.gap = gap
        self.seed = seed
        self._rank = rank
        self._world_size = world_size
        self.epoch = 0
        self._by_position: dict[tuple[int, int], int] = {
            (record.sequence_index, record.index): position for position, record in enumerate(labels.records)
        }
        self.records = labels.records

    @property
    def rank(self) -> int:
        if self._rank is not None:
            return self._rank
        return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0

    @property
    def world_size(self) -> int:
        if self._world_size is not None:
            return self._world_size
        return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1

    def __len__(self) -> int:
        return 2 * math.ceil(len(self.records) / (2 * self.world_size))

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.rank, self.epoch])
        self.epoch += 1
        for _ in range(len(self) // 2):
            first = int(rng.integers(len(self.records)))
            record = self.records[first]
            partners = [
                self._by_position[(record.sequence_index, record.index + offset)]
                for offset in range(-self.gap, self.gap + 1)
                if offset and (record.sequence_index, record.index + offset) in self._by_position
            ]
            yield first
            yield int(rng.choice(partners)) if partners else first
