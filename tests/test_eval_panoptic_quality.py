"""PQ/SQ/RQ against cityscapesscripts' evalPanopticSemanticLabeling, panopticapi's sample and deeplab2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR
from cups_ros.eval import CITYSCAPES_THING_TRAIN_IDS, PanopticQualityAccumulator, panoptic_quality

cityscapes_pq = pytest.importorskip("cityscapesscripts.evaluation.evalPanopticSemanticLabeling")
cityscapes_labels = pytest.importorskip("cityscapesscripts.helpers.labels")

VOID_ID = IGNORE_CLASS * LABEL_DIVISOR
STUFF_TRAIN_IDS = tuple(range(11))
TRAIN_ID_TO_LABEL_ID = {
    label.trainId: label.id
    for label in cityscapes_labels.labels
    if not label.ignoreInEval and label.trainId >= 0
}
LABEL_ID_TO_TRAIN_ID = {label_id: train_id for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items()}
TOLERANCE = 1e-6


# ---------------------------------------------------------------- random panoptic pairs (our codec)


def _paint_rectangle(ids: np.ndarray, rng: np.random.Generator, value: int, max_size: int) -> None:
    height, width = ids.shape
    h, w = rng.integers(1, max_size + 1, size=2)
    y, x = rng.integers(0, height), rng.integers(0, width)
    ids[y : y + h, x : x + w] = value


def random_ground_truth(rng: np.random.Generator, height: int = 48, width: int = 64) -> np.ndarray:
    """Stuff background, thing instances (some of a few pixels), crowd regions, void."""
    ids = np.full((height, width), int(rng.choice(STUFF_TRAIN_IDS)) * LABEL_DIVISOR, dtype=np.int32)
    for _ in range(rng.integers(2, 6)):
        _paint_rectangle(ids, rng, int(rng.choice(STUFF_TRAIN_IDS)) * LABEL_DIVISOR, 30)
    next_instance = dict.fromkeys(CITYSCAPES_THING_TRAIN_IDS, 1)
    for _ in range(rng.integers(4, 12)):
        class_id = int(rng.choice(CITYSCAPES_THING_TRAIN_IDS))
        _paint_rectangle(
            ids, rng, class_id * LABEL_DIVISOR + next_instance[class_id], int(rng.choice([3, 12, 20]))
        )
        next_instance[class_id] += 1
    for _ in range(rng.integers(0, 3)):  # crowd: thing class, instance 0
        _paint_rectangle(ids, rng, int(rng.choice(CITYSCAPES_THING_TRAIN_IDS)) * LABEL_DIVISOR, 15)
    for _ in range(rng.integers(0, 3)):
        _paint_rectangle(ids, rng, VOID_ID, 15)
    return ids


def random_prediction(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """The ground truth with segments shifted, relabelled, split, dropped, plus spurious and void pieces."""
    pred = np.where(gt == VOID_ID, int(rng.choice(STUFF_TRAIN_IDS)) * LABEL_DIVISOR, gt).astype(np.int32)
    segments = [s for s in np.unique(gt).tolist() if s != VOID_ID]
    for segment in segments:
        mask = gt == segment
        class_id, instance = divmod(segment, LABEL_DIVISOR)
        action = rng.choice(["keep", "shift", "relabel", "new_id", "drop"], p=[0.3, 0.35, 0.1, 0.15, 0.1])
        if action == "shift":
            dy, dx = rng.integers(-4, 5, size=2)
            pred[mask] = int(rng.choice(STUFF_TRAIN_IDS)) * LABEL_DIVISOR
            pred[np.roll(mask, (dy, dx), axis=(0, 1))] = segment
        elif action == "relabel":
            pred[mask] = (
                int(rng.choice(STUFF_TRAIN_IDS + CITYSCAPES_THING_TRAIN_IDS)) * LABEL_DIVISOR + instance
            )
        elif action == "new_id" and class_id in CITYSCAPES_THING_TRAIN_IDS:
            pred[mask] = class_id * LABEL_DIVISOR + 100 + int(rng.integers(0, 50))
        elif action == "drop":
            pred[mask] = int(rng.choice(STUFF_TRAIN_IDS)) * LABEL_DIVISOR
    for _ in range(rng.integers(1, 5)):  # spurious instances, some on void or crowd
        class_id = int(rng.choice(CITYSCAPES_THING_TRAIN_IDS))
        _paint_rectangle(pred, rng, class_id * LABEL_DIVISOR + 200 + int(rng.integers(0, 50)), 10)
    for _ in range(rng.integers(0, 3)):
        _paint_rectangle(pred, rng, VOID_ID, 8)
    return pred


# ---------------------------------------------------------------- Cityscapes panoptic format


def _rgb(ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)


def to_cityscapes(
    ids: np.ndarray, thing_classes: frozenset[int], is_gt: bool
) -> tuple[np.ndarray, list[dict]]:
    """Our train-id codec -> Cityscapes panoptic PNG ids (label ids) and segments_info, as
    createPanopticImgs writes them: void 0, stuff = label id, crowd = label id with iscrowd 1."""
    cityscapes_ids = np.zeros(ids.shape, dtype=np.int64)
    segments = []
    for segment, area in zip(*np.unique(ids, return_counts=True), strict=True):
        class_id, instance = divmod(int(segment), LABEL_DIVISOR)
        if class_id == IGNORE_CLASS:
            continue
        label_id = TRAIN_ID_TO_LABEL_ID[class_id]
        cityscapes_id = label_id * 1000 + instance if instance else label_id
        cityscapes_ids[ids == segment] = cityscapes_id
        crowd = int(is_gt and class_id in thing_classes and instance == 0)
        segments.append({"id": cityscapes_id, "category_id": label_id, "iscrowd": crowd, "area": int(area)})
    return cityscapes_ids, segments


def write_cityscapes_split(
    folder: Path, name: str, maps: list[np.ndarray], is_gt: bool
) -> tuple[Path, Path, list[dict]]:
    png_folder = folder / name
    png_folder.mkdir(parents=True)
    annotations = []
    for index, ids in enumerate(maps):
        cityscapes_ids, segments = to_cityscapes(ids, frozenset(CITYSCAPES_THING_TRAIN_IDS), is_gt)
        file_name = f"frame_{index:03d}.png"
        Image.fromarray(_rgb(cityscapes_ids)).save(png_folder / file_name)
        annotations.append(
            {"image_id": f"frame_{index:03d}", "file_name": file_name, "segments_info": segments}
        )
    categories = [
        {"id": label.id, "name": label.name, "isthing": int(label.hasInstances)}
        for label in cityscapes_labels.labels
        if not label.ignoreInEval
    ]
    json_path = folder / f"{name}.json"
    json_path.write_text(json.dumps({"annotations": annotations, "categories": categories}))
    return json_path, png_folder, annotations


def assert_equal_to_cityscapes(ours: Any, theirs: dict[str, Any], label_to_class: dict[int, int]) -> float:
    """Compares all/things/stuff and per-class PQ/SQ/RQ; returns the largest absolute difference."""
    worst = 0.0
    for group, scores in (("All", ours.all), ("Things", ours.things), ("Stuff", ours.stuff)):
        assert scores.n == theirs[group]["n"]
        for key in ("pq", "sq", "rq"):
            difference = abs(getattr(scores, key) - theirs[group][key])
            worst = max(worst, difference)
            assert difference < TOLERANCE, (group, key, getattr(scores, key), theirs[group][key])
    for label_id, class_scores in theirs["per_class"].items():
        class_id = label_to_class[int(label_id)]
        if class_id not in ours.per_class:
            assert class_scores == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        for key in ("pq", "sq", "rq"):
            difference = abs(getattr(ours.per_class[class_id], key) - class_scores[key])
            worst = max(worst, difference)
            assert difference < TOLERANCE, (class_id, key)
    return worst


@pytest.fixture(scope="module")
def random_split() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(20240611)
    gts = [random_ground_truth(rng) for _ in range(24)]
    return gts, [random_prediction(rng, gt) for gt in gts]


def test_split_pq_equals_cityscapesscripts_evaluate_panoptic(tmp_path: Path, random_split) -> None:
    gts, preds = random_split
    gt_json, gt_folder, _ = write_cityscapes_split(tmp_path, "gt", gts, is_gt=True)
    pred_json, pred_folder, _ = write_cityscapes_split(tmp_path, "pred", preds, is_gt=False)
    theirs = cityscapes_pq.evaluatePanoptic(
        str(gt_json), str(gt_folder), str(pred_json), str(pred_folder), str(tmp_path / "result.json")
    )
    ours = panoptic_quality(gts, preds, CITYSCAPES_THING_TRAIN_IDS)
    worst = assert_equal_to_cityscapes(ours, theirs, LABEL_ID_TO_TRAIN_ID)
    assert worst < TOLERANCE
    assert 0.2 < ours.all.pq < 0.9 and ours.things.n > 0 and ours.stuff.n > 0  # a non-trivial split


def test_each_random_pair_has_cityscapesscripts_counts(tmp_path: Path, random_split) -> None:
    """Per image: TP, FP, FN and IoU sums per class from cityscapesscripts' own per-image routine."""
    gts, preds = random_split
    _, gt_folder, gt_annotations = write_cityscapes_split(tmp_path, "gt", gts, is_gt=True)
    _, pred_folder, pred_annotations = write_cityscapes_split(tmp_path, "pred", preds, is_gt=False)
    categories = {label.id: {"isthing": int(label.hasInstances)} for label in cityscapes_labels.labels}
    for gt, pred, gt_annotation, pred_annotation in zip(
        gts, preds, gt_annotations, pred_annotations, strict=True
    ):
        stat = cityscapes_pq.pq_compute_single_core(
            0, [(gt_annotation, pred_annotation)], str(gt_folder), str(pred_folder), categories
        )
        accumulator = PanopticQualityAccumulator(CITYSCAPES_THING_TRAIN_IDS)
        accumulator.update(gt, pred)
        for train_id, label_id in TRAIN_ID_TO_LABEL_ID.items():
            theirs = stat.pq_per_cat.get(label_id)
            expected = (0, 0, 0, 0.0) if theirs is None else (theirs.tp, theirs.fp, theirs.fn, theirs.iou)
            assert accumulator.tp[train_id] == expected[0]
            assert accumulator.fp[train_id] == expected[1]
            assert accumulator.fn[train_id] == expected[2]
            assert accumulator.iou_sum[train_id] == pytest.approx(expected[3], abs=1e-12)


