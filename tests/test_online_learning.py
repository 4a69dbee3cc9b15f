"""Online learning's transport-free core: promotion gate, continued training, rounds, async labelling."""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cups_ros.core.camera import CameraModel
from cups_ros.core.frame import StereoFrame
from cups_ros.model.network import PanopticTrackingNet
from cups_ros.online.buffer import BufferSample, ReplayBuffer, ReplayBufferConfig
from cups_ros.online.gate import GateScores, PromotionGate, PromotionGateConfig
from cups_ros.online.learning import AsyncPseudoLabelling, ContinualLearning, OnlineLearningConfig
from cups_ros.online.store import ModelStore, ModelStoreConfig
from cups_ros.online.trainer import ContinualTrainer, ContinualTrainingConfig
from cups_ros.runtime.engines import TorchEngine
from cups_ros.runtime.predictor import Predictor
from cups_ros.train.config import AugmentationConfig
from tests.test_online_store import tiny_network

NO_AUGMENTATION = AugmentationConfig(
    crop_height=28, crop_width=28, min_scale=1.0, max_scale=1.0, flip=False, brightness=0, contrast=0,
    saturation=0, hue=0,
)  # fmt: skip


def scenes(count: int, seed: int = 0) -> list[np.ndarray]:
    """Blocky RGB images (28 x 28): regions the tiny network can tell apart."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        image = np.zeros((28, 28, 3), np.uint8)
        image[:14] = rng.integers(0, 255, 3)
        image[14:] = rng.integers(0, 255, 3)
        image[8:20, 8:16] = rng.integers(0, 255, 3)
        images.append(image)
    return images


def labelled_by(network: PanopticTrackingNet, images: list[np.ndarray]) -> list[BufferSample]:
    """Samples whose pseudo-labels are ``network``'s own panoptic output."""
    predictor = Predictor(TorchEngine(network))
    return [
        BufferSample(image=image, panoptic=predictor(image).prediction.panoptic, stamp_ns=i, source="test")
        for i, image in enumerate(images)
    ]


def with_random_heads(network: PanopticTrackingNet, seed: int) -> PanopticTrackingNet:
    other = copy.deepcopy(network)
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in other.heads.parameters():
            parameter.normal_(0.0, 0.5)
    return other


def test_the_gate_promotes_an_equal_model_and_rejects_a_worse_one() -> None:
    served = tiny_network(seed=0)
    holdout = labelled_by(served, scenes(6))
    gate = PromotionGate(PromotionGateConfig(min_holdout=4))
    own = gate.scores(served, holdout)
    # Its own output as labels: full agreement, and the mirrored image predicts the mirrored map.
    assert own.pseudo_label_miou == pytest.approx(1.0)
    assert own.pseudo_label_pq == pytest.approx(1.0)
    assert own.samples == 6
    equal = gate.decide(copy.deepcopy(served), served, holdout)
    assert equal is not None and equal.promote, equal
    worse = gate.decide(with_random_heads(served, seed=1), served, holdout)
    assert worse is not None and not worse.promote
    assert worse.candidate.score < worse.current.score
    assert gate.decide(served, served, holdout[:3]) is None  # too few held-out samples to judge


def test_the_gate_rules_by_hand() -> None:
    gate = PromotionGate(PromotionGateConfig(margin=0.01, max_consistency_drop=0.02))
    current = GateScores(0.30, 0.40, 0.90, 0.5333, 10)
    better_but_erratic = GateScores(0.40, 0.50, 0.85, 0.5833, 10)
    decision = gate.judge(better_but_erratic, current)
    assert not decision.promote and "flip consistency" in decision.reason
    within_margin = GateScores(0.30, 0.41, 0.90, 0.5366, 10)
    assert not gate.judge(within_margin, current).promote  # +0.0033 < margin 0.01
    clearly_better = GateScores(0.33, 0.43, 0.89, 0.5500, 10)
    assert gate.judge(clearly_better, current).promote


