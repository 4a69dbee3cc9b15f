"""rclpy.clock: Clock and ROSClock (ROS time follows /clock while use_sim_time is true)."""

from __future__ import annotations

import time as _time

from rclpy.clock_type import ClockType
from rclpy.time import Time

__all__ = ["Clock", "ClockType", "ROSClock"]


class Clock:
    def __new__(cls, *, clock_type: ClockType = ClockType.SYSTEM_TIME) -> Clock:
        if not isinstance(clock_type, ClockType):
            raise TypeError("Clock type must be a ClockType enum")
        if clock_type is ClockType.ROS_TIME:
            self: Clock = super().__new__(ROSClock)
        else:
            self = super().__new__(cls)
        self._clock_type = clock_type
        self._ros_time_is_active = False
        self._ros_time_override = Time(clock_type=ClockType.ROS_TIME)
        return self

    @property
    def clock_type(self) -> ClockType:
        return self._clock_type

    def __repr__(self) -> str:
        return f"Clock(clock_type={self._clock_type.name})"

    def now(self) -> Time:
        if self._clock_type is ClockType.ROS_TIME and self._ros_time_is_active:
            return Time(nanoseconds=self._ros_time_override.nanoseconds, clock_type=ClockType.ROS_TIME)
        if self._clock_type is ClockType.STEADY_TIME:
            return Time(nanoseconds=_time.monotonic_ns(), clock_type=self._clock_type)
        return Time(nanoseconds=_time.time_ns(), clock_type=self._clock_type)


class ROSClock(Clock):
    def __new__(cls) -> ROSClock:
        return super().__new__(Clock, clock_type=ClockType.ROS_TIME)  # type: ignore[return-value]

    @property
    def ros_time_is_active(self) -> bool:
        return self._ros_time_is_active

    def _set_ros_time_is_active(self, enabled: bool) -> None:
        self._ros_time_is_active = enabled

    def set_ros_time_override(self, time: Time) -> None:
        if not isinstance(time, Time):
            raise TypeError("Time must be specified as rclpy.time.Time")
        self._ros_time_override = time
