"""The online-learning nodes and the perception node following the model store, run in CI on the
rclpy / message_filters stand-ins (tests/ros_stand_in) with real ROS 2 messages (rosbags classes of
the real definitions; every published message goes through real CDR).

What is checked: the pseudo_label_node labels synchronized stereo (jitter within slop) at the frame
stride into the replay buffer on disk, publishes each pseudo-label with the input's stamp and frame_id,
survives bad input (logged, counted), never blocks its callback on a busy labeller, and stops with a
fatal log and exit code 1 on a missing or corrupt fit; the self_training_node runs rounds on its own
thread, reports them on online_learning/status (JSON) and /diagnostics, survives a round that raises,
and continues from the store's model when the store moved on; the perception node serves the store's
current version, swaps to each new one without dropping a frame, and keeps the old model (without
retrying) when a new version does not load. The labeller and the training rounds are fakes here (they
are tested in tests/test_online_learning.py); the store and the buffer are real.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest

from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.io.messages import array_to_image, camera_info_messages, image_to_array
from cups_ros.online.buffer import ReplayBuffer
from cups_ros.online.gate import GateDecision, GateScores
from cups_ros.online.labeller import OnlineLabelConfig, OnlinePseudoLabel
from cups_ros.online.learning import OnlineLearningStatus, RoundResult
from cups_ros.online.store import ModelStore, ModelStoreConfig
from cups_ros.pipeline import ModelConfig, colour_panoptic, load_engine
from cups_ros.pseudo.fusion import PanopticPseudoLabel
from tests import ros_stand_in
from tests.test_perception_node import (
    CAMERA,
    HEIGHT,
    REAL_NODE_ATTRIBUTES,
    REAL_NODE_METHODS,
    SECOND,
    WIDTH,
    Rig,
    textured,
)
from tests.test_perception_pipeline import tiny_network, write_tiny_model

NAMESPACE = "/stereo"
MILLISECOND = 1_000_000
NO_ONNX = ModelStoreConfig(export_onnx=False)
WARN, ERROR, FATAL = 30, 40, 50
THING_CLASSES = np.array([False, True, False, True])


@pytest.fixture
def ros() -> Any:
    """The stand-ins, an initialized context, and the three node modules imported on top of them."""
    with ros_stand_in.installed():
        import rclpy
        import rclpy.executors
        import rclpy.impl.rcutils_logger
        import rclpy.node
        import rclpy.parameter
        import rclpy.qos

        from cups_ros.ros import common, perception_node, pseudo_label_node, self_training_node

        rclpy.init()
        del rclpy.impl.rcutils_logger.RECORDS[:]
        try:
            yield SimpleNamespace(
                rclpy=rclpy,
                Node=rclpy.node.Node,
                Parameter=rclpy.parameter.Parameter,
                qos=rclpy.qos,
                executors=rclpy.executors,
                logs=rclpy.impl.rcutils_logger.RECORDS,
                common=common,
                module=perception_node,  # what tests.test_perception_node.Rig builds
                pseudo_label=pseudo_label_node,
                self_training=self_training_node,
            )
        finally:
            rclpy.try_shutdown()


def logged(ros: Any, text: str, severity: int | None = None) -> list[str]:
    return [r.message for r in ros.logs if text in r.message and (severity is None or r.severity == severity)]


def overrides(ros: Any, parameters: dict[str, Any]) -> list[Any]:
    return [ros.Parameter(name, value=value) for name, value in parameters.items()]


class Bench:
    """A node under test plus a 'camera' node that publishes the stereo topics and records outputs,
    both on one executor spun by the test."""

    def __init__(self, ros: Any, node: Any, outputs: dict[str, type]) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        from cups_ros.io.messages import MessageTypes

        self.ros, self.node = ros, node
        self._closed = False
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
        latched = ros.qos.QoSProfile(depth=1, durability=ros.qos.DurabilityPolicy.TRANSIENT_LOCAL)
        for topic, msg_type in outputs.items():
            qos = latched if topic.endswith("label_info") else 10
            self.camera.create_subscription(msg_type, topic, self.received[topic].append, qos)
        self.executor = ros.executors.SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.executor.add_node(self.camera)

    def publish(
        self,
        stamp: int,
        *,
        seed: int = 0,
        right_delay: int = 0,
        left_encoding: str = "",
        skip: tuple[str, ...] = (),
        uncalibrated_right: bool = False,
    ) -> None:
        """One stereo set as a driver sends it; ``skip`` names inputs the driver dropped."""
        left_info, _ = camera_info_messages(CAMERA, stamp, "left_optical", "right_optical", self.types)
        _, right_info = camera_info_messages(
            CAMERA, stamp + right_delay, "left_optical", "right_optical", self.types
        )
        if uncalibrated_right:  # what a driver without a calibration file sends
            right_info.p = np.zeros(12)
        left = array_to_image(textured(seed), "rgb8", stamp, "left_optical", self.types)
        if left_encoding:
            left.encoding = left_encoding
        right = array_to_image(textured(seed), "rgb8", stamp + right_delay, "right_optical", self.types)
        for name, message in (
            ("left_image", left),
            ("left_info", left_info),
            ("right_image", right),
            ("right_info", right_info),
        ):
            if name not in skip:
                self.inputs[name].publish(message)
        self.spin(0.03)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)

    def spin_until(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < end, "timed out waiting"
            self.executor.spin_once(timeout_sec=0.01)

    def stamps(self, topic: str) -> list[int]:
        return [m.header.stamp.sec * SECOND + m.header.stamp.nanosec for m in self.received[topic]]

    def diagnostics(self) -> tuple[int, str, dict[str, str]]:
        """The next /diagnostics status after now: (level, message, values)."""
        count = len(self.received["/diagnostics"])
        self.spin_until(lambda: len(self.received["/diagnostics"]) > count)
        (status,) = self.received["/diagnostics"][-1].status
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.node.destroy_node()
            self.camera.destroy_node()


# --- pseudo_label_node -----------------------------------------------------------------------


def pseudo_label_of(stamp_ns: int) -> np.ndarray:
    """The fake labeller's deterministic pseudo-label: stuff class 2, one thing of class 1 whose
    instance id depends on the stamp, an ignored top band."""
    panoptic = np.full((HEIGHT, WIDTH), 2 * LABEL_DIVISOR, np.int32)
    panoptic[10:30, 20:50] = 1 * LABEL_DIVISOR + 1 + (stamp_ns // (100 * MILLISECOND)) % 7
    panoptic[:4] = 255 * LABEL_DIVISOR
    return panoptic


class FakeLabeller:
    """What AsyncPseudoLabelling and the node use of OnlineLabeller; ``gate`` holds label_pair."""

    def __init__(self, config: OnlineLabelConfig, gate: threading.Event | None = None) -> None:
        self.config = config
        self.fit = SimpleNamespace(thing_classes=THING_CLASSES)
        self.gate = gate
        self.pairs: list[tuple[int, int]] = []

    def label_pair(self, frame: Any, successor: Any) -> OnlinePseudoLabel:
        if self.gate is not None:
            assert self.gate.wait(20), "test gate never opened"
        self.pairs.append((frame.stamp_ns, successor.stamp_ns))
        return OnlinePseudoLabel(frame, PanopticPseudoLabel(pseudo_label_of(frame.stamp_ns)))


PSEUDO_LABEL_OUTPUTS = ("pseudo_labels/panoptic", "pseudo_labels/panoptic_color", "pseudo_labels/label_info")


@pytest.fixture
def pseudo_bench(ros: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    benches: list[Bench] = []

    def make(labeller: FakeLabeller | None = None, **parameters: Any) -> tuple[Bench, FakeLabeller]:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image
        from vision_msgs.msg import LabelInfo

        made: list[FakeLabeller] = []

        def open_fake(online: Any) -> FakeLabeller:
            made.append(labeller or FakeLabeller(online.labeller))
            return made[-1]

        monkeypatch.setattr(ros.pseudo_label, "open_labeller", open_fake)
        node = ros.pseudo_label.PseudoLabelNode(
            namespace=NAMESPACE,
            parameter_overrides=overrides(
                ros,
                {
                    "diagnostics_period": 0.1,
                    "online.cpu_priority": "normal",  # never lower the test process
                    "online.buffer_dir": str(tmp_path / "buffer"),
                    "online.labeller.fit": "fake",
                    "online.labeller.frame_stride": 2,
                    **parameters,
                },
            ),
        )
        types = dict(zip(PSEUDO_LABEL_OUTPUTS, (Image, Image, LabelInfo), strict=True))
        benches.append(Bench(ros, node, {**types, "/diagnostics": DiagnosticArray}))
        return benches[-1], made[0]

    yield make
    for bench in benches:
        bench.close()


def test_stereo_within_slop_is_labelled_at_the_stride_into_the_buffer_and_published(
    ros: Any, pseudo_bench: Any, tmp_path: Path
) -> None:
    bench, labeller = pseudo_bench()
    stamps = [10 * SECOND + index * 100 * MILLISECOND for index in range(6)]
    for index, stamp in enumerate(stamps):
        bench.publish(stamp, seed=index, right_delay=3 * MILLISECOND)  # within the 10 ms slop
        assert bench.node.labelling.wait_until_idle(10)
        if index == 2:  # a frame the node cannot read, between two good ones
            bench.publish(stamp + 50 * MILLISECOND, left_encoding="nv21")
    bench.spin(0.1)

    labelled = stamps[0::2]  # stride 2: frames 0, 2, 4, each labelled when its successor came
    assert labeller.pairs == list(zip(stamps[0::2], stamps[1::2], strict=True))
    for topic in ("pseudo_labels/panoptic", "pseudo_labels/panoptic_color"):
        assert bench.stamps(topic) == labelled, topic
        assert {m.header.frame_id for m in bench.received[topic]} == {"left_optical"}
    for message, stamp in zip(bench.received["pseudo_labels/panoptic"], labelled, strict=True):
        assert message.encoding == "32SC1"
        assert np.array_equal(image_to_array(message), pseudo_label_of(stamp))
    colour = bench.received["pseudo_labels/panoptic_color"][-1]
    assert colour.encoding == "rgb8"
    assert np.array_equal(image_to_array(colour), colour_panoptic(pseudo_label_of(labelled[-1])))
    (label_info,) = bench.received["pseudo_labels/label_info"]
    assert [c.class_name for c in label_info.class_map] == ["c00", "c01", "c02", "c03"]

    (warning,) = logged(ros, "left image: unsupported image encoding 'nv21'", WARN)
    assert f"at stamp {stamps[2] + 50 * MILLISECOND} ns (left_optical)" in warning

    buffer = ReplayBuffer(tmp_path / "buffer", writer=False)
    samples = [buffer.read(sample_id) for sample_id in buffer.train_ids() + buffer.holdout_ids()]
    assert sorted(sample.stamp_ns for sample in samples) == labelled
    for sample in samples:
        assert np.array_equal(sample.panoptic, pseudo_label_of(sample.stamp_ns))
        assert np.array_equal(sample.image, textured(stamps.index(sample.stamp_ns)))
        assert sample.source == "left_optical"

    level, message, values = bench.diagnostics()
    assert level == 0 and "3 samples" in message
    assert values["synchronized pairs"] == "7" and values["frames seen"] == "6"
    assert values["labelled"] == "3" and values["published"] == "3" and values["labelling errors"] == "0"
    assert values["rejected frames"] == "1" and values["rejected: image encoding"] == "1"
    assert "nv21" in values["last rejection"]
    assert values["buffer samples"] == "3" and int(values["buffer bytes"]) > 0
    assert values["buffer holdout"] == "0"  # every 5th sample is held out by default


def test_a_busy_labeller_never_blocks_the_callback_and_frames_meanwhile_are_not_queued(
    ros: Any, pseudo_bench: Any
) -> None:
    gate = threading.Event()
    bench, labeller = pseudo_bench(FakeLabeller(OnlineLabelConfig(frame_stride=1), gate))
    bench.publish(1 * SECOND)
    bench.publish(2 * SECOND)  # the pair (1, 2) goes to the labeller, which now waits on the gate
    started = time.monotonic()
    for second in range(3, 8):
        bench.publish(second * SECOND)
    assert time.monotonic() - started < 5.0
    gate.set()
    assert bench.node.labelling.wait_until_idle(10)
    bench.publish(8 * SECOND)  # idle again: labelled when its successor comes
    bench.publish(9 * SECOND)
    assert bench.node.labelling.wait_until_idle(10)
    bench.spin(0.05)
    assert labeller.pairs == [(1 * SECOND, 2 * SECOND), (8 * SECOND, 9 * SECOND)]
    assert bench.stamps("pseudo_labels/panoptic") == [1 * SECOND, 8 * SECOND]
    _, _, values = bench.diagnostics()
    assert values["frames seen"] == "9" and values["labelled"] == "2"


def test_missing_and_uncalibrated_camera_info_is_counted_and_logged_and_labelling_goes_on(
    ros: Any, pseudo_bench: Any
) -> None:
    bench, _ = pseudo_bench()
    bench.publish(1 * SECOND, skip=("right_info",))  # never paired: counted as without partner
    bench.publish(2 * SECOND, uncalibrated_right=True)  # paired, but no usable calibration
    for second in (3, 4):
        bench.publish(second * SECOND)
        assert bench.node.labelling.wait_until_idle(10)
    bench.spin(0.05)
    assert bench.stamps("pseudo_labels/panoptic") == [3 * SECOND]
    (warning,) = logged(ros, "at stamp 2000000000 ns (left_optical) not labelled", WARN)
    assert "CameraInfo" in warning
    _, _, values = bench.diagnostics()
    assert values["received right infos"] == "3" and values["synchronized pairs"] == "3"
    assert values["left images without partner"] == "1" and values["rejected: camera info"] == "1"
    assert values["frames seen"] == "2" and values["labelled"] == "1"


def test_a_missing_or_corrupt_fit_stops_the_node_with_a_fatal_log_and_exit_code_1(
    ros: Any, tmp_path: Path
) -> None:
    module = ros.pseudo_label
    common = {"online.buffer_dir": str(tmp_path / "buffer"), "online.cpu_priority": "normal"}
    missing = tmp_path / "no_fit"
    missing.mkdir()
    with pytest.raises(ros.common.NodeStartupError):
        module.PseudoLabelNode(
            parameter_overrides=overrides(ros, {**common, "online.labeller.fit": str(missing)})
        )
    assert logged(ros, "semantics.npz, thing_stuff.json missing", FATAL)

    corrupt = tmp_path / "corrupt_fit"
    corrupt.mkdir()
    (corrupt / "semantics.npz").write_bytes(b"not an npz")
    (corrupt / "thing_stuff.json").write_text("{not json")
    with pytest.raises(ros.common.NodeStartupError):
        module.PseudoLabelNode(
            parameter_overrides=overrides(ros, {**common, "online.labeller.fit": str(corrupt)})
        )
    assert logged(ros, "thing_stuff.json is corrupt", FATAL)

    with pytest.raises(ros.common.NodeStartupError):
        module.PseudoLabelNode(
            parameter_overrides=overrides(ros, {**common, "online.labeller.frame_stride": 0})
        )
    assert logged(ros, "labeller.frame_stride must be >= 1", FATAL)
    with pytest.raises(ros.common.NodeStartupError):  # ROS parameters are typed: 1 is no float
        module.PseudoLabelNode(parameter_overrides=overrides(ros, {"sync.slop": 1}))
    assert logged(ros, "sync.slop", FATAL)

    # The console script: no traceback, exit code 1 (the fit is empty by default).
    ros.rclpy.shutdown()  # main() initializes rclpy itself
    arguments = [
        "--ros-args",
        "-p",
        f"online.buffer_dir:={tmp_path / 'buffer'}",
        "-p",
        "online.cpu_priority:=normal",
    ]
    assert module.main(arguments) == 1
    assert logged(ros, "labeller.fit must name the offline pseudo-label folder", FATAL)
    assert not ros.rclpy.ok()


# --- self_training_node ----------------------------------------------------------------------


def _scores(score: float) -> GateScores:
    return GateScores(
        pseudo_label_pq=score, pseudo_label_miou=score, flip_consistency=0.9, score=score, samples=5
    )


class FakeLearning:
    """ContinualLearning's surface the node uses; ``script`` says what each run_round does (an
    exception raises, None means too few samples), then None for ever."""

    script: ClassVar[list[Any]] = []

    def __init__(self, config: Any, buffer: Any, store: Any) -> None:
        self.config, self.buffer, self.store = config, buffer, store
        self.served_version: int | None = None
        self.status = OnlineLearningStatus(current_version=None)
        self.script = list(type(self).script)
        self.rounds_started = 0
        self.stops: list[threading.Event] = []
        self.adopted: list[int | None] = []

    def run_round(self, stop: threading.Event | None = None) -> RoundResult | None:
        self.rounds_started += 1
        self.stops.append(stop)  # type: ignore[arg-type]
        item = self.script.pop(0) if self.script else None
        if isinstance(item, Exception):
            self.status.state = "training"
            raise item
        if item is None:
            self.status.state = "waiting for samples"
            return None
        self.status.rounds += 1
        self.status.steps_done += item.steps
        if item.decision is not None:
            self.status.last_decision = item.decision.to_dict()
        if item.version is not None:
            self.status.promotions += 1
            self.status.current_version = self.served_version = item.version.version
        self.status.state = "idle"
        return item

    def status_snapshot(self) -> OnlineLearningStatus:
        return OnlineLearningStatus(**self.status.to_dict())

    def adopt(self, network: Any, version: int | None) -> None:
        self.adopted.append(version)
        self.served_version = self.status.current_version = version


@pytest.fixture
def training_bench(ros: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    benches: list[Bench] = []

    def make(script: list[Any], **parameters: Any) -> Bench:
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import String

        monkeypatch.setattr(FakeLearning, "script", script)
        monkeypatch.setattr(ros.self_training, "ContinualLearning", FakeLearning)
        node = ros.self_training.SelfTrainingNode(
            namespace=NAMESPACE,
            parameter_overrides=overrides(
                ros,
                {
                    "status_period": 0.05,
                    "idle_period": 0.02,
                    "online.cpu_priority": "normal",
                    "online.buffer_dir": str(tmp_path / "buffer"),
                    "online.store_dir": str(tmp_path / "store"),
                    **parameters,
                },
            ),
        )
        benches.append(Bench(ros, node, {"online_learning/status": String, "/diagnostics": DiagnosticArray}))
        return benches[-1]

    yield make
    for bench in benches:
        bench.close()


def test_rounds_run_off_the_executor_and_status_and_diagnostics_report_them(
    ros: Any, training_bench: Any
) -> None:
    decision = GateDecision(True, "score 0.5100 >= 0.5000", _scores(0.51), _scores(0.50))
    promoted = RoundResult(steps=40, decision=decision, version=SimpleNamespace(version=1), seconds=2.5)
    bench = training_bench([None, RuntimeError("CUDA error: out of memory"), promoted])
    learning = bench.node.learning
    bench.spin_until(lambda: learning.rounds_started >= 5)  # it went on after the failed round
    assert all(stop is bench.node._stop for stop in learning.stops)  # run_round(stop_event)

    def latest_status() -> dict[str, Any]:
        count = len(bench.received["online_learning/status"])
        bench.spin_until(lambda: len(bench.received["online_learning/status"]) > count)
        return json.loads(bench.received["online_learning/status"][-1].data)

    status = latest_status()
    assert set(status) == set(OnlineLearningStatus().to_dict()) | {"round_errors", "last_round_error"}
    assert status["rounds"] == 1 and status["promotions"] == 1 and status["steps_done"] == 40
    assert status["current_version"] == 1 and status["last_decision"]["promote"] is True
    assert status["round_errors"] == 1 and "CUDA error: out of memory" in status["last_round_error"]
    assert status["state"] == "waiting for samples"
    (error,) = logged(ros, "training round failed (RuntimeError: CUDA error: out of memory)", ERROR)
    assert "next try in 0.02 s" in error
    assert logged(ros, "training round: 40 steps in 2.5 s, promoted as version 1")

    level, message, values = bench.diagnostics()
    assert level == 0 and message == "waiting for samples"
    assert values["rounds"] == "1" and values["promotions"] == "1" and values["rejections"] == "0"
    assert values["steps done"] == "40" and values["current version"] == "1"
    assert values["last candidate score"] == "0.5100" and values["last served score"] == "0.5000"
    assert values["round errors"] == "1" and "out of memory" in values["last round error"]
    assert values["buffer samples"] == "0" and values["last round steps"] == "40"

    thread = bench.node._thread
    bench.close()
    assert not thread.is_alive(), "destroy_node() joins the training thread"


def test_a_round_that_keeps_failing_is_reported_as_a_warning(ros: Any, training_bench: Any) -> None:
    bench = training_bench([ValueError("buffer sample 000004 is corrupt")] * 1000)
    bench.spin_until(lambda: bench.node.learning.rounds_started >= 3)
    level, message, values = bench.diagnostics()
    assert level == 1 and "buffer sample 000004 is corrupt" in message
    assert int(values["round errors"]) >= 3


def test_training_continues_from_the_store_when_the_store_moved_on(
    ros: Any, training_bench: Any, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "store", NO_ONNX)
    store.publish(tiny_network(0), {"scores": {"score": 0.4}})  # e.g. an operator's rollback target
    bench = training_bench([])
    bench.spin_until(lambda: bench.node.learning.adopted == [1])
    assert logged(ros, "the model store's current version is 1", WARN)
    bench.spin(0.1)
    assert bench.node.learning.adopted == [1]  # once: it is the served version now


def test_without_a_model_to_start_from_the_node_stops_with_exit_code_1(ros: Any, tmp_path: Path) -> None:
    """The real ContinualLearning: no initial_model and an empty store."""
    with pytest.raises(ros.common.NodeStartupError):
        ros.self_training.SelfTrainingNode(
            parameter_overrides=overrides(
                ros,
                {
                    "online.cpu_priority": "normal",
                    "online.buffer_dir": str(tmp_path / "buffer"),
                    "online.store_dir": str(tmp_path / "store"),
                },
            )
        )
    assert logged(ros, "online learning needs initial_model", FATAL)
    ros.rclpy.shutdown()
    arguments = ["--ros-args", "-p", f"online.initial_model:={tmp_path / 'missing.pt'}"]
    arguments += [
        "-p",
        f"online.buffer_dir:={tmp_path / 'buffer'}",
        "-p",
        f"online.store_dir:={tmp_path / 's'}",
    ]
    arguments += ["-p", "online.cpu_priority:=normal", "-p", "idle_period:=0.0"]
    assert ros.self_training.main(arguments) == 1
    assert logged(ros, "idle_period and status_period must be > 0 s", FATAL)


def test_the_online_nodes_do_not_shadow_rclpy_node_internals(
    ros: Any, pseudo_bench: Any, training_bench: Any
) -> None:
    """Names the nodes set or define never collide with the real Node's (Humble)."""
    plain = ros.Node("plain")
    for bench in (pseudo_bench()[0], training_bench([])):
        own_attributes = set(vars(bench.node)) - set(vars(plain))
        assert not own_attributes & (REAL_NODE_ATTRIBUTES | REAL_NODE_METHODS), type(bench.node).__name__
        own_methods = {name for name in vars(type(bench.node)) if not name.startswith("__")}
        assert own_methods & REAL_NODE_METHODS == {"destroy_node"}, type(bench.node).__name__


