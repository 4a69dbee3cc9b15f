"""Scores of replayed drives over time: the tracked panoptic output of a replay bag, against the
simulator's ground truth, in windows of consecutive frames.

Each window is scored like a split (Hungarian matching of the pseudo-classes inside the window,
then PQ, mIoU and STQ), so runs with online learning on and off are compared window by window on the
same terms even when continued training moves what a pseudo-class means.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.highlevel import AnyReader

from cups_ros.eval.split import evaluate_pseudo_panoptic
from cups_ros.io.messages import image_to_array, stamp_ns_of
from cups_ros.io.vision_msgs import typestore
from cups_ros.sim.dataset import SimSequence


class DriveEvaluationError(ValueError):
    """A replay bag that does not fit the drive (missing topic, stamps not in the ground truth)."""


def read_panoptic_topic(bag: str | Path, topic: str) -> dict[int, np.ndarray]:
    """Panoptic maps of one output topic by header stamp."""
    maps: dict[int, np.ndarray] = {}
    with AnyReader([Path(bag)], default_typestore=typestore()) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            topics = sorted({c.topic for c in reader.connections})
            raise DriveEvaluationError(f"{bag} has no topic {topic} (it has {', '.join(topics)})")
        for connection, _, raw in reader.messages(connections=connections):
            message = reader.deserialize(raw, connection.msgtype)
            maps[stamp_ns_of(message)] = image_to_array(message).astype(np.int32)
    return maps


@dataclass
class WindowScores:
    first_frame: int
    last_frame: int
    frames: int
    scores: dict[str, float]


def evaluate_windows(
    sequence: SimSequence,
    predictions: dict[int, np.ndarray],
    num_classes: int,
    thing_classes: list[int],
    window: int,
) -> list[WindowScores]:
    """Scores per window of ``window`` frames; a frame the replay did not publish counts as all void."""
    frames = list(range(len(sequence)))
    results = []
    for start in range(0, len(frames), window):
        indices = frames[start : start + window]
        loaded = [sequence[index] for index in indices]

        def pairs(loaded: list = loaded) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
            for frame in loaded:
                predicted = predictions.get(frame.stamp_ns)
                if predicted is None:
                    predicted = np.full(frame.panoptic.shape, 255 * 1000, np.int32)
                elif predicted.shape != frame.panoptic.shape:
                    raise DriveEvaluationError(
                        f"frame {frame.index}: prediction {predicted.shape} vs ground truth "
                        f"{frame.panoptic.shape}"
                    )
                yield sequence.name, frame.panoptic, predicted

        scores = evaluate_pseudo_panoptic(pairs, num_classes, thing_classes).summary()
        results.append(WindowScores(indices[0], indices[-1], len(indices), scores))
    return results


def published_share(sequence: SimSequence, predictions: dict[int, np.ndarray]) -> float:
    stamps = {sequence[index].stamp_ns for index in range(len(sequence))}
    return len(stamps & set(predictions)) / max(1, len(stamps))


def windows_to_json(windows: list[WindowScores]) -> list[dict[str, Any]]:
    return [
        {"first_frame": w.first_frame, "last_frame": w.last_frame, "frames": w.frames, **w.scores}
        for w in windows
    ]


def plot_curves(runs: dict[str, list[WindowScores]], path: str | Path) -> None:
    """PQ and STQ per window, one line per run (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cups_ros.core.files import atomic_path

    figure, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, windows in runs.items():
        middle = [(w.first_frame + w.last_frame) / 2 for w in windows]
        for axis, key in zip(axes, ("PQ", "STQ"), strict=True):
            axis.plot(middle, [100 * w.scores[key] for w in windows], marker="o", label=name)
    for axis, key in zip(axes, ("PQ", "STQ"), strict=True):
        axis.set_xlabel("frame (window centre)")
        axis.set_ylabel(f"{key} (%)")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110)
    plt.close(figure)
