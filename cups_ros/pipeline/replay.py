"""``cups-ros replay IN_BAG OUT_BAG``: the perception pipeline over a recorded drive, without ROS.

Every synchronised input frame is either published into the output bag (the node's topics, same
stamps and frame ids) or counted as dropped with its reason; what the bag itself could not pair
(missing partner, decode errors) comes from the reader's sync report. The output bag is written
atomically, so a killed replay leaves no half bag.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from cups_ros.core.files import atomic_path, write_json_atomic
from cups_ros.core.frame import StereoFrame
from cups_ros.io.bag import BagWriter, StereoBagReader, StereoInputConfig
from cups_ros.io.messages import (
    DETECTION2D_ARRAY,
    IMAGE,
    LABEL_INFO,
    array_to_image,
    detection2d_array_message,
    label_info_message,
)
from cups_ros.online.learning import ReplayOnlineLearning
from cups_ros.pipeline.perception import (
    ModelLoadError,
    PerceptionConfig,
    PerceptionInputError,
    PerceptionPipeline,
    load_engine,
)

_log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReplayReport:
    input_bag: str
    output_bag: str
    frames_in: int = 0
    published: int = 0
    dropped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    unpaired: dict[str, int] = dataclasses.field(default_factory=dict)
    """What the bag reader skipped before pairing (sync report), per reason."""
    stage_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    """Median per stage over the published frames."""
    models: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Each model served, from which input frame on (online learning swaps models mid-drive)."""
    online_learning: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "dropped": dict(self.dropped)}


def output_topics(namespace: str) -> dict[str, str]:
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    names = ("panoptic", "semantic", "panoptic_color", "instances", "label_info", "depth")
    return {name: f"{prefix}/{name}" for name in names}


def overlay(left: np.ndarray, panoptic_rgb: np.ndarray) -> np.ndarray:
    return cv2.addWeighted(left, 0.45, panoptic_rgb, 0.55, 0.0)


def replay_bag(
    input_bag: str | Path,
    output_bag: str | Path,
    config: PerceptionConfig,
    *,
    input_config: StereoInputConfig | None = None,
    namespace: str = "perception",
    video: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    online: ReplayOnlineLearning | None = None,
) -> ReplayReport:
    """Runs the pipeline over every stereo frame of ``input_bag`` and writes ``output_bag``.

    With ``online``, every frame also goes to online learning, and a promoted model serves from the
    next frame on (the served model's runtime is ``config.model.backend``)."""
    reader = StereoBagReader(input_bag, input_config)
    pipeline = PerceptionPipeline(config)
    topics = output_topics(namespace)
    report = ReplayReport(str(input_bag), str(output_bag))
    report.models.append({"from_frame": 0, "model": pipeline.model_name, "version": None})
    timings: dict[str, list[float]] = collections.defaultdict(list)
    video_context = atomic_path(video) if video is not None else None
    video_path = video_context.__enter__() if video_context is not None else None
    video_writer: cv2.VideoWriter | None = None
    try:
        with BagWriter(output_bag, overwrite=overwrite) as bag:
            for name in ("panoptic", "semantic", "panoptic_color"):
                bag.add_topic(topics[name], IMAGE)
            bag.add_topic(topics["instances"], DETECTION2D_ARRAY)
            bag.add_topic(topics["label_info"], LABEL_INFO, latched=True)
            if config.depth.enabled:
                bag.add_topic(topics["depth"], IMAGE)
            label_info_written = False
            for frame in tqdm(reader, desc=Path(input_bag).name, unit="frame", disable=not progress):
                report.frames_in += 1
                try:
                    result = pipeline.process(frame)
                except PerceptionInputError as error:
                    report.dropped[error.reason] += 1
                    _log.warning("frame %d dropped: %s", frame.index, error)
                    continue
                finally:
                    if online is not None:
                        _learn_from(online, frame, pipeline, config, report)
                stamp, frame_id = result.stamp_ns, result.frame_id
                if not label_info_written:
                    bag.write(
                        topics["label_info"],
                        stamp,
                        label_info_message(result.class_names, 0.0, stamp, frame_id),
                    )
                    label_info_written = True
                bag.write(
                    topics["panoptic"], stamp, array_to_image(result.panoptic, "32SC1", stamp, frame_id)
                )
                bag.write(
                    topics["semantic"], stamp, array_to_image(result.semantic, "mono8", stamp, frame_id)
                )
                bag.write(
                    topics["panoptic_color"],
                    stamp,
                    array_to_image(result.panoptic_rgb, "rgb8", stamp, frame_id),
                )
                detections = detection2d_array_message(
                    result.tracks, stamp, frame_id, class_names=result.class_names
                )
                bag.write(topics["instances"], stamp, detections)
                if result.depth is not None:
                    bag.write(topics["depth"], stamp, array_to_image(result.depth, "32FC1", stamp, frame_id))
                report.published += 1
                for stage, milliseconds in result.timings_ms.items():
                    timings[stage].append(milliseconds)
                if video_path is not None:
                    picture = cv2.cvtColor(overlay(frame.left, result.panoptic_rgb), cv2.COLOR_RGB2BGR)
                    if video_writer is None:
                        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                        video_writer = cv2.VideoWriter(str(video_path), fourcc, 10.0, picture.shape[1::-1])
                    video_writer.write(picture)
        if video_writer is not None:
            video_writer.release()
            video_writer = None
        if video_context is not None:
            video_context.__exit__(None, None, None)
            video_context = None
    finally:
        if video_writer is not None:
            video_writer.release()
        if video_context is not None:  # failed: the temporary video is removed
            video_context.__exit__(RuntimeError, RuntimeError("replay failed"), None)
    report.unpaired = dict(reader.report.skipped)
    report.stage_ms = {stage: float(np.median(values)) for stage, values in timings.items()}
    if online is not None:
        report.online_learning = dataclasses.asdict(online.report)
    return report


