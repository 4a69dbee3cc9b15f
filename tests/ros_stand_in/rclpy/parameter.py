"""rclpy.parameter.Parameter: a typed value; the type is inferred from the value as Humble does."""

from __future__ import annotations

import array
from enum import Enum
from typing import Any

from rcl_interfaces.msg import ParameterType

PARAMETER_SEPARATOR_STRING = "."


class Parameter:
    class Type(Enum):
        NOT_SET = ParameterType.PARAMETER_NOT_SET
        BOOL = ParameterType.PARAMETER_BOOL
        INTEGER = ParameterType.PARAMETER_INTEGER
        DOUBLE = ParameterType.PARAMETER_DOUBLE
        STRING = ParameterType.PARAMETER_STRING
        BYTE_ARRAY = ParameterType.PARAMETER_BYTE_ARRAY
        BOOL_ARRAY = ParameterType.PARAMETER_BOOL_ARRAY
        INTEGER_ARRAY = ParameterType.PARAMETER_INTEGER_ARRAY
        DOUBLE_ARRAY = ParameterType.PARAMETER_DOUBLE_ARRAY
        STRING_ARRAY = ParameterType.PARAMETER_STRING_ARRAY

        @classmethod
        def from_parameter_value(cls, parameter_value: Any) -> Parameter.Type:
            """As Humble: note that an empty list is a BYTE_ARRAY (every item of [] is bytes)."""
            if parameter_value is None:
                return Parameter.Type.NOT_SET
            if isinstance(parameter_value, bool):
                return Parameter.Type.BOOL
            if isinstance(parameter_value, int):
                return Parameter.Type.INTEGER
            if isinstance(parameter_value, float):
                return Parameter.Type.DOUBLE
            if isinstance(parameter_value, str):
                return Parameter.Type.STRING
            if isinstance(parameter_value, list | tuple | array.array):
                for item_type, parameter_type in (
                    (bytes, Parameter.Type.BYTE_ARRAY),
                    (bool, Parameter.Type.BOOL_ARRAY),
                    (int, Parameter.Type.INTEGER_ARRAY),
                    (float, Parameter.Type.DOUBLE_ARRAY),
                    (str, Parameter.Type.STRING_ARRAY),
                ):
                    if all(isinstance(v, item_type) for v in parameter_value):
                        return parameter_type
                raise TypeError(
                    f"The given value is not a list of one of the allowed types '{parameter_value}'."
                )
            raise TypeError(f"The given value is not one of the allowed types '{parameter_value}'.")

        def check(self, parameter_value: Any) -> bool:
            sequence = isinstance(parameter_value, list | tuple)
            checks = {
                Parameter.Type.NOT_SET: lambda v: v is None,
                Parameter.Type.BOOL: lambda v: isinstance(v, bool),
                Parameter.Type.INTEGER: lambda v: isinstance(v, int),
                Parameter.Type.DOUBLE: lambda v: isinstance(v, float),
                Parameter.Type.STRING: lambda v: isinstance(v, str),
                Parameter.Type.BYTE_ARRAY: lambda v: (
                    sequence and all(isinstance(i, bytes) and len(i) == 1 for i in v)
                ),
                Parameter.Type.BOOL_ARRAY: lambda v: sequence and all(isinstance(i, bool) for i in v),
                Parameter.Type.INTEGER_ARRAY: lambda v: (
                    (sequence or isinstance(v, array.array)) and all(isinstance(i, int) for i in v)
                ),
                Parameter.Type.DOUBLE_ARRAY: lambda v: (
                    (sequence or isinstance(v, array.array)) and all(isinstance(i, float) for i in v)
                ),
                Parameter.Type.STRING_ARRAY: lambda v: sequence and all(isinstance(i, str) for i in v),
            }
            return checks[self](parameter_value)

    def __init__(self, name: str, type_: Parameter.Type | None = None, value: Any = None) -> None:
        if type_ is None:
            type_ = Parameter.Type.from_parameter_value(value)
        if not isinstance(type_, Parameter.Type):
            raise TypeError(f"type must be an instance of '{Parameter.Type!r}'")
        if not type_.check(value):
            raise ValueError(f"Type '{type_}' and value '{value}' do not agree")
        self._type_ = type_
        self._name = name
        self._value = value

    @property
    def name(self) -> str:
        return self._name

    @property
    def type_(self) -> Parameter.Type:
        return self._type_

    @property
    def value(self) -> Any:
        return self._value

    def __repr__(self) -> str:
        return f"Parameter({self._name!r}, {self._type_}, {self._value!r})"
