"""Stand-in for rclpy (ROS 2 Humble): init / shutdown / spin, with the real signatures.

Only the slice the project's nodes use exists; see tests/ros_stand_in/__init__.py for what it is
and tests/test_perception_node.py for the signatures checked against the real sources.
"""

from __future__ import annotations

from typing import Any

from rclpy.context import Context
from rclpy.parameter import Parameter
from rclpy.utilities import get_default_context, ok, try_shutdown
from rclpy.utilities import shutdown as _shutdown

__all__ = [
    "Context",
    "Parameter",
    "create_node",
    "get_default_context",
    "get_global_executor",
    "init",
    "ok",
    "shutdown",
    "spin",
    "spin_once",
    "try_shutdown",
]

STAND_IN = True  # lets tests tell this from the real rclpy

__executor: Any = None


def init(
    *,
    args: list[str] | None = None,
    context: Context | None = None,
    domain_id: int | None = None,
    signal_handler_options: Any = None,
) -> None:
    context = get_default_context() if context is None else context
    context.init(args, domain_id=domain_id)


def get_global_executor() -> Any:
    global __executor
    if __executor is None:
        from rclpy.executors import SingleThreadedExecutor

        __executor = SingleThreadedExecutor()
        context = get_default_context()

        def reset_executor() -> None:
            global __executor
            __executor.shutdown()
            __executor = None

        context.on_shutdown(reset_executor)
    return __executor


def shutdown(*, context: Context | None = None, uninstall_handlers: bool | None = None) -> None:
    _shutdown(context=context)


def create_node(node_name: str, **kwargs: Any) -> Any:
    from rclpy.node import Node

    return Node(node_name, **kwargs)


def spin_once(node: Any, *, executor: Any = None, timeout_sec: float | None = None) -> None:
    executor = get_global_executor() if executor is None else executor
    try:
        executor.add_node(node)
        executor.spin_once(timeout_sec=timeout_sec)
    finally:
        executor.remove_node(node)


def spin(node: Any, executor: Any = None) -> None:
    executor = get_global_executor() if executor is None else executor
    try:
        executor.add_node(node)
        while executor.context.ok():
            executor.spin_once()
    finally:
        executor.remove_node(node)
