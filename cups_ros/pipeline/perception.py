"""The online perception pipeline without any transport: stereo frame -> tracked panoptic output.

``PerceptionPipeline.process`` runs one frame through inference (any runtime), optical flow for the
tracker, the tracker, optional stereo depth and the colourised view, timing each stage.
``AsyncPerception`` puts it on a worker thread behind a latest-frame slot, so whoever delivers frames
(a ROS callback, a bag replay) never waits for inference: a frame not yet started is replaced by a
newer one and counted as dropped. Models are loaded and tried on one frame off that thread and swapped
in between frames; a model that fails to load or to run is reported and the old one stays.

The node's settings (topics, QoS, synchronisation) live here too, as plain data, so that config files
and the launch file are checked without ROS; the rclpy wiring is ``cups_ros.ros.perception_node``.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cups_ros.core.camera import CameraModel, CameraModelError
from cups_ros.core.config import ConfigError
from cups_ros.core.frame import StereoFrame, StereoFrameError
from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.core.track import Track
from cups_ros.geometry.config import DisPreset, FlowConfig, StereoConfig
from cups_ros.geometry.flow import DisFlowEstimator, grey
from cups_ros.geometry.stereo import SgbmDisparityEstimator, compute_disparity
from cups_ros.io.bag import StereoTopics
from cups_ros.io.messages import MessageConversionError, image_message_to_rgb, stamp_ns_of
from cups_ros.model.config import PATCH_SIZE
from cups_ros.model.model_file import ModelFileError, load_model
from cups_ros.model.postprocess import PostProcessConfig
from cups_ros.pseudo.pipeline import pseudo_class_colours
from cups_ros.runtime.engines import InferenceEngine, TorchEngine, open_engine
from cups_ros.runtime.export import OnnxModelError
from cups_ros.runtime.predictor import Predictor
from cups_ros.runtime.tensorrt import TensorRTUnavailableError
from cups_ros.tracking import MultiObjectTracker, TrackerConfig

__all__ = [
    "DROP_NO_MODEL",
    "DROP_STOPPED",
    "DROP_SUPERSEDED",
    "AsyncPerception",
    "DepthConfig",
    "EngineLoader",
    "ModelConfig",
    "ModelEvent",
    "ModelLoadError",
    "PerceptionConfig",
    "PerceptionFailure",
    "PerceptionInputError",
    "PerceptionNodeConfig",
    "PerceptionPipeline",
    "PerceptionResult",
    "PerceptionStats",
    "QosConfig",
    "SynchronizerConfig",
    "TrackingFlowConfig",
    "check_frame",
    "colour_panoptic",
    "frame_from_messages",
    "load_engine",
]

_log = logging.getLogger(__name__)

Backend = Literal["torch", "onnxruntime", "tensorrt"]

# Why a frame never reached inference (keys of PerceptionStats.dropped).
DROP_SUPERSEDED = "superseded by a newer frame before inference started"
DROP_NO_MODEL = "no model loaded"
DROP_STOPPED = "perception not running"


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """Which network runs, on which runtime; ROS parameters cannot be null, so "" and 0 mean unset."""

    path: str = ""
    """Model file: .pt (torch), .onnx (onnxruntime, or tensorrt with a cached engine) or .engine."""
    backend: Backend = "torch"
    device: str = "cpu"
    """torch backend: "cpu", "cuda" or "cuda:N"."""
    providers: Literal["cpu", "auto"] = "cpu"
    """onnxruntime backend: CPU only, or TensorRT / CUDA where installed (auto)."""
    threads: int = 0
    """Inference threads (0: the runtime's default, all cores)."""
    input_height: int = 0
    input_width: int = 0
    """Network input size override (0: the model's own); torch runs any multiple of 14, exported
    files only the size they were exported at."""

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ConfigError(f"model.threads must be >= 0, got {self.threads}")
        sizes = (self.input_height, self.input_width)
        if sizes != (0, 0) and any(size < PATCH_SIZE or size % PATCH_SIZE for size in sizes):
            raise ConfigError(
                f"model.input_height and model.input_width must both be 0 (the model's size) or positive "
                f"multiples of {PATCH_SIZE}, got {self.input_height}x{self.input_width}"
            )

    @property
    def input_size(self) -> tuple[int, int] | None:
        return None if self.input_height == 0 else (self.input_height, self.input_width)


@dataclass(frozen=True)
class TrackingFlowConfig:
    """Optical flow from each frame back to the previous one, which carries track masks across frames."""

    enabled: bool = True
    preset: DisPreset = "ultrafast"
    """OpenCV DIS preset: the tracker only needs masks moved to about a pixel (ultrafast: ~5 ms at 1 MP)."""


@dataclass(frozen=True)
class DepthConfig:
    """Stereo depth in metres beside the panoptic output (off by default: it costs SGBM per frame)."""

    enabled: bool = False
    stereo: StereoConfig = field(default_factory=StereoConfig)


@dataclass(frozen=True)
class PerceptionConfig:
    """Everything the per-frame pipeline depends on (the ``perception`` section of the node's file)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    postprocess: PostProcessConfig = field(default_factory=PostProcessConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    flow: TrackingFlowConfig = field(default_factory=TrackingFlowConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)


@dataclass(frozen=True)
class QosConfig:
    """A KEEP_LAST QoS profile; the defaults are rclpy's qos_profile_sensor_data (best effort, 5)."""

    reliability: Literal["best_effort", "reliable"] = "best_effort"
    depth: int = 5

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"QoS depth must be >= 1, got {self.depth}")


