"""Quality and speed of the stage-1 pseudo-labels against the simulator's ground truth and real data.

    python training/pseudo_label.py /tmp/sim --split val --output /tmp/pl_val --semantics PROTOTYPES
    python training/benchmark_pseudo_labels.py --labels /tmp/pl_val --sim /tmp/sim --split val \
        --train-sim /tmp/sim [--data ../shared/data] [--output DIR]

Reports (and writes ``benchmark.json`` and montages into --output, default LABELS/benchmark):
- moving-object instances (motion ensemble, before fusion): precision and recall at IoU >= 0.5 for
  moving ground-truth objects of >= 1000 px (smaller moving objects are ignored both ways);
- recall of static ground-truth things (>= 1000 px) with the motion instances only and with the
  depth-edge instances of step 4 added (the final pseudo-label instances);
- semantic Hungarian mIoU of the pseudo-classes and of plain k-means (K=27) on the same backbone
  features, fitted on the same training frames, on the same validation frames;
- PQ (things, stuff) and STQ/AQ of the final panoptic pseudo-labels after Hungarian matching;
- real data: KITTI 2015 000046 disparity D1 and end-point error, moving instances per frame pair on
  the EuRoC static-scene stereo video, semantic montages of KITTI and Argoverse;
- per-stage seconds per frame (medians over the pseudo-labelled frames) and one clustering run.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cups_ros.core.camera import camera_model_from_kitti_calib
from cups_ros.core.files import write_json_atomic, write_png_atomic
from cups_ros.core.frame import StereoFrame
from cups_ros.core.panoptic import decode_panoptic_id
from cups_ros.eval.network import evaluate_pseudo_labels, pseudo_thing_classes
from cups_ros.eval.panoptic_quality import CITYSCAPES_THING_TRAIN_IDS
from cups_ros.features import load_backbone
from cups_ros.geometry import SequenceGeometry, compute_disparity, compute_frame_geometry
from cups_ros.geometry.reference import kitti_d1, read_kitti_disparity, read_rgb
from cups_ros.pseudo.masks import match_instances
from cups_ros.pseudo.motion import MotionInstanceSegmenter
from cups_ros.pseudo.pipeline import (
    FrameWork,
    load_pseudo_label_config,
    pseudo_class_colours,
    read_pseudo_label,
    semantic_fit_samples,
    work_path,
)
from cups_ros.pseudo.semantics import SemanticPseudoLabeller, hungarian_miou, kmeans_baseline
from cups_ros.pseudo.sources import open_sequences
from cups_ros.sim.dataset import SimSequence, load_split

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
MIN_AREA = 1000


def gt_masks(frame, moving: bool) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Masks of the frame's thing tracks that are (not) moving, and which are too small to count."""
    classes, instances = decode_panoptic_id(frame.panoptic)
    masks, small = [], []
    for track in np.unique(instances[instances > 0]):
        if frame.moving.get(int(track), False) != moving:
            continue
        mask = instances == track
        if int(np.bincount(classes[mask]).argmax()) not in CITYSCAPES_THING_TRAIN_IDS:
            continue
        masks.append(mask)
        small.append(mask.sum() < MIN_AREA)
    shape = frame.panoptic.shape
    return (np.stack(masks) if masks else np.zeros((0, *shape), bool)), np.array(small, bool)


def instance_masks(panoptic: np.ndarray) -> np.ndarray:
    _, instances = decode_panoptic_id(panoptic)
    ids = np.unique(instances[instances > 0])
    return np.stack([instances == i for i in ids]) if len(ids) else np.zeros((0, *panoptic.shape), bool)


def instance_figures(labels: Path, sequences: list[SimSequence]) -> dict[str, float]:
    moving = {"tp": 0, "fp": 0, "fn": 0}
    static_motion = static_all = static_total = 0
    for sequence in sequences:
        for frame in sequence:
            work = FrameWork.read(work_path(labels, sequence.name, frame.index))
            gt, small = gt_masks(frame, moving=True)
            result = match_instances(work.motion_masks, gt, 0.5, gt_ignore=small)
            moving["tp"] += result.true_positives
            moving["fp"] += result.false_positives
            moving["fn"] += result.false_negatives
            static, static_small = gt_masks(frame, moving=False)
            static = static[~static_small]
            static_total += len(static)
            static_motion += match_instances(work.motion_masks, static, 0.5).true_positives
            final = instance_masks(read_pseudo_label(labels, sequence.name, frame.index))
            static_all += match_instances(final, static, 0.5).true_positives
    return {
        "moving_precision": moving["tp"] / max(moving["tp"] + moving["fp"], 1),
        "moving_recall": moving["tp"] / max(moving["tp"] + moving["fn"], 1),
        "moving_tp": moving["tp"],
        "moving_fp": moving["fp"],
        "moving_fn": moving["fn"],
        "static_things": static_total,
        "static_recall_motion_only": static_motion / max(static_total, 1),
        "static_recall_with_depth_instances": static_all / max(static_total, 1),
    }


