"""Continued self-training on the vehicle: heads only, student on the buffer's pseudo-labels, EMA teacher.

The student learns from the newest pseudo-labels of the drive (the domain the vehicle is in); the EMA
teacher averages the student over steps and is the candidate handed to the promotion gate (averaged
weights are steadier than any single step's, which is what a model served live needs). The backbone
stays frozen (CUPS's self-training, and the cheap part to run beside perception): gradients flow
through the heads only, so a step costs one frozen backbone pass plus the heads.

A compute budget keeps it from disturbing perception: its own torch thread count and a cap on steps
per minute (the trainer sleeps between steps rather than running flat out).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from cups_ros.core.config import ConfigError
from cups_ros.features.preprocessing import preprocess
from cups_ros.model.losses import LossConfig, make_targets, panoptic_losses
from cups_ros.model.network import PanopticTrackingNet, output_size
from cups_ros.train.config import AugmentationConfig
from cups_ros.train.dataset import photometric_jitter, scale_and_crop, split_label_map

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContinualTrainingConfig:
    """config/online_learning.yaml ``training``."""

    batch_size: int = 2
    learning_rate: float = 1e-4
    weight_decay: float = 1e-5
    gradient_clip: float = 1.0
    ema_momentum: float = 0.99
    """Online rounds are short (tens of steps), so the teacher follows faster than CUPS's 0.999."""
    steps_per_round: int = 40
    """Steps between two promotion attempts."""
    min_train_samples: int = 8
    """No training before the buffer holds this many training samples."""
    threads: int = 1
    """torch threads of the trainer (the budget beside perception); 0 leaves torch's setting."""
    max_steps_per_minute: float = 0.0
    """0: as fast as the threads allow."""
    bf16: bool = True
    """bfloat16 autocast on CPUs that support it (about 1.7x on AVX512-BF16), and on CUDA."""
    seed: int = 0
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    loss: LossConfig = field(default_factory=lambda: LossConfig(embedding_weight=0.0))
    """Online samples are single frames (no pseudo-tracks): no embedding loss by default."""

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "ema_momentum": 0.0 <= self.ema_momentum < 1.0,
            "steps_per_round": self.steps_per_round >= 1,
            "min_train_samples": self.min_train_samples >= 1,
            "threads": self.threads >= 0,
            "max_steps_per_minute": self.max_steps_per_minute >= 0,
            "gradient_clip": self.gradient_clip >= 0,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ConfigError(f"training: invalid {', '.join(wrong)} ({self})")


class SampleSource(Protocol):
    """What the trainer needs of the replay buffer."""

    def sample(self, count: int, rng: np.random.Generator) -> list: ...  # list[BufferSample]

    def train_ids(self) -> list[str]: ...


@dataclass
class TrainingStep:
    step: int
    losses: dict[str, float]
    seconds: float


def _autocast_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return True
    # bf16 is slower than float32 on CPUs without native bf16 instructions.
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    return device.type == "cpu" and bool(supported())


