"""``cups-ros eval-panoptic`` end to end on PNG folders written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cups_ros.cli import main
from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR
from cups_ros.eval import CITYSCAPES_THING_TRAIN_IDS, ConfusionMatrix, panoptic_quality, semantic_scores

VOID_ID = IGNORE_CLASS * LABEL_DIVISOR


def write_png(path: Path, ids: np.ndarray) -> None:
    """RGB panoptic PNG written by PIL (RGB order), so reading it through OpenCV checks the BGR swap."""
    ids = ids.astype(np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)).save(
        path
    )


def random_frame(rng: np.random.Generator) -> np.ndarray:
    ids = np.repeat(rng.integers(0, 11, size=(6, 1)), 8, axis=0).repeat(64, axis=1) * LABEL_DIVISOR
    ids[40:] = 0  # road
    for instance in range(1, 6):
        class_id = int(rng.choice(CITYSCAPES_THING_TRAIN_IDS))
        y, x = rng.integers(0, 40), rng.integers(0, 56)
        ids[y : y + 8, x : x + 8] = class_id * LABEL_DIVISOR + instance
    ids[:2, :5] = VOID_ID
    return ids.astype(np.int32)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, list[np.ndarray]]:
    rng = np.random.default_rng(11)
    frames = [random_frame(rng) for _ in range(3)]
    for index, ids in enumerate(frames):
        write_png(tmp_path / "gt" / "city" / f"{index}.png", ids)
    return tmp_path / "gt", tmp_path / "pred", frames


def test_prediction_equal_to_ground_truth(folders, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt_dir, pred_dir, frames = folders
    for index, ids in enumerate(frames):
        write_png(pred_dir / "city" / f"{index}.png", ids)
    out = tmp_path / "report" / "pq.json"
    assert main(["eval-panoptic", str(gt_dir), str(pred_dir), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["panoptic"]["all"]["pq"] == 1.0 and report["semantic"]["miou"] == 1.0
    assert report["num_frames"] == 3 and report["pseudo_class_to_class"] is None
    assert "things" in capsys.readouterr().out


def test_hungarian_on_pseudo_classes_with_a_leftover(folders, tmp_path: Path) -> None:
    """Train ids permuted into 20 pseudo-classes (road split in two): matching recovers PQ 1."""
    gt_dir, pred_dir, frames = folders
    permutation = np.random.default_rng(5).permutation(19)
    pseudo_things = sorted(permutation[list(CITYSCAPES_THING_TRAIN_IDS)].tolist())
    for index, ids in enumerate(frames):
        classes, instances = ids // LABEL_DIVISOR, ids % LABEL_DIVISOR
        pseudo = np.where(classes == IGNORE_CLASS, IGNORE_CLASS, permutation[np.minimum(classes, 18)])
        pseudo[:, :3][classes[:, :3] == 0] = 19  # a leftover cluster inside road
        write_png(pred_dir / "city" / f"{index}.png", pseudo * LABEL_DIVISOR + instances)
    out = tmp_path / "pq.json"
    arguments = ["eval-panoptic", str(gt_dir), str(pred_dir), "--hungarian", "--json", str(out)]
    arguments += ["--pseudo-thing-classes", ",".join(map(str, pseudo_things)), "--num-pseudo-classes", "20"]
    assert main(arguments) == 0
    report = json.loads(out.read_text())
    present = np.unique(np.concatenate([ids.ravel() // LABEL_DIVISOR for ids in frames]))
    present = present[present != IGNORE_CLASS]
    mapping = np.array(report["pseudo_class_to_class"])
    assert mapping[permutation[present]].tolist() == present.tolist()  # absent classes: any assignment
    assert mapping[19] == 0
    assert report["panoptic"]["all"]["pq"] == pytest.approx(1.0)
    assert report["semantic"]["miou"] == pytest.approx(1.0)


def test_report_equals_the_library_on_an_imperfect_prediction(folders, tmp_path: Path) -> None:
    gt_dir, pred_dir, frames = folders
    predictions = [np.roll(ids, 3, axis=1) for ids in frames]
    for index, ids in enumerate(predictions):
        write_png(pred_dir / "city" / f"{index}.png", ids)
    out = tmp_path / "pq.json"
    assert main(["eval-panoptic", str(gt_dir), str(pred_dir), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    expected = panoptic_quality(frames, predictions, CITYSCAPES_THING_TRAIN_IDS)
    confusion = ConfusionMatrix(19)
    for gt, pred in zip(frames, predictions, strict=True):
        confusion.update_panoptic(gt, pred)
    assert report["panoptic"] == json.loads(json.dumps(expected.to_dict()))
    assert report["semantic"]["miou"] == pytest.approx(semantic_scores(confusion).miou)
    assert 0 < report["panoptic"]["all"]["pq"] < 1


def test_missing_prediction_is_one_clear_error(folders, capsys: pytest.CaptureFixture) -> None:
    gt_dir, pred_dir, frames = folders
    write_png(pred_dir / "city" / "0.png", frames[0])
    assert main(["eval-panoptic", str(gt_dir), str(pred_dir)]) == 2
    assert "have no prediction" in capsys.readouterr().err
