"""The perception node, run in CI on the rclpy / message_filters stand-ins (tests/ros_stand_in).

Inputs are real ROS 2 messages (rosbags classes of the real definitions, built the way the node
builds its own: cups_ros.io.messages with MessageTypes.from_rclpy()); every published message goes
through real CDR. What is checked: outputs (types, encodings, stamps, frame_ids, Detection2D ids =
track ids, label_info transient local), stereo synchronisation with jitter and missing images, bad
input (sizes, encodings) logged and survived, a model that does not load (reported in diagnostics,
fixed live by a parameter), use_sim_time, dropped frames under slow inference, parameters from the
package's parameter file through main(), and that the stand-ins keep the real API's signatures.
"""

from __future__ import annotations

import ast
import collections
import enum
import inspect
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from cups_ros.core.camera import CameraModel
from cups_ros.core.config import ConfigError
from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.io.messages import array_to_image, camera_info_messages, image_to_array
from cups_ros.pipeline import DROP_NO_MODEL, DROP_SUPERSEDED, ModelConfig, QosConfig, load_engine
from tests import ros_stand_in
from tests.conftest import REPOSITORY_ROOT
from tests.test_perception_pipeline import GatedEngine, write_tiny_model

WIDTH, HEIGHT = 128, 64
CAMERA = CameraModel(fx=100.0, fy=100.0, cx=63.5, cy=31.5, baseline=0.5, width=WIDTH, height=HEIGHT)
SECOND = 1_000_000_000
NAMESPACE = "/stereo"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("node_models")
    garbage = folder / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    return {"good": write_tiny_model(folder / "good.pt", seed=0), "garbage": garbage}


@pytest.fixture
def ros() -> Any:
    """rclpy, message_filters and the message packages as stand-ins, an initialized context, and the
    node module imported on top of them."""
    with ros_stand_in.installed():
        import message_filters
        import rclpy
        import rclpy.executors
        import rclpy.impl.rcutils_logger
        import rclpy.node
        import rclpy.parameter
        import rclpy.qos

        from cups_ros.ros import perception_node

        rclpy.init()
        del rclpy.impl.rcutils_logger.RECORDS[:]
        try:
            yield SimpleNamespace(
                rclpy=rclpy,
                message_filters=message_filters,
                Node=rclpy.node.Node,
                Parameter=rclpy.parameter.Parameter,
                qos=rclpy.qos,
                executors=rclpy.executors,
                logs=rclpy.impl.rcutils_logger.RECORDS,
                module=perception_node,
            )
        finally:
            rclpy.try_shutdown()