def test_continued_training_moves_only_the_heads_and_the_teacher_is_their_average() -> None:
    network = tiny_network(seed=0)
    config = ContinualTrainingConfig(
        batch_size=2, learning_rate=1e-2, ema_momentum=0.9, bf16=False, augmentation=NO_AUGMENTATION
    )
    trainer = ContinualTrainer(network, config)
    samples = labelled_by(with_random_heads(network, seed=3), scenes(4))

    class Source:
        def sample(self, count: int, rng: np.random.Generator) -> list[BufferSample]:
            return samples[:count]

        def train_ids(self) -> list[str]:
            return [str(i) for i in range(len(samples))]

    backbone_before = copy.deepcopy(trainer.student.backbone.state_dict())
    teacher_before = [p.detach().clone() for p in trainer.teacher.heads.parameters()]
    first = trainer.step(Source())
    assert first is not None
    momentum = config.ema_momentum
    for teacher_then, teacher_now, student in zip(
        teacher_before, trainer.teacher.heads.parameters(), trainer.student.heads.parameters(), strict=True
    ):
        torch.testing.assert_close(teacher_now, momentum * teacher_then + (1 - momentum) * student)
    for _ in range(30):
        last = trainer.step(Source())
    assert last is not None and last.losses["loss"] < first.losses["loss"]
    for key, value in trainer.student.backbone.state_dict().items():
        torch.testing.assert_close(value, backbone_before[key])
    # The served network is never the trained object.
    assert all(p.requires_grad is False for p in trainer.teacher.parameters())
    assert trainer.candidate() is not trainer.teacher


def _online_config(tmp_path: Path, initial_model: str, **gate: float) -> OnlineLearningConfig:
    return OnlineLearningConfig(
        buffer_dir=str(tmp_path / "buffer"),
        store_dir=str(tmp_path / "models"),
        initial_model=initial_model,
        buffer=ReplayBufferConfig(max_samples=40, holdout_every=3, max_holdout=10),
        training=ContinualTrainingConfig(
            batch_size=2,
            learning_rate=1e-2,
            steps_per_round=25,
            min_train_samples=4,
            ema_momentum=0.5,
            bf16=False,
            augmentation=NO_AUGMENTATION,
        ),
        gate=PromotionGateConfig(min_holdout=2, **gate),
        store=ModelStoreConfig(export_onnx=False),
    )


def test_a_round_trains_on_the_buffer_and_promotes_a_better_model(tmp_path: Path) -> None:
    from cups_ros.model.model_file import save_model

    served = tiny_network(seed=0)
    save_model(served, tmp_path / "initial.pt")
    config = _online_config(tmp_path, str(tmp_path / "initial.pt"))
    buffer = ReplayBuffer(config.buffer_dir, config.buffer)
    target = with_random_heads(served, seed=5)  # the "pseudo-labels" come from another model
    for sample in labelled_by(target, scenes(12, seed=1)):
        buffer.add(sample)
    store = ModelStore(config.store_dir, config.store)
    learning = ContinualLearning(config, buffer, store)
    before = learning.gate.scores(served, buffer.holdout_samples())
    result = learning.run_round()
    assert result is not None and result.steps == 25 and result.decision is not None
    assert result.decision.candidate.score > before.score
    assert result.promoted and result.version is not None and result.version.version == 1
    assert store.current() is not None and store.current().version == 1
    status = learning.status_snapshot()
    assert status.promotions == 1 and status.current_version == 1 and status.steps_done == 25
    assert status.buffer_samples == 12 and status.holdout_samples == 4


