"""rclpy.timer.Timer: due when its clock reaches the next call time (ROS time under use_sim_time)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Timer:
    def __init__(
        self,
        callback: Callable[[], Any],
        callback_group: Any,
        timer_period_ns: int,
        clock: Any,
        *,
        context: Any = None,
    ) -> None:
        self._clock = clock
        self._context = context
        self.callback = callback
        self.callback_group = callback_group
        self.timer_period_ns = int(timer_period_ns)
        self._canceled = False
        self._last_call_ns = clock.now().nanoseconds
        self._next_call_ns = self._last_call_ns + self.timer_period_ns

    @property
    def clock(self) -> Any:
        return self._clock

    def is_ready(self) -> bool:
        return not self._canceled and self._clock.now().nanoseconds >= self._next_call_ns

    def is_canceled(self) -> bool:
        return self._canceled

    def cancel(self) -> None:
        self._canceled = True

    def reset(self) -> None:
        self._canceled = False
        self._last_call_ns = self._clock.now().nanoseconds
        self._next_call_ns = self._last_call_ns + self.timer_period_ns

    def _call(self) -> None:
        """rcl_timer_call: the next call is one period on, skipping periods already missed."""
        now = self._clock.now().nanoseconds
        self._last_call_ns = now
        self._next_call_ns += self.timer_period_ns
        if self._next_call_ns <= now and self.timer_period_ns:
            missed = (now - self._next_call_ns) // self.timer_period_ns + 1
            self._next_call_ns += missed * self.timer_period_ns
        self.callback()

    def time_until_next_call(self) -> int | None:
        if self._canceled:
            return None
        return self._next_call_ns - self._clock.now().nanoseconds

    def destroy(self) -> None:
        self._canceled = True
