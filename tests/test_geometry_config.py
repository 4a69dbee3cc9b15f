"""config/geometry.yaml is a ROS 2 parameter file whose values are the code's defaults."""

from __future__ import annotations

import pytest
import yaml

from cups_ros.core.config import ConfigError, from_dict, from_ros_parameters, to_ros_parameters
from cups_ros.geometry import GeometryConfig, StereoConfig, load_geometry_config
from tests.conftest import REPOSITORY_ROOT

GEOMETRY_YAML = REPOSITORY_ROOT / "config" / "geometry.yaml"


def test_shipped_yaml_is_ros_parameter_form_and_equals_defaults():
    document = yaml.safe_load(GEOMETRY_YAML.read_text())
    assert list(document) == ["/**"] and list(document["/**"]) == ["ros__parameters"]
    assert load_geometry_config(GEOMETRY_YAML) == GeometryConfig()
    assert load_geometry_config(None) == GeometryConfig()


def test_round_trip_through_flat_ros_parameters():
    config = GeometryConfig()
    parameters = to_ros_parameters(config)
    assert parameters["stereo.block_size"] == 5 and parameters["scene_flow.min_depth"] == 5.5
    assert from_ros_parameters(GeometryConfig, parameters) == config


def test_disparity_range_scales_with_width_in_multiples_of_16():
    stereo = StereoConfig()
    assert stereo.disparity_range(1024) == 64
    assert stereo.disparity_range(1242) == 80  # KITTI: 5.5 m is 70 px there
    assert StereoConfig(num_disparities=128).disparity_range(1242) == 128


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("stereo", {"num_disparities": 40}, "multiple of 16"),
        ("stereo", {"block_size": 4}, "odd"),
        ("stereo", {"mode": "bm"}, "one of"),
        ("flow", {"preset": "slow"}, "one of"),
        ("scene_flow", {"min_depth": 80.0}, "min_depth < max_depth"),
    ],
)
def test_invalid_values_name_the_key(section, values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(GeometryConfig, {section: values})
