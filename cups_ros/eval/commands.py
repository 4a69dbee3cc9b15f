"""``cups-ros eval-panoptic``: PQ/SQ/RQ and mIoU of a folder of panoptic PNGs against ground truth."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cups_ros.core.files import write_json_atomic
from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR, panoptic_from_rgb
from cups_ros.eval.matching import ClassMapping, match_pseudo_classes
from cups_ros.eval.panoptic_quality import (
    CITYSCAPES_NUM_TRAIN_IDS,
    CITYSCAPES_THING_TRAIN_IDS,
    PanopticQualityAccumulator,
    PanopticQualityResult,
)
from cups_ros.eval.semantic import ConfusionMatrix, SemanticResult, semantic_scores

LOGGER = logging.getLogger(__name__)


def read_panoptic_png(path: Path) -> np.ndarray:
    """int32 panoptic ids of an RGB-encoded panoptic PNG (id = R + 256 G + 256^2 B)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{path}: panoptic PNG must be 8-bit RGB, got shape {image.shape} {image.dtype}")
    return panoptic_from_rgb(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def paired_files(gt_dir: Path, pred_dir: Path) -> list[tuple[Path, Path]]:
    """(ground truth, prediction) PNGs paired by their path relative to each folder."""
    if not gt_dir.is_dir():
        raise ValueError(f"ground-truth folder {gt_dir} does not exist")
    if not pred_dir.is_dir():
        raise ValueError(f"prediction folder {pred_dir} does not exist")
    gt_files = sorted(p.relative_to(gt_dir) for p in gt_dir.rglob("*.png"))
    if not gt_files:
        raise ValueError(f"no PNG files in {gt_dir}")
    missing = [str(p) for p in gt_files if not (pred_dir / p).is_file()]
    if missing:
        raise ValueError(
            f"{len(missing)} ground-truth files have no prediction in {pred_dir}, e.g. {missing[:3]}"
        )
    return [(gt_dir / p, pred_dir / p) for p in gt_files]


def _int_list(text: str) -> tuple[int, ...]:
    """'11,12,13' or '11-18' or a mix: class ids for the command line."""
    ids: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "-" in part:
            first, last = (int(v) for v in part.split("-", 1))
            ids.extend(range(first, last + 1))
        else:
            ids.append(int(part))
    return tuple(ids)


def _match_split(pairs: list[tuple[Path, Path]], args: argparse.Namespace) -> ClassMapping:
    """First pass of --hungarian: the split's pseudo-class x class overlap, then the assignment."""
    confusion = ConfusionMatrix(args.num_classes, num_pred_classes=IGNORE_CLASS)
    for gt_path, pred_path in pairs:
        confusion.update_panoptic(read_panoptic_png(gt_path), read_panoptic_png(pred_path))
    overlap = confusion.overlap  # (IGNORE_CLASS, G): every possible pseudo-class
    predicted = np.flatnonzero(confusion.counts[:, :IGNORE_CLASS].sum(axis=0))
    num_pseudo = args.num_pseudo_classes
    if num_pseudo is None:
        num_pseudo = int(predicted.max()) + 1 if predicted.size else 1
    elif predicted.size and predicted.max() >= num_pseudo:
        raise ValueError(
            f"predictions hold pseudo-class {predicted.max()} >= --num-pseudo-classes {num_pseudo}"
        )
    return match_pseudo_classes(
        overlap[:num_pseudo],
        pseudo_thing_classes=args.pseudo_thing_classes,
        gt_thing_classes=args.thing_classes,
        leftover=args.leftover,
    )


def evaluate_panoptic_folders(
    args: argparse.Namespace,
) -> tuple[PanopticQualityResult, SemanticResult, ClassMapping | None, int]:
    """PQ and semantic scores over the paired folders (after Hungarian matching if asked)."""
    pairs = paired_files(args.gt_dir, args.pred_dir)
    mapping = _match_split(pairs, args) if args.hungarian else None
    panoptic = PanopticQualityAccumulator(args.thing_classes, classes=range(args.num_classes))
    confusion = ConfusionMatrix(args.num_classes)
    for gt_path, pred_path in pairs:
        gt_ids, pred_ids = read_panoptic_png(gt_path), read_panoptic_png(pred_path)
        if gt_ids.shape != pred_ids.shape:
            raise ValueError(f"{gt_path} {gt_ids.shape} and {pred_path} {pred_ids.shape} differ in size")
        if mapping is not None:
            pred_ids = mapping.remap_panoptic(pred_ids)
        panoptic.update(gt_ids, pred_ids)
        confusion.update(gt_ids // LABEL_DIVISOR, pred_ids // LABEL_DIVISOR)
    return panoptic.compute(), semantic_scores(confusion), mapping, len(pairs)


def _percent(value: float) -> str:
    return "    -" if math.isnan(value) else f"{100 * value:5.1f}"


def format_table(panoptic: PanopticQualityResult, semantic: SemanticResult) -> str:
    """Per-class and summary PQ/SQ/RQ table (percent), then mIoU and pixel accuracy."""
    lines = [f"{'class':>8} | {'PQ':>5} {'SQ':>5} {'RQ':>5} | {'TP':>6} {'FP':>6} {'FN':>6} | {'IoU':>5}"]
    for class_id, quality in sorted(panoptic.per_class.items()):
        iou = semantic.iou_per_class[class_id] if class_id < semantic.iou_per_class.size else math.nan
        kind = "T" if quality.is_thing else "S"
        lines.append(
            f"{class_id:>6} {kind} | {_percent(quality.pq)} {_percent(quality.sq)} {_percent(quality.rq)} | "
            f"{quality.tp:>6} {quality.fp:>6} {quality.fn:>6} | {_percent(iou)}"
        )
    lines.append("-" * len(lines[0]))
    lines.append(f"{'':>8} | {'PQ':>5} {'SQ':>5} {'RQ':>5} | {'N':>6}")
    for name, scores in (("all", panoptic.all), ("things", panoptic.things), ("stuff", panoptic.stuff)):
        lines.append(
            f"{name:>8} | {_percent(scores.pq)} {_percent(scores.sq)} {_percent(scores.rq)} | {scores.n:>6}"
        )
    lines.append(f"mIoU {_percent(semantic.miou)}   pixel accuracy {_percent(semantic.pixel_accuracy)}")
    return "\n".join(lines)


def run_eval_panoptic(args: argparse.Namespace) -> int:
    if args.num_pseudo_classes is not None and not args.hungarian:
        raise ValueError("--num-pseudo-classes only applies with --hungarian")
    if args.pseudo_thing_classes is not None and not args.hungarian:
        raise ValueError("--pseudo-thing-classes only applies with --hungarian")
    panoptic, semantic, mapping, num_frames = evaluate_panoptic_folders(args)
    print(format_table(panoptic, semantic))
    if args.json is not None:
        report: dict[str, Any] = {
            "gt_dir": str(args.gt_dir),
            "pred_dir": str(args.pred_dir),
            "num_frames": num_frames,
            "thing_classes": list(args.thing_classes),
            "panoptic": panoptic.to_dict(),
            "semantic": semantic.to_dict(),
            "pseudo_class_to_class": None if mapping is None else mapping.target.tolist(),
        }
        write_json_atomic(args.json, report)
        LOGGER.info("wrote %s", args.json)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval-panoptic",
        help="PQ/SQ/RQ and mIoU of predicted panoptic PNGs against ground truth",
        description=(
            "Cityscapes/COCO panoptic quality and semantic mIoU over a split. Both folders hold RGB-encoded "
            "panoptic PNGs (id = class * 1000 + instance; class 255 = void), paired by relative path."
        ),
    )
    parser.add_argument("gt_dir", type=Path, metavar="GT_DIR")
    parser.add_argument("pred_dir", type=Path, metavar="PRED_DIR")
    parser.add_argument(
        "--num-classes", type=int, default=CITYSCAPES_NUM_TRAIN_IDS, help="ground-truth classes (default 19)"
    )
    parser.add_argument(
        "--thing-classes",
        type=_int_list,
        default=CITYSCAPES_THING_TRAIN_IDS,
        help="ground-truth thing classes, e.g. 11-18 (default: Cityscapes train ids 11-18)",
    )
    parser.add_argument(
        "--hungarian",
        action="store_true",
        help="predictions hold pseudo-classes: match them to classes first",
    )
    parser.add_argument(
        "--num-pseudo-classes", type=int, default=None, metavar="K", help="K (default: highest predicted + 1)"
    )
    parser.add_argument(
        "--pseudo-thing-classes",
        type=_int_list,
        default=None,
        help="thing pseudo-classes: match thing to thing and stuff to stuff",
    )
    parser.add_argument(
        "--leftover",
        choices=("majority", "void"),
        default="majority",
        help="unmatched pseudo-classes (K > G) go to their majority class or to void",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results here")
    parser.set_defaults(run=run_eval_panoptic)
