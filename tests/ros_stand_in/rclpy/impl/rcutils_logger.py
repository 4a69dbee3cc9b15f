"""RcutilsLogger: named loggers with the once / skip_first / throttle filters of Humble.

Filter state is kept per logger and per call site (function, file, line), as rclpy does, so a
throttled warning in one place does not silence another. Every message that passes its filters and
the level is appended to ``RECORDS`` (stand-in only: what tests assert on) and forwarded to Python's
logging.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from typing import Any, NamedTuple

from rclpy.clock import Clock
from rclpy.impl.logging_severity import LoggingSeverity


class LogRecord(NamedTuple):
    logger: str
    severity: LoggingSeverity
    message: str


RECORDS: list[LogRecord] = []
_RECORDS_LOCK = threading.Lock()
_LEVELS: dict[str, LoggingSeverity] = {}
_PYTHON_LEVELS = {
    LoggingSeverity.DEBUG: logging.DEBUG,
    LoggingSeverity.INFO: logging.INFO,
    LoggingSeverity.WARN: logging.WARNING,
    LoggingSeverity.ERROR: logging.ERROR,
    LoggingSeverity.FATAL: logging.CRITICAL,
}
_SUPPORTED = {"throttle_duration_sec", "throttle_time_source_type", "skip_first", "once"}
_INTERNAL = (
    os.path.dirname(os.path.realpath(__file__)),
    os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "logging.py")),
)


def _caller_id() -> tuple[str, str, int]:
    frame = inspect.currentframe()
    while frame is not None and any(
        os.path.realpath(frame.f_code.co_filename).startswith(p) for p in _INTERNAL
    ):
        frame = frame.f_back
    assert frame is not None
    return frame.f_code.co_name, frame.f_code.co_filename, frame.f_lineno


class RcutilsLogger:
    def __init__(self, name: str = "") -> None:
        self.name = name
        self.contexts: dict[tuple[str, str, int], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get_child(self, name: str) -> RcutilsLogger:
        if not name:
            raise ValueError("Child logger name must not be empty.")
        return RcutilsLogger(name=f"{self.name}.{name}" if self.name else name)

    def set_level(self, level: int) -> None:
        _LEVELS[self.name] = LoggingSeverity(level)

    def get_effective_level(self) -> LoggingSeverity:
        name = self.name
        while name:
            if name in _LEVELS and _LEVELS[name] != LoggingSeverity.UNSET:
                return _LEVELS[name]
            name = name.rpartition(".")[0]
        return _LEVELS.get("", LoggingSeverity.INFO)

    def is_enabled_for(self, severity: int) -> bool:
        return LoggingSeverity(severity) >= self.get_effective_level()

    def log(self, message: str, severity: int, **kwargs: Any) -> bool:
        unknown = set(kwargs) - _SUPPORTED
        if unknown:
            raise TypeError(
                f'parameter "{sorted(unknown)[0]}" is not one of the recognized logging options '
                f'"{sorted(_SUPPORTED)}"'
            )
        severity = LoggingSeverity(severity)
        with self._lock:
            context = self.contexts.setdefault(
                _caller_id(), {"logged_once": False, "skipped_first": False, "last": None}
            )
            if kwargs.get("once"):
                if context["logged_once"]:
                    return False
                context["logged_once"] = True
            if kwargs.get("skip_first") and not context["skipped_first"]:
                context["skipped_first"] = True
                return False
            period = kwargs.get("throttle_duration_sec")
            if period is not None:
                clock = kwargs.get("throttle_time_source_type", Clock())
                if not isinstance(clock, Clock):
                    raise ValueError(f'Received throttle_time_source_type of "{clock}" is not a clock type')
                now = clock.now().nanoseconds
                if context["last"] is not None and now < context["last"] + period * 1e9:
                    return False
                context["last"] = now
        if not self.is_enabled_for(severity):
            return False
        with _RECORDS_LOCK:
            RECORDS.append(LogRecord(self.name, severity, str(message)))
        logging.getLogger(f"ros.{self.name}").log(_PYTHON_LEVELS[severity], "%s", message)
        return True

    def debug(self, message: str, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.DEBUG, **kwargs)

    def info(self, message: str, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.INFO, **kwargs)

    def warning(self, message: str, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.WARN, **kwargs)

    def warn(self, message: str, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.WARN, **kwargs)

    def error(self, message: str, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.ERROR, **kwargs)

    def fatal(self, message: str, **kwargs: Any) -> bool:
        return self.log(message, LoggingSeverity.FATAL, **kwargs)
