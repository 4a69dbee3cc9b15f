"""The perception node: stereo topics in, tracked panoptic topics out (thin rclpy wiring).

Inputs: left/right ``sensor_msgs/Image`` (rectified; a compressed stream needs image_transport's
republish in front) and ``CameraInfo``, paired by message_filters' ApproximateTimeSynchronizer.
The synchronizer callback only converts the messages and hands the frame to ``AsyncPerception``,
whose worker runs inference and publishes, so callbacks never wait for the network; frames that
arrive while one is waiting replace it (counted as dropped).

Outputs, relative to the node's namespace (DESIGN.md): ``panoptic`` (32SC1, class * 1000 + track id),
``semantic`` (mono8), ``panoptic_color`` (rgb8), ``instances`` (vision_msgs/Detection2DArray,
Detection2D.id = track id, hypothesis class_id = pseudo-class name), ``label_info`` (LabelInfo,
transient local, published when a model is loaded), ``depth`` (32FC1, only with
perception.depth.enabled) and ``/diagnostics``. Every output carries the stamp and frame_id of the
left image; ``use_sim_time`` only changes the node clock (diagnostics, rates, throttling).

Parameters are the fields of ``PerceptionNodeConfig`` (config/perception.yaml, dotted names); the
model (``perception.model.path`` / ``.backend``) can be changed while running (``ros2 param set``):
the new one loads in the background and the old one keeps running if it fails.

Online learning (``model_store``: the self-training node's ``online.store_dir``): the node serves the
store's current version instead of perception.model.path, looks at the store's current pointer every
``model_store_poll`` seconds and swaps to each newly promoted version the same way, without dropping
a frame. A version that fails to load or to run is logged, never tried again, and the previous model
keeps running (the node's rollback; the store itself is only read here).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from cups_ros.core.config import ConfigError, from_dict, from_ros_parameters, to_dict, to_ros_parameters
from cups_ros.io.messages import (
    MessageTypes,
    array_to_image,
    detection2d_array_message,
    header_message,
    label_info_message,
)
from cups_ros.online.store import ModelStore, ModelVersion
from cups_ros.pipeline.perception import (
    AsyncPerception,
    EngineLoader,
    ModelConfig,
    ModelEvent,
    PerceptionFailure,
    PerceptionNodeConfig,
    PerceptionResult,
    load_engine,
)
from cups_ros.ros.common import (
    latched_qos,
    plain_parameter_value,
    publish_diagnostic,
    qos_profile,
    subscribe_stereo,
)

__all__ = ["MODEL_PARAMETERS", "NODE_NAME", "PerceptionNode", "main", "qos_profile"]

NODE_NAME = "perception"
MODEL_PARAMETERS = ("perception.model.path", "perception.model.backend")


class _RateMeter:
    """Events per second between two diagnostics ticks, on the node clock."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def rate(self, count: int, now_ns: int) -> float:
        last, self._last = self._last, (count, now_ns)
        if last is None or now_ns <= last[1]:
            return 0.0
        return (count - last[0]) / ((now_ns - last[1]) * 1e-9)