@dataclass(frozen=True)
class SynchronizerConfig:
    """message_filters.ApproximateTimeSynchronizer over the two images and their CameraInfos."""

    queue_size: int = 10
    """Messages kept per topic while waiting for partners."""
    slop: float = 0.01
    """Largest stamp spread of a matched set, in seconds (strictly less, as message_filters does)."""

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ConfigError(f"sync.queue_size must be >= 1, got {self.queue_size}")
        if not 0.0 < self.slop < 1.0:
            raise ConfigError(f"sync.slop must lie in (0, 1) s, got {self.slop}")


def default_node_topics() -> StereoTopics:
    return StereoTopics(
        left_image="left/image_rect",
        right_image="right/image_rect",
        left_info="left/camera_info",
        right_info="right/camera_info",
    )


@dataclass(frozen=True)
class PerceptionNodeConfig:
    """The perception node's parameters (config/perception.yaml): inputs, outputs, pipeline."""

    topics: StereoTopics = field(default_factory=default_node_topics)
    """Relative names resolve under the node's namespace, as the outputs do."""
    input_qos: QosConfig = field(default_factory=QosConfig)
    output_qos: QosConfig = field(default_factory=lambda: QosConfig(reliability="reliable", depth=5))
    """Reliable publishers serve best-effort and reliable subscribers alike."""
    sync: SynchronizerConfig = field(default_factory=SynchronizerConfig)
    diagnostics_period: float = 1.0
    """Seconds between /diagnostics messages (node clock: sim time under use_sim_time)."""
    log_throttle: float = 5.0
    """Seconds between repeated warnings about bad input."""
    model_store: str = ""
    """Online learning's model store folder: serve its current version and swap to each newly
    promoted one (perception.model.path is then only the model until the store has one); "" off."""
    model_store_poll: float = 2.0
    """Seconds between looks at the store's current pointer."""
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)

    def __post_init__(self) -> None:
        if self.model_store_poll <= 0.0:
            raise ConfigError(f"model_store_poll must be > 0 s, got {self.model_store_poll}")
        if len(set(self.topics.all())) != 4:
            raise ConfigError(f"the four input topics must differ, got {self.topics}")
        if self.diagnostics_period <= 0.0:
            raise ConfigError(f"diagnostics_period must be > 0 s, got {self.diagnostics_period}")
        if self.log_throttle < 0.0:
            raise ConfigError(f"log_throttle must be >= 0 s, got {self.log_throttle}")


