"""The clock types of rcl (rclpy exposes them as rclpy.clock.ClockType, from its C extension)."""

from __future__ import annotations

from enum import IntEnum


class ClockType(IntEnum):
    UNINITIALIZED = 0
    ROS_TIME = 1
    SYSTEM_TIME = 2
    STEADY_TIME = 3
