"""Stand-in only: what rclpy's generated message classes and its C layer do to a message on publish.

``check_message`` applies the type checks of rclpy's field setters (rosidl_generator_py, Humble):
float fields take Python floats (np.float32 is refused), integer fields Python ints in range,
unbounded numeric sequences array.array of the right typecode or a list/tuple/bytes of such values
(a numpy array is refused), fixed-size numeric arrays numpy arrays of the right dtype and size (or
lists), nested messages instances of their class. ``to_wire`` / ``from_wire`` serialize with real
CDR (rosbags, the real message definitions); received numeric sequences come back as array.array
and fixed-size arrays as numpy arrays, as rclpy hands them to callbacks.

Deviation: ``byte`` fields hold ints here (rosbags) where rclpy holds bytes of length one; the class
constants (``DiagnosticStatus.OK``) have the right type in both.
"""

from __future__ import annotations

import array
import dataclasses
from typing import Any

import numpy as np

_TYPECODES = {
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
_INTEGER_RANGES = {
    "int8": (-(2**7), 2**7),
    "uint8": (0, 2**8),
    "byte": (0, 2**8),
    "char": (0, 2**8),
    "int16": (-(2**15), 2**15),
    "uint16": (0, 2**16),
    "int32": (-(2**31), 2**31),
    "uint32": (0, 2**32),
    "int64": (-(2**63), 2**63),
    "uint64": (0, 2**64),
}


def _store() -> Any:
    from cups_ros.io.vision_msgs import typestore

    return typestore()


def _check_base(value: Any, base: str, where: str) -> None:
    if base in ("float32", "float64"):
        assert isinstance(value, float), (
            f"The '{where}' field must be of type 'float', got {type(value).__name__}"
        )
    elif base == "bool":
        assert isinstance(value, bool), (
            f"The '{where}' field must be of type 'bool', got {type(value).__name__}"
        )
    elif base in ("string", "wstring"):
        assert isinstance(value, str), (
            f"The '{where}' field must be of type 'str', got {type(value).__name__}"
        )
    elif base in _INTEGER_RANGES:
        if base == "byte" and isinstance(value, bytes) and len(value) == 1:
            return
        assert isinstance(value, int) and not isinstance(value, np.integer), (
            f"The '{where}' field must be of type 'int', got {type(value).__name__}"
        )
        low, high = _INTEGER_RANGES[base]
        assert low <= value < high, (
            f"The '{where}' field must be an integer in [{low}, {high - 1}], got {value}"
        )


def _check(value: Any, definition: tuple[Any, Any], where: str, store: Any) -> None:
    kind, detail = definition
    kind = kind.name
    if kind == "BASE":
        _check_base(value, detail[0], where)
    elif kind == "NAME":
        cls = store.types[detail]
        assert isinstance(value, cls), f"The '{where}' field must be a sub message of type '{cls.__name__}'"
        check_message(value, where, store)
    elif kind == "ARRAY":
        (item_kind, item_detail), size = detail
        base = item_detail[0] if item_kind.name == "BASE" else None
        if base in _TYPECODES and isinstance(value, np.ndarray):
            assert value.dtype == np.dtype(_TYPECODES[base]), (
                f"The '{where}' numpy.ndarray() must have the dtype of '{base}', got {value.dtype}"
            )
            assert value.size == size, f"The '{where}' numpy.ndarray() must have a size of {size}"
            return
        assert isinstance(value, list | tuple | np.ndarray) and len(value) == size, (
            f"The '{where}' field must be a set or sequence with length {size}"
        )
        for index, item in enumerate(value):
            _check(item, (item_kind, item_detail), f"{where}[{index}]", store)
    else:  # SEQUENCE
        (item_kind, item_detail), bound = detail
        base = item_detail[0] if item_kind.name == "BASE" else None
        if base in _TYPECODES and isinstance(value, array.array):
            assert value.typecode == _TYPECODES[base], (
                f"The '{where}' array.array() must have the type code of '{_TYPECODES[base]}'"
            )
            items: Any = []
        else:
            assert isinstance(value, list | tuple | bytes) and not isinstance(value, np.ndarray), (
                f"The '{where}' field must be a set or sequence (array.array, list, tuple), "
                f"got {type(value).__name__}"
            )
            items = value
        assert not bound or len(value) <= bound, f"The '{where}' field must have at most {bound} items"
        if base == "uint8" and isinstance(value, bytes):
            return
        for index, item in enumerate(items):
            _check(item, (item_kind, item_detail), f"{where}[{index}]", store)


def check_message(message: Any, where: str = "", store: Any = None) -> None:
    """Raises AssertionError (as rclpy's setters do) naming the first field of the wrong type."""
    store = store if store is not None else _store()
    _, fields = store.fielddefs[message.__msgtype__]
    for name, definition in fields:
        _check(getattr(message, name), definition, f"{where}.{name}" if where else name, store)


def _to_rosbags(value: Any, definition: tuple[Any, Any], store: Any) -> Any:
    kind, detail = definition
    kind = kind.name
    if kind == "BASE":
        if detail[0] == "byte" and isinstance(value, bytes):
            return value[0]
        return value
    if kind == "NAME":
        return _message_to_rosbags(value, store)
    (item_kind, item_detail), _ = detail
    if item_kind.name == "BASE":
        base = item_detail[0]
        if base in _TYPECODES:
            return np.asarray(value, dtype=np.dtype(_TYPECODES[base]).newbyteorder("="))
        if base == "bool" and kind == "ARRAY":
            return np.asarray(value, dtype=bool)
        return list(value)
    return [_to_rosbags(item, (item_kind, item_detail), store) for item in value]


def _message_to_rosbags(message: Any, store: Any) -> Any:
    _, fields = store.fielddefs[message.__msgtype__]
    values = {name: _to_rosbags(getattr(message, name), definition, store) for name, definition in fields}
    return dataclasses.replace(message, **values)


def _to_rclpy(value: Any, definition: tuple[Any, Any], store: Any) -> Any:
    kind, detail = definition
    kind = kind.name
    if kind == "BASE":
        return value
    if kind == "NAME":
        return _message_to_rclpy(value, store)
    (item_kind, item_detail), _ = detail
    if item_kind.name == "BASE":
        base = item_detail[0]
        if kind == "SEQUENCE" and base in _TYPECODES:
            return array.array(_TYPECODES[base], np.asarray(value).tobytes())
        return value
    return [_to_rclpy(item, (item_kind, item_detail), store) for item in value]


def _message_to_rclpy(message: Any, store: Any) -> Any:
    _, fields = store.fielddefs[message.__msgtype__]
    return dataclasses.replace(
        message, **{name: _to_rclpy(getattr(message, name), definition, store) for name, definition in fields}
    )


def to_wire(message: Any) -> bytes:
    """Real CDR bytes of a (checked) message."""
    store = _store()
    check_message(message, store=store)
    return bytes(store.serialize_cdr(_message_to_rosbags(message, store), message.__msgtype__))


def from_wire(data: bytes, msgtype: str) -> Any:
    """The message a subscription callback receives (a fresh object, rclpy's containers)."""
    store = _store()
    return _message_to_rclpy(store.deserialize_cdr(data, msgtype), store)
