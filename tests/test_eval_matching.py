"""Hungarian matching of pseudo-classes and the semantic scores, on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR
from cups_ros.eval import (
    ConfusionMatrix,
    PanopticQualityAccumulator,
    match_pseudo_classes,
    semantic_scores,
)

VOID = IGNORE_CLASS


def test_permuted_labels_are_recovered_and_score_one() -> None:
    rng = np.random.default_rng(3)
    num_classes = 6
    permutation = rng.permutation(num_classes)  # pseudo-class = permutation[true class]
    gts = [rng.integers(0, num_classes, size=(20, 30)) for _ in range(4)]
    gts[0][:3] = VOID
    confusion = ConfusionMatrix(num_classes)
    for gt in gts:
        confusion.update(gt, np.where(gt == VOID, VOID, permutation[np.minimum(gt, num_classes - 1)]))
    mapping = match_pseudo_classes(confusion)
    assert mapping.target[permutation].tolist() == list(range(num_classes))
    assert mapping.hungarian.all()

    remapped = ConfusionMatrix(num_classes)
    for gt in gts:
        pred = mapping.remap_semantic(
            np.where(gt == VOID, VOID, permutation[np.minimum(gt, num_classes - 1)])
        )
        remapped.update(gt, pred)
    scores = semantic_scores(remapped)
    assert scores.miou == 1.0 and scores.pixel_accuracy == 1.0


def test_leftover_pseudo_classes_go_to_their_majority_class_or_void() -> None:
    overlap = np.array(
        [
            [10, 0],  # Hungarian -> 0
            [0, 8],  # Hungarian -> 1
            [6, 1],  # leftover, mostly class 0
            [0, 0],  # leftover, overlaps nothing
        ]
    )
    majority = match_pseudo_classes(overlap)
    assert majority.target.tolist() == [0, 1, 0, VOID]
    assert majority.hungarian.tolist() == [True, True, False, False]
    assert match_pseudo_classes(overlap, leftover="void").target.tolist() == [0, 1, VOID, VOID]


def test_thing_to_thing_and_stuff_to_stuff() -> None:
    # Ground truth: class 0 stuff, class 1 thing. Pseudo-class 1 and 2 are things.
    overlap = np.array(
        [
            [9, 5],
            [10, 2],
            [7, 1],
        ]
    )
    free = match_pseudo_classes(overlap, leftover="void")
    assert free.target.tolist() == [1, 0, VOID]  # 5 + 10 beats every other pair
    constrained = match_pseudo_classes(overlap, pseudo_thing_classes=[1, 2], gt_thing_classes=[1])
    # Stuff 0 -> stuff 0; things 1, 2 compete for thing 1 (2 > 1); leftover 2 goes to its majority among
    # thing classes (class 1), not to class 0 where most of its pixels are.
    assert constrained.target.tolist() == [0, 1, 1]
    assert constrained.hungarian.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="ground-truth thing classes"):
        match_pseudo_classes(overlap, pseudo_thing_classes=[1])


def test_fewer_pseudo_classes_than_classes() -> None:
    overlap = np.array([[0, 3, 9], [4, 0, 0]])
    mapping = match_pseudo_classes(overlap)
    assert mapping.target.tolist() == [2, 0]


def test_collapsed_instances_stay_unique_and_consistent_over_frames() -> None:
    # Pseudo 0 (stuff) -> class 0; things 1 and 2 both -> thing class 11; thing 3 overlaps nothing -> void.
    overlap = np.zeros((4, 12), dtype=int)
    overlap[0, 0], overlap[1, 11], overlap[2, 11], overlap[2, 5] = 50, 40, 30, 1
    mapping = match_pseudo_classes(overlap, pseudo_thing_classes=[1, 2, 3], gt_thing_classes=[11])
    assert mapping.target.tolist() == [0, 11, 11, VOID]

    frame_1 = np.array([[0, 1001, 1001, 2001], [2001, 2002, 3000, 1000]])
    frame_2 = np.array([[2001, 1001, 0, 0], [2003, 2003, 0, 0]])
    remapper = mapping.panoptic_remapper()
    out_1, out_2 = remapper(frame_1), remapper(frame_2)
    # Source instances 1001, 2001, 2002, 2003 get four distinct ids of class 11, the same in both frames.
    assert out_1.dtype == np.int32
    assert out_1.tolist() == [[0, 11001, 11001, 11002], [11002, 11003, VOID * LABEL_DIVISOR, 11000]]
    assert out_2.tolist() == [[11002, 11001, 0, 0], [11004, 11004, 0, 0]]


def test_instances_are_kept_when_one_pseudo_class_maps_to_a_class_and_dropped_on_stuff() -> None:
    mapping = match_pseudo_classes(np.array([[0, 9], [8, 0]]), gt_thing_classes=[1])
    assert mapping.target.tolist() == [1, 0]
    ids = np.array([[7, 5, 1003], [VOID * LABEL_DIVISOR + 4, 0, 1002]])
    assert mapping.remap_panoptic(ids).tolist() == [[1007, 1005, 0], [VOID * LABEL_DIVISOR, 1000, 0]]
    with pytest.raises(ValueError, match="beyond"):
        mapping.remap_semantic(np.array([2]))


def test_hungarian_then_pq_of_a_relabelled_split_is_one() -> None:
    gt = np.array([[0, 0, 11001, 11001], [0, 0, 11002, 11002]])
    pred = np.array([[4000, 4000, 7005, 7005], [4000, 4000, 7009, 7009]])  # pseudo 4 = road, 7 = person
    confusion = ConfusionMatrix(12, num_pred_classes=8)
    confusion.update_panoptic(gt, pred)
    mapping = match_pseudo_classes(confusion, pseudo_thing_classes=[7], gt_thing_classes=[11])
    accumulator = PanopticQualityAccumulator([11])
    accumulator.update(gt, mapping.remap_panoptic(pred))
    result = accumulator.compute()
    assert result.all.pq == 1.0 and result.things.n == 1 and result.stuff.n == 1


def test_semantic_scores_by_hand() -> None:
    gt = np.array([[0, 0, 1, 1, VOID], [2, 2, 2, 1, 0]])
    pred = np.array([[0, 1, 1, 1, 2], [2, 2, VOID, 0, 0]])
    confusion = ConfusionMatrix(3)
    confusion.update(gt, pred)
    scores = semantic_scores(confusion)
    # class 0: TP 2, FN 1 (pixel 1), FP 1 (gt 1 -> 0) -> 2/4; class 1: TP 2, FN 1, FP 1 -> 2/4;
    # class 2: TP 2, FN 1 (void prediction), FP 0 -> 2/3. Void predictions are no class's FP.
    assert scores.iou_per_class.tolist() == pytest.approx([0.5, 0.5, 2 / 3])
    assert scores.miou == pytest.approx((0.5 + 0.5 + 2 / 3) / 3)
    assert scores.pixel_accuracy == pytest.approx(6 / 9)
    with pytest.raises(ValueError, match="predicted classes"):
        confusion.update(gt, np.full_like(gt, 3))
    assert np.isnan(semantic_scores(ConfusionMatrix(2)).miou)
