"""rclpy.utilities: the default context and the global ok / shutdown / try_shutdown."""

from __future__ import annotations

import threading

from rclpy.context import Context

g_default_context: Context | None = None
g_context_lock = threading.Lock()


def get_default_context(*, shutting_down: bool = False) -> Context:
    global g_default_context
    with g_context_lock:
        if g_default_context is None:
            g_default_context = Context()
        context = g_default_context
        if shutting_down:
            g_default_context = None
        return context


def ok(*, context: Context | None = None) -> bool:
    if context is None:
        context = get_default_context()
    return context.ok()


def shutdown(*, context: Context | None = None) -> None:
    if context is None:
        context = get_default_context(shutting_down=True)
    return context.shutdown()


def try_shutdown(*, context: Context | None = None) -> None:
    """Shutdown rclpy if not already shutdown."""
    global g_default_context
    if context is None:
        with g_context_lock:
            if g_default_context is None:
                g_default_context = Context()
            g_default_context.try_shutdown()
            if not g_default_context.ok():
                g_default_context = None
        return None
    return context.try_shutdown()
