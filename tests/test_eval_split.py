"""Split scores after Hungarian matching: a relabelled ground truth scores 1, a damaged one less."""

from __future__ import annotations

import numpy as np
import pytest

from cups_ros.eval.split import evaluate_pseudo_panoptic

PSEUDO_OF = {0: 5, 8: 2, 10: 0, 13: 3, 11: 1}  # road, vegetation, sky, car, person -> pseudo-classes


def frames() -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for sequence in ("a", "b"):
        for t in range(3):
            semantic = np.zeros((40, 60), np.int64)
            semantic[:10] = 10
            semantic[10:20, :30] = 8
            instance = np.zeros_like(semantic)
            semantic[20:35, 5 + t : 20 + t] = 13
            instance[20:35, 5 + t : 20 + t] = 1
            semantic[22:38, 40:50] = 11
            instance[22:38, 40:50] = 2
            gt = semantic * 1000 + instance
            pseudo = np.vectorize(PSEUDO_OF.get)(semantic) * 1000 + instance * 7  # other track ids
            out.append((sequence, gt, pseudo))
    return out


def test_relabelled_ground_truth_scores_one_everywhere() -> None:
    data = frames()
    scores = evaluate_pseudo_panoptic(lambda: iter(data), num_pseudo_classes=6, pseudo_thing_classes=[1, 3])
    summary = scores.summary()
    for key in ("PQ", "PQ_things", "PQ_stuff", "mIoU", "STQ", "AQ"):
        assert summary[key] == pytest.approx(1.0), key
    assert scores.mapping.target[3] == 13 and scores.mapping.target[5] == 0
    assert scores.frames == 6


def test_switched_track_ids_lower_aq_only_and_merged_instances_lower_pq() -> None:
    data = frames()
    switched = [
        (s, gt, np.where((p % 1000 == 7) & (i % 2 == 1), p + 1, p)) for i, (s, gt, p) in enumerate(data)
    ]
    scores = evaluate_pseudo_panoptic(lambda: iter(switched), 6, [1, 3]).summary()
    assert scores["PQ"] == pytest.approx(1.0) and scores["AQ"] < 0.9
    merged = [(s, gt, np.where(p // 1000 == 1, 3000 + 7, p)) for s, gt, p in data]  # person becomes car
    worse = evaluate_pseudo_panoptic(lambda: iter(merged), 6, [1, 3]).summary()
    assert worse["PQ_things"] < 0.75 and worse["mIoU"] < 1.0