# --- errors and results ----------------------------------------------------------------------


class PerceptionInputError(ValueError):
    """A frame the pipeline cannot use; ``reason`` is a short category for counters, the text says
    exactly what was wrong."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ModelLoadError(ValueError):
    """A model that could not be loaded or did not run one frame; the text names the file and why."""


@dataclass
class PerceptionResult:
    """One processed frame: tracked panoptic output at the frame's size, with its provenance."""

    stamp_ns: int
    frame_id: str
    panoptic: np.ndarray
    """H x W int32, class * 1000 + track id (stuff: 0), void 255 * 1000."""
    semantic: np.ndarray
    """H x W uint8 pseudo-class per pixel (255: ignore)."""
    tracks: list[Track]
    """Tracks published in this frame (Detection2D.id = track_id)."""
    panoptic_rgb: np.ndarray
    """H x W x 3 uint8: a colour per pseudo-class, a colour per track on things."""
    depth: np.ndarray | None
    """H x W float32 metres (0: invalid) when depth is enabled, else None."""
    timings_ms: dict[str, float]
    model_name: str
    class_names: list[str]


@dataclass(frozen=True)
class PerceptionFailure:
    """A frame that produced no result, and why (what the node logs and counts)."""

    reason: str
    message: str
    stamp_ns: int = 0
    frame_id: str = ""


@dataclass(frozen=True)
class ModelEvent:
    """Outcome of a model load or swap: on failure the previous model (if any) stays in use."""

    path: str
    backend: str
    succeeded: bool
    message: str
    model_name: str = ""
    class_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PerceptionStats:
    """Counters since start (a snapshot): what came in, what ran, what was dropped or failed, and why."""

    received: int
    processed: int
    dropped: dict[str, int]
    errors: dict[str, int]
    model_name: str
    model_path: str
    model_error: str
    loading: bool
    last_processing_ms: float
    mean_processing_ms: float
    swaps_succeeded: int
    swaps_failed: int

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def errors_total(self) -> int:
        return sum(self.errors.values())


# --- input checks ----------------------------------------------------------------------------


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def frame_from_messages(
    left_image: Any,
    left_info: Any,
    right_image: Any,
    right_info: Any,
    camera: CameraModel | None = None,
    sequence: str = "",
) -> StereoFrame:
    """A StereoFrame from the four messages of a synchronized set (rclpy or rosbags objects).

    ``camera`` skips rebuilding the model from the CameraInfos (callers cache it by calibration).
    Raises PerceptionInputError naming the image, encoding, sizes or calibration that was wrong.
    """
    images = []
    for side, message in (("left", left_image), ("right", right_image)):
        try:
            images.append(image_message_to_rgb(message))
        except MessageConversionError as error:
            raise PerceptionInputError(f"{side} image: {error}", reason="image encoding") from error
    left, right = images
    if left.shape != right.shape:
        raise PerceptionInputError(
            f"stereo sizes differ: left image {_size(left)}, right image {_size(right)}",
            reason="stereo size mismatch",
        )
    if camera is None:
        try:
            camera = CameraModel.from_camera_info(left_info, right_info)
        except CameraModelError as error:
            raise PerceptionInputError(str(error), reason="camera info") from error
    if (camera.width, camera.height) != (left.shape[1], left.shape[0]):
        raise PerceptionInputError(
            f"images are {_size(left)} but the CameraInfo says {camera.width}x{camera.height}",
            reason="camera info",
        )
    try:
        return StereoFrame(
            left=left,
            right=right,
            camera=camera,
            stamp_ns=stamp_ns_of(left_image),
            frame_id=str(left_image.header.frame_id),
            sequence=sequence,
        )
    except StereoFrameError as error:
        raise PerceptionInputError(str(error), reason="stereo frame") from error