def semantic_figures(
    labels: Path, sequences: list[SimSequence], train: list[SimSequence], config, backbone, stride: int
) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Pseudo-classes (as pseudo-labelled, before smoothing) vs k-means on the same features."""
    frames = [(s, i) for s in sequences for i in range(0, len(s), stride)]
    truths = [s[i].semantic for s, i in frames]
    ours = [FrameWork.read(work_path(labels, s.name, i)).labels for s, i in frames]

    train_sequences = open_sequences([s.folder for s in train])
    baseline = kmeans_baseline(
        semantic_fit_samples(train_sequences, config, False), backbone, config.semantics
    )
    kmeans = [baseline.predict(s[i].left).labels for s, i in frames]
    k = config.semantics.num_classes
    return {
        "semantic_frames": len(frames),
        "semantic_miou_pseudo_classes": hungarian_miou(ours, truths, k).miou,
        "semantic_miou_kmeans": hungarian_miou(kmeans, truths, k).miou,
    }


def panoptic_figures(labels: Path, sequences: list[SimSequence]) -> dict[str, float]:
    scores = evaluate_pseudo_labels(labels, sequences)
    return {**scores.summary(), "pseudo_thing_classes": len(pseudo_thing_classes(labels)[1])}


def speed_figures(labels: Path, sequences: list[SimSequence], config) -> dict[str, float]:  # type: ignore[no-untyped-def]
    stages: dict[str, list[float]] = {}
    for sequence in sequences:
        for index in range(len(sequence)):
            for stage, seconds in FrameWork.read(work_path(labels, sequence.name, index)).timings.items():
                stages.setdefault(stage, []).append(seconds)
    figures = {f"seconds_{stage}": float(np.median(values)) for stage, values in stages.items()}
    sequence = sequences[0]
    pair = SequenceGeometry(config.geometry).pair(sequence[0].stereo_frame(), sequence[1].stereo_frame())
    segmenter = MotionInstanceSegmenter(config.motion)
    segmenter.segment(pair, seed=0, camera=sequence.camera)  # warm-up
    start = time.perf_counter()
    for seed in range(3):
        segmenter.segment(pair, seed=seed, camera=sequence.camera)
    figures["seconds_one_clustering_run"] = (time.perf_counter() - start) / 3
    return figures


def real_data_figures(data: Path, config, labeller: SemanticPseudoLabeller, output: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    figures: dict[str, float] = {}
    kitti = data / "kitti2015_stereo_pair"
    if kitti.is_dir():
        camera = camera_model_from_kitti_calib(kitti / "calib" / "calib_cam_to_cam_2011_09_26.txt")
        left, right = (
            read_rgb(kitti / "image_2" / "000046_10.png"),
            read_rgb(kitti / "image_3" / "000046_10.png"),
        )
        frame = StereoFrame(left, right, camera, 0, sequence="kitti")
        truth = read_kitti_disparity(kitti / "disp_occ_0" / "000046_10.png")
        estimate = compute_disparity(left, right, config.geometry.stereo).disparity
        valid = truth > 0
        score = kitti_d1(estimate, truth, valid)
        both = valid & (estimate > 0)
        figures["kitti_d1"] = score.error_rate
        figures["kitti_disparity_density"] = score.density
        figures["kitti_disparity_epe"] = float(np.abs(estimate[both] - truth[both]).mean())
        geometry = compute_frame_geometry(frame, config.geometry)
        semantic_montage(left, geometry.depth, labeller, output / "kitti_semantics.png")
    argoverse = data / "argoverse_stereo_pair"
    images = sorted(argoverse.rglob("stereo_front_left_rect_*.jpg")) if argoverse.is_dir() else []
    if images:
        left = read_rgb(images[0])
        scale = 1024 / left.shape[1]
        left = cv2.resize(left, (1024, round(left.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        semantic_montage(left, None, labeller, output / "argoverse_semantics.png")
    euroc = data / "euroc_micro_stereo"
    if euroc.is_dir():
        from cups_ros.io.euroc import read_euroc_stereo

        frames = list(read_euroc_stereo(euroc))
        geometry = SequenceGeometry(config.geometry)
        segmenter = MotionInstanceSegmenter(config.motion)
        counts = [
            len(segmenter.segment_ensemble(geometry.pair(a, b), camera=a.camera))
            for a, b in itertools.pairwise(frames)
        ]
        figures["euroc_pairs"] = len(counts)
        figures["euroc_moving_instances_per_pair"] = float(np.mean(counts))
    return figures


def semantic_montage(
    image: np.ndarray, depth: np.ndarray | None, labeller: SemanticPseudoLabeller, path: Path
) -> None:
    labels = labeller.predict(image, depth).labels
    overlay = cv2.addWeighted(image, 0.45, pseudo_class_colours(labels), 0.55, 0.0)
    write_png_atomic(path, np.concatenate([image, overlay], axis=0))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--labels", type=Path, required=True, help="output of training/pseudo_label.py")
    parser.add_argument("--sim", type=Path, required=True, help="simulator root with the labelled split")
    parser.add_argument("--split", default="val")
    parser.add_argument("--train-sim", type=Path, default=None, help="simulator root with train_* (k-means)")
    parser.add_argument("--data", type=Path, default=REPOSITORY_ROOT.parent / "shared" / "data")
    parser.add_argument("--semantic-stride", type=int, default=5, help="every n-th frame for mIoU")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    output = args.output or args.labels / "benchmark"
    config = load_pseudo_label_config(args.labels / "pseudo_label.yaml")
    sequences = load_split(args.sim, args.split)
    if not sequences:
        raise SystemExit(f"no {args.split}_* sequences under {args.sim}")
    backbone = load_backbone(config.features)
    prototypes = args.labels / "semantics.npz"
    labeller = SemanticPseudoLabeller.load(prototypes, backbone, config.semantics)
    figures: dict[str, float] = {"sequences": len(sequences), "frames": sum(len(s) for s in sequences)}
    figures |= instance_figures(args.labels, sequences)
    figures |= panoptic_figures(args.labels, sequences)
    if args.train_sim is not None:
        train = load_split(args.train_sim, "train")
        figures |= semantic_figures(args.labels, sequences, train, config, backbone, args.semantic_stride)
    figures |= speed_figures(args.labels, sequences, config)
    if args.data.is_dir():
        figures |= real_data_figures(args.data, config, labeller, output)
    write_json_atomic(output / "benchmark.json", figures)
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    print(f"written: {output / 'benchmark.json'} and montages in {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
