"""Stage-1 pseudo-labelling on a live stereo stream, one frame pair at a time.

The offline pipeline sees a whole sequence (smoothing over t-1, t+1; pseudo-tracks over the video);
online, a frame is labelled when its successor arrives, with the semantic prototypes and the
thing/stuff split of the offline fit (so the pseudo-classes are the network's classes). What online
leaves out: temporal smoothing and pseudo-tracks (frames are labelled at a stride, so they carry no
flow to each other); continued training uses no tracking loss.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cups_ros.core.config import ConfigError
from cups_ros.core.frame import StereoFrame
from cups_ros.features import load_backbone
from cups_ros.pseudo.depth_instances import depth_edge_instances, merge_instances
from cups_ros.pseudo.fusion import PanopticPseudoLabel, fuse_panoptic
from cups_ros.pseudo.pipeline import (
    PseudoLabelConfig,
    PseudoLabeller,
    disjoint_masks,
    load_pseudo_label_config,
)
from cups_ros.pseudo.semantics import SemanticPseudoLabeller

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineLabelConfig:
    """When frames are labelled (config/online_learning.yaml ``labeller``)."""

    fit: str = ""
    """Folder of the offline pseudo-label fit (semantics.npz, thing_stuff.json, pseudo_label.yaml)."""
    frame_stride: int = 5
    """Label every n-th frame (each labelled frame costs seconds of CPU: geometry, 8 motion runs)."""
    min_interval: float = 0.0
    """Seconds of stream time (header stamps) at least between two labelled frames."""
    motion_runs: int = 0
    """Motion ensemble size online (0: the fit's own, 8 in CUPS); fewer runs label faster."""

    def chooses(self, frames_seen: int, stamp_ns: int, last_chosen_ns: int | None) -> bool:
        """Whether the stream's frame number ``frames_seen`` (stamp ``stamp_ns``) is to be labelled."""
        if frames_seen % self.frame_stride:
            return False
        if last_chosen_ns is not None and self.min_interval > 0:
            return stamp_ns - last_chosen_ns >= self.min_interval * 1e9
        return True

    def __post_init__(self) -> None:
        if self.frame_stride < 1:
            raise ConfigError(f"labeller.frame_stride must be >= 1, got {self.frame_stride}")
        if self.min_interval < 0:
            raise ConfigError(f"labeller.min_interval must be >= 0 s, got {self.min_interval}")
        if self.motion_runs < 0:
            raise ConfigError(f"labeller.motion_runs must be >= 0, got {self.motion_runs}")


@dataclass
class OnlinePseudoLabel:
    """The pseudo-label of one frame: its left image and panoptic ids (class * 1000 + instance)."""

    frame: StereoFrame
    label: PanopticPseudoLabel
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def panoptic(self) -> np.ndarray:
        return self.label.panoptic


@dataclass
class PseudoLabelFit:
    """What the offline fit hands to online labelling."""

    config: PseudoLabelConfig
    semantics: SemanticPseudoLabeller
    thing_classes: np.ndarray  # (K,) bool

    @classmethod
    def load(cls, folder: str | Path) -> PseudoLabelFit:
        folder = Path(folder)
        missing = [n for n in ("semantics.npz", "thing_stuff.json") if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{folder} is not a pseudo-label fit: {', '.join(missing)} missing "
                "(run training/pseudo_label.py on recorded drives first)"
            )
        config_path = folder / "pseudo_label.yaml"
        config = load_pseudo_label_config(config_path if config_path.is_file() else None)
        try:
            thing = np.asarray(json.loads((folder / "thing_stuff.json").read_text())["thing"], bool)
        except (ValueError, KeyError) as error:
            raise ValueError(f"{folder / 'thing_stuff.json'} is corrupt: {error}") from None
        semantics = SemanticPseudoLabeller.load(
            folder / "semantics.npz", load_backbone(config.features), config.semantics
        )
        if len(thing) != config.semantics.num_classes:
            raise ValueError(
                f"{folder}: thing_stuff.json has {len(thing)} classes, the semantics "
                f"{config.semantics.num_classes}"
            )
        return cls(config, semantics, thing)

    @property
    def thing_class_ids(self) -> list[int]:
        return np.flatnonzero(self.thing_classes).tolist()


class OnlineLabeller:
    """Frames in, in stream order; every ``frame_stride``-th frame comes out pseudo-labelled once its
    successor has arrived (the motion step needs the pair t, t+1)."""

    def __init__(self, fit: PseudoLabelFit, config: OnlineLabelConfig) -> None:
        self.fit = fit
        self.config = config
        pseudo_config = fit.config
        if config.motion_runs:
            pseudo_config = dataclasses.replace(
                pseudo_config,
                motion=dataclasses.replace(pseudo_config.motion, ensemble_runs=config.motion_runs),
            )
        self.pseudo_config = pseudo_config
        self.labeller = PseudoLabeller(pseudo_config, fit.semantics)
        self._waiting: StereoFrame | None = None  # chosen frame, waiting for its successor
        self._seen = 0
        self._last_labelled_ns: int | None = None
        self._last_stamp_ns: int | None = None

    def reset(self) -> None:
        """A new stream (or a jump in time): nothing waits for a successor any more."""
        self._waiting = None
        self._seen = 0
        self._last_stamp_ns = None

    def wants(self, frame: StereoFrame) -> bool:
        """Whether this frame would be labelled (cheap: callers skip copying frames that are not)."""
        return self.config.chooses(self._seen, frame.stamp_ns, self._last_labelled_ns)

    def offer(self, frame: StereoFrame) -> OnlinePseudoLabel | None:
        """The pseudo-label of the frame chosen before this one, if this one is its successor."""
        if self._last_stamp_ns is not None and frame.stamp_ns <= self._last_stamp_ns:
            _log.warning(
                "frame stamps go back (%d after %d ns): labelling restarts",
                frame.stamp_ns,
                self._last_stamp_ns,
            )
            self.reset()
        self._last_stamp_ns = frame.stamp_ns
        result = None
        if self._waiting is not None:
            chosen, self._waiting = self._waiting, None
            if chosen.left.shape == frame.left.shape:
                result = self.label_pair(chosen, frame)
        if self.wants(frame):
            self._waiting = frame
        self._seen += 1
        return result

    def label_pair(self, frame: StereoFrame, successor: StereoFrame) -> OnlinePseudoLabel:
        """The panoptic pseudo-label of ``frame`` (fusion as in the offline finalize, minus video)."""
        work = self.labeller.frame(frame, successor, neighbour_is_next=True)
        start = time.perf_counter()
        masks, scores = disjoint_masks(work.motion_masks, work.motion_scores)
        sources = ["motion"] * len(masks)
        thing = self.fit.thing_classes
        if self.pseudo_config.static_instances:
            labels = work.labels
            thing_mask = (labels < len(thing)) & thing[np.minimum(labels, len(thing) - 1)]
            depth_masks = depth_edge_instances(
                work.depth, thing_mask, frame.camera, self.pseudo_config.depth_instances
            )
            masks, source_array = merge_instances(masks, depth_masks)
            sources = [str(s) for s in source_array]
            extra = np.full(len(masks) - len(scores), self.pseudo_config.static_instance_score, np.float32)
            scores = np.concatenate([scores, extra])
        label = fuse_panoptic(work.labels, masks, scores, thing, sources)
        timings = {**work.timings, "fusion": time.perf_counter() - start}
        self._last_labelled_ns = frame.stamp_ns
        return OnlinePseudoLabel(frame, label, timings)
