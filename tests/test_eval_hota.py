"""HOTA / CLEAR / IDF1 through trackeval: hand-worked mask cases and MOT15 boxes vs motmetrics' figures."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR
from cups_ros.eval import MaskTrackingAccumulator, TrackingFrame, box_iou_xywh, evaluate_tracking

trackeval = pytest.importorskip("trackeval")

PERSON, CAR = 11, 13
VOID_ID = IGNORE_CLASS * LABEL_DIVISOR
# motmetrics 1.4.0 on TUD-Campus (README of metric_reference); its MOTP is a distance, 1 - IoU.
MOTMETRICS_TUD_CAMPUS = {"mota": 0.526462, "motp_distance": 0.277201, "idf1": 0.557659, "idsw": 7}


def moving_objects(num_frames: int = 5, height: int = 30, width: int = 40) -> list[np.ndarray]:
    """Road background, two persons and a car moving right, a crowd region and a void strip."""
    frames = []
    for t in range(num_frames):
        ids = np.zeros((height, width), dtype=np.int32)
        ids[:, -3:] = VOID_ID
        ids[25:, :6] = PERSON * LABEL_DIVISOR  # crowd
        ids[2:10, 2 + 2 * t : 8 + 2 * t] = PERSON * LABEL_DIVISOR + 1
        ids[12:20, 20 - t : 24 - t] = PERSON * LABEL_DIVISOR + 2
        ids[15:24, 5 + 3 * t : 15 + 3 * t] = CAR * LABEL_DIVISOR + 1
        frames.append(ids)
    return frames


def strip_frame(*segments: tuple[int, slice]) -> np.ndarray:
    ids = np.zeros((4, 20), dtype=np.int32)
    for panoptic_id, columns in segments:
        ids[:, columns] = panoptic_id
    return ids


def test_tracker_equal_to_ground_truth_scores_one() -> None:
    accumulator = MaskTrackingAccumulator([PERSON, CAR])
    for sequence in ("a", "b"):
        for frame in moving_objects():
            accumulator.update(frame, frame, sequence)
    result = accumulator.compute()
    assert set(result.per_class) == {PERSON, CAR}
    for scores in [*result.per_class.values(), result.class_averaged, result.detection_averaged]:
        assert scores.hota == pytest.approx(1.0)
        assert scores.deta == pytest.approx(1.0) and scores.assa == pytest.approx(1.0)
        assert scores.mota == 1.0 and scores.idf1 == 1.0 and scores.idsw == 0


def test_an_id_switch_by_hand() -> None:
    """Persons A (4 frames, tracked as 1 then 2) and B (4 frames, one track), perfect masks.

    DetA = 1. AssA = (2 x 2/(4+2-2) + 2 x 2/(4+2-2) + 4 x 4/(4+4-4)) / 8 = 3/4, HOTA = sqrt(3/4).
    MOTA = (8 - 0 FP - 1 IDSW) / 8. IDF1: A <-> 1 and B <-> 5 give IDTP 6, IDFP 2, IDFN 2 -> 6/8.
    """
    person = PERSON * LABEL_DIVISOR
    accumulator = MaskTrackingAccumulator([PERSON])
    for t in range(4):
        gt = strip_frame((person + 1, slice(2, 6)), (person + 3, slice(10, 16)))
        pred = strip_frame((person + (1 if t < 2 else 2), slice(2, 6)), (person + 5, slice(10, 16)))
        accumulator.update(gt, pred)
    scores = accumulator.compute().per_class[PERSON]
    assert scores.deta == pytest.approx(1.0)
    assert scores.assa == pytest.approx(3 / 4)
    assert scores.hota == pytest.approx(math.sqrt(3 / 4))
    assert scores.idsw == 1 and scores.mota == pytest.approx(7 / 8)
    assert scores.idf1 == pytest.approx(6 / 8)
    assert scores.loca == pytest.approx(1.0)


def test_unmatched_predictions_on_void_are_removed_as_trackeval_does_for_ignore_regions() -> None:
    person = PERSON * LABEL_DIVISOR
    gt = [strip_frame((person + 1, slice(2, 6)), (VOID_ID, slice(12, 20))) for _ in range(4)]
    pred = [strip_frame((person + 1, slice(2, 6))) for _ in range(4)]
    pred[0] = strip_frame((person + 1, slice(2, 6)), (person + 9, slice(13, 17)))
    kept, removed = (
        MaskTrackingAccumulator([PERSON], remove_ignored_predictions=False),
        MaskTrackingAccumulator([PERSON]),
    )
    for gt_ids, pred_ids in zip(gt, pred, strict=True):
        kept.update(gt_ids, pred_ids)
        removed.update(gt_ids, pred_ids)
    assert removed.compute().per_class[PERSON].hota == pytest.approx(1.0)
    with_false_positive = kept.compute().per_class[PERSON]
    assert with_false_positive.deta == pytest.approx(4 / 5)  # 4 TP, 1 FP at every alpha
    assert with_false_positive.hota == pytest.approx(math.sqrt(4 / 5))


def test_class_aware_versus_class_agnostic() -> None:
    gt = [strip_frame((PERSON * LABEL_DIVISOR + 1, slice(2, 6))) for _ in range(3)]
    pred = [strip_frame((CAR * LABEL_DIVISOR + 1, slice(2, 6))) for _ in range(3)]
    aware, agnostic = (
        MaskTrackingAccumulator([PERSON, CAR]),
        MaskTrackingAccumulator([PERSON, CAR], class_aware=False),
    )
    for gt_ids, pred_ids in zip(gt, pred, strict=True):
        aware.update(gt_ids, pred_ids)
        agnostic.update(gt_ids, pred_ids)
    assert aware.compute().class_averaged.hota == 0.0
    assert agnostic.compute().per_class["all"].hota == pytest.approx(1.0)


# ---------------------------------------------------------------- MOT15 boxes


def mot_frames(folder: Path) -> list[TrackingFrame]:
    """MOT15 gt.txt / test.txt -> frames with trackeval's box IoU (gt rows with confidence 0 dropped)."""
    gt = np.loadtxt(folder / "gt.txt", delimiter=",", ndmin=2)
    tracker = np.loadtxt(folder / "test.txt", delimiter=",", ndmin=2)
    gt = gt[gt[:, 6] != 0]
    frames = []
    for t in range(1, int(max(gt[:, 0].max(), tracker[:, 0].max())) + 1):
        g, p = gt[gt[:, 0] == t], tracker[tracker[:, 0] == t]
        frames.append(
            TrackingFrame(g[:, 1].astype(int), p[:, 1].astype(int), box_iou_xywh(g[:, 2:6], p[:, 2:6]))
        )
    return frames