# ---------------------------------------------------------------- panopticapi's COCO sample


def coco_to_codec(rgb: np.ndarray, segments: list[dict], categories: dict[int, dict]) -> np.ndarray:
    """COCO panoptic (RGB ids + segments_info) -> our codec; crowd becomes instance 0 of its class."""
    rgb = rgb.astype(np.int64)
    coco_ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
    ids = np.full(coco_ids.shape, VOID_ID, dtype=np.int32)
    next_instance: dict[int, int] = {}
    for segment in segments:
        class_id = segment["category_id"]
        instance = 0
        if categories[class_id]["isthing"] and not segment["iscrowd"]:
            instance = next_instance.get(class_id, 1)
            next_instance[class_id] = instance + 1
        ids[coco_ids == segment["id"]] = class_id * LABEL_DIVISOR + instance
    return ids


@pytest.fixture(scope="module")
def coco_sample(shared_data: Path) -> dict[str, Any]:
    folder = shared_data / "metric_reference" / "panopticapi_sample"
    gt_json = json.loads((folder / "panoptic_examples.json").read_text())
    categories = {c["id"]: c for c in gt_json["categories"]}
    maps = []
    for annotation in gt_json["annotations"]:
        rgb = np.array(Image.open(folder / "panoptic_examples" / annotation["file_name"]).convert("RGB"))
        maps.append(coco_to_codec(rgb, annotation["segments_info"], categories))
    things = [c for c, info in categories.items() if info["isthing"]]
    return {"folder": folder, "json": gt_json, "maps": maps, "things": things, "categories": categories}


