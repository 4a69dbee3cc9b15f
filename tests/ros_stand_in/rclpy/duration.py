"""rclpy.duration.Duration: a signed span with nanosecond precision."""

from __future__ import annotations

from typing import Any

S_TO_NS = 1000 * 1000 * 1000


class Duration:
    def __init__(self, *, seconds: float = 0, nanoseconds: int = 0) -> None:
        total = int(seconds * S_TO_NS) + int(nanoseconds)
        if total >= 2**63 or total < -(2**63):
            raise OverflowError("Total nanoseconds value is too large to store in C duration.")
        self._nanoseconds = total

    @property
    def nanoseconds(self) -> int:
        return self._nanoseconds

    def __repr__(self) -> str:
        return f"Duration(nanoseconds={self._nanoseconds})"

    def _other(self, other: Any) -> int:
        if not isinstance(other, Duration):
            raise TypeError("Can't compare duration with object of type: ", type(other))
        return other._nanoseconds

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and self._nanoseconds == other._nanoseconds

    def __hash__(self) -> int:
        return hash(self._nanoseconds)

    def __lt__(self, other: Duration) -> bool:
        return self._nanoseconds < self._other(other)

    def __le__(self, other: Duration) -> bool:
        return self._nanoseconds <= self._other(other)

    def __gt__(self, other: Duration) -> bool:
        return self._nanoseconds > self._other(other)

    def __ge__(self, other: Duration) -> bool:
        return self._nanoseconds >= self._other(other)

    def to_msg(self) -> Any:
        from builtin_interfaces.msg import Duration as DurationMessage

        seconds, nanoseconds = divmod(self._nanoseconds, S_TO_NS)
        return DurationMessage(sec=seconds, nanosec=nanoseconds)
