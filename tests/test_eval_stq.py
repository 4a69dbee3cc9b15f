"""STQ/AQ/IoU against the 13 figures of deeplab2's segmentation_and_tracking_quality_test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.eval import ConfusionMatrix, SegmentationTrackingQuality, semantic_scores

NUM_CASES = 13
# The expected figures are transcribed with 8 decimals.
TOLERANCE = 1e-8


def load_cases(shared_data: Path) -> list[dict[str, Any]]:
    cases = json.loads((shared_data / "metric_reference" / "stq_reference_cases.json").read_text())["cases"]
    assert len(cases) == NUM_CASES
    return cases


@pytest.fixture(scope="module")
def cases(shared_data: Path) -> list[dict[str, Any]]:
    return load_cases(shared_data)


def deeplab2_metric(config: dict[str, Any]) -> SegmentationTrackingQuality:
    return SegmentationTrackingQuality.from_bit_shift(
        config["n_classes"], config["things_list"], config["ignore_label"], config["bit_shift"]
    )


def assert_matches_expected(result: Any, expected: dict[str, Any]) -> None:
    assert result.stq == pytest.approx(expected["STQ"], abs=TOLERANCE)
    assert result.aq == pytest.approx(expected["AQ"], abs=TOLERANCE)
    assert result.iou == pytest.approx(expected["IoU"], abs=TOLERANCE)
    assert list(result.stq_per_sequence.values()) == pytest.approx(expected["STQ_per_seq"], abs=TOLERANCE)
    assert list(result.aq_per_sequence.values()) == pytest.approx(expected["AQ_per_seq"], abs=TOLERANCE)
    assert list(result.iou_per_sequence.values()) == pytest.approx(expected["IoU_per_seq"], abs=TOLERANCE)
    assert list(result.stq_per_sequence) == expected["ID_per_seq"]
    assert list(result.length_per_sequence.values()) == expected["Length_per_seq"]


@pytest.mark.parametrize("case_index", range(NUM_CASES))
def test_deeplab2_reference_case(cases: list[dict[str, Any]], case_index: int) -> None:
    case = cases[case_index]
    metric = deeplab2_metric(case["config"])
    for frame in case["frames"]:
        metric.update(np.array(frame["gt"]), np.array(frame["pred"]), frame["seq"])
    assert_matches_expected(metric.compute(), case["expected"])


@pytest.mark.parametrize("case_index", range(NUM_CASES))
def test_our_codec_gives_the_same_figures(cases: list[dict[str, Any]], case_index: int) -> None:
    """The adapter: the same frames re-encoded as class * 1000 + instance."""
    case = cases[case_index]
    config = case["config"]
    shift = config["bit_shift"]
    metric = SegmentationTrackingQuality(
        config["n_classes"], config["things_list"], ignore_class=config["ignore_label"]
    )

    def recode(panoptic: list) -> np.ndarray:
        ids = np.array(panoptic, dtype=np.int64)
        return ((ids >> shift) * LABEL_DIVISOR + (ids & ((1 << shift) - 1))).astype(np.int32)

    for frame in case["frames"]:
        metric.update(recode(frame["gt"]), recode(frame["pred"]), frame["seq"])
    assert_matches_expected(metric.compute(), case["expected"])


def test_semantic_miou_equals_the_reference_iou(cases: list[dict[str, Any]]) -> None:
    """No case has ignore pixels, so our plain mIoU must equal deeplab2's IoU term."""
    for case in cases:
        config = case["config"]
        confusion = ConfusionMatrix(config["n_classes"])
        for frame in case["frames"]:
            confusion.update(
                np.array(frame["gt"]) >> config["bit_shift"], np.array(frame["pred"]) >> config["bit_shift"]
            )
        assert semantic_scores(confusion).miou == pytest.approx(case["expected"]["IoU"], abs=TOLERANCE)


def test_two_sequences_keep_their_own_figures(cases: list[dict[str, Any]]) -> None:
    """Sequences accumulate apart: per-sequence figures equal each case alone; AQ pools the tubes."""
    first, second = cases[6], cases[12]
    assert first["config"] == second["config"]
    metric = deeplab2_metric(first["config"])
    for name, case in (("a", first), ("b", second)):
        for frame in case["frames"]:
            metric.update(np.array(frame["gt"]), np.array(frame["pred"]), name)
    result = metric.compute()
    assert result.stq_per_sequence["a"] == pytest.approx(first["expected"]["STQ"], abs=TOLERANCE)
    assert result.stq_per_sequence["b"] == pytest.approx(second["expected"]["STQ"], abs=TOLERANCE)
    assert result.length_per_sequence == {"a": 1, "b": 1}
    assert min(result.aq_per_sequence.values()) <= result.aq <= max(result.aq_per_sequence.values())


def test_rejects_classes_outside_the_matrix() -> None:
    metric = SegmentationTrackingQuality(num_classes=2, thing_classes=[1])
    with pytest.raises(ValueError, match="classes must lie"):
        metric.update(np.zeros((2, 2), np.int32), np.full((2, 2), 7000, np.int32))
