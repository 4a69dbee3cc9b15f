"""rclpy.subscription.Subscription: a queue (KEEP_LAST depth drops the oldest) taken by executors."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

from rclpy import _wire
from rclpy.qos import HistoryPolicy, QoSProfile


class Subscription:
    def __init__(
        self,
        graph: Any,
        msg_type: Any,
        topic: str,
        callback: Callable[[Any], None],
        qos_profile: QoSProfile,
        raw: bool,
    ) -> None:
        self._graph = graph
        self.msg_type = msg_type
        self.topic = topic
        self.callback = callback
        self.qos_profile = qos_profile
        self.raw = raw
        keep_all = qos_profile.history == HistoryPolicy.KEEP_ALL
        self._queue: collections.deque[bytes] = collections.deque(
            maxlen=None if keep_all else max(1, qos_profile.depth)
        )
        self.lost = 0  # stand-in only: messages pushed out of a full KEEP_LAST queue

    def _deliver(self, data: bytes) -> None:
        if self._queue.maxlen is not None and len(self._queue) == self._queue.maxlen:
            self.lost += 1
        self._queue.append(data)

    def _take(self) -> Any | None:
        with self._graph.condition:
            if not self._queue:
                return None
            data = self._queue.popleft()
        return data if self.raw else _wire.from_wire(data, self.msg_type.__msgtype__)

    def _ready(self) -> bool:
        return bool(self._queue)

    def destroy(self) -> None:
        self._graph.remove(self)