def check_frame(frame: Any) -> None:
    """Raises PerceptionInputError for what StereoFrame's own checks cannot see: a non-frame, and a
    sensor depth (``extras["depth"]``) of the wrong size or with NaNs (invalid depth is 0 or inf)."""
    if not isinstance(frame, StereoFrame):
        raise PerceptionInputError(f"expected a StereoFrame, got {type(frame).__name__}", reason="frame")
    depth = frame.extras.get("depth")
    if depth is None:
        return
    if not isinstance(depth, np.ndarray) or depth.shape != (frame.height, frame.width):
        shape = getattr(depth, "shape", type(depth).__name__)
        raise PerceptionInputError(
            f"depth must be {frame.width}x{frame.height} (H x W) like the images, got {shape}", reason="depth"
        )
    if not np.issubdtype(depth.dtype, np.floating):
        raise PerceptionInputError(f"depth must be float metres, got dtype {depth.dtype}", reason="depth")
    nan_count = int(np.count_nonzero(np.isnan(depth)))
    if nan_count:
        raise PerceptionInputError(
            f"depth has {nan_count} NaN pixels of {depth.size} (mark invalid depth with 0 or inf)",
            reason="depth",
        )
    if np.any(depth < 0):
        raise PerceptionInputError("depth has negative values (metres must be >= 0)", reason="depth")


# --- models ----------------------------------------------------------------------------------

EngineLoader = Callable[[ModelConfig], InferenceEngine]


def load_engine(config: ModelConfig) -> InferenceEngine:
    """The engine of ``config`` (input size override applied); ModelLoadError names file and cause."""
    if not config.path:
        raise ModelLoadError("no model configured: set perception.model.path")
    path = Path(config.path)
    where = f"{config.backend} model {path}"
    if not path.exists():
        raise ModelLoadError(f"{where}: file does not exist")
    size = config.input_size
    try:
        if config.backend == "torch":
            if config.threads:
                import torch

                torch.set_num_threads(config.threads)
            return TorchEngine(load_model(path, config.device), input_size=size)
        engine = open_engine(
            path,
            config.backend,
            device=None,
            providers=config.providers,
            threads=config.threads or None,
        )
    except (ModelFileError, OnnxModelError, TensorRTUnavailableError, ConfigError) as error:
        raise ModelLoadError(f"{where}: {error}") from error
    except Exception as error:  # loaders raise many types on damaged files; the node must survive
        raise ModelLoadError(
            f"{where}: not a readable model file ({type(error).__name__}: {error})"
        ) from error
    if size is not None and tuple(engine.input_size) != size:
        engine.close()
        raise ModelLoadError(
            f"{where} runs at {engine.input_size[0]}x{engine.input_size[1]}, not the configured "
            f"{size[0]}x{size[1]}: export it at that size or set model.input_height/width to 0"
        )
    return engine


def _model_name(config: ModelConfig, engine: InferenceEngine) -> str:
    height, width = engine.input_size
    return f"{Path(config.path).name} ({engine.name}, {height}x{width})"


def _try_one_frame(predictor: Predictor, rgb: np.ndarray) -> None:
    """Runs one frame; raises ModelLoadError if the model fails or answers nonsense for it."""
    try:
        prediction = predictor.predict(rgb).prediction
    except Exception as error:  # any runtime failure counts: the model must not go live
        raise ModelLoadError(f"the model failed on a trial frame: {type(error).__name__}: {error}") from error
    if prediction.panoptic.shape != rgb.shape[:2]:
        raise ModelLoadError(
            f"the model answered a {_size(rgb)} trial frame with a "
            f"{prediction.panoptic.shape[1]}x{prediction.panoptic.shape[0]} panoptic map"
        )


# --- the per-frame pipeline ------------------------------------------------------------------


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + (time.perf_counter() - start) * 1e3


_TRACK_COLOURS = np.random.default_rng(7).integers(64, 256, (LABEL_DIVISOR, 3)).astype(np.uint8)