# --- perception_node following the model store -----------------------------------------------


class SlowStoreLoader:
    """load_engine, slowed down for models of the store: frames keep coming while one loads."""

    def __init__(self, store_root: Path, delay: float = 0.4) -> None:
        self.store_root, self.delay = str(store_root), delay
        self.paths: list[str] = []

    def __call__(self, model: ModelConfig) -> Any:
        self.paths.append(model.path)
        if model.path.startswith(self.store_root):
            time.sleep(self.delay)
        return load_engine(model)


def drive(rig: Rig, stamps: list[int], until: Callable[[], bool], timeout: float = 30.0) -> int:
    """Publishes frames one by one (each waits for its output, not for a model load) until ``until``;
    the number of frames processed while a model was loading."""
    end = time.monotonic() + timeout
    while_loading = 0
    while not until():
        assert time.monotonic() < end, "timed out waiting"
        stamps.append(stamps[-1] + 100 * MILLISECOND if stamps else SECOND)
        expected = len(rig.received["panoptic"]) + 1
        rig.publish(stamps[-1], seed=len(stamps))
        rig.spin_until(lambda expected=expected: len(rig.received["panoptic"]) >= expected)
        while_loading += rig.node.perception.stats().loading
    return while_loading


def test_the_node_follows_the_store_swaps_without_dropping_frames_and_keeps_the_old_model_on_failure(
    ros: Any, tmp_path: Path
) -> None:
    root = tmp_path / "models"  # does not exist yet: the self-training node creates it
    initial = write_tiny_model(tmp_path / "initial.pt", seed=0)
    loader = SlowStoreLoader(root)
    rig = Rig(
        ros,
        {"perception.model.path": str(initial), "model_store": str(root), "model_store_poll": 0.1},
        engine_loader=loader,
    )
    try:
        rig.settle()
        stamps: list[int] = []
        drive(rig, stamps, lambda: len(stamps) >= 2)
        level, _, values = rig.diagnostics()
        assert level == 0 and values["model in use"] == str(initial)
        assert values["model store"] == str(root) and values["model store version"] == "none"

        store = ModelStore(root, NO_ONNX)
        first = store.publish(tiny_network(1), {"scores": {"score": 0.4}})
        drive(rig, stamps, lambda: rig.node.perception.stats().model_path == str(first.model_path))
        rig.settle()
        second = store.publish(tiny_network(2), {"scores": {"score": 0.5}})
        during_swap = drive(
            rig, stamps, lambda: rig.node.perception.stats().model_path == str(second.model_path)
        )
        assert during_swap >= 1, "frames ran on the old model while the new one loaded"
        drive(rig, stamps, lambda: not rig.node.perception.stats().loading)
        rig.settle()
        level, _, values = rig.diagnostics()
        assert level == 0 and values["model store version"] == "2"
        assert (
            values["model in use"] == str(second.model_path)
            and values["last model swap"] == "store version 2: in use"
        )
        stats = rig.node.perception.stats()
        assert rig.stamps("panoptic") == stamps and stats.dropped_total == 0, "no frame lost to a swap"
        assert stats.swaps_succeeded == 3 and stats.swaps_failed == 0

        # A promoted version whose model file is damaged (the executor is not spun in between: the
        # poll timer cannot see the good file first).
        third = store.publish(tiny_network(3), {"scores": {"score": 0.6}})
        third.model_path.write_bytes(b"not a torch file")
        end = time.monotonic() + 1.2  # about 12 polls
        drive(rig, stamps, lambda: time.monotonic() > end)
        rig.settle()
        (error,) = logged(ros, "model store version 3", ERROR)
        assert "is corrupt or not a torch file" in error and "not tried again" in error
        assert loader.paths.count(str(third.model_path)) == 1, "a failed version is tried once"
        level, message, values = rig.diagnostics()
        assert level == 1 and "still running" in message and str(second.model_path) in message
        assert values["model store version"] == "2" and values["model in use"] == str(second.model_path)
        assert values["failed store versions"] == "3"
        assert values["last model swap"].startswith("store version 3: failed, not tried again")
        assert rig.stamps("panoptic") == stamps and rig.node.perception.stats().dropped_total == 0
        assert rig.node.perception.stats().model_path == str(second.model_path)
    finally:
        rig.close()


