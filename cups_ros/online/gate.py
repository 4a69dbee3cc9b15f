"""The promotion gate: a candidate replaces the served model only if it is at least as good on held-out
buffer samples it never trained on.

With no ground truth on the vehicle, "good" is measured two ways: agreement with the Stage-1
pseudo-labels of the held-out frames (PQ and mIoU, pseudo-classes against pseudo-classes: they are
the network's own classes, no matching needed) and self-consistency (the semantic map of the
mirrored image, mirrored back, against the map of the image). A model that drifts (forgets, or
collapses to a few classes) loses agreement; one that becomes erratic loses consistency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from cups_ros.core.config import ConfigError
from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.eval.panoptic_quality import PanopticQualityAccumulator
from cups_ros.eval.semantic import ConfusionMatrix, semantic_scores
from cups_ros.model.network import PanopticTrackingNet
from cups_ros.model.postprocess import PostProcessConfig
from cups_ros.runtime.engines import TorchEngine
from cups_ros.runtime.predictor import Predictor


@dataclass(frozen=True)
class PromotionGateConfig:
    """config/online_learning.yaml ``gate``."""

    min_holdout: int = 4
    """No decision on fewer held-out samples (a candidate then waits)."""
    margin: float = 0.0
    """The candidate's score must reach the served model's plus this (0: better or equal)."""
    max_consistency_drop: float = 0.02
    """Reject a candidate whose flip consistency falls by more than this, whatever its score."""
    pq_weight: float = 1.0
    miou_weight: float = 1.0
    consistency_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.min_holdout < 1:
            raise ConfigError(f"gate.min_holdout must be >= 1, got {self.min_holdout}")
        weights = (self.pq_weight, self.miou_weight, self.consistency_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ConfigError(f"gate weights must be >= 0 with a positive sum, got {weights}")
        if self.max_consistency_drop < 0:
            raise ConfigError(f"gate.max_consistency_drop must be >= 0, got {self.max_consistency_drop}")


@dataclass(frozen=True)
class GateScores:
    """A model's figures on the held-out samples (all in [0, 1])."""

    pseudo_label_pq: float
    pseudo_label_miou: float
    flip_consistency: float
    score: float
    samples: int

    def to_dict(self) -> dict[str, float]:
        return {
            key: (None if isinstance(v, float) and math.isnan(v) else v) for key, v in asdict(self).items()
        }


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    candidate: GateScores
    current: GateScores

    def to_dict(self) -> dict[str, object]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "candidate": self.candidate.to_dict(),
            "current": self.current.to_dict(),
        }


def _nan_to_zero(value: float) -> float:
    return 0.0 if math.isnan(value) else value


class PromotionGate:
    def __init__(self, config: PromotionGateConfig, postprocess: PostProcessConfig | None = None) -> None:
        self.config = config
        self.postprocess = postprocess or PostProcessConfig()

    def scores(self, network: PanopticTrackingNet, samples: Sequence) -> GateScores:
        """Figures of ``network`` on held-out samples (BufferSample: image, panoptic)."""
        predictor = Predictor(TorchEngine(network), self.postprocess)
        thing_classes = list(network.config.thing_classes)
        num_classes = network.config.num_classes
        quality = PanopticQualityAccumulator(thing_classes, classes=range(num_classes))
        agreement = ConfusionMatrix(num_classes)
        consistency = ConfusionMatrix(num_classes)
        for sample in samples:
            image = sample.image
            prediction = predictor.predict(image).prediction
            mirrored = predictor.predict(np.ascontiguousarray(image[:, ::-1])).prediction
            label = np.asarray(sample.panoptic)
            quality.update(label, prediction.panoptic)
            agreement.update(label // LABEL_DIVISOR, prediction.semantic.astype(np.int64))
            # Void (255) in the unmirrored prediction is left out, as ignore is in ground truth.
            consistency.update(
                prediction.semantic.astype(np.int64), mirrored.semantic[:, ::-1].astype(np.int64)
            )
        pq = _nan_to_zero(quality.compute().all.pq)
        miou = _nan_to_zero(semantic_scores(agreement).miou)
        flip = _nan_to_zero(semantic_scores(consistency).miou)
        weights = (self.config.pq_weight, self.config.miou_weight, self.config.consistency_weight)
        score = (weights[0] * pq + weights[1] * miou + weights[2] * flip) / sum(weights)
        return GateScores(pq, miou, flip, score, len(samples))

    def decide(
        self, candidate: PanopticTrackingNet, current: PanopticTrackingNet, samples: Sequence
    ) -> GateDecision | None:
        """None while there are too few held-out samples to judge."""
        if len(samples) < self.config.min_holdout:
            return None
        candidate_scores = self.scores(candidate, samples)
        current_scores = self.scores(current, samples)
        return self.judge(candidate_scores, current_scores)

    def judge(self, candidate: GateScores, current: GateScores) -> GateDecision:
        drop = current.flip_consistency - candidate.flip_consistency
        if drop > self.config.max_consistency_drop:
            reason = f"flip consistency fell by {drop:.3f} (> {self.config.max_consistency_drop})"
            return GateDecision(False, reason, candidate, current)
        needed = current.score + self.config.margin
        if candidate.score + 1e-9 < needed:
            reason = f"score {candidate.score:.4f} below the served model's {current.score:.4f}"
            if self.config.margin:
                reason += f" + margin {self.config.margin}"
            return GateDecision(False, reason, candidate, current)
        return GateDecision(True, f"score {candidate.score:.4f} >= {needed:.4f}", candidate, current)
