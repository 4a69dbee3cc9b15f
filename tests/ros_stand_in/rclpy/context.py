"""rclpy.context.Context, plus the stand-in's in-process ROS graph and command-line arguments.

Each initialized context owns one graph: the publishers and subscriptions of its nodes, matched by
fully qualified topic name, message type and QoS compatibility, as DDS matches them in one domain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class RosArguments:
    """What rcl takes from ``--ros-args ... [--]``: parameter files, -p overrides, -r remappings."""

    parameter_files: list[Path] = field(default_factory=list)
    parameters: list[tuple[str, Any]] = field(default_factory=list)
    remappings: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, args: list[str] | None, implicit_ros_args: bool = False) -> RosArguments:
        parsed = cls()
        inside = implicit_ros_args
        words = list(args or [])
        index = 0
        while index < len(words):
            word = words[index]
            index += 1
            if word == "--ros-args":
                inside = True
                continue
            if word == "--" and inside:
                inside = False
                continue
            if not inside:
                continue
            if word in ("-p", "--param", "-r", "--remap", "--params-file"):
                if index >= len(words):
                    raise RuntimeError(f"Couldn't parse trailing {word} flag. No argument given.")
                value = words[index]
                index += 1
                if word == "--params-file":
                    parsed.parameter_files.append(Path(value))
                    continue
                name, separator, text = value.partition(":=")
                if not separator:
                    raise RuntimeError(f"Couldn't parse {word} argument {value!r}: expected name:=value")
                if word in ("-p", "--param"):
                    parsed.parameters.append((name, yaml.safe_load(text)))
                else:
                    parsed.remappings.append((name, text))
        return parsed


def _flatten(prefix: str, values: Any, into: dict[str, Any]) -> None:
    if isinstance(values, dict):
        for key, value in values.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), value, into)
    else:
        into[prefix] = values


def parameters_from_file(path: Path, node_name: str, namespace: str) -> dict[str, Any]:
    """The parameters a node named ``namespace/node_name`` takes from an rcl parameter file."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    qualified = f"{namespace.rstrip('/')}/{node_name}"
    matching = ("/**", f"/**/{node_name}", node_name, qualified, qualified.lstrip("/"))
    values: dict[str, Any] = {}
    for section, body in document.items():
        if section in matching and isinstance(body, dict):
            _flatten("", body.get("ros__parameters", {}), values)
    return values


@dataclass
class _TopicHistory:
    """What a transient-local publisher keeps for subscriptions that join later."""

    messages: list[tuple[str, bytes]] = field(default_factory=list)


class Graph:
    """The publishers and subscriptions of one context; delivery happens under ``condition``."""

    def __init__(self) -> None:
        self.condition = threading.Condition(threading.RLock())
        self.publishers: list[Any] = []
        self.subscriptions: list[Any] = []

    def add_publisher(self, publisher: Any) -> None:
        with self.condition:
            self.publishers.append(publisher)
            for subscription in self.subscriptions:
                publisher._match(subscription)

    def add_subscription(self, subscription: Any) -> None:
        with self.condition:
            self.subscriptions.append(subscription)
            for publisher in self.publishers:
                publisher._match(subscription)
            self.condition.notify_all()

    def remove(self, entity: Any) -> None:
        with self.condition:
            for entities in (self.publishers, self.subscriptions):
                if entity in entities:
                    entities.remove(entity)
            for publisher in self.publishers:
                publisher._unmatch(entity)

    def notify(self) -> None:
        with self.condition:
            self.condition.notify_all()


class Context:
    """Encapsulates the lifecycle of init and shutdown (and, here, one in-process graph)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._initialized = False
        self._ok = False
        self._callbacks: list[Callable[[], None]] = []
        self.graph = Graph()
        self.arguments = RosArguments()

    def init(
        self, args: list[str] | None = None, *, initialize_logging: bool = True, domain_id: int | None = None
    ) -> None:
        with self._lock:
            if self._initialized:
                raise RuntimeError("Context.init() must only be called once")
            self.arguments = RosArguments.parse(args)
            self._initialized = True
            self._ok = True

    def ok(self) -> bool:
        with self._lock:
            return self._ok

    def _call_on_shutdown(self) -> None:
        for callback in self._callbacks:
            callback()
        self._callbacks = []
        self.graph.notify()

    def shutdown(self) -> None:
        with self._lock:
            if not self._initialized:
                raise RuntimeError("Context must be initialized before it can be shutdown")
            if not self._ok:
                raise RuntimeError("Context must be initialized before it can be shutdown")
            self._ok = False
        self._call_on_shutdown()

    def try_shutdown(self) -> None:
        with self._lock:
            if not self._ok:
                return
            self._ok = False
        self._call_on_shutdown()

    def on_shutdown(self, callback: Callable[[], None]) -> None:
        if not callable(callback):
            raise TypeError("callback should be a callable, got {}", type(callback))
        with self._lock:
            self._callbacks.append(callback)
