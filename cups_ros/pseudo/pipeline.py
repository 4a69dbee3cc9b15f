"""Stage 1 end to end: stereo video -> panoptic pseudo-labels with pseudo-tracks, resumable, sharded.

Three steps, each resumable, because the thing/stuff split needs counts from the whole split:

1. ``fit``: semantic prototypes on every ``fit_stride``-th frame of all inputs (or given ones).
2. ``frames`` (sharded by frame blocks): geometry, the motion-instance ensemble and semantic
   pseudo-classes per frame, kept as ``work/<sequence>/<index>.npz``.
3. ``finalize`` (sharded by sequence): thing/stuff split from all frames, depth-edge instances,
   fusion, pseudo-tracks and smoothing, written as the dataset below with a montage per sequence.

Output dataset::

    pseudo_label.yaml                 the configuration used
    semantics.npz                     semantic prototypes (unless given)
    thing_stuff.json                  per pseudo-class counts, shares and the thing flags
    <sequence>/panoptic/000000.png    class * 1000 + pseudo-track id (panoptic_to_rgb encoding)
    <sequence>/000000.json            instances: track id, pseudo-class, score, area, source
    <sequence>/sequence.json          frames, camera, thing classes; "complete" once written
    <sequence>/montage.png
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cups_ros.core.config import ConfigError, load_config, write_config
from cups_ros.core.files import write_bytes_atomic, write_json_atomic, write_png_atomic
from cups_ros.core.frame import StereoFrame
from cups_ros.core.panoptic import IGNORE_CLASS, panoptic_from_rgb, panoptic_to_rgb
from cups_ros.features import FeatureBackboneConfig, load_backbone
from cups_ros.geometry import GeometryConfig, SequenceGeometry, compute_frame_geometry
from cups_ros.pseudo.depth_instances import DepthInstanceConfig, depth_edge_instances, merge_instances
from cups_ros.pseudo.fusion import PanopticPseudoLabel, fuse_panoptic
from cups_ros.pseudo.motion import MotionConfig, MotionInstanceSegmenter
from cups_ros.pseudo.semantics import SemanticConfig, SemanticPseudoLabeller
from cups_ros.pseudo.sources import InputSequence
from cups_ros.pseudo.thing_stuff import ThingStuffCounts
from cups_ros.pseudo.video import PseudoTrackPropagator, VideoConfig, smooth_labels

logger = logging.getLogger(__name__)

FLOW_STORAGE_SCALE = 2  # flows kept at half resolution: they only carry masks between frames


@dataclass
class PseudoLabelConfig:
    """config/pseudo_label.yaml; every section is its stage's own dataclass."""

    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    features: FeatureBackboneConfig = field(default_factory=FeatureBackboneConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    depth_instances: DepthInstanceConfig = field(default_factory=DepthInstanceConfig)
    semantics: SemanticConfig = field(default_factory=SemanticConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    psi: float = 0.08  # thing/stuff threshold on the share inside motion masks (CUPS)
    static_instances: bool = True  # depth-edge instances for static things (MBPS), beyond CUPS
    static_instance_score: float = 0.5  # their score: no motion evidence backs them
    fit_stride: int = 5  # every n-th frame feeds the semantic prototypes

    def __post_init__(self) -> None:
        if not 0.0 <= self.psi < 1.0:
            raise ConfigError(f"psi must lie in [0, 1), got {self.psi}")
        if self.fit_stride < 1:
            raise ConfigError(f"fit_stride must be >= 1, got {self.fit_stride}")


def load_pseudo_label_config(path: str | Path | None) -> PseudoLabelConfig:
    return PseudoLabelConfig() if path is None else load_config(PseudoLabelConfig, path)


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``--shard i/N``)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard takes i/N (for example 0/4), got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {text}: need 0 <= i < N")
        return cls(index, count)

    def frames(self, length: int) -> range:
        """A contiguous block of a sequence's frames: blocks of all shards tile 0..length-1."""
        return range(self.index * length // self.count, (self.index + 1) * length // self.count)

    def owns_sequence(self, position: int) -> bool:
        return position % self.count == self.index


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _half(flow: np.ndarray) -> np.ndarray:
    height, width = flow.shape[:2]
    size = (width // FLOW_STORAGE_SCALE, height // FLOW_STORAGE_SCALE)
    return (cv2.resize(flow, size, interpolation=cv2.INTER_AREA) / FLOW_STORAGE_SCALE).astype(np.float16)


def _full(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    up = cv2.resize(flow.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return up * FLOW_STORAGE_SCALE


@dataclass
class FrameWork:
    """What step 2 keeps of one frame (t with its neighbour n = t+1, or t-1 for the last frame)."""

    labels: np.ndarray  # HxW uint8 pseudo-classes
    motion_masks: np.ndarray  # N x H x W bool
    motion_scores: np.ndarray  # N float32
    depth: np.ndarray  # HxW float32 m, 0 invalid
    flow_to_neighbour: np.ndarray  # HxWx2 on frame t's pixels
    flow_from_neighbour: np.ndarray  # HxWx2 on the neighbour's pixels, pointing into t
    neighbour_is_next: bool
    timings: dict[str, float]

    def to_bytes(self) -> bytes:
        height, width = self.labels.shape
        return _npz_bytes(
            labels=self.labels,
            motion_masks=np.packbits(
                self.motion_masks.reshape(len(self.motion_masks), height * width), axis=1
            ),
            motion_count=np.array(len(self.motion_masks)),
            motion_scores=self.motion_scores.astype(np.float32),
            depth=self.depth.astype(np.float16),
            flow_to_neighbour=_half(self.flow_to_neighbour),
            flow_from_neighbour=_half(self.flow_from_neighbour),
            neighbour_is_next=np.array(self.neighbour_is_next),
            shape=np.array([height, width]),
            timings=np.array(json.dumps(self.timings)),
        )

    @classmethod
    def read(cls, path: Path) -> FrameWork:
        try:
            with np.load(path) as data:
                height, width = (int(v) for v in data["shape"])
                count = int(data["motion_count"])
                packed = data["motion_masks"]
                masks = np.unpackbits(packed, axis=1, count=height * width).astype(bool)
                return cls(
                    labels=data["labels"],
                    motion_masks=masks.reshape(count, height, width),
                    motion_scores=data["motion_scores"],
                    depth=data["depth"].astype(np.float32),
                    flow_to_neighbour=_full(data["flow_to_neighbour"], height, width),
                    flow_from_neighbour=_full(data["flow_from_neighbour"], height, width),
                    neighbour_is_next=bool(data["neighbour_is_next"]),
                    timings=json.loads(str(data["timings"])),
                )
        except (OSError, ValueError, KeyError, EOFError) as error:
            raise ValueError(f"{path}: corrupt pseudo-label work file ({error}); delete it to redo") from None


class PseudoLabeller:
    """The per-frame part of stage 1 (geometry, motion ensemble, semantics), usable on its own."""

    def __init__(self, config: PseudoLabelConfig, semantics: SemanticPseudoLabeller) -> None:
        self.config = config
        self.geometry = SequenceGeometry(config.geometry)
        self.motion = MotionInstanceSegmenter(config.motion)
        self.semantics = semantics

    def frame(self, frame: StereoFrame, neighbour: StereoFrame, neighbour_is_next: bool) -> FrameWork:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        pair = self.geometry.pair(frame, neighbour)
        timings["geometry"] = time.perf_counter() - start
        start = time.perf_counter()
        try:
            motion = self.motion.segment_ensemble(pair, camera=frame.camera)
            masks, scores = motion.masks.astype(bool), np.asarray(motion.scores, np.float32)
        except ValueError as error:
            # e.g. a covered lens: no valid scene flow. The frame keeps its semantics, no instances.
            logger.warning("frame %s/%d: no motion instances: %s", frame.sequence, frame.index, error)
            masks = np.zeros((0, frame.height, frame.width), bool)
            scores = np.zeros(0, np.float32)
            timings["motion_failed"] = 1.0
        timings["motion"] = time.perf_counter() - start
        start = time.perf_counter()
        semantic = self.semantics.predict(frame.left, pair.frame_t.depth)
        timings["semantics"] = time.perf_counter() - start
        return FrameWork(
            labels=semantic.labels.astype(np.uint8),
            motion_masks=masks,
            motion_scores=scores,
            depth=np.where(pair.frame_t.valid_depth, pair.frame_t.depth, 0.0).astype(np.float32),
            flow_to_neighbour=pair.flow.forward,
            flow_from_neighbour=pair.flow.backward,
            neighbour_is_next=neighbour_is_next,
            timings=timings,
        )


def semantic_fit_samples(
    sequences: list[InputSequence], config: PseudoLabelConfig, progress: bool = True
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(left image, stereo depth with 0 where invalid) of every ``fit_stride``-th frame: what the
    semantic prototypes (and any baseline compared with them) are fitted on, no labels."""
    total = sum(len(range(0, s.length, config.fit_stride)) for s in sequences)
    with tqdm(total=total, desc="semantic samples", unit="frame", disable=not progress) as bar:
        for sequence in sequences:
            for index, frame in enumerate(sequence.frames()):
                if index % config.fit_stride == 0:
                    geometry = compute_frame_geometry(frame, config.geometry)
                    bar.update()
                    yield frame.left, np.where(geometry.valid_depth, geometry.depth, 0.0).astype(np.float32)


def fit_semantics(
    sequences: list[InputSequence], config: PseudoLabelConfig, backbone: object, progress: bool = True
) -> SemanticPseudoLabeller:
    """Prototypes from every ``fit_stride``-th frame of all sequences."""
    labeller = SemanticPseudoLabeller(config.semantics, backbone)
    labeller.fit(semantic_fit_samples(sequences, config, progress))
    return labeller


def work_path(output: Path, sequence: str, index: int) -> Path:
    return output / "work" / sequence / f"{index:06d}.npz"


def run_frames(
    sequences: list[InputSequence],
    output: Path,
    labeller: PseudoLabeller,
    shard: Shard = Shard(),
    progress: bool = True,
) -> int:
    """Step 2 for this shard's frames; finished frames (their work file exists) are not redone."""
    todo = {
        s.name: {i for i in shard.frames(s.length) if not work_path(output, s.name, i).exists()}
        for s in sequences
    }
    total = sum(len(v) for v in todo.values())
    done = 0
    with tqdm(
        total=total, desc=f"pseudo-labels {shard.index}/{shard.count}", unit="frame", disable=not progress
    ) as bar:
        for sequence in sequences:
            for index, frame, neighbour in sequence.frame_pairs(todo[sequence.name]):
                work = labeller.frame(frame, neighbour, neighbour_is_next=index < sequence.length - 1)
                write_bytes_atomic(work_path(output, sequence.name, index), work.to_bytes())
                # A redone frame makes the sequence's cached counts and finished labels stale.
                (output / "work" / sequence.name / "thing_stuff_counts.json").unlink(missing_ok=True)
                (output / sequence.name / "sequence.json").unlink(missing_ok=True)
                done += 1
                bar.update()
                bar.set_postfix({k: f"{v:.2f}s" for k, v in work.timings.items()})
    return done


def missing_work(sequences: list[InputSequence], output: Path) -> list[str]:
    return [
        f"{s.name}/{i:06d}"
        for s in sequences
        for i in range(s.length)
        if not work_path(output, s.name, i).exists()
    ]


def thing_stuff_counts(sequences: list[InputSequence], output: Path, num_classes: int) -> ThingStuffCounts:
    """Counts over the whole split (motion masks only, as CUPS), cached per sequence."""
    counts = ThingStuffCounts.empty(num_classes)
    for sequence in sequences:
        cache = output / "work" / sequence.name / "thing_stuff_counts.json"
        if cache.exists():
            part = ThingStuffCounts.from_json(json.loads(cache.read_text()))
        else:
            part = ThingStuffCounts.empty(num_classes)
            for index in range(sequence.length):
                work = FrameWork.read(work_path(output, sequence.name, index))
                part.update(work.labels, work.motion_masks)
            write_json_atomic(cache, part.to_json())
        counts = counts + part
    return counts


def _flows(works: list[FrameWork], index: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(flow on frame t into t-1, flow on frame t into t+1) from the stored pair flows."""
    last = len(works) - 1
    work = works[index]
    to_previous = None
    if index > 0:
        to_previous = (
            work.flow_to_neighbour if not work.neighbour_is_next else works[index - 1].flow_from_neighbour
        )
    to_next = work.flow_to_neighbour if index < last and work.neighbour_is_next else None
    return to_previous, to_next


def disjoint_masks(masks: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Higher-scored masks win overlaps; masks left empty go, with their scores (so every later
    step, which keeps non-empty masks in order, stays aligned with the scores)."""
    order = np.argsort(-scores, kind="stable")
    taken = np.zeros(masks.shape[1:], bool)
    kept_masks, kept_scores = [], []
    for index in order:
        mask = masks[index] & ~taken
        if mask.any():
            kept_masks.append(mask)
            kept_scores.append(scores[index])
            taken |= mask
    if not kept_masks:
        return np.zeros((0, *masks.shape[1:]), bool), np.zeros(0, np.float32)
    return np.stack(kept_masks), np.asarray(kept_scores, np.float32)


def finalize_sequence(
    sequence: InputSequence,
    output: Path,
    config: PseudoLabelConfig,
    thing_classes: np.ndarray,
    camera: object,
) -> list[tuple[np.ndarray, PanopticPseudoLabel]]:
    """Step 3 for one sequence: smoothing, static instances, fusion, pseudo-tracks, files.
    Returns the (smoothed pseudo-classes, panoptic pseudo-label) of each frame."""
    works = [FrameWork.read(work_path(output, sequence.name, i)) for i in range(sequence.length)]
    tracker = PseudoTrackPropagator(config.video)
    folder = output / sequence.name
    labels_out: list[tuple[np.ndarray, PanopticPseudoLabel]] = []
    for index, work in enumerate(works):
        to_previous, to_next = _flows(works, index)
        labels = work.labels
        if config.video.smoothing:
            previous = works[index - 1].labels if index > 0 else None
            following = works[index + 1].labels if index < len(works) - 1 else None
            labels = smooth_labels(labels, previous, to_previous, following, to_next)
        masks, scores = disjoint_masks(work.motion_masks, work.motion_scores)
        sources = ["motion"] * len(masks)
        if config.static_instances:
            thing_mask = (labels < len(thing_classes)) & thing_classes[
                np.minimum(labels, len(thing_classes) - 1)
            ]
            depth_masks = depth_edge_instances(work.depth, thing_mask, camera, config.depth_instances)
            masks, source_array = merge_instances(masks, depth_masks)
            sources = [str(s) for s in source_array]
            extra = np.full(len(masks) - len(scores), config.static_instance_score, np.float32)
            scores = np.concatenate([scores, extra])
        track_ids = tracker.step(masks, to_previous)
        fused = fuse_panoptic(labels, masks, scores, thing_classes, sources, track_ids)
        name = f"{index:06d}"
        write_png_atomic(folder / "panoptic" / f"{name}.png", panoptic_to_rgb(fused.panoptic))
        write_json_atomic(
            folder / f"{name}.json",
            {
                "index": index,
                "instances": [i.to_json() for i in fused.instances],
                "dropped_instances": fused.dropped_instances,
                "timings": work.timings,
            },
        )
        labels_out.append((labels, fused))
    return labels_out


def read_pseudo_label(output: Path, sequence: str, index: int) -> np.ndarray:
    """Panoptic ids (class * 1000 + pseudo-track id) of one written pseudo-label."""
    path = output / sequence / "panoptic" / f"{index:06d}.png"
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"no pseudo-label at {path}")
    return panoptic_from_rgb(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def pseudo_class_colours(labels: np.ndarray) -> np.ndarray:
    """A fixed colour per pseudo-class (golden-angle hues), grey for ignore."""
    classes = np.arange(256)
    hues = (classes * 137.508) % 180
    lut = cv2.cvtColor(
        np.stack([hues, np.full(256, 200), np.full(256, 230)], axis=1).astype(np.uint8)[None],
        cv2.COLOR_HSV2RGB,
    )[0]
    lut[IGNORE_CLASS] = (40, 40, 40)
    return lut[labels]


def montage(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]], max_rows: int = 4) -> np.ndarray:
    """Left image | semantic pseudo-classes | pseudo-tracks (own colour per track), a row per frame."""
    from cups_ros.sim.preview import colour_tracks

    picked = rows[:: max(1, len(rows) // max_rows)][:max_rows]
    lines = []
    for left, labels, panoptic in picked:
        semantic = pseudo_class_colours(labels)
        overlay = cv2.addWeighted(left, 0.45, semantic, 0.55, 0.0)
        lines.append(np.concatenate([left, overlay, colour_tracks(panoptic, left)], axis=1))
    return np.concatenate(lines, axis=0)


def run_finalize(
    sequences: list[InputSequence],
    output: Path,
    config: PseudoLabelConfig,
    shard: Shard = Shard(),
    progress: bool = True,
) -> ThingStuffCounts:
    """Step 3 for this shard's sequences; needs step 2 done for every frame of every sequence."""
    missing = missing_work(sequences, output)
    if missing:
        raise ValueError(
            f"{len(missing)} frame(s) have no pseudo-label work yet (first: {missing[0]}): run every "
            "shard's frames step first"
        )
    counts = thing_stuff_counts(sequences, output, config.semantics.num_classes)
    thing_classes = counts.thing_classes(config.psi)
    write_json_atomic(
        output / "thing_stuff.json",
        {
            **counts.to_json(),
            "shares": counts.shares().round(5).tolist(),
            "psi": config.psi,
            "thing": thing_classes.tolist(),
        },
    )
    owned = [s for position, s in enumerate(sequences) if shard.owns_sequence(position)]
    for sequence in tqdm(owned, desc="finalize", unit="sequence", disable=not progress):
        meta_path = output / sequence.name / "sequence.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            # Done, unless the split's thing classes changed since (frames redone elsewhere).
            if meta.get("complete") and meta.get("thing_classes") == np.flatnonzero(thing_classes).tolist():
                continue
        frames = list(sequence.frames())
        labels = finalize_sequence(sequence, output, config, thing_classes, frames[0].camera)
        rows = [(f.left, classes, p.panoptic) for f, (classes, p) in zip(frames, labels, strict=True)]
        write_png_atomic(output / sequence.name / "montage.png", montage(rows))
        write_json_atomic(
            meta_path,
            {
                "name": sequence.name,
                "source": str(sequence.path),
                "frames": len(frames),
                "stamps_ns": [f.stamp_ns for f in frames],
                "num_classes": config.semantics.num_classes,
                "thing_classes": np.flatnonzero(thing_classes).tolist(),
                "instances_per_frame": float(np.mean([len(p.instances) for _, p in labels])),
                "complete": True,
            },
        )
    return counts


def run_pseudo_labelling(
    sequences: list[InputSequence],
    output: Path,
    config: PseudoLabelConfig,
    shard: Shard = Shard(),
    steps: tuple[str, ...] = ("fit", "frames", "finalize"),
    semantics_path: Path | None = None,
    progress: bool = True,
) -> None:
    """The whole of stage 1 for this shard; each step resumes where a killed run stopped."""
    output.mkdir(parents=True, exist_ok=True)
    write_config(config, output / "pseudo_label.yaml", node_name=None)
    prototypes = output / "semantics.npz"
    if semantics_path is not None:
        # Prototypes fitted elsewhere (e.g. on the train split) travel with the dataset.
        if not Path(semantics_path).exists():
            raise FileNotFoundError(f"semantic prototypes {semantics_path} do not exist")
        write_bytes_atomic(prototypes, Path(semantics_path).read_bytes())
    backbone = None
    labeller = None
    if "fit" in steps and not prototypes.exists():
        backbone = load_backbone(config.features)
        labeller = fit_semantics(sequences, config, backbone, progress)
        labeller.save(prototypes)
    if "frames" in steps:
        if labeller is None:
            if not prototypes.exists():
                raise FileNotFoundError(f"semantic prototypes {prototypes} missing: run the fit step first")
            backbone = backbone or load_backbone(config.features)
            labeller = SemanticPseudoLabeller.load(prototypes, backbone, config.semantics)
        run_frames(sequences, output, PseudoLabeller(config, labeller), shard, progress)
    if "finalize" in steps:
        run_finalize(sequences, output, config, shard, progress)
