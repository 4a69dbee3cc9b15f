"""YAML configuration loaded into typed dataclasses, validated once at the edge.

One file serves both worlds: a ROS 2 parameter file (``/**: ros__parameters: {...}``, or a node name
instead of ``/**``) and a plain mapping for offline jobs. Nested dataclasses map to nested mappings,
which ROS 2 flattens to dotted parameter names (``sync.slop``); ``to_ros_parameters`` and
``from_ros_parameters`` convert between the two.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from cups_ros.core.files import write_text_atomic

T = TypeVar("T")

ROS_PARAMETERS_KEY = "ros__parameters"
ROS_WILDCARD_NODE = "/**"


class ConfigError(ValueError):
    """Invalid configuration; the message names the offending key."""


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _convert(value: Any, annotation: Any, key: str) -> Any:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{key}: {value!r} is not {_type_name(annotation)}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _from_mapping(annotation, value, key)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        try:
            return annotation(value)
        except ValueError:
            raise ConfigError(f"{key}: {value!r} is not one of {[m.value for m in annotation]}") from None
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(
                _convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item_type = args[0] if args else Any
        items = [_convert(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        key_type, value_type = args or (str, Any)
        return {_convert(k, key_type, key): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {type(value).__name__} {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{key}: expected a path string, got {type(value).__name__} {value!r}")
        return Path(value)
    raise ConfigError(f"{key}: unsupported field type {_type_name(annotation)}")


def _from_mapping(schema: type[T], data: Any, prefix: str) -> T:
    where = prefix or "configuration"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        names = ", ".join(f"{prefix}.{k}" if prefix else str(k) for k in unknown)
        raise ConfigError(f"unknown key {names} (known: {', '.join(sorted(fields))})")
    values = {}
    for name, field in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            values[name] = _convert(data[name], hints[name], key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {key}")
    try:
        return schema(**values)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def from_dict(schema: type[T], data: dict[str, Any]) -> T:
    """Builds the dataclass, raising ConfigError naming any unknown, missing or mistyped key."""
    return _from_mapping(schema, data, "")


def _unwrap_ros_parameters(document: Any, node_name: str | None, source: str) -> Any:
    if not isinstance(document, dict):
        return document
    sections = {
        name: body for name, body in document.items() if isinstance(body, dict) and ROS_PARAMETERS_KEY in body
    }
    if not sections:
        return document
    if len(sections) != len(document):
        others = sorted(set(document) - set(sections))
        raise ConfigError(f"{source}: keys {others} sit beside ros__parameters sections")
    for name in (node_name, f"/{node_name}" if node_name else None, ROS_WILDCARD_NODE):
        if name is not None and name in sections:
            return sections[name][ROS_PARAMETERS_KEY]
    raise ConfigError(
        f"{source}: no ros__parameters section for node {node_name or ROS_WILDCARD_NODE!r} "
        f"(sections: {sorted(sections)})"
    )


def load_config(schema: type[T], path: str | Path, node_name: str | None = None) -> T:
    """Loads a YAML file (plain or ROS 2 parameter file) into ``schema``."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if document is None:
        document = {}
    body = _unwrap_ros_parameters(document, node_name, str(path))
    try:
        return _from_mapping(schema, body, "")
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain YAML-ready mapping of a config dataclass (paths and enums as strings)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def to_ros_parameters(config: Any) -> dict[str, Any]:
    """Flat ``{dotted.name: value}`` as rclpy's declare_parameters takes them."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        else:
            flat[prefix] = value

    walk("", to_dict(config))
    return flat


def from_ros_parameters(schema: type[T], parameters: dict[str, Any]) -> T:
    """Inverse of ``to_ros_parameters``: dotted names back into nested dataclasses."""
    nested: dict[str, Any] = {}
    for name, value in parameters.items():
        node = nested
        *parents, leaf = name.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return from_dict(schema, nested)


def write_config(config: Any, path: str | Path, node_name: str | None = ROS_WILDCARD_NODE) -> None:
    """Writes atomically; as a ROS 2 parameter file unless node_name is None."""
    body = to_dict(config)
    document = {node_name: {ROS_PARAMETERS_KEY: body}} if node_name else body
    write_text_atomic(Path(path), yaml.safe_dump(document, sort_keys=False))


def apply_overrides(schema: type[T], config: T, overrides: list[str]) -> T:
    """``key.sub=value`` strings (values parsed as YAML) applied to a config, validated again."""
    data = to_dict(config)
    for override in overrides:
        key, separator, text = override.partition("=")
        if not separator or not key:
            raise ConfigError(f"override {override!r} is not key.sub=value")
        parts = key.split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {override!r}: {part!r} is not a section")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"override {override!r}: unknown key {key!r}")
        value = yaml.safe_load(text)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(text)  # YAML 1.1 reads 1e-3 (no dot) as a string
        node[parts[-1]] = value
    return from_dict(schema, data)
