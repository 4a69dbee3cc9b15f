"""Network output scored on the simulator against its ground truth, on the same terms as the
pseudo-labels (cups_ros.eval.split): instances linked over frames into tracks, Hungarian matching
of the classes over the split, then PQ / mIoU / STQ.

The per-frame instances are linked by the pseudo-tracks' propagation (flow-warped masks, Hungarian
on IoU), so network and pseudo-labels are compared with the same linking.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.eval.split import SplitScores, evaluate_pseudo_panoptic
from cups_ros.geometry.flow import DisFlowEstimator
from cups_ros.model.postprocess import PanopticPrediction
from cups_ros.pseudo.video import PseudoTrackPropagator
from cups_ros.sim.dataset import SimSequence

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


def evaluate_network(
    predict: Predict, sequences: list[SimSequence], num_classes: int, thing_classes: list[int]
) -> SplitScores:
    """Predicts every frame once (kept in memory as panoptic ids), then scores the sequences."""
    pairs: list[tuple[str, np.ndarray, np.ndarray]] = []
    for sequence in sequences:
        frames = list(sequence)
        predicted = link_tracks((frame.left, predict(frame.left)) for frame in frames)
        for frame, panoptic in zip(frames, predicted, strict=True):
            pairs.append((sequence.name, frame.panoptic, panoptic))
    return evaluate_pseudo_panoptic(lambda: iter(pairs), num_classes, thing_classes)


def pseudo_thing_classes(labels: Path) -> tuple[int, list[int]]:
    """(number of pseudo-classes, the thing ones) of a pseudo-label dataset."""
    thing_stuff = json.loads((Path(labels) / "thing_stuff.json").read_text())
    return len(thing_stuff["thing"]), [index for index, flag in enumerate(thing_stuff["thing"]) if flag]


def evaluate_pseudo_labels(labels: Path, sequences: list[SimSequence]) -> SplitScores:
    """The pseudo-labels of simulated sequences, scored exactly as network output is (the baseline
    the network must beat)."""
    from cups_ros.pseudo.pipeline import read_pseudo_label

    num_classes, things = pseudo_thing_classes(labels)

    def pairs() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for sequence in sequences:
            for frame in sequence:
                yield (
                    sequence.name,
                    frame.panoptic,
                    read_pseudo_label(Path(labels), sequence.name, frame.index),
                )

    return evaluate_pseudo_panoptic(pairs, num_classes, things)