def colour_panoptic(panoptic: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8: each pseudo-class its fixed colour, each track its own (stable over frames)."""
    classes, track_ids = np.divmod(panoptic, LABEL_DIVISOR)
    rgb = pseudo_class_colours(np.clip(classes, 0, 255).astype(np.uint8))
    things = track_ids > 0
    rgb[things] = _TRACK_COLOURS[track_ids[things]]
    return rgb


class PerceptionPipeline:
    """One stereo stream's frames, in order -> PerceptionResult (not thread-safe: one caller)."""

    def __init__(
        self, config: PerceptionConfig, engine: InferenceEngine | None = None, model_name: str = ""
    ) -> None:
        """engine: an engine already open (else config.model is loaded; ModelLoadError)."""
        self.config = config
        engine = engine if engine is not None else load_engine(config.model)
        self.predictor = Predictor(engine, config.postprocess)
        self.model_name = model_name or _model_name(config.model, engine)
        self.tracker = MultiObjectTracker(config.tracker)
        self._flow = DisFlowEstimator(FlowConfig(preset=config.flow.preset)) if config.flow.enabled else None
        self._disparity = SgbmDisparityEstimator(config.depth.stereo) if config.depth.enabled else None
        self._previous_grey: np.ndarray | None = None
        self._previous_stamp_ns: int | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.predictor.class_names)

    def reset(self) -> None:
        """Forget the stream (tracks, flow history): a new sequence, or time jumped backwards."""
        self.tracker.reset()
        self._previous_grey = None
        self._previous_stamp_ns = None

    def replace_engine(self, engine: InferenceEngine, model_name: str) -> InferenceEngine:
        """Runs ``engine`` from the next frame on; returns the previous engine (the caller closes it).

        Tracks survive the swap (ids stay unique for subscribers) unless the classes change, since
        a track's class would then name another class.
        """
        previous = self.predictor.engine
        classes_changed = list(engine.network_config.names) != self.class_names
        self.predictor = Predictor(engine, self.config.postprocess)
        self.model_name = model_name
        if classes_changed:
            self.reset()
        return previous

    def process(self, frame: StereoFrame) -> PerceptionResult:
        """Inference -> flow to the previous frame -> tracking -> depth -> colours, each timed."""
        check_frame(frame)
        start = time.perf_counter()
        size = (frame.height, frame.width)
        if self._previous_grey is not None and self._previous_grey.shape != size:
            _log.info("frame size changed to %dx%d: tracks restart", frame.width, frame.height)
            self.reset()
        if self._previous_stamp_ns is not None and frame.stamp_ns < self._previous_stamp_ns:
            _log.info(
                "stamp went back from %d to %d ns: tracks restart", self._previous_stamp_ns, frame.stamp_ns
            )
            self.reset()
        predicted = self.predictor.predict(frame.left)
        prediction = predicted.prediction
        timings = {
            "preprocess_ms": predicted.timings.preprocess_ms,
            "inference_ms": predicted.timings.inference_ms,
            "postprocess_ms": predicted.timings.postprocess_ms,
        }
        flow_to_previous = None
        if self._flow is not None:
            with _timed(timings, "flow_ms"):
                current_grey = grey(frame.left)
                if self._previous_grey is not None:
                    flow_to_previous = self._flow.estimate_grey(current_grey, self._previous_grey)
                self._previous_grey = current_grey
        else:
            self._previous_grey = np.empty(size, np.uint8)  # remembers the size only
        with _timed(timings, "tracking_ms"):
            tracked = self.tracker.update(prediction, flow_to_previous, frame.stamp_ns)
        self._previous_stamp_ns = frame.stamp_ns
        depth = None
        if self._disparity is not None:
            with _timed(timings, "depth_ms"):
                depth = self._depth(frame)
        with _timed(timings, "colour_ms"):
            panoptic_rgb = colour_panoptic(tracked.panoptic)
        timings["total_ms"] = (time.perf_counter() - start) * 1e3
        return PerceptionResult(
            stamp_ns=frame.stamp_ns,
            frame_id=frame.frame_id,
            panoptic=tracked.panoptic.astype(np.int32, copy=False),
            semantic=prediction.semantic.astype(np.uint8, copy=False),
            tracks=list(tracked.tracks),
            panoptic_rgb=panoptic_rgb,
            depth=depth,
            timings_ms=timings,
            model_name=self.model_name,
            class_names=self.class_names,
        )

    def _depth(self, frame: StereoFrame) -> np.ndarray:
        """The sensor's depth when the frame carries one (checked), else SGBM stereo depth."""
        sensor_depth = frame.extras.get("depth")
        if sensor_depth is not None:
            return np.asarray(sensor_depth, dtype=np.float32)
        disparity = compute_disparity(frame.left, frame.right, self.config.depth.stereo, self._disparity)
        return frame.camera.disparity_to_depth(disparity.disparity)


