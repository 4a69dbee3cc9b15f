"""Network output scored on the simulator against its ground truth, on the same terms as the
pseudo-labels (cups_ros.eval.split): instances linked over frames into tracks, Hungarian matching
of the classes over the split, then PQ / mIoU / STQ.

The per-frame instances are linked by the pseudo-tracks' propagation (flow-warped masks, Hungarian
on IoU), so network and pseudo-labels are compared with the same linking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.eval.split import SplitScores, evaluate_pseudo_panoptic
from cups_ros.geometry.flow import DisFlowEstimator
from cups_ros.model.postprocess import PanopticPrediction
from cups_ros.pseudo.video import PseudoTrackPropagator

Predict = Callable[[np.ndarray], PanopticPrediction]


def link_tracks(
    predictions: Iterator[tuple[np.ndarray, PanopticPrediction]],
) -> Iterator[np.ndarray]:
    """Panoptic ids with per-frame instance ids replaced by track ids, frame by frame."""
    propagator = PseudoTrackPropagator()
    flow = DisFlowEstimator()
    previous_image: np.ndarray | None = None
    for image, prediction in predictions:
        flow_to_previous = flow.estimate(image, previous_image) if previous_image is not None else None
        masks = prediction.masks()
        track_ids = propagator.step(masks, flow_to_previous)
        panoptic = prediction.panoptic.copy()
        for mask, instance, track_id in zip(masks, prediction.instances, track_ids, strict=True):
            panoptic[mask] = instance.class_id * LABEL_DIVISOR + track_id
        previous_image = image
        yield panoptic


def evaluate_on_simulator(
    predict: Predict,
    sim_root: str,
    split: str,
    num_classes: int,
    thing_classes: list[int],
    limit_sequences: int | None = None,
) -> SplitScores:
    """Predicts every frame once (kept in memory as panoptic ids), then scores the split."""
    from cups_ros.sim.dataset import load_split

    sequences = load_split(sim_root, split)[:limit_sequences]
    if not sequences:
        raise FileNotFoundError(f"no {split}_* simulator sequences under {sim_root}")
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for sequence in sequences:
        frames = list(sequence)
        predicted = link_tracks((frame.left, predict(frame.left)) for frame in frames)
        for frame, panoptic in zip(frames, predicted, strict=True):
            pairs.append((sequence.name, frame.panoptic, panoptic))
    return evaluate_pseudo_panoptic(lambda: iter(pairs), num_classes, thing_classes)