def _learn_from(
    online: ReplayOnlineLearning,
    frame: StereoFrame,
    pipeline: PerceptionPipeline,
    config: PerceptionConfig,
    report: ReplayReport,
) -> None:
    """One frame to online learning; a promoted version replaces the pipeline's engine."""
    version = online.after_frame(frame)
    if version is None:
        return
    path = online.serving_path(config.model.backend)
    if path is None:
        return
    try:
        engine = load_engine(dataclasses.replace(config.model, path=path))
    except ModelLoadError as error:  # the gate passed it, but it does not load here: keep serving
        _log.error("promoted version %d not served: %s", version.version, error)
        return
    name = f"v{version.version} {Path(path).name} ({engine.name})"
    pipeline.replace_engine(engine, name).close()
    report.models.append({"from_frame": frame.index + 1, "model": name, "version": version.version})


def register(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="the perception pipeline over a recorded ROS 2 bag into a new bag (no ROS needed)",
        description=__doc__,
    )
    replay.add_argument("input_bag", type=Path)
    replay.add_argument("output_bag", type=Path)
    replay.add_argument("--model", type=Path, required=True, help="model file (.pt) or exported .onnx")
    replay.add_argument("--backend", default="torch", choices=("torch", "onnxruntime", "tensorrt"))
    replay.add_argument("--config", type=Path, default=None, help="config/perception.yaml (node form)")
    replay.add_argument("--namespace", default="perception", help="output topics under /NAMESPACE/")
    replay.add_argument("--video", type=Path, default=None, help="MP4 of the panoptic overlay")
    replay.add_argument("--overwrite", action="store_true")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    online = replay.add_argument_group("online learning (pseudo-labelling + continued training on the drive)")
    online.add_argument(
        "--online-learning", action="store_true", help="learn while replaying, swap promoted models in"
    )
    online.add_argument(
        "--online-config", type=Path, default=None, help="config/online_learning.yaml (node form)"
    )
    online.add_argument(
        "--online-dir",
        type=Path,
        default=None,
        help="buffer and model store here (default: OUT_BAG.online/); a second run continues them",
    )
    online.add_argument("--fit", type=Path, default=None, help="pseudo-label fit folder (labeller.fit)")
    online.add_argument(
        "--round-every", type=int, default=4, help="a training round after every N new pseudo-labels"
    )
    online.add_argument("--online-set", action="append", default=[], help="online config key=value")
    replay.set_defaults(run=run_replay)


def run_replay(args: Any) -> int:
    from cups_ros.core.config import load_config
    from cups_ros.pipeline.perception import PerceptionNodeConfig

    node_config = load_config(PerceptionNodeConfig, args.config) if args.config else PerceptionNodeConfig()
    model = dataclasses.replace(node_config.perception.model, path=str(args.model), backend=args.backend)
    config = dataclasses.replace(node_config.perception, model=model)
    online = _online_learning(args) if args.online_learning else None
    report = replay_bag(
        args.input_bag,
        args.output_bag,
        config,
        namespace=args.namespace,
        video=args.video,
        overwrite=args.overwrite,
        progress=not args.quiet,
        online=online,
    )
    write_json_atomic(Path(str(args.output_bag).rstrip("/") + ".replay.json"), report.to_json())
    dropped = dict(report.dropped) or "none"
    print(f"{report.frames_in} frames in, {report.published} published, dropped {dropped}")
    print(f"unpaired in the input bag: {report.unpaired or 'none'}")
    print("median ms per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in report.stage_ms.items()))
    if online is not None:
        learned = online.report
        print(
            f"online learning: {learned.labelled} pseudo-labelled frames, {len(learned.rounds)} rounds, "
            f"{learned.promotions} promotions; models served: "
            + ", ".join(f"{m['model']} from frame {m['from_frame']}" for m in report.models)
        )
    return 0


def _online_learning(args: Any) -> ReplayOnlineLearning:
    from cups_ros.core.config import apply_overrides, load_config
    from cups_ros.online.learning import OnlineLearningConfig

    config = (
        load_config(OnlineLearningConfig, args.online_config)
        if args.online_config
        else OnlineLearningConfig()
    )
    folder = args.online_dir or Path(str(args.output_bag).rstrip("/") + ".online")
    values: dict[str, Any] = {
        "buffer_dir": str(folder / "buffer"),
        "store_dir": str(folder / "models"),
        "initial_model": str(args.model),
    }
    config = dataclasses.replace(config, **values)
    if args.fit is not None:
        config = dataclasses.replace(config, labeller=dataclasses.replace(config.labeller, fit=str(args.fit)))
    config = apply_overrides(OnlineLearningConfig, config, args.online_set)
    return ReplayOnlineLearning(config, round_every=args.round_every)