# --- the non-blocking wrapper ----------------------------------------------------------------


@dataclass
class _Candidate:
    """A model loaded and tried off the worker thread, waiting to be installed between frames."""

    config: ModelConfig
    engine: InferenceEngine
    model_name: str


class AsyncPerception:
    """A PerceptionPipeline on a worker thread behind a latest-frame slot of size one.

    ``submit`` never blocks: a frame still waiting when a newer one arrives is replaced and counted
    as dropped. Results, failures and model events go to the callbacks (results and failures from the
    worker thread, model events from the loader thread); an exception in a callback is counted, never
    fatal. Models load on a separate loader thread (``swap_model``), are tried on one frame there and
    installed between two frames; on failure the previous model stays and the error is reported.
    """

    def __init__(
        self,
        config: PerceptionConfig,
        on_result: Callable[[PerceptionResult], None],
        *,
        on_error: Callable[[PerceptionFailure], None] | None = None,
        on_model_event: Callable[[ModelEvent], None] | None = None,
        engine_loader: EngineLoader = load_engine,
    ) -> None:
        self.config = config
        self._on_result = on_result
        self._on_error = on_error
        self._on_model_event = on_model_event
        self._engine_loader = engine_loader
        self._condition = threading.Condition()
        self._pending: StereoFrame | None = None
        self._candidate: _Candidate | None = None
        self._pipeline: PerceptionPipeline | None = None
        self._busy = False
        self._running = False
        self._worker: threading.Thread | None = None
        self._loader: concurrent.futures.ThreadPoolExecutor | None = None
        self._loads_in_flight = 0
        self._trial_image: np.ndarray | None = None
        self._camera_cache: tuple[tuple[Any, ...], CameraModel] | None = None
        # counters (guarded by _condition)
        self._received = 0
        self._processed = 0
        self._dropped: collections.Counter[str] = collections.Counter()
        self._errors: collections.Counter[str] = collections.Counter()
        self._model_path = ""
        self._model_error = ""
        self._last_processing_ms = 0.0
        self._total_processing_ms = 0.0
        self._swaps_succeeded = 0
        self._swaps_failed = 0

    # --- life cycle ---

    def start(self) -> None:
        """Starts the worker and, when a model is configured, its load (in the background)."""
        with self._condition:
            if self._running:
                return
            self._running = True
        self._loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="perception-loader")
        self._worker = threading.Thread(target=self._run, name="perception-worker", daemon=True)
        self._worker.start()
        if self.config.model.path:
            self.swap_model(self.config.model.path, self.config.model.backend)
        else:
            with self._condition:
                self._model_error = "no model configured: set perception.model.path"

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the worker after the frame in progress; the frame waiting in the slot is dropped."""
        with self._condition:
            if not self._running:
                return
            self._running = False
            if self._pending is not None:
                self._pending = None
                self._dropped[DROP_STOPPED] += 1
            self._condition.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)
        if self._loader is not None:
            self._loader.shutdown(wait=True, cancel_futures=True)
        with self._condition:
            candidate, self._candidate = self._candidate, None
            pipeline, self._pipeline = self._pipeline, None
        for engine in (
            candidate.engine if candidate else None,
            pipeline.predictor.engine if pipeline else None,
        ):
            if engine is not None:
                engine.close()

    def __enter__(self) -> AsyncPerception:
        self.start()
        return self

    def __exit__(self, *exception: object) -> None:
        self.stop()

    # --- input ---

    def submit(self, frame: StereoFrame) -> bool:
        """Queues ``frame`` for inference without waiting; False when it was dropped at once."""
        with self._condition:
            self._received += 1
            if not self._running:
                self._dropped[DROP_STOPPED] += 1
                return False
            if not self._has_model():
                self._dropped[DROP_NO_MODEL] += 1
                self._trial_image = frame.left
                return False
            if self._pending is not None:
                self._dropped[DROP_SUPERSEDED] += 1
            self._pending = frame
            self._trial_image = frame.left
            self._condition.notify_all()
            return True

    def submit_messages(
        self, left_image: Any, left_info: Any, right_image: Any, right_info: Any, sequence: str = ""
    ) -> bool:
        """Converts a synchronized message set (cheap: a copy per image) and submits it; bad input is
        counted and reported to ``on_error``, never raised. False when nothing was queued."""
        try:
            frame = frame_from_messages(
                left_image,
                left_info,
                right_image,
                right_info,
                self._camera_for(left_info, right_info),
                sequence,
            )
        except PerceptionInputError as error:
            with self._condition:
                self._received += 1
                self._errors[error.reason] += 1
            header = getattr(left_image, "header", None)
            stamp = stamp_ns_of(left_image) if header is not None else 0
            frame_id = str(header.frame_id) if header is not None else ""
            self._report(PerceptionFailure(error.reason, str(error), stamp, frame_id))
            return False
        return self.submit(frame)

    def _camera_for(self, left_info: Any, right_info: Any) -> CameraModel | None:
        """The camera model of this calibration, built once per calibration (None: let the frame
        builder build it and report what is wrong)."""
        try:
            key = (
                int(left_info.width),
                int(left_info.height),
                tuple(float(v) for v in left_info.p),
                int(right_info.width),
                int(right_info.height),
                tuple(float(v) for v in right_info.p),
            )
        except (AttributeError, TypeError, ValueError):
            return None
        cached = self._camera_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            camera = CameraModel.from_camera_info(left_info, right_info)
        except CameraModelError:
            return None
        self._camera_cache = (key, camera)
        return camera

    # --- models ---

    def swap_model(
        self, path: str | Path, backend: Backend | None = None
    ) -> concurrent.futures.Future[ModelEvent]:
        """Loads ``path`` on the loader thread, tries it on one frame and installs it between frames.

        The future (and ``on_model_event``) tells the outcome; on failure nothing changes.
        """
        if self._loader is None:
            raise RuntimeError("AsyncPerception.swap_model before start()")
        model = dataclasses.replace(
            self.config.model, path=str(path), backend=backend or self.config.model.backend
        )
        with self._condition:
            self._loads_in_flight += 1
        return self._loader.submit(self._load, model)

    def _load(self, model: ModelConfig) -> ModelEvent:
        """Loader thread: open the engine, try it on the latest frame, hand it to the worker."""
        engine = None
        try:
            engine = self._engine_loader(model)
            name = _model_name(model, engine)
            with self._condition:
                trial = self._trial_image
            if trial is None:
                height, width = engine.input_size
                trial = np.full((height, width, 3), 127, np.uint8)
            _try_one_frame(Predictor(engine, self.config.postprocess), trial)
        except Exception as error:  # a bad model must never take the node down
            if engine is not None:
                engine.close()
            message = str(error) if isinstance(error, ModelLoadError) else f"{type(error).__name__}: {error}"
            with self._condition:
                self._loads_in_flight -= 1
                self._swaps_failed += 1
                running = self._model_path if self._has_model() else ""
                self._model_error = message + (f" (still running {running})" if running else "")
                event = ModelEvent(model.path, model.backend, False, self._model_error)
            _log.error("model %s not loaded: %s", model.path, message)
        else:
            with self._condition:
                replaced, self._candidate = self._candidate, _Candidate(model, engine, name)
                self._loads_in_flight -= 1
                self._swaps_succeeded += 1
                self._model_path = model.path
                self._model_error = ""
                self._condition.notify_all()
            if replaced is not None:  # a newer model arrived before the worker installed this one
                replaced.engine.close()
            names = tuple(engine.network_config.names)
            event = ModelEvent(model.path, model.backend, True, f"loaded {name}", name, names)
            _log.info("model %s loaded", name)
        if self._on_model_event is not None:
            try:
                self._on_model_event(event)
            except Exception:
                _log.exception("model event callback failed")
                with self._condition:
                    self._errors["model event callback"] += 1
        return event

    def _has_model(self) -> bool:
        return self._pipeline is not None or self._candidate is not None

    def _install(self, candidate: _Candidate) -> None:
        """Worker thread, between frames: the candidate becomes the running model."""
        if self._pipeline is None:
            config = dataclasses.replace(self.config, model=candidate.config)
            self._pipeline = PerceptionPipeline(config, candidate.engine, candidate.model_name)
            return
        self._pipeline.replace_engine(candidate.engine, candidate.model_name).close()

    # --- worker ---

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._running and self._pending is None and self._candidate is None:
                    self._condition.wait()
                if not self._running:
                    return
                candidate, self._candidate = self._candidate, None
                frame, self._pending = self._pending, None
                if candidate is not None:
                    self._install(candidate)
                pipeline = self._pipeline
                self._busy = frame is not None
            if frame is not None and pipeline is not None:
                self._process(pipeline, frame)
            with self._condition:
                self._busy = False
                self._condition.notify_all()

    def _process(self, pipeline: PerceptionPipeline, frame: StereoFrame) -> None:
        try:
            result = pipeline.process(frame)
        except PerceptionInputError as error:
            self._fail(error.reason, str(error), frame)
            return
        except Exception as error:  # the worker must survive anything one frame can do
            _log.exception("perception failed on the frame at stamp %d", frame.stamp_ns)
            self._fail("processing failed", f"{type(error).__name__}: {error}", frame)
            return
        with self._condition:
            self._processed += 1
            self._last_processing_ms = result.timings_ms["total_ms"]
            self._total_processing_ms += result.timings_ms["total_ms"]
        try:
            self._on_result(result)
        except Exception:
            _log.exception("result callback failed")
            with self._condition:
                self._errors["result callback"] += 1

    def _fail(self, reason: str, message: str, frame: StereoFrame) -> None:
        with self._condition:
            self._errors[reason] += 1
        self._report(PerceptionFailure(reason, message, frame.stamp_ns, frame.frame_id))

    def _report(self, failure: PerceptionFailure) -> None:
        if self._on_error is None:
            _log.warning("frame at stamp %d: %s", failure.stamp_ns, failure.message)
            return
        try:
            self._on_error(failure)
        except Exception:
            _log.exception("error callback failed")

    # --- state ---

    def wait_until_idle(self, timeout: float = 10.0) -> bool:
        """True once no frame waits or runs and no model loads (for tests and orderly shutdown)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while (
                self._pending is not None
                or self._busy
                or self._candidate is not None
                or self._loads_in_flight
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def _running_model_name(self) -> str:
        if self._candidate is not None:
            return self._candidate.model_name
        return self._pipeline.model_name if self._pipeline is not None else ""

    @property
    def model_name(self) -> str:
        """The model of the next frame ("" while none is loaded)."""
        with self._condition:
            return self._running_model_name()

    def stats(self) -> PerceptionStats:
        with self._condition:
            processed = self._processed
            return PerceptionStats(
                received=self._received,
                processed=processed,
                dropped=dict(self._dropped),
                errors=dict(self._errors),
                model_name=self._running_model_name(),
                model_path=self._model_path,
                model_error=self._model_error,
                loading=self._loads_in_flight > 0,
                last_processing_ms=self._last_processing_ms,
                mean_processing_ms=self._total_processing_ms / processed if processed else 0.0,
                swaps_succeeded=self._swaps_succeeded,
                swaps_failed=self._swaps_failed,
            )
