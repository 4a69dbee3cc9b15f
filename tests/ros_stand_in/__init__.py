"""Test-only stand-ins for rclpy, message_filters and the ROS 2 message packages (never installed).

ROS 2 cannot be installed where CI runs, yet the nodes must run there. This folder holds the slice of
the rclpy API (ROS 2 Humble) and of message_filters that the nodes use, with the real signatures and
semantics, checked against the real sources in tests/test_perception_node.py (signatures recorded as
data). The message packages (``sensor_msgs.msg`` ...) are the rosbags classes of the project's type
store (real ROS 2 message definitions); published messages go through real CDR serialization.

``installed()`` puts them in place for a block (a test's fixture): this folder goes first on sys.path,
the message modules into sys.modules, and modules imported under them are forgotten afterwards.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path

STAND_IN_PATH = Path(__file__).resolve().parent

# Top-level modules provided here (or imported on top of them) that must not outlive one test.
_STAND_IN_ROOTS = ("rclpy", "message_filters")
_DEPENDENT_MODULES = ("cups_ros.ros",)


def message_modules() -> dict[str, types.ModuleType]:
    """``<package>`` and ``<package>.msg`` modules for every message package of the type store."""
    from cups_ros.io.vision_msgs import typestore

    modules: dict[str, types.ModuleType] = {}
    for name, cls in typestore().types.items():
        package, kind, short_name = name.split("/")
        if kind != "msg":
            continue
        if package not in modules:
            modules[package] = types.ModuleType(package, f"stand-in for the ROS 2 package {package}")
            modules[package].__path__ = []  # a package, so that "<package>.msg" imports
            modules[f"{package}.msg"] = types.ModuleType(f"{package}.msg", f"{package} messages (rosbags)")
            modules[package].msg = modules[f"{package}.msg"]
        setattr(modules[f"{package}.msg"], short_name, cls)
    return modules


def _forget(prefixes: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            del sys.modules[name]


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Inside the block ``import rclpy`` / ``message_filters`` / ``sensor_msgs.msg`` ... resolve to
    the stand-ins; afterwards sys.path and sys.modules are as before (modules imported on top of the
    stand-ins, such as cups_ros.ros, are forgotten so that nothing keeps a stand-in alive)."""
    modules = message_modules()
    saved_path = list(sys.path)
    saved_modules = {name: sys.modules.get(name) for name in modules}
    _forget(_STAND_IN_ROOTS + _DEPENDENT_MODULES)
    sys.path.insert(0, str(STAND_IN_PATH))
    sys.modules.update(modules)
    try:
        yield
    finally:
        _forget(_STAND_IN_ROOTS + _DEPENDENT_MODULES)
        sys.path[:] = saved_path
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
