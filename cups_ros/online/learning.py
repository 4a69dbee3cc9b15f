"""The online learning loop without transport: pseudo-label recording and continued training rounds.

Two halves, so that they can live in two processes (the pseudo_label_node and the self_training_node
share only the buffer folder and the model store):

- ``PseudoLabelRecorder`` / ``AsyncPseudoLabelling``: frames in -> Stage-1 pseudo-labels -> buffer.
  The async form labels on its own thread; frames that arrive while it is busy are counted, never
  queued, so the camera callback never waits.
- ``ContinualLearning``: rounds of heads-only training on the buffer, the promotion gate against the
  served model on held-out samples, publication of a better-or-equal model to the store (atomic,
  versioned, with a "current" pointer the perception node follows).

``cups-ros replay --online-learning`` runs both in one process, in step with the replayed frames.
"""

from __future__ import annotations

import collections
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cups_ros.core.config import ConfigError
from cups_ros.core.frame import StereoFrame
from cups_ros.io.bag import StereoTopics
from cups_ros.model.model_file import load_model
from cups_ros.model.network import PanopticTrackingNet
from cups_ros.model.postprocess import PostProcessConfig
from cups_ros.online.buffer import BufferSample, ReplayBuffer, ReplayBufferConfig
from cups_ros.online.gate import GateDecision, PromotionGate, PromotionGateConfig
from cups_ros.online.labeller import OnlineLabelConfig, OnlineLabeller, OnlinePseudoLabel, PseudoLabelFit
from cups_ros.online.store import ModelStore, ModelStoreConfig, ModelVersion
from cups_ros.online.trainer import ContinualTrainer, ContinualTrainingConfig
from cups_ros.pipeline.perception import QosConfig, SynchronizerConfig, default_node_topics

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OnlineLearningConfig:
    """config/online_learning.yaml: both halves read the same file."""

    buffer_dir: str = "online/buffer"
    """The replay buffer's folder (shared by the pseudo-label and self-training processes)."""
    store_dir: str = "online/models"
    """The model store's folder; the perception node follows its current pointer."""
    initial_model: str = ""
    """Model file served before the store has any version (the bootstrap model)."""
    reset_after_rejections: int = 3
    """After this many rejected candidates in a row, training restarts from the served model."""
    cpu_priority: Literal["idle", "low", "normal"] = "idle"
    """Scheduling of the learning processes: idle (SCHED_IDLE: only CPU time perception leaves
    unused), low (nice 19) or normal. Perception's frame rate comes first."""
    labeller: OnlineLabelConfig = field(default_factory=OnlineLabelConfig)
    buffer: ReplayBufferConfig = field(default_factory=ReplayBufferConfig)
    training: ContinualTrainingConfig = field(default_factory=ContinualTrainingConfig)
    gate: PromotionGateConfig = field(default_factory=PromotionGateConfig)
    store: ModelStoreConfig = field(default_factory=ModelStoreConfig)
    postprocess: PostProcessConfig = field(default_factory=PostProcessConfig)

    def __post_init__(self) -> None:
        if self.reset_after_rejections < 1:
            raise ConfigError(f"reset_after_rejections must be >= 1, got {self.reset_after_rejections}")


def lower_cpu_priority(priority: str) -> str:
    """Applies ``cpu_priority`` to the calling process (Linux; elsewhere nice where it exists)."""
    if priority == "normal":
        return "normal"
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "idle (SCHED_IDLE)"
        except OSError as error:
            _log.warning("SCHED_IDLE not allowed (%s): nice 19 instead", error)
    try:
        os.nice(19 - os.nice(0))
    except OSError as error:
        _log.warning("could not lower the CPU priority: %s", error)
        return "normal"
    return "low (nice 19)"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def to_buffer_sample(label: OnlinePseudoLabel) -> BufferSample:
    frame = label.frame
    return BufferSample(
        image=frame.left,
        panoptic=label.panoptic,
        stamp_ns=frame.stamp_ns,
        source=frame.sequence or frame.frame_id or "stream",
    )


class PseudoLabelRecorder:
    """In step with the stream (replay): every chosen frame is labelled when its successor arrives."""

    def __init__(self, labeller: OnlineLabeller, buffer: ReplayBuffer) -> None:
        self.labeller = labeller
        self.buffer = buffer
        self.labelled = 0

    def offer(self, frame: StereoFrame) -> OnlinePseudoLabel | None:
        label = self.labeller.offer(frame)
        if label is not None:
            self.buffer.add(to_buffer_sample(label))
            self.labelled += 1
        return label