def test_coco_sample_pq_of_ground_truth_with_itself_is_100(coco_sample) -> None:
    result = panoptic_quality(coco_sample["maps"], coco_sample["maps"], coco_sample["things"])
    assert 100 * result.all.pq == pytest.approx(100.0)
    assert result.things.pq == result.stuff.pq == result.all.sq == result.all.rq == 1.0
    assert result.things.n > 0 and result.stuff.n > 0


def test_coco_sample_perturbed_equals_cityscapesscripts(tmp_path: Path, coco_sample) -> None:
    """Original COCO files as ground truth; a perturbed copy (ours, written as COCO) as prediction."""
    rng = np.random.default_rng(7)
    annotations = []
    pred_maps = []
    (tmp_path / "pred").mkdir()
    for gt_ids, gt_annotation in zip(coco_sample["maps"], coco_sample["json"]["annotations"], strict=True):
        pred = np.roll(gt_ids, (2, -3), axis=(0, 1))
        segments = np.unique(gt_ids).tolist()
        for segment in rng.choice(segments, size=4, replace=False).tolist():
            pred[gt_ids == segment] = VOID_ID if rng.random() < 0.5 else segments[0]
        for _ in range(6):
            height, width = pred.shape
            y, x = rng.integers(0, height - 40), rng.integers(0, width - 40)
            pred[y : y + 40, x : x + 40] = int(rng.choice(segments))
        pred_maps.append(pred)
        coco_ids = np.where(pred == VOID_ID, 0, pred)
        Image.fromarray(_rgb(coco_ids)).save(tmp_path / "pred" / gt_annotation["file_name"])
        segments_info = [
            {"id": int(s), "category_id": int(s) // LABEL_DIVISOR, "iscrowd": 0}
            for s in np.unique(pred).tolist()
            if s != VOID_ID
        ]
        annotations.append({**gt_annotation, "segments_info": segments_info})
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps({"annotations": annotations}))
    theirs = cityscapes_pq.evaluatePanoptic(
        str(coco_sample["folder"] / "panoptic_examples.json"),
        str(coco_sample["folder"] / "panoptic_examples"),
        str(pred_json),
        str(tmp_path / "pred"),
        str(tmp_path / "result.json"),
    )
    ours = panoptic_quality(coco_sample["maps"], pred_maps, coco_sample["things"])
    identity = {c: c for c in coco_sample["categories"]}
    assert assert_equal_to_cityscapes(ours, theirs, identity) < TOLERANCE
    assert 0.1 < ours.all.pq < 0.9


