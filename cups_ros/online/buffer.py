"""Bounded on-disk replay buffer of pseudo-labelled samples, shared by the online labeller and trainer.

Why it looks like this:

- Bounded: a vehicle runs for days, so the buffer keeps at most ``max_samples`` samples and
  ``max_bytes`` of sample files. When over a cap it evicts the most redundant sample (the one closest
  to its nearest neighbour in a small image + pseudo-class descriptor space), so a car waiting at a red
  light does not fill the buffer with one scene.
- Survives restarts: every sample is a pair of files, ``samples/<id>.npz`` (image as PNG bytes and the
  panoptic pseudo-label) and ``samples/<id>.json`` (metadata), and ``state.json`` keeps the counter of
  added samples, so sample ids and the held-out assignment continue where they stopped.
- Commit point: the npz is written first, the json last (both atomically). A sample exists only once
  its json does; an npz without json is an interrupted write and is removed when the buffer is opened
  by the writer.
- Held-out set: every ``holdout_every``-th added sample goes to a separate pool that is never trained
  on; the promotion gate scores candidate models on it.
- One writer, many readers: the labeller (writer) adds; the trainer (possibly another process, opened
  with ``writer=False``) reads and calls ``refresh()`` to pick up new samples and forget evicted ones.
  A file that vanished or is damaged raises ``CorruptSampleError`` on ``read`` and is skipped by
  ``sample``; damaged entries are moved to ``quarantine/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import threading
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.spatial.distance import cdist

from cups_ros.core.config import ConfigError
from cups_ros.core.files import write_bytes_atomic, write_json_atomic
from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR

logger = logging.getLogger(__name__)

SAMPLES_FOLDER = "samples"
QUARANTINE_FOLDER = "quarantine"
STATE_FILE = "state.json"
FORMAT_VERSION = 1
SAMPLE_ID_DIGITS = 6
PNG_COMPRESSION = 3
_NUMBER_OF_CLASS_BINS = IGNORE_CLASS
"""Histogram bins of the descriptor: classes 0..254 (255 is ignore and not counted)."""
_DECODE_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, cv2.error)


class CorruptSampleError(ValueError):
    """A buffer sample that cannot be read: its file is missing, truncated or fails its checksum."""


@dataclass
class BufferSample:
    """One pseudo-labelled frame: RGB image and its panoptic pseudo-label (class * 1000 + instance)."""

    image: np.ndarray
    """H x W x 3 uint8 RGB."""
    panoptic: np.ndarray
    """H x W int32 panoptic ids; class 255 is ignore."""
    stamp_ns: int
    source: str
    """Where it came from, e.g. the bag or sequence name."""
    sample_id: str = ""
    """Filled by the buffer when read back."""
    holdout: bool = False
    """Filled by the buffer when read back: True for the held-out set (never trained on)."""

    def __post_init__(self) -> None:
        image, panoptic = self.image, self.panoptic
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", type(image).__name__)
            raise ValueError(f"BufferSample.image must be an H x W x 3 RGB array, got shape {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"BufferSample.image must be uint8, got {image.dtype}")
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"BufferSample.image is empty (shape {image.shape})")
        if not isinstance(panoptic, np.ndarray) or panoptic.ndim != 2:
            shape = getattr(panoptic, "shape", type(panoptic).__name__)
            raise ValueError(f"BufferSample.panoptic must be an H x W array, got shape {shape}")
        if panoptic.dtype != np.int32:
            raise ValueError(f"BufferSample.panoptic must be int32 panoptic ids, got {panoptic.dtype}")
        if panoptic.shape != image.shape[:2]:
            raise ValueError(
                f"BufferSample.panoptic is {panoptic.shape[0]} x {panoptic.shape[1]} but the image is "
                f"{image.shape[0]} x {image.shape[1]}; they must have the same H x W"
            )
        largest_id = IGNORE_CLASS * LABEL_DIVISOR + LABEL_DIVISOR - 1
        if panoptic.min() < 0 or panoptic.max() > largest_id:
            raise ValueError(
                f"BufferSample.panoptic ids must lie in [0, {largest_id}] (class * {LABEL_DIVISOR} + "
                f"instance), got {panoptic.min()}..{panoptic.max()}"
            )
        if isinstance(self.stamp_ns, bool) or not isinstance(self.stamp_ns, int | np.integer):
            raise ValueError(f"BufferSample.stamp_ns must be an integer, got {self.stamp_ns!r}")
        self.stamp_ns = int(self.stamp_ns)
        if self.stamp_ns < 0:
            raise ValueError(f"BufferSample.stamp_ns must be >= 0, got {self.stamp_ns}")
        if not isinstance(self.source, str):
            raise ValueError(f"BufferSample.source must be a string, got {self.source!r}")


@dataclass(frozen=True)
class ReplayBufferConfig:
    """Caps and held-out split of the replay buffer."""

    max_samples: int = 500
    """Cap on all samples (training + held-out)."""
    max_bytes: int = 2_000_000_000
    """Cap on the bytes of the sample files (npz) on disk."""
    holdout_every: int = 5
    """Every n-th added sample is held out (never trained on); 0: no held-out set."""
    max_holdout: int = 50
    """Cap on the held-out pool."""
    descriptor_size: int = 16
    """Side of the greyscale thumbnail in the diversity descriptor."""

    def __post_init__(self) -> None:
        for name in ("max_samples", "max_bytes", "holdout_every", "max_holdout", "descriptor_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"buffer.{name} must be an integer, got {value!r}")
        if self.max_samples < 1:
            raise ConfigError(f"buffer.max_samples must be >= 1, got {self.max_samples}")
        if self.max_bytes < 1:
            raise ConfigError(f"buffer.max_bytes must be >= 1, got {self.max_bytes}")
        if self.holdout_every < 0 or self.holdout_every == 1:
            raise ConfigError(
                f"buffer.holdout_every must be 0 (no held-out set) or >= 2, got {self.holdout_every} "
                "(1 would hold out every sample and leave nothing to train on)"
            )
        if self.max_holdout < 0:
            raise ConfigError(f"buffer.max_holdout must be >= 0, got {self.max_holdout}")
        if self.holdout_every and not 1 <= self.max_holdout < self.max_samples:
            raise ConfigError(
                f"buffer.max_holdout must lie in [1, max_samples - 1] = [1, {self.max_samples - 1}] "
                f"when holdout_every > 0, got {self.max_holdout}"
            )
        if not 1 <= self.descriptor_size <= 64:
            raise ConfigError(f"buffer.descriptor_size must lie in [1, 64], got {self.descriptor_size}")


@dataclass
class _IndexEntry:
    """What the buffer keeps in memory of one committed sample (the content of its json)."""

    sample_id: str
    order: int
    stamp_ns: int
    source: str
    holdout: bool
    bytes: int
    sha256: str
    descriptor: np.ndarray

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "sample_id": self.sample_id,
            "order": self.order,
            "stamp_ns": self.stamp_ns,
            "source": self.source,
            "holdout": self.holdout,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "descriptor": [float(value) for value in self.descriptor],
        }

    @classmethod
    def from_json(cls, value: Any, sample_id: str) -> _IndexEntry:
        """Raises ValueError naming what is missing or wrong."""
        if not isinstance(value, dict):
            raise ValueError("metadata is not a JSON object")
        expected = {
            "order": int,
            "stamp_ns": int,
            "source": str,
            "holdout": bool,
            "bytes": int,
            "sha256": str,
        }
        for key, kind in expected.items():
            if not isinstance(value.get(key), kind) or (kind is int and isinstance(value[key], bool)):
                raise ValueError(f"metadata key {key!r} missing or not {kind.__name__}")
        if value.get("sample_id", sample_id) != sample_id:
            raise ValueError(f"metadata names sample {value['sample_id']!r}, the file is {sample_id!r}")
        descriptor = value.get("descriptor")
        if not isinstance(descriptor, list) or not descriptor:
            raise ValueError("metadata key 'descriptor' missing or empty")
        return cls(
            sample_id=sample_id,
            order=value["order"],
            stamp_ns=value["stamp_ns"],
            source=value["source"],
            holdout=value["holdout"],
            bytes=value["bytes"],
            sha256=value["sha256"],
            descriptor=np.asarray(descriptor, dtype=np.float32),
        )


def sample_descriptor(image: np.ndarray, panoptic: np.ndarray, thumbnail_size: int) -> np.ndarray:
    """L2-normalised float32 descriptor: pseudo-class histogram (classes != ignore) + greyscale thumbnail.

    Both halves are normalised on their own first, so semantics and appearance weigh the same.
    """
    classes = panoptic.reshape(-1) // LABEL_DIVISOR
    counts = np.bincount(classes[classes != IGNORE_CLASS], minlength=_NUMBER_OF_CLASS_BINS)
    histogram = counts[:_NUMBER_OF_CLASS_BINS].astype(np.float32)
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    thumbnail = cv2.resize(grey, (thumbnail_size, thumbnail_size), interpolation=cv2.INTER_AREA)
    thumbnail = thumbnail.astype(np.float32).reshape(-1) / 255.0
    parts = [
        part / norm if (norm := float(np.linalg.norm(part))) > 0 else part for part in (histogram, thumbnail)
    ]
    descriptor = np.concatenate(parts)
    norm = float(np.linalg.norm(descriptor))
    return descriptor / norm if norm > 0 else descriptor


def _encode_sample(sample: BufferSample) -> bytes:
    """npz bytes: the image as PNG bytes (lossless, compact) and the panoptic ids as int32."""
    bgr = cv2.cvtColor(np.ascontiguousarray(sample.image), cv2.COLOR_RGB2BGR)
    ok, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
    if not ok:
        raise OSError(f"PNG encoding failed for a {sample.image.shape} image")
    stream = io.BytesIO()
    np.savez_compressed(stream, image_png=png.reshape(-1), panoptic=sample.panoptic)
    return stream.getvalue()


def _decode_sample(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(image RGB uint8, panoptic int32) of npz bytes; raises ValueError (or a decode error) if damaged."""
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        png = archive["image_png"]
        panoptic = archive["panoptic"]
    bgr = cv2.imdecode(png, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("the PNG image does not decode")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), panoptic


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class ReplayBuffer:
    """The buffer in folder ``root``; see the module docstring.

    ``writer=False`` opens it for reading only (the trainer beside a labeller process): no clean-up of
    interrupted writes on open (they may be the writer's writes in progress) and no ``add``.
    """

    def __init__(self, root: str | Path, config: ReplayBufferConfig | None = None, *, writer: bool = True):
        self.root = Path(root)
        self.config = config or ReplayBufferConfig()
        self.writer = writer
        self.samples_folder = self.root / SAMPLES_FOLDER
        self.quarantine_folder = self.root / QUARANTINE_FOLDER
        self.samples_folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._index: dict[str, _IndexEntry] = {}
        self._unindexable: set[str] = set()
        """Json names that failed to load in a reader (warned about once, not retried)."""
        self._added = self._read_added_counter()
        self._evicted = 0
        self._corrupt = 0
        if writer:
            self._remove_interrupted_writes()
        self.refresh()

    # ----- paths and state

    def npz_path(self, sample_id: str) -> Path:
        return self.samples_folder / f"{sample_id}.npz"

    def json_path(self, sample_id: str) -> Path:
        return self.samples_folder / f"{sample_id}.json"

    def _read_added_counter(self) -> int:
        path = self.root / STATE_FILE
        if not path.exists():
            return 0
        try:
            state = json.loads(path.read_text())
            added = state["added"]
            if isinstance(added, bool) or not isinstance(added, int) or added < 0:
                raise ValueError(f"'added' is {added!r}")
            return added
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("%s is unreadable (%s); the counter is rebuilt from the samples", path, error)
            return 0

    def _write_state(self) -> None:
        """Called with the lock held."""
        write_json_atomic(self.root / STATE_FILE, {"format": FORMAT_VERSION, "added": self._added})

    def _remove_interrupted_writes(self) -> None:
        """Removes temporary files of atomic writes and npz files without json (interrupted adds)."""
        removed: list[str] = []
        for folder, prefix in ((self.samples_folder, "."), (self.root, f".{STATE_FILE}.")):
            for path in folder.iterdir():
                if path.name.startswith(prefix):
                    _remove_path(path)
                    removed.append(str(path))
        for path in self.samples_folder.glob("*.npz"):
            if not path.with_suffix(".json").exists():
                path.unlink(missing_ok=True)
                removed.append(str(path))
        if removed:
            logger.warning(
                "replay buffer %s: removed %d interrupted writes: %s", self.root, len(removed), removed
            )

    # ----- index

    def refresh(self) -> None:
        """Indexes json files added since the last scan (by any process) and forgets removed ones."""
        names = {
            entry.name[: -len(".json")]
            for entry in os.scandir(self.samples_folder)
            if entry.name.endswith(".json") and not entry.name.startswith(".")
        }
        with self._lock:
            new_ids = sorted(names - self._index.keys() - self._unindexable)
            for gone in self._index.keys() - names:
                del self._index[gone]
        loaded = [entry for sample_id in new_ids if (entry := self._load_entry(sample_id)) is not None]
        with self._lock:
            for entry in loaded:
                self._index.setdefault(entry.sample_id, entry)
                self._added = max(self._added, entry.order)

    def _load_entry(self, sample_id: str) -> _IndexEntry | None:
        """The index entry of a json, or None (damaged entries are quarantined by the writer)."""
        json_path = self.json_path(sample_id)
        try:
            entry = _IndexEntry.from_json(json.loads(json_path.read_text()), sample_id)
            if not self.npz_path(sample_id).exists():
                raise ValueError(f"its sample file {self.npz_path(sample_id).name} is missing")
        except FileNotFoundError:
            return None  # evicted between the scan and now
        except (OSError, ValueError) as error:
            if self.writer:
                self._quarantine(sample_id, f"metadata {json_path} is unusable: {error}")
            else:
                with self._lock:
                    self._unindexable.add(sample_id)
                logger.warning("replay buffer: skipping %s: %s", json_path, error)
            return None
        if entry.descriptor.shape != (_NUMBER_OF_CLASS_BINS + self.config.descriptor_size**2,):
            try:  # written with another descriptor_size: recompute from the sample itself
                image, panoptic = _decode_sample(self.npz_path(sample_id).read_bytes())
                entry.descriptor = sample_descriptor(image, panoptic, self.config.descriptor_size)
            except _DECODE_ERRORS as error:
                if self.writer:
                    self._quarantine(sample_id, f"{self.npz_path(sample_id)} does not decode: {error}")
                return None
        return entry

    def _quarantine(self, sample_id: str, reason: str) -> None:
        """Moves a damaged sample's files to quarantine/ and drops it from the index."""
        self.quarantine_folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._index.pop(sample_id, None)
            self._corrupt += 1
            for path in (self.npz_path(sample_id), self.json_path(sample_id)):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(path, self.quarantine_folder / path.name)
        logger.warning("replay buffer: quarantined sample %s: %s", sample_id, reason)

    def _ids(self, holdout: bool) -> list[str]:
        with self._lock:
            entries = [entry for entry in self._index.values() if entry.holdout == holdout]
        return [entry.sample_id for entry in sorted(entries, key=lambda entry: entry.order)]

    def train_ids(self) -> list[str]:
        """Ids of the training pool, oldest first."""
        return self._ids(holdout=False)

    def holdout_ids(self) -> list[str]:
        """Ids of the held-out pool (never trained on), oldest first."""
        return self._ids(holdout=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._index)

    def __contains__(self, sample_id: object) -> bool:
        with self._lock:
            return sample_id in self._index

    @property
    def total_bytes(self) -> int:
        """Bytes of the indexed sample files (npz)."""
        with self._lock:
            return sum(entry.bytes for entry in self._index.values())

    def stats(self) -> dict[str, int]:
        """Counts for diagnostics; ``evicted`` and ``corrupt`` count since this object was opened."""
        with self._lock:
            holdout = sum(entry.holdout for entry in self._index.values())
            return {
                "samples": len(self._index),
                "train": len(self._index) - holdout,
                "holdout": holdout,
                "bytes": sum(entry.bytes for entry in self._index.values()),
                "evicted": self._evicted,
                "corrupt": self._corrupt,
            }

    # ----- writing

    def add(self, sample: BufferSample) -> str:
        """Stores ``sample`` (its sample_id and holdout are assigned here), evicts over the caps; its id.

        A sample larger than ``max_bytes`` on its own is evicted again at once (with a warning).
        """
        if not self.writer:
            raise RuntimeError(
                f"replay buffer {self.root} was opened with writer=False; add() is not allowed"
            )
        with self._lock:
            self._added += 1
            order = self._added
        sample_id = f"{order:0{SAMPLE_ID_DIGITS}d}_{sample.stamp_ns}"
        holdout = self.config.holdout_every > 0 and order % self.config.holdout_every == 0
        payload = _encode_sample(sample)
        entry = _IndexEntry(
            sample_id=sample_id,
            order=order,
            stamp_ns=sample.stamp_ns,
            source=sample.source,
            holdout=holdout,
            bytes=len(payload),
            sha256=hashlib.sha256(payload).hexdigest(),
            descriptor=sample_descriptor(sample.image, sample.panoptic, self.config.descriptor_size),
        )
        npz_path = self.npz_path(sample_id)
        try:
            write_bytes_atomic(npz_path, payload)
            write_json_atomic(self.json_path(sample_id), entry.to_json())  # the commit point
        except BaseException:
            npz_path.unlink(missing_ok=True)
            raise
        with self._lock:
            self._index[sample_id] = entry
            self._evict_over_caps(newest_id=sample_id)
            self._write_state()
        return sample_id

    def _pool_over_cap(self) -> bool | None:
        """The pool (holdout True / False) to evict from, or None when within all caps. Lock held."""
        entries = list(self._index.values())
        holdout_entries = [entry for entry in entries if entry.holdout]
        has_train = len(holdout_entries) < len(entries)
        if len(holdout_entries) > self.config.max_holdout:
            return True
        if len(entries) > self.config.max_samples:
            return not has_train
        total = sum(entry.bytes for entry in entries)
        if total > self.config.max_bytes:
            # Keep the held-out pool at its share (1 / holdout_every) of the bytes.
            holdout_bytes = sum(entry.bytes for entry in holdout_entries)
            holdout_over_share = bool(holdout_entries) and holdout_bytes * self.config.holdout_every > total
            return bool(holdout_over_share or not has_train)
        return None

    def _evict_over_caps(self, newest_id: str) -> None:
        """Evicts the most redundant sample of the pool over its cap until all caps hold. Lock held."""
        while (holdout := self._pool_over_cap()) is not None:
            pool = sorted((e for e in self._index.values() if e.holdout == holdout), key=lambda e: e.order)
            victim = _most_redundant(pool, protected_id=newest_id)
            if victim.sample_id == newest_id:
                logger.warning(
                    "replay buffer: sample %s (%d bytes) does not fit the caps and was evicted at once",
                    newest_id,
                    victim.bytes,
                )
            del self._index[victim.sample_id]
            self.json_path(victim.sample_id).unlink(missing_ok=True)  # uncommit first
            self.npz_path(victim.sample_id).unlink(missing_ok=True)
            self._evicted += 1

    # ----- reading

    def read(self, sample_id: str) -> BufferSample:
        """The sample, checksum verified; raises CorruptSampleError (and quarantines it) if unreadable.

        Raises KeyError for an id this buffer does not know (call ``refresh()`` first for new ones).
        """
        with self._lock:
            entry = self._index.get(sample_id)
        if entry is None:
            raise KeyError(f"no sample {sample_id!r} in the replay buffer at {self.root}")
        npz_path = self.npz_path(sample_id)
        try:
            data = npz_path.read_bytes()
        except OSError as error:
            reason = "the file is missing" if isinstance(error, FileNotFoundError) else f"unreadable: {error}"
            raise self._unreadable(sample_id, npz_path, reason) from error
        if len(data) != entry.bytes:
            raise self._unreadable(
                sample_id, npz_path, f"truncated or resized: {len(data)} bytes, expected {entry.bytes}"
            )
        if hashlib.sha256(data).hexdigest() != entry.sha256:
            raise self._unreadable(sample_id, npz_path, "sha256 checksum mismatch")
        try:
            image, panoptic = _decode_sample(data)
            return BufferSample(image, panoptic, entry.stamp_ns, entry.source, sample_id, entry.holdout)
        except _DECODE_ERRORS as error:
            raise self._unreadable(sample_id, npz_path, f"does not decode: {error}") from error

    def _unreadable(self, sample_id: str, npz_path: Path, reason: str) -> CorruptSampleError:
        """The error to raise; quarantines the sample unless it was simply evicted meanwhile."""
        if not self.json_path(sample_id).exists():
            with self._lock:
                self._index.pop(sample_id, None)
            return CorruptSampleError(f"{npz_path}: {reason} (the sample was evicted meanwhile)")
        self._quarantine(sample_id, f"{npz_path}: {reason}")
        return CorruptSampleError(f"{npz_path}: {reason}; moved to {self.quarantine_folder}")

    def sample(self, count: int, rng: np.random.Generator) -> list[BufferSample]:
        """Up to ``count`` distinct random training samples; unreadable ones are skipped and replaced."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        candidates = self.train_ids()
        samples: list[BufferSample] = []
        for index in rng.permutation(len(candidates)):
            if len(samples) == count:
                break
            try:
                samples.append(self.read(candidates[index]))
            except (CorruptSampleError, KeyError) as error:
                logger.warning("replay buffer: skipping training sample %s: %s", candidates[index], error)
        return samples

    def holdout_samples(self) -> list[BufferSample]:
        """All readable held-out samples, oldest first; unreadable ones are skipped."""
        samples: list[BufferSample] = []
        for sample_id in self.holdout_ids():
            try:
                samples.append(self.read(sample_id))
            except (CorruptSampleError, KeyError) as error:
                logger.warning("replay buffer: skipping held-out sample %s: %s", sample_id, error)
        return samples


def _most_redundant(pool: list[_IndexEntry], protected_id: str) -> _IndexEntry:
    """The entry whose nearest neighbour is closest (ties: oldest); ``protected_id`` only if alone.

    ``pool`` is sorted oldest first.
    """
    candidates = np.array([entry.sample_id != protected_id for entry in pool])
    if len(pool) == 1 or not candidates.any():
        return pool[0]
    descriptors = np.stack([entry.descriptor for entry in pool])
    distances = cdist(descriptors, descriptors)
    np.fill_diagonal(distances, np.inf)
    nearest = distances.min(axis=1)
    nearest[~candidates] = np.inf
    # np.argmin returns the first minimum, i.e. the oldest on ties (pool is oldest first).
    return pool[int(np.argmin(nearest))]