class PerceptionNode(Node):
    """Subscribes the stereo pair, publishes tracked panoptic output; see the module docstring."""

    def __init__(
        self, node_name: str = NODE_NAME, *, engine_loader: EngineLoader = load_engine, **node_options: Any
    ) -> None:
        """node_options go to rclpy's Node (namespace, parameter_overrides, cli_args...);
        engine_loader opens models (tests inject slow or failing ones)."""
        super().__init__(node_name, **node_options)
        self.config = self._declare_and_read_parameters()
        self._types = MessageTypes.from_rclpy()
        self._model = self.config.perception.model
        self._received: collections.Counter[str] = collections.Counter()
        self._synchronized = 0
        self._published = 0
        self._latencies_ms: collections.deque[float] = collections.deque(maxlen=100)
        self._input_rate = _RateMeter()
        self._output_rate = _RateMeter()
        self._label_names: tuple[str, ...] | None = None
        self._label_lock = threading.Lock()  # worker and loader threads both publish it
        self._last_failure = ""

        output_qos = qos_profile(self.config.output_qos)
        self._outputs = {
            "panoptic": self.create_publisher(Image, "panoptic", output_qos),
            "semantic": self.create_publisher(Image, "semantic", output_qos),
            "panoptic_color": self.create_publisher(Image, "panoptic_color", output_qos),
            "instances": self.create_publisher(Detection2DArray, "instances", output_qos),
        }
        if self.config.perception.depth.enabled:
            self._outputs["depth"] = self.create_publisher(Image, "depth", output_qos)
        self._label_info_publisher = self.create_publisher(LabelInfo, "label_info", latched_qos())
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        # Following online learning's model store (model_store): guarded by _store_lock, since the
        # poll timer (executor) and model events (loader thread) both use it.
        self._store_lock = threading.Lock()
        self._model_store: ModelStore | None = None
        self._store_version: int | None = None
        """The store version last loaded (the poll swaps only to a different one)."""
        self._store_path = ""
        self._pending_store_swap: tuple[int, str] | None = None
        self._failed_store_versions: dict[int, str] = {}
        self._last_swap = ""
        perception_config = self.config.perception
        if self.config.model_store:
            found = self._store_current()
            if found is not None and found[1]:
                version, path = found
                model = dataclasses.replace(perception_config.model, path=path)
                perception_config = dataclasses.replace(perception_config, model=model)
                self._pending_store_swap = (version.version, path)

        self.perception = AsyncPerception(
            perception_config,
            self._on_result,
            on_error=self._on_failure,
            on_model_event=self._on_model_event,
            engine_loader=engine_loader,
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.perception.start()

        topics = self.config.topics
        self._filters, self._synchronizer = subscribe_stereo(
            self, topics, self.config.input_qos, self.config.sync, self._count_input, self._on_stereo
        )
        self._diagnostics_timer = self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)
        if self.config.model_store:
            self._model_store_timer = self.create_timer(self.config.model_store_poll, self._poll_model_store)
        following = (
            f"; following the model store {self.config.model_store}" if self.config.model_store else ""
        )
        self.get_logger().info(
            f"perception node up: inputs {', '.join(topics.all())} (sync slop {self.config.sync.slop} s); "
            f"model {perception_config.model.path or '(none configured)'}{following}"
        )

    # --- parameters ---

    def _declare_and_read_parameters(self) -> PerceptionNodeConfig:
        """Declares every config field with its code default (overrides: parameter files, -p, launch)
        and validates the result once; an invalid configuration stops the node with the key named."""
        defaults = to_ros_parameters(PerceptionNodeConfig())
        declared = self.declare_parameters("", list(defaults.items()))
        values = {parameter.name: plain_parameter_value(parameter.value) for parameter in declared}
        try:
            return from_ros_parameters(PerceptionNodeConfig, values)
        except (ConfigError, ValueError) as error:
            self.get_logger().fatal(f"invalid perception node parameters: {error}")
            raise

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """perception.model.path / backend swap the model live; everything else needs a restart."""
        ours = [p for p in parameters if p.name in self.config_parameter_names()]
        fixed = [p.name for p in ours if p.name not in MODEL_PARAMETERS]
        if fixed:
            return SetParametersResult(
                successful=False, reason=f"{', '.join(fixed)} take effect at start only: restart the node"
            )
        changes = {p.name.rsplit(".", 1)[1]: p.value for p in ours}
        if changes:
            try:
                model = from_dict(ModelConfig, {**to_dict(self._model), **changes})
            except (ConfigError, ValueError) as error:
                return SetParametersResult(successful=False, reason=str(error))
            self._model = model
            self.get_logger().info(
                f"swapping model to {model.path} ({model.backend}); the current one keeps running"
            )
            self.perception.swap_model(model.path, model.backend)
        return SetParametersResult(successful=True, reason="")

    @staticmethod
    def config_parameter_names() -> set[str]:
        return set(to_ros_parameters(PerceptionNodeConfig()))

    # --- input (executor thread: must stay quick) ---

    def _count_input(self, message: Any, name: str) -> None:
        self._received[name] += 1

    def _on_stereo(self, left_image: Any, left_info: Any, right_image: Any, right_info: Any) -> None:
        self._synchronized += 1
        self.perception.submit_messages(left_image, left_info, right_image, right_info)

    def _on_failure(self, failure: PerceptionFailure) -> None:
        self._last_failure = f"{failure.reason}: {failure.message}"
        self.get_logger().warn(
            f"stereo pair at stamp {failure.stamp_ns} ns ({failure.frame_id or 'no frame_id'}) "
            f"not processed: {failure.message}",
            throttle_duration_sec=self.config.log_throttle,
        )

    # --- output (worker thread) ---

    def _on_result(self, result: PerceptionResult) -> None:
        types, stamp, frame_id = self._types, result.stamp_ns, result.frame_id
        self._outputs["panoptic"].publish(array_to_image(result.panoptic, "32SC1", stamp, frame_id, types))
        self._outputs["semantic"].publish(array_to_image(result.semantic, "mono8", stamp, frame_id, types))
        self._outputs["panoptic_color"].publish(
            array_to_image(result.panoptic_rgb, "rgb8", stamp, frame_id, types)
        )
        self._outputs["instances"].publish(
            detection2d_array_message(result.tracks, stamp, frame_id, types, class_names=result.class_names)
        )
        if "depth" in self._outputs and result.depth is not None:
            self._outputs["depth"].publish(array_to_image(result.depth, "32FC1", stamp, frame_id, types))
        self._publish_label_info(result.class_names, frame_id)
        self._published += 1
        self._latencies_ms.append(max(0.0, (self.get_clock().now().nanoseconds - stamp) * 1e-6))

    def _publish_label_info(self, class_names: list[str], frame_id: str = "") -> None:
        """Once per set of classes (transient local: late subscribers get the last one)."""
        names = tuple(class_names)
        with self._label_lock:
            if names == self._label_names:
                return
            self._label_names = names
            threshold = float(self.config.perception.tracker.min_score)
            now = self.get_clock().now().nanoseconds
            message = label_info_message(list(names), threshold, now, frame_id, self._types)
            self._label_info_publisher.publish(message)

    def _on_model_event(self, event: ModelEvent) -> None:
        """Loader thread: a load or swap finished (on failure the previous model is still running)."""
        store_version = self._settle_store_swap(event)
        if event.succeeded:
            self.get_logger().info(f"model in use: {event.model_name}")
            self._publish_label_info(list(event.class_names))
        elif store_version is not None:
            self.get_logger().error(
                f"model store version {store_version} ({event.path}, {event.backend}) not used: "
                f"{event.message}; it is not tried again"
            )
            self._fall_back_to_configured_model()
        else:
            self.get_logger().error(f"model {event.path} ({event.backend}) not loaded: {event.message}")

    # --- the model store (online learning's promoted models) ---

    def _open_store(self) -> ModelStore | None:
        """The store once its folder exists (the self-training node creates it; a reader never does)."""
        if self._model_store is None:
            root = Path(self.config.model_store)
            if not root.is_dir():
                return None
            try:
                self._model_store = ModelStore(root)
            except OSError as error:
                self.get_logger().warn(
                    f"model store {root} cannot be opened: {error}",
                    throttle_duration_sec=self.config.log_throttle,
                )
                return None
        return self._model_store

    def _store_current(self) -> tuple[ModelVersion, str] | None:
        """The store's current version and its file for the backend in use ("": the version has none);
        None while there is no store or no version, or when the pointer moved between the two reads."""
        store = self._open_store()
        if store is None:
            return None
        try:
            version = store.current()
            if version is None:
                return None
            path = store.serving_path(self._model.backend)
        except (OSError, ValueError) as error:
            self.get_logger().warn(
                f"model store {store.root} unreadable: {error}",
                throttle_duration_sec=self.config.log_throttle,
            )
            return None
        if path is None:
            return version, ""
        if Path(path).parent != version.folder:
            return None  # a promotion between current() and serving_path(): the next poll sees it
        return version, path

    def _poll_model_store(self) -> None:
        """Timer: swap to a newly current store version (the old model runs until the new one works)."""
        with self._store_lock:
            if self._pending_store_swap is not None:
                return
        found = self._store_current()
        if found is None:
            return
        version, path = found
        number, backend = version.version, self._model.backend
        missing = "" if path else f"it has no model file for the {backend} backend"
        with self._store_lock:
            if number == self._store_version or number in self._failed_store_versions:
                return
            if missing:
                self._failed_store_versions[number] = missing
                self._last_swap = f"store version {number}: not used, {missing}"
            else:
                self._pending_store_swap = (number, path)
        if missing:
            self.get_logger().error(
                f"model store version {number} not used: {missing}; it is not tried again"
            )
            return
        self.get_logger().info(
            f"model store version {number} is current: swapping to {path}; the current model keeps running"
        )
        self.perception.swap_model(path, backend)

    def _settle_store_swap(self, event: ModelEvent) -> int | None:
        """Books a finished load: the store version it was, or None for a model given by parameter."""
        with self._store_lock:
            pending = self._pending_store_swap
            if pending is None or event.path != pending[1]:
                self._last_swap = (
                    f"{event.path}: {'in use' if event.succeeded else 'failed, previous model kept'}"
                    + ("" if event.succeeded else f" ({event.message})")
                )
                return None
            number = pending[0]
            self._pending_store_swap = None
            if event.succeeded:
                self._store_version, self._store_path = number, event.path
                self._last_swap = f"store version {number}: in use"
            else:
                self._failed_store_versions[number] = event.message
                self._last_swap = f"store version {number}: failed, not tried again ({event.message})"
            return number

    def _fall_back_to_configured_model(self) -> None:
        """A store version failed with nothing running (at start): serve perception.model.path."""
        if self.perception.model_name or not self._model.path:
            return
        self.get_logger().warn(
            f"serving perception.model.path {self._model.path} until the store has a good model"
        )
        self.perception.swap_model(self._model.path, self._model.backend)

    # --- diagnostics (timer) ---

    def _publish_diagnostics(self) -> None:
        now = self.get_clock().now().nanoseconds
        stats = self.perception.stats()
        input_rate = self._input_rate.rate(self._synchronized, now)
        output_rate = self._output_rate.rate(self._published, now)
        latencies = sorted(self._latencies_ms)
        unpaired = {side: self._received[f"{side} image"] - self._synchronized for side in ("left", "right")}
        if not stats.model_name:
            level, message = DiagnosticStatus.ERROR, stats.model_error or "no model loaded yet"
        elif stats.model_error:
            level, message = DiagnosticStatus.WARN, stats.model_error
        elif stats.errors_total or stats.dropped_total:
            level, message = (
                DiagnosticStatus.OK,
                f"running {stats.model_name}; some frames dropped or rejected",
            )
        else:
            level, message = DiagnosticStatus.OK, f"running {stats.model_name}"
        values = {
            "input rate (Hz)": f"{input_rate:.2f}",
            "output rate (Hz)": f"{output_rate:.2f}",
            "latency median (ms)": f"{latencies[len(latencies) // 2]:.1f}" if latencies else "n/a",
            "latency max (ms)": f"{latencies[-1]:.1f}" if latencies else "n/a",
            "processing mean (ms)": f"{stats.mean_processing_ms:.1f}",
            "model": stats.model_name or "none",
            "model path": stats.model_path,
            "model error": stats.model_error,
            "model loading": str(stats.loading).lower(),
            "received left images": str(self._received["left image"]),
            "received right images": str(self._received["right image"]),
            "synchronized pairs": str(self._synchronized),
            "left images without partner": str(max(0, unpaired["left"])),
            "right images without partner": str(max(0, unpaired["right"])),
            "processed": str(stats.processed),
            "published": str(self._published),
            "dropped frames": str(stats.dropped_total),
            **{f"dropped: {reason}": str(count) for reason, count in sorted(stats.dropped.items())},
            "rejected frames": str(stats.errors_total),
            **{f"rejected: {reason}": str(count) for reason, count in sorted(stats.errors.items())},
            "last rejection": self._last_failure,
            "model in use": stats.model_path if stats.model_name else "none",
            "last model swap": self._last_swap,
            **self._store_diagnostics(stats.model_path if stats.model_name else ""),
        }
        publish_diagnostic(
            self,
            self._diagnostics_publisher,
            header_message(now, "", self._types),
            "perception",
            level,
            message,
            values,
        )

    def _store_diagnostics(self, path_in_use: str) -> dict[str, str]:
        if not self.config.model_store:
            return {"model store": "off"}
        with self._store_lock:
            serving = (
                self._store_version
                if self._store_version is not None and path_in_use == self._store_path
                else None
            )
            failed = sorted(self._failed_store_versions)
        return {
            "model store": self.config.model_store,
            "model store version": str(serving) if serving is not None else "none",
            "failed store versions": ", ".join(str(number) for number in failed),
        }

    def destroy_node(self) -> None:
        self.perception.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script ``perception_node``: ``ros2 run cups_ros perception_node --ros-args ...``."""
    rclpy.init(args=args)
    node = None
    try:
        node = PerceptionNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
