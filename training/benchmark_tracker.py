"""Cost of one MultiObjectTracker.update per frame, on synthetic moving objects with embeddings.

    python training/benchmark_tracker.py [--frames 300] [--objects 30] [--frame-size 512x1024]
        [--embedding-dim 16] [--warmup 10] [--seed 0] [--output results.json]

Each frame holds --objects thing instances (rectangles and ellipses of 16-160 px, occluding each
other in a fixed depth order, moving at constant velocity and bouncing off the borders) with noisy
per-object embeddings. The tracker runs twice over the same frames: without flow (constant-velocity
mask prediction) and with flow warping on (an exact backward flow of the synthetic motion). Only the
update call is timed (frames and flow are built outside the clock), on one thread, as wall time and
as the thread's CPU time (what it costs on a core shared with other jobs, without the waits); the
acceptance target is a median of at most 5 ms at 30 instances and 512x1024. Prints a table (wall
median, p95, mean, max, CPU median and p95, in ms; identity switches against the synthetic truth as
a sanity check) and writes it as JSON with --output. Run with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.ndimage

from cups_ros.core.files import write_json_atomic
from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.model.postprocess import DetectedInstance, PanopticPrediction
from cups_ros.tracking import MultiObjectTracker, TrackerConfig

STUFF_CLASS = 0
THING_CLASSES = tuple(range(11, 19))


def parse_frame_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame size {text!r} is not HEIGHTxWIDTH") from None
    if height < 16 or width < 16:
        raise argparse.ArgumentTypeError(f"frame size {text!r} is too small")
    return height, width


@dataclass
class SyntheticObject:
    class_id: int
    width: float
    height: float
    x: float
    y: float
    velocity_x: float
    velocity_y: float
    ellipse: bool
    embedding: np.ndarray


@dataclass
class SyntheticFrame:
    prediction: PanopticPrediction
    flow_to_previous: np.ndarray
    object_of_instance: dict[int, int]
    """Per-frame instance id -> object index (the truth, for the identity-switch sanity check)."""


def synthetic_objects(
    count: int, size: tuple[int, int], embedding_dim: int, rng: np.random.Generator
) -> list[SyntheticObject]:
    height, width = size
    objects = []
    for _ in range(count):
        largest = min(160.0, min(height, width) / 2)
        object_width, object_height = rng.uniform(min(16.0, largest / 2), largest, size=2)
        vector = rng.normal(size=embedding_dim)
        objects.append(
            SyntheticObject(
                class_id=int(rng.choice(THING_CLASSES)),
                width=float(object_width),
                height=float(object_height),
                x=float(rng.uniform(0, width - object_width)),
                y=float(rng.uniform(0, height - object_height)),
                velocity_x=float(rng.uniform(-8, 8)),
                velocity_y=float(rng.uniform(-3, 3)),
                ellipse=bool(rng.random() < 0.5),
                embedding=vector / max(np.linalg.norm(vector), 1e-12),
            )
        )
    return objects


def synthetic_frames(
    frames: int, objects: int, size: tuple[int, int], embedding_dim: int, seed: int
) -> Iterator[SyntheticFrame]:
    """Frames one at a time (a few hundred at 512x1024 would not fit in memory at once)."""
    rng = np.random.default_rng(seed)
    height, width = size
    scene = synthetic_objects(objects, size, embedding_dim, rng)
    for _ in range(frames):
        labels = np.zeros(size, dtype=np.int32)  # object index + 1, later objects in front
        for index, item in enumerate(scene):
            centre = (round(item.x + item.width / 2), round(item.y + item.height / 2))
            if item.ellipse:
                axes = (max(1, round(item.width / 2)), max(1, round(item.height / 2)))
                cv2.ellipse(labels, centre, axes, 0, 0, 360, index + 1, thickness=-1)
            else:
                corner = (round(item.x + item.width), round(item.y + item.height))
                cv2.rectangle(labels, (round(item.x), round(item.y)), corner, index + 1, thickness=-1)
        velocities = np.array([[0.0, 0.0]] + [[o.velocity_x, o.velocity_y] for o in scene], np.float32)
        flow = -velocities[labels]  # this frame's pixel came from x - v in the previous frame
        instance_ids = rng.permutation(LABEL_DIVISOR - 1)[: len(scene)] + 1
        classes = np.array([STUFF_CLASS] + [o.class_id for o in scene], dtype=np.int32)
        ids = np.array([0, *instance_ids.tolist()], dtype=np.int32)
        panoptic = classes[labels] * LABEL_DIVISOR + ids[labels]
        areas = np.bincount(labels.ravel(), minlength=len(scene) + 1)
        instances, object_of_instance = [], {}
        for index, window in enumerate(scipy.ndimage.find_objects(labels, max_label=len(scene))):
            if window is None:
                continue  # fully hidden this frame
            rows, columns = window
            item = scene[index]
            noise = rng.normal(scale=0.1, size=item.embedding.size)
            embedding = item.embedding + noise
            instances.append(
                DetectedInstance(
                    instance_id=int(instance_ids[index]),
                    class_id=item.class_id,
                    score=0.9,
                    area=int(areas[index + 1]),
                    box=(columns.start, rows.start, columns.stop - 1, rows.stop - 1),
                    centre=((columns.start + columns.stop) / 2, (rows.start + rows.stop) / 2),
                    embedding=(embedding / np.linalg.norm(embedding)).astype(np.float32),
                )
            )
            object_of_instance[int(instance_ids[index])] = index
        semantic = classes[labels].astype(np.uint8)
        yield SyntheticFrame(PanopticPrediction(panoptic, semantic, instances), flow, object_of_instance)
        for item in scene:
            item.x += item.velocity_x
            item.y += item.velocity_y
            if not 0 <= item.x <= width - item.width:
                item.velocity_x = -item.velocity_x
                item.x = min(max(item.x, 0.0), width - item.width)
            if not 0 <= item.y <= height - item.height:
                item.velocity_y = -item.velocity_y
                item.y = min(max(item.y, 0.0), height - item.height)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def run(
    frames: int, objects: int, size: tuple[int, int], embedding_dim: int, seed: int, warmup: int, flow: bool
) -> dict[str, Any]:
    """Timings of one pass; identity switches counted against the synthetic truth."""
    tracker = MultiObjectTracker(TrackerConfig())
    times: list[float] = []
    cpu_times: list[float] = []
    last_track_of_object: dict[int, int] = {}
    switches = 0
    instances = 0
    for index, frame in enumerate(synthetic_frames(frames + warmup, objects, size, embedding_dim, seed)):
        start, cpu_start = time.perf_counter(), time.thread_time()
        tracked = tracker.update(frame.prediction, frame.flow_to_previous if flow else None)
        elapsed = (time.perf_counter() - start) * 1e3
        cpu_elapsed = (time.thread_time() - cpu_start) * 1e3
        if index >= warmup:
            times.append(elapsed)
            cpu_times.append(cpu_elapsed)
            instances += len(frame.prediction.instances)
        track_of_instance = _tracks_of_instances(frame, tracked.panoptic)
        for instance_id, track_id in track_of_instance.items():
            item = frame.object_of_instance[instance_id]
            if last_track_of_object.get(item, track_id) != track_id:
                switches += 1
            last_track_of_object[item] = track_id
    return {
        "flow": flow,
        "frames": len(times),
        "mean_instances": instances / max(len(times), 1),
        "median_ms": statistics.median(times),
        "p95_ms": percentile(times, 0.95),
        "mean_ms": statistics.fmean(times),
        "max_ms": max(times),
        "cpu_median_ms": statistics.median(cpu_times),
        "cpu_p95_ms": percentile(cpu_times, 0.95),
        "id_switches": switches,
    }


def _tracks_of_instances(frame: SyntheticFrame, tracked: np.ndarray) -> dict[int, int]:
    """Track id at each instance's box centre pixel, if that pixel is the instance's."""
    result = {}
    panoptic = frame.prediction.panoptic
    for instance in frame.prediction.instances:
        x_min, y_min, x_max, y_max = instance.box
        rows, columns = np.nonzero(
            panoptic[y_min : y_max + 1, x_min : x_max + 1]
            == instance.class_id * LABEL_DIVISOR + instance.instance_id
        )
        if rows.size:
            track = (
                int(tracked[y_min + rows[rows.size // 2], x_min + columns[rows.size // 2]]) % LABEL_DIVISOR
            )
            if track:
                result[instance.instance_id] = track
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=300, help="timed frames per pass (>= 200 advised)")
    parser.add_argument("--objects", type=int, default=30)
    parser.add_argument("--frame-size", type=parse_frame_size, default=(512, 1024), help="HEIGHTxWIDTH")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=10, help="untimed frames first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.frames < 1 or args.objects < 1 or args.embedding_dim < 1 or args.warmup < 0:
        print("benchmark_tracker: error: --frames, --objects, --embedding-dim must be >= 1", file=sys.stderr)
        return 2
    cv2.setNumThreads(1)
    results = [
        run(args.frames, args.objects, args.frame_size, args.embedding_dim, args.seed, args.warmup, flow)
        for flow in (False, True)
    ]
    height, width = args.frame_size
    print(f"tracker update, {args.objects} objects at {height}x{width}, {args.frames} frames, one thread")
    print(
        f"{'mode':14s} {'instances':>9s} {'median':>8s} {'p95':>8s} {'mean':>8s} {'max':>8s}"
        f" {'cpu med':>8s} {'cpu p95':>8s} {'ID sw':>6s}"
    )
    for result in results:
        mode = "flow warping" if result["flow"] else "no flow"
        print(
            f"{mode:14s} {result['mean_instances']:9.1f} {result['median_ms']:8.2f} {result['p95_ms']:8.2f}"
            f" {result['mean_ms']:8.2f} {result['max_ms']:8.2f} {result['cpu_median_ms']:8.2f}"
            f" {result['cpu_p95_ms']:8.2f} {result['id_switches']:6d}"
        )
    if args.output is not None:
        write_json_atomic(
            args.output,
            {
                "objects": args.objects,
                "frame_size": [height, width],
                "embedding_dim": args.embedding_dim,
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                "results": results,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
