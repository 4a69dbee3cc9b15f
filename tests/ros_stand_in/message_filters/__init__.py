"""Stand-in for ROS 2 message_filters (Humble's Python API): Subscriber, TimeSynchronizer and
ApproximateTimeSynchronizer, with the same signatures and matching rules.

ApproximateTimeSynchronizer, as Humble's: each input keeps a queue of at most ``queue_size``
messages by stamp (the oldest goes first). When a message arrives, every other queue is searched for
stamps within ``slop`` of it, nearest first; the first combination whose stamps span strictly less
than ``slop`` is emitted and removed from the queues. Messages that never match stay until they are
pushed out by newer ones, and nothing is signalled for them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import rclpy.logging
from rclpy.clock import ROSClock
from rclpy.duration import Duration
from rclpy.time import Time

__all__ = ["ApproximateTimeSynchronizer", "SimpleFilter", "Subscriber", "TimeSynchronizer"]


class SimpleFilter:
    def __init__(self) -> None:
        self.callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}

    def registerCallback(self, cb: Callable[..., Any], *args: Any) -> int:  # noqa: N802 - the real name
        """Calls ``cb(*messages, *args)`` whenever this filter has output."""
        connection = len(self.callbacks)
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msg: Any) -> None:  # noqa: N802 - the real name
        for callback, args in self.callbacks.values():
            callback(*(msg + args))


class Subscriber(SimpleFilter):
    """A subscription as a filter: takes the arguments of Node.create_subscription but the callback,
    (node, msg_type, topic, **kwargs); ``qos_profile`` defaults to 10 as in Humble."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        SimpleFilter.__init__(self)
        self.node = args[0]
        self.topic = args[2]
        kwargs.setdefault("qos_profile", 10)
        self.sub = self.node.create_subscription(*args[1:], self.callback, **kwargs)

    def callback(self, msg: Any) -> None:
        self.signalMessage(msg)

    def getTopic(self) -> str:  # noqa: N802 - the real name
        return self.topic

    def __getattr__(self, key: str) -> Any:
        return self.sub.__getattribute__(key)


class TimeSynchronizer(SimpleFilter):
    """Emits the messages of all inputs that carry exactly the same stamp."""

    def __init__(self, fs: list[SimpleFilter], queue_size: int) -> None:
        SimpleFilter.__init__(self)
        self.connectInput(fs)
        self.queue_size = queue_size
        self.lock = threading.Lock()

    def connectInput(self, fs: list[SimpleFilter]) -> None:  # noqa: N802 - the real name
        self.queues: list[dict[int, Any]] = [{} for _ in fs]
        self.input_connections = [
            f.registerCallback(self.add, q, i) for i, (f, q) in enumerate(zip(fs, self.queues, strict=True))
        ]

    def _stamp(self, msg: Any) -> Time:
        return Time.from_msg(msg.header.stamp)

    def _store(self, stamp: Time, msg: Any, my_queue: dict[int, Any]) -> None:
        my_queue[stamp.nanoseconds] = msg
        while len(my_queue) > self.queue_size:
            del my_queue[min(my_queue)]

    def add(self, msg: Any, my_queue: dict[int, Any], my_queue_index: int | None = None) -> None:
        with self.lock:
            self._store(self._stamp(msg), msg, my_queue)
            common = set.intersection(*(set(queue) for queue in self.queues))
            for stamp in sorted(common):
                self.signalMessage(*(queue[stamp] for queue in self.queues))
                for queue in self.queues:
                    del queue[stamp]


class ApproximateTimeSynchronizer(TimeSynchronizer):
    """Emits one message per input whose stamps lie within ``slop`` seconds (see the module)."""

    def __init__(
        self, fs: list[SimpleFilter], queue_size: int, slop: float, allow_headerless: bool = False
    ) -> None:
        TimeSynchronizer.__init__(self, fs, queue_size)
        self.slop = Duration(seconds=slop)
        self.allow_headerless = allow_headerless

    def add(self, msg: Any, my_queue: dict[int, Any], my_queue_index: int | None = None) -> None:
        if not hasattr(msg, "header") or not hasattr(msg.header, "stamp"):
            if not self.allow_headerless:
                rclpy.logging.get_logger("message_filters_approx").warn(
                    "can not use message filters for messages without timestamp infomation when "
                    "'allow_headerless' is disabled."
                )
                return
            stamp = ROSClock().now()
        else:
            stamp = msg.header.stamp
            if not hasattr(stamp, "nanoseconds"):
                stamp = Time.from_msg(stamp)
        with self.lock:
            self._store(stamp, msg, my_queue)
            others = [index for index in range(len(self.queues)) if index != my_queue_index]
            candidates = []
            for index in others:
                near = sorted(
                    (abs(s - stamp.nanoseconds), s)
                    for s in self.queues[index]
                    if Duration(nanoseconds=abs(s - stamp.nanoseconds)) <= self.slop
                )
                if not near:
                    return
                candidates.append([s for _, s in near])
            for combination in itertools.product(*candidates):
                stamps = dict(zip(others, combination, strict=True))
                if my_queue_index is not None:
                    stamps[my_queue_index] = stamp.nanoseconds
                chosen = [stamps[index] for index in range(len(self.queues))]
                if Duration(nanoseconds=max(chosen) - min(chosen)) < self.slop and all(
                    s in queue for s, queue in zip(chosen, self.queues, strict=True)
                ):
                    messages = [queue[s] for s, queue in zip(chosen, self.queues, strict=True)]
                    self.signalMessage(*messages)
                    for s, queue in zip(chosen, self.queues, strict=True):
                        del queue[s]
                    return