class ContinualTrainer:
    """Owns a student and its EMA teacher, both copies of the served network (never the served object)."""

    def __init__(
        self, network: PanopticTrackingNet, config: ContinualTrainingConfig, device: str = "cpu"
    ) -> None:
        self.config = config
        self.device = torch.device(device)
        self.student = self._heads_only(copy.deepcopy(network)).to(self.device).train()
        self.teacher = self._heads_only(copy.deepcopy(network)).to(self.device).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad = False
        self.thing_classes = list(network.config.thing_classes)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.student.parameters() if p.requires_grad],
            lr=config.learning_rate,
            weight_decay=config.weight_decay,
        )
        self.rng = np.random.default_rng(config.seed)
        self.steps_done = 0
        self.last_losses: dict[str, float] = {}
        self._last_step_end = 0.0
        self._lock = threading.Lock()
        self._autocast = config.bf16 and _autocast_supported(self.device)

    @staticmethod
    def _heads_only(network: PanopticTrackingNet) -> PanopticTrackingNet:
        network.config.backbone_trainable = "frozen"
        network.set_backbone_trainable()
        return network

    def reset_to(self, network: PanopticTrackingNet) -> None:
        """Start over from ``network`` (after a rollback or a model swapped in from elsewhere)."""
        with self._lock:
            self.student.load_state_dict(network.state_dict())
            self.teacher.load_state_dict(network.state_dict())
            self.optimizer.state.clear()

    def ready(self, source: SampleSource) -> bool:
        return len(source.train_ids()) >= self.config.min_train_samples

    def _batch(self, samples: Sequence) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, semantics, instances = [], [], []
        augmentation = self.config.augmentation
        for sample in samples:
            semantic, instance = split_label_map(sample.panoptic, self.thing_classes)
            image, semantic, instance = scale_and_crop(
                sample.image, semantic, instance, augmentation, self.rng
            )
            if augmentation.flip and self.rng.random() < 0.5:
                image, semantic, instance = image[:, ::-1], semantic[:, ::-1], instance[:, ::-1]
            image = photometric_jitter(np.ascontiguousarray(image), augmentation, self.rng)
            images.append(image)
            semantics.append(np.ascontiguousarray(semantic))
            instances.append(np.ascontiguousarray(instance))
        return (
            torch.from_numpy(np.stack(images)).to(self.device),
            torch.from_numpy(np.stack(semantics)).to(self.device),
            torch.from_numpy(np.stack(instances)).to(self.device),
        )

    def _wait_for_budget(self) -> None:
        rate = self.config.max_steps_per_minute
        if rate <= 0:
            return
        wait = self._last_step_end + 60.0 / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def step(self, source: SampleSource) -> TrainingStep | None:
        """One optimisation step on a random batch of training samples; None when too few are readable."""
        self._wait_for_budget()
        samples = source.sample(self.config.batch_size, self.rng)
        if not samples:
            return None
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        start = time.perf_counter()
        with self._lock:
            images, semantic, instance = self._batch(samples)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self._autocast):
                outputs = self.student(preprocess(images))
            outputs = type(outputs)(*(o.float() for o in outputs))
            targets = make_targets(
                semantic,
                instance,
                [{} for _ in samples],
                output_size(images.shape[1], images.shape[2]),
                self.config.loss.centre_sigma,
            )
            losses = panoptic_losses(outputs, targets, self.thing_classes, self.config.loss)
            loss = losses["loss"]
            if not torch.isfinite(loss):
                _log.warning("continued training: non-finite loss %s, step skipped", float(loss))
                self.optimizer.zero_grad(set_to_none=True)
                return None
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.config.gradient_clip:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in self.student.parameters() if p.requires_grad], self.config.gradient_clip
                )
            self.optimizer.step()
            self._update_teacher()
            self.steps_done += 1
            self.last_losses = {name: float(value.detach()) for name, value in losses.items()}
        self._last_step_end = time.monotonic()
        return TrainingStep(self.steps_done, self.last_losses, time.perf_counter() - start)

    def _update_teacher(self) -> None:
        momentum = self.config.ema_momentum
        with torch.no_grad():
            for teacher, student in zip(
                self.teacher.heads.parameters(), self.student.heads.parameters(), strict=True
            ):
                teacher.mul_(momentum).add_(student.detach(), alpha=1.0 - momentum)

    def train_round(self, source: SampleSource, stop: threading.Event | None = None) -> int:
        """Up to ``steps_per_round`` steps (fewer if stopped or the buffer runs dry); steps done."""
        done = 0
        for _ in range(self.config.steps_per_round):
            if stop is not None and stop.is_set():
                break
            if self.step(source) is None:
                break
            done += 1
        return done

    def candidate(self) -> PanopticTrackingNet:
        """A copy of the teacher in eval mode: what the gate judges and the store exports."""
        with self._lock:
            return copy.deepcopy(self.teacher).cpu().eval()
