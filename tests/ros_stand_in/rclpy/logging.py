"""rclpy.logging: get_logger and the severities."""

from __future__ import annotations

from rclpy.impl.logging_severity import LoggingSeverity
from rclpy.impl.rcutils_logger import RcutilsLogger

__all__ = ["LoggingSeverity", "get_logger", "get_logging_severity_from_string", "set_logger_level"]

_root_logger = RcutilsLogger()


def get_logger(name: str) -> RcutilsLogger:
    if not name:
        raise ValueError("Logger name must not be empty.")
    return _root_logger.get_child(name)


def set_logger_level(name: str, level: int) -> None:
    RcutilsLogger(name).set_level(level)


def get_logging_severity_from_string(log_severity: str) -> LoggingSeverity:
    return LoggingSeverity[log_severity.upper()]