@dataclass
class LabellingStats:
    frames_seen: int = 0
    labelled: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: collections.defaultdict(int))
    errors: int = 0
    last_error: str = ""
    last_label_seconds: float = 0.0


LabelCallback = Callable[[OnlinePseudoLabel], None]


class AsyncPseudoLabelling:
    """The recorder on a worker thread: ``submit`` returns at once; a chosen frame's pair is labelled
    only if the worker is free when the successor arrives (otherwise counted as skipped)."""

    def __init__(
        self,
        labeller: OnlineLabeller,
        buffer: ReplayBuffer,
        on_label: LabelCallback | None = None,
    ) -> None:
        self.labeller = labeller
        self.buffer = buffer
        self.on_label = on_label
        self.stats = LabellingStats()
        self._condition = threading.Condition()
        self._chosen: StereoFrame | None = None
        self._pending: tuple[StereoFrame, StereoFrame] | None = None
        self._busy = False
        self._running = False
        self._last_chosen_ns: int | None = None
        self._last_stamp_ns: int | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._running = True
        self._thread = threading.Thread(target=self._run, name="pseudo-labelling", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        with self._condition:
            self._running = False
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _choose(self, frame: StereoFrame) -> bool:
        return self.labeller.config.chooses(self.stats.frames_seen, frame.stamp_ns, self._last_chosen_ns)

    def submit(self, frame: StereoFrame) -> None:
        with self._condition:
            if self._last_stamp_ns is not None and frame.stamp_ns <= self._last_stamp_ns:
                self.stats.skipped["stamp went back"] += 1
                self._chosen = None
            self._last_stamp_ns = frame.stamp_ns
            if self._chosen is not None:
                chosen, self._chosen = self._chosen, None
                if chosen.left.shape != frame.left.shape:
                    self.stats.skipped["image size changed"] += 1
                elif self._busy or self._pending is not None:
                    self.stats.skipped["labeller busy"] += 1
                else:
                    self._pending = (chosen, frame)
                    self._condition.notify_all()
            if self._choose(frame):
                if self._busy or self._pending is not None:
                    self.stats.skipped["labeller busy"] += 1
                else:
                    self._chosen = frame
                    self._last_chosen_ns = frame.stamp_ns
            self.stats.frames_seen += 1

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._running and self._pending is None:
                    self._condition.wait()
                if not self._running:
                    return
                pair, self._pending = self._pending, None
                self._busy = True
            start = time.perf_counter()
            try:
                label = self.labeller.label_pair(*pair)
                self.buffer.add(to_buffer_sample(label))
            except Exception as error:  # one bad pair must not stop labelling
                _log.exception("pseudo-labelling of frame %d failed", pair[0].index)
                with self._condition:
                    self.stats.errors += 1
                    self.stats.last_error = f"{type(error).__name__}: {error}"
                    self._busy = False
                continue
            with self._condition:
                self.stats.labelled += 1
                self.stats.last_label_seconds = time.perf_counter() - start
                self._busy = False
                self._condition.notify_all()
            if self.on_label is not None:
                try:
                    self.on_label(label)
                except Exception:
                    _log.exception("pseudo-label callback failed")

    def wait_until_idle(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._busy or self._pending is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True


@dataclass
class RoundResult:
    steps: int
    decision: GateDecision | None
    """None: too few held-out samples to judge (the candidate waits for the next round)."""
    version: ModelVersion | None = None
    """The published version when the candidate was promoted."""
    seconds: float = 0.0

    @property
    def promoted(self) -> bool:
        return self.version is not None


@dataclass
class OnlineLearningStatus:
    """What the status topic and the diagnostics report."""

    buffer_samples: int = 0
    holdout_samples: int = 0
    buffer_bytes: int = 0
    steps_done: int = 0
    rounds: int = 0
    promotions: int = 0
    rejections: int = 0
    current_version: int | None = None
    last_promotion: str = ""
    last_decision: dict[str, Any] = field(default_factory=dict)
    last_losses: dict[str, float] = field(default_factory=dict)
    state: str = "waiting for samples"

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


class ContinualLearning:
    """Rounds of training -> gate -> store, from the served model (store's current or the initial one)."""

    def __init__(self, config: OnlineLearningConfig, buffer: ReplayBuffer, store: ModelStore) -> None:
        self.config = config
        self.buffer = buffer
        self.store = store
        current = store.current()
        if current is not None:
            self.served = load_model(current.model_path)
        elif config.initial_model:
            self.served = load_model(config.initial_model)
        else:
            raise ConfigError("online learning needs initial_model (the bootstrap model) or a filled store")
        self.served_version = current.version if current is not None else None
        self.trainer = ContinualTrainer(self.served, config.training)
        self.gate = PromotionGate(config.gate, config.postprocess)
        self.status = OnlineLearningStatus(current_version=self.served_version)
        self._rejections_in_a_row = 0
        self._lock = threading.Lock()

    def _refresh_status(self, state: str) -> None:
        stats = self.buffer.stats()
        with self._lock:
            self.status.buffer_samples = int(stats.get("samples", 0))
            self.status.holdout_samples = int(stats.get("holdout", 0))
            self.status.buffer_bytes = int(stats.get("bytes", 0))
            self.status.steps_done = self.trainer.steps_done
            self.status.last_losses = dict(self.trainer.last_losses)
            self.status.state = state

    def status_snapshot(self) -> OnlineLearningStatus:
        with self._lock:
            return OnlineLearningStatus(**self.status.to_dict())

    def run_round(self, stop: threading.Event | None = None) -> RoundResult | None:
        """None when the buffer holds too few training samples yet."""
        self.buffer.refresh()
        if not self.trainer.ready(self.buffer):
            self._refresh_status("waiting for samples")
            return None
        start = time.perf_counter()
        self._refresh_status("training")
        steps = self.trainer.train_round(self.buffer, stop)
        candidate = self.trainer.candidate()
        self._refresh_status("judging")
        decision = self.gate.decide(candidate, self.served, self.buffer.holdout_samples())
        result = RoundResult(steps, decision)
        with self._lock:
            self.status.rounds += 1
        if decision is None:
            self._refresh_status("waiting for held-out samples")
        elif decision.promote:
            metadata = {
                "scores": decision.candidate.to_dict(),
                "gate": decision.to_dict(),
                "steps_done": self.trainer.steps_done,
                "parent_version": self.served_version,
                "buffer_samples": len(self.buffer),
            }
            version = self.store.publish(candidate, metadata)
            self.served, self.served_version = candidate, version.version
            self._rejections_in_a_row = 0
            result.version = version
            with self._lock:
                self.status.promotions += 1
                self.status.current_version = version.version
                self.status.last_promotion = _now()
            _log.info("promoted model version %d: %s", version.version, decision.reason)
        else:
            self.store.record_rejection({"gate": decision.to_dict(), "steps_done": self.trainer.steps_done})
            self._rejections_in_a_row += 1
            with self._lock:
                self.status.rejections += 1
            _log.info("candidate not promoted: %s", decision.reason)
            if self._rejections_in_a_row >= self.config.reset_after_rejections:
                _log.info(
                    "%d rejections in a row: training restarts from the served model",
                    self._rejections_in_a_row,
                )
                self.trainer.reset_to(self.served)
                self._rejections_in_a_row = 0
        if decision is not None:
            with self._lock:
                self.status.last_decision = decision.to_dict()
            self._refresh_status("idle")
        result.seconds = time.perf_counter() - start
        return result

    def adopt(self, network: PanopticTrackingNet, version: int | None) -> None:
        """The store moved on without us (a rollback, another trainer): continue from its model."""
        self.served, self.served_version = network, version
        self.trainer.reset_to(network)
        with self._lock:
            self.status.current_version = version


def open_online_learning(
    config: OnlineLearningConfig, buffer_writer: bool = True
) -> tuple[ReplayBuffer, ModelStore]:
    """buffer_writer False in the trainer process: only the labeller's process adds and cleans."""
    buffer = ReplayBuffer(Path(config.buffer_dir), config.buffer, writer=buffer_writer)
    return buffer, ModelStore(Path(config.store_dir), config.store)


def open_labeller(config: OnlineLearningConfig) -> OnlineLabeller:
    if not config.labeller.fit:
        raise ConfigError(
            "labeller.fit must name the offline pseudo-label folder (semantics.npz, thing_stuff.json)"
        )
    return OnlineLabeller(PseudoLabelFit.load(config.labeller.fit), config.labeller)


@dataclass
class ReplayLearningReport:
    labelled: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)
    promotions: int = 0
    label_seconds: float = 0.0
    training_seconds: float = 0.0


class ReplayOnlineLearning:
    """Online learning in step with a replayed drive, deterministic for measurement: frames are
    labelled as they pass, and every ``round_every`` new samples a training round runs and, if the
    gate promotes, the perception pipeline switches to the new version from the next frame on."""

    def __init__(self, config: OnlineLearningConfig, round_every: int = 4) -> None:
        if round_every < 1:
            raise ConfigError(f"round_every must be >= 1, got {round_every}")
        self.config = config
        self.round_every = round_every
        self.buffer, self.store = open_online_learning(config)
        self.recorder = PseudoLabelRecorder(open_labeller(config), self.buffer)
        self.learning = ContinualLearning(config, self.buffer, self.store)
        check_classes_agree(self.learning.served, self.recorder.labeller.fit)
        self.report = ReplayLearningReport()
        self._since_round = 0

    def serving_path(self, backend: str) -> str | None:
        """The store's current model for ``backend`` (None: serve the initial model)."""
        return self.store.serving_path(backend) if self.store.current() is not None else None

    def after_frame(self, frame: StereoFrame) -> ModelVersion | None:
        """Labels, trains when due; the version to serve from the next frame, if one was promoted."""
        start = time.perf_counter()
        label = self.recorder.offer(frame)
        self.report.label_seconds += time.perf_counter() - start
        if label is None:
            return None
        self.report.labelled += 1
        self._since_round += 1
        if self._since_round < self.round_every:
            return None
        self._since_round = 0
        start = time.perf_counter()
        result = self.learning.run_round()
        self.report.training_seconds += time.perf_counter() - start
        if result is None:
            return None
        self.report.rounds.append(
            {
                "frame": frame.index,
                "steps": result.steps,
                "decision": result.decision.to_dict() if result.decision else None,
                "version": result.version.version if result.version else None,
            }
        )
        if result.version is not None:
            self.report.promotions += 1
        return result.version


def check_classes_agree(network: PanopticTrackingNet, fit: PseudoLabelFit) -> None:
    """The buffer's pseudo-classes must be the network's: same K, same thing classes."""
    network_things = sorted(network.config.thing_classes)
    if network.config.num_classes != len(fit.thing_classes) or network_things != fit.thing_class_ids:
        raise ConfigError(
            f"the pseudo-label fit has {len(fit.thing_classes)} classes (things {fit.thing_class_ids}) but "
            f"the model {network.config.num_classes} (things {network_things}): online labels must come "
            "from the fit the model was trained on"
        )


# --- the two nodes' parameters (config/online_learning.yaml; both nodes read the same file) ---------


@dataclass(frozen=True)
class PseudoLabelNodeConfig:
    """pseudo_label_node: stereo inputs as the perception node's, pseudo-labels out for inspection."""

    topics: StereoTopics = field(default_factory=default_node_topics)
    input_qos: QosConfig = field(default_factory=QosConfig)
    output_qos: QosConfig = field(default_factory=lambda: QosConfig(reliability="reliable", depth=5))
    sync: SynchronizerConfig = field(default_factory=SynchronizerConfig)
    diagnostics_period: float = 1.0
    log_throttle: float = 5.0
    online: OnlineLearningConfig = field(default_factory=OnlineLearningConfig)

    def __post_init__(self) -> None:
        if self.diagnostics_period <= 0.0:
            raise ConfigError(f"diagnostics_period must be > 0 s, got {self.diagnostics_period}")


@dataclass(frozen=True)
class SelfTrainingNodeConfig:
    """self_training_node: rounds of continued training on the shared buffer, promotion to the store."""

    idle_period: float = 5.0
    """Seconds to wait before looking again when the buffer has too few samples."""
    status_period: float = 1.0
    """Seconds between status and /diagnostics messages."""
    online: OnlineLearningConfig = field(default_factory=OnlineLearningConfig)

    def __post_init__(self) -> None:
        if self.idle_period <= 0.0 or self.status_period <= 0.0:
            raise ConfigError(
                f"idle_period and status_period must be > 0 s, got {self.idle_period}, {self.status_period}"
            )