def test_mot15_clear_and_idf1_equal_motmetrics(shared_data: Path) -> None:
    """Same box IoU threshold (0.5) and formulas: MOTA, MOTP (as 1 - IoU), IDF1 and IDSW agree."""
    folder = shared_data / "metric_reference" / "motmetrics_tud" / "TUD-Campus"
    scores = evaluate_tracking({"TUD-Campus": mot_frames(folder)}).combined
    assert scores.mota == pytest.approx(MOTMETRICS_TUD_CAMPUS["mota"], abs=1e-6)
    assert 1 - scores.motp == pytest.approx(MOTMETRICS_TUD_CAMPUS["motp_distance"], abs=1e-6)
    assert scores.idf1 == pytest.approx(MOTMETRICS_TUD_CAMPUS["idf1"], abs=1e-6)
    assert scores.idsw == MOTMETRICS_TUD_CAMPUS["idsw"]
    assert 0 < scores.hota < 1


def test_mot15_wrapper_equals_trackevals_own_mot_challenge_pipeline(
    shared_data: Path, tmp_path: Path
) -> None:
    """trackeval reading the files itself (MotChallenge2DBox, MOT15) gives the very same numbers."""
    source = shared_data / "metric_reference" / "motmetrics_tud"
    sequences = ["TUD-Campus", "TUD-Stadtmitte"]
    ours = {name: mot_frames(source / name) for name in sequences}
    for name in sequences:
        (tmp_path / "gt" / name / "gt").mkdir(parents=True)
        (tmp_path / "gt" / name / "gt" / "gt.txt").write_bytes((source / name / "gt.txt").read_bytes())
        (tmp_path / "trackers" / "ours" / "data").mkdir(parents=True, exist_ok=True)
        (tmp_path / "trackers" / "ours" / "data" / f"{name}.txt").write_bytes(
            (source / name / "test.txt").read_bytes()
        )
    evaluator_config = trackeval.Evaluator.get_default_eval_config()
    evaluator_config.update(
        {
            "USE_PARALLEL": False,
            "PRINT_RESULTS": False,
            "PRINT_CONFIG": False,
            "TIME_PROGRESS": False,
            "OUTPUT_SUMMARY": False,
            "OUTPUT_DETAILED": False,
            "PLOT_CURVES": False,
        }
    )
    dataset_config = trackeval.datasets.MotChallenge2DBox.get_default_dataset_config()
    dataset_config.update(
        {
            "GT_FOLDER": str(tmp_path / "gt"),
            "TRACKERS_FOLDER": str(tmp_path / "trackers"),
            "OUTPUT_FOLDER": str(tmp_path / "output"),
            "BENCHMARK": "MOT15",
            "SKIP_SPLIT_FOL": True,
            "SEQ_INFO": {name: len(frames) for name, frames in ours.items()},
            "PRINT_CONFIG": False,
        }
    )
    metrics = [
        trackeval.metrics.HOTA(),
        trackeval.metrics.CLEAR({"PRINT_CONFIG": False}),
        trackeval.metrics.Identity({"PRINT_CONFIG": False}),
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        results, messages = trackeval.Evaluator(evaluator_config).evaluate(
            [trackeval.datasets.MotChallenge2DBox(dataset_config)], metrics
        )
    assert messages["MotChallenge2DBox"]["ours"] == "Success"
    theirs = results["MotChallenge2DBox"]["ours"]["COMBINED_SEQ"]["pedestrian"]
    evaluation = evaluate_tracking(ours)
    for metric in ("HOTA", "CLEAR", "Identity"):
        for field, value in theirs[metric].items():
            np.testing.assert_allclose(
                evaluation.raw[metric][field], value, rtol=0, atol=1e-12, err_msg=field
            )
