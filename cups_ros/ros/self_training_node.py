"""The self-training node: rounds of continued training on the replay buffer, better models to the store.

Online learning's second half (cups_ros.online.learning.ContinualLearning): on a background thread
(never the executor, whose timers must keep running), round after round: heads-only training on the
buffer that the pseudo_label_node fills (``online.buffer_dir``, opened read-only here), the promotion
gate against the served model on held-out samples, and publication of a better-or-equal model to the
versioned store (``online.store_dir``), whose current pointer the perception node follows. When the
buffer holds too few samples, the thread waits ``idle_period`` (cut short by shutdown). A round that
raises is logged and counted, and the next one starts after ``idle_period``. When the store's current
version is not the one this node trained from (an operator rolled it back, another trainer
published), training continues from the store's model. The node's threads run at ``online.cpu_priority``
(idle by default: only CPU time that perception leaves), so perception's frame rate comes first.

Outputs: ``online_learning/status`` (std_msgs/String holding JSON: ``OnlineLearningStatus.to_dict()``
plus this node's ``round_errors`` and ``last_round_error``) and ``/diagnostics``, every
``status_period``. Why String + JSON: ROS 2 has no standard message type for a training loop's state,
a custom one would need a compiled interface package, and tools read JSON in a String as they are
(``ros2 topic echo /online_learning/status``, rosbag, a web bridge).

Parameters: the fields of ``SelfTrainingNodeConfig`` (config/online_learning.yaml, dotted names). With
no model to start from (``online.initial_model`` empty and an empty store), or invalid parameters, the
node stops with one fatal log line and exit code 1.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from std_msgs.msg import String

from cups_ros.io.messages import MessageTypes, header_message
from cups_ros.model.model_file import load_model
from cups_ros.online.learning import (
    ContinualLearning,
    RoundResult,
    SelfTrainingNodeConfig,
    lower_cpu_priority,
    open_online_learning,
)
from cups_ros.ros.common import NodeStartupError, declare_config, json_text, publish_diagnostic, spin_node

NODE_NAME = "self_training"
STATUS_TOPIC = "online_learning/status"
SHUTDOWN_JOIN_TIMEOUT = 60.0
"""Seconds to wait for the round in progress at shutdown (training stops between steps; the gate
and a publication in progress finish first)."""

_log = logging.getLogger(__name__)


class SelfTrainingNode(Node):
    """Runs training rounds on a background thread and reports them; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **node_options: Any) -> None:
        """node_options go to rclpy's Node (namespace, parameter_overrides, cli_args...)."""
        super().__init__(node_name, **node_options)
        try:
            self.config = declare_config(self, SelfTrainingNodeConfig, "self-training node")
            online = self.config.online
            try:
                buffer, store = open_online_learning(online, buffer_writer=False)
                self.learning = ContinualLearning(online, buffer, store)
            except (ValueError, OSError) as error:  # ConfigError and ModelFileError are ValueErrors
                self.get_logger().fatal(f"cannot train: {error}")
                raise NodeStartupError(str(error)) from error
        except NodeStartupError:
            super().destroy_node()
            raise
        # Before any thread starts, so that the labelling / training threads inherit it (Linux).
        self.cpu_priority = lower_cpu_priority(self.config.online.cpu_priority)
        self._types = MessageTypes.from_rclpy()
        self._lock = threading.Lock()  # round bookkeeping shared by the training thread and the timer
        self._round_errors = 0
        self._last_round_error = ""
        self._last_round_failed = False
        self._last_round: RoundResult | None = None

        self._status_publisher = self.create_publisher(String, STATUS_TOPIC, 10)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._status_timer = self.create_timer(self.config.status_period, self._publish_status)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_rounds, name="self-training", daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"self-training node up: buffer {online.buffer_dir}, store {online.store_dir}, "
            f"serving version {self.learning.served_version or 'none (initial model)'}"
        )

    # --- the training thread ---

    def _run_rounds(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow_store()
                result = self.learning.run_round(self._stop)
            except Exception as error:  # one failed round must not end online learning
                with self._lock:
                    self._round_errors += 1
                    self._last_round_error = f"{type(error).__name__}: {error}"
                    self._last_round_failed = True
                self.get_logger().error(
                    f"training round failed ({self._last_round_error}); next try in "
                    f"{self.config.idle_period} s"
                )
                _log.debug("training round failed", exc_info=True)
                self._stop.wait(self.config.idle_period)
                continue
            with self._lock:
                self._last_round_failed = False
                if result is not None:
                    self._last_round = result
            if result is None:  # too few samples yet
                self._stop.wait(self.config.idle_period)
            else:
                self._log_round(result)

    def _follow_store(self) -> None:
        """Continue from the store's current model when it is not the one trained from."""
        current = self.learning.store.current()
        if current is None or current.version == self.learning.served_version:
            return
        self.get_logger().warn(
            f"the model store's current version is {current.version}, not the "
            f"{self.learning.served_version or 'initial model'} this node trained from: "
            "training continues from the store's"
        )
        self.learning.adopt(load_model(current.model_path), current.version)

    def _log_round(self, result: RoundResult) -> None:
        if result.version is not None:
            outcome = f"promoted as version {result.version.version}"
        elif result.decision is None:
            outcome = "too few held-out samples to judge"
        else:
            outcome = f"not promoted ({result.decision.reason})"
        self.get_logger().info(f"training round: {result.steps} steps in {result.seconds:.1f} s, {outcome}")

    # --- status and diagnostics (timer) ---

    def status(self) -> dict[str, Any]:
        """What the status topic carries: the learning status plus this node's round errors."""
        status = self.learning.status_snapshot().to_dict()
        with self._lock:
            status["round_errors"] = self._round_errors
            status["last_round_error"] = self._last_round_error
        return status

    def _publish_status(self) -> None:
        status = self.status()
        self._status_publisher.publish(String(data=json_text(status)))
        self._publish_diagnostics(status)

    def _publish_diagnostics(self, status: dict[str, Any]) -> None:
        now = self.get_clock().now().nanoseconds
        with self._lock:
            last_failed = self._last_round_failed
            last_round = self._last_round
        decision = status.get("last_decision") or {}
        candidate = decision.get("candidate") or {}
        served = decision.get("current") or {}
        if last_failed:
            level, message = DiagnosticStatus.WARN, f"last round failed: {status['last_round_error']}"
        else:
            level, message = DiagnosticStatus.OK, str(status.get("state", ""))
        values = {
            "state": str(status.get("state", "")),
            "cpu priority": self.cpu_priority,
            "buffer samples": str(status.get("buffer_samples", 0)),
            "buffer holdout": str(status.get("holdout_samples", 0)),
            "buffer bytes": str(status.get("buffer_bytes", 0)),
            "steps done": str(status.get("steps_done", 0)),
            "rounds": str(status.get("rounds", 0)),
            "promotions": str(status.get("promotions", 0)),
            "rejections": str(status.get("rejections", 0)),
            "current version": str(status.get("current_version") or "none"),
            "last promotion": str(status.get("last_promotion", "")),
            "last decision": str(decision.get("reason", "")),
            "last candidate score": _score_text(candidate.get("score")),
            "last served score": _score_text(served.get("score")),
            "last round steps": str(last_round.steps) if last_round else "",
            "last round seconds": f"{last_round.seconds:.1f}" if last_round else "",
            "round errors": str(status["round_errors"]),
            "last round error": status["last_round_error"],
        }
        publish_diagnostic(
            self,
            self._diagnostics_publisher,
            header_message(now, "", self._types),
            "self-training",
            level,
            message,
            values,
        )

    def destroy_node(self) -> None:
        """Stops the training thread (between steps) and waits for it before the node goes."""
        self._stop.set()
        self._thread.join(SHUTDOWN_JOIN_TIMEOUT)
        if self._thread.is_alive():
            self.get_logger().warn(f"the training round did not stop within {SHUTDOWN_JOIN_TIMEOUT} s")
        super().destroy_node()


def _score_text(score: Any) -> str:
    return f"{score:.4f}" if isinstance(score, int | float) else ""


def main(args: list[str] | None = None) -> int:
    """Console script ``self_training_node``: ``ros2 run cups_ros self_training_node --ros-args ...``."""
    return spin_node(SelfTrainingNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
