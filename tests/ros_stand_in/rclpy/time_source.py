"""rclpy.time_source.TimeSource: declares use_sim_time and, while it is true, drives the node's
ROS clock from /clock (QoS depth 1, best effort, as Humble subscribes)."""

from __future__ import annotations

import weakref
from typing import Any

import rosgraph_msgs.msg
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import ROSClock
from rclpy.clock_type import ClockType
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.time import Time

CLOCK_TOPIC = "/clock"
USE_SIM_TIME_NAME = "use_sim_time"


class TimeSource:
    def __init__(self, *, node: Any = None) -> None:
        self._clock_sub = None
        self._node_weak_ref: Any = None
        self._associated_clocks: list[ROSClock] = []
        self._last_time_set = Time(clock_type=ClockType.ROS_TIME)
        self._ros_time_is_active = False
        if node is not None:
            self.attach_node(node)

    @property
    def ros_time_is_active(self) -> bool:
        return self._ros_time_is_active

    @ros_time_is_active.setter
    def ros_time_is_active(self, enabled: bool) -> None:
        if self._ros_time_is_active == enabled:
            return
        self._ros_time_is_active = enabled
        for clock in self._associated_clocks:
            clock._set_ros_time_is_active(enabled)
        node = self._node_weak_ref() if self._node_weak_ref else None
        if enabled and self._clock_sub is None and node is not None:
            self._clock_sub = node.create_subscription(
                rosgraph_msgs.msg.Clock,
                CLOCK_TOPIC,
                self.clock_callback,
                QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT),
            )
        elif not enabled and self._clock_sub is not None and node is not None:
            node.destroy_subscription(self._clock_sub)
            self._clock_sub = None

    def attach_node(self, node: Any) -> None:
        self._node_weak_ref = weakref.ref(node)
        if not node.has_parameter(USE_SIM_TIME_NAME):
            node.declare_parameter(USE_SIM_TIME_NAME, False)
        parameter = node.get_parameter(USE_SIM_TIME_NAME)
        if parameter.type_ == Parameter.Type.BOOL:
            self.ros_time_is_active = parameter.value
        elif parameter.type_ != Parameter.Type.NOT_SET:
            node.get_logger().error(
                f"Invalid type for parameter '{USE_SIM_TIME_NAME}' {parameter.type_!r} should be bool"
            )
        node.add_on_set_parameters_callback(self._on_parameter_event)

    def attach_clock(self, clock: ROSClock) -> None:
        if not isinstance(clock, ROSClock):
            raise ValueError("Only clocks with type ROS_TIME can be attached.")
        clock.set_ros_time_override(self._last_time_set)
        clock._set_ros_time_is_active(self.ros_time_is_active)
        self._associated_clocks.append(clock)

    def clock_callback(self, msg: Any) -> None:
        self._last_time_set = Time.from_msg(msg.clock)
        for clock in self._associated_clocks:
            clock.set_ros_time_override(self._last_time_set)

    def _on_parameter_event(self, parameter_list: list[Parameter]) -> Any:
        successful = True
        reason = ""
        for parameter in parameter_list:
            if parameter.name != USE_SIM_TIME_NAME:
                continue
            if parameter.type_ == Parameter.Type.BOOL:
                self.ros_time_is_active = parameter.value
            else:
                successful, reason = False, f"{USE_SIM_TIME_NAME} parameter set to something besides a bool"
        return SetParametersResult(successful=successful, reason=reason)