# ---------------------------------------------------------------- deeplab2 and hand-worked cases


def test_deeplab2_non_contiguous_ignore_case() -> None:
    """deeplab2 panoptic_quality_test: PQ 2/9, SQ 1/3, RQ 2/9 (TP 1/3, FN 2/3, FP 2/3 per class).

    deeplab2 treats only (ignore class, instance 0) as void; ground-truth pixels of the ignore class with
    an instance are neither void nor counted, i.e. a class outside the evaluated ones. Averaging: all 3
    classes have TP + FP + FN > 0, so both conventions average over 3 here.
    """
    ignored, unevaluated = 9, 3
    gt_class = np.array([[0, 9, 9], [1, 2, 2], [1, 9, 9]])
    gt_instance = np.array([[0, 2, 2], [1, 0, 0], [1, 0, 0]])
    pred_class = np.array([[0, 0, 9], [1, 1, 1], [1, 9, 9]])
    pred_instance = np.array([[0, 0, 0], [0, 1, 1], [0, 1, 1]])
    gt_class = np.where(gt_class == ignored, np.where(gt_instance == 0, IGNORE_CLASS, unevaluated), gt_class)
    pred_class = np.where(pred_class == ignored, IGNORE_CLASS, pred_class)
    accumulator = PanopticQualityAccumulator(thing_classes=[], classes=[0, 1, 2])
    accumulator.update(gt_class * LABEL_DIVISOR + gt_instance, pred_class * LABEL_DIVISOR + pred_instance)
    result = accumulator.compute()
    assert result.all.n == 3
    assert result.all.pq == pytest.approx(2 / 9)
    assert result.all.sq == pytest.approx(1 / 3)
    assert result.all.rq == pytest.approx(2 / 9)
    counts = [(result.per_class[c].tp, result.per_class[c].fn, result.per_class[c].fp) for c in range(3)]
    assert np.sum(counts, axis=0).tolist() == [1, 2, 2]


def test_void_and_crowd_rules_by_hand() -> None:
    """A 1x10 strip, thing class 11: each rule of the protocol in one place."""
    person = 11 * LABEL_DIVISOR
    gt = np.array([[0, 0, person + 1, person + 1, person + 1, VOID_ID, VOID_ID, VOID_ID, person, person]])
    # Instance 5 (5 px) covers gt 1 (3 px) and 1 void px: union 5 + 3 - 3 - 1 = 4, IoU 3/4 > 0.5 -> TP.
    # Instance 6: both its pixels on void -> no FP. Instance 7: both on the class's crowd -> no FP.
    pred = np.array([[0, *[person + 5] * 5, person + 6, person + 6, person + 7, person + 7]])
    result = panoptic_quality([gt], [pred], thing_classes=[11])
    person_quality = result.per_class[11]
    assert (person_quality.tp, person_quality.fp, person_quality.fn) == (1, 0, 0)
    assert person_quality.iou_sum == pytest.approx(3 / 4)
    road = result.per_class[0]  # gt road 2 px vs pred road 1 px: IoU 1/2, not > 1/2 -> FP + FN
    assert (road.tp, road.fp, road.fn) == (0, 1, 1)
    assert result.all.pq == pytest.approx((3 / 4 + 0) / 2)


def test_accumulator_rejects_bad_input() -> None:
    accumulator = PanopticQualityAccumulator([11], classes=range(19))
    with pytest.raises(ValueError, match="differ"):
        accumulator.update(np.zeros((2, 2), np.int32), np.zeros((2, 3), np.int32))
    with pytest.raises(ValueError, match="not evaluated"):
        accumulator.update(np.zeros((2, 2), np.int32), np.full((2, 2), 20_000, np.int32))
    assert np.isnan(PanopticQualityAccumulator([11]).compute().all.pq)
