"""rclpy.exceptions: the parameter exceptions the stand-in raises (names and bases as in Humble)."""

from __future__ import annotations

from typing import Any


class NotInitializedException(Exception):  # noqa: N818 - rclpy's name
    """Raised when rclpy is used before rclpy.init()."""

    def __init__(self, *args: Any) -> None:
        Exception.__init__(self, "rclpy.init() has not been called", *args)


class InvalidHandle(Exception):  # noqa: N818 - rclpy's name
    pass


class ParameterException(Exception):  # noqa: N818 - rclpy's name
    """Base of the parameter exceptions."""

    def __init__(self, error: str, parameters: Any, *args: Any) -> None:
        Exception.__init__(self, error, "parameters:", parameters, *args)


class ParameterNotDeclaredException(ParameterException):
    def __init__(self, parameters: Any, *args: Any) -> None:
        ParameterException.__init__(self, "Invalid access to undeclared parameter(s)", parameters, *args)


class ParameterAlreadyDeclaredException(ParameterException):
    def __init__(self, parameters: Any, *args: Any) -> None:
        ParameterException.__init__(self, "Parameter(s) already declared", parameters, *args)


class InvalidParameterException(ParameterException):
    def __init__(self, parameter: Any, *args: Any) -> None:
        Exception.__init__(self, "Invalid parameter name", parameter, *args)


class InvalidParameterValueException(ParameterException):
    def __init__(self, parameter: Any, value: Any, reason: str, *args: Any) -> None:
        Exception.__init__(
            self,
            f"Invalid parameter value ({value}) for parameter. Reason: {reason}",
            parameter,
            *args,
        )


class InvalidParameterTypeException(ParameterException):
    def __init__(self, desired_parameter: Any, expected_type: str, *args: Any) -> None:
        Exception.__init__(
            self,
            f"Trying to set parameter '{desired_parameter._name}' to '{desired_parameter._value}' of type "
            f"'{desired_parameter._type_.name}', expecting type '{expected_type}'",
            *args,
        )
        self.parameter_name = desired_parameter._name
        self.desired_type = desired_parameter._type_
        self.expected_type = expected_type


class ParameterUninitializedException(ParameterException):
    def __init__(self, parameter_name: str, *args: Any) -> None:
        Exception.__init__(self, f"The parameter '{parameter_name}' is not initialized", *args)
        self.parameter_name = parameter_name


class ParameterImmutableException(ParameterException):
    def __init__(self, parameters: Any, *args: Any) -> None:
        Exception.__init__(self, "Attempted to modify read-only parameter", parameters, *args)
