"""The pseudo-label node: live stereo in, Stage-1 pseudo-labels into the replay buffer (thin rclpy wiring).

Online learning's first half (cups_ros.online.learning): every ``online.labeller.frame_stride``-th
synchronized stereo pair is pseudo-labelled, with the offline fit's semantic prototypes and thing/stuff
split (``online.labeller.fit``), once its successor has arrived, and stored in the replay buffer
(``online.buffer_dir``) that the self_training_node trains on. Labelling takes seconds per frame, so
it runs on its own thread (``AsyncPseudoLabelling``): the synchronizer callback only converts the
messages and submits the frame; a chosen frame whose successor arrives while the labeller is busy is
skipped and counted, never queued. The node's threads run at ``online.cpu_priority``
(idle by default: only CPU time that perception leaves), so perception's frame rate comes first.

Inputs, as the perception node's: left/right ``sensor_msgs/Image`` and ``CameraInfo`` (``topics.*``),
paired by message_filters' ApproximateTimeSynchronizer (``sync.*``). Bad input (unknown encoding,
mismatched sizes, missing or inconsistent calibration) is logged (throttled), counted, and skipped.

Outputs, for inspection, relative to the node's namespace: ``pseudo_labels/panoptic`` (32SC1,
class * 1000 + instance), ``pseudo_labels/panoptic_color`` (rgb8) with the stamp and frame_id of the
labelled left image, ``pseudo_labels/label_info`` (LabelInfo of the pseudo-classes c00.., transient
local) and ``/diagnostics`` every ``diagnostics_period``.

Parameters: the fields of ``PseudoLabelNodeConfig`` (config/online_learning.yaml, dotted names). A
missing or corrupt fit folder, or invalid parameters, stop the node with one fatal log line and exit
code 1.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from pathlib import Path
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image
from vision_msgs.msg import LabelInfo

from cups_ros.io.messages import (
    MessageTypes,
    array_to_image,
    header_message,
    label_info_message,
    pseudo_class_name,
    stamp_ns_of,
)
from cups_ros.online.buffer import ReplayBuffer
from cups_ros.online.labeller import OnlinePseudoLabel
from cups_ros.online.learning import (
    AsyncPseudoLabelling,
    PseudoLabelNodeConfig,
    lower_cpu_priority,
    open_labeller,
)
from cups_ros.pipeline.perception import PerceptionInputError, colour_panoptic, frame_from_messages
from cups_ros.ros.common import (
    NodeStartupError,
    declare_config,
    latched_qos,
    publish_diagnostic,
    qos_profile,
    spin_node,
    subscribe_stereo,
)

NODE_NAME = "pseudo_label"
PANOPTIC_TOPIC = "pseudo_labels/panoptic"
PANOPTIC_COLOR_TOPIC = "pseudo_labels/panoptic_color"
LABEL_INFO_TOPIC = "pseudo_labels/label_info"
LABEL_INFO_THRESHOLD = 0.0
"""Pseudo-labels carry no detection score a consumer could threshold."""


class PseudoLabelNode(Node):
    """Subscribes the stereo pair, labels frames into the replay buffer; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **node_options: Any) -> None:
        """node_options go to rclpy's Node (namespace, parameter_overrides, cli_args...)."""
        super().__init__(node_name, **node_options)
        try:
            self.config = declare_config(self, PseudoLabelNodeConfig, "pseudo-label node")
            online = self.config.online
            try:
                labeller = open_labeller(online)
            except (FileNotFoundError, ValueError) as error:  # ConfigError is a ValueError
                self.get_logger().fatal(f"cannot label: {error} (parameter online.labeller.fit)")
                raise NodeStartupError(str(error)) from error
            try:
                self.buffer = ReplayBuffer(Path(online.buffer_dir), online.buffer, writer=True)
            except OSError as error:
                self.get_logger().fatal(f"cannot open the replay buffer {online.buffer_dir}: {error}")
                raise NodeStartupError(str(error)) from error
        except NodeStartupError:
            super().destroy_node()
            raise
        # Before any thread starts, so that the labelling / training threads inherit it (Linux).
        self.cpu_priority = lower_cpu_priority(self.config.online.cpu_priority)
        self._types = MessageTypes.from_rclpy()
        self._lock = threading.Lock()  # counters shared by the executor and the labelling thread
        self._received: collections.Counter[str] = collections.Counter()
        self._rejected: collections.Counter[str] = collections.Counter()
        self._last_rejection = ""
        self._synchronized = 0
        self._published = 0
        self._class_names = [pseudo_class_name(index) for index in range(len(labeller.fit.thing_classes))]

        output_qos = qos_profile(self.config.output_qos)
        self._panoptic_publisher = self.create_publisher(Image, PANOPTIC_TOPIC, output_qos)
        self._colour_publisher = self.create_publisher(Image, PANOPTIC_COLOR_TOPIC, output_qos)
        self._label_info_publisher = self.create_publisher(LabelInfo, LABEL_INFO_TOPIC, latched_qos())
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._label_info_publisher.publish(
            label_info_message(
                self._class_names,
                LABEL_INFO_THRESHOLD,
                self.get_clock().now().nanoseconds,
                "",
                self._types,
            )
        )

        self.labelling = AsyncPseudoLabelling(labeller, self.buffer, on_label=self._on_label)
        self.labelling.start()

        topics = self.config.topics
        self._filters, self._synchronizer = subscribe_stereo(
            self, topics, self.config.input_qos, self.config.sync, self._count_input, self._on_stereo
        )
        self._diagnostics_timer = self.create_timer(self.config.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"pseudo-label node up: inputs {', '.join(topics.all())}; fit {online.labeller.fit}; "
            f"frame stride {online.labeller.frame_stride}, into {online.buffer_dir} "
            f"({len(self.buffer)} samples there)"
        )

    # --- input (executor thread: must stay quick) ---

    def _count_input(self, message: Any, name: str) -> None:
        self._received[name] += 1

    def _on_stereo(self, left_image: Any, left_info: Any, right_image: Any, right_info: Any) -> None:
        """Convert and submit; never waits for labelling (AsyncPseudoLabelling.submit returns at once)."""
        self._synchronized += 1
        try:
            frame = frame_from_messages(left_image, left_info, right_image, right_info)
        except PerceptionInputError as error:
            self._reject(error, left_image)
            return
        self.labelling.submit(dataclasses.replace(frame, index=self._synchronized))

    def _reject(self, error: PerceptionInputError, left_image: Any) -> None:
        header = getattr(left_image, "header", None)
        stamp = stamp_ns_of(left_image) if header is not None else 0
        frame_id = str(header.frame_id) if header is not None else ""
        with self._lock:
            self._rejected[error.reason] += 1
            self._last_rejection = f"{error.reason}: {error}"
        self.get_logger().warn(
            f"stereo pair at stamp {stamp} ns ({frame_id or 'no frame_id'}) not labelled: {error}",
            throttle_duration_sec=self.config.log_throttle,
        )

    # --- output (labelling thread; rclpy publishers are thread-safe) ---

    def _on_label(self, label: OnlinePseudoLabel) -> None:
        frame = label.frame
        panoptic = label.panoptic.astype("int32", copy=False)
        stamp, frame_id = frame.stamp_ns, frame.frame_id
        self._panoptic_publisher.publish(array_to_image(panoptic, "32SC1", stamp, frame_id, self._types))
        self._colour_publisher.publish(
            array_to_image(colour_panoptic(panoptic), "rgb8", stamp, frame_id, self._types)
        )
        with self._lock:
            self._published += 1

    # --- diagnostics (timer) ---

    def _publish_diagnostics(self) -> None:
        now = self.get_clock().now().nanoseconds
        stats = self.labelling.stats
        skipped = dict(stats.skipped)  # one C-level copy: safe beside the labelling thread
        buffer = self.buffer.stats()
        with self._lock:
            rejected = dict(self._rejected)
            last_rejection = self._last_rejection
            published = self._published
        if stats.errors:
            level, message = (
                DiagnosticStatus.WARN,
                f"labelling failed {stats.errors} times: {stats.last_error}",
            )
        elif stats.labelled:
            level, message = (
                DiagnosticStatus.OK,
                f"labelling; {buffer.get('samples', 0)} samples in the buffer",
            )
        else:
            level, message = DiagnosticStatus.OK, "waiting for stereo frames to label"
        values = {
            "fit": self.config.online.labeller.fit,
            "cpu priority": self.cpu_priority,
            "frame stride": str(self.config.online.labeller.frame_stride),
            "received left images": str(self._received["left image"]),
            "received right images": str(self._received["right image"]),
            "received left infos": str(self._received["left info"]),
            "received right infos": str(self._received["right info"]),
            "synchronized pairs": str(self._synchronized),
            "left images without partner": str(max(0, self._received["left image"] - self._synchronized)),
            "right images without partner": str(max(0, self._received["right image"] - self._synchronized)),
            "frames seen": str(stats.frames_seen),
            "labelled": str(stats.labelled),
            "published": str(published),
            "skipped": str(sum(skipped.values())),
            **{f"skipped: {reason}": str(count) for reason, count in sorted(skipped.items())},
            "labelling errors": str(stats.errors),
            "last labelling error": stats.last_error,
            "last label seconds": f"{stats.last_label_seconds:.2f}",
            "rejected frames": str(sum(rejected.values())),
            **{f"rejected: {reason}": str(count) for reason, count in sorted(rejected.items())},
            "last rejection": last_rejection,
            "buffer folder": str(self.buffer.root),
            "buffer samples": str(buffer.get("samples", 0)),
            "buffer holdout": str(buffer.get("holdout", 0)),
            "buffer bytes": str(buffer.get("bytes", 0)),
            "buffer evicted": str(buffer.get("evicted", 0)),
        }
        publish_diagnostic(
            self,
            self._diagnostics_publisher,
            header_message(now, "", self._types),
            "pseudo-labelling",
            level,
            message,
            values,
        )

    def destroy_node(self) -> None:
        """Stops labelling after the pair in progress (a sample being written is finished first)."""
        self.labelling.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Console script ``pseudo_label_node``: ``ros2 run cups_ros pseudo_label_node --ros-args ...``."""
    return spin_node(PseudoLabelNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