def test_rejected_candidates_are_recorded_and_training_restarts_from_the_served_model(tmp_path: Path) -> None:
    from cups_ros.model.model_file import save_model

    served = tiny_network(seed=0)
    save_model(served, tmp_path / "initial.pt")
    config = dataclasses.replace(
        _online_config(tmp_path, str(tmp_path / "initial.pt"), margin=1.0), reset_after_rejections=2
    )
    buffer = ReplayBuffer(config.buffer_dir, config.buffer)
    for sample in labelled_by(with_random_heads(served, seed=5), scenes(9, seed=2)):
        buffer.add(sample)
    store = ModelStore(config.store_dir, config.store)
    learning = ContinualLearning(config, buffer, store)
    first = learning.run_round()
    assert first is not None and first.decision is not None and not first.promoted
    student = learning.trainer.student.heads.state_dict()
    assert any(not torch.equal(student[k], v) for k, v in served.heads.state_dict().items())
    learning.run_round()  # second rejection in a row: back to the served weights
    for key, value in learning.trainer.student.state_dict().items():
        torch.testing.assert_close(value, served.state_dict()[key])
    assert store.current() is None
    assert [event["event"] for event in store.history()] == ["rejected", "rejected"]
    assert learning.status_snapshot().rejections == 2


def test_too_few_samples_means_no_round(tmp_path: Path) -> None:
    from cups_ros.model.model_file import save_model

    served = tiny_network(seed=0)
    save_model(served, tmp_path / "initial.pt")
    config = _online_config(tmp_path, str(tmp_path / "initial.pt"))
    buffer = ReplayBuffer(config.buffer_dir, config.buffer)
    learning = ContinualLearning(config, buffer, ModelStore(config.store_dir, config.store))
    assert learning.run_round() is None
    assert learning.status_snapshot().state == "waiting for samples"


class _BlockingLabeller:
    """label_pair waits until released: the worker is busy meanwhile."""

    def __init__(self, stride: int) -> None:
        from cups_ros.online.labeller import OnlineLabelConfig

        self.config = OnlineLabelConfig(frame_stride=stride)
        self.release = threading.Event()
        self.pairs: list[tuple[int, int]] = []

    def label_pair(self, frame: StereoFrame, successor: StereoFrame):
        from cups_ros.online.labeller import OnlinePseudoLabel
        from cups_ros.pseudo.fusion import PanopticPseudoLabel

        self.release.wait(10)
        self.pairs.append((frame.index, successor.index))
        return OnlinePseudoLabel(frame, PanopticPseudoLabel(np.zeros(frame.left.shape[:2], np.int32)))


def _frame(index: int, stamp_ns: int | None = None) -> StereoFrame:
    image = np.full((28, 28, 3), index % 255, np.uint8)
    camera = CameraModel(fx=50.0, fy=50.0, cx=14.0, cy=14.0, baseline=0.2, width=28, height=28)
    return StereoFrame(
        image, image, camera, stamp_ns if stamp_ns is not None else index * 100, "cam", "s", index
    )


def test_async_labelling_never_waits_and_counts_what_it_skips(tmp_path: Path) -> None:
    labeller = _BlockingLabeller(stride=2)
    buffer = ReplayBuffer(tmp_path / "buffer", ReplayBufferConfig(holdout_every=0))
    labelling = AsyncPseudoLabelling(labeller, buffer)  # type: ignore[arg-type]
    labelling.start()
    try:
        start = time.perf_counter()
        for index in range(8):  # frame 0 chosen, paired with 1 -> busy until released
            labelling.submit(_frame(index))
        assert time.perf_counter() - start < 1.0  # submit never waited for the labeller
        labeller.release.set()
        assert labelling.wait_until_idle(10)
        labelling.submit(_frame(8))  # stride: chosen
        labelling.submit(_frame(9))  # its pair
        assert labelling.wait_until_idle(10)
        labelling.submit(_frame(5, stamp_ns=50))  # stamps went back
    finally:
        labelling.stop()
    assert labeller.pairs == [(0, 1), (8, 9)]
    assert len(buffer) == 2
    assert labelling.stats.labelled == 2 and labelling.stats.frames_seen == 11
    assert labelling.stats.skipped["stamp went back"] == 1
    assert labelling.stats.skipped["labeller busy"] == 3  # frames 2, 4, 6 came while it worked