def textured(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class Rig:
    """A perception node plus a 'camera' node that publishes the stereo topics and records every
    output, both on one executor spun by the test."""

    OUTPUTS = ("panoptic", "semantic", "panoptic_color", "instances", "depth", "/diagnostics")

    def __init__(self, ros: Any, parameters: dict[str, Any], engine_loader: Callable | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection2DArray, LabelInfo

        from cups_ros.io.messages import MessageTypes

        self.ros = ros
        parameters = {"diagnostics_period": 0.1, **parameters}
        options: dict[str, Any] = {} if engine_loader is None else {"engine_loader": engine_loader}
        self.node = ros.module.PerceptionNode(
            namespace=NAMESPACE,
            parameter_overrides=[ros.Parameter(name, value=value) for name, value in parameters.items()],
            **options,
        )
        self.camera = ros.Node("camera", namespace=NAMESPACE)
        self.types = MessageTypes.from_rclpy()
        sensor = ros.qos.qos_profile_sensor_data
        self.inputs = {
            "left_image": self.camera.create_publisher(Image, "left/image_rect", sensor),
            "left_info": self.camera.create_publisher(CameraInfo, "left/camera_info", sensor),
            "right_image": self.camera.create_publisher(Image, "right/image_rect", sensor),
            "right_info": self.camera.create_publisher(CameraInfo, "right/camera_info", sensor),
        }
        self.received: dict[str, list[Any]] = collections.defaultdict(list)
        types = dict(
            zip(self.OUTPUTS, (Image, Image, Image, Detection2DArray, Image, DiagnosticArray), strict=True)
        )
        for topic, msg_type in types.items():
            self.camera.create_subscription(msg_type, topic, self.received[topic].append, 10)
        latched = ros.qos.QoSProfile(depth=1, durability=ros.qos.DurabilityPolicy.TRANSIENT_LOCAL)
        self.camera.create_subscription(LabelInfo, "label_info", self.received["label_info"].append, latched)
        self.executor = ros.executors.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.camera)

    def publish(
        self,
        stamp: int,
        *,
        seed: int = 0,
        right_delay: int = 0,
        right: np.ndarray | None = None,
        with_right: bool = True,
        left_encoding: str | None = None,
    ) -> None:
        """One stereo set as a driver sends it (image and info per camera, right maybe late)."""
        left_rgb = textured(seed)
        right_rgb = left_rgb if right is None else right
        left_info, _ = camera_info_messages(CAMERA, stamp, "left_optical", "right_optical", self.types)
        _, right_info = camera_info_messages(
            CAMERA, stamp + right_delay, "left_optical", "right_optical", self.types
        )
        left_image = array_to_image(left_rgb, "rgb8", stamp, "left_optical", self.types)
        if left_encoding is not None:
            left_image.encoding = left_encoding
        self.inputs["left_image"].publish(left_image)
        self.inputs["left_info"].publish(left_info)
        if with_right:
            image = array_to_image(right_rgb, "rgb8", stamp + right_delay, "right_optical", self.types)
            self.inputs["right_image"].publish(image)
            self.inputs["right_info"].publish(right_info)
        self.spin(0.05)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < end, "timed out waiting"
            self.executor.spin_once(timeout_sec=0.01)

    def settle(self) -> None:
        """Waits for the model load and inference in flight, then delivers what they published."""
        self.spin(0.05)
        assert self.node.perception.wait_until_idle(30)
        self.spin(0.1)

    def stamps(self, topic: str) -> list[int]:
        return [m.header.stamp.sec * SECOND + m.header.stamp.nanosec for m in self.received[topic]]

    def diagnostics(self) -> tuple[int, str, dict[str, str]]:
        """The next /diagnostics status after now: (level, message, values)."""
        count = len(self.received["/diagnostics"])
        self.spin_until(lambda: len(self.received["/diagnostics"]) > count)
        (status,) = self.received["/diagnostics"][-1].status
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    def close(self) -> None:
        self.node.destroy_node()
        self.camera.destroy_node()


@pytest.fixture
def rig_factory(ros: Any) -> Any:
    rigs: list[Rig] = []

    def make(parameters: dict[str, Any], engine_loader: Callable | None = None) -> Rig:
        rigs.append(Rig(ros, parameters, engine_loader))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


def warnings_containing(ros: Any, text: str) -> list[str]:
    return [r.message for r in ros.logs if text in r.message]


# --- outputs ---------------------------------------------------------------------------------


def test_outputs_have_the_design_types_encodings_stamps_and_frame_ids(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    rig = rig_factory({"perception.model.path": str(models["good"])})
    rig.settle()
    stamps = [10 * SECOND + i * SECOND // 10 for i in range(3)]
    for stamp in stamps:
        rig.publish(stamp, right_delay=3_000_000)  # right camera 3 ms late, within the 10 ms slop
        rig.settle()
    for topic in ("panoptic", "semantic", "panoptic_color", "instances"):
        assert rig.stamps(topic) == stamps, topic
        assert {m.header.frame_id for m in rig.received[topic]} == {"left_optical"}
    assert not rig.received["depth"]  # depth is off by default
    encodings = {
        topic: rig.received[topic][-1].encoding for topic in ("panoptic", "semantic", "panoptic_color")
    }
    assert encodings == {"panoptic": "32SC1", "semantic": "mono8", "panoptic_color": "rgb8"}
    panoptic = image_to_array(rig.received["panoptic"][-1])
    assert panoptic.shape == (HEIGHT, WIDTH) and panoptic.dtype == np.int32
    semantic = image_to_array(rig.received["semantic"][-1])
    assert np.array_equal(
        semantic[panoptic % LABEL_DIVISOR > 0], (panoptic // LABEL_DIVISOR)[panoptic % LABEL_DIVISOR > 0]
    )

    # Detection2D.id is the track id of the panoptic map; the hypothesis names its pseudo-class.
    detections = rig.received["instances"][-1].detections
    assert detections
    track_ids = {int(v) for v in np.unique(panoptic % LABEL_DIVISOR) if v}
    assert {int(d.id) for d in detections} == track_ids
    for detection in detections:
        (result,) = detection.results
        pixels = panoptic[panoptic % LABEL_DIVISOR == int(detection.id)]
        assert result.hypothesis.class_id == f"c{int(pixels[0]) // LABEL_DIVISOR:02d}"
        assert detection.header.frame_id == "left_optical"
    # Track ids persist over the three frames of the same scene.
    first_ids = {int(d.id) for d in rig.received["instances"][0].detections}
    assert first_ids == {int(d.id) for d in detections}


def test_label_info_is_latched_and_published_once(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    from vision_msgs.msg import LabelInfo

    rig = rig_factory({"perception.model.path": str(models["good"])})
    rig.settle()
    for index in range(3):
        rig.publish(SECOND + index * SECOND // 10)
        rig.settle()
    assert len(rig.received["label_info"]) == 1
    (label_info,) = rig.received["label_info"]
    assert [(c.class_id, c.class_name) for c in label_info.class_map] == [(i, f"c{i:02d}") for i in range(5)]

    late_latched, late_volatile = [], []
    qos = ros.qos
    latched = qos.QoSProfile(depth=1, durability=qos.DurabilityPolicy.TRANSIENT_LOCAL)
    rig.camera.create_subscription(LabelInfo, "label_info", late_latched.append, latched)
    rig.camera.create_subscription(LabelInfo, "label_info", late_volatile.append, 1)
    rig.spin(0.1)
    assert len(late_latched) == 1 and late_latched[0].class_map[4].class_name == "c04"
    assert late_volatile == []  # only transient-local subscribers get the stored message
    publisher = next(p for p in rig.node.publishers if p.topic == f"{NAMESPACE}/label_info")
    assert publisher.qos_profile.durability == qos.DurabilityPolicy.TRANSIENT_LOCAL
    assert publisher.qos_profile.reliability == qos.ReliabilityPolicy.RELIABLE


def test_topics_resolve_in_the_namespace_and_default_input_qos_is_sensor_data(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    rig = rig_factory({"perception.model.path": str(models["good"]), "perception.depth.enabled": True})
    published = {p.topic for p in rig.node.publishers}
    expected = {"panoptic", "semantic", "panoptic_color", "instances", "label_info", "depth"}
    assert {f"{NAMESPACE}/{name}" for name in expected} | {"/diagnostics"} <= published
    subscriptions = {s.topic: s.qos_profile for s in rig.node.subscriptions}
    for name in ("left/image_rect", "left/camera_info", "right/image_rect", "right/camera_info"):
        assert subscriptions[f"{NAMESPACE}/{name}"] == ros.qos.qos_profile_sensor_data
    assert ros.module.qos_profile(QosConfig()) == ros.qos.qos_profile_sensor_data
    rig.settle()
    rig.publish(2 * SECOND)
    rig.settle()
    (depth,) = rig.received["depth"]
    assert depth.encoding == "32FC1" and rig.stamps("depth") == [2 * SECOND]
    assert image_to_array(depth).dtype == np.float32


def test_a_reliable_input_qos_does_not_hear_a_best_effort_camera(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    """As in DDS: the subscription's QoS is the parameter's, and a reliable request does not match a
    best-effort offer; the diagnostics show the silence."""
    rig = rig_factory({"perception.model.path": str(models["good"]), "input_qos.reliability": "reliable"})
    rig.settle()
    rig.publish(SECOND)
    rig.settle()
    assert not rig.received["panoptic"]
    assert rig.diagnostics()[2]["received left images"] == "0"


# --- synchronisation -------------------------------------------------------------------------


def test_pairs_within_slop_are_synchronized_and_a_missing_right_image_is_counted(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    rig = rig_factory({"perception.model.path": str(models["good"])})
    rig.settle()
    rig.publish(1 * SECOND, right_delay=6_000_000)  # 6 ms jitter: paired
    rig.publish(2 * SECOND, with_right=False)  # the right camera dropped this frame
    rig.settle()
    rig.publish(3 * SECOND, right_delay=40_000_000)  # 40 ms apart: beyond the 10 ms slop
    rig.publish(4 * SECOND)
    rig.settle()
    assert rig.stamps("panoptic") == [1 * SECOND, 4 * SECOND]
    level, _, values = rig.diagnostics()
    assert values["received left images"] == "4" and values["received right images"] == "3"
    assert values["synchronized pairs"] == "2"
    assert values["left images without partner"] == "2" and values["right images without partner"] == "1"
    assert level == 0


# --- bad input -------------------------------------------------------------------------------


def test_mismatched_sizes_are_logged_throttled_and_the_next_good_frame_is_published(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    rig = rig_factory({"perception.model.path": str(models["good"])})
    rig.settle()
    narrow = textured(1, width=120)
    for index in range(3):
        rig.publish(SECOND + index, right=narrow)
    rig.settle()
    rig.publish(2 * SECOND)
    rig.settle()
    assert rig.stamps("panoptic") == [2 * SECOND]
    warnings = warnings_containing(ros, "stereo sizes differ: left image 128x64, right image 120x64")
    assert len(warnings) == 1, "repeated bad input is rate-limited (log_throttle)"
    assert "at stamp 1000000000 ns (left_optical)" in warnings[0]
    _, _, values = rig.diagnostics()
    assert values["rejected: stereo size mismatch"] == "3"
    assert "stereo sizes differ" in values["last rejection"]


def test_an_unknown_encoding_is_reported_and_not_fatal(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    rig = rig_factory({"perception.model.path": str(models["good"])})
    rig.settle()
    rig.publish(SECOND, left_encoding="nv21")
    rig.publish(2 * SECOND)
    rig.settle()
    assert rig.stamps("panoptic") == [2 * SECOND]
    assert warnings_containing(ros, "left image: unsupported image encoding 'nv21'")
    assert rig.diagnostics()[2]["rejected: image encoding"] == "1"


def test_a_model_that_does_not_load_keeps_the_node_up_and_is_reported(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    rig = rig_factory({"perception.model.path": str(models["garbage"])})
    rig.settle()
    rig.publish(SECOND)
    rig.settle()
    level, message, values = rig.diagnostics()
    assert level == 2 and "garbage.pt is corrupt or not a torch file" in message
    assert values["model"] == "none" and values[f"dropped: {DROP_NO_MODEL}"] == "1"
    assert [r for r in ros.logs if r.severity == 40 and "garbage.pt" in r.message]
    assert not rig.received["panoptic"] and not rig.received["label_info"]

    # Fixed live: a good model by parameter; then a bad one is rejected and the good one stays.
    (result,) = rig.node.set_parameters([ros.Parameter("perception.model.path", value=str(models["good"]))])
    assert result.successful
    rig.settle()
    rig.publish(2 * SECOND)
    rig.settle()
    assert rig.stamps("panoptic") == [2 * SECOND] and len(rig.received["label_info"]) == 1
    assert rig.diagnostics()[0] == 0
    rig.node.set_parameters([ros.Parameter("perception.model.path", value=str(models["garbage"]))])
    rig.settle()
    rig.publish(3 * SECOND)
    rig.settle()
    level, message, values = rig.diagnostics()
    assert level == 1 and "still running" in message and values["model"].startswith("good.pt")
    assert rig.stamps("panoptic") == [2 * SECOND, 3 * SECOND]
    (refused,) = rig.node.set_parameters([ros.Parameter("sync.slop", value=0.05)])
    assert not refused.successful and "restart the node" in refused.reason


def test_invalid_parameters_stop_the_node_with_the_key_named(ros: Any, models: dict[str, Path]) -> None:
    from rclpy.exceptions import InvalidParameterTypeException

    with pytest.raises(ConfigError, match=r"perception\.model\.backend: 'tensorflow' is not one of"):
        ros.module.PerceptionNode(
            parameter_overrides=[ros.Parameter("perception.model.backend", value="tensorflow")]
        )
    assert [r for r in ros.logs if r.severity == 50 and "perception.model.backend" in r.message]
    # ROS parameters are typed: an integer for a float parameter is refused by rclpy itself.
    with pytest.raises(InvalidParameterTypeException, match=r"sync\.slop"):
        ros.module.PerceptionNode(parameter_overrides=[ros.Parameter("sync.slop", value=1)])


# --- time and load ---------------------------------------------------------------------------


def test_use_sim_time_drives_the_node_clock_and_outputs_keep_the_message_stamps(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    from rosgraph_msgs.msg import Clock

    from cups_ros.io.messages import header_message

    rig = rig_factory({"perception.model.path": str(models["good"]), "use_sim_time": True})
    clock = rig.camera.create_publisher(Clock, "/clock", 10)

    def tick(nanoseconds: int) -> None:
        clock.publish(Clock(clock=header_message(nanoseconds, "", rig.types).stamp))
        rig.spin(0.02)

    tick(100 * SECOND)
    assert rig.node.get_clock().now().nanoseconds == 100 * SECOND
    rig.settle()
    rig.publish(100 * SECOND - SECOND // 20)  # 50 ms before the sim clock
    rig.settle()
    count = len(rig.received["/diagnostics"])
    rig.spin(0.3)  # wall time passes, sim time does not: the diagnostics timer (sim time) waits
    assert len(rig.received["/diagnostics"]) == count
    tick(100 * SECOND + SECOND // 5)  # 0.2 s of sim time later
    assert rig.stamps("/diagnostics")[-1] == 100 * SECOND + SECOND // 5
    diagnostics = rig.received["/diagnostics"][-1]
    assert rig.stamps("panoptic") == [100 * SECOND - SECOND // 20]
    latency = float({kv.key: kv.value for kv in diagnostics.status[0].values}["latency median (ms)"])
    assert latency == pytest.approx(50.0)  # sim now (100 s) - stamp, not wall time


def test_frames_arriving_faster_than_inference_are_dropped_and_counted(
    ros: Any, rig_factory: Any, models: dict[str, Path]
) -> None:
    gate = threading.Event()
    gate.set()
    engines: list[GatedEngine] = []

    def loader(model: ModelConfig) -> Any:
        engines.append(GatedEngine(load_engine(model), gate))
        return engines[-1]

    rig = rig_factory({"perception.model.path": str(models["good"])}, engine_loader=loader)
    rig.settle()
    while engines[0].entered.acquire(blocking=False):  # the trial frame of the load
        pass
    gate.clear()
    rig.publish(1 * SECOND)
    assert engines[0].entered.acquire(timeout=10)  # frame 1 is in inference and blocked
    started = time.monotonic()
    for second in (2, 3, 4):
        rig.publish(second * SECOND)
    assert time.monotonic() - started < 5.0  # the callbacks did not wait for inference
    gate.set()
    rig.settle()
    assert rig.stamps("panoptic") == [1 * SECOND, 4 * SECOND]
    _, _, values = rig.diagnostics()
    assert values[f"dropped: {DROP_SUPERSEDED}"] == "2" and values["dropped frames"] == "2"
    assert values["processed"] == "2" and values["synchronized pairs"] == "4"


# --- entry point and parameter file ----------------------------------------------------------


def test_main_runs_the_node_from_the_package_parameter_file(ros: Any, models: dict[str, Path]) -> None:
    """``ros2 run cups_ros perception_node --ros-args --params-file config/perception.yaml ...``"""
    from sensor_msgs.msg import CameraInfo, Image

    from cups_ros.io.messages import MessageTypes

    rclpy = ros.rclpy
    rclpy.shutdown()  # main() initializes rclpy itself
    arguments = [
        "--ros-args",
        "--params-file",
        str(REPOSITORY_ROOT / "config" / "perception.yaml"),
        "-p",
        f"perception.model.path:={models['good']}",
        "-r",
        "__ns:=/front",
    ]
    runner = threading.Thread(target=ros.module.main, args=(arguments,), daemon=True)
    runner.start()
    deadline = time.monotonic() + 30

    def subscribed() -> bool:
        context = rclpy.get_default_context()
        return context.ok() and any(
            s.topic == "/front/right/camera_info" for s in context.graph.subscriptions
        )

    while not subscribed():
        assert time.monotonic() < deadline, "the node did not come up"
        time.sleep(0.01)
    camera = ros.Node("camera", namespace="/front")
    types = MessageTypes.from_rclpy()
    outputs: list[Any] = []
    camera.create_subscription(Image, "panoptic", outputs.append, 10)
    sensor = ros.qos.qos_profile_sensor_data
    publishers = [
        camera.create_publisher(t, n, sensor)
        for t, n in (
            (Image, "left/image_rect"),
            (CameraInfo, "left/camera_info"),
            (Image, "right/image_rect"),
            (CameraInfo, "right/camera_info"),
        )
    ]
    executor = ros.executors.SingleThreadedExecutor()
    executor.add_node(camera)
    stamp = 0
    while not outputs:  # the model may still be loading: send until a frame comes out
        assert time.monotonic() < deadline, "no output from main()"
        stamp += SECOND // 10
        left_info, right_info = camera_info_messages(CAMERA, stamp, "left_optical", "right_optical", types)
        image = array_to_image(textured(0), "rgb8", stamp, "left_optical", types)
        for publisher, message in zip(publishers, (image, left_info, image, right_info), strict=True):
            publisher.publish(message)
        for _ in range(20):
            executor.spin_once(timeout_sec=0.01)
    assert outputs[0].header.frame_id == "left_optical"
    camera.destroy_node()
    rclpy.shutdown()
    runner.join(30)
    assert not runner.is_alive(), "main() did not return after shutdown"


# --- the stand-ins ---------------------------------------------------------------------------


def test_the_stand_in_approximate_synchronizer_pairs_within_slop_and_keeps_queue_size(ros: Any) -> None:
    """The matching rules of message_filters.ApproximateTimeSynchronizer (Humble)."""
    from sensor_msgs.msg import CameraInfo, Image

    from cups_ros.io.messages import MessageTypes

    types = MessageTypes.from_rclpy()
    node = ros.Node("sync_probe")
    filters = ros.message_filters
    first, second = filters.Subscriber(node, Image, "a"), filters.Subscriber(node, CameraInfo, "b")
    assert first.sub.qos_profile.depth == 10  # message_filters' default qos_profile
    pairs: list[tuple[int, int]] = []
    synchronizer = filters.ApproximateTimeSynchronizer([first, second], queue_size=2, slop=0.01)
    synchronizer.registerCallback(lambda a, b: pairs.append((a.header.stamp.sec, b.header.stamp.nanosec)))

    def image(milliseconds: int) -> Any:
        return array_to_image(np.zeros((1, 1), np.uint8), "mono8", milliseconds * 1_000_000, "", types)

    def info(milliseconds: int) -> Any:
        return camera_info_messages(CAMERA, milliseconds * 1_000_000, types=types)[0]

    first.callback(image(0))
    second.callback(info(5))  # 5 ms apart: a pair
    first.callback(image(1000))
    second.callback(info(1020))  # 20 ms apart: none
    for milliseconds in (2000, 3000, 4000):  # queue_size 2 pushes 1000 and 2000 out
        first.callback(image(milliseconds))
    second.callback(info(2000))  # its partner is gone
    second.callback(info(4003))
    assert pairs == [(0, 5_000_000), (4, 3_000_000)]


REAL_NODE_ATTRIBUTES = {
    # Instance attributes rclpy's Node.__init__ sets (Humble, rclpy/node.py); a subclass that assigns
    # one of them breaks the real node (the stand-in keeps the same names where it has them).
    "_allow_undeclared_parameters", "_clients", "_clock", "_context", "_default_callback_group",
    "_descriptors", "_guards", "_logger", "_parameter_event_publisher", "_parameter_overrides",
    "_parameter_service", "_parameters", "_parameters_callbacks", "_publishers", "_rate_group",
    "_services", "_subscriptions", "_time_source", "_timers",
}  # fmt: skip
REAL_NODE_METHODS = {
    # Methods and properties of rclpy's Node (Humble, rclpy/node.py).
    "_apply_descriptor", "_apply_descriptor_and_set", "_apply_descriptors", "_apply_floating_point_range",
    "_apply_integer_range", "_check_undeclared_parameters", "_count_publishers_or_subscribers",
    "_get_info_by_topic", "_set_parameters", "_set_parameters_atomically", "_validate_qos_or_depth_parameter",
    "_validate_topic_or_service_name", "_wake_executor", "add_on_set_parameters_callback", "add_waitable",
    "clients", "context", "count_publishers", "count_subscribers", "create_client", "create_guard_condition",
    "create_publisher", "create_rate", "create_service", "create_subscription", "create_timer",
    "declare_parameter", "declare_parameters", "default_callback_group", "describe_parameter",
    "describe_parameters", "destroy_client", "destroy_guard_condition", "destroy_node", "destroy_publisher",
    "destroy_rate", "destroy_service", "destroy_subscription", "destroy_timer", "executor",
    "get_client_names_and_types_by_node", "get_clock", "get_fully_qualified_name", "get_logger", "get_name",
    "get_namespace", "get_node_names", "get_node_names_and_namespaces",
    "get_node_names_and_namespaces_with_enclaves", "get_parameter", "get_parameter_or", "get_parameter_type",
    "get_parameter_types", "get_parameters", "get_parameters_by_prefix",
    "get_publisher_names_and_types_by_node",
    "get_publishers_info_by_topic", "get_service_names_and_types", "get_service_names_and_types_by_node",
    "get_subscriber_names_and_types_by_node", "get_subscriptions_info_by_topic", "get_topic_names_and_types",
    "guards", "handle", "has_parameter", "publishers", "remove_on_set_parameters_callback", "remove_waitable",
    "resolve_service_name", "resolve_topic_name", "services", "set_descriptor", "set_parameters",
    "set_parameters_atomically", "subscriptions", "timers", "undeclare_parameter", "waitables",
}  # fmt: skip


def test_the_node_does_not_shadow_rclpy_node_internals(ros: Any, models: dict[str, Path]) -> None:
    """Names the perception node sets or defines never collide with the real Node's (Humble)."""
    plain = ros.Node("plain")
    node = ros.module.PerceptionNode(parameter_overrides=[ros.Parameter("perception.model.path", value="")])
    try:
        own_attributes = set(vars(node)) - set(vars(plain))
        assert not own_attributes & (REAL_NODE_ATTRIBUTES | REAL_NODE_METHODS)
        own_methods = {name for name in vars(ros.module.PerceptionNode) if not name.startswith("__")}
        assert own_methods & REAL_NODE_METHODS == {"destroy_node"}  # the one intended override
    finally:
        node.destroy_node()


# Signatures of the real API the node and the tests use, recorded from the real sources:
# rclpy: the Humble rclpy Python sources as packaged in rclpy-intellisense 1.2.0 (PyPI), read with ast;
# message_filters: ros2/message_filters src/message_filters/__init__.py. Format: parameters with
# defaults as written in the source ("_rclpy." dropped from ClockType defaults).
REAL_SIGNATURES = {
    "rclpy:init": "(*, args=None, context=None, domain_id=None, signal_handler_options=None)",
    "rclpy:shutdown": "(*, context=None, uninstall_handlers=None)",
    "rclpy:spin_once": "(node, *, executor=None, timeout_sec=None)",
    "rclpy:spin": "(node, executor=None)",
    "rclpy:ok": "(*, context=None)",
    "rclpy:try_shutdown": "(*, context=None)",
    "rclpy.utilities:get_default_context": "(*, shutting_down=False)",
    "rclpy.node:Node.__init__": "(self, node_name, *, context=None, cli_args=None, namespace=None, "
    "use_global_arguments=True, enable_rosout=True, start_parameter_services=True, parameter_overrides=None, "
    "allow_undeclared_parameters=False, automatically_declare_parameters_from_overrides=False)",
    "rclpy.node:Node.get_name": "(self)",
    "rclpy.node:Node.get_namespace": "(self)",
    "rclpy.node:Node.get_fully_qualified_name": "(self)",
    "rclpy.node:Node.get_clock": "(self)",
    "rclpy.node:Node.get_logger": "(self)",
    "rclpy.node:Node.declare_parameter": "(self, name, value=None, descriptor=None, ignore_override=False)",
    "rclpy.node:Node.declare_parameters": "(self, namespace, parameters, ignore_override=False)",
    "rclpy.node:Node.has_parameter": "(self, name)",
    "rclpy.node:Node.get_parameter": "(self, name)",
    "rclpy.node:Node.get_parameters": "(self, names)",
    "rclpy.node:Node.set_parameters": "(self, parameter_list)",
    "rclpy.node:Node.add_on_set_parameters_callback": "(self, callback)",
    "rclpy.node:Node.create_publisher": "(self, msg_type, topic, qos_profile, *, callback_group=None, "
    "event_callbacks=None, qos_overriding_options=None, publisher_class=Publisher)",
    "rclpy.node:Node.create_subscription": "(self, msg_type, topic, callback, qos_profile, *, "
    "callback_group=None, event_callbacks=None, qos_overriding_options=None, raw=False)",
    "rclpy.node:Node.create_timer": "(self, timer_period_sec, callback, callback_group=None, clock=None)",
    "rclpy.node:Node.destroy_publisher": "(self, publisher)",
    "rclpy.node:Node.destroy_subscription": "(self, subscription)",
    "rclpy.node:Node.destroy_timer": "(self, timer)",
    "rclpy.node:Node.destroy_node": "(self)",
    "rclpy.publisher:Publisher.publish": "(self, msg)",
    "rclpy.publisher:Publisher.get_subscription_count": "(self)",
    "rclpy.qos:QoSProfile.__init__": "(self, **kwargs)",
    "rclpy.parameter:Parameter.__init__": "(self, name, type_=None, value=None)",
    "rclpy.time:Time.__init__": "(self, *, seconds=0, nanoseconds=0, clock_type=ClockType.SYSTEM_TIME)",
    "rclpy.time:Time.to_msg": "(self)",
    "rclpy.time:Time.from_msg": "(cls, msg, clock_type=ClockType.ROS_TIME)",
    "rclpy.time:Time.seconds_nanoseconds": "(self)",
    "rclpy.duration:Duration.__init__": "(self, *, seconds=0, nanoseconds=0)",
    "rclpy.clock:Clock.__new__": "(cls, *, clock_type=ClockType.SYSTEM_TIME)",
    "rclpy.clock:Clock.now": "(self)",
    "rclpy.clock:ROSClock.__new__": "(cls)",
    "rclpy.clock:ROSClock.set_ros_time_override": "(self, time)",
    "rclpy.context:Context.init": "(self, args=None, *, initialize_logging=True, domain_id=None)",
    "rclpy.context:Context.ok": "(self)",
    "rclpy.context:Context.shutdown": "(self)",
    "rclpy.context:Context.try_shutdown": "(self)",
    "rclpy.context:Context.on_shutdown": "(self, callback)",
    "rclpy.executors:Executor.__init__": "(self, *, context=None)",
    "rclpy.executors:Executor.add_node": "(self, node)",
    "rclpy.executors:Executor.remove_node": "(self, node)",
    "rclpy.executors:Executor.spin": "(self)",
    "rclpy.executors:Executor.spin_once": "(self, timeout_sec=None)",
    "rclpy.executors:Executor.shutdown": "(self, timeout_sec=None)",
    "rclpy.executors:SingleThreadedExecutor.__init__": "(self, *, context=None)",
    "rclpy.executors:MultiThreadedExecutor.__init__": "(self, num_threads=None, *, context=None)",
    "rclpy.logging:get_logger": "(name)",
    "rclpy.impl.rcutils_logger:RcutilsLogger.__init__": "(self, name='')",
    "rclpy.impl.rcutils_logger:RcutilsLogger.get_child": "(self, name)",
    "rclpy.impl.rcutils_logger:RcutilsLogger.log": "(self, message, severity, **kwargs)",
    "rclpy.impl.rcutils_logger:RcutilsLogger.debug": "(self, message, **kwargs)",
    "rclpy.impl.rcutils_logger:RcutilsLogger.info": "(self, message, **kwargs)",
    "rclpy.impl.rcutils_logger:RcutilsLogger.warning": "(self, message, **kwargs)",
    "rclpy.impl.rcutils_logger:RcutilsLogger.warn": "(self, message, **kwargs)",
    "rclpy.impl.rcutils_logger:RcutilsLogger.error": "(self, message, **kwargs)",
    "rclpy.impl.rcutils_logger:RcutilsLogger.fatal": "(self, message, **kwargs)",
    "rclpy.timer:Timer.cancel": "(self)",
    "rclpy.timer:Timer.reset": "(self)",
    "rclpy.timer:Timer.is_canceled": "(self)",
    "message_filters:SimpleFilter.registerCallback": "(self, cb, *args)",
    "message_filters:SimpleFilter.signalMessage": "(self, *msg)",
    "message_filters:Subscriber.__init__": "(self, *args, **kwargs)",
    "message_filters:Subscriber.getTopic": "(self)",
    "message_filters:TimeSynchronizer.__init__": "(self, fs, queue_size)",
    "message_filters:TimeSynchronizer.add": "(self, msg, my_queue, my_queue_index=None)",
    "message_filters:ApproximateTimeSynchronizer.__init__": (
        "(self, fs, queue_size, slop, allow_headerless=False)"
    ),
    "message_filters:ApproximateTimeSynchronizer.add": "(self, msg, my_queue, my_queue_index=None)",
}


def _default_text(value: Any) -> str:
    if isinstance(value, enum.Enum):
        return f"{type(value).__name__}.{value.name}"
    if isinstance(value, type):
        return value.__name__
    return repr(value)


def signature_text(function: Callable[..., Any]) -> str:
    """A signature without annotations, in the format of REAL_SIGNATURES."""
    parts: list[str] = []
    star = False
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY and not star:
            parts.append("*")
            star = True
        prefix = {parameter.VAR_POSITIONAL: "*", parameter.VAR_KEYWORD: "**"}.get(parameter.kind, "")
        star = star or parameter.kind is parameter.VAR_POSITIONAL
        text = prefix + parameter.name
        if parameter.default is not parameter.empty:
            text += "=" + _default_text(parameter.default)
        parts.append(text)
    return f"({', '.join(parts)})"


def _stand_in_function(key: str) -> Callable[..., Any]:
    import importlib

    module_name, _, qualified = key.partition(":")
    owner: Any = importlib.import_module(module_name)
    *classes, name = qualified.split(".")
    for class_name in classes:
        owner = getattr(owner, class_name)
    function = owner.__dict__[name] if classes else getattr(owner, name)
    return function.__func__ if isinstance(function, classmethod | staticmethod) else function


def test_the_stand_ins_have_the_real_signatures(ros: Any) -> None:
    mismatches = {
        key: (signature_text(_stand_in_function(key)), expected)
        for key, expected in REAL_SIGNATURES.items()
        if signature_text(_stand_in_function(key)) != expected
    }
    assert not mismatches


def _source_signature(function: ast.FunctionDef) -> str:
    arguments = function.args
    positional = arguments.posonlyargs + arguments.args
    defaults = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)

    def with_default(name: str, default: ast.expr | None) -> str:
        return name if default is None else f"{name}={ast.unparse(default).replace('_rclpy.', '')}"

    parts = [with_default(a.arg, d) for a, d in zip(positional, defaults, strict=True)]
    if arguments.vararg:
        parts.append("*" + arguments.vararg.arg)
    elif arguments.kwonlyargs:
        parts.append("*")
    parts += [
        with_default(a.arg, d) for a, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)
    ]
    if arguments.kwarg:
        parts.append("**" + arguments.kwarg.arg)
    return f"({', '.join(parts)})"


def test_recorded_signatures_match_the_rclpy_sources_when_they_are_at_hand() -> None:
    """Re-reads REAL_SIGNATURES from rclpy-intellisense's files (Humble's rclpy Python sources) in a
    throwaway venv at /tmp/rclpy_ref (python3 -m venv /tmp/rclpy_ref && /tmp/rclpy_ref/bin/pip install
    rclpy-intellisense); never installed beside the project, where it would shadow the real rclpy."""
    found = sorted(Path("/tmp/rclpy_ref").glob("lib/python3*/site-packages/rclpy/node.py"))
    if not found:
        pytest.skip("rclpy-intellisense sources not found under /tmp/rclpy_ref (a throwaway venv)")
    root = found[0].parent
    for key, expected in REAL_SIGNATURES.items():
        module_name, _, qualified = key.partition(":")
        if not module_name.startswith("rclpy"):
            continue
        relative = module_name.removeprefix("rclpy").lstrip(".").replace(".", "/") or "__init__"
        source = root / f"{relative}.py"
        if module_name == "rclpy" and qualified in ("ok", "try_shutdown"):
            source = root / "utilities.py"  # re-exported by rclpy/__init__.py
        tree = ast.parse(source.read_text())
        functions: dict[str, ast.FunctionDef] = {}
        for item in tree.body:
            if isinstance(item, ast.FunctionDef):
                functions[item.name] = item
            elif isinstance(item, ast.ClassDef):
                functions.update(
                    {f"{item.name}.{f.name}": f for f in item.body if isinstance(f, ast.FunctionDef)}
                )
        assert _source_signature(functions[qualified]) == expected, key
