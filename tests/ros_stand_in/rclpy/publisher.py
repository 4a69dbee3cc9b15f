"""rclpy.publisher.Publisher: publish() type-checks, serializes (CDR) and delivers to matched
subscriptions; a transient-local publisher keeps its last ``depth`` messages for late joiners."""

from __future__ import annotations

import collections
from typing import Any

from rclpy import _wire
from rclpy.qos import DurabilityPolicy, QoSProfile, _compatible


class Publisher:
    def __init__(self, graph: Any, msg_type: Any, topic: str, qos_profile: QoSProfile) -> None:
        self._graph = graph
        self.msg_type = msg_type
        self.topic = topic
        self.qos_profile = qos_profile
        self._subscriptions: list[Any] = []
        self._history: collections.deque[bytes] = collections.deque(maxlen=max(1, qos_profile.depth))
        self._transient_local = qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
        self.published = 0  # stand-in only

    def _match(self, subscription: Any) -> None:
        if subscription.topic != self.topic or subscription in self._subscriptions:
            return
        if subscription.msg_type.__msgtype__ != self.msg_type.__msgtype__:
            return  # DDS: a type mismatch on one topic never matches
        if not _compatible(self.qos_profile, subscription.qos_profile)[0]:
            return
        self._subscriptions.append(subscription)
        if self._transient_local and subscription.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL:
            for data in self._history:
                subscription._deliver(data)

    def _unmatch(self, subscription: Any) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def publish(self, msg: Any) -> None:
        """Send a message to the topic; TypeError if it is not an instance of the publisher's type."""
        if isinstance(msg, self.msg_type):
            data = _wire.to_wire(msg)
        elif isinstance(msg, bytes):
            data = msg
        else:
            raise TypeError(f"Expected {self.msg_type}, got {type(msg)}")
        with self._graph.condition:
            self.published += 1
            if self._transient_local:
                self._history.append(data)
            for subscription in self._subscriptions:
                subscription._deliver(data)
            self._graph.condition.notify_all()

    def get_subscription_count(self) -> int:
        with self._graph.condition:
            return len(self._subscriptions)

    def destroy(self) -> None:
        self._graph.remove(self)
