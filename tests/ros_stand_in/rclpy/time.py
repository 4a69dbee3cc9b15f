"""rclpy.time.Time: a point in time of one clock type (comparisons across clock types raise)."""

from __future__ import annotations

from typing import Any

import builtin_interfaces.msg
from rclpy.clock_type import ClockType
from rclpy.duration import Duration

CONVERSION_CONSTANT = 10**9


class Time:
    def __init__(
        self, *, seconds: float = 0, nanoseconds: int = 0, clock_type: ClockType = ClockType.SYSTEM_TIME
    ) -> None:
        if not isinstance(clock_type, ClockType):
            raise TypeError("Clock type must be a ClockType enum")
        if seconds < 0:
            raise ValueError("Seconds value must not be negative")
        if nanoseconds < 0:
            raise ValueError("Nanoseconds value must not be negative")
        total = int(seconds * CONVERSION_CONSTANT) + int(nanoseconds)
        if total >= 2**63:
            raise OverflowError("Total nanoseconds value is too large to store in C time point.")
        self._nanoseconds = total
        self._clock_type = clock_type

    @property
    def nanoseconds(self) -> int:
        return self._nanoseconds

    def seconds_nanoseconds(self) -> tuple[int, int]:
        return divmod(self._nanoseconds, CONVERSION_CONSTANT)

    @property
    def clock_type(self) -> ClockType:
        return self._clock_type

    def __repr__(self) -> str:
        return f"Time(nanoseconds={self._nanoseconds}, clock_type={self._clock_type.name})"

    def __add__(self, other: Duration) -> Time:
        if isinstance(other, Duration):
            return Time(nanoseconds=self._nanoseconds + other.nanoseconds, clock_type=self._clock_type)
        return NotImplemented

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        if isinstance(other, Time):
            if other.clock_type != self._clock_type:
                raise TypeError("Can't subtract times with different clock types")
            return Duration(nanoseconds=self._nanoseconds - other.nanoseconds)
        if isinstance(other, Duration):
            return Time(nanoseconds=self._nanoseconds - other.nanoseconds, clock_type=self._clock_type)
        return NotImplemented

    def _other(self, other: Any) -> int:
        if not isinstance(other, Time):
            raise TypeError("Can't compare time with object of type: ", type(other))
        if other.clock_type != self._clock_type:
            raise TypeError("Can't compare times with different clock types")
        return other._nanoseconds

    def __eq__(self, other: object) -> bool:
        return self._nanoseconds == self._other(other)

    def __hash__(self) -> int:
        return hash((self._nanoseconds, self._clock_type))

    def __lt__(self, other: Time) -> bool:
        return self._nanoseconds < self._other(other)

    def __le__(self, other: Time) -> bool:
        return self._nanoseconds <= self._other(other)

    def __gt__(self, other: Time) -> bool:
        return self._nanoseconds > self._other(other)

    def __ge__(self, other: Time) -> bool:
        return self._nanoseconds >= self._other(other)

    def to_msg(self) -> Any:
        seconds, nanoseconds = self.seconds_nanoseconds()
        return builtin_interfaces.msg.Time(sec=seconds, nanosec=nanoseconds)

    @classmethod
    def from_msg(cls, msg: Any, clock_type: ClockType = ClockType.ROS_TIME) -> Time:
        if not isinstance(msg, builtin_interfaces.msg.Time):
            raise TypeError("Must pass a builtin_interfaces.msg.Time object")
        return cls(seconds=msg.sec, nanoseconds=msg.nanosec, clock_type=clock_type)
