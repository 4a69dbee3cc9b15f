"""What the rclpy nodes share: typed parameters from a config dataclass, QoS from the config, a clean
start-up failure, and the entry point that spins a node.

Why a start-up failure is its own exception: a node that cannot run (invalid parameters, a missing
pseudo-label fit, no model to train from) says why in one fatal log line and its console script
exits with a non-zero code, instead of printing a Python traceback that buries the reason.
"""

from __future__ import annotations

import array
import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from cups_ros.core.config import ConfigError, from_ros_parameters, to_ros_parameters
from cups_ros.pipeline.perception import QosConfig

ConfigType = TypeVar("ConfigType")

EXIT_OK = 0
EXIT_STARTUP_FAILED = 1

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


class NodeStartupError(RuntimeError):
    """The node cannot run; the reason has already been logged as fatal."""


def qos_profile(config: QosConfig, durability: DurabilityPolicy = DurabilityPolicy.VOLATILE) -> QoSProfile:
    """KEEP_LAST QoS from the config (the input default equals qos_profile_sensor_data)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=config.depth,
        reliability=_RELIABILITY[config.reliability],
        durability=durability,
    )


def latched_qos() -> QoSProfile:
    """Reliable, transient local, depth 1: late subscribers get the last message (label_info)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def plain_parameter_value(value: Any) -> Any:
    """Parameter values as the typed config reads them (rclpy may hand arrays as array.array)."""
    return list(value) if isinstance(value, array.array | tuple) else value


def declare_config(node: Node, schema: type[ConfigType], what: str) -> ConfigType:
    """Declares every field of ``schema`` with its code default (overrides: parameter files, -p, launch)
    and validates the result once; a parameter of the wrong type or an invalid value is logged as
    fatal with its name and raises NodeStartupError."""
    defaults = to_ros_parameters(schema())
    try:
        declared = node.declare_parameters("", list(defaults.items()))
        values = {parameter.name: plain_parameter_value(parameter.value) for parameter in declared}
        return from_ros_parameters(schema, values)
    except (ConfigError, ValueError, ParameterException) as error:
        node.get_logger().fatal(f"invalid {what} parameters: {error}")
        raise NodeStartupError(str(error)) from error


def json_safe(value: Any) -> Any:
    """Non-finite floats as None, so that the text is strict JSON (NaN is not)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def json_text(value: Any) -> str:
    return json.dumps(json_safe(value), sort_keys=True, default=str)


def spin_node(make_node: Callable[[], Node], args: list[str] | None = None) -> int:
    """rclpy.init, build the node, spin until shutdown; the process exit code (1: could not start)."""
    rclpy.init(args=args)
    node = None
    code = EXIT_OK
    try:
        node = make_node()
        rclpy.spin(node)
    except NodeStartupError:
        code = EXIT_STARTUP_FAILED
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def subscribe_stereo(
    node: Node,
    topics: Any,
    input_qos: QosConfig,
    sync: Any,
    on_input: Callable[[Any, str], None],
    on_stereo: Callable[..., None],
) -> tuple[list[Any], Any]:
    """Left/right Image + CameraInfo through one ApproximateTimeSynchronizer; ``on_input`` counts
    every message by input name (before pairing), ``on_stereo`` gets each matched set."""
    import message_filters
    from sensor_msgs.msg import CameraInfo, Image

    profile = qos_profile(input_qos)
    filters = [
        message_filters.Subscriber(node, Image, topics.left_image, qos_profile=profile),
        message_filters.Subscriber(node, CameraInfo, topics.left_info, qos_profile=profile),
        message_filters.Subscriber(node, Image, topics.right_image, qos_profile=profile),
        message_filters.Subscriber(node, CameraInfo, topics.right_info, qos_profile=profile),
    ]
    for subscriber, name in zip(
        filters, ("left image", "left info", "right image", "right info"), strict=True
    ):
        subscriber.registerCallback(on_input, name)
    synchronizer = message_filters.ApproximateTimeSynchronizer(filters, sync.queue_size, sync.slop)
    synchronizer.registerCallback(on_stereo)
    return filters, synchronizer


def publish_diagnostic(
    node: Node,
    publisher: Any,
    header: Any,
    task: str,
    level: Any,
    message: str,
    values: dict[str, str],
) -> None:
    """One DiagnosticStatus named "<node>: <task>" in a DiagnosticArray on /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    status = DiagnosticStatus(
        level=level,
        name=f"{node.get_name()}: {task}",
        message=message,
        hardware_id=node.get_fully_qualified_name(),
        values=[KeyValue(key=key, value=value) for key, value in values.items()],
    )
    publisher.publish(DiagnosticArray(header=header, status=[status]))
