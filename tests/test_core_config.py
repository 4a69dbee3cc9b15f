"""Typed YAML configuration: one file for ROS parameters and offline jobs; errors name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from cups_ros.core.config import (
    ConfigError,
    from_dict,
    from_ros_parameters,
    load_config,
    to_ros_parameters,
    write_config,
)


@dataclass(frozen=True)
class SyncConfig:
    queue_size: int = 10
    slop_s: float = 0.01

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, got {self.queue_size}")


@dataclass(frozen=True)
class NodeConfig:
    model_path: Path
    backend: Literal["torch", "onnxruntime", "tensorrt"] = "onnxruntime"
    input_size: tuple[int, int] = (512, 1024)
    class_names: list[str] = field(default_factory=list)
    score_threshold: float | None = None
    publish_depth: bool = False
    sync: SyncConfig = field(default_factory=SyncConfig)


ROS_FILE = """
/**:
  ros__parameters:
    model_path: /opt/models/cups.onnx
    backend: tensorrt
    input_size: [256, 512]
    sync:
      queue_size: 5
      slop_s: 0.02
"""


def test_ros_parameter_file_and_plain_file_give_the_same_config(tmp_path):
    ros_file = tmp_path / "ros.yaml"
    ros_file.write_text(ROS_FILE)
    plain_file = tmp_path / "plain.yaml"
    plain_file.write_text(
        "model_path: /opt/models/cups.onnx\nbackend: tensorrt\ninput_size: [256, 512]\n"
        "sync: {queue_size: 5, slop_s: 0.02}\n"
    )
    from_ros = load_config(NodeConfig, ros_file)
    assert from_ros == load_config(NodeConfig, plain_file)
    assert from_ros.model_path == Path("/opt/models/cups.onnx")
    assert from_ros.input_size == (256, 512)
    assert from_ros.sync == SyncConfig(queue_size=5, slop_s=0.02)


def test_node_named_section_wins_over_wildcard(tmp_path):
    path = tmp_path / "nodes.yaml"
    path.write_text(
        "/**:\n  ros__parameters: {model_path: a.onnx}\n"
        "perception_node:\n  ros__parameters: {model_path: b.onnx}\n"
    )
    assert load_config(NodeConfig, path, node_name="perception_node").model_path == Path("b.onnx")
    assert load_config(NodeConfig, path, node_name="other").model_path == Path("a.onnx")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model_path": "m", "bakend": "torch"}, "unknown key bakend"),
        ({"model_path": "m", "sync": {"slop": 0.1}}, "unknown key sync.slop"),
        ({"model_path": "m", "sync": {"queue_size": "5"}}, r"sync.queue_size: expected an integer"),
        ({"model_path": "m", "sync": {"queue_size": 2.5}}, r"sync.queue_size: expected an integer"),
        ({"model_path": "m", "publish_depth": 1}, "publish_depth: expected true/false"),
        ({"model_path": "m", "backend": "tensorflow"}, "backend: 'tensorflow' is not one of"),
        ({"model_path": "m", "input_size": [1, 2, 3]}, r"input_size: expected 2 items"),
        ({"model_path": "m", "class_names": ["c00", 1]}, r"class_names\[1\]: expected a string"),
        ({"model_path": "m", "score_threshold": "high"}, "score_threshold"),
        ({"model_path": "m", "sync": {"queue_size": 0}}, "sync: queue_size must be at least 1"),
        ({}, "missing key model_path"),
    ],
)
def test_invalid_configuration_names_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(NodeConfig, data)


def test_integers_are_accepted_for_floats_and_none_for_optionals():
    config = from_dict(NodeConfig, {"model_path": "m", "sync": {"slop_s": 1}, "score_threshold": None})
    assert config.sync.slop_s == 1.0 and isinstance(config.sync.slop_s, float)
    assert config.score_threshold is None


def test_flat_ros_parameters_round_trip(tmp_path):
    config = from_dict(NodeConfig, {"model_path": "m.onnx", "class_names": ["c00", "c01"]})
    flat = to_ros_parameters(config)
    assert flat["sync.queue_size"] == 10 and flat["model_path"] == "m.onnx"
    assert from_ros_parameters(NodeConfig, flat) == config
    path = tmp_path / "out" / "written.yaml"
    write_config(config, path)
    assert load_config(NodeConfig, path) == config
    assert path.read_text().startswith("/**:\n  ros__parameters:")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(NodeConfig, tmp_path / "absent.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("model_path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(NodeConfig, broken)
    other_node = tmp_path / "other.yaml"
    other_node.write_text("some_node:\n  ros__parameters: {model_path: m}\n")
    with pytest.raises(ConfigError, match="no ros__parameters section"):
        load_config(NodeConfig, other_node, node_name="perception_node")
