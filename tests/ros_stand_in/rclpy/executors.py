"""rclpy.executors: executors that take one ready callback per spin_once (subscriptions with a
message, due timers) from the nodes added to them, round robin."""

from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.utilities import get_default_context

__all__ = ["Executor", "ExternalShutdownException", "MultiThreadedExecutor", "SingleThreadedExecutor"]

_IDLE_WAKE_S = 0.005  # timers on a clock that nothing notifies: look again this often


class ExternalShutdownException(Exception):  # noqa: N818 - rclpy's name
    """Context has been shutdown."""


class Executor:
    def __init__(self, *, context: Any = None) -> None:
        self._context = get_default_context() if context is None else context
        self._nodes: list[Any] = []
        self._nodes_lock = threading.RLock()
        self._is_shutdown = False
        self._turn = 0

    @property
    def context(self) -> Any:
        return self._context

    def add_node(self, node: Any) -> bool:
        with self._nodes_lock:
            if node not in self._nodes:
                self._nodes.append(node)
                node.executor = self
                return True
            return False

    def remove_node(self, node: Any) -> None:
        with self._nodes_lock:
            if node in self._nodes:
                self._nodes.remove(node)

    def get_nodes(self) -> list[Any]:
        with self._nodes_lock:
            return list(self._nodes)

    def wake(self) -> None:
        self._context.graph.notify()

    def shutdown(self, timeout_sec: float | None = None) -> bool:
        self._is_shutdown = True
        with self._nodes_lock:
            for node in self._nodes:
                node.executor = None
            self._nodes = []
        self.wake()
        return True

    def _ready_work(self) -> Any:
        """The next ready callback as a zero-argument function, or None."""
        with self._nodes_lock:
            entities = [e for node in self._nodes for e in (*node._timers, *node._subscriptions)]
        if not entities:
            return None
        count = len(entities)
        for offset in range(count):
            entity = entities[(self._turn + offset) % count]
            if hasattr(entity, "_take") and entity._ready():
                self._turn = (self._turn + offset + 1) % count
                message = entity._take()
                if message is None:
                    continue
                return lambda entity=entity, message=message: entity.callback(message)
            if hasattr(entity, "_call") and entity.is_ready():
                self._turn = (self._turn + offset + 1) % count
                return entity._call
        return None

    def spin_once(self, timeout_sec: float | None = None) -> None:
        """Wait for and execute one callback; None or negative waits forever, 0 does not wait."""
        deadline = None if timeout_sec is None or timeout_sec < 0 else time.monotonic() + timeout_sec
        graph = self._context.graph
        while True:
            if not self._context.ok() or self._is_shutdown:
                raise ExternalShutdownException()
            work = self._ready_work()
            if work is not None:
                work()
                return
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            with graph.condition:
                graph.condition.wait(_IDLE_WAKE_S if remaining is None else min(remaining, _IDLE_WAKE_S))

    def spin(self) -> None:
        while self._context.ok() and not self._is_shutdown:
            self.spin_once()


class SingleThreadedExecutor(Executor):
    def __init__(self, *, context: Any = None) -> None:
        super().__init__(context=context)


class MultiThreadedExecutor(Executor):
    """Runs callbacks one at a time here (the stand-in has no callback groups)."""

    def __init__(self, num_threads: int | None = None, *, context: Any = None) -> None:
        super().__init__(context=context)
        self._num_threads = num_threads or 1