def test_at_start_the_store_version_is_served_instead_of_the_configured_model(
    ros: Any, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models", NO_ONNX)
    version = store.publish(tiny_network(1), {})
    initial = write_tiny_model(tmp_path / "initial.pt", seed=0)
    loader = SlowStoreLoader(tmp_path / "models", delay=0.0)
    parameters = {
        "perception.model.path": str(initial),
        "model_store": str(store.root),
        "model_store_poll": 0.05,
    }
    rig = Rig(ros, parameters, engine_loader=loader)
    try:
        rig.settle()
        rig.spin(0.2)  # polls see the version already served
        assert loader.paths == [str(version.model_path)]
        _, _, values = rig.diagnostics()
        assert values["model store version"] == "1" and values["model in use"] == str(version.model_path)
    finally:
        rig.close()


def test_a_damaged_store_version_at_start_falls_back_to_the_configured_model(
    ros: Any, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "models", NO_ONNX)
    version = store.publish(tiny_network(1), {})
    version.model_path.write_bytes(b"garbage")
    initial = write_tiny_model(tmp_path / "initial.pt", seed=0)
    parameters = {"perception.model.path": str(initial), "model_store": str(store.root)}
    rig = Rig(ros, parameters)
    try:
        rig.spin_until(lambda: rig.node.perception.stats().model_path == str(initial))
        rig.settle()
        rig.publish(SECOND)
        rig.settle()
        assert rig.stamps("panoptic") == [SECOND]
        _, _, values = rig.diagnostics()
        assert values["model in use"] == str(initial) and values["failed store versions"] == "1"
        assert logged(ros, f"serving perception.model.path {initial}", WARN)
    finally:
        rig.close()
