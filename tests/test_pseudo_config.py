"""config/pseudo_label.yaml holds the code's defaults; bad keys and values are named."""

from __future__ import annotations

import pytest
import yaml

from cups_ros.core.config import ConfigError, from_dict
from cups_ros.pseudo.pipeline import PseudoLabelConfig, load_pseudo_label_config
from tests.conftest import REPOSITORY_ROOT

PSEUDO_LABEL_YAML = REPOSITORY_ROOT / "config" / "pseudo_label.yaml"


def test_shipped_yaml_equals_defaults() -> None:
    document = yaml.safe_load(PSEUDO_LABEL_YAML.read_text())
    assert list(document) == ["/**"] and list(document["/**"]) == ["ros__parameters"]
    assert load_pseudo_label_config(PSEUDO_LABEL_YAML) == PseudoLabelConfig()
    assert load_pseudo_label_config(None) == PseudoLabelConfig()


def test_unknown_keys_and_wrong_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"motion\.bogus"):
        from_dict(PseudoLabelConfig, {"motion": {"bogus": 1}})
    with pytest.raises(ConfigError, match="psi"):
        from_dict(PseudoLabelConfig, {"psi": 2.0})
    with pytest.raises((ConfigError, ValueError), match="num_classes"):
        from_dict(PseudoLabelConfig, {"semantics": {"num_classes": 1}})
